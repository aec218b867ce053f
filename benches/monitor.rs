//! Monitors N domains (default 10,000) through the real check path (DNSSEC
//! validation against the lab's signed zones, STARTTLS probes, DANE matching,
//! state commit to sled) with the direct transport, and prints its figures.
//!
//! Run as root: `cargo bench --bench monitor` (BENCH_DOMAINS=N to change N,
//! BENCH_ROUNDS=R for R passes; the first checks new domains, the later ones
//! measure steady-state monitoring).
//! It starts the DNS lab itself (loopback only). The XMPP endpoint is a
//! minimal STARTTLS responder in this file that accepts any stream `to`,
//! because Prosody would need one VirtualHost per benchmark domain.

use certwatch::store::StateStore as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use certwatch::config::{Config, Transport};
use certwatch::engine::Engine;
use certwatch::monitor::{check_domain, MONITOR_CONCURRENCY};
use certwatch::store::Store;

const PORT: u16 = 15822;

fn main() {
    // RUST_LOG=certwatch=debug shows where a check spends its time.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let n: usize = std::env::var("BENCH_DOMAINS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    // Round 1 checks new domains; later rounds are steady-state monitoring.
    let rounds_wanted: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("certwatch-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["bench.test".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let spki = hex::encode(certwatch::dane::spki_sha256(cert.der()).unwrap());

    let lab = root.join("tests/labs/dnslab.sh");
    let dns_dir = dir.join("dns");
    let t = Instant::now();
    let status = std::process::Command::new("bash")
        .arg(&lab)
        .args(["start", dns_dir.to_str().unwrap()])
        .env("GOOD_SPKI", &spki)
        .env("OTHER_SPKI", "00".repeat(32))
        .env("C2S_PORT", PORT.to_string())
        .env("DNSLAB_ADDR_BASE", "127.56.0")
        .env("BENCH_DOMAINS", n.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "dnslab start failed");
    println!(
        "dns lab with {n} signed benchmark domains ready in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let env = std::fs::read_to_string(dns_dir.join("env")).unwrap();
    let get = |k: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap()
            .trim_matches('"')
            .to_owned()
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(async {
        let accepted = Arc::new(AtomicUsize::new(0));
        for addr in ["127.0.0.1", "[::1]"] {
            let listener = TcpListener::bind(format!("{addr}:{PORT}")).await.unwrap();
            tokio::spawn(responder(
                listener,
                cert.der().to_vec(),
                key.serialize_der(),
                accepted.clone(),
            ));
        }
        let mut config = Config::default();
        config.dns.nameservers = vec![get("AUTH_NS")];
        config.dns.trust_anchor = get("TRUST_ANCHOR");
        config.probe.transport = Transport::Direct;
        config.probe.timeout = Duration::from_secs(10);
        // The lab lives on loopback addresses.
        config.probe.allow_private = true;
        config.store.path = dir.join("db").display().to_string();
        let store = Store::open(&dir.join("db")).unwrap();
        let mut engine = Engine::new(config, store.clone(), certwatch::clock::system()).unwrap();
        // One host serves every benchmark domain: lift the per-target cap.
        engine.set_probe_gap(Duration::ZERO);
        let engine = Arc::new(engine);
        let domains: Vec<String> = (0..n).map(|i| format!("d{i}.bench.test")).collect();
        for d in &domains {
            store.subscribe(d, "bench@localhost").unwrap();
        }
        let mut rounds = Vec::new();
        for round in 1..=rounds_wanted {
            let probes0 = accepted.load(Ordering::Relaxed);
            let start = Instant::now();
            let cpu0 = cpu_seconds();
            stream::iter(domains.iter())
                .for_each_concurrent(MONITOR_CONCURRENCY, |d| {
                    let engine = engine.clone();
                    async move { check_domain(&engine, d).await }
                })
                .await;
            let wall = start.elapsed().as_secs_f64();
            let cpu = cpu_seconds() - cpu0;
            store.flush().await.unwrap();
            let ok = domains
                .iter()
                .filter(|d| {
                    store
                        .domain_state(d)
                        .unwrap()
                        .and_then(|s| s.state)
                        .is_some_and(|v| v == certwatch::report::Verdict::Ok)
                })
                .count();
            rounds.push(Round {
                round,
                wall,
                cpu,
                probes: accepted.load(Ordering::Relaxed) - probes0,
                ok,
                rss_kib: rss_kib("VmRSS:"),
            });
        }
        (rounds, store.size_on_disk().unwrap())
    });
    let (rounds, size) = result;
    let _ = std::process::Command::new("bash")
        .arg(&lab)
        .args(["stop", dns_dir.to_str().unwrap()])
        .status();
    for r in &rounds {
        let what = if r.round == 1 {
            "new domains"
        } else {
            "steady state"
        };
        println!("round {} ({what})", r.round);
        println!("  domains checked       {n} ({} ok)", r.ok);
        println!("  wall time             {:.1} s", r.wall);
        println!("  checks per second     {:.0}", n as f64 / r.wall);
        println!(
            "  probes (connections)  {}, {:.0} per second",
            r.probes,
            r.probes as f64 / r.wall
        );
        println!(
            "  CPU (user+system)     {:.1} s, {:.0}% of one core",
            r.cpu,
            100.0 * r.cpu / r.wall
        );
        println!("  RSS after the round   {} MiB", r.rss_kib / 1024);
    }
    // VmHWM is sampled lazily by the kernel; never print less than a round saw.
    let peak = rounds
        .iter()
        .map(|r| r.rss_kib)
        .fold(rss_kib("VmHWM:"), u64::max);
    println!("peak RSS              {} MiB", peak / 1024);
    println!(
        "sled size on disk     {} KiB, {:.1} KiB per domain",
        size / 1024,
        size as f64 / 1024.0 / n as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The figures of one pass over every domain.
struct Round {
    round: usize,
    wall: f64,
    cpu: f64,
    probes: usize,
    ok: usize,
    rss_kib: u64,
}

/// A STARTTLS responder that accepts any stream `to` and presents `cert`.
async fn responder(listener: TcpListener, cert: Vec<u8>, key: Vec<u8>, accepted: Arc<AtomicUsize>) {
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
                if n == 0 {
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
                if n == 0 {
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

fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
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

/// A `/proc/self/status` figure in KiB (`VmRSS:` now, `VmHWM:` peak).
fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
