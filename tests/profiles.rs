//! Probe profiles against the real software they imitate: a lab listener
//! (tests/labs/hellolab.py) records the ClientHello (as JA4 and JA3) and
//! the stream headers of whoever connects. Debian's Prosody opens an s2s
//! stream to a domain whose DNS points at the listener; Debian's Profanity
//! (in a tmux session) connects c2s. Then the probes connect under each
//! profile: the imitating profile must look the same, the rustls profile
//! must not (so these tests can fail).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use certwatch::config::ProfileName;
use certwatch::probe::transport::Connector;
use certwatch::probe::{Prober, Profiles, Target};
use certwatch::vocab::{Role, TlsMode};
use common::{assert_isolated, eventually, root, workdir, Proc, TestCert};
use serde_json::Value;

/// The domain the real software and the probes connect to.
const REMOTE: &str = "remote.example";
/// Ports of this binary's labs (nothing else uses them).
const S2S_LAB: u16 = 17269;
const C2S_LAB: u16 = 17222;
const PROSODY_C2S: u16 = 17322;
const PROSODY_S2S: u16 = 17369;

fn hellolab() -> PathBuf {
    root().join("tests/labs/hellolab.py")
}

#[test]
fn ja4_and_ja3_code_matches_the_reference_examples() {
    let out = Command::new("python3")
        .arg(hellolab())
        .arg("selftest")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("12 of 12 checks passed"), "{text}");
}

/// Starts the recording listener on `port` (with DNS for REMOTE on port 53 if asked).
fn listen(dir: &Path, port: u16, cert: &TestCert, dns: bool) -> (Proc, PathBuf) {
    let out = dir.join(format!("hellos-{port}.jsonl"));
    let mut cmd = Command::new("python3");
    cmd.arg(hellolab())
        .arg("listen")
        .arg(port.to_string())
        .arg(&out)
        .arg(&cert.cert)
        .arg(&cert.key);
    if dns {
        cmd.args(["--dns", "53", REMOTE]);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("lab-{port}.log"))).unwrap())
        .spawn()
        .unwrap();
    let proc = Proc(child);
    eventually(Duration::from_secs(10), "the lab listener", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    // The probe of readiness above is a connection too: wait for its record.
    records(&out, 1);
    (proc, out)
}

/// Waits until `out` holds at least `n` records, and returns them.
fn records(out: &Path, n: usize) -> Vec<Value> {
    eventually(Duration::from_secs(30), "lab records", || {
        let text = std::fs::read_to_string(out).ok()?;
        let recs: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (recs.len() >= n).then_some(recs)
    })
}

/// Probes the lab on `port` as `profile`, and returns the lab's record of it.
fn probe(out: &Path, port: u16, role: Role, name: ProfileName, from: Option<&str>) -> Value {
    let before = records(out, 1).len();
    let profiles = match role {
        Role::Server => Profiles::new(name, ProfileName::Rustls),
        Role::Client => Profiles::new(ProfileName::Rustls, name),
    }
    .unwrap();
    let prober = Prober::new(
        Connector::Direct,
        Duration::from_secs(20),
        from.map(str::to_owned),
    )
    .with_profiles(profiles);
    let target = Target {
        addr: ([127, 0, 0, 1], port).into(),
        domain: REMOTE.into(),
        role,
        tls: TlsMode::StartTls,
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let seen = rt
        .block_on(prober.probe_once(&target, deadline, &[]))
        .unwrap_or_else(|e| panic!("{name:?} probe failed: {e}"));
    assert!(!seen.observation.chain.is_empty());
    records(out, before + 1).pop().unwrap()
}

/// A stream header's attributes (name to value) and its quote character.
fn attributes(header: &str) -> (BTreeMap<String, String>, char) {
    let start = header.find("<stream:stream").expect("a stream header") + 14;
    let mut attrs = BTreeMap::new();
    let mut quotes = Vec::new();
    let mut rest = &header[start..];
    while let Some(eq) = rest.find('=') {
        let name = rest[..eq].trim().to_owned();
        let q = rest[eq + 1..].chars().next().unwrap();
        let end = rest[eq + 2..].find(q).unwrap();
        attrs.insert(name, rest[eq + 2..eq + 2 + end].to_owned());
        quotes.push(q);
        rest = &rest[eq + 3 + end..];
    }
    quotes.dedup();
    assert_eq!(quotes.len(), 1, "one quote style in {header}");
    (attrs, quotes[0])
}

/// The parts of a header that are not attributes: the declaration, spacing.
fn skeleton(header: &str) -> String {
    let (attrs, q) = attributes(header);
    let mut s = header.to_owned();
    for (k, v) in attrs {
        s = s.replace(&format!(" {k}={q}{v}{q}"), "");
    }
    s
}

fn show(who: &str, r: &Value) {
    eprintln!(
        "{who}:\n  JA4 {}\n  JA4_r {}\n  JA3 {} ({})\n  header {}\n  starttls {}\n  inside TLS {}",
        r["ja4"], r["ja4_r"], r["ja3"], r["ja3_text"], r["header"], r["starttls"], r["header_tls"]
    );
}

/// The probe looks like `real`: same JA4 and JA3, same header attributes,
/// quoting and skeleton, same `<starttls/>`, same header again inside TLS.
fn assert_alike(real: &Value, probe: &Value, exact_order: bool) {
    assert_eq!(real["ja4"], probe["ja4"], "JA4");
    assert_eq!(real["ja4_r"], probe["ja4_r"], "JA4 raw");
    assert_eq!(
        real["ja3_text"], probe["ja3_text"],
        "JA3 (extension order too)"
    );
    let (rh, ph) = (
        real["header"].as_str().unwrap(),
        probe["header"].as_str().unwrap(),
    );
    assert_eq!(attributes(rh), attributes(ph), "attributes and quoting");
    assert_eq!(skeleton(rh), skeleton(ph));
    if exact_order {
        assert_eq!(rh, ph, "header bytes");
    }
    assert_eq!(real["starttls"], probe["starttls"]);
    let (ri, pi) = (
        real["header_tls"].as_str().unwrap(),
        probe["header_tls"].as_str().unwrap(),
    );
    let (mut ra, rq) = attributes(ri);
    if exact_order {
        // Inside TLS a client adds its JID as `from`: a probe has none to give.
        ra.remove("from");
    }
    assert_eq!((ra, rq), attributes(pi), "header inside TLS");
    assert_eq!(probe["closed_stream"], true, "the probe closes its stream");
}

fn assert_unlike(real: &Value, rustls: &Value) {
    assert_ne!(real["ja4"], rustls["ja4"], "the rustls profile differs");
    assert_ne!(real["ja3"], rustls["ja3"]);
    assert_ne!(
        attributes(real["header"].as_str().unwrap()),
        attributes(rustls["header"].as_str().unwrap())
    );
}

/// Prosody, with s2s, under a mount namespace whose /etc/resolv.conf names
/// the lab's DNS server (Prosody's resolver reads only that file).
fn start_prosody(dir: &Path, cert: &TestCert) -> Proc {
    let cfg = dir.join("prosody.cfg.lua");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(
        &cfg,
        format!(
            r#"run_as_root = true
pidfile = "{d}/prosody.pid"
data_path = "{d}/data"
log = {{ info = "{d}/prosody.log" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {PROSODY_C2S} }}
s2s_ports = {{ {PROSODY_S2S} }}
modules_enabled = {{ "roster"; "saslauth"; "tls"; "dialback"; "disco"; "ping"; "posix"; "admin_shell" }}
ssl = {{ certificate = "{c}"; key = "{k}" }}
VirtualHost "localhost"
"#,
            d = dir.display(),
            c = cert.cert.display(),
            k = cert.key.display()
        ),
    )
    .unwrap();
    let resolv = dir.join("resolv.conf");
    std::fs::write(&resolv, "nameserver 127.0.0.1\n").unwrap();
    let child = Command::new("unshare")
        .args(["--mount", "--", "sh", "-c"])
        .arg(format!(
            "mount --bind {} /etc/resolv.conf && exec prosody --config {} -F",
            resolv.display(),
            cfg.display()
        ))
        .stdout(std::fs::File::create(dir.join("prosody.out")).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let proc = Proc(child);
    eventually(Duration::from_secs(15), "prosody's s2s port", || {
        std::net::TcpStream::connect(("127.0.0.1", PROSODY_S2S)).ok()
    });
    proc
}

#[test]
fn s2s_probes_look_like_prosody() {
    assert_isolated();
    let dir = workdir("profiles-s2s");
    let cert = TestCert::generate(&dir, "lab", &[REMOTE, "localhost"]);
    let (_lab, out) = listen(&dir, S2S_LAB, &cert, true);
    let _prosody = start_prosody(&dir, &cert);
    // An s2s ping from Prosody's host to REMOTE: Prosody looks REMOTE up
    // (SRV to the lab) and opens a stream to it.
    let _ping = Proc(
        Command::new("prosodyctl")
            .arg("--config")
            .arg(dir.join("prosody.cfg.lua"))
            .args(["shell", &format!("xmpp:ping('localhost','{REMOTE}')")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let real = records(&out, 2).pop().unwrap();
    show("Prosody", &real);
    assert!(real["error"].is_null(), "{real}");
    assert!(real["header"].as_str().unwrap().contains("jabber:server"));

    let ours = probe(
        &out,
        S2S_LAB,
        Role::Server,
        ProfileName::Prosody,
        Some("localhost"),
    );
    show("probe, profile prosody", &ours);
    assert_alike(&real, &ours, false);

    let rustls = probe(
        &out,
        S2S_LAB,
        Role::Server,
        ProfileName::Rustls,
        Some("localhost"),
    );
    show("probe, profile rustls", &rustls);
    assert_unlike(&real, &rustls);
}

#[test]
fn c2s_probes_look_like_profanity() {
    assert_isolated();
    let dir = workdir("profiles-c2s");
    let cert = TestCert::generate(&dir, "lab", &[REMOTE]);
    let (_lab, out) = listen(&dir, C2S_LAB, &cert, false);
    let data = dir.join("data/profanity");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(dir.join("config/profanity")).unwrap();
    // An account as `/account add` writes it, auto-connected with -a.
    std::fs::write(
        data.join("accounts"),
        format!(
            "[lab]\nenabled=true\njid=alice@{REMOTE}\nserver=127.0.0.1\nport={C2S_LAB}\n\
             resource=profanity\npassword=alice-pw\n"
        ),
    )
    .unwrap();
    let sock = dir.join("tmux.sock");
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .arg("-S")
            .arg(&sock)
            .args(args)
            .env("HOME", &dir)
            .env("XDG_DATA_HOME", dir.join("data"))
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("TERM", "xterm")
            .status()
            .unwrap()
    };
    assert!(tmux(&[
        "new-session",
        "-d",
        "-x",
        "120",
        "-y",
        "40",
        "profanity -a lab"
    ])
    .success());
    // Profanity asks whether to trust the lab's self-signed certificate:
    // say yes (until it has), so that it also opens its stream inside TLS.
    let real = eventually(Duration::from_secs(30), "profanity's connection", || {
        tmux(&["send-keys", "/tls allow", "Enter"]);
        let recs = std::fs::read_to_string(&out).ok()?;
        let line = recs.lines().nth(1)?;
        Some(serde_json::from_str::<Value>(line).unwrap())
    });
    tmux(&["kill-server"]);
    show("Profanity", &real);
    assert!(real["error"].is_null(), "{real}");

    let ours = probe(&out, C2S_LAB, Role::Client, ProfileName::Profanity, None);
    show("probe, profile profanity", &ours);
    assert_alike(&real, &ours, true);

    let rustls = probe(&out, C2S_LAB, Role::Client, ProfileName::Rustls, None);
    show("probe, profile rustls", &rustls);
    assert_unlike(&real, &rustls);
}

#[test]
fn a_profile_that_cannot_be_used_stops_check_naming_the_key() {
    let dir = workdir("profiles-config");
    for (body, key) in [
        ("c2s_profile = \"prosody\"", "probe.c2s_profile"),
        ("s2s_profile = \"profanity\"", "probe.s2s_profile"),
        ("s2s_profile = \"openfire\"", "s2s_profile"),
    ] {
        let cfg = dir.join("certwatch.toml");
        std::fs::write(&cfg, format!("[probe]\ntransport = \"direct\"\n{body}\n")).unwrap();
        let out = common::certwatch()
            .arg("--config")
            .arg(&cfg)
            .args(["check", "example.org"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{body}: {err}");
        assert!(err.contains(key), "{body}: {err}");
    }
}

#[test]
fn a_profile_the_local_openssl_cannot_handshake_with_stops_check() {
    // A local policy leaving no protocol the profiles accept (as a crypto
    // policy or openssl.cnf can): every probe would fail, so the start-up
    // handshake stops `check` (78) naming the key, instead of every server
    // looking unreachable.
    let dir = workdir("profiles-openssl-conf");
    let conf = dir.join("openssl.cnf");
    std::fs::write(
        &conf,
        "openssl_conf = conf
[conf]
ssl_conf = ssl
[ssl]
system_default = sys
         [sys]
MaxProtocol = TLSv1.1
",
    )
    .unwrap();
    for (body, key) in [
        ("", "probe.s2s_profile = \"prosody\""),
        (
            "s2s_profile = \"rustls\"",
            "probe.c2s_profile = \"profanity\"",
        ),
    ] {
        let cfg = dir.join("certwatch.toml");
        std::fs::write(&cfg, format!("[probe]\ntransport = \"direct\"\n{body}\n")).unwrap();
        let out = common::certwatch()
            .env("OPENSSL_CONF", &conf)
            .arg("--config")
            .arg(&cfg)
            .args(["check", "example.org"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{body}: {err}");
        assert!(err.contains(key), "{body}: {err}");
        assert!(err.contains("cannot handshake"), "{body}: {err}");
    }
    // The same configuration without that policy gets past start-up (and
    // then fails to resolve in the namespace: exit 3, not 78).
    let out = common::certwatch()
        .arg("--config")
        .arg(dir.join("certwatch.toml"))
        .args(["check", "example.org"])
        .output()
        .unwrap();
    assert_ne!(
        out.status.code(),
        Some(78),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Probes a real server under every profile of `role`, and returns the leaf's SPKI seen by each.
fn spki_under_profiles(port: u16, domain: &str, role: Role, tls: TlsMode) -> Vec<String> {
    let names = match role {
        Role::Server => [ProfileName::Prosody, ProfileName::Rustls],
        Role::Client => [ProfileName::Profanity, ProfileName::Rustls],
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    names
        .iter()
        .map(|&name| {
            let profiles = match role {
                Role::Server => Profiles::new(name, ProfileName::Rustls),
                Role::Client => Profiles::new(ProfileName::Rustls, name),
            }
            .unwrap();
            let prober = Prober::new(
                Connector::Direct,
                Duration::from_secs(20),
                Some("probe.example".into()),
            )
            .with_profiles(profiles);
            let target = Target {
                addr: ([127, 0, 0, 1], port).into(),
                domain: domain.into(),
                role,
                tls,
            };
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            let seen = rt
                .block_on(prober.probe_once(&target, deadline, &[]))
                .unwrap_or_else(|e| panic!("{name:?} {role:?} {tls:?} on {port}: {e}"));
            eprintln!(
                "{name:?} {role:?} {tls:?} on {port}: {} {} alpn {:?}",
                seen.observation.version, seen.observation.cipher, seen.observation.alpn
            );
            hex::encode(certwatch::dane::spki_sha256(&seen.observation.chain[0]).unwrap())
        })
        .collect()
}

#[test]
fn every_profile_sees_the_key_of_real_prosody_and_ejabberd() {
    assert_isolated();
    let dir = workdir("profiles-servers");
    let cert = TestCert::generate(&dir, "srv", &["localhost"]);
    let env = |base: u16| -> Vec<(&'static str, String)> {
        vec![
            ("C2S_PORT", base.to_string()),
            ("C2S_TLS_PORT", (base + 1).to_string()),
            ("S2S_PORT", (base + 2).to_string()),
            ("S2S_TLS_PORT", (base + 3).to_string()),
            ("COMPONENT_PORT", (base + 4).to_string()),
            ("TLS_CERT", cert.cert.display().to_string()),
            ("TLS_KEY", cert.key.display().to_string()),
        ]
    };
    let prosody = common::Lab::start(
        "xmpplab.sh",
        &["prosody"],
        &dir.join("prosody"),
        &env(17400),
    );
    for (port, role, tls) in [
        (17400, Role::Client, TlsMode::StartTls),
        (17401, Role::Client, TlsMode::Direct),
        (17402, Role::Server, TlsMode::StartTls),
        (17403, Role::Server, TlsMode::Direct),
    ] {
        for spki in spki_under_profiles(port, "localhost", role, tls) {
            assert_eq!(spki, cert.spki, "Prosody {role:?} {tls:?}");
        }
    }
    drop(prosody);
    // ejabberd makes its own certificate (it refuses rcgen's far validity
    // dates): every profile must see the same key.
    let mut with_starttls: Vec<(&str, String)> = env(17500)
        .into_iter()
        .filter(|(k, _)| !k.starts_with("TLS_"))
        .collect();
    with_starttls.push(("EJABBERD_STARTTLS", "1".into()));
    let ejabberd = common::Lab::start(
        "xmpplab.sh",
        &["ejabberd"],
        &dir.join("ejabberd"),
        &with_starttls,
    );
    let seen = spki_under_profiles(17500, "localhost", Role::Client, TlsMode::StartTls);
    assert_eq!(
        seen[0], seen[1],
        "ejabberd c2s: the same key under every profile"
    );
    drop(ejabberd);
}
