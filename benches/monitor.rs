//! Runs the real service loop, `monitor::run` (the in-memory schedule, the
//! per-address spacing, the circuit budget, sled), over N domains of the DNS
//! lab's bench zone, and prints its figures. Not a test: it asserts nothing
//! about time, and `cargo test` never runs it.
//!
//! Run as root in a namespace with only loopback (see the README's
//! "Benchmark"): `cargo bench --bench monitor`. Environment (defaults):
//!   BENCH_DOMAINS=100000  domains dI.bench.test, all subscribed at once
//!   BENCH_HOSTS=1000      SRV targets they spread over, each its own
//!                         address:port (8 loopback addresses x 125 ports)
//!   BENCH_INTERVAL=       monitor.interval in seconds (default: N / 100)
//!   BENCH_ROUNDS=1        how many checks per domain to wait for
//!   BENCH_TRANSPORT=direct  or `tor`: over the suite's private Tor network
//!                         (tests/labs/tornet.sh), embedded arti
//!   BENCH_CIRCUITS=100    probe.circuits_per_second over Tor (burst: 2 s worth)
//!
//! The XMPP endpoints are a minimal STARTTLS responder (benches/common) that
//! accepts any stream `to` (Prosody would need one VirtualHost per domain);
//! its CPU is in the figures. NSD runs beside it, in its own processes.

// The real monitor loop is one deep future; its layout needs more depth.
#![recursion_limit = "256"]

mod common;

use certwatch::store::StateStore as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use certwatch::config::{Config, Transport};
use certwatch::domain::Domain;
use certwatch::engine::Engine;

/// Subscribes made one at a time before the burst, for comparison.
const SERIAL_SUBSCRIBES: usize = 2_000;
/// Subscribes in flight at once while the store is filled.
const SUBSCRIBES_IN_FLIGHT: usize = 256;
use certwatch::monitor::{run_observed, LagObserver};
use certwatch::store::Store;

const PORT: u16 = 15822;
const HOST_BASE: &str = "127.57.0";
const HOST_ADDRS: usize = 8;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // RUST_LOG=certwatch=debug shows where a check spends its time.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let n: usize = env_or("BENCH_DOMAINS", 100_000);
    let hosts: usize = env_or("BENCH_HOSTS", 1000).clamp(1, 125 * HOST_ADDRS);
    let rounds: usize = env_or("BENCH_ROUNDS", 1).max(1);
    let interval = Duration::from_secs(env_or("BENCH_INTERVAL", (n as u64 / 100).max(10)));
    let tor = std::env::var("BENCH_TRANSPORT").is_ok_and(|t| t == "tor");
    let circuits: f64 = env_or("BENCH_CIRCUITS", 100.0);
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("certwatch-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["bench.test".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let spki = hex::encode(certwatch::dane::spki_sha256(cert.der()).unwrap());

    let tor_lab = root.join("tests/labs/tornet.sh");
    let tor_dir = dir.join("tor");
    if tor {
        let t = Instant::now();
        let status = std::process::Command::new("bash")
            .arg(&tor_lab)
            .args(["start", tor_dir.to_str().unwrap()])
            .env("TORNET_PORT_BASE", "17100")
            .env(
                "TORNET_KEYCACHE",
                root.join("target/tornet-keys").display().to_string(),
            )
            .env("TORNET_OWNER_PID", std::process::id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "tornet start failed");
        println!(
            "private Tor network ready in {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
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
        .env("DNSLAB_TIMEOUT", "60")
        .env("BENCH_DOMAINS", n.to_string())
        .env("BENCH_HOSTS", hosts.to_string())
        .env("BENCH_HOST_BASE", HOST_BASE)
        .env("BENCH_HOST_ADDRS", HOST_ADDRS.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "dnslab start failed");
    println!(
        "dns lab with {n} signed domains over {hosts} hosts ready in {:.1} s",
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
    let figures = rt.block_on(async {
        let accepted = Arc::new(AtomicUsize::new(0));
        // The same address:port layout as dnslab.sh's bench zone.
        common::spawn_responders((HOST_BASE, HOST_ADDRS, PORT), hosts, (cert.der(), &key.serialize_der()), &accepted)
            .await;
        let mut config = Config::default();
        config.dns.nameservers = vec![get("AUTH_NS")];
        config.dns.trust_anchor = get("TRUST_ANCHOR");
        config.probe.timeout = Duration::from_secs(10);
        // The lab lives on loopback addresses.
        config.probe.allow_private = true;
        config.monitor.interval = interval;
        config.monitor.jitter = Duration::ZERO;
        config.store.path = dir.join("db").display().to_string();
        if tor {
            let arti = dir.join("arti.toml");
            let base = std::fs::read_to_string(tor_dir.join("arti.toml")).unwrap();
            std::fs::write(
                &arti,
                format!(
                    "{base}\n[storage]\nstate_dir = \"{}\"\ncache_dir = \"{}\"\n[storage.permissions]\ndangerously_trust_everyone = true\n",
                    dir.join("arti-state").display(),
                    dir.join("arti-cache").display()
                ),
            )
            .unwrap();
            config.probe.transport = Transport::Tor;
            config.probe.arti_config = arti.display().to_string();
            config.probe.timeout = Duration::from_secs(30);
            config.probe.circuits_per_second = circuits;
            config.probe.circuit_burst = (circuits * 2.0).max(1.0) as u32;
        } else {
            config.probe.transport = Transport::Direct;
        }
        config.validate().unwrap();
        let store = Store::open_with_cache(&dir.join("db"), config.store.cache_mib << 20).unwrap();
        let engine = Arc::new(Engine::new(config, store.clone(), certwatch::clock::system()).unwrap());
        let t = Instant::now();
        // One at a time first, each durable before the next: what every
        // subscribe cost before group commit (a write, then its own flush).
        let serial = n.min(SERIAL_SUBSCRIBES);
        for i in 0..serial {
            store
                .subscribe(&format!("d{i}.bench.test"), "bench@localhost")
                .await
                .unwrap();
        }
        let took = t.elapsed().as_secs_f64();
        println!(
            "{serial} subscriptions one at a time in {took:.1} s ({:.0} subscribes/s, each durable before the next)",
            serial as f64 / took
        );
        let t = Instant::now();
        // Then as a burst of users would: many subscribes in flight at once,
        // each answered after its batch's flush (the store's group commit).
        use futures::StreamExt as _;
        futures::stream::iter(serial..n)
            .map(|i| {
                let store = store.clone();
                async move {
                    store
                        .subscribe(&format!("d{i}.bench.test"), "bench@localhost")
                        .await
                        .unwrap()
                }
            })
            .buffer_unordered(SUBSCRIBES_IN_FLIGHT)
            .for_each(|_| async {})
            .await;
        let took = t.elapsed().as_secs_f64();
        println!(
            "{} subscriptions stored in {took:.1} s ({:.0} subscribes/s, {SUBSCRIBES_IN_FLIGHT} in flight, each durable before its answer)",
            n - serial,
            (n - serial) as f64 / took
        );
        // Start the transport (and bootstrap arti) before the clock runs;
        // this probes one host, outside the figures.
        let t = Instant::now();
        let warm = Domain::parse(&format!("d{}.bench.test", n - 1)).unwrap();
        let (report, _) = engine.run_check(&warm).await.unwrap();
        println!(
            "transport up, one check ({:?}) in {:.1} s",
            report.verdict,
            t.elapsed().as_secs_f64()
        );

        let lags = Arc::new(Mutex::new(Vec::<u32>::with_capacity(n * rounds)));
        let seen = lags.clone();
        let observer: LagObserver = Arc::new(move |lag: Duration| {
            seen.lock()
                .unwrap()
                .push(u32::try_from(lag.as_millis()).unwrap_or(u32::MAX));
        });
        let probes0 = accepted.load(Ordering::Relaxed);
        let circuits0 = engine.circuits_taken();
        let cpu0 = common::cpu_seconds("self");
        let start = Instant::now();
        let monitor = tokio::spawn(run_observed(engine.clone(), observer));
        let want = n * rounds;
        let mut last_print = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let started = lags.lock().unwrap().len();
            if started >= want {
                break;
            }
            if last_print.elapsed() >= Duration::from_secs(30) {
                last_print = Instant::now();
                eprintln!(
                    "  {:>6.0} s: {started} checks started, {} probes",
                    start.elapsed().as_secs_f64(),
                    accepted.load(Ordering::Relaxed) - probes0
                );
            }
        }
        // The last checks started; wait for them (they are bounded by their deadline).
        let wait_end = Instant::now();
        while wait_end.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let checked = count_checked(&store, n);
            if checked >= n {
                break;
            }
        }
        let wall = start.elapsed().as_secs_f64();
        let cpu = common::cpu_seconds("self") - cpu0;
        let probes = accepted.load(Ordering::Relaxed) - probes0;
        let circuits = engine.circuits_taken() - circuits0;
        monitor.abort();
        let _ = monitor.await;
        store.flush().await.unwrap();
        let ok = (0..n)
            .filter(|i| {
                store
                    .domain_state(&format!("d{i}.bench.test"))
                    .unwrap()
                    .and_then(|s| s.state)
                    .is_some_and(|v| v == certwatch::report::Verdict::Ok)
            })
            .count();
        let mut lags = lags.lock().unwrap().clone();
        lags.sort_unstable();
        Figures {
            wall,
            cpu,
            probes,
            circuits,
            checks: lags.len(),
            ok,
            lag_p50: percentile(&lags, 50),
            lag_p99: percentile(&lags, 99),
            lag_max: lags.last().copied().unwrap_or(0),
            size: store.size_on_disk().unwrap(),
        }
    });
    let _ = std::process::Command::new("bash")
        .arg(&lab)
        .args(["stop", dns_dir.to_str().unwrap()])
        .status();
    if tor {
        let _ = std::process::Command::new("bash")
            .arg(&tor_lab)
            .args(["stop", tor_dir.to_str().unwrap()])
            .status();
    }
    let f = figures;
    let transport = if tor {
        "tor (private network)"
    } else {
        "direct"
    };
    println!(
        "monitor::run over {n} domains, {hosts} hosts, interval {}, transport {transport}",
        humantime::format_duration(interval)
    );
    println!("  checks started        {} ({} domains ok)", f.checks, f.ok);
    println!("  wall time             {:.1} s", f.wall);
    println!("  checks per second     {:.1}", f.checks as f64 / f.wall);
    println!(
        "  probes (connections)  {}, {:.1} per second",
        f.probes,
        f.probes as f64 / f.wall
    );
    if tor {
        println!(
            "  fresh circuits        {}, {:.1} per second",
            f.circuits,
            f.circuits as f64 / f.wall
        );
        println!(
            "  CPU per probe         {:.2} ms",
            1000.0 * f.cpu / f.probes.max(1) as f64
        );
    }
    println!(
        "  CPU (user+system)     {:.1} s, {:.0}% of one core, {:.2} ms per check",
        f.cpu,
        100.0 * f.cpu / f.wall,
        1000.0 * f.cpu / f.checks.max(1) as f64
    );
    println!(
        "  scheduler lag         p50 {} ms, p99 {} ms, max {} ms",
        f.lag_p50, f.lag_p99, f.lag_max
    );
    println!("  peak RSS              {} MiB", rss_kib("VmHWM:") / 1024);
    println!(
        "  sled size on disk     {} MiB, {:.0} bytes per domain",
        f.size / (1 << 20),
        f.size as f64 / n as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// What one run measured.
struct Figures {
    wall: f64,
    cpu: f64,
    probes: usize,
    circuits: u64,
    checks: usize,
    ok: usize,
    lag_p50: u32,
    lag_p99: u32,
    lag_max: u32,
    size: u64,
}

fn percentile(sorted: &[u32], p: usize) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(sorted.len() - 1) * p / 100]
}

fn count_checked(store: &Store, n: usize) -> usize {
    (0..n)
        .filter(|i| {
            store
                .last_checked(&format!("d{i}.bench.test"))
                .ok()
                .flatten()
                .is_some()
        })
        .count()
}

/// A `/proc/self/status` figure in KiB (`VmHWM:` is the peak RSS).
fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
