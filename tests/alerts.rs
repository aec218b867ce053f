//! Monitoring end to end: a chat subscriber and a PubSub subscriber each get
//! exactly one alert when the monitored server's key is replaced, exactly one
//! recovery alert when it is restored, and an alert queued while the bot is
//! down arrives exactly once after a kill -9 and restart. A monitored
//! domain whose TLSA signature breaks gets one bogus alarm and one recovery;
//! our own resolver freezing tells the operator, never the subscribers; a
//! monitored domain whose own DNS fails (while ours answers) is alerted as
//! unreachable once, and recovered once. A mismatch whose confirming probe
//! is always dropped is held back for a few quick re-checks, then alerted as
//! "not confirmed".
//!
//! Warnings: a zone signed for 2 days gets one warning per threshold
//! crossed (3 days, then 12 h after a re-signing for 10 hours), not one per
//! check, and one "renewed" note once re-signed for 30 days, to a chat and a
//! PubSub subscriber, on Prosody and ejabberd, and never an alarm. A key
//! rollover (current + next record published, the server switches, the old
//! record removed) gives the rollover notes and no alarm; a switch within
//! the TTL of the next record's publication gives one warning.

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
        // shortsig.test's _xmpps-client: the target server's direct TLS port.
        ("HORIZON_PORT", (tb + 23).to_string()),
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
    // Behind the validating resolver: it would hide bogus data behind
    // SERVFAIL if the bot did not ask with CD=1 and validate itself.
    bot_via(
        dir,
        target,
        component_port,
        &lab_var(target, "VALIDATING_NS"),
    )
}

fn lab_var(target: &Target, key: &str) -> String {
    let lab = target.dns.env_file("env");
    lab.iter().find(|(k, _)| k == key).unwrap().1.clone()
}

/// The bot, asking `nameserver` for everything.
fn bot_via(dir: &Path, target: &Target, component_port: u16, nameserver: &str) -> Proc {
    common::start_bot(dir, component_port, &sections(target, nameserver))
}

/// The bot behind the validating resolver, made to die at a crash point.
fn bot_crashing_at(dir: &Path, target: &Target, component_port: u16, point: &str) -> Proc {
    let ns = lab_var(target, "VALIDATING_NS");
    common::start_bot_env(
        dir,
        component_port,
        &sections(target, &ns),
        &[("CERTWATCH_CRASH_AT", point)],
    )
}

fn sections(target: &Target, nameserver: &str) -> String {
    format!(
        "[dns]\nnameservers = [\"{nameserver}\"]\ntrust_anchor = \"{}\"\n\n[probe]\ntransport = \"direct\"\ntimeout = \"5s\"\nallow_private = true\n\n[monitor]\ninterval = \"2s\"\njitter = \"1s\"\n",
        lab_var(target, "TRUST_ANCHOR")
    )
}

/// Alice subscribes to `domain` by chat and Bob by PubSub; returns once its
/// first check is OK (polled slowly: chat commands are rate-limited per JID).
fn subscribe_both(server: &str, alice: &mut Client, bob: &mut Client, domain: &str) {
    let sub = alice.ask(COMPONENT, &format!("subscribe {domain}"), T);
    assert!(sub.starts_with(&format!("Subscribed to {domain}")), "{sub}");
    let r = bob.cmd(json!({"cmd": "pubsub_subscribe", "to": COMPONENT, "node": domain}));
    assert_eq!(r["ok"], true, "{server}: pubsub subscribe {domain}: {r}");
    eventually(
        Duration::from_secs(40),
        &format!("{domain} to be ok"),
        || {
            let s = alice.poll(COMPONENT, &format!("status {domain}"), T);
            s.contains(&format!("{domain}: OK")).then_some(())
        },
    );
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
        let s = alice.poll(COMPONENT, "status good.test", T);
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
    // The evidence is kept: the chain the interceptor presented, as PEM.
    let evidence = alice.ask(COMPONENT, "evidence good.test", T);
    assert!(
        evidence.contains("-----BEGIN CERTIFICATE-----") && evidence.contains(&t.other.spki),
        "{server}: {evidence}"
    );
    let status = alice.ask(COMPONENT, "status good.test", T);
    assert!(status.contains("evidence good.test"), "{server}: {status}");
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
    subscribe_both(server, &mut alice, &mut bob, "flip.test");
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
    // The bot asks a forwarder in front of the validating resolver, which
    // can make flip.test's own DNS fail (SERVFAIL for flip.test and below,
    // while the root still answers) when a file exists.
    let lame_switch = dir.join("flip-dns-down");
    let ready = dir.join("stuffdns.ready");
    let _forwarder = common::Proc(
        std::process::Command::new("python3")
            .arg(common::root().join("tests/labs/stuffdns.py"))
            .args(["--listen", &format!("{addr_base}.9:0")])
            .args(["--upstream", &lab_var(&t, "VALIDATING_NS")])
            .args(["--servfail-under", "flip.test."])
            .arg("--while-file")
            .arg(&lame_switch)
            .arg("--ready-file")
            .arg(&ready)
            .spawn()
            .expect("start stuffdns.py"),
    );
    let forwarder = eventually(Duration::from_secs(10), "stuffdns ready", || {
        std::fs::read_to_string(&ready).ok()
    });
    let _bot = bot_via(&dir, &t, base + 47, forwarder.trim());
    let mut alice = Client::connect("alice@localhost", "alice-pw", base + 22);
    let mut bob = Client::connect("bob@localhost", "bob-pw", base + 22);
    wait_component(&mut alice);
    subscribe_both(server, &mut alice, &mut bob, "flip.test");

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

    // Now flip.test's own DNS fails while our resolver answers for the root:
    // that is news about the domain (its servers are down, or someone blocks
    // them), so after repeated failures each subscriber is told once that it
    // is unreachable, the operator not at all, and each is told once when it
    // recovers.
    std::fs::write(&lame_switch, "").unwrap();
    let down = |v: &Value| is_alert(v, "flip.test: unreachable");
    let alarm = alice
        .wait_event(Duration::from_secs(60), down)
        .unwrap_or_else(|| panic!("{server}: no chat alert for flip.test's DNS failing"));
    let body = alarm["body"].as_str().unwrap();
    assert!(
        body.contains("DNS"),
        "{server}: the alert does not say DNS failed: {body}"
    );
    bob.wait_event(Duration::from_secs(30), |v| {
        is_event_on(v, "flip.test", "unreachable")
    })
    .unwrap_or_else(|| panic!("{server}: no PubSub event for flip.test's DNS failing"));
    assert_eq!(count(&mut alice, Duration::from_secs(8), down), 0);
    assert_eq!(
        count(&mut admin, Duration::from_secs(1), operator),
        0,
        "{server}: the operator was told about one domain's own DNS failing"
    );
    std::fs::remove_file(&lame_switch).unwrap();
    let back = |v: &Value| is_alert(v, "flip.test: recovered");
    alice
        .wait_event(Duration::from_secs(60), back)
        .unwrap_or_else(|| panic!("{server}: no chat recovery once flip.test's DNS answers"));
    bob.wait_event(Duration::from_secs(30), |v| {
        is_event_on(v, "flip.test", "recovered")
    })
    .unwrap_or_else(|| panic!("{server}: no PubSub recovery once flip.test's DNS answers"));
    assert_eq!(count(&mut alice, Duration::from_secs(6), back), 0);
    assert_eq!(
        count(&mut bob, Duration::from_secs(1), |v| is_event_on(
            v,
            "flip.test",
            "recovered"
        )),
        0
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

/// The bot dies (as if killed -9) at the two moments the delivery promises
/// are about, and the docs' promise holds at each: after an alarm is
/// committed and before anything is sent, the alarm arrives exactly once
/// after the restart; after a delivery is written and before it is marked,
/// it arrives again after the restart (a repeat, never a loss), each copy
/// with the same id, and the PubSub node keeps the item once.
fn crash_points(server: &str, base: u16, addr_base: &str, target_base: u16) {
    let dir = workdir(&format!("crash-{server}"));
    let t = target(&dir, addr_base, target_base);
    let _host = host(server, &dir, base);
    let log = dir.join("certwatch.log");
    let crashed = |bot: &mut Proc, point: &str| {
        let status = eventually(
            Duration::from_secs(90),
            &format!("the bot to die {point}"),
            || bot.0.try_wait().unwrap(),
        );
        assert!(!status.success(), "{server}: {status:?}");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains(&format!("crash point {point} reached")),
            "{server}: the bot died elsewhere"
        );
    };
    let mut bot = bot_crashing_at(&dir, &t, base + 47, "after-commit");
    let mut alice = Client::connect("alice@localhost", "alice-pw", base + 22);
    let mut bob = Client::connect("bob@localhost", "bob-pw", base + 22);
    wait_component(&mut alice);
    subscribe_both(server, &mut alice, &mut bob, "good.test");

    // Crash after the commit, before the send.
    t.present(&t.other);
    crashed(&mut bot, "after-commit");
    assert_eq!(
        count(&mut alice, Duration::from_secs(1), |v| is_alert(v, "ALARM")),
        0,
        "{server}: sent before the crash point"
    );
    drop(bot);
    let bot = bot_via(&dir, &t, base + 47, &lab_var(&t, "VALIDATING_NS"));
    alice
        .wait_event(Duration::from_secs(60), |v| is_alert(v, "ALARM"))
        .unwrap_or_else(|| panic!("{server}: the committed alarm was lost in the crash"));
    bob.wait_event(Duration::from_secs(30), |v| is_event(v, "ALARM"))
        .unwrap_or_else(|| panic!("{server}: the committed PubSub alarm was lost in the crash"));
    assert_eq!(
        count(&mut alice, Duration::from_secs(8), |v| is_alert(v, "ALARM")),
        0,
        "{server}: repeated although nothing had been sent"
    );
    drop(bot);

    // Crash after a send, before its mark: the recovery is sent again.
    let mut bot = bot_crashing_at(&dir, &t, base + 47, "after-send");
    t.present(&t.good);
    crashed(&mut bot, "after-send");
    drop(bot);
    let _bot = bot_via(&dir, &t, base + 47, &lab_var(&t, "VALIDATING_NS"));
    let recovered = |v: &Value| is_alert(v, "good.test: recovered");
    let first = alice
        .wait_event(Duration::from_secs(60), recovered)
        .unwrap_or_else(|| panic!("{server}: the recovery was lost in the crash"));
    let mut copies = vec![first];
    while let Some(v) = alice.wait_event(Duration::from_secs(8), recovered) {
        copies.push(v);
    }
    assert!(copies.len() <= 2, "{server}: {copies:#?}");
    let ids: Vec<&Value> = copies.iter().map(|c| &c["id"]).collect();
    assert!(
        ids.iter().all(|id| id.is_string() && *id == ids[0]),
        "{server}: copies of one alert must carry one id: {ids:?}"
    );
    bob.wait_event(Duration::from_secs(30), |v| is_event(v, "recovered"))
        .unwrap_or_else(|| panic!("{server}: the PubSub recovery was lost in the crash"));
    let items = bob.cmd(json!({"cmd": "pubsub_items", "to": COMPONENT, "node": "good.test"}));
    let mut ids: Vec<&str> = items["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    let all = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(
        (all, ids.len()),
        (2, 2),
        "{server}: one item per alert: {items}"
    );
}

#[test]
fn prosody_crash_points_keep_the_delivery_promises() {
    crash_points("prosody", 17500, "127.59.0", 17700);
}

/// An interceptor in front of `port` that shows `cert` on every third
/// connection (the probe) and drops the two after it (the confirming probe
/// and its retry); counts the connections it took.
fn flaky_interceptor(port: u16, cert: &TestCert) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    use rustls_pki_types::pem::PemObject;
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let chain = vec![rustls_pki_types::CertificateDer::from_pem_file(&cert.cert).unwrap()];
    let key = rustls_pki_types::PrivateKeyDer::from_pem_file(&cert.key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let config = std::sync::Arc::new(config);
    let seen = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind the interceptor");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut sock) = conn else { continue };
            let n = counter.fetch_add(1, Ordering::SeqCst);
            if !n.is_multiple_of(3) {
                drop(sock);
                continue;
            }
            let config = config.clone();
            std::thread::spawn(move || {
                let _ = sock.set_read_timeout(Some(Duration::from_secs(5)));
                // Reads until `what` arrived (at most 4 KiB).
                let wait_for = |sock: &mut std::net::TcpStream, what: &str| {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 512];
                    while got.len() < 4096 {
                        match sock.read(&mut buf) {
                            Ok(0) | Err(_) => return false,
                            Ok(k) => got.extend_from_slice(&buf[..k]),
                        }
                        if String::from_utf8_lossy(&got).contains(what) {
                            return true;
                        }
                    }
                    false
                };
                if !wait_for(&mut sock, "<stream:stream") {
                    return;
                }
                let _ = sock.write_all(
                    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
                      xmlns:stream='http://etherx.jabber.org/streams' id='i1' version='1.0'>\
                      <stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>\
                      </stream:features>",
                );
                if !wait_for(&mut sock, "<starttls") {
                    return;
                }
                let _ = sock.write_all(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
                let mut tls =
                    rustls::StreamOwned::new(rustls::ServerConnection::new(config).unwrap(), sock);
                let mut buf = [0u8; 64];
                let _ = tls.read(&mut buf);
            });
        }
    });
    seen
}

/// A mismatch whose confirming probe never gets through: no alert while it
/// is re-checked at once (MAX_RECHECKS times), then one alert that says it
/// was not confirmed, so an interceptor cannot buy silence by also dropping
/// the second probe.
#[test]
fn prosody_unconfirmed_mismatch_is_held_back_then_alerted_as_not_confirmed() {
    use std::sync::atomic::Ordering;
    let (base, target_base) = (17200, 17400);
    let dir = workdir("alerts-unconfirmed");
    let t = target(&dir, "127.58.0", target_base);
    let _host = host("prosody", &dir, base);
    // nostarttls.test's only endpoint (TLSA GOOD) is the NOSTARTTLS port.
    let seen = flaky_interceptor(target_base + 98, &t.other);
    let _bot = bot(&dir, &t, base + 47);
    let mut alice = Client::connect("alice@localhost", "alice-pw", base + 22);
    wait_component(&mut alice);
    let sub = alice.ask(COMPONENT, "subscribe nostarttls.test", T);
    assert!(sub.starts_with("Subscribed to nostarttls.test"), "{sub}");
    let alarm = alice
        .wait_event(Duration::from_secs(90), |v| is_alert(v, "ALARM"))
        .expect("no alert for the unconfirmed mismatch");
    let body = alarm["body"].as_str().unwrap();
    assert!(body.contains("not confirmed"), "{body}");
    assert!(body.contains(&t.other.spki), "{body}");
    // Each check made three connections (the probe, the dropped
    // confirmation and its retry): the first checks were held back.
    let checks = seen.load(Ordering::SeqCst) / 3;
    assert!(
        checks > certwatch::monitor::MAX_RECHECKS as usize,
        "alerted after {checks} check(s)"
    );
    let status = alice.ask(COMPONENT, "status nostarttls.test", T);
    assert!(status.contains("ALARM"), "{status}");
}

/// A chat message from the component that starts with `start` (a warning
/// or renewed note; replies to `status` start with the domain's verdict).
fn is_note(v: &Value, start: &str) -> bool {
    v["event"] == "message"
        && v["from"].as_str().is_some_and(|f| f.starts_with(COMPONENT))
        && v["body"].as_str().is_some_and(|b| b.starts_with(start))
}

/// Waits for one chat message that starts with `start` and one PubSub
/// event on `node` whose entry contains it; returns the chat body.
fn both_get(server: &str, alice: &mut Client, bob: &mut Client, node: &str, start: &str) -> String {
    let chat = alice
        .wait_event(Duration::from_secs(90), |v| is_note(v, start))
        .unwrap_or_else(|| panic!("{server}: no chat message starting {start:?}"));
    bob.wait_event(Duration::from_secs(30), |v| is_event_on(v, node, start))
        .unwrap_or_else(|| panic!("{server}: no PubSub event with {start:?}"));
    chat["body"].as_str().unwrap().to_owned()
}

/// How many chat notes starting with `start` (and PubSub events on `node`
/// with it) arrive within `window`.
fn both_count(
    alice: &mut Client,
    bob: &mut Client,
    node: &str,
    start: &str,
    window: Duration,
) -> (usize, usize) {
    let chat = count(alice, window, |v| is_note(v, start));
    let events = count(bob, Duration::from_secs(1), |v| is_event_on(v, node, start));
    (chat, events)
}

fn expiry_warnings(server: &str, base: u16, addr_base: &str, target_base: u16) {
    let dir = workdir(&format!("warnings-{server}"));
    let t = target(&dir, addr_base, target_base);
    let _host = host(server, &dir, base);
    let _bot = bot(&dir, &t, base + 47);
    let mut alice = Client::connect("alice@localhost", "alice-pw", base + 22);
    let mut bob = Client::connect("bob@localhost", "bob-pw", base + 22);
    wait_component(&mut alice);
    let d = "shortsig.test";
    // Signed for 30 days while the subscribers come (replies to their
    // commands are read as "the next message").
    t.dns.run_more("resign", &["shortsig", "now+2592000"]);
    subscribe_both(server, &mut alice, &mut bob, d);
    // Each step: re-signed until END, then one note that starts so, and no
    // repeat over several more checks (interval 2 s).
    let steps = [
        // 2 days: the 3-day warning (not the 14-day one too).
        ("now+172800", "signatures of shortsig.test expire in 1 day"),
        // 10 hours: the 12-hour warning.
        ("now+36000", "signatures of shortsig.test expire in 9 hours"),
        // 30 days: one renewed note.
        (
            "now+2592000",
            "signatures of shortsig.test renewed: now expire in 29 days",
        ),
    ];
    for (end, start) in steps {
        t.dns.run_more("resign", &["shortsig", end]);
        let body = both_get(server, &mut alice, &mut bob, d, start);
        if !start.contains("renewed") {
            assert!(body.contains("re-sign the zone"), "{body}");
            assert!(body.contains("A warning, not an alarm"), "{body}");
        }
        let more = both_count(
            &mut alice,
            &mut bob,
            d,
            "signatures of",
            Duration::from_secs(10),
        );
        assert_eq!(more, (0, 0), "{server}: after {start:?}");
    }
    // Three items on the node, none an alarm; the state stayed ok.
    let items = bob.cmd(json!({"cmd": "pubsub_items", "to": COMPONENT, "node": d}));
    let ids: Vec<&str> = items["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{server}: {ids:?}");
    assert_eq!(
        ids.iter().filter(|i| i.contains("-warning-")).count(),
        2,
        "{ids:?}"
    );
    assert_eq!(
        ids.iter().filter(|i| i.contains("-renewed-")).count(),
        1,
        "{ids:?}"
    );
    assert!(!items.to_string().contains("ALARM"), "{items}");
    let status = alice.ask(COMPONENT, &format!("status {d}"), T);
    assert!(status.contains("shortsig.test: OK"), "{status}");
}

#[test]
fn prosody_expiry_warnings_once_per_threshold_and_one_renewed_note() {
    expiry_warnings("prosody", 19000, "127.62.0", 19200);
}

#[test]
fn ejabberd_expiry_warnings_once_per_threshold_and_one_renewed_note() {
    expiry_warnings("ejabberd", 19100, "127.63.0", 19300);
}

/// Polls `status DOMAIN` until it contains `needle`; returns it.
fn status_with(alice: &mut Client, domain: &str, needle: &str) -> String {
    eventually(
        Duration::from_secs(90),
        &format!("status {domain} to say {needle:?}"),
        || {
            let s = alice.poll(COMPONENT, &format!("status {domain}"), T);
            s.contains(needle).then_some(s)
        },
    )
}

/// roll.test: current + next published from the start, the switch comes
/// after the TTL (30 s), then the old record goes. rush.test: one record,
/// the next published and the server switched within its TTL. The same
/// server presents both, so they switch together.
#[test]
fn prosody_rollover_steps_give_their_notes_one_early_warning_and_no_alarm() {
    let (base, target_base) = (19400, 19600);
    let dir = workdir("warnings-rollover");
    let t = target(&dir, "127.64.0", target_base);
    let _host = host("prosody", &dir, base);
    let _bot = bot(&dir, &t, base + 47);
    let mut alice = Client::connect("alice@localhost", "alice-pw", base + 22);
    let mut bob = Client::connect("bob@localhost", "bob-pw", base + 22);
    wait_component(&mut alice);
    subscribe_both("prosody", &mut alice, &mut bob, "roll.test");
    subscribe_both("prosody", &mut alice, &mut bob, "rush.test");
    let next = &t.other.spki[..12];
    let current = &t.good.spki[..12];
    let s = status_with(&mut alice, "roll.test", "pre-published next key: good");
    assert!(s.contains(next), "{s}");
    let s = status_with(&mut alice, "rush.test", "single 3 1 1 record");
    assert!(s.contains("--reuse-key"), "{s}");
    // Past roll.test's TTL since its records were first seen.
    std::thread::sleep(Duration::from_secs(32));
    // rush.test: the next record published, and (once the monitor has
    // seen it) the server switched at once.
    t.dns.run_more("roll", &["rush", "both"]);
    status_with(&mut alice, "rush.test", "pre-published next key: good");
    t.present(&t.other);
    let body = both_get("prosody", &mut alice, &mut bob, "rush.test", "rush.test: _");
    assert!(
        body.contains("TTL 30 s") && body.contains("some resolvers still give the old RRset"),
        "{body}"
    );
    assert!(body.contains("A warning, not an alarm"), "{body}");
    // roll.test: the old record is no longer used, removable after its TTL.
    let s = status_with(&mut alice, "roll.test", "no longer used");
    assert!(
        s.contains(current) && s.contains("remove it after its TTL"),
        "{s}"
    );
    assert!(s.contains("safe after") || s.contains("safe now"), "{s}");
    // The old record removed: the single record (the next key's) remains.
    t.dns.run_more("roll", &["roll", "next"]);
    let s = status_with(&mut alice, "roll.test", "single 3 1 1 record");
    assert!(!s.contains("no longer used"), "{s}");
    for d in ["roll.test", "rush.test"] {
        let s = alice.ask(COMPONENT, &format!("status {d}"), T);
        assert!(s.contains(&format!("{d}: OK")), "{s}");
    }
    // Exactly one warning in all (rush.test's), and no alarm at any time.
    assert_eq!(
        count(&mut alice, Duration::from_secs(6), |v| is_note(
            v,
            "rush.test: _"
        ) || is_note(
            v,
            "roll.test: _"
        )),
        0
    );
    let all: Vec<&Value> = alice.backlog.iter().chain(bob.backlog.iter()).collect();
    assert!(
        !all.iter().any(|v| v.to_string().contains("ALARM")),
        "{all:?}"
    );
    for (node, want) in [("roll.test", 0), ("rush.test", 1)] {
        let items = bob.cmd(json!({"cmd": "pubsub_items", "to": COMPONENT, "node": node}));
        let n = items["items"].as_array().map_or(0, |a| a.len());
        assert_eq!(n, want, "{node}: {items}");
    }
}
