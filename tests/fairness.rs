//! No user can block the others, through real clients (slixmpp) on real
//! Prosody and ejabberd: five accounts queue 20 checks each of a domain whose
//! server is a tarpit (accepts, never speaks) while a sixth gets `help`,
//! `status` and `list` answered at once, and the five are told their bound;
//! 500 malformed commands from one account get a handful of replies; one
//! account's 55 full JIDs on one PubSub node are refused past the
//! per-account bound, and each accepted JID gets the node's alert once.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{eventually, wait_component, workdir, Client, Lab, Proc, TestCert, COMPONENT, HOSTS};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(30);
/// A generous bound on a reply while others' checks queue (the measured
/// latency is printed; timings are measured in benchmarks, not here).
const PROMPT: Duration = Duration::from_secs(5);
/// Chat checks one JID may have waiting or running (src/admission.rs).
const QUEUED_PER_JID: usize = 3;
/// PubSub subscriptions one account may hold (src/model.rs).
const PER_ACCOUNT: usize = 50;
/// "A handful": the most replies 500 malformed commands may get.
const HANDFUL: usize = 5;
const HEAVY: [&str; 5] = ["u1", "u2", "u3", "u4", "u5"];

struct Labs {
    dns: Lab,
    target: Lab,
    other: TestCert,
    live_cert: std::path::PathBuf,
    live_key: std::path::PathBuf,
}

/// The DNSSEC lab and a target Prosody presenting a certificate the test
/// can replace; `down.test`'s server port is left to the tarpit.
fn labs(dir: &Path, addr_base: &str, tb: u16) -> Labs {
    let good = TestCert::generate(dir, "good", &["good.test"]);
    let other = TestCert::generate(dir, "other", &["good.test"]);
    let live_cert = dir.join("live.crt");
    let live_key = dir.join("live.key");
    std::fs::copy(&good.cert, &live_cert).unwrap();
    std::fs::copy(&good.key, &live_key).unwrap();
    let env: Vec<(&str, String)> = vec![
        ("C2S_PORT", (tb + 22).to_string()),
        ("C2S_TLS_PORT", (tb + 23).to_string()),
        ("S2S_PORT", (tb + 69).to_string()),
        ("S2S_TLS_PORT", (tb + 70).to_string()),
        ("NOSTARTTLS_PORT", (tb + 98).to_string()),
        ("DOWN_PORT", (tb + 99).to_string()),
        ("COMPONENT_PORT", (tb + 47).to_string()),
        ("GOOD_SPKI", good.spki.clone()),
        ("OTHER_SPKI", other.spki.clone()),
        ("DNSLAB_ADDR_BASE", addr_base.into()),
        ("TLS_CERT", live_cert.display().to_string()),
        ("TLS_KEY", live_key.display().to_string()),
        ("EXTRA_HOSTS", HOSTS.into()),
    ];
    let dns = Lab::start("dnslab.sh", &[], &dir.join("dns"), &env);
    let target = Lab::start("xmpplab.sh", &["prosody"], &dir.join("target"), &env);
    Labs {
        dns,
        target,
        other,
        live_cert,
        live_key,
    }
}

impl Labs {
    fn present_other(&self) {
        std::fs::copy(&self.other.cert, &self.live_cert).unwrap();
        std::fs::copy(&self.other.key, &self.live_key).unwrap();
        self.target.run("reload");
    }

    fn var(&self, key: &str) -> String {
        let lab = self.dns.env_file("env");
        lab.iter().find(|(k, _)| k == key).unwrap().1.clone()
    }
}

/// A listener that accepts every connection and never says a word.
fn tarpit(port: u16) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the tarpit");
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(conn);
        }
    });
    accepted
}

fn host(server: &str, dir: &Path, base: u16) -> Lab {
    let env: Vec<(&str, String)> = vec![
        ("C2S_PORT", (base + 22).to_string()),
        ("C2S_TLS_PORT", (base + 23).to_string()),
        ("S2S_PORT", (base + 69).to_string()),
        ("S2S_TLS_PORT", (base + 70).to_string()),
        ("COMPONENT_PORT", (base + 47).to_string()),
        ("COMPONENT_JID", COMPONENT.into()),
        ("COMPONENT_SECRET", "s3cret".into()),
        ("EXTRA_USERS", "u1 u2 u3 u4 u5 mallory carol".into()),
    ];
    Lab::start(
        "xmpplab.sh",
        &[server],
        &dir.join(format!("host-{server}")),
        &env,
    )
}

fn bot(dir: &Path, labs: &Labs, component_port: u16) -> Proc {
    let sections = format!(
        "[dns]\nnameservers = [\"{}\"]\ntrust_anchor = \"{}\"\n\n[probe]\ntransport = \"direct\"\ntimeout = \"5s\"\nallow_private = true\n\n[monitor]\ninterval = \"2s\"\njitter = \"1s\"\n",
        labs.var("VALIDATING_NS"),
        labs.var("TRUST_ANCHOR")
    );
    common::start_bot(dir, component_port, &sections)
}

fn from_bot(v: &Value) -> bool {
    v["event"] == "message" && v["from"].as_str().is_some_and(|f| f.starts_with(COMPONENT))
}

fn body(v: &Value) -> &str {
    v["body"].as_str().unwrap_or_default()
}

/// Asks `body` and returns the reply with how long it took.
fn timed(client: &mut Client, text: &str) -> (String, Duration) {
    let started = Instant::now();
    let reply = client.ask(COMPONENT, text, T);
    (reply, started.elapsed())
}

/// (a) Five accounts queue twenty checks each of the tarpit's domain; a sixth
/// is answered promptly meanwhile; each of the five is told the bound, and
/// exactly its bound's worth of checks runs to a reply.
fn starvation(server: &str, base: u16, accepted: &std::sync::atomic::AtomicUsize) {
    let mut heavy: Vec<Client> = HEAVY
        .iter()
        .map(|u| Client::connect(&format!("{u}@localhost"), &format!("{u}-pw"), base + 22))
        .collect();
    let mut alice = Client::connect("alice@localhost", "alice-pw", base + 22);
    // 20 each, all within the 20 commands a minute: 100 commands in all,
    // more than the 64 command slots (which each waiting check used to hold).
    let bodies: Vec<String> = (0..20).map(|_| "check down.test".to_string()).collect();
    for c in &mut heavy {
        let r = c.cmd(json!({"cmd": "send_many", "to": COMPONENT, "bodies": bodies}));
        assert_eq!(r["ok"], true, "{r}");
    }
    // The checks are under way: the tarpit holds their probes.
    eventually(Duration::from_secs(20), "the tarpit to be probed", || {
        (accepted.load(std::sync::atomic::Ordering::SeqCst) > 0).then_some(())
    });
    let (help, help_took) = timed(&mut alice, "help");
    let (status, status_took) = timed(&mut alice, "status down.test");
    let (list, list_took) = timed(&mut alice, "list");
    eprintln!(
        "{server}: while 5 × {QUEUED_PER_JID} checks queue on a tarpit: help {help_took:?}, status {status_took:?}, list {list_took:?}"
    );
    assert!(help.contains("check DOMAIN"), "{server}: {help}");
    assert!(status.contains("down.test"), "{server}: {status}");
    assert!(list.contains("no subscriptions"), "{server}: {list}");
    for took in [help_took, status_took, list_took] {
        assert!(took < PROMPT, "{server}: a reply took {took:?}");
    }
    // Every one of the five is told its bound, in one line.
    for (u, c) in HEAVY.iter().zip(heavy.iter_mut()) {
        let told = c
            .wait_event(T, |v| {
                from_bot(v) && body(v).starts_with("You already have 3 checks waiting or running")
            })
            .unwrap_or_else(|| panic!("{server}: {u} was not told the bound"));
        assert!(!body(&told).contains('\n'), "{told}");
        assert!(body(&told).contains("Wait for their results"), "{told}");
    }
    // The accepted checks run to their replies: exactly the bound's worth.
    for (u, c) in HEAVY.iter().zip(heavy.iter_mut()) {
        let mut results = 0;
        while c
            .wait_event(Duration::from_secs(120), |v| {
                from_bot(v) && body(v).starts_with("down.test: could not check")
            })
            .is_some()
        {
            results += 1;
            if results == QUEUED_PER_JID {
                break;
            }
        }
        assert_eq!(results, QUEUED_PER_JID, "{server}: {u}'s check replies");
    }
    let late = heavy[0].drain_messages(COMPONENT, Duration::from_secs(6));
    assert!(
        late.iter()
            .all(|v| !body(v).starts_with("down.test: could not check")),
        "{server}: more checks ran than the bound: {late:?}"
    );
}

/// (b) 500 malformed commands from one account: replies arrive, a handful.
fn reply_storm(server: &str, base: u16) {
    let mut mallory = Client::connect("mallory@localhost", "mallory-pw", base + 22);
    let kinds = [
        "hello",
        "check",
        "check not_a_domain",
        "status a..b",
        "list everything",
    ];
    let bodies: Vec<&str> = (0..500).map(|i| kinds[i % kinds.len()]).collect();
    let started = Instant::now();
    let r = mallory.cmd(json!({"cmd": "send_many", "to": COMPONENT, "bodies": bodies}));
    assert_eq!(r["sent"], 500, "{r}");
    eprintln!(
        "{server}: 500 malformed commands sent in {:?}",
        started.elapsed()
    );
    let replies = mallory.drain_messages(COMPONENT, Duration::from_secs(10));
    let texts: Vec<&str> = replies.iter().map(body).collect();
    eprintln!(
        "{server}: {} replies to 500 malformed commands: {texts:?}",
        texts.len()
    );
    assert!(!texts.is_empty(), "{server}: no reply at all");
    assert!(texts[0].starts_with("Unknown command"), "{texts:?}");
    assert!(texts.len() <= HANDFUL, "{server}: {} replies", texts.len());
    // Others are still answered.
    let mut alice = Client::connect("alice@localhost", "alice-pw", base + 22);
    let (help, took) = timed(&mut alice, "help");
    eprintln!("{server}: help after the storm: {took:?}");
    assert!(help.contains("check DOMAIN") && took < PROMPT, "{help}");
}

/// (c) 55 full JIDs of one account subscribe one node: refused past the
/// bound; the node's alert reaches each accepted JID exactly once.
fn many_resources(server: &str, base: u16, labs: &Labs) {
    let port = (base + 22).to_string();
    let args = ["--jid", "carol@localhost", "--password", "carol-pw"];
    let mut carol = Client::spawn(
        "resources.py",
        &[&args[..], &["--port", &port, "--count", "55"]].concat(),
    )
    .unwrap_or_else(|| panic!("{server}: carol's 55 sessions did not log in"));
    let r = carol.cmd(json!({"cmd": "subscribe_each", "to": COMPONENT, "node": "good.test"}));
    let results = r["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 55, "{r}");
    let accepted: Vec<String> = results
        .iter()
        .filter(|x| x["ok"] == true)
        .map(|x| x["jid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(accepted.len(), PER_ACCOUNT, "{server}: {r}");
    for refused in results.iter().filter(|x| x["ok"] != true) {
        assert_eq!(refused["error"], "policy-violation", "{refused}");
        assert_eq!(refused["error_type"], "wait", "{refused}");
        assert_eq!(
            refused["pubsub_error"], "too-many-subscriptions",
            "{refused}"
        );
    }
    let mut alice = Client::connect("alice@localhost", "alice-pw", base + 22);
    eventually(Duration::from_secs(40), "good.test to be ok", || {
        let s = alice.poll(COMPONENT, "status good.test", T);
        s.contains("good.test: OK").then_some(())
    });
    labs.present_other();
    let mut got: std::collections::HashMap<String, usize> = Default::default();
    let is_alarm = |v: &Value| v["event"] == "pubsub" && v["node"] == "good.test";
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.values().sum::<usize>() < PER_ACCOUNT && Instant::now() < deadline {
        if let Some(e) = carol.wait_event(Duration::from_secs(5), is_alarm) {
            *got.entry(e["to"].as_str().unwrap().to_owned()).or_default() += 1;
        }
    }
    // Several more monitor intervals: nothing more arrives.
    while let Some(e) = carol.wait_event(Duration::from_secs(8), is_alarm) {
        *got.entry(e["to"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    eprintln!(
        "{server}: {} JIDs got the alert, {} events in all",
        got.len(),
        got.values().sum::<usize>()
    );
    for jid in &accepted {
        assert_eq!(got.get(jid), Some(&1), "{server}: {jid}: {got:?}");
    }
    assert_eq!(
        got.len(),
        PER_ACCOUNT,
        "{server}: refused JIDs got events: {got:?}"
    );
}

fn fairness(server: &str, base: u16, addr_base: &str, tb: u16) {
    let dir = workdir(&format!("fairness-{server}"));
    let labs = labs(&dir, addr_base, tb);
    let accepted = tarpit(tb + 99);
    let _host = host(server, &dir, base);
    let _bot = bot(&dir, &labs, base + 47);
    let mut alice = Client::connect("alice@localhost", "alice-pw", base + 22);
    wait_component(&mut alice);
    drop(alice);
    starvation(server, base, &accepted);
    reply_storm(server, base);
    many_resources(server, base, &labs);
}

#[test]
fn prosody_no_user_can_block_others() {
    common::assert_isolated();
    fairness("prosody", 18000, "127.81.0", 18200);
}

#[test]
fn ejabberd_no_user_can_block_others() {
    common::assert_isolated();
    fairness("ejabberd", 18100, "127.82.0", 18300);
}
