//! The XMPP part of a probe: open a stream, ask for STARTTLS (RFC 6120 §5)
//! or start TLS at once (XEP-0368), and hand the very next byte to TLS.
//! The bytes before TLS are read by [`xml`](super::xml), which never takes
//! more than it needs.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::failure::ProbeFailure;
use super::profile::Profile;
use super::tls::{handshake_as, Restart, TlsObservation};
pub use super::xml::Limits;
use super::xml::{Xml, NS_STREAMS, NS_TLS};
use crate::vocab::{Role, TlsMode};

/// Negotiate TLS the way an XMPP client/server would and observe the presented chain.
///
/// `domain` is both the stream's `to` and the SNI; `from` is sent only for
/// [`Role::Server`] (a client's `from` would be its JID, which we do not have).
/// `profile` says what software the probe speaks as: its TLS stack and
/// settings, its stream header and its `<starttls/>`.
pub async fn negotiate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    domain: &str,
    role: Role,
    from: Option<&str>,
    mode: TlsMode,
    limits: &Limits,
    profile: &Profile,
) -> Result<TlsObservation, ProbeFailure> {
    let deadline = Instant::now() + limits.total_timeout;
    let from = from.filter(|_| role == Role::Server);
    let header = profile.header(domain, role, from);
    let sni = profile.sends_sni(mode).then_some(domain);
    let alpn = profile.alpn(role, mode);
    // Inside TLS the probe opens a stream as a client or server would, and
    // closes it politely (see `Restart`); the handshake has its own bound.
    let restart = || Restart {
        header: &header,
        role,
        limits,
    };
    match mode {
        TlsMode::Direct => {
            let until = deadline.min(Instant::now() + limits.io_timeout);
            handshake_as(profile.tls(), stream, sni, alpn, until, Some(restart())).await
        }
        TlsMode::StartTls => {
            let mut xml = Xml::new(stream, limits, deadline);
            starttls(&mut xml, &header, &profile.starttls(), role).await?;
            let stream = xml.into_inner();
            let until = deadline.min(Instant::now() + limits.io_timeout);
            handshake_as(profile.tls(), stream, sni, alpn, until, Some(restart())).await
        }
    }
}

/// RFC 6120 §5.4.2 up to and including `<proceed/>`.
async fn starttls<S: AsyncRead + AsyncWrite + Unpin>(
    xml: &mut Xml<S>,
    header: &str,
    request: &str,
    role: Role,
) -> Result<(), ProbeFailure> {
    xml.send(header.as_bytes(), "stream header").await?;
    xml.read_stream_header(role).await?;

    let stage = "features";
    let features = xml.next_top(stage).await?;
    match (features.ns.as_str(), features.local.as_str()) {
        (NS_STREAMS, "features") if features.starttls => {}
        (NS_STREAMS, "features") => return Err(ProbeFailure::StartTlsMissing),
        _ => return Err(features.unexpected(stage)),
    }

    let stage = "proceed";
    xml.send(request.as_bytes(), stage).await?;
    let answer = xml.next_top(stage).await?;
    match (answer.ns.as_str(), answer.local.as_str()) {
        (NS_TLS, "proceed") => Ok(()),
        (NS_TLS, "failure") => Err(ProbeFailure::StartTlsRefused),
        _ => Err(answer.unexpected(stage)),
    }
}

#[cfg(test)]
#[path = "starttls_tests.rs"]
mod tests;
