//! The TLS handshake of a probe over the system OpenSSL (the library of the
//! software a profile imitates). Verification is off: the chain is recorded
//! as presented and judged elsewhere. OpenSSL still checks the handshake
//! signature, so the recorded leaf's key is one the server holds.

use std::pin::Pin;

use openssl::ssl::{ErrorCode, Ssl, SslContext};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_openssl::SslStream;

use super::failure::{clip, ProbeFailure};
use super::tls::TlsObservation;

/// Stage name reported for failures during the handshake.
const STAGE: &str = "tls handshake";

/// The most certificate bytes one handshake may present: the same 64 KiB
/// bound rustls puts on the Certificate message, so a chain is "too large"
/// under every profile alike. (OpenSSL itself refuses a Certificate message
/// over 100 KiB, its default `max_cert_list`, before reading more.)
const MAX_CHAIN_BYTES: usize = 0xffff;

/// Connects over `stream`, with SNI `sni` and ALPN `alpn` when given, by `deadline`.
pub(super) async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &SslContext,
    stream: S,
    sni: Option<&str>,
    alpn: Option<&[u8]>,
    deadline: Instant,
) -> Result<SslStream<S>, ProbeFailure> {
    let local = |e: openssl::error::ErrorStack| ProbeFailure::Io {
        detail: clip(&format!("OpenSSL: {e}")),
    };
    let mut ssl = Ssl::new(ctx).map_err(local)?;
    if let Some(name) = sni {
        ssl.set_hostname(name).map_err(local)?;
    }
    if let Some(p) = alpn {
        let mut wire = Vec::with_capacity(p.len() + 1);
        wire.push(u8::try_from(p.len()).expect("ALPN ids are short"));
        wire.extend_from_slice(p);
        ssl.set_alpn_protos(&wire).map_err(local)?;
    }
    let mut tls = SslStream::new(ssl, stream).map_err(local)?;
    match tokio::time::timeout_at(deadline, Pin::new(&mut tls).connect()).await {
        Err(_) => Err(ProbeFailure::Timeout { stage: STAGE }),
        Ok(Err(e)) => Err(handshake_failure(e)),
        Ok(Ok(())) => Ok(tls),
    }
}

/// Reads what the completed handshake negotiated.
pub(super) fn observe<S>(tls: &SslStream<S>) -> Result<TlsObservation, ProbeFailure> {
    let ssl = tls.ssl();
    // On the client side OpenSSL's chain includes the leaf, first.
    let chain: Vec<Vec<u8>> = ssl
        .peer_cert_chain()
        .map(|stack| stack.iter().filter_map(|c| c.to_der().ok()).collect())
        .unwrap_or_default();
    if chain.is_empty() {
        return Err(ProbeFailure::Tls {
            detail: "handshake completed without a certificate".into(),
        });
    }
    let bytes: usize = chain.iter().map(Vec::len).sum();
    if bytes > MAX_CHAIN_BYTES {
        return Err(ProbeFailure::ChainTooLarge {
            detail: format!("{} certificates of {bytes} bytes, over 64 KiB", chain.len()),
        });
    }
    let cipher = ssl
        .current_cipher()
        .map(|c| c.standard_name().unwrap_or(c.name()).to_owned())
        .unwrap_or_default();
    Ok(TlsObservation {
        chain,
        version: ssl.version_str().to_owned(),
        cipher,
        alpn: ssl
            .selected_alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
    })
}

/// Sorts a failed handshake into the server's doing (TLS, closed, too
/// large) or ours (I/O).
fn handshake_failure(e: openssl::ssl::Error) -> ProbeFailure {
    if let Some(stack) = e.ssl_error() {
        let too_large = stack.errors().iter().any(|x| {
            x.reason()
                .is_some_and(|r| r.contains("excessive message size"))
        });
        if too_large {
            return ProbeFailure::ChainTooLarge {
                detail: clip(&stack.to_string()),
            };
        }
        return ProbeFailure::Tls {
            detail: clip(&stack.to_string()),
        };
    }
    if e.code() == ErrorCode::ZERO_RETURN {
        return ProbeFailure::Closed { stage: STAGE };
    }
    match e.into_io_error() {
        Ok(io) => ProbeFailure::from_io(io, STAGE),
        // SSL_ERROR_SYSCALL without an I/O error: the peer closed mid-handshake.
        Err(_) => ProbeFailure::Closed { stage: STAGE },
    }
}
