//! What a transport hands a probe: a byte stream, the exit it left through,
//! and, when it could not, whose failure that was.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{ErrorKind as Kind, HasKind as Whose};

/// Any byte stream a probe can run over.
pub trait ProbeStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ProbeStream for T {}

/// A boxed probe stream.
pub type BoxStream = Pin<Box<dyn ProbeStream>>;

/// Why a connection was not made, classified by whose problem it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectFailure {
    /// The server (or the network in front of it) refused or failed: a finding about the domain.
    #[error("{0}")]
    Remote(String),
    /// Tor or the proxy could not carry the connection: the operator's problem.
    #[error("{0}")]
    Transport(String),
    /// Every Tor exit tried refused the connection by its exit policy (or
    /// none in the directory allows it). Neither the server's fault nor our
    /// Tor failing: the network's exits will not go there. Counted as not
    /// ours, so it never tells the operator that Tor is broken.
    #[error("{0}")]
    ExitRefused(String),
    /// A stream could only be had through exits the probe had to avoid
    /// (the exit, or a relay of the family, that saw the first key): a
    /// confirming probe that cannot be made.
    #[error("{0}")]
    NoOtherExit(String),
    /// No vantage could make the probe (`probe.local = false` and every
    /// agent offline or failing): our own failure, like our Tor failing.
    #[error("{0}")]
    NoVantage(String),
}

impl Whose for ConnectFailure {
    fn kind(&self) -> Kind {
        match self {
            ConnectFailure::Remote(_) | ConnectFailure::ExitRefused(_) => Kind::Remote,
            ConnectFailure::Transport(_)
            | ConnectFailure::NoOtherExit(_)
            | ConnectFailure::NoVantage(_) => Kind::Tor,
        }
    }
}

/// The relay a Tor stream left the network through.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ExitRelay {
    /// The RSA identity fingerprint: 40 lowercase hex digits.
    pub rsa: String,
    /// The Ed25519 identity (base64), when the circuit knows it.
    pub ed25519: Option<String>,
}

impl std::fmt::Display for ExitRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.rsa)
    }
}

/// An open stream and, over Tor, the exit relay carrying it.
pub struct Connected {
    /// The byte stream.
    pub stream: BoxStream,
    /// The exit relay (Tor only: a SOCKS5 proxy does not say, direct has none).
    pub exit: Option<ExitRelay>,
}

/// When the transport last carried a connection to some server (or heard an
/// exit's report about one): proof that it worked then.
#[derive(Clone, Debug, Default)]
pub struct Carried(Arc<Mutex<Option<tokio::time::Instant>>>);

impl Carried {
    pub(super) fn mark(&self) {
        *self.0.lock().expect("carried lock") = Some(tokio::time::Instant::now());
    }

    /// Whether it carried one within `window`.
    pub(super) fn within(&self, window: Duration) -> bool {
        self.0
            .lock()
            .expect("carried lock")
            .is_some_and(|t| t.elapsed() <= window)
    }
}

/// How long a connection the transport carried vouches for it, when a later
/// one times out without telling why (a multiple of the probe timeout).
pub(super) const CARRIED_VOUCHES: u32 = 4;

pub(super) fn io_message(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::ConnectionReset => "connection reset".into(),
        _ => e.to_string(),
    }
}
