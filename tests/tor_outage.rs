//! Our own Tor failing under a running `serve`: the whole private Tor network
//! is stopped while good.test is monitored over embedded Tor. The operator is
//! told exactly once, no chat or PubSub subscriber hears anything (the domain
//! is not called unreachable), and once the same network is back the
//! operator is told exactly once that it works again. Runs only in a network
//! namespace with nothing but `lo`.

mod common;

use std::time::Duration;

use common::{
    assert_isolated, eventually, root, start_bot, wait_component, workdir, Client, Lab, TestCert,
    COMPONENT, HOSTS,
};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(20);
/// The bot's XMPP server (users, the component): c2s on BASE+22.
const BASE: u16 = 16200;
/// The probed server (good.test's endpoints).
const TARGET: u16 = 16300;
const TORNET: &str = "17400";
const DNS_ADDRS: &str = "127.58.0";

fn is_alert(v: &Value, needle: &str) -> bool {
    v["event"] == "message"
        && v["from"].as_str().is_some_and(|f| f.starts_with(COMPONENT))
        && v["body"].as_str().is_some_and(|b| b.contains(needle))
}

/// Counts what arrives within `window` that matches (the backlog included).
fn count(client: &mut Client, window: Duration, pred: impl Fn(&Value) -> bool) -> usize {
    let mut n = 0;
    while client.wait_event(window, &pred).is_some() {
        n += 1;
    }
    n
}

fn lab_env(good: &TestCert, other: &TestCert) -> Vec<(&'static str, String)> {
    vec![
        ("C2S_PORT", (TARGET + 22).to_string()),
        ("C2S_TLS_PORT", (TARGET + 23).to_string()),
        ("S2S_PORT", (TARGET + 69).to_string()),
        ("S2S_TLS_PORT", (TARGET + 70).to_string()),
        ("NOSTARTTLS_PORT", (TARGET + 98).to_string()),
        ("DOWN_PORT", (TARGET + 99).to_string()),
        ("COMPONENT_PORT", (TARGET + 47).to_string()),
        ("GOOD_SPKI", good.spki.clone()),
        ("OTHER_SPKI", other.spki.clone()),
        ("DNSLAB_ADDR_BASE", DNS_ADDRS.into()),
        ("TLS_CERT", good.cert.display().to_string()),
        ("TLS_KEY", good.key.display().to_string()),
        ("EXTRA_HOSTS", HOSTS.into()),
        ("TORNET_PORT_BASE", TORNET.into()),
        (
            "TORNET_KEYCACHE",
            root().join("target/tornet-keys").display().to_string(),
        ),
        ("TORNET_OWNER_PID", std::process::id().to_string()),
    ]
}

#[test]
fn our_tor_network_stopping_tells_the_operator_not_the_subscribers() {
    assert_isolated();
    let dir = workdir("tor-outage");
    let good = TestCert::generate(&dir, "good", &["good.test"]);
    let other = TestCert::generate(&dir, "other", &["other.test"]);
    let env = lab_env(&good, &other);
    let tor = Lab::start("tornet.sh", &[], &dir.join("tor"), &env);
    let dns = Lab::start("dnslab.sh", &[], &dir.join("dns"), &env);
    let _target = Lab::start("xmpplab.sh", &["prosody"], &dir.join("target"), &env);
    let host_env: Vec<(&str, String)> = vec![
        ("C2S_PORT", (BASE + 22).to_string()),
        ("C2S_TLS_PORT", (BASE + 23).to_string()),
        ("S2S_PORT", (BASE + 69).to_string()),
        ("S2S_TLS_PORT", (BASE + 70).to_string()),
        ("COMPONENT_PORT", (BASE + 47).to_string()),
        ("COMPONENT_JID", COMPONENT.into()),
        ("COMPONENT_SECRET", "s3cret".into()),
    ];
    let _host = Lab::start("xmpplab.sh", &["prosody"], &dir.join("host"), &host_env);

    let lab = dns.env_file("env");
    let get = |k: &str| lab.iter().find(|(key, _)| key == k).unwrap().1.clone();
    let arti = common::arti_config(&tor, &dir);
    // A short probe timeout and interval keep the outage short; arti's own
    // circuit and stream budgets are fitted inside the timeout.
    let sections = format!(
        "[dns]\nnameservers = [\"{}\"]\ntrust_anchor = \"{}\"\n\n[probe]\ntransport = \"tor\"\narti_config = \"{}\"\ntimeout = \"5s\"\nallow_private = true\n\n[monitor]\ninterval = \"2s\"\njitter = \"1s\"\n",
        get("AUTH_NS"),
        get("TRUST_ANCHOR"),
        arti.display()
    );
    let _bot = start_bot(&dir, BASE + 47, &sections);

    let mut alice = Client::connect("alice@localhost", "alice-pw", BASE + 22);
    let mut bob = Client::connect("bob@localhost", "bob-pw", BASE + 22);
    let mut admin = Client::connect("admin@localhost", "admin-pw", BASE + 22);
    wait_component(&mut alice);
    let sub = alice.ask(COMPONENT, "subscribe good.test", T);
    assert!(sub.starts_with("Subscribed to good.test"), "{sub}");
    let r = bob.cmd(json!({"cmd": "pubsub_subscribe", "to": COMPONENT, "node": "good.test"}));
    assert_eq!(r["ok"], true, "pubsub subscribe: {r}");
    // Polled slowly: chat commands are rate-limited per JID.
    eventually(
        Duration::from_secs(90),
        "good.test to be ok over Tor",
        || {
            let s = alice.poll(COMPONENT, "status good.test", T);
            s.contains("good.test: OK").then_some(())
        },
    );

    // The whole Tor network goes away: every authority, relay and exit.
    tor.run("stop");
    let operator = |v: &Value| is_alert(v, "operator alert");
    let told = admin
        .wait_event(Duration::from_secs(150), operator)
        .expect("the operator was not told that our Tor fails");
    let body = told["body"].as_str().unwrap();
    assert!(body.contains("our Tor client"), "{body}");
    // Nothing about the domain was learnt: it is still ok, not unreachable.
    let s = alice.ask(COMPONENT, "status good.test", T);
    assert!(s.contains("good.test: OK"), "{s}");

    // The same network comes back.
    tor.run("restart");
    let again = admin
        .wait_event(Duration::from_secs(240), |v| is_alert(v, "work again"))
        .expect("the operator was not told that Tor works again");
    assert!(
        again["body"].as_str().unwrap().contains("Tor client"),
        "{again}"
    );
    assert_eq!(
        count(&mut admin, Duration::from_secs(3), operator),
        0,
        "the operator was told more than once"
    );
    assert_eq!(
        count(&mut admin, Duration::from_secs(1), |v| is_alert(
            v,
            "work again"
        )),
        0,
        "the recovery was told more than once"
    );
    assert_eq!(
        count(&mut alice, Duration::from_secs(1), |v| is_alert(
            v,
            "good.test"
        )),
        0,
        "a chat subscriber was alerted for our own Tor failing"
    );
    assert_eq!(
        count(&mut bob, Duration::from_secs(1), |v| v["event"] == "pubsub"),
        0,
        "a PubSub subscriber was alerted for our own Tor failing"
    );
}
