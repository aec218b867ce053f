//! The XMPP part of a probe: open a stream, ask for STARTTLS (RFC 6120 §5)
//! or start TLS at once (XEP-0368), and hand the very next byte to TLS.
//! The bytes before TLS are read by [`xml`](super::xml), which never takes
//! more than it needs.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use super::failure::ProbeFailure;
use super::tls::{handshake_and_restart, Restart, TlsObservation};
pub use super::xml::Limits;
use super::xml::{Xml, NS_STREAMS, NS_TLS};
use crate::vocab::{Role, TlsMode};

/// Negotiate TLS the way an XMPP client/server would and observe the presented chain.
///
/// `domain` is both the stream's `to` and the SNI; `from` is sent only for
/// [`Role::Server`] (a client's `from` would be its JID, which we do not have).
pub async fn negotiate<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    domain: &str,
    role: Role,
    from: Option<&str>,
    mode: TlsMode,
    limits: &Limits,
) -> Result<TlsObservation, ProbeFailure> {
    let deadline = Instant::now() + limits.total_timeout;
    let header = stream_header(domain, role, from);
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
            handshake_and_restart(stream, domain, Some(role.alpn()), until, Some(restart())).await
        }
        TlsMode::StartTls => {
            let mut xml = Xml::new(stream, limits, deadline);
            starttls(&mut xml, &header, role).await?;
            let stream = xml.into_inner();
            let until = deadline.min(Instant::now() + limits.io_timeout);
            handshake_and_restart(stream, domain, None, until, Some(restart())).await
        }
    }
}

/// RFC 6120 §5.4.2 up to and including `<proceed/>`.
async fn starttls<S: AsyncRead + AsyncWrite + Unpin>(
    xml: &mut Xml<S>,
    header: &str,
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
    xml.send(format!("<starttls xmlns='{NS_TLS}'/>").as_bytes(), stage)
        .await?;
    let answer = xml.next_top(stage).await?;
    match (answer.ns.as_str(), answer.local.as_str()) {
        (NS_TLS, "proceed") => Ok(()),
        (NS_TLS, "failure") => Err(ProbeFailure::StartTlsRefused),
        _ => Err(answer.unexpected(stage)),
    }
}

/// Our opening stream header (RFC 6120 §4.7).
pub(super) fn stream_header(domain: &str, role: Role, from: Option<&str>) -> String {
    let mut h = format!(
        "<?xml version='1.0'?><stream:stream to='{}' version='1.0' xmlns='{}' xmlns:stream='{NS_STREAMS}'",
        escape(domain),
        role.namespace()
    );
    if role == Role::Server {
        if let Some(from) = from {
            h.push_str(&format!(" from='{}'", escape(from)));
        }
        // Real s2s initiators declare dialback (XEP-0220), and a probe that
        // looks like one gets the answer a real peer would; an unused
        // declaration is harmless.
        h.push_str(" xmlns:db='jabber:server:dialback'");
    }
    h.push('>');
    h
}

/// Escapes a string for a single-quoted attribute.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
#[path = "starttls_tests.rs"]
mod tests;
