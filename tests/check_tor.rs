//! `certwatch check` over a private Tor network of our own (Debian tor
//! authorities, relays and exits on 127.0.0.1), embedded arti and SOCKS5,
//! against the DNSSEC lab and a real Prosody. Runs only in a network
//! namespace with nothing but `lo`.

mod common;

use common::{
    assert_isolated, check_json, no_starttls_server, root, workdir, Lab, TestCert, C2S, C2S_TLS,
    DOWN, HOSTS, NOSTARTTLS, S2S, S2S_TLS,
};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// The port of sixmitm.test's xmpps-client endpoint (A 127.0.0.1, AAAA ::1).
const SIXMITM: u16 = 15996;
/// The port of sixmitm.test's xmpp-server endpoint, which every exit refuses.
const EXITREFUSED: u16 = 15995;

/// The port where half of many.test's targets hold connections open silently.
const TARPIT: u16 = 15994;

/// Accepts connections on `listen` and never says a word (nor closes them).
fn tarpit(listen: SocketAddr) {
    let listener = TcpListener::bind(listen).expect("bind the tarpit");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
}

/// many.test publishes 96 endpoints, half of them silent tarpits: a check
/// probes the first 32 and lists the rest as not probed; with every one
/// allowed, it still ends at its deadline (4 x probe.timeout), the ones it
/// could not reach in time listed as such, and no tarpit passes for a match.
fn many_targets_end_within_the_deadline(dir: &std::path::Path, over_tor: &[String]) {
    tarpit(SocketAddr::from(([127, 0, 0, 1], TARPIT)));
    tarpit(SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, TARPIT)));
    for (max, timeout) in [(32, 6), (96, 6)] {
        let config = dir.join(format!("many-{max}.toml"));
        std::fs::write(
            &config,
            format!("[probe]\ntimeout = \"{timeout}s\"\nmax_endpoints = {max}\n"),
        )
        .unwrap();
        let mut global = vec!["--config".to_string(), config.display().to_string()];
        global.extend(over_tor.iter().cloned());
        let started = std::time::Instant::now();
        let (got, json) = check_json(&global, "many.test", &[]);
        let took = started.elapsed();
        let deadline = Duration::from_secs(4 * timeout);
        let endpoints = json["endpoints"].as_array().cloned().unwrap_or_default();
        let error_of = |e: &Value| e["error"].as_str().unwrap_or_default().to_owned();
        let capped = endpoints
            .iter()
            .filter(|e| error_of(e).starts_with("not probed: the domain publishes 96 endpoints"))
            .count();
        let late = endpoints
            .iter()
            .filter(|e| error_of(e).starts_with("not probed: the check's deadline of"))
            .count();
        let matched = endpoints.iter().filter(|e| e["verdict"] == "match").count();
        println!(
            "many.test, max_endpoints {max}, timeout {timeout}s: exit {got} in {took:.1?}, {} endpoints, {matched} match, {capped} over the cap, {late} past the deadline",
            endpoints.len()
        );
        let mut seen = std::collections::BTreeMap::new();
        for e in &endpoints {
            let what = format!(
                "{} {} {}",
                if e["port"] == TARPIT {
                    "tarpit"
                } else {
                    "server"
                },
                e["verdict"].as_str().unwrap_or("?"),
                error_of(e).chars().take(60).collect::<String>()
            );
            *seen.entry(what).or_insert(0) += 1;
        }
        println!("many.test, max_endpoints {max}: {seen:#?}");
        assert_eq!(endpoints.len(), 96, "every endpoint is listed: {json:#}");
        assert_ne!(json["verdict"], "mismatch", "{json:#}");
        // Every tarpit endpoint is unreachable or not probed, never a match.
        for e in &endpoints {
            if e["port"] == TARPIT {
                assert_ne!(e["verdict"], "match", "{e}");
            }
        }
        assert!(matched > 0, "the good half was probed: {json:#}");
        if max == 32 {
            assert_eq!(capped, 64, "{json:#}");
        } else {
            assert_eq!(capped, 0, "{json:#}");
            assert!(late > 0, "the deadline cut some probes short: {json:#}");
            // Bounded: the deadline, plus starting Tor and DNS; a hang
            // would take 48 tarpits x 6 s.
            assert!(
                took < deadline + Duration::from_secs(60),
                "took {took:?} for a deadline of {deadline:?}"
            );
        }
    }
}

/// Relays every connection to `listen` on to `to` (e.g. [::1] to 127.0.0.1),
/// so one real server answers on both address families.
fn forward(listen: SocketAddr, to: SocketAddr) {
    let listener = TcpListener::bind(listen).expect("bind the forwarder");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut a) = conn else { continue };
            std::thread::spawn(move || {
                let Ok(mut b) = TcpStream::connect(to) else {
                    return;
                };
                let (mut a2, mut b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
                let up = std::thread::spawn(move || {
                    let _ = std::io::copy(&mut a2, &mut b2);
                    let _ = b2.shutdown(Shutdown::Write);
                });
                let _ = std::io::copy(&mut b, &mut a);
                let _ = a.shutdown(Shutdown::Write);
                let _ = up.join();
            });
        }
    });
}

/// An interceptor: a direct-TLS server on `listen` presenting a key of its
/// own (not the one the TLSA records name).
fn intercepting_tls_server(listen: SocketAddr, name: &str) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind(listen).expect("bind the interceptor");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(sock) = conn else { continue };
            let config = config.clone();
            std::thread::spawn(move || {
                let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, sock);
                // Reading drives the handshake; the prober then closes.
                let mut buf = [0u8; 64];
                let _ = tls.read(&mut buf);
                let _ = tls.flush();
            });
        }
    });
}

/// The endpoint of `service` at `address`.
fn endpoint<'a>(json: &'a Value, service: &str, address: &str) -> &'a Value {
    json["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["service"] == service && e["address"] == address)
        .unwrap_or_else(|| panic!("no {service} endpoint at {address}: {json:#}"))
}

/// The vantage of a confirmed mismatch: two probes, both saw a key; over
/// Tor each names its exit, and the two exits differ.
fn assert_confirmed_elsewhere(name: &str, e: &Value) {
    assert_eq!(e["verdict"], "mismatch", "{name}: {e:#}");
    assert_eq!(e["confirmed"], true, "{name}: {e:#}");
    let vantage = e["vantage"].as_array().expect("vantage");
    assert_eq!(vantage.len(), 2, "{name}: {e:#}");
    for v in vantage {
        assert_eq!(v["transport"], name, "{e:#}");
        assert_eq!(v["spki_sha256"].as_str().unwrap().len(), 64, "{e:#}");
    }
    if name == "tor" {
        let exits: Vec<&str> = vantage
            .iter()
            .map(|v| v["exit"].as_str().expect("an exit fingerprint"))
            .collect();
        assert!(exits.iter().all(|x| x.len() == 40), "{exits:?}");
        assert_ne!(exits[0], exits[1], "confirmed through the same exit: {e:#}");
    } else {
        assert!(
            vantage.iter().all(|v| v.get("exit").is_none()),
            "{name} cannot name its exit: {e:#}"
        );
    }
}

fn verdicts(json: &Value) -> Vec<(String, String, String)> {
    json["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["service"].as_str().unwrap().to_owned(),
                e["address"].as_str().unwrap_or("-").to_owned(),
                e["verdict"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn checks_over_our_own_tor_network() {
    assert_isolated();
    let dir = workdir("check-tor");
    let good = TestCert::generate(&dir, "good", &["good.test"]);
    let other = TestCert::generate(&dir, "other", &["other.test"]);
    let env: Vec<(&str, String)> = vec![
        ("C2S_PORT", C2S.to_string()),
        ("C2S_TLS_PORT", C2S_TLS.to_string()),
        ("S2S_PORT", S2S.to_string()),
        ("S2S_TLS_PORT", S2S_TLS.to_string()),
        ("NOSTARTTLS_PORT", NOSTARTTLS.to_string()),
        ("DOWN_PORT", DOWN.to_string()),
        ("COMPONENT_PORT", "15247".into()),
        ("GOOD_SPKI", good.spki.clone()),
        ("OTHER_SPKI", other.spki.clone()),
        ("DNSLAB_ADDR_BASE", "127.53.0".into()),
        ("TLS_CERT", good.cert.display().to_string()),
        ("TLS_KEY", good.key.display().to_string()),
        ("SIXMITM_PORT", SIXMITM.to_string()),
        ("EXITREFUSED_PORT", EXITREFUSED.to_string()),
        ("TORNET_REJECT_PORT", EXITREFUSED.to_string()),
        // One exit refuses good.test's c2s port on ::1: a probe that meets
        // it must be tried again through another exit.
        ("TORNET_R1_REJECT6_PORT", C2S.to_string()),
        ("EXTRA_HOSTS", format!("{HOSTS} sixmitm.test many.test")),
        ("TARPIT_PORT", TARPIT.to_string()),
        ("TORNET_PORT_BASE", "17000".into()),
        (
            "TORNET_KEYCACHE",
            root().join("target/tornet-keys").display().to_string(),
        ),
        ("TORNET_OWNER_PID", std::process::id().to_string()),
    ];
    let tor = Lab::start("tornet.sh", &[], &dir.join("tor"), &env);
    let dns = Lab::start("dnslab.sh", &[], &dir.join("dns"), &env);
    let _xmpp = Lab::start("xmpplab.sh", &["prosody"], &dir.join("prosody"), &env);
    no_starttls_server(NOSTARTTLS);
    // good.test's AAAA ::1: the same Prosody answers there, for every service.
    for port in [C2S, C2S_TLS, S2S, S2S_TLS] {
        forward(
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
            SocketAddr::from(([127, 0, 0, 1], port)),
        );
    }
    // sixmitm.test: the real server on 127.0.0.1, an interceptor on ::1 alone.
    forward(
        SocketAddr::from(([127, 0, 0, 1], SIXMITM)),
        SocketAddr::from(([127, 0, 0, 1], C2S_TLS)),
    );
    intercepting_tls_server(
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, SIXMITM)),
        "sixmitm.test",
    );
    let lab = dns.env_file("env");
    let get = |k: &str| lab.iter().find(|(key, _)| key == k).unwrap().1.clone();

    // arti's own TOML from the lab, plus a fresh state directory for this run.
    let arti = common::arti_config(&tor, &dir);
    // r1's RSA fingerprint, from the lab's node list.
    let r1 = std::fs::read_to_string(tor.dir.join("nodes"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("r1 "))
        .and_then(|l| l.split_whitespace().nth(3))
        .expect("r1 in the node list")
        .to_owned();
    let socks = std::fs::read_to_string(tor.dir.join("socks5"))
        .unwrap()
        .trim()
        .to_owned();
    let dns_args = vec![
        "--nameserver".to_string(),
        get("AUTH_NS"),
        "--trust-anchor".into(),
        get("TRUST_ANCHOR"),
        // The lab's servers (and Tor network) live on loopback addresses.
        "--allow-private".into(),
    ];
    let mut over_tor = dns_args.clone();
    over_tor.extend([
        "--transport".into(),
        "tor".into(),
        "--arti-config".into(),
        arti.display().to_string(),
    ]);
    let mut over_socks = dns_args.clone();
    over_socks.extend([
        "--transport".into(),
        "socks5".into(),
        "--socks5".into(),
        socks,
    ]);

    let mut failures = Vec::new();
    for (name, global) in [("tor", &over_tor), ("socks5", &over_socks)] {
        for (domain, code, verdict) in [
            ("good.test", 0, "ok"),
            ("wrong.test", 1, "mismatch"),
            ("sixmitm.test", 1, "mismatch"),
            ("nostarttls.test", 1, "mismatch"),
            ("down.test", 3, "unreachable"),
        ] {
            // tor's SOCKS port keeps retrying a port every exit refuses until
            // the probe times out: its s2s endpoint is only checked over arti.
            let only_client: &[&str] = if name == "socks5" && domain == "sixmitm.test" {
                &["--service", "client"]
            } else {
                &[]
            };
            let started = std::time::Instant::now();
            let (got, json) = check_json(global, domain, only_client);
            // A figure for the log, not an assertion.
            println!("{name} {domain}: {got} in {:.1?}", started.elapsed());
            if got != code || json["verdict"] != verdict {
                failures.push(format!(
                    "{name} {domain}: want {verdict}/{code}, got {}/{got}: {json:#}",
                    json["verdict"]
                ));
                continue;
            }
            assert_eq!(json["transport"], name);
            let v = verdicts(&json);
            match domain {
                // STARTTLS and direct TLS, c2s and s2s, IPv4 and IPv6,
                // all matched over Tor.
                "good.test" => {
                    for s in ["xmpp-client", "xmpps-client", "xmpp-server", "xmpps-server"] {
                        for a in ["127.0.0.1", "::1"] {
                            assert!(
                                v.iter()
                                    .any(|(svc, addr, vd)| svc == s && addr == a && vd == "match"),
                                "{name}: {s} at {a} not matched: {v:?}"
                            );
                        }
                    }
                    if name == "tor" {
                        let e = endpoint(&json, "xmpp-client", "::1");
                        let exit = e["vantage"][0]["exit"].as_str().unwrap_or_default();
                        assert_eq!(exit.len(), 40, "the exit of the ::1 probe: {e:#}");
                        assert!(
                            !exit.eq_ignore_ascii_case(&r1),
                            "r1 refuses [::1]:{C2S}, yet carried it: {e:#}"
                        );
                    }
                }
                // The interceptor on the IPv6 address alone is seen, next to
                // the real server on the IPv4 one.
                "sixmitm.test" => {
                    assert_eq!(
                        endpoint(&json, "xmpps-client", "127.0.0.1")["verdict"],
                        "match",
                        "{name}: {json:#}"
                    );
                    assert_confirmed_elsewhere(name, endpoint(&json, "xmpps-client", "::1"));
                    // Every exit refuses this port by its policy: the
                    // exits' refusal, not the server's and not our Tor's.
                    let s2s = if name == "tor" {
                        &["127.0.0.1", "::1"][..]
                    } else {
                        &[]
                    };
                    for a in s2s {
                        let e = endpoint(&json, "xmpp-server", a);
                        assert_eq!(e["verdict"], "unreachable", "{name}: {e:#}");
                        let error = e["error"].as_str().unwrap_or_default();
                        assert!(
                            error.starts_with("no Tor exit would carry"),
                            "{name}: {e:#}"
                        );
                        assert!(
                            error.contains("refused by the exit policy"),
                            "{name}: {e:#}"
                        );
                    }
                }
                "wrong.test" => {
                    for s in ["xmpp-client", "xmpps-client", "xmpp-server", "xmpps-server"] {
                        assert!(
                            v.iter().any(|(svc, a, vd)| svc == s
                                && a == "127.0.0.1"
                                && vd == "mismatch"),
                            "{name}: {s} not a mismatch: {v:?}"
                        );
                    }
                    // Each mismatch was confirmed through a second exit.
                    for s in ["xmpp-client", "xmpps-client", "xmpp-server", "xmpps-server"] {
                        assert_confirmed_elsewhere(name, endpoint(&json, s, "127.0.0.1"));
                    }
                }
                "nostarttls.test" => assert!(
                    v.iter().any(|(_, _, vd)| vd == "starttls_missing"),
                    "{name}: {v:?}"
                ),
                // Refused, as the exit saw it. tor's SOCKS port answers a
                // refused connection with "general failure", which is also
                // its answer when it has no circuit: with no other
                // connection carried lately, that is taken as ours.
                _ if name == "socks5" => {
                    assert!(
                        v.iter().all(|(_, _, vd)| vd == "not_checked"),
                        "{name}: {v:?}"
                    );
                    assert!(json["errors"].to_string().contains("general failure"));
                }
                _ => assert!(
                    v.iter().all(|(_, _, vd)| vd == "unreachable"),
                    "{name}: {v:?}"
                ),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));

    many_targets_end_within_the_deadline(&dir, &over_tor);

    // Our own Tor broken: the whole network stopped (arti keeps its cached
    // directory, so it starts, but builds no circuit; the SOCKS5 proxy is
    // gone). "Could not check" (exit 3), every endpoint not_checked and
    // none unreachable, and the report says it is our Tor or proxy.
    tor.run("stop");
    // A short probe timeout: arti's circuit budget is half of it.
    let short = dir.join("short.toml");
    std::fs::write(&short, "[probe]\ntimeout = \"8s\"\n").unwrap();
    let with_short = |global: &[String]| {
        let mut g = vec!["--config".to_string(), short.display().to_string()];
        g.extend(global.iter().cloned());
        g
    };
    for (name, global, words) in [
        ("tor", with_short(&over_tor), "our own Tor client failed"),
        (
            "socks5",
            with_short(&over_socks),
            "our own SOCKS5 proxy failed",
        ),
    ] {
        let (got, json) = check_json(&global, "good.test", &[]);
        assert_eq!(got, 3, "{name}: {json:#}");
        assert_eq!(json["verdict"], "unreachable", "{name}: {json:#}");
        let v = verdicts(&json);
        assert_eq!(v.len(), 8, "{name}: {v:?}");
        assert!(
            v.iter().all(|(_, _, vd)| vd == "not_checked"),
            "{name}: {v:?}"
        );
        let errors = json["errors"].to_string();
        assert!(errors.contains(words), "{name}: {errors}");
        assert!(errors.contains("Try:"), "{name}: {errors}");
        let out = common::certwatch()
            .args(global.iter())
            .args(["check", "good.test"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.starts_with("good.test: could not check, our "),
            "{name}: {text}"
        );
        assert!(!text.contains("unreachable"), "{name}: {text}");
    }
}
