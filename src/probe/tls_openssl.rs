//! The TLS handshake of a probe over the system OpenSSL (the library of the
//! software a profile imitates). Verification is off: the chain is recorded
//! and judged elsewhere. The handshake still shows that the server holds
//! the recorded leaf's key: it signs the handshake with it or, under a
//! TLS 1.2 RSA key exchange (in OpenSSL's default list, so the `profanity`
//! profile may negotiate it), decrypts our premaster secret with it, which
//! its Finished message proves.
//!
//! The chain is OpenSSL's re-encoding of what it parsed (`i2d_X509`), not
//! the bytes on the wire: OpenSSL keeps no copy of those, and the safe
//! bindings offer no message callback. OpenSSL keeps each certificate's
//! `tbsCertificate` as received and re-encodes only the outer envelope, so
//! the SubjectPublicKeyInfo (`x 1 x` matching, `spki_sha256`) is exact; for
//! a certificate that is not strict DER the full certificate (`x 0 x`
//! matching, `cert_sha256`, the evidence PEM) can differ from the wire.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use openssl::ssl::{ErrorCode, Ssl, SslContext};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_openssl::SslStream;

use super::failure::{clip, ProbeFailure};
use super::tls::{TlsObservation, STAGE};

/// The most certificate bytes one handshake may present: the same 64 KiB
/// bound rustls puts on the Certificate message, so a chain is "too large"
/// under every profile alike. (OpenSSL itself refuses a Certificate message
/// over 100 KiB, its default `max_cert_list`, before reading more.)
const MAX_CHAIN_BYTES: usize = 0xffff;

/// OpenSSL's library number for its TLS code (`ERR_LIB_SSL`, openssl/err.h).
const LIB_SSL: i32 = 20;

/// `SSL_R_*` reason codes (openssl/sslerr.h, stable across OpenSSL 3).
mod reason {
    pub const EXCESSIVE_MESSAGE_SIZE: i32 = 152;
    pub const UNEXPECTED_EOF_WHILE_READING: i32 = 294;
    pub const CERT_LENGTH_MISMATCH: i32 = 135;
    /// Our own settings leave nothing to offer: raised while we build the
    /// ClientHello, before the server has any say.
    pub const OURS: [i32; 5] = [
        181, // NO_CIPHERS_AVAILABLE
        183, // NO_CIPHERS_SPECIFIED
        191, // NO_PROTOCOLS_AVAILABLE
        101, // NO_SUITABLE_KEY_SHARE
        295, // NO_SUITABLE_GROUPS
    ];
    /// `ERR_R_ASN1_LIB` and `ERR_R_X509_LIB` as reasons of the SSL library:
    /// a certificate of the server's chain did not parse.
    pub const CERT_PARSE: [i32; 2] = [13 | COMMON, 11 | COMMON];
    const COMMON: i32 = 0x2 << 18;
}

/// The probe's stream, counting what the server sent: a handshake that
/// failed before the server sent a byte failed on our side.
pub(super) struct Heard<S> {
    inner: S,
    read: u64,
}

impl<S: AsyncRead + Unpin> AsyncRead for Heard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let got = buf.filled().len().saturating_sub(before);
        self.read = self.read.saturating_add(got as u64);
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Heard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Connects over `stream`, with SNI `sni` and ALPN `alpn` when given, by `deadline`.
pub(super) async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &SslContext,
    stream: S,
    sni: Option<&str>,
    alpn: Option<&[u8]>,
    deadline: Instant,
) -> Result<SslStream<Heard<S>>, ProbeFailure> {
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
    let heard = Heard {
        inner: stream,
        read: 0,
    };
    let mut tls = SslStream::new(ssl, heard).map_err(local)?;
    match tokio::time::timeout_at(deadline, Pin::new(&mut tls).connect()).await {
        Err(_) => Err(ProbeFailure::Timeout { stage: STAGE }),
        Ok(Err(e)) => Err(handshake_failure(e, tls.get_ref().read > 0)),
        Ok(Ok(())) => Ok(tls),
    }
}

/// Reads what the completed handshake negotiated. A certificate OpenSSL
/// cannot encode again fails the probe: dropping it would shift the chain
/// (the next certificate judged as the leaf).
pub(super) fn observe<S>(tls: &SslStream<S>) -> Result<TlsObservation, ProbeFailure> {
    let ssl = tls.ssl();
    let unparsable = |what: String| ProbeFailure::ChainUnparsable {
        detail: clip(&what),
    };
    let Some(stack) = ssl.peer_cert_chain().filter(|s| !s.is_empty()) else {
        return Err(ProbeFailure::Tls {
            detail: "handshake completed without a certificate".into(),
        });
    };
    // On the client side OpenSSL's chain includes the leaf, first.
    let mut chain = Vec::with_capacity(stack.len());
    for (i, cert) in stack.iter().enumerate() {
        let der = cert
            .to_der()
            .map_err(|e| unparsable(format!("OpenSSL cannot encode certificate {i} again: {e}")))?;
        chain.push(der);
    }
    let leaf = ssl.peer_certificate().map(|c| c.to_der());
    if !matches!(leaf, Some(Ok(ref der)) if *der == chain[0]) {
        return Err(unparsable(
            "OpenSSL's chain does not start with the certificate it handshook with".into(),
        ));
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

/// Sorts a failed handshake by OpenSSL's reason codes into the server's
/// doing (TLS, closed, a chain too large or unparsable) or ours (I/O).
/// `heard`: whether the server had sent any byte by then.
///
/// Ours are the failures to build a ClientHello under the local settings
/// (no ciphers, protocols or groups left, e.g. by a crypto policy) and any
/// other failure before the server sent a byte. After the server has
/// spoken, an internal error counts as the server's (a TLS failure): our
/// OpenSSL passed its start-up handshake (`profile::Profiles::new`), and
/// counting such errors as ours would let a server that provokes one keep
/// the monitor quiet.
fn handshake_failure(e: openssl::ssl::Error, heard: bool) -> ProbeFailure {
    if let Some(stack) = e.ssl_error() {
        let detail = clip(&stack.to_string());
        let errors = stack.errors();
        let ssl_reason = |codes: &[i32]| {
            errors
                .iter()
                .any(|x| x.library_code() == LIB_SSL && codes.contains(&x.reason_code()))
        };
        if ssl_reason(&[reason::EXCESSIVE_MESSAGE_SIZE]) {
            return ProbeFailure::ChainTooLarge { detail };
        }
        if ssl_reason(&[reason::UNEXPECTED_EOF_WHILE_READING]) {
            return ProbeFailure::Closed { stage: STAGE };
        }
        if !heard || ssl_reason(&reason::OURS) {
            return ProbeFailure::Io {
                detail: clip(&format!("our OpenSSL could not handshake: {detail}")),
            };
        }
        if ssl_reason(&reason::CERT_PARSE) || ssl_reason(&[reason::CERT_LENGTH_MISMATCH]) {
            return ProbeFailure::ChainUnparsable { detail };
        }
        return ProbeFailure::Tls { detail };
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
