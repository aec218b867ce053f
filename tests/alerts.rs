//! Monitoring end to end: a chat subscriber and a PubSub subscriber each get
//! exactly one alert when the monitored server's key is replaced, exactly one
//! recovery alert when it is restored, and an alert queued while the bot is
//! down arrives exactly once after a kill -9 and restart. A monitored
//! domain whose TLSA signature breaks gets one bogus alarm and one recovery;
//! our own resolver freezing tells the operator, never the subscribers.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{eventually, wait_component, workdir, Client, Lab, Proc, TestCert, COMPONENT, HOSTS};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(20);

struct Target {
    lab: Lab,
    good: TestCert,
    other: TestCert,
    live_cert: std::path::PathBuf,
    live_key: std::path::PathBuf,
    dns: Lab,
}

impl Target {
    /// Makes the target server present `cert`.
    fn present(&self, cert: &TestCert) {
        std::fs::copy(&cert.cert, &self.live_cert).unwrap();
        std::fs::copy(&cert.key, &self.live_key).unwrap();
        self.lab.run("reload");
    }
}

fn target(dir: &Path, addr_base: &str, tb: u16) -> Target {
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
    let lab = Lab::start("xmpplab.sh", &["prosody"], &dir.join("target"), &env);
    Target {
        lab,
        good,
        other,
        live_cert,
        live_key,
        dns,
    }
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
    ];
    Lab::start(
        "xmpplab.sh",
        &[server],
        &dir.join(format!("host-{server}")),
        &env,
    )
}

fn bot(dir: &Path, target: &Target, component_port: u16) -> Proc {
    let lab = target.dns.env_file("env");
    let get = |k: &str| lab.iter().find(|(key, _)| key == k).unwrap().1.clone();
    let sections = format!(
        "[dns]\nnameservers = [\"{}\"]\ntrust_anchor = \"{}\"\n\n[probe]\ntransport = \"direct\"\ntimeout = \"5s\"\nallow_private = true\n\n[monitor]\ninterval = \"2s\"\njitter = \"1s\"\n",
        // Behind the validating resolver: it would hide bogus data behind
        // SERVFAIL if the bot did not ask with CD=1 and validate itself.
        get("VALIDATING_NS"),
        get("TRUST_ANCHOR")
    );
    common::start_bot(dir, component_port, &sections)
}

fn is_alert(v: &Value, needle: &str) -> bool {
    v["event"] == "message"
        && v["from"].as_str().is_some_and(|f| f.starts_with(COMPONENT))
        && v["body"].as_str().is_some_and(|b| b.contains(needle))
}

fn is_event(v: &Value, needle: &str) -> bool {
    is_event_on(v, "good.test", needle)
}

fn is_event_on(v: &Value, node: &str, needle: &str) -> bool {
    v["event"] == "pubsub" && v["node"] == node && v.to_string().contains(needle)
}

/// Counts what arrives within `window` that matches.
fn count(client: &mut Client, window: Duration, pred: impl Fn(&Value) -> bool) -> usize {
    let mut n = 0;
    while client.wait_event(window, &pred).is_some() {
        n += 1;
    }
    n
}

fn alert_flow(server: &str, base: u16, addr_base: &str, target_base: u16) {
    let dir = workdir(&format!("alerts-{server}"));
    let t = target(&dir, addr_base, target_base);
    let host = host(server, &dir, base);
    let mut bot_proc = bot(&dir, &t, base + 47);
    let mut alice = Client::connect("alice@localhost", "alice-pw", base + 22);
    let mut bob = Client::connect("bob@localhost", "bob-pw", base + 22);
    wait_component(&mut alice);

    let sub = alice.ask(COMPONENT, "subscribe good.test", T);
    assert!(sub.starts_with("Subscribed to good.test"), "{sub}");
    let r = bob.cmd(json!({"cmd": "pubsub_subscribe", "to": COMPONENT, "node": "good.test"}));
    assert_eq!(r["ok"], true, "{server}: pubsub subscribe: {r}");
    eventually(Duration::from_secs(30), "the first check to be ok", || {
        let s = alice.ask(COMPONENT, "status good.test", T);
        s.contains("good.test: OK").then_some(())
    });

    // The key is replaced: exactly one alert each, confirmed before it is sent.
    t.present(&t.other);
    let alarm = alice
        .wait_event(Duration::from_secs(40), |v| is_alert(v, "ALARM"))
        .unwrap_or_else(|| panic!("{server}: no chat alert"));
    assert!(
        alarm["body"].as_str().unwrap().contains(&t.other.spki),
        "{alarm}"
    );
    assert!(
        alarm["body"].as_str().unwrap().contains("confirmed"),
        "{alarm}"
    );
    // Readable on a phone: the summary, one line for the endpoints that saw
    // the other key, where the details are; the details are in PubSub.
    let body = alarm["body"].as_str().unwrap();
    assert!(
        body.chars().count() < 600,
        "{server}: {} chars: {body}",
        body.len()
    );
    assert!(body.lines().count() <= 6, "{server}: {body}");
    assert_eq!(body.matches(t.other.spki.as_str()).count(), 1, "{body}");
    assert!(body.ends_with("send \"status good.test\"."), "{body}");
    let event = bob
        .wait_event(Duration::from_secs(40), |v| is_event(v, "ALARM"))
        .unwrap_or_else(|| panic!("{server}: no pubsub event"));
    let xml = event["items"][0]["xml"].as_str().unwrap();
    // Any namespace prefix: match on the local names.
    for part in [
        "http://www.w3.org/2005/Atom",
        "title>",
        "content type=",
        "updated>",
        "id>",
    ] {
        assert!(xml.contains(part), "{server}: entry lacks {part}: {xml}");
    }
    // No repeats while the state holds (several more intervals).
    assert_eq!(
        count(&mut alice, Duration::from_secs(8), |v| is_alert(v, "ALARM")),
        0
    );
    assert_eq!(
        count(&mut bob, Duration::from_secs(1), |v| is_event(v, "ALARM")),
        0
    );
    // The item is retrievable, and the node is listed.
    let items = bob.cmd(json!({"cmd": "pubsub_items", "to": COMPONENT, "node": "good.test"}));
    assert!(items.to_string().contains("ALARM"), "{items}");

    // Restored: exactly one recovery alert each.
    t.present(&t.good);
    alice
        .wait_event(Duration::from_secs(40), |v| is_alert(v, "recovered"))
        .unwrap_or_else(|| panic!("{server}: no chat recovery"));
    bob.wait_event(Duration::from_secs(40), |v| is_event(v, "recovered"))
        .unwrap_or_else(|| panic!("{server}: no pubsub recovery"));
    assert_eq!(
        count(&mut alice, Duration::from_secs(6), |v| is_alert(
            v,
            "recovered"
        )),
        0
    );
    assert_eq!(
        count(&mut bob, Duration::from_secs(1), |v| is_event(
            v,
            "recovered"
        )),
        0
    );

    // The TLSA signature of a monitored domain is broken while the bot runs
    // (behind a validating resolver): one bogus alarm each, then one recovery.
    let sub = alice.ask(COMPONENT, "subscribe flip.test", T);
    assert!(sub.starts_with("Subscribed to flip.test"), "{sub}");
    let r = bob.cmd(json!({"cmd": "pubsub_subscribe", "to": COMPONENT, "node": "flip.test"}));
    assert_eq!(r["ok"], true, "{server}: pubsub subscribe flip.test: {r}");
    // Polled slowly: chat commands are rate-limited per JID.
    eventually(Duration::from_secs(40), "flip.test to be ok", || {
        std::thread::sleep(Duration::from_secs(3));
        let s = alice.ask(COMPONENT, "status flip.test", T);
        s.contains("flip.test: OK").then_some(())
    });
    t.dns.run("break");
    let flip_alarm = |v: &Value| is_alert(v, "flip.test: ALARM");
    let bogus = alice
        .wait_event(Duration::from_secs(40), flip_alarm)
        .unwrap_or_else(|| panic!("{server}: no chat alert for a broken TLSA signature"));
    assert!(
        bogus["body"].as_str().unwrap().contains("DNSSEC"),
        "{bogus}"
    );
    bob.wait_event(Duration::from_secs(40), |v| {
        is_event_on(v, "flip.test", "ALARM")
    })
    .unwrap_or_else(|| panic!("{server}: no pubsub event for a broken TLSA signature"));
    assert_eq!(count(&mut alice, Duration::from_secs(6), flip_alarm), 0);
    t.dns.run("fix");
    let flip_ok = |v: &Value| is_alert(v, "flip.test: recovered");
    alice
        .wait_event(Duration::from_secs(40), flip_ok)
        .unwrap_or_else(|| panic!("{server}: no chat recovery for flip.test"));
    bob.wait_event(Duration::from_secs(40), |v| {
        is_event_on(v, "flip.test", "recovered")
    })
    .unwrap_or_else(|| panic!("{server}: no pubsub recovery for flip.test"));
    assert_eq!(count(&mut alice, Duration::from_secs(6), flip_ok), 0);
    let gone = alice.ask(COMPONENT, "unsubscribe flip.test", T);
    assert!(gone.starts_with("Unsubscribed"), "{gone}");
    let r = bob.cmd(json!({"cmd": "pubsub_unsubscribe", "to": COMPONENT, "node": "flip.test"}));
    assert_eq!(r["ok"], true, "{server}: pubsub unsubscribe flip.test: {r}");

    // Restart safety: the XMPP server hosting the bot goes away, the key is
    // replaced, the alert is queued (not sendable), the bot is killed -9 and
    // started again with the server back: the alert arrives exactly once.
    drop(alice);
    drop(bob);
    host.run("stop");
    let log = dir.join("certwatch.log");
    let before = std::fs::read_to_string(&log)
        .unwrap()
        .matches("state changed")
        .count();
    t.present(&t.other);
    eventually(Duration::from_secs(40), "the alert to be queued", || {
        let now = std::fs::read_to_string(&log)
            .unwrap()
            .matches("state changed")
            .count();
        (now > before).then_some(())
    });
    bot_proc.0.kill().unwrap();
    bot_proc.0.wait().unwrap();
    drop(bot_proc);
    host.run("start");
    // Both online first: PubSub notifications (headlines) are not stored offline.
    let mut alice = Client::connect("alice@localhost", "alice-pw", base + 22);
    let mut bob = Client::connect("bob@localhost", "bob-pw", base + 22);
    let _bot = bot(&dir, &t, base + 47);
    alice
        .wait_event(Duration::from_secs(60), |v| is_alert(v, "ALARM"))
        .unwrap_or_else(|| panic!("{server}: queued alert lost across the restart"));
    bob.wait_event(Duration::from_secs(30), |v| is_event(v, "ALARM"))
        .unwrap_or_else(|| panic!("{server}: queued pubsub event lost across the restart"));
    assert_eq!(
        count(&mut alice, Duration::from_secs(8), |v| is_alert(v, "ALARM")),
        0
    );
    assert_eq!(
        count(&mut bob, Duration::from_secs(1), |v| is_event(v, "ALARM")),
        0
    );
    // The node keeps each alert once: mismatch, recovery, mismatch.
    let items = bob.cmd(json!({"cmd": "pubsub_items", "to": COMPONENT, "node": "good.test"}));
    let ids: Vec<&str> = items["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{server}: {ids:?}");
    assert!(
        ids[0].contains("mismatch") && ids[1].contains("-ok-"),
        "{ids:?}"
    );
}

#[test]
fn prosody_alert_flow() {
    alert_flow("prosody", 16400, "127.54.0", 16600);
}

#[test]
fn ejabberd_alert_flow() {
    alert_flow("ejabberd", 16500, "127.55.0", 16700);
}

/// Our own resolver stops answering while only flip.test (1 s TTLs, so
/// nothing lives on in caches) is monitored.
fn resolver_outage(server: &str, base: u16, addr_base: &str, target_base: u16) {
    let dir = workdir(&format!("outage-{server}"));
    let t = target(&dir, addr_base, target_base);
    let _host = host(server, &dir, base);
    let _bot = bot(&dir, &t, base + 47);
    let mut alice = Client::connect("alice@localhost", "alice-pw", base + 22);
    let mut bob = Client::connect("bob@localhost", "bob-pw", base + 22);
    wait_component(&mut alice);
    let sub = alice.ask(COMPONENT, "subscribe flip.test", T);
    assert!(sub.starts_with("Subscribed to flip.test"), "{sub}");
    let r = bob.cmd(json!({"cmd": "pubsub_subscribe", "to": COMPONENT, "node": "flip.test"}));
    assert_eq!(r["ok"], true, "{server}: pubsub subscribe flip.test: {r}");
    eventually(Duration::from_secs(40), "flip.test to be ok", || {
        std::thread::sleep(Duration::from_secs(3));
        let s = alice.ask(COMPONENT, "status flip.test", T);
        s.contains("flip.test: OK").then_some(())
    });

    // Our own resolver stops answering (the validating unbound is frozen):
    // the operator is told once, subscribers hear nothing, and the operator
    // is told again once it answers.
    let mut admin = Client::connect("admin@localhost", "admin-pw", base + 22);
    let pid = std::fs::read_to_string(dir.join("dns/unbound-validating.pid")).unwrap();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, pid.trim()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    let operator = |v: &Value| is_alert(v, "operator alert");
    let told = admin.wait_event(Duration::from_secs(150), operator);
    signal("-CONT");
    told.unwrap_or_else(|| panic!("{server}: the operator was not told that DNS fails"));
    admin
        .wait_event(Duration::from_secs(90), |v| is_alert(v, "work again"))
        .unwrap_or_else(|| panic!("{server}: the operator was not told that DNS works again"));
    assert_eq!(count(&mut admin, Duration::from_secs(1), operator), 0);
    assert_eq!(
        count(&mut alice, Duration::from_secs(1), |v| is_alert(v, "")),
        0,
        "{server}: a subscriber was alerted for our own resolver failing"
    );
    assert_eq!(
        count(&mut bob, Duration::from_secs(1), |v| v["event"] == "pubsub"),
        0,
        "{server}: a PubSub subscriber was alerted for our own resolver failing"
    );
}

#[test]
fn prosody_resolver_outage_tells_only_the_operator() {
    resolver_outage("prosody", 16800, "127.56.0", 17000);
}

#[test]
fn ejabberd_resolver_outage_tells_only_the_operator() {
    resolver_outage("ejabberd", 16900, "127.57.0", 17100);
}
