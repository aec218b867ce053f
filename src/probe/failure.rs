//! Why a probe produced no observation, and whose problem that is.

use std::io;

use super::transport::ConnectFailure;
use crate::error::{ErrorKind, HasKind};

/// How much of a peer-supplied string goes into an error: enough to read,
/// too little to flood a log or a report.
pub(super) const MAX_DETAIL: usize = 200;

/// Why one probe produced no observation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The connection could not be made.
    #[error("{0}")]
    Connect(ConnectFailure),
    /// The server misbehaved or refused, after the connection.
    #[error("{0}")]
    Session(ProbeFailure),
    /// No probe was made (or it was cut short) because the check ran out of
    /// its budget: neither the server's failure nor the transport's.
    #[error("not probed: {0}")]
    NotProbed(String),
}

impl HasKind for ProbeError {
    fn kind(&self) -> ErrorKind {
        match self {
            ProbeError::Connect(c) => c.kind(),
            ProbeError::Session(s) => s.kind(),
            // Never ours: a check cut short says nothing about Tor. The
            // checker reports it apart and counts it as no probe at all.
            ProbeError::NotProbed(_) => ErrorKind::Remote,
        }
    }
}

impl ProbeError {
    /// STARTTLS was not offered, or was refused with `<failure/>` (RFC 6120 §5.4.2.2):
    /// either way the server will not do TLS on this stream.
    pub fn is_starttls_missing(&self) -> bool {
        matches!(
            self,
            ProbeError::Session(ProbeFailure::StartTlsMissing | ProbeFailure::StartTlsRefused)
        )
    }

    /// The certificate chain was too large for the TLS handshake.
    pub fn is_chain_too_large(&self) -> bool {
        matches!(
            self,
            ProbeError::Session(ProbeFailure::ChainTooLarge { .. })
        )
    }

    /// The server's chain could not be checked because of the chain itself:
    /// too large, or not parsable by the probe's TLS library. Either is an
    /// alarm, never "unreachable": an interceptor could cause both on purpose.
    pub fn is_chain_unusable(&self) -> bool {
        matches!(
            self,
            ProbeError::Session(
                ProbeFailure::ChainTooLarge { .. } | ProbeFailure::ChainUnparsable { .. }
            )
        )
    }
}

/// Why a probe did not produce an observation; each says whose problem it is.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ProbeFailure {
    /// The stream features did not offer `<starttls/>`.
    #[error("the server did not offer STARTTLS")]
    StartTlsMissing,
    /// The server answered `<starttls/>` with `<failure/>`.
    #[error("the server refused STARTTLS")]
    StartTlsRefused,
    /// The server sent `<stream:error>`.
    #[error("stream error: {condition}{}", text_suffix(.text))]
    StreamError {
        /// The defined condition, e.g. `host-unknown`.
        condition: String,
        /// The human-readable text, if the server sent one.
        text: Option<String>,
    },
    /// The server spoke something that is not the XMPP stream protocol.
    #[error("protocol violation: {detail}")]
    Protocol {
        /// What was wrong.
        detail: String,
    },
    /// The server sent more than the allowed bytes before TLS.
    #[error("more than {limit} bytes before TLS")]
    TooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The server did not answer in time.
    #[error("timed out waiting for {stage}")]
    Timeout {
        /// What we were waiting for.
        stage: &'static str,
    },
    /// The server closed the connection or the stream.
    #[error("connection closed during {stage}")]
    Closed {
        /// What we were waiting for.
        stage: &'static str,
    },
    /// The TLS handshake failed: an alert, a malformed message, or no TLS at all.
    #[error("TLS handshake failed: {detail}")]
    Tls {
        /// The TLS library's description (rustls's or OpenSSL's).
        detail: String,
    },
    /// The server's certificates are over 64 KiB (rustls's limit on the
    /// Certificate message and on each certificate, which the OpenSSL
    /// profiles apply too), so the chain was never seen whole.
    #[error("the server's certificate chain is too large to check ({detail})")]
    ChainTooLarge {
        /// The TLS library's description (rustls's or OpenSSL's).
        detail: String,
    },
    /// A certificate of the server's chain could not be parsed by the
    /// probe's TLS library (OpenSSL parses every one, the leaf and all
    /// after it), so the chain was not recorded.
    #[error("the server's certificate chain could not be parsed ({detail})")]
    ChainUnparsable {
        /// OpenSSL's description.
        detail: String,
    },
    /// A local or transport failure that says nothing about the server.
    #[error("I/O error: {detail}")]
    Io {
        /// What failed.
        detail: String,
    },
}

/// Formats the optional text of a stream error.
fn text_suffix(text: &Option<String>) -> String {
    text.as_deref()
        .map(|t| format!(" ({t})"))
        .unwrap_or_default()
}

/// The server caused all but `Io`, which is only ever built for local or
/// transport errors (a reset, broken pipe or EOF caused by the peer is
/// `Closed` instead). A `Timeout` counts as the server's even though a slow
/// transport can cause one: the limits are meant to be generous.
impl HasKind for ProbeFailure {
    fn kind(&self) -> ErrorKind {
        match self {
            ProbeFailure::Io { .. } => ErrorKind::Tor,
            _ => ErrorKind::Remote,
        }
    }
}

impl ProbeFailure {
    /// Sorts an I/O error into the peer's doing (`Closed`, `Timeout`) or ours (`Io`).
    pub fn from_io(e: io::Error, stage: &'static str) -> ProbeFailure {
        use io::ErrorKind::*;
        match e.kind() {
            UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe => {
                ProbeFailure::Closed { stage }
            }
            TimedOut => ProbeFailure::Timeout { stage },
            _ => ProbeFailure::Io {
                detail: clip(&e.to_string()),
            },
        }
    }

    /// A protocol violation with a description.
    pub(super) fn protocol(detail: impl Into<String>) -> ProbeFailure {
        ProbeFailure::Protocol {
            detail: detail.into(),
        }
    }
}

/// Shortens a peer-supplied string and drops control characters, so it is safe to log.
pub(super) fn clip(s: &str) -> String {
    let mut out: String = s
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_DETAIL)
        .collect();
    if s.chars()
        .filter(|c| !c.is_control())
        .nth(MAX_DETAIL)
        .is_some()
    {
        out.push('…');
    }
    out
}
