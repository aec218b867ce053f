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
        ("EXTRA_HOSTS", HOSTS.into()),
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
    let lab = dns.env_file("env");
    let get = |k: &str| lab.iter().find(|(key, _)| key == k).unwrap().1.clone();

    // arti's own TOML from the lab, plus a fresh state directory for this run.
    let arti = dir.join("arti.toml");
    let base = std::fs::read_to_string(tor.dir.join("arti.toml")).unwrap();
    std::fs::write(
        &arti,
        format!(
            "{base}\n[storage]\nstate_dir = \"{}\"\ncache_dir = \"{}\"\n[storage.permissions]\ndangerously_trust_everyone = true\n",
            dir.join("arti-state").display(),
            dir.join("arti-cache").display()
        ),
    )
    .unwrap();
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
            ("nostarttls.test", 1, "mismatch"),
            ("down.test", 3, "unreachable"),
        ] {
            let (got, json) = check_json(global, domain, &[]);
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
                // STARTTLS and direct TLS, c2s and s2s, all matched over Tor.
                "good.test" => {
                    for s in ["xmpp-client", "xmpps-client", "xmpp-server", "xmpps-server"] {
                        assert!(
                            v.iter()
                                .any(|(svc, a, vd)| svc == s && a == "127.0.0.1" && vd == "match"),
                            "{name}: {s} not matched: {v:?}"
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
