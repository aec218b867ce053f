//! Shared by the benchmarks: a minimal STARTTLS responder standing in for
//! XMPP servers, and the CPU counters of a process.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Starts a [`responder`] on each of `hosts` address:ports: host J on
/// BASE.(J mod ADDRS + 1), port PORT + J div ADDRS (dnslab.sh's bench zone).
pub async fn spawn_responders(
    (base, addrs, port): (&str, usize, u16),
    hosts: usize,
    (cert, key): (&[u8], &[u8]),
    accepted: &Arc<AtomicUsize>,
) {
    for j in 0..hosts {
        let addr: std::net::SocketAddr =
            format!("{base}.{}:{}", j % addrs + 1, port as usize + j / addrs)
                .parse()
                .unwrap();
        let listener = TcpListener::bind(addr).await.unwrap();
        tokio::spawn(responder(
            listener,
            cert.to_vec(),
            key.to_vec(),
            accepted.clone(),
        ));
    }
}

/// A STARTTLS responder that accepts any stream `to` and presents `cert`.
pub async fn responder(
    listener: TcpListener,
    cert: Vec<u8>,
    key: Vec<u8>,
    accepted: Arc<AtomicUsize>,
) {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.into()],
        rustls_pki_types::PrivateKeyDer::Pkcs8(key.into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            continue;
        };
        accepted.fetch_add(1, Ordering::Relaxed);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let mut seen = Vec::new();
            // Stream header, then features with STARTTLS.
            while !seen.windows(7).any(|w| w == b"version") || !seen.ends_with(b">") {
                let Ok(n) = s.read(&mut buf).await else {
                    return;
                };
                if n == 0 || seen.len() > 8192 {
                    return;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            let _ = s.write_all(b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='b' version='1.0'><stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>").await;
            seen.clear();
            while !seen.windows(8).any(|w| w == b"starttls") || !seen.ends_with(b">") {
                let Ok(n) = s.read(&mut buf).await else {
                    return;
                };
                if n == 0 || seen.len() > 8192 {
                    return;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            let _ = s
                .write_all(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
                .await;
            if let Ok(mut tls) = acceptor.accept(s).await {
                let _ = tls.read(&mut buf).await;
            }
        });
    }
}

/// User plus system CPU seconds of process `pid` ("self": this one): the
/// kernel's utime and stime, the counters getrusage reports; read from
/// /proc because the crate forbids the unsafe code a libc call needs.
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}
