//! The coordinator (`certwatch serve`) with 0, 1, 2 and 3 vantage agents
//! (`certwatch agent`, logged in to the test Prosody), all on loopback:
//! probes per second as agents are added, and the coordinator's CPU per
//! check when it probes itself against when the agents probe for it. Not a
//! test: it asserts nothing about time, and `cargo test` never runs it.
//!
//! What limits the probe rate is each vantage's own circuit budget,
//! `probe.circuits_per_second`: every vantage (the coordinator and each
//! agent) probes over `transport = "socks5"` through a small SOCKS5 relay in
//! this process, and the budget is spent on every probe over SOCKS5 (as
//! over Tor, where each probe is a fresh circuit). The relay itself is a
//! plain TCP relay, not Tor: the figures show the budget and the job
//! protocol, not Tor's latency. The direct transport has no budget at all
//! (a direct probe waits for nothing but the monitor's per-address
//! spacing), so it could not show what agents add.
//!
//! Run as root in a namespace with only loopback (see the README's
//! "Benchmark"): `cargo bench --bench agents`. Environment (defaults):
//!   BENCH_DOMAINS=2000   domains dI.bench.test (one c2s endpoint each)
//!   BENCH_HOSTS=400      SRV targets they spread over (8 addresses x 50 ports)
//!   BENCH_INTERVAL=20    monitor.interval in seconds: the demand is
//!                        DOMAINS / INTERVAL checks a second, above the budget
//!   BENCH_CIRCUITS=10    probe.circuits_per_second of every vantage (burst 1)
//!   BENCH_SECONDS=15     the measured window of each run (after 5 s warm-up)
//!
//! Five runs, each a fresh `serve` on a copy of the same store (every
//! domain subscribed, never checked): the coordinator alone probing; 1, 2
//! and 3 agents probing for it (`probe.local = false`); and the coordinator
//! alone with three times the budget (the probe rate of three agents, so
//! the CPU per check compares at the same rate). Probes per second are the
//! connections the responders accepted in the window; checks from the
//! coordinator's /metrics; CPU is the `serve` process's utime + stime from
//! /proc/PID/stat (the agents, Prosody, NSD, the relay and the responders
//! are not in it).

// The shared test harness: labs, the certwatch binary.
mod common;
#[path = "../tests/common/mod.rs"]
mod lab;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PORT: u16 = 16822;
const HOST_BASE: &str = "127.59.0";
const HOST_ADDRS: usize = 8;
/// The test XMPP server's client port (the agents log in there).
const XMPP: u16 = 20022;
const COMPONENT_PORT: u16 = 20047;
const WEB: u16 = 20080;
const RELAY: u16 = 20090;
const WARM_UP: Duration = Duration::from_secs(5);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Setup {
    dir: std::path::PathBuf,
    dns: Vec<(String, String)>,
    cert: std::path::PathBuf,
    interval: u64,
    circuits: f64,
    window: Duration,
}

/// One run's figures.
struct Run {
    probes: usize,
    checks: f64,
    cpu: f64,
    seconds: f64,
}

fn main() {
    lab::assert_isolated();
    let n: usize = env_or("BENCH_DOMAINS", 2000);
    let hosts: usize = env_or("BENCH_HOSTS", 400).clamp(1, 125 * HOST_ADDRS);
    let dir = lab::workdir("bench-agents");
    let cert = lab::TestCert::generate(&dir, "good", &["localhost", "bench.test"]);
    // The bench zone: dI.bench.test -> hJ.bench.test, each host its own
    // address:port from PORT on.
    let dns_env: Vec<(&str, String)> = vec![
        ("GOOD_SPKI", cert.spki.clone()),
        ("OTHER_SPKI", "00".repeat(32)),
        ("C2S_PORT", PORT.to_string()),
        ("DNSLAB_ADDR_BASE", "127.58.0".into()),
        ("DNSLAB_TIMEOUT", "60".into()),
        ("BENCH_DOMAINS", n.to_string()),
        ("BENCH_HOSTS", hosts.to_string()),
        ("BENCH_HOST_BASE", HOST_BASE.into()),
        ("BENCH_HOST_ADDRS", HOST_ADDRS.to_string()),
    ];
    let xmpp_env: Vec<(&str, String)> = vec![
        ("C2S_PORT", XMPP.to_string()),
        ("C2S_TLS_PORT", (XMPP + 1).to_string()),
        ("S2S_PORT", (XMPP + 47).to_string()),
        ("S2S_TLS_PORT", (XMPP + 48).to_string()),
        ("COMPONENT_PORT", COMPONENT_PORT.to_string()),
        ("TLS_CERT", cert.cert.display().to_string()),
        ("TLS_KEY", cert.key.display().to_string()),
        ("EXTRA_USERS", "agent-1 agent-2 agent-3".into()),
    ];
    let t = Instant::now();
    let dns = lab::Lab::start("dnslab.sh", &[], &dir.join("dns"), &dns_env);
    let _xmpp = lab::Lab::start("xmpplab.sh", &["prosody"], &dir.join("xmpp"), &xmpp_env);
    println!(
        "dns lab ({n} signed domains over {hosts} hosts) and Prosody ready in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let setup = Setup {
        dir: dir.clone(),
        dns: dns.env_file("env"),
        cert: cert.cert.clone(),
        interval: env_or("BENCH_INTERVAL", 20),
        circuits: env_or("BENCH_CIRCUITS", 10.0),
        window: Duration::from_secs(env_or("BENCH_SECONDS", 15)),
    };
    let der = |p: &Path| {
        pem::parse(std::fs::read(p).unwrap())
            .unwrap()
            .into_contents()
    };
    let (cert_der, key_der) = (der(&cert.cert), der(&cert.key));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        common::spawn_responders(
            (HOST_BASE, HOST_ADDRS, PORT),
            hosts,
            (&cert_der, &key_der),
            &accepted,
        )
        .await;
        let relay = TcpListener::bind(("127.0.0.1", RELAY)).await.unwrap();
        tokio::spawn(socks5_relay(relay));
        subscribe_all(&dir.join("db"), n).await;
    });

    // The coordinator alone, then 1..3 agents with the same budget each,
    // then the coordinator alone with three agents' budget (the same probe
    // rate as 3 agents, so their CPU per check compares).
    let plan = [(0, 1.0), (1, 1.0), (2, 1.0), (3, 1.0), (0, 3.0)];
    let mut runs = Vec::new();
    for (i, (agents, times)) in plan.into_iter().enumerate() {
        let circuits = setup.circuits * times;
        let run = measure(&setup, i, agents, circuits, &accepted);
        println!(
            "  {agents} agents, circuits_per_second {circuits}: {:.1} probes/s, {:.1} checks/s, coordinator CPU {:.2} ms per check",
            run.probes as f64 / run.seconds,
            run.checks / run.seconds,
            1000.0 * run.cpu / run.checks.max(1.0),
        );
        runs.push((agents, circuits, run));
    }
    drop(rt);
    let base = runs[0].2.probes as f64 / runs[0].2.seconds;
    println!(
        "coordinator + agents, {n} domains over {hosts} hosts, interval {} s (asks for {:.0} checks/s), {:.0} s measured per run:",
        setup.interval,
        n as f64 / setup.interval as f64,
        setup.window.as_secs_f64()
    );
    println!("| who probes | circuits/s each | probes/s | x first | checks/s | coordinator CPU per check |");
    println!("|---|---|---|---|---|---|");
    for (agents, circuits, r) in &runs {
        let rate = r.probes as f64 / r.seconds;
        println!(
            "| {} | {circuits} | {rate:.1} | {:.2} | {:.1} | {:.2} ms |",
            if *agents == 0 {
                "the coordinator alone".to_string()
            } else {
                format!("{agents} agent(s), probe.local = false")
            },
            rate / base,
            r.checks / r.seconds,
            1000.0 * r.cpu / r.checks.max(1.0)
        );
    }
}

/// Subscribes dI.bench.test for every I below `n` in a fresh store at
/// `db`, closed again before any run copies it.
async fn subscribe_all(db: &Path, n: usize) {
    use certwatch::store::StateStore as _;
    use futures::StreamExt as _;
    let store = certwatch::store::Store::open_with_cache(db, 16 << 20).unwrap();
    futures::stream::iter(0..n)
        .map(|i| {
            let store = store.clone();
            async move {
                store
                    .subscribe(&format!("d{i}.bench.test"), "bench@localhost")
                    .await
                    .unwrap()
            }
        })
        .buffer_unordered(256)
        .for_each(|_| async {})
        .await;
    store.flush().await.unwrap();
}

/// Starts the coordinator and `agents` agents on a copy of the store,
/// waits until the agents are online and the warm-up is over, and
/// measures one window.
fn measure(s: &Setup, run: usize, agents: usize, circuits: f64, accepted: &AtomicUsize) -> Run {
    let dir = s.dir.join(format!("run-{run}"));
    std::fs::create_dir_all(&dir).unwrap();
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(s.dir.join("db"))
        .arg(dir.join("db"))
        .status()
        .unwrap();
    assert!(copied.success());
    let var = |k: &str| s.dns.iter().find(|(key, _)| key == k).unwrap().1.clone();
    let budget = format!(
        "transport = \"socks5\"\nsocks5 = \"127.0.0.1:{RELAY}\"\ncircuits_per_second = {circuits:.1}\ncircuit_burst = 1\ntimeout = \"30s\"\nallow_private = true\n"
    );
    let mut sections = format!(
        "[dns]\nnameservers = [\"{}\"]\ntrust_anchor = \"{}\"\n\n[probe]\n{budget}local = {}\n\n[monitor]\ninterval = \"{}s\"\njitter = \"0s\"\n\n[web]\nlisten = \"127.0.0.1:{WEB}\"\n\n",
        var("AUTH_NS"),
        var("TRUST_ANCHOR"),
        agents == 0,
        s.interval
    );
    for i in 1..=agents {
        sections.push_str(&format!(
            "[[vantage]]\nname = \"a{i}\"\njid = \"agent-{i}@localhost\"\nweight = 1\n\n"
        ));
    }
    let mut procs = vec![lab::start_bot(&dir, COMPONENT_PORT, &sections)];
    let coordinator = procs[0].0.id().to_string();
    for i in 1..=agents {
        let config = dir.join(format!("agent-{i}.toml"));
        std::fs::write(
            &config,
            format!(
                "[agent]\njid = \"agent-{i}@localhost\"\npassword = \"agent-{i}-pw\"\ncoordinator = \"{}\"\nserver = \"127.0.0.1:{XMPP}\"\ntrust_file = \"{}\"\nmax_jobs = 64\n\n[probe]\n{budget}",
                lab::COMPONENT,
                s.cert.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join(format!("agent-{i}.log"))).unwrap();
        procs.push(lab::Proc(
            lab::certwatch()
                .args(["--config", config.to_str().unwrap(), "agent"])
                .env("RUST_LOG", "warn")
                .stderr(log)
                .spawn()
                .unwrap(),
        ));
    }
    let log = dir.join("certwatch.log");
    let online = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("agent online")
            .count()
    };
    let t = Instant::now();
    while online() < agents && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(WARM_UP);
    let (p0, c0, cpu0, t0) = (
        accepted.load(Ordering::Relaxed),
        checks_total(),
        common::cpu_seconds(&coordinator),
        Instant::now(),
    );
    std::thread::sleep(s.window);
    let run = Run {
        probes: accepted.load(Ordering::Relaxed) - p0,
        checks: checks_total() - c0,
        cpu: common::cpu_seconds(&coordinator) - cpu0,
        seconds: t0.elapsed().as_secs_f64(),
    };
    drop(procs);
    // The next run binds the same ports.
    std::thread::sleep(Duration::from_secs(1));
    run
}

/// The coordinator's checks so far, every verdict (its /metrics).
fn checks_total() -> f64 {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", WEB)) else {
        return 0.0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .filter(|l| l.starts_with("certwatch_checks_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A SOCKS5 relay (RFC 1928 with RFC 1929 credentials, which it ignores):
/// CONNECT to an IP, then bytes both ways.
async fn socks5_relay(listener: TcpListener) {
    loop {
        let Ok((s, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let _ = relay_one(s).await;
        });
    }
}

async fn relay_one(mut s: TcpStream) -> std::io::Result<()> {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await?;
    let mut methods = vec![0u8; head[1] as usize];
    s.read_exact(&mut methods).await?;
    s.write_all(&[5, 2]).await?;
    // Username/password: version, then two length-prefixed strings.
    let mut b = [0u8; 2];
    s.read_exact(&mut b).await?;
    let mut skip = vec![0u8; b[1] as usize + 1];
    s.read_exact(&mut skip).await?;
    let mut pass = vec![0u8; *skip.last().unwrap() as usize];
    s.read_exact(&mut pass).await?;
    s.write_all(&[1, 0]).await?;
    let mut req = [0u8; 4];
    s.read_exact(&mut req).await?;
    let target = match req[3] {
        1 => {
            let mut a = [0u8; 6];
            s.read_exact(&mut a).await?;
            SocketAddr::from(([a[0], a[1], a[2], a[3]], u16::from_be_bytes([a[4], a[5]])))
        }
        4 => {
            let mut a = [0u8; 18];
            s.read_exact(&mut a).await?;
            let ip: [u8; 16] = a[..16].try_into().unwrap();
            SocketAddr::from((ip, u16::from_be_bytes([a[16], a[17]])))
        }
        _ => return Ok(()),
    };
    let Ok(mut out) = TcpStream::connect(target).await else {
        s.write_all(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
        return Ok(());
    };
    s.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
    tokio::io::copy_bidirectional(&mut s, &mut out).await?;
    Ok(())
}
