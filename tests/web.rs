//! The web front end to end: `certwatch serve` with `[web]` next to the
//! component, the DNSSEC lab and a real Prosody, driven by a real headless
//! Chromium (Selenium), with /metrics parsed by prometheus_client, the
//! feed by feedparser and the badge by an XML parser (tests/labs/webcheck.py).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{
    eventually, start_bot, wait_component, workdir, Client, Lab, TestCert, C2S, C2S_TLS, COMPONENT,
    DOWN, HOSTS, NOSTARTTLS, S2S, S2S_TLS,
};
use serde_json::{json, Value};

const WEB: &str = "127.0.0.1:18080";
const BASE: &str = "http://127.0.0.1:18080";
const COMPONENT_PORT: u16 = 15247;
const HOSTILE_PORT: u16 = 15990;
const SCRIPT: &str = "<script>window.__pwned=true</script>";
const IMG: &str = "\"'><img src=x onerror=\"window.__pwned=true\">";

/// Runs webcheck.py and returns its JSON.
fn py(args: &[&str]) -> Value {
    let out = Command::new("python3")
        .arg(common::root().join("tests/labs/webcheck.py"))
        .args(args)
        .output()
        .expect("run webcheck.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "webcheck.py {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// A plain HTTP/1.1 GET: (status, head, body).
fn http_get(path: &str) -> Option<(u16, String, String)> {
    let mut s = TcpStream::connect(WEB).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {WEB}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, head.to_ascii_lowercase(), body.to_owned()))
}

/// A monitored domain whose stored report carries markup where DNS and
/// certificates put text, marked as just checked so the monitor leaves it.
fn seed_hostile(db: &Path) {
    use certwatch::report::{EndpointReport, EndpointVerdict, Report, Verdict};
    use certwatch::store::{StateStore as _, Store};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = Store::open(db).unwrap();
    rt.block_on(store.monitor("evil.test")).unwrap();
    let report = Report {
        domain: "evil.test".into(),
        checked_at: "2026-12-04T10:00:00Z".into(),
        verdict: Verdict::Mismatch,
        endpoints: vec![EndpointReport {
            service: "xmpp-client".into(),
            host: format!("{SCRIPT}.evil.test"),
            port: 5222,
            address: Some("127.0.0.1".parse().unwrap()),
            tls: "starttls".into(),
            verdict: EndpointVerdict::Mismatch,
            tlsa: vec![format!("3 1 1 {IMG}")],
            spki_sha256: Some(IMG.into()),
            cert_sha256: None,
            matched: None,
            matched_until: None,
            error: Some(format!("certificate 0 (CN={SCRIPT}, SAN={IMG})")),
            tlsa_name: format!("_5222._tcp.{IMG}."),
            tls_version: None,
            cipher: None,
            notes: vec![SCRIPT.into()],
            vantage: vec![],
            confirmed: Some(true),
        }],
        records_to_add: vec![format!("_5222._tcp.evil.test. IN TLSA 3 1 1 {SCRIPT}")],
        advice: vec![IMG.into()],
        transport: "direct".into(),
        errors: vec![SCRIPT.into()],
        bogus_rrsets: vec![],
        evidence: vec![],
        nxdomain: false,
        resolvers: vec![],
        horizons: Default::default(),
        rollover: vec![],
    };
    rt.block_on(store.put_last_report("evil.test", &report))
        .unwrap();
    let item = certwatch::model::Item {
        id: "20261204T100000Z-mismatch-0badc0de".into(),
        title: format!("evil.test: {IMG}"),
        content: SCRIPT.into(),
        updated: "2026-12-04T10:00:00Z".into(),
    };
    rt.block_on(store.put_item("evil.test", &item)).unwrap();
    rt.block_on(store.note_checked("evil.test", std::time::SystemTime::now()))
        .unwrap();
    rt.block_on(store.flush()).unwrap();
}

/// A direct-TLS server presenting a leaf, issued by a CA of its own, whose
/// subject and names carry markup; returns the CA's SPKI SHA-256 (for the
/// lab's `TLSA 2 1 1`: the anchor matches, the name check then fails and
/// the report quotes the names).
fn hostile_tls_server(port: u16) -> String {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("CA {SCRIPT}"));
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let ca_spki = hex::encode(certwatch::dane::spki_sha256(ca_cert.der()).unwrap());
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf =
        CertificateParams::new(vec![format!("{SCRIPT}.example"), IMG.to_owned()]).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, SCRIPT);
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    common::tls_server(
        port,
        vec![leaf_cert.der().to_vec(), ca_cert.der().to_vec()],
        leaf_key.serialize_der(),
    );
    ca_spki
}

fn checks_total(metrics: &Value) -> f64 {
    metrics["families"]["certwatch_checks"]["samples"]
        .as_array()
        .expect("the checks counter")
        .iter()
        .filter(|s| s[0] == "certwatch_checks_total")
        .map(|s| s[2].as_f64().unwrap())
        .sum()
}

fn page<'a>(browse: &'a Value, domain: &str) -> &'a Value {
    browse["pages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["domain"] == domain)
        .unwrap_or_else(|| panic!("no page for {domain}: {browse}"))
}

#[test]
fn web_front_in_a_real_browser() {
    let dir = workdir("web");
    let shots = dir.join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let good = TestCert::generate(&dir, "good", &["good.test", "xmpp.good.test"]);
    let other = TestCert::generate(&dir, "other", &["other.test"]);
    let mut env: Vec<(&str, String)> = [
        ("C2S_PORT", C2S),
        ("C2S_TLS_PORT", C2S_TLS),
        ("S2S_PORT", S2S),
        ("S2S_TLS_PORT", S2S_TLS),
        ("NOSTARTTLS_PORT", NOSTARTTLS),
        ("DOWN_PORT", DOWN),
        ("COMPONENT_PORT", COMPONENT_PORT),
    ]
    .iter()
    .map(|(k, v)| (*k, v.to_string()))
    .collect();
    env.push(("GOOD_SPKI", good.spki.clone()));
    env.push(("OTHER_SPKI", other.spki.clone()));
    env.push(("DNSLAB_ADDR_BASE", "127.53.0".into()));
    env.push(("TLS_CERT", good.cert.display().to_string()));
    env.push(("TLS_KEY", good.key.display().to_string()));
    env.push(("EXTRA_HOSTS", HOSTS.into()));
    env.push(("HOSTILE_PORT", HOSTILE_PORT.to_string()));
    env.push(("HOSTILE_TA", hostile_tls_server(HOSTILE_PORT)));
    let dns = Lab::start("dnslab.sh", &[], &dir.join("dns"), &env);
    let _xmpp = Lab::start("xmpplab.sh", &["prosody"], &dir.join("prosody"), &env);
    let lab = dns.env_file("env");
    let var = |k: &str| lab.iter().find(|(key, _)| key == k).unwrap().1.clone();

    seed_hostile(&dir.join("db"));
    let sections = format!(
        "[dns]\nnameservers = [\"{}\"]\ntrust_anchor = \"{}\"\n\n[probe]\ntransport = \"direct\"\ntimeout = \"5s\"\nallow_private = true\n\n[monitor]\ninterval = \"1h\"\njitter = \"1s\"\n\n[web]\nlisten = \"{WEB}\"\npublic_url = \"{BASE}/\"\n",
        var("VALIDATING_NS"),
        var("TRUST_ANCHOR")
    );
    let _bot = start_bot(&dir, COMPONENT_PORT, &sections);
    eventually(Duration::from_secs(30), "the web front to answer", || {
        http_get("/healthz").filter(|(s, _, _)| *s == 200)
    });

    let before = py(&["metrics", BASE]);
    assert_eq!(before["status"], 200, "{before}");
    for family in [
        "certwatch_checks",
        "certwatch_domains_monitored",
        "certwatch_subscriptions",
        "certwatch_check_duration_seconds",
        "certwatch_alerts_sent",
        "certwatch_outbox_depth",
        "certwatch_self_watch_failing",
        "certwatch_build",
    ] {
        assert!(
            before["families"].get(family).is_some(),
            "{family} missing: {before}"
        );
    }

    // The desktop pass: type each domain, submit, read the page.
    let out = shots.to_str().unwrap();
    let desktop = py(&[
        "browse",
        BASE,
        out,
        "1280",
        "900",
        "good.test",
        "wrong.test",
        "notlsa.test",
    ]);
    let p = page(&desktop, "good.test");
    assert!(
        p["url"].as_str().unwrap().ends_with("/domain/good.test"),
        "{p}"
    );
    assert!(
        p["verdict"].as_str().unwrap().contains("good.test: OK, "),
        "{p}"
    );
    assert!(p["verdict_class"].as_str().unwrap().contains("good"), "{p}");
    let endpoints = p["endpoints"].as_array().unwrap();
    assert!(endpoints.len() >= 4, "every service's endpoints: {p}");
    assert!(
        endpoints.iter().any(|e| {
            let e = e.as_str().unwrap();
            e.contains("xmpp-client")
                && e.contains(&format!("xmpp.good.test:{C2S}"))
                && e.contains(&good.spki)
                && e.contains("matched:")
        }),
        "{p}"
    );
    assert_eq!(
        p["xmpp_href"],
        format!("xmpp:{COMPONENT}?pubsub;action=subscribe;node=good.test")
    );
    assert_eq!(p["feed_href"], format!("{BASE}/domain/good.test.atom"));
    let w = page(&desktop, "wrong.test");
    assert!(
        w["verdict"].as_str().unwrap().contains("wrong.test: ALARM"),
        "{w}"
    );
    assert!(w["verdict_class"].as_str().unwrap().contains("bad"), "{w}");
    assert!(
        w["endpoints"]
            .to_string()
            .contains(&format!("3 1 1 {}", other.spki)),
        "{w}"
    );
    assert_eq!(w["zone"], Value::Null, "no lines to add on a mismatch: {w}");
    let n = page(&desktop, "notlsa.test");
    assert!(
        n["verdict"]
            .as_str()
            .unwrap()
            .contains("DNSSEC is on but TLSA records are missing"),
        "{n}"
    );
    let want = format!("_{C2S}._tcp.xmpp.notlsa.test. IN TLSA 3 1 1 {}", good.spki);
    assert!(n["zone"].as_str().unwrap().contains(&want), "{n}");
    assert!(n["advice"].as_str().is_some(), "{n}");
    for p in desktop["pages"].as_array().unwrap() {
        assert!(Path::new(p["screenshot"].as_str().unwrap()).exists());
        assert_eq!(p["overflow"], false, "{p}");
    }

    // The checks counter went up by the three web checks.
    let after = py(&["metrics", BASE]);
    assert!(
        checks_total(&after) >= checks_total(&before) + 3.0,
        "before {before}\nafter {after}"
    );

    // A phone-sized viewport: nothing overflows sideways.
    let phone = py(&[
        "browse",
        BASE,
        out,
        "390",
        "844",
        "notlsa.test",
        "wrong.test",
        "good.test",
    ]);
    for p in phone["pages"].as_array().unwrap() {
        assert_eq!(p["overflow"], false, "{p}");
        assert_eq!(p["front_overflow"], false, "{p}");
        assert!(p["verdict"].as_str().is_some(), "{p}");
    }

    // Markup from DNS and certificates stays text in the browser.
    let hostile = py(&["inspect", BASE, out, "/domain/evil.test"]);
    // The only image is our QR code.
    assert_eq!(
        hostile["imgs"],
        json!([format!("{BASE}/domain/evil.test/qr.svg")]),
        "{hostile}"
    );
    assert_eq!(hostile["onerror"], 0, "{hostile}");
    assert_eq!(hostile["pwned"], false, "{hostile}");
    assert_eq!(
        hostile["scripts"],
        json!([format!("{BASE}/copy.js")]),
        "{hostile}"
    );
    let text = hostile["body_text"].as_str().unwrap();
    assert!(text.contains(SCRIPT) && text.contains(IMG), "{hostile}");

    // The same through a real probe: the certificate's names are markup.
    let probed = py(&["browse", BASE, out, "1280", "900", "hostile.test"]);
    let p = page(&probed, "hostile.test");
    assert!(
        p["endpoints"]
            .to_string()
            .contains("the server's certificate is for ["),
        "the names are in the report: {p}"
    );
    let hostile = py(&["inspect", BASE, out, "/domain/hostile.test"]);
    assert_eq!(
        hostile["imgs"],
        json!([format!("{BASE}/domain/hostile.test/qr.svg")]),
        "{hostile}"
    );
    assert_eq!(hostile["onerror"], 0, "{hostile}");
    assert_eq!(hostile["pwned"], false, "{hostile}");
    assert_eq!(
        hostile["scripts"],
        json!([format!("{BASE}/copy.js")]),
        "{hostile}"
    );
    let text = hostile["body_text"].as_str().unwrap();
    assert!(
        text.contains(&format!("{SCRIPT}.example")) && text.contains(IMG),
        "{hostile}"
    );

    // The JSON is the report as `check --json` writes it.
    let (status, head, body) = http_get("/domain/notlsa.test.json").unwrap();
    assert_eq!(status, 200);
    assert!(head.contains("content-type: application/json"), "{head}");
    let json: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["verdict"], "no_tlsa");
    assert!(json["records_to_add"].to_string().contains(&good.spki));
    let report: certwatch::report::Report = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body,
        serde_json::to_string_pretty(&report).unwrap() + "\n",
        "the report, pretty-printed as check --json prints it"
    );

    // The QR code is an SVG image of the subscribe URI.
    let (status, head, qr) = http_get("/domain/good.test/qr.svg").unwrap();
    assert_eq!(status, 200);
    assert!(head.contains("content-type: image/svg+xml"), "{head}");
    assert!(qr.starts_with("<svg") && qr.contains("<path"), "{qr}");

    // The badge is SVG, cached a few minutes.
    let b = py(&["badge", BASE, "wrong.test"]);
    assert_eq!(b["root"], "{http://www.w3.org/2000/svg}svg", "{b}");
    assert!(b["text"].as_str().unwrap().contains("MISMATCH"), "{b}");
    assert_eq!(b["cache_control"], "public, max-age=300", "{b}");

    // The feed has the PubSub node's items, same ids: a first check that
    // finds a mismatch is an alert.
    let mut alice = Client::connect("alice@localhost", "alice-pw", C2S);
    wait_component(&mut alice);
    let sub = alice.ask(COMPONENT, "subscribe wrong.test", Duration::from_secs(20));
    assert!(sub.starts_with("Subscribed to wrong.test"), "{sub}");
    let items = eventually(Duration::from_secs(60), "a PubSub item", || {
        let r = alice.cmd(json!({"cmd": "pubsub_items", "to": COMPONENT, "node": "wrong.test"}));
        let ids: Vec<String> = r["items"]
            .as_array()?
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect();
        (!ids.is_empty()).then_some(ids)
    });
    let feed = py(&["atom", BASE, "wrong.test"]);
    assert_eq!(feed["status"], 200, "{feed}");
    assert_eq!(feed["version"], "atom10", "{feed}");
    assert_eq!(feed["bozo"], false, "{feed}");
    // Each entry's id is its PubSub item's XMPP URI (an IRI, RFC 4287),
    // ending in the same item id.
    let uris: Vec<String> = items
        .iter()
        .map(|id| format!("xmpp:{COMPONENT}?;node=wrong.test;item={id}"))
        .collect();
    assert_eq!(feed["ids"], json!(uris), "{feed}");
    let hostile_feed = py(&["atom", BASE, "evil.test"]);
    assert_eq!(hostile_feed["bozo"], false, "{hostile_feed}");
    assert_eq!(
        hostile_feed["titles"],
        json!([format!("evil.test: {IMG}")]),
        "markup in a title is text"
    );

    // One address over its limit gets 429 naming it; another is served.
    let mut limited = None;
    for _ in 0..=certwatch::engine::COMMANDS_PER_MINUTE {
        let r = py(&["post", BASE, "127.0.0.1", "good.test"]);
        if r["status"] == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r["status"], 303, "{r}");
    }
    let limited = limited.expect("127.0.0.1 reached its limit");
    assert!(
        limited["body"]
            .as_str()
            .unwrap()
            .contains("at most 20 a minute and 30 an hour"),
        "{limited}"
    );
    let other_ip = py(&["post", BASE, "127.0.0.2", "good.test"]);
    assert_eq!(other_ip["status"], 303, "{other_ip}");
    assert_eq!(other_ip["location"], "/domain/good.test");

    let (status, head, _) = http_get("/").unwrap();
    assert_eq!(status, 200);
    assert!(head.contains("content-security-policy: default-src 'none'"));
    assert!(head.contains("x-content-type-options: nosniff"));
    eprintln!("screenshots in {}", shots.display());
}

/// `serve` with `[web]` and no `[xmpp]`: the web front alone, no secret
/// needed, and the pages say subscribing needs the XMPP side.
#[test]
fn web_front_alone_without_xmpp() {
    let dir = workdir("web-alone");
    let config = dir.join("certwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[web]\nlisten = \"127.0.0.1:18081\"\n\n[dns]\nnameservers = [\"127.0.0.1:9\"]\n\n[probe]\ntransport = \"direct\"\n\n[store]\npath = \"{}\"\n",
            dir.join("db").display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("certwatch.log")).unwrap();
    let _bot = common::Proc(
        common::certwatch()
            .args(["--config", config.to_str().unwrap(), "serve"])
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let get = |path: &str| -> Option<(u16, String)> {
        let mut s = TcpStream::connect("127.0.0.1:18081").ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, text))
    };
    let (status, _) = eventually(Duration::from_secs(20), "the web front alone", || {
        get("/healthz")
    });
    assert_eq!(status, 200);
    let (status, page) = get("/domain/example.org").unwrap();
    assert_eq!(status, 200);
    assert!(page.contains("runs without its XMPP side"), "{page}");
    assert!(!page.contains("xmpp:"), "{page}");
    let log = std::fs::read_to_string(dir.join("certwatch.log")).unwrap();
    assert!(log.contains("the web front runs alone"), "{log}");
}
