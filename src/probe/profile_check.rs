//! The start-up handshake of an OpenSSL profile: the profile's context
//! against an in-process rustls server over a local socket pair, once with
//! TLS 1.3 and once with TLS 1.2 only. A profile the local OpenSSL cannot
//! handshake with (its `openssl.cnf` or crypto policy leaves no cipher,
//! protocol or group, say) would make every server look unreachable; this
//! finds it before any probe, so it stops the program instead.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use openssl::ssl::{Ssl, SslContext};
use rustls::crypto::ring;
use rustls::{ServerConfig, ServerConnection, SupportedProtocolVersion};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// How long one side may wait for the other: the handshake is in memory.
const WAIT: Duration = Duration::from_secs(10);

/// What the server sends once the handshake is done; the client reads it,
/// so both ends have finished the handshake.
const HELLO: &[u8] = b"ok";

/// Completes a handshake with `ctx` against a TLS 1.3 and a TLS 1.2 server,
/// or says what failed.
pub(super) fn handshakes(ctx: &SslContext) -> Result<(), String> {
    let ck = rcgen::generate_simple_self_signed(vec!["profile.invalid".to_owned()])
        .map_err(|e| format!("cannot make a test certificate: {e}"))?;
    let chain = vec![ck.cert.der().clone()];
    let key: PrivateKeyDer = PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()).into();
    for (label, versions) in [
        ("TLS 1.3", &[&rustls::version::TLS13][..]),
        ("TLS 1.2", &[&rustls::version::TLS12][..]),
    ] {
        let config = server_config(versions, chain.clone(), key.clone_key())?;
        one(ctx, config).map_err(|e| format!("no handshake with a {label} server: {e}"))?;
    }
    Ok(())
}

fn server_config(
    versions: &[&'static SupportedProtocolVersion],
    chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, String> {
    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_protocol_versions(versions)
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| format!("cannot set up the test server: {e}"))?;
    Ok(Arc::new(config))
}

/// One handshake over a socket pair; the server runs on its own thread.
fn one(ctx: &SslContext, config: Arc<ServerConfig>) -> Result<(), String> {
    let (client, server) = UnixStream::pair().map_err(|e| e.to_string())?;
    for s in [&client, &server] {
        s.set_read_timeout(Some(WAIT)).map_err(|e| e.to_string())?;
        s.set_write_timeout(Some(WAIT)).map_err(|e| e.to_string())?;
    }
    let serving = std::thread::spawn(move || -> Result<(), String> {
        let conn = ServerConnection::new(config).map_err(|e| e.to_string())?;
        let mut tls = rustls::StreamOwned::new(conn, server);
        tls.write_all(HELLO).map_err(|e| e.to_string())?;
        tls.flush().map_err(|e| e.to_string())
    });
    let client_side = (|| {
        let ssl = Ssl::new(ctx).map_err(|e| e.to_string())?;
        let mut tls = ssl.connect(client).map_err(|e| e.to_string())?;
        let mut got = [0u8; HELLO.len()];
        tls.read_exact(&mut got).map_err(|e| e.to_string())?;
        Ok::<(), String>(())
    })();
    // The client side is dropped by now, so the server cannot wait longer than WAIT.
    let server_side = serving
        .join()
        .unwrap_or_else(|_| Err("the test server panicked".into()));
    client_side?;
    server_side.map_err(|e| format!("the test server: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::ssl::{SslContextBuilder, SslMethod, SslVersion};

    #[test]
    fn a_usable_context_handshakes_and_an_unusable_one_says_why() {
        let ok = SslContextBuilder::new(SslMethod::tls_client())
            .unwrap()
            .build();
        handshakes(&ok).unwrap();
        // No protocol left, as a local policy could leave a profile.
        let mut b = SslContextBuilder::new(SslMethod::tls_client()).unwrap();
        b.set_min_proto_version(Some(SslVersion::TLS1_3)).unwrap();
        b.set_max_proto_version(Some(SslVersion::TLS1_2)).unwrap();
        let e = handshakes(&b.build()).unwrap_err();
        assert!(e.contains("no protocols available"), "{e}");
        // TLS 1.3 only: the TLS 1.2 server is refused, and that is said.
        let mut b = SslContextBuilder::new(SslMethod::tls_client()).unwrap();
        b.set_min_proto_version(Some(SslVersion::TLS1_3)).unwrap();
        let e = handshakes(&b.build()).unwrap_err();
        assert!(e.starts_with("no handshake with a TLS 1.2 server"), "{e}");
    }
}
