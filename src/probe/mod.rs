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

use tokio::time::Instant;

pub use self::failure::{ProbeError, ProbeFailure};
use self::starttls::{negotiate, Limits};
use self::tls::TlsObservation;
use self::transport::{ConnectFailure, Connector};
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
    /// At most one probe per `gap` to each address:port; a probe that would
    /// wait longer than `max_wait` is refused.
    pub fn new(gap: Duration, max_wait: Duration) -> Spacing {
        Spacing {
            gap,
            max_wait,
            next: Mutex::new(HashMap::new()),
        }
    }

    /// Reserves this address's next slot, or refuses when it is too far off.
    fn reserve(&self, addr: SocketAddr, now: Instant) -> Result<Instant, ProbeError> {
        let mut next = self.next.lock().expect("spacing lock");
        if next.len() > SPACING_TABLE {
            next.retain(|_, t| *t > now);
        }
        let at = next.get(&addr).copied().unwrap_or(now).max(now);
        if at - now > self.max_wait {
            return Err(ProbeError::Connect(ConnectFailure::Transport(format!(
                "too many probes queued for {addr}; skipped"
            ))));
        }
        next.insert(addr, at + self.gap);
        Ok(at)
    }

    /// Waits for this address's turn.
    pub async fn turn(&self, addr: SocketAddr) -> Result<(), ProbeError> {
        if self.gap.is_zero() {
            return Ok(());
        }
        let at = self.reserve(addr, Instant::now())?;
        tokio::time::sleep_until(at).await;
        Ok(())
    }
}

/// Probes endpoints through one connector with fixed bounds.
#[derive(Clone)]
pub struct Prober {
    connector: Connector,
    limits: Limits,
    connect_timeout: Duration,
    from: Option<String>,
    attempts: u32,
    spacing: Option<Arc<Spacing>>,
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
        }
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

    /// One probe, retried once over a fresh circuit before it counts as failed.
    pub async fn probe(&self, target: &Target) -> Result<TlsObservation, ProbeError> {
        let mut last = None;
        for attempt in 0..self.attempts {
            match self.probe_once(target).await {
                Ok(obs) => return Ok(obs),
                Err(e) => {
                    tracing::debug!(addr = %target.addr, attempt, error = %e, "probe failed");
                    last = Some(e);
                }
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// Exactly one connection, over a fresh circuit.
    pub async fn probe_once(&self, target: &Target) -> Result<TlsObservation, ProbeError> {
        if let Some(spacing) = &self.spacing {
            spacing.turn(target.addr).await?;
        }
        let stream = self
            .connector
            .connect(target.addr, self.connect_timeout)
            .await
            .map_err(ProbeError::Connect)?;
        let from = match target.role {
            Role::Server => self.from.as_deref(),
            Role::Client => None,
        };
        negotiate(
            stream,
            &target.domain,
            target.role,
            from,
            target.tls,
            &self.limits,
        )
        .await
        .map_err(ProbeError::Session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn spacing_caps_probes_per_address() {
        let s = Spacing::new(Duration::from_secs(2), Duration::from_secs(5));
        let a: SocketAddr = "192.0.2.1:5222".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:5222".parse().unwrap();
        let t0 = Instant::now();
        s.turn(a).await.unwrap();
        s.turn(b).await.unwrap();
        assert_eq!(Instant::now(), t0, "first probes go at once");
        s.turn(a).await.unwrap();
        assert_eq!(Instant::now() - t0, Duration::from_secs(2));
        // Queue up to the wait bound, then refuse rather than pile up.
        let now = Instant::now();
        assert_eq!(s.reserve(a, now).unwrap(), now + Duration::from_secs(2));
        assert_eq!(s.reserve(a, now).unwrap(), now + Duration::from_secs(4));
        assert!(s.reserve(a, now).is_err());
        assert_eq!(s.reserve(b, now).unwrap(), t0 + Duration::from_secs(2));
    }
}
