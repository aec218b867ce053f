//! Probes: one connection to one endpoint, and the chain it presented.
//!
//! `transport` opens the byte stream (Tor, SOCKS5, direct), `starttls`
//! speaks XMPP up to TLS (through the bounded scanner in `xml`), `tls`
//! records the chain, `failure` says whose fault a failed probe is (and
//! `fault` whose a connection Tor could not make).
//! Nothing here judges a key.

pub mod arti;
pub mod budget;
pub mod exits;
pub mod failure;
pub mod fault;
mod lexer;
pub mod profile;
mod profile_check;
mod socks5;
pub mod starttls;
pub mod stream;
pub mod tls;
mod tls_openssl;
pub mod transport;
mod xml;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

pub use self::budget::CircuitBudget;
pub use self::failure::{ProbeError, ProbeFailure};
pub use self::profile::{ProfileError, Profiles};
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
    circuits: Option<Arc<CircuitBudget>>,
    profiles: Profiles,
}

impl Prober {
    /// A prober whose whole probe (connection included) is bounded by
    /// `timeout`, speaking with the rustls profile until told otherwise.
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
            circuits: None,
            profiles: Profiles::rustls(),
        }
    }

    /// The same prober, speaking as `profiles` say.
    pub fn with_profiles(mut self, profiles: Profiles) -> Prober {
        self.profiles = profiles;
        self
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

    /// Takes a token from `budget` before each fresh Tor circuit (each
    /// probe over Tor or SOCKS5); the direct transport builds none.
    pub fn with_circuit_budget(mut self, budget: Arc<CircuitBudget>) -> Prober {
        self.circuits = Some(budget);
        self
    }

    /// The transport's name.
    pub fn transport(&self) -> &'static str {
        self.connector.name()
    }

    /// What the embedded Tor client says of itself (None for other transports).
    pub fn tor_state(&self) -> Option<transport::TorState> {
        self.connector.tor_state()
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
        // When the probe may start: its address's spacing slot, and a
        // circuit token unless the transport builds no circuits.
        let mut start = Instant::now();
        if let Some(spacing) = &self.spacing {
            let Some(at) = spacing.slot(target.addr, deadline) else {
                return Err(self.deadline_passed());
            };
            start = start.max(at);
        }
        if let Some(budget) = self.circuits.as_ref().filter(|_| self.builds_circuits()) {
            let Some(at) = budget.reserve(deadline) else {
                return Err(ProbeError::NotProbed(format!(
                    "no Tor circuit within the check's deadline of {} (probe.circuits_per_second)",
                    humantime::format_duration(self.check_budget())
                )));
            };
            start = start.max(at);
        }
        if start > Instant::now() {
            // Waiting for the slot is no work: the permit may go meanwhile.
            self.release().await;
            tokio::time::sleep_until(start).await;
            if !self.hold().await {
                return Err(ProbeError::NotProbed("shutting down".into()));
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

    fn builds_circuits(&self) -> bool {
        !matches!(self.connector, Connector::Direct | Connector::DirectFrom(_))
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
            // Not when probing our own domain: a server refuses a stream
            // "from" a host it serves itself.
            Role::Server => self
                .from
                .as_deref()
                .filter(|f| !f.eq_ignore_ascii_case(target.domain.trim_end_matches('.'))),
            Role::Client => None,
        };
        let observation = negotiate(
            connected.stream,
            &target.domain,
            target.role,
            from,
            target.tls,
            &self.limits,
            self.profiles.of(target.role),
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

    /// The stream header an s2s probe of `domain` sends (the server closes after it).
    async fn s2s_header(prober: &Prober, domain: &str) -> String {
        use tokio::io::AsyncReadExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut b = [0u8; 1];
            while !seen.ends_with(b"'>") && s.read(&mut b).await.unwrap() == 1 {
                seen.push(b[0]);
            }
            String::from_utf8(seen).unwrap()
        });
        let target = Target {
            addr,
            domain: domain.into(),
            role: Role::Server,
            tls: TlsMode::StartTls,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        assert!(prober.probe_once(&target, deadline, &[]).await.is_err());
        server.await.unwrap()
    }

    #[tokio::test]
    async fn s2s_probes_send_from_except_to_that_very_domain() {
        let prober = Prober::new(
            Connector::Direct,
            Duration::from_secs(5),
            Some("example.net".into()),
        );
        let other = s2s_header(&prober, "jabber.example.org").await;
        assert!(other.contains("from='example.net'"), "{other}");
        let own = s2s_header(&prober, "example.net").await;
        assert!(!own.contains("from="), "{own}");
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

    #[tokio::test(start_paused = true)]
    async fn tor_probes_wait_for_a_circuit_token_without_holding_the_permit() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        // A SOCKS5 "proxy" that counts connections and closes them at once.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                drop(s);
            }
        });
        let budget = Arc::new(CircuitBudget::new(0.1, 1));
        let permits = Arc::new(Semaphore::new(1));
        let gate = Arc::new(Gate::new(permits.clone()));
        let prober = Prober::new(
            Connector::Socks5(proxy, Default::default()),
            Duration::from_secs(5),
            None,
        )
        .with_circuit_budget(budget.clone())
        .with_gate(Some(gate.clone()));
        let target = Target {
            addr: "192.0.2.1:5222".parse().unwrap(),
            domain: "example.org".into(),
            role: Role::Client,
            tls: TlsMode::StartTls,
        };
        assert!(gate.enter().await);
        let far = Instant::now() + Duration::from_secs(60);
        let first = prober.probe_once(&target, far, &[]).await.unwrap_err();
        assert!(!matches!(first, ProbeError::NotProbed(_)), "{first}");
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        // The next token comes in 10 s: a probe that must end in 5 s is not made.
        let soon = Instant::now() + Duration::from_secs(5);
        let second = prober.probe_once(&target, soon, &[]).await.unwrap_err();
        assert!(
            matches!(&second, ProbeError::NotProbed(m) if m.contains("circuits_per_second")),
            "{second}"
        );
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "the proxy was not asked"
        );
        // One with time to spare waits for its token, without the permit.
        let waiting = prober.clone();
        let far = Instant::now() + Duration::from_secs(60);
        let task = tokio::spawn(async move { waiting.probe_once(&target, far, &[]).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!gate.holds().await, "waiting for a token is no work");
        assert_eq!(permits.available_permits(), 1);
        let third = task.await.unwrap().unwrap_err();
        assert!(!matches!(third, ProbeError::NotProbed(_)), "{third}");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert!(gate.holds().await, "the permit is taken back to work");
        assert_eq!(budget.taken(), 2, "the refused probe took no token");
    }

    #[tokio::test]
    async fn the_direct_transport_takes_no_circuit_token() {
        let budget = Arc::new(CircuitBudget::new(0.001, 1));
        budget
            .reserve(Instant::now() + Duration::from_secs(1))
            .unwrap();
        let prober = Prober::new(Connector::Direct, Duration::from_secs(5), None)
            .with_circuit_budget(budget.clone());
        let target = Target {
            addr: "127.0.0.1:9".parse().unwrap(),
            domain: "example.org".into(),
            role: Role::Client,
            tls: TlsMode::StartTls,
        };
        let e = prober
            .probe_once(&target, Instant::now() + Duration::from_secs(5), &[])
            .await
            .unwrap_err();
        assert!(!matches!(e, ProbeError::NotProbed(_)), "{e}");
        assert_eq!(budget.taken(), 1);
    }
}
