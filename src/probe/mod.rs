//! Probes: one connection to one endpoint, and the chain it presented.
//!
//! `transport` opens the byte stream (Tor, SOCKS5, direct), `session` speaks
//! XMPP up to TLS, `tls` records the chain. Nothing here judges a key.

pub mod session;
pub mod tls;
pub mod transport;

use std::net::SocketAddr;
use std::time::Duration;

use self::session::{negotiate, Limits, ProbeFailure, Role, TlsMode};
use self::tls::TlsObservation;
use self::transport::{ConnectFailure, Connector};

/// Why one probe produced no observation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The connection could not be made.
    #[error("{0}")]
    Connect(ConnectFailure),
    /// The server misbehaved or refused, after the connection.
    #[error("{0}")]
    Session(ProbeFailure),
}

impl ProbeError {
    /// Whether this is a fact about the server rather than about Tor or us.
    pub fn is_remote(&self) -> bool {
        match self {
            ProbeError::Connect(c) => c.is_remote(),
            ProbeError::Session(s) => s.is_remote(),
        }
    }

    /// STARTTLS was not offered.
    pub fn is_starttls_missing(&self) -> bool {
        matches!(self, ProbeError::Session(ProbeFailure::StartTlsMissing))
    }
}

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

/// Probes endpoints through one connector with fixed bounds.
#[derive(Clone)]
pub struct Prober {
    connector: Connector,
    limits: Limits,
    connect_timeout: Duration,
    from: Option<String>,
    attempts: u32,
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
        }
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
