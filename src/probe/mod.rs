//! Probes: one connection to one endpoint, and the chain it presented.
//!
//! `transport` opens the byte stream (Tor, SOCKS5, direct), `starttls`
//! speaks XMPP up to TLS (through the bounded scanner in `xml`), `tls`
//! records the chain, `failure` says whose fault a failed probe is.
//! Nothing here judges a key.

pub mod failure;
mod lexer;
pub mod starttls;
pub mod tls;
pub mod transport;
mod xml;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

pub use self::failure::{ProbeError, ProbeFailure};
use self::starttls::{negotiate, Limits};
use self::tls::TlsObservation;
use self::transport::{Connector, ExitCount, ExitRelay};
use crate::vocab::{Role, TlsMode};

/// What to probe: an address, and how to speak to it.
#[derive(Clone, Debug)]
pub struct Target {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The XMPP domain: stream `to` and SNI.
    pub domain: String,
    /// c2s or s2s.
    pub role: Role,
    /// STARTTLS or direct TLS.
    pub tls: TlsMode,
}

/// What one probe saw, and through which Tor exit.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The handshake's observation.
    pub observation: TlsObservation,
    /// The exit relay that carried the probe (Tor only).
    pub exit: Option<ExitRelay>,
}

/// Spaces probes to one address:port, whatever domains point at it, so the
/// bot can never be turned into a flood against one server.
#[derive(Debug)]
pub struct Spacing {
    gap: Duration,
    max_wait: Duration,
    next: Mutex<HashMap<SocketAddr, Instant>>,
}

/// How many addresses the spacing table remembers before pruning.
const SPACING_TABLE: usize = 50_000;

impl Spacing {
    /// At most one probe per `gap` to each address:port; a probe never waits
    /// longer than `max_wait` (nor past its check's deadline) for its slot.
    pub fn new(gap: Duration, max_wait: Duration) -> Spacing {
        Spacing {
            gap,
            max_wait,
            next: Mutex::new(HashMap::new()),
        }
    }

    /// Reserves this address's next slot, if it comes by `limit` (and within
    /// `max_wait`); a slot that comes too late is not taken.
    fn reserve(&self, addr: SocketAddr, now: Instant, limit: Instant) -> Option<Instant> {
        let mut next = self.next.lock().expect("spacing lock");
        if next.len() > SPACING_TABLE {
            next.retain(|_, t| *t > now);
        }
        let at = next.get(&addr).copied().unwrap_or(now).max(now);
        if at - now > self.max_wait || at > limit {
            return None;
        }
        next.insert(addr, at + self.gap);
        Some(at)
    }

    /// Reserves this address's next slot if it comes by `deadline`: when the
    /// probe may start. None when it would come too late (nothing reserved).
    pub fn slot(&self, addr: SocketAddr, deadline: Instant) -> Option<Instant> {
        if self.gap.is_zero() {
            return Some(Instant::now());
        }
        self.reserve(addr, Instant::now(), deadline)
    }

    /// Waits for this address's turn, up to `deadline`. False when the turn
    /// would come after it: the probe is not made (and nothing was reserved).
    pub async fn turn(&self, addr: SocketAddr, deadline: Instant) -> bool {
        if self.gap.is_zero() {
            return Instant::now() < deadline;
        }
        let Some(at) = self.reserve(addr, Instant::now(), deadline) else {
            return false;
        };
        tokio::time::sleep_until(at).await;
        true
    }

    /// When a probe of `addr` asked for now could start (for ordering, not a reservation).
    pub fn free_at(&self, addr: SocketAddr) -> Instant {
        let now = Instant::now();
        let next = self.next.lock().expect("spacing lock");
        next.get(&addr).copied().unwrap_or(now).max(now)
    }
}

/// Holds one of the monitor's permits while any part of one check works,
/// and gives it back while all its probes only wait for their spacing slot,
/// so waiting does not use up the monitor's concurrency.
pub struct Gate {
    permits: Arc<Semaphore>,
    /// How many parts of the check are working, and the permit they share.
    held: tokio::sync::Mutex<(usize, Option<OwnedSemaphorePermit>)>,
}

impl Gate {
    /// A gate over the monitor's permits; nothing is held yet.
    pub fn new(permits: Arc<Semaphore>) -> Gate {
        Gate {
            permits,
            held: tokio::sync::Mutex::new((0, None)),
        }
    }

    /// One more part works: takes a permit if none is held. False when the
    /// permits are closed (shutting down).
    pub async fn enter(&self) -> bool {
        let mut held = self.held.lock().await;
        if held.1.is_none() {
            match self.permits.clone().acquire_owned().await {
                Ok(p) => held.1 = Some(p),
                Err(_) => return false,
            }
        }
        held.0 += 1;
        true
    }

    /// One part stops working (or starts waiting); the last gives the permit back.
    pub async fn leave(&self) {
        let mut held = self.held.lock().await;
        held.0 = held.0.saturating_sub(1);
        if held.0 == 0 {
            held.1 = None;
        }
    }

    /// Whether a permit is held now.
    pub async fn holds(&self) -> bool {
        self.held.lock().await.1.is_some()
    }
}

/// Endpoints one check probes at most, unless configured otherwise.
pub const MAX_ENDPOINTS: usize = 32;

/// How many probe timeouts one check may spend on all its probes (the
/// confirming probe of a mismatch included): the check's deadline.
pub const CHECK_BUDGET_TIMEOUTS: u32 = 4;

/// Probes endpoints through one connector with fixed bounds.
#[derive(Clone)]
pub struct Prober {
    connector: Connector,
    limits: Limits,
    connect_timeout: Duration,
    from: Option<String>,
    attempts: u32,
    spacing: Option<Arc<Spacing>>,
    max_endpoints: usize,
    gate: Option<Arc<Gate>>,
}

impl Prober {
    /// A prober whose whole probe (connection included) is bounded by `timeout`.
    pub fn new(connector: Connector, timeout: Duration, from: Option<String>) -> Prober {
        let limits = Limits {
            io_timeout: timeout.min(Duration::from_secs(20)),
            total_timeout: timeout,
            ..Limits::default()
        };
        Prober {
            connector,
            limits,
            connect_timeout: timeout,
            from,
            attempts: 2,
            spacing: None,
            max_endpoints: MAX_ENDPOINTS,
            gate: None,
        }
    }

    /// The same prober, holding `gate`'s permit only while it works.
    pub fn with_gate(mut self, gate: Option<Arc<Gate>>) -> Prober {
        self.gate = gate;
        self
    }

    /// Marks one more part of the check as working (takes the permit back if
    /// it was given up). False when shutting down.
    pub async fn hold(&self) -> bool {
        match &self.gate {
            Some(g) => g.enter().await,
            None => true,
        }
    }

    /// Marks one part of the check as no longer working.
    pub async fn release(&self) {
        if let Some(g) = &self.gate {
            g.leave().await;
        }
    }

    /// Caps how many endpoints one check probes.
    pub fn with_max_endpoints(mut self, max: usize) -> Prober {
        self.max_endpoints = max.max(1);
        self
    }

    /// How many endpoints one check probes at most.
    pub fn max_endpoints(&self) -> usize {
        self.max_endpoints
    }

    /// The time one check may spend on all its probes:
    /// `CHECK_BUDGET_TIMEOUTS` × the probe timeout.
    pub fn check_budget(&self) -> Duration {
        self.connect_timeout * CHECK_BUDGET_TIMEOUTS
    }

    /// The error of a probe that the check's deadline cut off.
    pub fn deadline_passed(&self) -> ProbeError {
        ProbeError::NotProbed(format!(
            "the check's deadline of {} passed",
            humantime::format_duration(self.check_budget())
        ))
    }

    /// Caps how often any one address:port is probed.
    pub fn with_spacing(mut self, spacing: Arc<Spacing>) -> Prober {
        self.spacing = Some(spacing);
        self
    }

    /// The transport's name.
    pub fn transport(&self) -> &'static str {
        self.connector.name()
    }

    /// Over Tor: how many exits allow `addr`'s port for its family.
    pub fn exit_count(&self, addr: SocketAddr) -> Option<ExitCount> {
        self.connector.exit_count(addr)
    }

    /// One probe, retried once over a fresh circuit before it counts as
    /// failed, through an exit that is none of `avoid` (nor of their
    /// family); nothing runs past `deadline`.
    pub async fn probe(
        &self,
        target: &Target,
        deadline: Instant,
        avoid: &[ExitRelay],
    ) -> Result<Seen, ProbeError> {
        let mut last = None;
        for attempt in 0..self.attempts {
            if attempt > 0 && Instant::now() >= deadline {
                break;
            }
            match self.probe_once(target, deadline, avoid).await {
                Ok(obs) => return Ok(obs),
                Err(e) => {
                    tracing::debug!(addr = %target.addr, attempt, error = %e, "probe failed");
                    // Several exits already refused it (or were to be
                    // avoided): a second round would only ask them again.
                    let refused = matches!(
                        e,
                        ProbeError::Connect(
                            transport::ConnectFailure::ExitRefused(_)
                                | transport::ConnectFailure::NoOtherExit(_)
                        )
                    );
                    last = Some(e);
                    if refused {
                        break;
                    }
                }
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// Exactly one connection, over a fresh circuit, waiting for the
    /// address's spacing slot first; a probe that cannot start or finish by
    /// `deadline` is not made (`ProbeError::NotProbed`), never a failure.
    pub async fn probe_once(
        &self,
        target: &Target,
        deadline: Instant,
        avoid: &[ExitRelay],
    ) -> Result<Seen, ProbeError> {
        if let Some(spacing) = &self.spacing {
            let Some(at) = spacing.slot(target.addr, deadline) else {
                return Err(self.deadline_passed());
            };
            if at > Instant::now() {
                // Waiting for the slot is no work: the permit may go meanwhile.
                self.release().await;
                tokio::time::sleep_until(at).await;
                if !self.hold().await {
                    return Err(ProbeError::NotProbed("shutting down".into()));
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(self.deadline_passed());
        }
        match tokio::time::timeout_at(deadline, self.connect_and_negotiate(target, avoid)).await {
            Ok(result) => result,
            Err(_) => Err(self.deadline_passed()),
        }
    }

    async fn connect_and_negotiate(
        &self,
        target: &Target,
        avoid: &[ExitRelay],
    ) -> Result<Seen, ProbeError> {
        let connected = self
            .connector
            .connect(target.addr, self.connect_timeout, avoid)
            .await
            .map_err(ProbeError::Connect)?;
        let from = match target.role {
            Role::Server => self.from.as_deref(),
            Role::Client => None,
        };
        let observation = negotiate(
            connected.stream,
            &target.domain,
            target.role,
            from,
            target.tls,
            &self.limits,
        )
        .await
        .map_err(ProbeError::Session)?;
        Ok(Seen {
            observation,
            exit: connected.exit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn spacing_delays_probes_per_address_up_to_the_deadline() {
        let s = Spacing::new(Duration::from_secs(2), Duration::from_secs(5));
        let a: SocketAddr = "192.0.2.1:5222".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:5222".parse().unwrap();
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(3600);
        assert!(s.turn(a, far).await);
        assert!(s.turn(b, far).await);
        assert_eq!(Instant::now(), t0, "first probes go at once");
        assert!(
            s.turn(a, far).await,
            "a second probe waits, it is not refused"
        );
        assert_eq!(Instant::now() - t0, Duration::from_secs(2));
        // Queue up to the wait bound, then refuse rather than pile up.
        let now = Instant::now();
        assert_eq!(s.reserve(a, now, far), Some(now + Duration::from_secs(2)));
        assert_eq!(s.reserve(a, now, far), Some(now + Duration::from_secs(4)));
        assert_eq!(s.reserve(a, now, far), None);
        assert_eq!(s.reserve(b, now, far), Some(t0 + Duration::from_secs(2)));
        // A slot after the check's deadline is not taken at all.
        let soon = now + Duration::from_secs(3);
        assert_eq!(s.reserve(b, now, soon), Some(now + Duration::from_secs(2)));
        assert_eq!(s.reserve(b, now, soon), None);
        assert_eq!(
            s.free_at(b),
            now + Duration::from_secs(4),
            "nothing reserved"
        );
        let before = Instant::now();
        assert!(!s.turn(b, soon).await, "refused at once, without waiting");
        assert_eq!(Instant::now(), before);
    }

    #[tokio::test(start_paused = true)]
    async fn a_gate_holds_one_permit_while_any_part_works() {
        let permits = Arc::new(Semaphore::new(1));
        let g = Gate::new(permits.clone());
        assert!(g.enter().await);
        assert!(g.enter().await, "a second part shares the permit");
        assert_eq!(permits.available_permits(), 0);
        g.leave().await;
        assert!(g.holds().await);
        g.leave().await;
        assert!(!g.holds().await, "all parts wait: the permit is given back");
        assert_eq!(permits.available_permits(), 1);
    }
}
