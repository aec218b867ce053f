//! What a chat user reads, through a real client (slixmpp) on real Prosody
//! and real ejabberd, for the DNSSEC lab's cases: ok, no TLSA, unsigned,
//! mismatch, bogus, nonexistent, wrong host and unreachable. Each reply
//! fits on a phone screen and ends with the next step. Then the state a
//! user sees: `check` then `status`, `list` and `status` agreeing, and a
//! re-subscription checked at once; and one's own PubSub subscriptions and
//! affiliations.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{eventually, wait_component, workdir, Client, Lab, Proc, TestCert, COMPONENT, HOSTS};
use serde_json::json;

const T: Duration = Duration::from_secs(30);
const MAX_LINES: usize = 25;
const MAX_CHARS: usize = 1200;
/// The target servers' ports (baked into the lab's SRV records).
const TB: u16 = 17400;

struct Labs {
    dns: Lab,
    _target: Lab,
    _wrong_host: Lab,
    good: TestCert,
}

fn env_for(base: u16) -> Vec<(&'static str, String)> {
    vec![
        ("C2S_PORT", (base + 22).to_string()),
        ("C2S_TLS_PORT", (base + 23).to_string()),
        ("S2S_PORT", (base + 69).to_string()),
        ("S2S_TLS_PORT", (base + 70).to_string()),
        ("COMPONENT_PORT", (base + 47).to_string()),
        ("COMPONENT_JID", COMPONENT.into()),
        ("COMPONENT_SECRET", "s3cret".into()),
    ]
}

fn labs(dir: &Path) -> Labs {
    let good = TestCert::generate(dir, "good", &["good.test", "xmpp.good.test"]);
    let other = TestCert::generate(dir, "other", &["other.test"]);
    let mut env = env_for(TB);
    env.extend([
        ("NOSTARTTLS_PORT", (TB + 98).to_string()),
        ("DOWN_PORT", (TB + 99).to_string()),
        ("GOOD_SPKI", good.spki.clone()),
        ("OTHER_SPKI", other.spki.clone()),
        ("DNSLAB_ADDR_BASE", "127.61.0".into()),
        ("TLS_CERT", good.cert.display().to_string()),
        ("TLS_KEY", good.key.display().to_string()),
        ("EXTRA_HOSTS", HOSTS.into()),
    ]);
    let dns = Lab::start("dnslab.sh", &[], &dir.join("dns"), &env);
    let target = Lab::start("xmpplab.sh", &["prosody"], &dir.join("target"), &env);
    // xmpp.good.test has no SRV records, so `check xmpp.good.test` falls
    // back to ports 5222 and 5269 of that host: a real Prosody there that
    // serves good.test, not xmpp.good.test, answers host-unknown.
    let wrong = vec![
        ("C2S_PORT", "5222".to_string()),
        ("C2S_TLS_PORT", (TB + 123).to_string()),
        ("S2S_PORT", "5269".to_string()),
        ("S2S_TLS_PORT", (TB + 170).to_string()),
        ("COMPONENT_PORT", (TB + 147).to_string()),
        ("TLS_CERT", good.cert.display().to_string()),
        ("TLS_KEY", good.key.display().to_string()),
        ("EXTRA_HOSTS", "good.test".to_string()),
    ];
    let wrong_host = Lab::start("xmpplab.sh", &["prosody"], &dir.join("wrong-host"), &wrong);
    Labs {
        dns,
        _target: target,
        _wrong_host: wrong_host,
        good,
    }
}

fn bot(dir: &Path, labs: &Labs, component_port: u16) -> Proc {
    let lab = labs.dns.env_file("env");
    let get = |k: &str| lab.iter().find(|(key, _)| key == k).unwrap().1.clone();
    // A long interval: any check soon after a subscription is one the
    // subscription asked for, not the schedule's.
    let sections = format!(
        "[dns]\nnameservers = [\"{}\"]\ntrust_anchor = \"{}\"\n\n[probe]\ntransport = \"direct\"\ntimeout = \"5s\"\nallow_private = true\n\n[monitor]\ninterval = \"1h\"\njitter = \"0s\"\n",
        get("AUTH_NS"),
        get("TRUST_ANCHOR")
    );
    common::start_bot(dir, component_port, &sections)
}

/// Asserts the reply fits a phone screen and ends with the next step.
fn phone_sized(server: &str, domain: &str, reply: &str) {
    let lines = reply.lines().count();
    let chars = reply.chars().count();
    eprintln!("{server}: check {domain}: {lines} lines, {chars} chars");
    assert!(
        lines <= MAX_LINES && chars <= MAX_CHARS,
        "{server}: check {domain}: {lines} lines, {chars} chars:\n{reply}"
    );
    let last = reply.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("Next: "),
        "{server}: check {domain} does not end with the next step:\n{reply}"
    );
    assert!(
        !reply.contains("records_to_add") && !reply.contains("\"verdict\""),
        "{server}: {domain}: JSON names in chat:\n{reply}"
    );
}

/// "Checked at T" from a status reply, "(checked at T)" from a list line.
fn checked_at(text: &str, domain: &str) -> Option<String> {
    if let Some(rest) = text.split("Checked at ").nth(1) {
        return rest
            .split_whitespace()
            .next()
            .map(|t| t.trim_end_matches('.').to_owned());
    }
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{domain}: ")))?;
    let t = line.split("(checked at ").nth(1)?;
    Some(t.trim_end_matches(')').to_owned())
}

/// Asks again, slowly enough to stay within the per-JID command rate.
fn poll(client: &mut Client, body: &str) -> String {
    client.poll(COMPONENT, body, T)
}

fn replies_flow(server: &str, base: u16, dir: &Path, labs: &Labs) {
    let host = Lab::start(
        "xmpplab.sh",
        &[server],
        &dir.join(format!("host-{server}")),
        &env_for(base),
    );
    let bot_dir = dir.join(format!("bot-{server}"));
    std::fs::create_dir_all(&bot_dir).unwrap();
    let _bot = bot(&bot_dir, labs, base + 47);
    let mut alice = Client::connect("alice@localhost", "alice-pw", base + 22);
    let mut bob = Client::connect("bob@localhost", "bob-pw", base + 22);
    wait_component(&mut alice);
    let spki = &labs.good.spki;

    // help names Tor only when the probes go over Tor.
    let help = alice.ask(COMPONENT, "help", T);
    assert!(
        help.contains("without Tor") && !help.contains("over Tor"),
        "{help}"
    );

    // The eight cases, each on a phone screen, each ending with the next step.
    let ok = alice.ask(COMPONENT, "check good.test", T);
    phone_sized(server, "good.test", &ok);
    assert!(ok.starts_with("good.test: OK"), "{ok}");
    for uri in [
        format!("xmpp:{COMPONENT}?pubsub;action=subscribe;node=good.test"),
        format!("xmpp:{COMPONENT}?;node=good.test"),
        "subscribe good.test".into(),
    ] {
        assert!(ok.contains(&uri), "{server}: ok lacks {uri}:\n{ok}");
    }

    let notlsa = alice.ask(COMPONENT, "check notlsa.test", T);
    phone_sized(server, "notlsa.test", &notlsa);
    let line = format!("_{}._tcp.xmpp.notlsa.test. IN TLSA 3 1 1 {spki}", TB + 22);
    assert!(notlsa.lines().any(|l| l == line), "{notlsa}");
    assert!(notlsa.contains("check notlsa.test\" again"), "{notlsa}");
    // The pipeline a remote user is given prints that very zone line from
    // the server's certificate file.
    let pipeline = notlsa
        .lines()
        .find(|l| l.starts_with("openssl x509 -in CERT.pem"))
        .unwrap_or_else(|| panic!("{server}: no openssl pipeline:\n{notlsa}"))
        .replace("CERT.pem", &labs.good.cert.display().to_string());
    let out = std::process::Command::new("sh")
        .args(["-c", &pipeline])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        line,
        "{server}: the pipeline prints another line: {pipeline}"
    );

    let unsigned = alice.ask(COMPONENT, "check unsigned.test", T);
    phone_sized(server, "unsigned.test", &unsigned);
    let lines: Vec<&str> = unsigned.lines().collect();
    let sign = lines
        .iter()
        .position(|l| l.starts_with("First sign the zone unsigned.test"))
        .unwrap_or_else(|| panic!("{server}: no signing step:\n{unsigned}"));
    let first_record = lines
        .iter()
        .position(|l| l.contains("IN TLSA 3 1 1"))
        .unwrap_or_else(|| panic!("{server}: no records:\n{unsigned}"));
    assert!(
        sign < first_record,
        "{server}: records before signing:\n{unsigned}"
    );
    assert!(
        lines[first_record - 1].contains("once it is signed"),
        "{unsigned}"
    );

    let mismatch = alice.ask(COMPONENT, "check wrong.test", T);
    phone_sized(server, "wrong.test", &mismatch);
    assert!(mismatch.starts_with("wrong.test: ALARM"), "{mismatch}");
    assert!(mismatch.contains(spki), "{mismatch}");
    assert!(
        mismatch.contains("confirmed by a second probe"),
        "{mismatch}"
    );
    assert!(
        !mismatch.contains("circuit") && !mismatch.contains("Tor"),
        "{server}: Tor words over the direct transport:\n{mismatch}"
    );
    // The key seen is printed once, on the one line grouping all four endpoints.
    assert_eq!(mismatch.matches(spki.as_str()).count(), 1, "{mismatch}");

    let bogus = alice.ask(COMPONENT, "check expired.test", T);
    phone_sized(server, "expired.test", &bogus);
    assert!(bogus.starts_with("expired.test: ALARM, DNSSEC"), "{bogus}");
    assert!(bogus.contains("expired on 2020-02-01"), "{bogus}");
    assert!(
        bogus.contains("SRV RRset at _xmpps-client._tcp.expired.test"),
        "{bogus}"
    );
    assert!(
        !bogus.contains("expired.test:5222") && !bogus.contains("key seen -"),
        "{server}: a made-up endpoint:\n{bogus}"
    );

    for (input, name) in [
        ("nonexistent.test", "nonexistent.test"),
        ("bücher.example", "bücher.example (xn--bcher-kva.example)"),
    ] {
        let nx = alice.ask(COMPONENT, &format!("check {input}"), T);
        phone_sized(server, input, &nx);
        assert!(
            nx.starts_with(&format!("{name} does not exist (NXDOMAIN)")),
            "{nx}"
        );
        assert_eq!(
            nx.lines().count(),
            2,
            "{server}: advice beyond NXDOMAIN:\n{nx}"
        );
        assert!(!nx.contains("SRV"), "{nx}");
    }

    let wrong_host = alice.ask(COMPONENT, "check xmpp.good.test", T);
    phone_sized(server, "xmpp.good.test", &wrong_host);
    assert!(
        wrong_host.contains("host-unknown (This server does not serve xmpp.good.test)"),
        "{server}: the server's answer is hidden:\n{wrong_host}"
    );
    assert!(
        wrong_host.ends_with("send \"check good.test\" if that is the domain of your XMPP addresses (the part after the @)."),
        "{wrong_host}"
    );
    assert!(
        !wrong_host.contains("check that the server is up"),
        "{wrong_host}"
    );

    let down = alice.ask(COMPONENT, "check down.test", T);
    phone_sized(server, "down.test", &down);
    assert!(down.starts_with("down.test: could not check"), "{down}");
    assert!(down.contains("connection refused"), "{down}");
    assert!(down.contains("check down.test\" again"), "{down}");

    // `check` then `status`: the last check, whoever asked, for an
    // unmonitored domain too.
    let status = alice.ask(COMPONENT, "status notlsa.test", T);
    assert!(
        status.starts_with("notlsa.test: not protected"),
        "{server}: {status}"
    );
    assert!(status.contains(&line), "{status}");
    let status_ok = bob.ask(COMPONENT, "status good.test", T);
    assert!(status_ok.starts_with("good.test: OK"), "{status_ok}");

    // subscribe: checked now; `list` and `status` show the same check.
    std::thread::sleep(Duration::from_millis(1100)); // a later checked_at second
    let sub = alice.ask(COMPONENT, "subscribe good.test", T);
    assert!(sub.contains("being checked now"), "{sub}");
    assert!(
        sub.contains(&format!(
            "xmpp:{COMPONENT}?pubsub;action=subscribe;node=good.test"
        )),
        "{sub}"
    );
    let first = checked_at(&status_ok, "good.test").unwrap();
    let monitored = eventually(T, "the subscription's check", || {
        let s = poll(&mut bob, "status good.test");
        checked_at(&s, "good.test").filter(|t| *t > first)
    });
    let list = alice.ask(COMPONENT, "list", T);
    assert_eq!(
        checked_at(&list, "good.test").as_deref(),
        Some(monitored.as_str()),
        "{server}: list and status disagree:\n{list}"
    );
    assert!(list.contains("good.test: ok"), "{list}");

    // Unsubscribed and subscribed again: checked now, not an interval later.
    std::thread::sleep(Duration::from_millis(1100)); // a later checked_at second
    let unsub = alice.ask(COMPONENT, "unsubscribe good.test", T);
    assert!(unsub.starts_with("Unsubscribed"), "{unsub}");
    let again = alice.ask(COMPONENT, "subscribe good.test", T);
    assert!(again.contains("being checked now"), "{again}");
    let rechecked = eventually(T, "the re-subscription's check", || {
        let s = poll(&mut bob, "status good.test");
        checked_at(&s, "good.test").filter(|t| *t > monitored)
    });
    let list = alice.ask(COMPONENT, "list", T);
    assert_eq!(
        checked_at(&list, "good.test").as_deref(),
        Some(rechecked.as_str()),
        "{list}"
    );

    // A domain whose SRV records point at the host typed is the likely meaning.
    alice.ask(COMPONENT, "subscribe shared.test", T);
    eventually(T, "shared.test checked", || {
        let s = poll(&mut bob, "status shared.test");
        s.starts_with("shared.test: OK").then_some(())
    });
    let guess = bob.ask(COMPONENT, "check xmpp.good.test", T);
    assert!(
        guess.contains("send \"check shared.test\"") || guess.contains("send \"check good.test\""),
        "{guess}"
    );

    // PubSub: one's own subscriptions and affiliations, nobody else's.
    let r = bob.cmd(json!({"cmd": "pubsub_subscribe", "to": COMPONENT, "node": "good.test"}));
    assert_eq!(r["ok"], true, "{server}: {r}");
    let subs = bob.cmd(json!({"cmd": "pubsub_subscriptions", "to": COMPONENT}));
    assert_eq!(subs["ok"], true, "{server}: {subs}");
    let list = subs["subscriptions"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{server}: {subs}");
    assert_eq!(list[0]["node"], "good.test");
    assert_eq!(list[0]["subscription"], "subscribed");
    assert!(
        list[0]["jid"]
            .as_str()
            .unwrap()
            .starts_with("bob@localhost"),
        "{subs}"
    );
    let affs = bob.cmd(json!({"cmd": "pubsub_affiliations", "to": COMPONENT}));
    assert_eq!(affs["ok"], true, "{server}: {affs}");
    assert_eq!(affs["affiliations"][0]["node"], "good.test", "{affs}");
    // Alice follows by chat only: no PubSub subscription is hers.
    let none = alice.cmd(json!({"cmd": "pubsub_subscriptions", "to": COMPONENT}));
    assert_eq!(none["ok"], true, "{server}: {none}");
    assert_eq!(none["subscriptions"].as_array().unwrap().len(), 0, "{none}");
    // A fix shows at once: a chat check asks the domain's own records
    // afresh, past our cache (edit.test's TTL is 300 s; the monitor's
    // resolver would hand the old TLSA back for five minutes).
    let before = poll(&mut alice, "check edit.test");
    assert!(before.starts_with("edit.test: ALARM"), "{server}: {before}");
    labs.dns.run("edit");
    let after = poll(&mut alice, "check edit.test");
    assert!(after.starts_with("edit.test: OK"), "{server}: {after}");
    labs.dns.run("unedit");
    drop((alice, bob));
    drop(host);
}

#[test]
fn chat_replies_on_prosody_and_ejabberd() {
    let dir = workdir("replies");
    let labs = labs(&dir);
    // One after the other: both use the wrong-host server on port 5222.
    replies_flow("prosody", 17600, &dir, &labs);
    replies_flow("ejabberd", 17700, &dir, &labs);
}
