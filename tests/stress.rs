//! Never silent under load: bursts of subscribes (chat and PubSub, with
//! unsubscribes racing them) while the monitor commits checks at full
//! speed, round after round, on real Prosody and ejabberd; and the
//! watchdog ending a `serve` whose store is stuck, on its own and on
//! SIGTERM.

mod common;

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{root, wait_component, workdir, Client, Lab, Proc, COMPONENT};
use serde_json::Value;

const T: Duration = Duration::from_secs(20);
const ROUNDS: usize = 10;
/// The longest any reply may take before the test fails.
const WATCHDOG_S: u64 = 10;
/// Domains in the lab's bench zone (what the subscribes name).
const DOMAINS: usize = 400;

fn users() -> Vec<String> {
    (0..4 * ROUNDS).map(|i| format!("s{i}")).collect()
}

fn lab_env(base: u16) -> Vec<(&'static str, String)> {
    vec![
        ("C2S_PORT", (base + 22).to_string()),
        ("C2S_TLS_PORT", (base + 23).to_string()),
        ("S2S_PORT", (base + 69).to_string()),
        ("S2S_TLS_PORT", (base + 70).to_string()),
        ("COMPONENT_PORT", (base + 47).to_string()),
        ("COMPONENT_JID", COMPONENT.into()),
        ("COMPONENT_SECRET", "s3cret".into()),
        ("EXTRA_USERS", users().join(" ")),
        // Any two SPKI digests: the bench zone's TLSA records need some.
        ("GOOD_SPKI", "ab".repeat(32)),
        ("OTHER_SPKI", "cd".repeat(32)),
        ("BENCH_DOMAINS", DOMAINS.to_string()),
        ("BENCH_HOSTS", "4".into()),
        ("DNSLAB_ADDR_BASE", format!("127.64.{}", base / 1000)),
    ]
}

fn dns_var(dns: &Lab, key: &str) -> String {
    dns.env_file("env")
        .into_iter()
        .find(|(k, _)| k == key)
        .unwrap()
        .1
}

/// What each of the bot's threads is doing, from /proc (for a failure).
fn threads_state(pid: u32) -> String {
    let mut out = String::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return format!("(process {pid} is gone)");
    };
    for t in tasks.flatten() {
        let read = |f: &str| std::fs::read_to_string(t.path().join(f)).unwrap_or_default();
        let stat = read("stat");
        let state = stat
            .rsplit_once(") ")
            .map(|(_, rest)| rest.chars().next().unwrap_or('?'))
            .unwrap_or('?');
        out.push_str(&format!(
            "{} {} state={state} wchan={}\n",
            t.file_name().to_string_lossy(),
            read("comm").trim(),
            read("wchan").trim()
        ));
    }
    out
}

fn log_count(dir: &Path, needle: &str) -> usize {
    std::fs::read_to_string(dir.join("certwatch.log"))
        .unwrap_or_default()
        .matches(needle)
        .count()
}

fn stress(server: &str, base: u16) {
    let dir = workdir(&format!("stress-{server}"));
    let env = lab_env(base);
    let dns = Lab::start("dnslab.sh", &[], &dir.join("dns"), &env);
    let _xmpp = Lab::start("xmpplab.sh", &[server], &dir.join("server"), &env);
    let c2s = base + 22;
    // The monitor at full speed: every monitored domain every second, each
    // check a quick refusal from the bench hosts, each one committed.
    let sections = format!(
        "[dns]\nnameservers = [\"{}\"]\ntrust_anchor = \"{}\"\n\n[probe]\ntransport = \"direct\"\ntimeout = \"2s\"\nallow_private = true\n\n[monitor]\ninterval = \"1s\"\njitter = \"0s\"\n",
        dns_var(&dns, "AUTH_NS"),
        dns_var(&dns, "TRUST_ANCHOR")
    );
    let mut bot = common::start_bot(&dir, base + 47, &sections);
    let mut alice = Client::connect("alice@localhost", "alice-pw", c2s);
    wait_component(&mut alice);

    let recorded_before = log_count(&dir, "check recorded");
    let mut script = Command::new("python3")
        .arg(root().join("tests/labs/stress.py"))
        .args(["--port", &c2s.to_string(), "--component", COMPONENT])
        .args(["--rounds", &ROUNDS.to_string()])
        .args(["--watchdog", &WATCHDOG_S.to_string()])
        .arg("--users")
        .args(users())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start stress.py");
    let started = Instant::now();
    let mut rounds = Vec::new();
    let mut done = None;
    for line in BufReader::new(script.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        println!("{server}: {line}");
        let v: Value = serde_json::from_str(&line).unwrap_or_default();
        match v["event"].as_str() {
            Some("round") => rounds.push(v),
            Some("done") => done = Some(v),
            Some("stalled") => panic!(
                "{server}: the bot stopped answering: {v}\nits threads:\n{}",
                threads_state(bot.0.id())
            ),
            _ => {}
        }
    }
    let status = script.wait().unwrap();
    assert!(
        status.success(),
        "{server}: stress.py failed\nthreads:\n{}",
        threads_state(bot.0.id())
    );
    let done = done.expect("a summary line");
    println!(
        "{server}: {ROUNDS} rounds in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(rounds.len(), ROUNDS);
    for r in &rounds {
        // Writes really happened in every round: PubSub subscribes went
        // through (the rest refused by the per-account limits, answered),
        // and chat subscribes were answered "Subscribed".
        assert!(r["iq"]["result"].as_u64().unwrap_or(0) > 0, "{r}");
        assert_eq!(r["chat_replies"], 60, "{r}");
        assert!(r["subscribed_by_chat"].as_u64().unwrap() >= 40, "{r}");
    }
    assert!(done["subscribed_by_chat"].as_u64().unwrap() >= 40 * ROUNDS as u64);
    // The monitor committed checks all along, and still does.
    let recorded = log_count(&dir, "check recorded");
    assert!(
        recorded > recorded_before + 50,
        "{server}: the monitor recorded {} checks during the rounds",
        recorded - recorded_before
    );
    let help = alice.ask(COMPONENT, "help", T);
    assert!(help.contains("subscribe DOMAIN"), "{help}");
    common::eventually(T, "the monitor to go on recording checks", || {
        (log_count(&dir, "check recorded") > recorded).then_some(())
    });

    // SIGTERM ends it, promptly.
    let pid = bot.0.id().to_string();
    let t = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let code = bot.0.wait().unwrap();
    println!(
        "{server}: SIGTERM ended the bot in {:?} ({code})",
        t.elapsed()
    );
    assert!(code.success(), "{server}: {code}");
}

#[test]
fn prosody_never_silent_under_bursts() {
    stress("prosody", 22000);
}

#[test]
fn ejabberd_never_silent_under_bursts() {
    stress("ejabberd", 23000);
}

/// The store's thread held for good (a debug stall point): the watchdog
/// ends the process with 70 and says what it waited on; and a SIGTERM while
/// the store is stuck ends it within seconds too.
#[test]
fn a_stuck_store_ends_the_process_and_sigterm_still_works() {
    let dir = workdir("stress-stall");
    let env: Vec<(&str, String)> = lab_env(26000)
        .into_iter()
        .filter(|(k, _)| !matches!(*k, "EXTRA_USERS" | "BENCH_DOMAINS"))
        .collect();
    let _xmpp = Lab::start("xmpplab.sh", &["prosody"], &dir.join("server"), &env);
    let sections = |watchdog: &str| {
        format!(
            "[dns]\nnameservers = [\"127.0.0.1:9\"]\n\n[probe]\ntransport = \"direct\"\nallow_private = true\n\n[monitor]\ninterval = \"1h\"\njitter = \"0s\"\n\n[store]\nwatchdog = \"{watchdog}\"\n"
        )
    };
    for (case, watchdog) in [("watchdog", "5s"), ("sigterm", "1h")] {
        let _ = std::fs::remove_dir_all(dir.join("db"));
        let _ = std::fs::remove_file(dir.join("certwatch.log"));
        let mut bot = start_stalled_bot(&dir, 26047, &sections(watchdog));
        let mut alice = Client::connect("alice@localhost", "alice-pw", 26022);
        if case == "sigterm" {
            wait_component(&mut alice);
        }
        // A subscribe is a write: it reaches the stuck store and waits.
        let r = alice.cmd(
            serde_json::json!({"cmd": "send", "to": COMPONENT, "body": "subscribe example.org"}),
        );
        assert_eq!(r["ok"], true, "{r}");
        common::eventually(T, "the store to reach its stall point", || {
            (log_count(&dir, "store stall point reached") > 0).then_some(())
        });
        let t = Instant::now();
        if case == "sigterm" {
            let pid = bot.0.id().to_string();
            assert!(Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success());
        }
        let code = loop {
            if let Some(code) = bot.0.try_wait().unwrap() {
                break code;
            }
            assert!(
                t.elapsed() < Duration::from_secs(60),
                "{case}: still running after 60 s\n{}",
                threads_state(bot.0.id())
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        println!("{case}: the bot ended in {:?} with {code}", t.elapsed());
        assert_eq!(code.code(), Some(70), "{case}");
        let log = std::fs::read_to_string(dir.join("certwatch.log")).unwrap();
        let says = if case == "sigterm" {
            "after SIGTERM/SIGINT"
        } else {
            "the store has made no progress"
        };
        assert!(log.contains(says), "{case}: the log lacks {says:?}:\n{log}");
        assert!(
            log.contains("flushing a batch to disk")
                || log.contains("held at the debug stall point"),
            "{case}: the log says what it waited on:\n{log}"
        );
    }
}

fn start_stalled_bot(dir: &Path, component_port: u16, sections: &str) -> Proc {
    // common::start_bot appends its own [store] section: write the config here.
    let config = dir.join("certwatch.toml");
    let (before, store) = sections.split_once("\n[store]\n").unwrap();
    let text = format!(
        "[xmpp]\ncomponent = \"{COMPONENT}\"\nserver = \"127.0.0.1:{component_port}\"\nsecret = \"s3cret\"\nadmins = [\"admin@localhost\"]\n\n{before}\n[store]\npath = \"{}\"\n{store}",
        dir.join("db").display()
    );
    std::fs::write(&config, text).unwrap();
    let log = std::fs::File::create(dir.join("certwatch.log")).unwrap();
    Proc(
        common::certwatch()
            .args(["--config", config.to_str().unwrap(), "serve"])
            .env("RUST_LOG", "info,certwatch=debug")
            .env("CERTWATCH_STALL_AT", "store")
            .stderr(log)
            .spawn()
            .expect("start certwatch serve"),
    )
}
