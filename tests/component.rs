//! The component on real Prosody and real ejabberd, driven by a real client.

mod common;

use std::time::Duration;

use common::{wait_component, workdir, Client, Lab, Proc, COMPONENT};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(20);

/// Nothing answers DNS on port 9: checks fail fast, on loopback only.
const SECTIONS: &str = "[dns]\nnameservers = [\"127.0.0.1:9\"]\n\n[probe]\ntransport = \"direct\"\ntimeout = \"3s\"\nallow_private = true\n\n[monitor]\ninterval = \"1h\"\njitter = \"0s\"\n";

fn start_bot(dir: &std::path::Path, component_port: u16) -> Proc {
    common::start_bot(dir, component_port, SECTIONS)
}

fn component_flow(server: &str, base: u16) {
    let dir = workdir(&format!("component-{server}"));
    let ports = [
        ("C2S_PORT", base + 22),
        ("C2S_TLS_PORT", base + 23),
        ("S2S_PORT", base + 69),
        ("S2S_TLS_PORT", base + 70),
        ("COMPONENT_PORT", base + 47),
    ];
    let env: Vec<(&str, String)> = ports
        .iter()
        .map(|(k, v)| (*k, v.to_string()))
        .chain([
            ("COMPONENT_JID", COMPONENT.to_string()),
            ("COMPONENT_SECRET", "s3cret".into()),
        ])
        .collect();
    let lab = Lab::start("xmpplab.sh", &[server], &dir.join("server"), &env);
    let c2s = base + 22;
    let mut bot = start_bot(&dir, base + 47);
    let mut alice = Client::connect("alice@localhost", "alice-pw", c2s);
    wait_component(&mut alice);

    // help: one line per command.
    let help = alice.ask(COMPONENT, "help", T);
    for cmd in [
        "check DOMAIN",
        "subscribe DOMAIN",
        "unsubscribe DOMAIN",
        "list",
        "status DOMAIN",
    ] {
        assert!(
            help.lines().any(|l| l.starts_with(cmd)),
            "{server}: help lacks {cmd}: {help}"
        );
    }
    // Anything else: a one-line hint.
    let hint = alice.ask(COMPONENT, "hello there", T);
    assert!(hint.contains("help") && !hint.contains('\n'), "{hint}");
    // Another bot echoing our hints cannot start a storm: after a few hints
    // a minute, unknown commands get no answer at all.
    for i in 0..10 {
        let r = alice.cmd(json!({"cmd": "send", "to": COMPONENT, "body": format!("hello {i}")}));
        assert_eq!(r["ok"], true, "{r}");
    }
    let hints = alice.drain_messages(COMPONENT, Duration::from_secs(4));
    assert_eq!(
        hints.len(),
        2,
        "{server}: hints are limited to 3 a minute (one was used): {hints:?}"
    );
    // Error, groupchat and headline messages are never answered.
    for kind in ["headline", "groupchat", "error"] {
        let r = alice.cmd(json!({"cmd": "send", "to": COMPONENT, "body": "help", "type": kind}));
        assert_eq!(r["ok"], true, "{r}");
    }
    let answered = alice.drain_messages(COMPONENT, Duration::from_secs(3));
    assert!(answered.is_empty(), "{server}: answered {answered:?}");

    // Bad input: a clear one-line error (from bob: alice has had her 3
    // error replies of the minute). Error replies are limited like hints:
    // the fourth within the minute gets no answer.
    let mut bob_chat = Client::connect("bob@localhost", "bob-pw", c2s);
    for bad in ["check not_a_domain", "subscribe 192.0.2.1"] {
        let e = bob_chat.ask(COMPONENT, bad, T);
        assert!(
            e.starts_with("Not a valid domain") && !e.contains('\n'),
            "{bad}: {e}"
        );
    }
    let long = bob_chat.ask(COMPONENT, &format!("check {}.org", "a".repeat(300)), T);
    assert!(long.contains("too long"), "{long}");
    let r = bob_chat.cmd(json!({"cmd": "send", "to": COMPONENT, "body": "status a..b"}));
    assert_eq!(r["ok"], true, "{r}");
    let silent = bob_chat.drain_messages(COMPONENT, Duration::from_secs(3));
    assert!(
        silent.is_empty(),
        "{server}: a fourth error reply: {silent:?}"
    );
    drop(bob_chat);

    // subscribe, list, status.
    let sub = alice.ask(COMPONENT, "subscribe Example.ORG", T);
    assert!(sub.starts_with("Subscribed to example.org"), "{sub}");
    assert!(
        sub.contains(&format!("xmpp:{COMPONENT}?;node=example.org")),
        "{sub}"
    );
    let again = alice.ask(COMPONENT, "subscribe example.org", T);
    assert!(again.contains("already subscribed"), "{again}");
    let list = alice.ask(COMPONENT, "list", T);
    assert!(list.contains("example.org"), "{list}");
    let status = alice.ask(COMPONENT, "status example.net", T);
    assert!(
        status.contains("No stored result for example.net"),
        "{status}"
    );

    // disco#info, disco#items, ping, unknown IQ, presence subscription.
    let info = alice.cmd(json!({"cmd": "disco_info", "to": COMPONENT}));
    assert_eq!(info["ok"], true, "{info}");
    let features: Vec<&str> = info["features"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    for f in [
        "http://jabber.org/protocol/pubsub",
        "urn:xmpp:ping",
        "http://jabber.org/protocol/disco#info",
    ] {
        assert!(
            features.contains(&f),
            "{server}: disco#info lacks {f}: {info}"
        );
    }
    let items = alice.cmd(json!({"cmd": "disco_items", "to": COMPONENT}));
    assert!(items.to_string().contains("example.org"), "{items}");
    let unknown = alice.cmd(json!({"cmd": "iq_raw", "to": COMPONENT, "type": "get",
        "xml": "<query xmlns='urn:x-certwatch-unknown'/>"}));
    assert_eq!(unknown["ok"], false, "{unknown}");
    assert_eq!(unknown["error"], "service-unavailable", "{unknown}");
    alice.cmd(json!({"cmd": "subscribe_presence", "to": COMPONENT}));
    alice
        .wait_event(T, |v| v["event"] == "presence" && v["type"] == "subscribed")
        .unwrap_or_else(|| panic!("{server}: no presence subscribed from the component"));

    // PubSub subscriptions count towards the per-account limit like chat
    // ones: bob fills his 50 with PubSub alone, then neither more PubSub nor
    // a chat subscription is accepted. disco#items pages through the nodes.
    let mut bob = Client::connect("bob@localhost", "bob-pw", c2s);
    for i in 0..50 {
        let r = bob.cmd(
            json!({"cmd": "pubsub_subscribe", "to": COMPONENT, "node": format!("n{i:02}.example")}),
        );
        assert_eq!(r["ok"], true, "{server}: pubsub subscribe {i}: {r}");
    }
    let over = bob.cmd(json!({"cmd": "pubsub_subscribe", "to": COMPONENT, "node": "n50.example"}));
    assert_eq!(over["ok"], false, "{server}: a 51st subscription: {over}");
    assert_eq!(over["error"], "policy-violation", "{over}");
    assert_eq!(over["pubsub_error"], "too-many-subscriptions", "{over}");
    let chat = bob.ask(COMPONENT, "subscribe n51.example", T);
    assert!(chat.contains("already follow 50"), "{server}: {chat}");
    // disco#items lists only what the requester follows: Alice sees her
    // example.org, not Bob's nodes; an operator sees every monitored one.
    let hers = alice.cmd(json!({"cmd": "disco_items_page", "to": COMPONENT, "max": 20}));
    assert_eq!(hers["count"], "1", "{server}: only her own node: {hers}");
    assert_eq!(hers["nodes"][0], "example.org", "{server}: {hers}");
    let mut admin = Client::connect("admin@localhost", "admin-pw", c2s);
    let all = admin.cmd(json!({"cmd": "disco_items_page", "to": COMPONENT, "max": 20}));
    assert_eq!(
        all["count"], "51",
        "{server}: an operator sees 50 nodes and example.org: {all}"
    );
    drop(admin);
    let first = bob.cmd(json!({"cmd": "disco_items_page", "to": COMPONENT, "max": 20}));
    assert_eq!(first["ok"], true, "{first}");
    assert_eq!(first["nodes"].as_array().unwrap().len(), 20, "{first}");
    assert_eq!(first["count"], "50", "{server}: Bob's 50 nodes: {first}");
    assert!(
        !first.to_string().contains("\"example.org\""),
        "{server}: Alice's node is not Bob's business: {first}"
    );
    let last = first["last"].as_str().unwrap().to_owned();
    let next =
        bob.cmd(json!({"cmd": "disco_items_page", "to": COMPONENT, "max": 20, "after": last}));
    let nodes: Vec<&str> = next["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(nodes.len(), 20, "{next}");
    assert!(
        nodes.iter().all(|n| *n > last.as_str()),
        "{server}: the second page follows the first: {next}"
    );
    // IQs are rate-limited per account too (60 a minute; bob sent 51).
    let answers: Vec<Value> = (0..12)
        .map(|_| bob.cmd(json!({"cmd": "ping", "to": COMPONENT})))
        .collect();
    assert_eq!(answers[0]["ok"], true, "{server}: {answers:?}");
    assert!(
        answers.iter().any(|a| a["error"] == "resource-constraint"),
        "{server}: IQs not limited: {answers:?}"
    );
    drop(bob);

    // The XMPP server restarts: the component reconnects and answers again.
    drop(alice);
    lab.run("stop");
    lab.run("start");
    let mut alice = Client::connect("alice@localhost", "alice-pw", c2s);
    wait_component(&mut alice);
    let help = alice.ask(COMPONENT, "help", T);
    assert!(help.contains("subscribe DOMAIN"), "{help}");

    // The bot is killed (-9) and restarted: the subscription survived.
    bot.0.kill().unwrap();
    bot.0.wait().unwrap();
    drop(bot);
    let mut bot = start_bot(&dir, base + 47);
    wait_component(&mut alice);
    let list = alice.ask(COMPONENT, "list", T);
    assert!(
        list.contains("example.org"),
        "{server}: lost after restart: {list}"
    );

    let unsub = alice.ask(COMPONENT, "unsubscribe example.org", T);
    assert!(
        unsub.starts_with("Unsubscribed from example.org"),
        "{unsub}"
    );
    let list = alice.ask(COMPONENT, "list", T);
    assert!(list.contains("no subscriptions"), "{list}");

    // SIGTERM: the bot closes its stream and exits 0; the server sees it go.
    let pid = bot.0.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = common::eventually(T, "the bot to exit on SIGTERM", || {
        bot.0.try_wait().unwrap()
    });
    assert_eq!(status.code(), Some(0), "{server}: exit after SIGTERM");
    let log = std::fs::read_to_string(dir.join("certwatch.log")).unwrap();
    assert!(
        log.contains("shutting down"),
        "{server}: no shutdown logged"
    );
    let ping = alice.cmd(json!({"cmd": "ping", "to": COMPONENT}));
    assert_eq!(
        ping["ok"], false,
        "{server}: component still answers: {ping}"
    );
}

#[test]
fn prosody_component_end_to_end() {
    component_flow("prosody", 16000);
}

#[test]
fn ejabberd_component_end_to_end() {
    component_flow("ejabberd", 16100);
}
