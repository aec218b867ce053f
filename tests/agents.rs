//! Vantage agents end to end, all on loopback: the coordinator (`serve`)
//! and three `certwatch agent` processes logged in to the test XMPP server
//! as client accounts, each probing from its own source address. A hostile
//! middlebox (tests/labs/interceptor.py) sits where the monitored server is
//! probed and, per source address, forwards to the real server, intercepts
//! TLS with its own key, or holds the connection in silence.
//!
//! Cases, in one flow per XMPP server: every vantage sees the good key (ok,
//! the agents named in the JSON); an interceptor that intercepts only one
//! agent's address (one alarm, "seen only from" that agent, no flapping,
//! one recovery); an interceptor on every address (one alarm, confirmed
//! from several networks); an agent killed mid-job while a stranger sends
//! answers to guessed job ids (no subscriber alert, the probe made
//! elsewhere, the stranger's answers ignored and logged, one operator
//! notice that the agent is away and one when it is back).

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    count, eventually, is_from_bot, wait_component, workdir, Client, Lab, Proc, TestCert,
    COMPONENT, HOSTS,
};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(20);

/// The agents: name, account, source address of their probes.
const AGENTS: [(&str, &str, &str); 3] = [
    ("a", "agent-a", "127.0.0.2"),
    ("b", "agent-b", "127.0.0.3"),
    ("c", "agent-c", "127.0.0.4"),
];

struct Ports {
    /// The coordinator's XMPP server (component, agents, subscribers).
    host: u16,
    /// The monitored server (Prosody serving down.test).
    target: u16,
    /// Where down.test's SRV points: the interceptor.
    probed: u16,
    web: u16,
    addr_base: &'static str,
}

struct World {
    dir: PathBuf,
    _dns: Lab,
    _target: Lab,
    host: Lab,
    interceptor: Client,
    rules: PathBuf,
    host_cert: PathBuf,
    ports: Ports,
}

impl World {
    /// Sets the interceptor's mode per source address.
    fn rules(&self, rules: Value) {
        let tmp = self.rules.with_extension("tmp");
        std::fs::write(&tmp, rules.to_string()).unwrap();
        std::fs::rename(&tmp, &self.rules).unwrap();
    }

    /// Starts agent `i` of [`AGENTS`].
    fn agent(&self, i: usize) -> Proc {
        let (name, user, bind) = AGENTS[i];
        let text = format!(
            "[agent]\njid = \"{user}@localhost\"\npassword = \"{user}-pw\"\ncoordinator = \"{COMPONENT}\"\nserver = \"127.0.0.1:{}\"\ntrust_file = \"{}\"\n\n[probe]\ntransport = \"direct\"\ntimeout = \"5s\"\nallow_private = true\nbind = \"{bind}\"\n",
            self.ports.host + 22,
            self.host_cert.display()
        );
        start_agent(&self.dir, name, &text)
    }

    /// The coordinator: its own vantage from 127.0.0.1 and the three agents.
    fn coordinator(&self) -> Proc {
        let dns = self._dns.env_file("env");
        let var = |k: &str| dns.iter().find(|(key, _)| key == k).unwrap().1.clone();
        let mut sections = format!(
            "[dns]\nnameservers = [\"{}\"]\ntrust_anchor = \"{}\"\n\n[probe]\ntransport = \"direct\"\ntimeout = \"5s\"\nallow_private = true\nbind = \"127.0.0.1\"\nvantage_away = \"6s\"\n\n[monitor]\ninterval = \"2s\"\njitter = \"1s\"\n\n[web]\nlisten = \"127.0.0.1:{}\"\n\n",
            var("VALIDATING_NS"),
            var("TRUST_ANCHOR"),
            self.ports.web
        );
        for (name, user, _) in AGENTS {
            sections.push_str(&format!(
                "[[vantage]]\nname = \"{name}\"\njid = \"{user}@localhost\"\nweight = 1\n\n"
            ));
        }
        common::start_bot(&self.dir, self.ports.host + 47, &sections)
    }

    /// The stored report of `domain` as JSON (the web front's copy).
    fn report(&self, domain: &str) -> Option<Value> {
        report(self.ports.web, domain)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("certwatch.log")).unwrap_or_default()
    }
}

/// Starts `certwatch agent` with the configuration `text`, its log in
/// `dir`/agent-NAME.log.
fn start_agent(dir: &Path, name: &str, text: &str) -> Proc {
    let config = dir.join(format!("agent-{name}.toml"));
    std::fs::write(&config, text).unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("agent-{name}.log")))
        .unwrap();
    Proc(
        common::certwatch()
            .args(["--config", config.to_str().unwrap(), "agent"])
            .env("RUST_LOG", "info,certwatch=debug")
            .stderr(log)
            .spawn()
            .expect("start certwatch agent"),
    )
}

/// The stored report of `domain` as JSON (the web front's copy on `web`).
fn report(web: u16, domain: &str) -> Option<Value> {
    let addr = format!("127.0.0.1:{web}");
    let mut s = std::net::TcpStream::connect(&addr).ok()?;
    s.set_read_timeout(Some(T)).ok()?;
    write!(
        s,
        "GET /domain/{domain}.json HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then_some(())?;
    serde_json::from_str(body).ok()
}

fn world(server: &str, ports: Ports) -> World {
    let dir = workdir(&format!("agents-{server}"));
    let good = TestCert::generate(&dir, "good", &["down.test"]);
    let mitm = TestCert::generate(&dir, "mitm", &["down.test"]);
    // The agents' login: a certificate with the server's name in it.
    let (host_cert, host_key) = login_cert(&dir);
    let tb = ports.target;
    let target_env: Vec<(&str, String)> = vec![
        ("C2S_PORT", (tb + 22).to_string()),
        ("C2S_TLS_PORT", (tb + 23).to_string()),
        ("S2S_PORT", (tb + 69).to_string()),
        ("S2S_TLS_PORT", (tb + 70).to_string()),
        // Both lab zones with one _xmpp-client SRV point at the interceptor.
        ("NOSTARTTLS_PORT", ports.probed.to_string()),
        ("DOWN_PORT", ports.probed.to_string()),
        ("COMPONENT_PORT", (tb + 47).to_string()),
        ("GOOD_SPKI", good.spki.clone()),
        ("OTHER_SPKI", mitm.spki.clone()),
        ("DNSLAB_ADDR_BASE", ports.addr_base.into()),
        ("TLS_CERT", good.cert.display().to_string()),
        ("TLS_KEY", good.key.display().to_string()),
        ("EXTRA_HOSTS", HOSTS.into()),
    ];
    let dns = Lab::start("dnslab.sh", &[], &dir.join("dns"), &target_env);
    let target = Lab::start("xmpplab.sh", &["prosody"], &dir.join("target"), &target_env);
    let hb = ports.host;
    let host_env: Vec<(&str, String)> = vec![
        ("C2S_PORT", (hb + 22).to_string()),
        ("C2S_TLS_PORT", (hb + 23).to_string()),
        ("S2S_PORT", (hb + 69).to_string()),
        ("S2S_TLS_PORT", (hb + 70).to_string()),
        ("COMPONENT_PORT", (hb + 47).to_string()),
        ("COMPONENT_JID", COMPONENT.into()),
        ("COMPONENT_SECRET", "s3cret".into()),
        ("EXTRA_USERS", "agent-a agent-b agent-c mallory".into()),
        // The agents never log in without TLS.
        ("EJABBERD_STARTTLS", "1".into()),
        ("TLS_CERT", host_cert.display().to_string()),
        ("TLS_KEY", host_key.display().to_string()),
    ];
    let host = Lab::start("xmpplab.sh", &[server], &dir.join("host"), &host_env);
    let rules = dir.join("rules.json");
    std::fs::write(&rules, json!({"*": "forward"}).to_string()).unwrap();
    let listen = format!("127.0.0.1:{}", ports.probed);
    let forward = format!("127.0.0.1:{}", tb + 22);
    let interceptor = Client::spawn(
        "interceptor.py",
        &[
            "--listen",
            &listen,
            "--forward",
            &forward,
            "--cert",
            mitm.cert.to_str().unwrap(),
            "--key",
            mitm.key.to_str().unwrap(),
            "--rules",
            rules.to_str().unwrap(),
        ],
    )
    .expect("the interceptor did not start");
    World {
        dir,
        _dns: dns,
        _target: target,
        host,
        interceptor,
        rules,
        host_cert,
        ports,
    }
}

/// A certificate for the agents' login with the server's name in it (the
/// lab's default has none), valid 30 days: ejabberd's certificate timer
/// fails on rcgen's default expiry in the year 4096.
fn login_cert(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("host.crt"), dir.join("host.key"));
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "30", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// The agents named in the report's vantage entries.
fn agents_in(report: &Value) -> Vec<String> {
    report["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| e["vantage"].as_array().cloned().unwrap_or_default())
        .filter_map(|v| v["agent"].as_str().map(str::to_owned))
        .collect()
}

/// Waits until the stored report was checked after `after` (its `checked_at`).
fn fresh_report(w: &World, domain: &str, after: &str) -> Value {
    eventually(Duration::from_secs(60), "a fresh check", || {
        w.report(domain)
            .filter(|r| r["checked_at"].as_str().is_some_and(|t| t > after))
    })
}

fn agents_flow(server: &str, ports: Ports) {
    let mut w = world(server, ports);
    let mut bot = w.coordinator();
    let mut agents: Vec<Proc> = (0..AGENTS.len()).map(|i| w.agent(i)).collect();
    let host_port = w.ports.host + 22;
    let mut alice = Client::connect("alice@localhost", "alice-pw", host_port);
    let mut admin = Client::connect("admin@localhost", "admin-pw", host_port);
    wait_component(&mut alice);
    // Every agent online, as the operators' health command says.
    eventually(Duration::from_secs(60), "every agent online", || {
        let h = admin.poll(COMPONENT, "health", T);
        AGENTS
            .iter()
            .all(|(n, _, _)| h.contains(&format!("\n{n}: online")))
            .then_some(())
    });

    // 1. Every vantage sees the good key: ok, and the agents are named.
    let sub = alice.ask(COMPONENT, "subscribe down.test", T);
    assert!(sub.starts_with("Subscribed to down.test"), "{sub}");
    let mut seen = std::collections::BTreeSet::new();
    let mut last = String::new();
    eventually(Duration::from_secs(120), "every agent to probe", || {
        let r = fresh_report(&w, "down.test", &last);
        last = r["checked_at"].as_str().unwrap().to_owned();
        assert_eq!(r["verdict"], "ok", "{server}: {r}");
        seen.extend(agents_in(&r));
        (seen.len() == AGENTS.len()).then_some(())
    });
    assert_eq!(
        count(&mut alice, Duration::from_secs(1), |v| is_from_bot(
            v, "ALARM"
        )),
        0
    );

    // 2. Only agent b's address is intercepted: one alarm, seen only from b.
    w.rules(json!({"127.0.0.3": "intercept", "*": "forward"}));
    let alarm = alice
        .wait_event(Duration::from_secs(120), |v| is_from_bot(v, "ALARM"))
        .unwrap_or_else(|| panic!("{server}: no alarm for the interception of b"));
    let body = alarm["body"].as_str().unwrap();
    assert!(body.contains("seen only from b"), "{server}: {body}");
    let r = w.report("down.test").unwrap();
    assert_eq!(r["verdict"], "mismatch", "{r}");
    // Held while it lasts: no recovery, no second alarm, over several checks.
    let at = r["checked_at"].as_str().unwrap().to_owned();
    let mut checks = 0;
    let mut after = at.clone();
    while checks < 4 {
        let r = fresh_report(&w, "down.test", &after);
        after = r["checked_at"].as_str().unwrap().to_owned();
        assert_eq!(r["verdict"], "mismatch", "{server}: flapped: {r}");
        checks += 1;
    }
    assert_eq!(
        count(&mut alice, Duration::from_secs(1), |v| is_from_bot(
            v,
            "down.test"
        )),
        0
    );
    w.rules(json!({"*": "forward"}));
    alice
        .wait_event(Duration::from_secs(60), |v| is_from_bot(v, "recovered"))
        .unwrap_or_else(|| panic!("{server}: no recovery after b's interception"));
    // The next cases on another domain behind the same interceptor (a third
    // change within a few checks would make down.test "intermittent").
    let unsub = alice.ask(COMPONENT, "unsubscribe down.test", T);
    assert!(unsub.contains("down.test"), "{unsub}");
    let d = "nostarttls.test";
    let sub = alice.poll(COMPONENT, &format!("subscribe {d}"), T);
    assert!(sub.starts_with(&format!("Subscribed to {d}")), "{sub}");
    eventually(Duration::from_secs(60), "nostarttls.test ok", || {
        w.report(d).filter(|r| r["verdict"] == "ok")
    });

    // 3. Every address intercepted: one alarm, confirmed from several networks.
    w.rules(json!({"*": "intercept"}));
    let alarm = alice
        .wait_event(Duration::from_secs(60), |v| {
            is_from_bot(v, "ALARM") && is_from_bot(v, d)
        })
        .unwrap_or_else(|| panic!("{server}: no alarm for the interception of all"));
    let body = alarm["body"].as_str().unwrap();
    assert!(body.contains("seen from "), "{server}: {body}");
    assert!(body.contains("networks"), "{server}: {body}");
    assert!(body.contains("confirmed"), "{server}: {body}");
    let r = w.report(d).unwrap();
    let e = &r["endpoints"][0];
    assert_eq!(e["confirmed"], true, "{e}");
    assert!(e["vantage"].as_array().unwrap().len() >= 2, "{e}");
    w.rules(json!({"*": "forward"}));
    alice
        .wait_event(Duration::from_secs(60), |v| {
            is_from_bot(v, "recovered") && is_from_bot(v, d)
        })
        .unwrap_or_else(|| panic!("{server}: no recovery after all were intercepted"));

    // 4. Agent c is killed mid-job, while a stranger answers guessed job ids.
    let mut mallory = Client::connect("mallory@localhost", "mallory-pw", host_port);
    w.rules(json!({"127.0.0.4": "hold", "*": "forward"}));
    w.interceptor
        .wait_event(Duration::from_secs(120), |v| {
            v["event"] == "conn" && v["from"] == "127.0.0.4" && v["mode"] == "hold"
        })
        .unwrap_or_else(|| panic!("{server}: agent c never got a job"));
    // The job is pending: answer ids of its form as if from an agent, with
    // the interceptor's key (a false alarm is what this stranger wants).
    // Job ids carry a random prefix, so the stranger can only guess them.
    let mitm_der = pem::parse(std::fs::read(w.dir.join("mitm.crt")).unwrap()).unwrap();
    let b64 = base64_der(mitm_der.contents());
    let seen = format!("<seen xmlns='urn:certwatch:agent:2' transport='direct' version='TLSv1.3' cipher='TLS13_AES_128_GCM_SHA256' ms='3' service='xmpp-client' domain='{d}' host='xmpp.{d}' address='127.0.0.1' port='{}'><cert>{b64}</cert></seen>", w.ports.probed);
    let r = mallory.cmd(json!({"cmd": "iq_results", "to": COMPONENT, "first": 1, "last": 600, "prefix": "0123456789abcdef-", "xml": seen}));
    assert_eq!(r["ok"], true, "{r}");
    eventually(T, "the stranger's answer to be logged", || {
        w.log()
            .contains("a probe answer from a JID that is not the agent the job went to: ignored")
            .then_some(())
    });
    let checked = w.report(d).unwrap()["checked_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let _ = agents[2].0.kill();
    let _ = agents[2].0.wait();
    // The coordinator knows at once, and the probe is made elsewhere: a
    // check after the kill is ok, with no word to the subscriber.
    let after_kill = fresh_report(&w, d, &checked);
    let after_kill = fresh_report(&w, d, after_kill["checked_at"].as_str().unwrap());
    assert_eq!(after_kill["verdict"], "ok", "{server}: {after_kill}");
    assert!(
        w.log().contains("went offline mid-job"),
        "{server}: the job did not fail when c left"
    );
    assert_eq!(
        count(&mut alice, Duration::from_secs(2), |v| is_from_bot(v, d)),
        0
    );
    // One operator notice that c is away (vantage_away = 6s), not repeated.
    let notice = admin
        .wait_event(Duration::from_secs(40), |v| {
            is_from_bot(v, "Vantage agent c has been offline")
        })
        .unwrap_or_else(|| panic!("{server}: no operator notice for agent c"));
    assert!(
        notice["body"].as_str().unwrap().contains("offline"),
        "{notice}"
    );
    assert_eq!(
        count(&mut admin, Duration::from_secs(8), |v| is_from_bot(
            v,
            "Vantage agent c"
        )),
        0,
        "{server}: the notice was repeated"
    );
    // Back: one notice.
    agents[2] = w.agent(2);
    admin
        .wait_event(Duration::from_secs(60), |v| {
            is_from_bot(v, "Vantage agent c is back")
        })
        .unwrap_or_else(|| panic!("{server}: no notice that agent c is back"));
    assert_eq!(
        count(&mut alice, Duration::from_secs(1), |v| is_from_bot(v, d)),
        0
    );
    let health = admin.poll(COMPONENT, "health", T);
    assert!(health.contains("jobs answered"), "{health}");

    let _ = bot.0.kill();
    drop(agents);
    drop(w.host);
}

fn base64_der(der: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(der)
}

#[test]
fn prosody_agents() {
    agents_flow(
        "prosody",
        Ports {
            host: 19000,
            target: 19200,
            probed: 19299,
            web: 19080,
            addr_base: "127.63.0",
        },
    );
}

#[test]
fn ejabberd_agents() {
    agents_flow(
        "ejabberd",
        Ports {
            host: 19400,
            target: 19600,
            probed: 19699,
            web: 19480,
            addr_base: "127.64.0",
        },
    );
}

/// One agent over the suite's private Tor network (tests/labs/tornet.sh),
/// the coordinator not probing at all (`probe.local = false`): the agent
/// bootstraps arti against the lab's authorities, takes the coordinator's
/// jobs and reports each key with the exit it left through. A good domain
/// is ok, every vantage entry naming the agent, "tor" and one of the lab's
/// exits; a domain whose records name another key is confirmed through a
/// second exit (the job tells the agent to avoid the first).
#[test]
fn agent_over_tor() {
    common::assert_isolated();
    let dir = workdir("agents-tor");
    let good = TestCert::generate(&dir, "good", &["localhost", "twozsk.test", "wrong.test"]);
    let other = TestCert::generate(&dir, "other", &["wrong.test"]);
    let b: u16 = 19800;
    let env: Vec<(&str, String)> = vec![
        ("C2S_PORT", (b + 22).to_string()),
        ("C2S_TLS_PORT", (b + 23).to_string()),
        ("S2S_PORT", (b + 69).to_string()),
        ("S2S_TLS_PORT", (b + 70).to_string()),
        ("COMPONENT_PORT", (b + 47).to_string()),
        ("GOOD_SPKI", good.spki.clone()),
        ("OTHER_SPKI", other.spki.clone()),
        ("DNSLAB_ADDR_BASE", "127.66.0".into()),
        ("TLS_CERT", good.cert.display().to_string()),
        ("TLS_KEY", good.key.display().to_string()),
        ("EXTRA_HOSTS", HOSTS.into()),
        ("EXTRA_USERS", "agent-t".into()),
        ("TORNET_PORT_BASE", "19900".into()),
        (
            "TORNET_KEYCACHE",
            common::root()
                .join("target/tornet-keys")
                .display()
                .to_string(),
        ),
        ("TORNET_OWNER_PID", std::process::id().to_string()),
    ];
    let tor = Lab::start("tornet.sh", &[], &dir.join("tor"), &env);
    let dns = Lab::start("dnslab.sh", &[], &dir.join("dns"), &env);
    let _xmpp = Lab::start("xmpplab.sh", &["prosody"], &dir.join("prosody"), &env);
    let exits: Vec<String> = std::fs::read_to_string(tor.dir.join("nodes"))
        .unwrap()
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("exit"))
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_ascii_lowercase))
        .collect();
    assert_eq!(exits.len(), 3, "the lab's exits");

    let lab = dns.env_file("env");
    let var = |k: &str| lab.iter().find(|(key, _)| key == k).unwrap().1.clone();
    let web = b + 80;
    let sections = format!(
        "[dns]\nnameservers = [\"{}\"]\ntrust_anchor = \"{}\"\n\n[probe]\ntransport = \"direct\"\nlocal = false\ntimeout = \"20s\"\nallow_private = true\n\n[monitor]\ninterval = \"1h\"\njitter = \"1s\"\n\n[web]\nlisten = \"127.0.0.1:{web}\"\n\n[[vantage]]\nname = \"t\"\njid = \"agent-t@localhost\"\nweight = 1\n",
        var("VALIDATING_NS"),
        var("TRUST_ANCHOR"),
    );
    let _bot = common::start_bot(&dir, b + 47, &sections);
    let agent_text = format!(
        "[agent]\njid = \"agent-t@localhost\"\npassword = \"agent-t-pw\"\ncoordinator = \"{COMPONENT}\"\nserver = \"127.0.0.1:{}\"\ntrust_file = \"{}\"\n\n[probe]\ntransport = \"tor\"\narti_config = \"{}\"\ncircuits_per_second = 20.0\ntimeout = \"30s\"\nallow_private = true\n",
        b + 22,
        good.cert.display(),
        common::arti_config(&tor, &dir).display()
    );
    let _agent = start_agent(&dir, "t", &agent_text);
    let mut alice = Client::connect("alice@localhost", "alice-pw", b + 22);
    let mut admin = Client::connect("admin@localhost", "admin-pw", b + 22);
    wait_component(&mut alice);
    eventually(Duration::from_secs(60), "agent t online", || {
        admin
            .poll(COMPONENT, "health", T)
            .contains("\nt: online")
            .then_some(())
    });
    // Every vantage entry of `e`: the agent, over Tor, through a lab exit.
    let by_agent_over_tor = |e: &Value| -> Vec<String> {
        let vantage = e["vantage"].as_array().cloned().unwrap_or_default();
        assert!(!vantage.is_empty(), "{e:#}");
        vantage
            .iter()
            .map(|v| {
                assert_eq!(v["agent"], "t", "{e:#}");
                assert_eq!(v["transport"], "tor", "{e:#}");
                let exit = v["exit"].as_str().unwrap_or_default().to_ascii_lowercase();
                assert!(exits.contains(&exit), "not a lab exit: {e:#}");
                exit
            })
            .collect()
    };

    // The good key, seen through the agent's Tor: ok.
    let sub = alice.ask(COMPONENT, "subscribe twozsk.test", T);
    assert!(sub.starts_with("Subscribed to twozsk.test"), "{sub}");
    let r = eventually(Duration::from_secs(120), "twozsk.test checked", || {
        report(web, "twozsk.test").filter(|r| r["checked_at"].is_string())
    });
    assert_eq!(r["verdict"], "ok", "{r:#}");
    let endpoints = r["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 4, "{r:#}");
    for e in endpoints {
        assert_eq!(e["verdict"], "match", "{e:#}");
        by_agent_over_tor(e);
    }

    // Another key than the records name: an alarm, each mismatch confirmed
    // through a second exit.
    let sub = alice.ask(COMPONENT, "subscribe wrong.test", T);
    assert!(sub.starts_with("Subscribed to wrong.test"), "{sub}");
    let alarm = alice
        .wait_event(Duration::from_secs(120), |v| {
            is_from_bot(v, "ALARM") && is_from_bot(v, "wrong.test")
        })
        .expect("no alarm for wrong.test over the agent's Tor");
    assert!(
        alarm["body"].as_str().unwrap().contains("confirmed"),
        "{alarm}"
    );
    let r = report(web, "wrong.test").expect("wrong.test's report");
    assert_eq!(r["verdict"], "mismatch", "{r:#}");
    for e in r["endpoints"].as_array().unwrap() {
        assert_eq!(e["verdict"], "mismatch", "{e:#}");
        assert_eq!(e["confirmed"], true, "{e:#}");
        let seen = by_agent_over_tor(e);
        assert_eq!(seen.len(), 2, "{e:#}");
        assert_ne!(seen[0], seen[1], "confirmed through the same exit: {e:#}");
    }
}
