//! Requests per second and latency of the web front's busiest reads,
//! `GET /domain/<domain>` and `GET /metrics` (and the QR code image), with N monitored domains in a
//! real sled store, each with a stored report and an alert. Not a test: it
//! asserts nothing about time, and `cargo test` never runs it.
//!
//! Run on loopback (see the README's "Benchmark"): `cargo bench --bench web`.
//! Environment (defaults):
//!   BENCH_DOMAINS=100000  domains dI.bench.test, monitored, one report each
//!   BENCH_CLIENTS=32      keep-alive connections sending requests at once
//!   BENCH_SECONDS=10      how long each route is driven
//!
//! The clients run in this process, on the same cores as the server, so
//! the rates are floors; the CPU figures count both sides.

mod common;

use certwatch::store::StateStore as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use certwatch::config::{Config, Transport};
use certwatch::engine::Engine;
use certwatch::model::Item;
use certwatch::report::{EndpointReport, EndpointVerdict, Report, Verdict};
use certwatch::store::Store;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A report as a real four-service domain has: one endpoint per service.
fn report(domain: &str) -> Report {
    let spki = "ab".repeat(32);
    let endpoints = [
        ("xmpp-client", 5222, "starttls"),
        ("xmpps-client", 5223, "direct"),
        ("xmpp-server", 5269, "starttls"),
        ("xmpps-server", 5270, "direct"),
    ]
    .into_iter()
    .map(|(service, port, tls)| EndpointReport {
        service: service.into(),
        host: format!("xmpp.{domain}"),
        port,
        address: Some("192.0.2.1".parse().unwrap()),
        tls: tls.into(),
        verdict: EndpointVerdict::Match,
        tlsa: vec![format!("3 1 1 {spki}")],
        spki_sha256: Some(spki.clone()),
        cert_sha256: Some("cd".repeat(32)),
        matched: Some(format!("3 1 1 {spki}")),
        matched_until: None,
        error: None,
        tlsa_name: format!("_{port}._tcp.xmpp.{domain}"),
        tls_version: Some("TLSv1.3".into()),
        cipher: Some("TLS13_AES_256_GCM_SHA384".into()),
        notes: vec![],
        vantage: vec![],
        confirmed: None,
    })
    .collect();
    Report {
        domain: domain.into(),
        checked_at: "2026-12-04T10:00:00Z".into(),
        verdict: Verdict::Ok,
        endpoints,
        records_to_add: vec![],
        advice: vec![],
        transport: "tor".into(),
        errors: vec![],
        bogus_rrsets: vec![],
        evidence: vec![],
        nxdomain: false,
        resolvers: vec![],
        horizons: Default::default(),
        rollover: vec![],
    }
}

fn main() {
    let n: usize = env_or("BENCH_DOMAINS", 100_000);
    let clients: usize = env_or("BENCH_CLIENTS", 32);
    let seconds: u64 = env_or("BENCH_SECONDS", 10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let t = Instant::now();
        // 256 writes in flight: the store's owner commits them in groups.
        use futures::StreamExt as _;
        futures::stream::iter(0..n)
            .map(|i| {
                let store = store.clone();
                async move {
                    let d = format!("d{i}.bench.test");
                    store
                        .subscribe(&d, &format!("u{}@localhost", i % 5000))
                        .await
                        .unwrap();
                    store.put_last_report(&d, &report(&d)).await.unwrap();
                    let item = Item {
                        id: format!("20261204T100000Z-ok-{i:08x}"),
                        title: format!("{d}: OK"),
                        content: "All endpoints match.".into(),
                        updated: "2026-12-04T10:00:00Z".into(),
                    };
                    store.put_item(&d, &item).await.unwrap();
                }
            })
            .buffer_unordered(256)
            .collect::<Vec<()>>()
            .await;
        store.flush().await.unwrap();
        println!(
            "{n} domains stored (subscription, report, alert) in {:.1} s, {} MiB on disk",
            t.elapsed().as_secs_f64(),
            store.size_on_disk().unwrap_or(0) >> 20
        );
        let mut config = Config::default();
        config.dns.nameservers = vec!["127.0.0.1:9".into()];
        config.probe.transport = Transport::Direct;
        config.xmpp.component = "certwatch.example.org".into();
        let engine = Arc::new(Engine::new(config, store, certwatch::clock::system()).unwrap());

        let t = Instant::now();
        let cpu = common::cpu_seconds("self");
        certwatch::web::ops::refresh_once(&engine).unwrap();
        println!(
            "one refresh of the store-held gauges (a store scan, every {} s): {:.2} s, {:.2} s CPU",
            certwatch::web::ops::GAUGES_EVERY.as_secs(),
            t.elapsed().as_secs_f64(),
            common::cpu_seconds("self") - cpu
        );

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let settings = certwatch::web::Settings {
            listen: addr,
            base_url: format!("http://{addr}"),
            proxies: vec![],
            metrics: true,
            component: std::env::var("BENCH_NO_XMPP").is_err().then(|| "certwatch.example.org".into()),
        };
        tokio::spawn(certwatch::web::run(
            engine.clone(),
            settings,
            listener,
            std::future::pending(),
        ));

        let t = Instant::now();
        let scrapes = 10_000;
        let cpu = common::cpu_seconds("self");
        for _ in 0..scrapes {
            std::hint::black_box(engine.metrics().encode());
        }
        println!(
            "rendering /metrics alone: {:.1} µs CPU per scrape ({:.1} µs wall)",
            (common::cpu_seconds("self") - cpu) * 1e6 / scrapes as f64,
            t.elapsed().as_secs_f64() * 1e6 / scrapes as f64
        );

        let t = Instant::now();
        for i in 0..1000 {
            let uri = format!("xmpp:certwatch.example.org?pubsub;action=subscribe;node=d{i}.bench.test");
            std::hint::black_box(qrcode::QrCode::new(uri.as_bytes()).unwrap());
        }
        let encode = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        for i in 0..1000 {
            let uri = format!("xmpp:certwatch.example.org?pubsub;action=subscribe;node=d{i}.bench.test");
            std::hint::black_box(certwatch::web::qr::svg(&uri));
        }
        println!(
            "one QR code: {:.0} µs to encode, {:.0} µs encoded and drawn as SVG",
            encode,
            t.elapsed().as_secs_f64() * 1e3
        );

        for route in ["domain", "metrics", "qr"] {
            let cpu = common::cpu_seconds("self");
            let (count, mut latencies) = drive(addr, route, n, clients, seconds).await;
            let cpu = common::cpu_seconds("self") - cpu;
            latencies.sort_unstable();
            let pct = |p: usize| latencies[(latencies.len() - 1) * p / 100] as f64 / 1000.0;
            let label = match route {
                "domain" => "GET /domain/<random of N>",
                "qr" => "GET /domain/<random of N>/qr.svg (cached a day by browsers)",
                _ => "GET /metrics",
            };
            println!(
                "{label}: {:.0} requests/s over {clients} connections, latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {:.0} µs CPU per request (server and client)",
                count as f64 / seconds as f64,
                pct(50),
                pct(99),
                pct(100),
                cpu * 1e6 / count as f64
            );
        }
    });
}

/// Sends requests to `route` on `clients` keep-alive connections for
/// `seconds`; returns how many were answered and each latency in µs.
async fn drive(
    addr: SocketAddr,
    route: &'static str,
    n: usize,
    clients: usize,
    seconds: u64,
) -> (usize, Vec<u32>) {
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for c in 0..clients {
        tasks.push(tokio::spawn(async move {
            let mut conn = TcpStream::connect(addr).await.unwrap();
            conn.set_nodelay(true).unwrap();
            let mut latencies = Vec::new();
            let mut i = c;
            while Instant::now() < until {
                // A spread of domains, so the store's cache is not one page.
                i = (i * 7919 + 104_729) % n.max(1);
                let path = match route {
                    "domain" => format!("/domain/d{i}.bench.test"),
                    "qr" => format!("/domain/d{i}.bench.test/qr.svg"),
                    _ => "/metrics".to_owned(),
                };
                let t = Instant::now();
                let status = request(&mut conn, &path).await;
                assert_eq!(status, 200, "{path}");
                latencies.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    (all.len(), all)
}

/// One keep-alive GET: the status, after reading the whole body.
async fn request(conn: &mut TcpStream, path: &str) -> u16 {
    let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        let k = conn.read(&mut chunk).await.unwrap();
        assert!(k > 0, "the server closed the connection");
        buf.extend_from_slice(&chunk[..k]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a content-length");
    while buf.len() < head_end + length {
        let k = conn.read(&mut chunk).await.unwrap();
        assert!(k > 0, "the server closed the connection mid-body");
        buf.extend_from_slice(&chunk[..k]);
    }
    status
}
