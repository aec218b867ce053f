//! `certwatch check` against a real DNSSEC-signed lab (NSD + unbound) and a
//! real Prosody presenting a test key, over the direct transport.

mod common;

use common::{
    certwatch, check_json, no_starttls_server, workdir, Lab, TestCert, C2S, C2S_TLS, DOWN, HOSTS,
    NOSTARTTLS, S2S, S2S_TLS,
};
use std::time::Duration;

use serde_json::Value;

fn endpoints(json: &Value) -> &Vec<Value> {
    json["endpoints"].as_array().expect("endpoints array")
}

/// The global options that point a check at a lab resolver and its trust
/// anchor, probing directly (the lab lives on loopback addresses).
fn lab_flags(ns: &str, anchor: &str) -> Vec<String> {
    [
        "--nameserver",
        ns,
        "--trust-anchor",
        anchor,
        "--transport",
        "direct",
        "--allow-private",
    ]
    .map(String::from)
    .to_vec()
}

fn verdicts_of(json: &Value, service: &str) -> Vec<String> {
    endpoints(json)
        .iter()
        .filter(|e| e["service"] == service)
        .map(|e| e["verdict"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn dnssec_lab_verdicts_advice_and_tlsa_command() {
    let dir = workdir("check-dns");
    let good = TestCert::generate(&dir, "good", &["good.test", "xmpp.good.test"]);
    let other = TestCert::generate(&dir, "other", &["other.test"]);
    let ports = [
        ("C2S_PORT", C2S),
        ("C2S_TLS_PORT", C2S_TLS),
        ("S2S_PORT", S2S),
        ("S2S_TLS_PORT", S2S_TLS),
        ("NOSTARTTLS_PORT", NOSTARTTLS),
        ("DOWN_PORT", DOWN),
        ("COMPONENT_PORT", 15247),
    ];
    let mut env: Vec<(&str, String)> = ports.iter().map(|(k, v)| (*k, v.to_string())).collect();
    env.push(("GOOD_SPKI", good.spki.clone()));
    env.push(("OTHER_SPKI", other.spki.clone()));
    env.push(("DNSLAB_ADDR_BASE", "127.53.0".into()));
    env.push(("TLS_CERT", good.cert.display().to_string()));
    env.push(("TLS_KEY", good.key.display().to_string()));
    env.push(("EXTRA_HOSTS", HOSTS.into()));
    env.push(("BENCH_DOMAINS", "10".into()));
    let dns = Lab::start("dnslab.sh", &[], &dir.join("dns"), &env);
    let _xmpp = Lab::start("xmpplab.sh", &["prosody"], &dir.join("prosody"), &env);
    no_starttls_server(NOSTARTTLS);
    let lab_env = dns.env_file("env");
    let get = |k: &str| {
        lab_env
            .iter()
            .find(|(key, _)| key == k)
            .unwrap_or_else(|| panic!("{k} missing from the lab env"))
            .1
            .clone()
    };
    let global = |ns: &str| lab_flags(ns, &get("TRUST_ANCHOR"));
    let auth = global(&get("AUTH_NS"));

    // One DNSKEY (and DS) fetch per zone per check, however many RRsets the
    // validator checks with it: every (name, type) went upstream once.
    for ns in ["AUTH_NS", "RESOLVER_NS", "VALIDATING_NS"] {
        let resolver = certwatch::dns::Resolver::new(&certwatch::dns::ResolverSettings {
            nameservers: vec![get(ns).parse().unwrap()],
            trust_anchor: Some(get("TRUST_ANCHOR").into()),
            timeout: None,
            clock: None,
        })
        .unwrap();
        let domain = certwatch::domain::Domain::parse("good.test").unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let found = runtime.block_on(certwatch::dns::discovery::discover(
            &resolver,
            &domain,
            &certwatch::vocab::ServiceSet::All.services(),
        ));
        assert!(found.failures.is_empty(), "{ns}: {:?}", found.failures);
        let (asks, fetches, distinct) = resolver.key_fetches();
        eprintln!(
            "{ns}: the validator asked {asks} times for DNSKEY/DS; {fetches} fetches for {distinct} (name, type) pairs"
        );
        // The root, test. and good.test. DNSKEY; the DS of test. and good.test.
        assert!(distinct >= 5, "{ns}: {distinct}");
        assert_eq!(fetches, distinct, "{ns}: a DNSKEY or DS fetched twice");
    }

    // (domain, exit code, verdict) straight from the authoritative server.
    let table: &[(&str, i32, &str)] = &[
        ("good.test", 0, "ok"),
        ("rollover.test", 0, "ok"),
        ("shared.test", 0, "ok"),
        ("cname.test", 0, "ok"),
        ("dot.test", 0, "ok"),
        ("wrong.test", 1, "mismatch"),
        ("nostarttls.test", 1, "mismatch"),
        ("expired.test", 1, "bogus"),
        ("badsig.test", 1, "bogus"),
        ("badds.test", 1, "bogus"),
        ("dsunsigned.test", 1, "bogus"),
        ("notlsa.test", 2, "no_tlsa"),
        ("nsec.test", 2, "no_tlsa"),
        ("nosrv.test", 3, "unreachable"),
        ("unsigned.test", 2, "insecure"),
        ("cnameinsecure.test", 2, "insecure"),
        ("down.test", 3, "unreachable"),
        ("d7.bench.test", 0, "ok"),
        // Signed twice over (two ZSKs, two algorithms): as secure as once.
        ("twozsk.test", 0, "ok"),
        ("twoalg.test", 0, "ok"),
        // Two KSKs, a DS for one only, and a DS for a key not published.
        ("twoksk.test", 0, "ok"),
        // A forged direct-TLS SRV next to a good STARTTLS one.
        ("bogusdirect.test", 1, "bogus"),
        // Nine signed CNAME links to the TLSA: valid, as unbound and delv say.
        ("longcname.test", 0, "ok"),
    ];
    let mut failures = Vec::new();
    let mut reports = std::collections::HashMap::new();
    for (domain, code, verdict) in table {
        let (got_code, json) = check_json(&auth, domain, &[]);
        if got_code != *code || json["verdict"] != *verdict {
            failures.push(format!(
                "{domain}: want {verdict}/{code}, got {}/{got_code}\n{}",
                json["verdict"],
                serde_json::to_string_pretty(&json).unwrap()
            ));
        }
        reports.insert(*domain, json);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));

    // A KSK rollover half done is noted, never an alarm: the DS of a key
    // the zone does not publish, and a KSK with no DS at the parent yet.
    let ksk_notes = |domain: &str| -> Vec<(String, String)> {
        reports[domain]["rollover"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|n| n["kind"].as_str().is_some_and(|k| k.contains("ds")))
                    .map(|n| {
                        (
                            n["kind"].as_str().unwrap().to_owned(),
                            n["name"].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut two = ksk_notes("twoksk.test");
    two.sort();
    assert_eq!(
        two,
        [
            ("ds_pre_published".to_owned(), "twoksk.test".to_owned()),
            ("ksk_without_ds".to_owned(), "twoksk.test".to_owned())
        ],
        "{:#}",
        reports["twoksk.test"]
    );
    let twoksk = &reports["twoksk.test"]["rollover"];
    let texts = twoksk.to_string();
    assert!(
        texts.contains("a key with no DS at the parent yet"),
        "{twoksk:#}"
    );
    assert!(
        texts.contains("or the leftover of a retired key"),
        "{twoksk:#}"
    );
    // One KSK and its DS (good.test), two algorithms each with its DS
    // (twoalg.test): nothing to note. The TLD and the root are never looked
    // at (not the admin's keys).
    assert_eq!(ksk_notes("good.test"), []);
    assert_eq!(ksk_notes("twoalg.test"), []);

    // Every service, target, port and address is an endpoint; hex is lowercase.
    let g = &reports["good.test"];
    for service in ["xmpp-client", "xmpps-client", "xmpp-server", "xmpps-server"] {
        let v = verdicts_of(g, service);
        assert!(v.contains(&"match".to_string()), "{service}: {v:?}");
    }
    let e = endpoints(g)
        .iter()
        .find(|e| e["service"] == "xmpps-client" && e["address"] == "127.0.0.1")
        .expect("direct TLS c2s endpoint");
    assert_eq!(e["port"], C2S_TLS);
    assert_eq!(e["host"], "xmpp.good.test");
    assert_eq!(e["tls"], "direct");
    assert_eq!(e["spki_sha256"], good.spki.as_str());
    assert_eq!(e["matched"], format!("3 1 1 {}", good.spki));
    assert_eq!(e["tlsa"][0], format!("3 1 1 {}", good.spki));
    assert!(
        endpoints(g).iter().any(|e| e["address"] == "::1"),
        "AAAA endpoints are listed"
    );
    assert!(g["checked_at"].as_str().unwrap().ends_with('Z'));

    // A mismatch shows the key seen and the records, and never suggests adding the seen key.
    let w = &reports["wrong.test"];
    let m = endpoints(w)
        .iter()
        .find(|e| e["verdict"] == "mismatch")
        .unwrap();
    assert_eq!(m["spki_sha256"], good.spki.as_str());
    assert_eq!(m["tlsa"][0], format!("3 1 1 {}", other.spki));
    assert!(w["records_to_add"].as_array().unwrap().is_empty());

    // STARTTLS stripped where TLSA requires TLS is its own finding.
    assert_eq!(
        verdicts_of(&reports["nostarttls.test"], "xmpp-client")[0],
        "starttls_missing"
    );

    // Signed but no TLSA: the exact zone-file lines, from the key seen.
    let n = &reports["notlsa.test"];
    let lines: Vec<&str> = n["records_to_add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let want = format!("_{C2S}._tcp.xmpp.notlsa.test. IN TLSA 3 1 1 {}", good.spki);
    assert!(lines.contains(&want.as_str()), "{lines:?}");
    let advice = n["advice"].to_string();
    assert!(
        advice.contains("--reuse-key") && advice.contains("additive"),
        "{advice}"
    );

    // No SRV: fallback to the domain on 5222, and advice to publish SRV.
    let s = &reports["nosrv.test"];
    assert!(endpoints(s)
        .iter()
        .any(|e| e["host"] == "nosrv.test" && e["port"] == 5222));
    assert!(
        s["advice"].to_string().contains("publish SRV records"),
        "{}",
        s["advice"]
    );

    // Unsigned zone: which zone to sign.
    let u = &reports["unsigned.test"];
    assert!(
        u["advice"]
            .to_string()
            .contains("First sign the zone unsigned.test"),
        "{}",
        u["advice"]
    );
    assert!(!u["records_to_add"].as_array().unwrap().is_empty());

    // A domain that does not exist says so, and advises nothing.
    let (code, nx) = check_json(&auth, "nonexistent.test", &[]);
    assert_eq!(code, 3, "{nx:#}");
    assert_eq!(nx["nxdomain"], true, "{nx:#}");
    assert_eq!(nx["advice"], serde_json::json!([]), "{nx:#}");
    let out = certwatch()
        .args(&auth)
        .args(["check", "bücher.example"])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("bücher.example (xn--bcher-kva.example) does not exist (NXDOMAIN)"),
        "{text}"
    );
    assert!(
        !text.contains("Problems") && !text.contains("SRV"),
        "{text}"
    );
    assert_eq!(out.status.code(), Some(3));

    // The same verdict through every resolver path: straight from NSD,
    // through an iterating unbound that passes bogus data on (QNAME
    // minimisation puts NSEC3 records in authority sections, which makes
    // hickory call a valid CNAME answer bogus: worked around), and through a
    // validating unbound, which would answer bogus data with SERVFAIL if we
    // did not ask with CD=1 and validate ourselves.
    let recursive = global(&get("RESOLVER_NS"));
    let validating = global(&get("VALIDATING_NS"));
    let every_path = [
        ("good.test", 0, "ok"),
        ("cname.test", 0, "ok"),
        ("wrong.test", 1, "mismatch"),
        ("expired.test", 1, "bogus"),
        ("badsig.test", 1, "bogus"),
        ("badds.test", 1, "bogus"),
        ("dsunsigned.test", 1, "bogus"),
        ("unsigned.test", 2, "insecure"),
        ("twozsk.test", 0, "ok"),
        ("twoalg.test", 0, "ok"),
        ("bogusdirect.test", 1, "bogus"),
        ("longcname.test", 0, "ok"),
    ];
    for (path, flags) in [
        ("iterating unbound", &recursive),
        ("validating unbound", &validating),
    ] {
        for (domain, code, verdict) in every_path {
            let (got, json) = check_json(flags, domain, &[]);
            if got != code || json["verdict"] != verdict {
                failures.push(format!(
                    "{domain} via {path}: want {verdict}/{code}, got {}/{got}\n{json:#}",
                    json["verdict"]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));

    // Each bogus case says why, through every resolver path.
    let reasons = [
        ("expired.test", "expired on 2020-02-01"),
        ("badds.test", "match none of its DNSKEY records"),
        ("dsunsigned.test", "publishes no DNSKEY"),
        ("badsig.test", "does not verify"),
        ("bogusdirect.test", "does not verify"),
    ];
    for flags in [&auth, &recursive, &validating] {
        for (domain, why) in reasons {
            let (_, json) = check_json(flags, domain, &[]);
            assert!(
                json.to_string().contains(why),
                "{domain}: want {why:?}: {json:#}"
            );
        }
    }

    // The forged direct-TLS SRV is named, and the good STARTTLS endpoint still matches.
    let b = &reports["bogusdirect.test"];
    assert!(
        b["bogus_rrsets"]
            .to_string()
            .contains("_xmpps-client._tcp.bogusdirect.test"),
        "{b:#}"
    );
    assert_eq!(verdicts_of(b, "xmpp-client"), vec!["match"], "{b:#}");
    // Forty CNAME links: more than anyone follows; never an alarm, on any path.
    for flags in [&auth, &recursive, &validating] {
        let (code, t) = check_json(flags, "toolongcname.test", &["--service", "client"]);
        assert_eq!(code, 3, "{t:#}");
        let c2s = endpoints(&t)
            .iter()
            .find(|e| e["service"] == "xmpp-client")
            .unwrap_or_else(|| panic!("xmpp-client endpoint: {t:#}"));
        assert_eq!(c2s["verdict"], "unreachable", "{t:#}");
        assert!(
            c2s["error"]
                .as_str()
                .is_some_and(|e| e.contains("longer than 16 links")),
            "{t:#}"
        );
    }

    // RFC 7671 §7: no SRV and the host is an alias, so the expanded name is
    // the TLSA base (GOOD there; OTHER at the original name).
    let (_, a) = check_json(&auth, "chat.aliasfb.test", &["--service", "client"]);
    let fb = endpoints(&a)
        .iter()
        .find(|e| e["service"] == "xmpp-client")
        .unwrap_or_else(|| panic!("fallback endpoint: {a:#}"));
    assert_eq!(fb["tlsa_name"], "_5222._tcp.host.aliasfb.test", "{a:#}");
    assert_eq!(fb["tlsa"][0], format!("3 1 1 {}", good.spki), "{a:#}");

    // A path that stuffs validly signed RRsets of other owners into every
    // TLSA, SRV and A answer: the verdicts stay what the genuine records say.
    let ready = dir.join("stuffdns.ready");
    let _stuffer = common::Proc(
        std::process::Command::new("python3")
            .arg(common::root().join("tests/labs/stuffdns.py"))
            .args(["--listen", "127.53.0.9:0", "--upstream", &get("AUTH_NS")])
            .args(["--stuff", "TLSA:tlsa.good.test."])
            .args(["--stuff", "SRV:_xmpp-client._tcp.good.test."])
            .args(["--stuff", "A:xmpp.good.test."])
            .arg("--ready-file")
            .arg(&ready)
            .spawn()
            .expect("start stuffdns.py"),
    );
    let listen = common::eventually(Duration::from_secs(10), "stuffdns ready", || {
        std::fs::read_to_string(&ready).ok()
    });
    let stuffed = global(listen.trim());
    for (domain, code, verdict) in [
        ("wrong.test", 1, "mismatch"),
        ("unsigned.test", 2, "insecure"),
        ("good.test", 0, "ok"),
    ] {
        let (got, json) = check_json(&stuffed, domain, &[]);
        assert_eq!(
            (got, json["verdict"].as_str().unwrap()),
            (code, verdict),
            "{domain} through the stuffing forwarder: {json:#}"
        );
        if domain == "wrong.test" {
            for e in endpoints(&json) {
                assert_eq!(
                    e["tlsa"],
                    serde_json::json!([format!("3 1 1 {}", other.spki)]),
                    "{e:#}"
                );
            }
        }
    }

    // One domain's DNS down while our resolver works: the domain's problem
    // (unreachable, and the report says so); a dead resolver is ours.
    let (code, json) = check_json(&recursive, "lame.test", &[]);
    assert_eq!(code, 3, "{json:#}");
    assert!(
        json["errors"].to_string().contains("its own DNS failing"),
        "{json:#}"
    );
    let (code, json) = check_json(&global("127.53.0.251:53"), "good.test", &[]);
    assert_eq!(code, 3, "{json:#}");
    assert!(
        !json["errors"].to_string().contains("its own DNS failing"),
        "{json:#}"
    );

    // Addresses that are not globally reachable are listed, not probed,
    // unless --allow-private: never "ok" for want of a probe.
    let mut public_only = auth.clone();
    public_only.retain(|a| a != "--allow-private");
    let (code, json) = check_json(&public_only, "good.test", &[]);
    assert_eq!(
        (code, json["verdict"].as_str()),
        (3, Some("unreachable")),
        "{json:#}"
    );
    assert!(!endpoints(&json).is_empty(), "{json:#}");
    for e in endpoints(&json) {
        assert_eq!(e["verdict"], "unreachable", "{e:#}");
        assert!(e.get("spki_sha256").is_none(), "{e:#}");
        let addr = e["address"].as_str().unwrap();
        assert_eq!(
            e["error"],
            format!(
                "address {addr} is not globally reachable ({}); not probed (allow_private lifts this)",
                if addr == "::1" { "::1, loopback" } else { "127.0.0.0/8, loopback" }
            ),
            "{e:#}"
        );
    }
    assert!(
        json["errors"]
            .to_string()
            .contains("is not globally reachable"),
        "{json:#}"
    );
    // No connection was made: the server without STARTTLS would be an alarm.
    let (code, json) = check_json(&public_only, "nostarttls.test", &[]);
    assert_eq!(code, 3, "{json:#}");
    assert_eq!(verdicts_of(&json, "xmpp-client"), vec!["unreachable"]);
    // The same in the config file.
    let private_config = dir.join("private.toml");
    std::fs::write(&private_config, "[probe]\nallow_private = true\n").unwrap();
    let mut via_config = public_only.clone();
    via_config.extend(["--config".into(), private_config.display().to_string()]);
    let (code, json) = check_json(&via_config, "good.test", &[]);
    assert_eq!(code, 0, "{json:#}");
    // SRV port 0 is never probed, allowed or not; the other endpoints still count.
    let (code, json) = check_json(&auth, "dot.test", &[]);
    assert_eq!(code, 0, "{json:#}");
    let zero = endpoints(&json)
        .iter()
        .find(|e| e["port"] == 0)
        .unwrap_or_else(|| panic!("port 0 endpoint: {json:#}"));
    assert_eq!(zero["verdict"], "unreachable", "{zero:#}");
    assert!(
        zero["error"].as_str().unwrap().contains("port 0"),
        "{zero:#}"
    );

    // --service limits the services.
    let (_, json) = check_json(&auth, "good.test", &["--service", "server"]);
    assert!(endpoints(&json)
        .iter()
        .all(|e| e["service"].as_str().unwrap().ends_with("server")));

    // tlsa from the admin's own files gives the same record as the probe saw.
    for flag in [("--cert", &good.cert), ("--key", &good.key)] {
        let out = certwatch()
            .args([
                "tlsa",
                flag.0,
                flag.1.to_str().unwrap(),
                "--host",
                "xmpp.good.test",
                "--port",
                "5222",
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("_5222._tcp.xmpp.good.test. IN TLSA 3 1 1 {}", good.spki)
        );
    }

    // Bad input: usage errors (64), configuration errors (78).
    let out = certwatch()
        .args(["check", "not a domain"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let out = certwatch()
        .args(["--transport", "pigeon", "check", "good.test"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let bad_config = dir.join("bad.toml");
    std::fs::write(&bad_config, "[probe]\ntransprt = \"tor\"\n").unwrap();
    let out = certwatch()
        .args([
            "--config",
            bad_config.to_str().unwrap(),
            "check",
            "good.test",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("transprt"));
    let out = certwatch()
        .args([
            "--trust-anchor",
            "/nonexistent/anchor.key",
            "check",
            "good.test",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
}

/// The RRSIG dnssec-signzone wrote over `owner`/`rtype`, as served (dig):
/// (original TTL, inception, expiration), the times as RFC 3339.
fn served_rrsig(auth: &str, owner: &str, rtype: &str) -> (u64, String, String) {
    let (ip, port) = auth.rsplit_once(':').unwrap();
    let out = std::process::Command::new("dig")
        .args([
            "+time=1", "+tries=1", "+norec", "+dnssec", "+noall", "+answer",
        ])
        .args(["-p", port, &format!("@{ip}"), owner, rtype])
        .output()
        .expect("run dig");
    let text = String::from_utf8_lossy(&out.stdout);
    // owner ttl class RRSIG type alg labels origttl expiration inception ...
    let f: Vec<&str> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 9 && f[3] == "RRSIG" && f[4] == rtype)
        .unwrap_or_else(|| panic!("no RRSIG over {owner} {rtype}: {text}"));
    let time = |t: &str| {
        format!(
            "{}-{}-{}T{}:{}:{}Z",
            &t[..4],
            &t[4..6],
            &t[6..8],
            &t[8..10],
            &t[10..12],
            &t[12..14]
        )
    };
    (f[7].parse().unwrap(), time(f[9]), time(f[8]))
}

fn secs(rfc3339: &str) -> u64 {
    humantime::parse_rfc3339(rfc3339)
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn rrset<'a>(json: &'a Value, rtype: &str, name: &str) -> &'a Value {
    json["horizons"]["rrsets"]
        .as_array()
        .unwrap_or_else(|| panic!("no horizons: {json:#}"))
        .iter()
        .find(|r| r["type"] == rtype && r["name"] == name)
        .unwrap_or_else(|| panic!("no horizon for {rtype} {name}: {json:#}"))
}

#[test]
fn horizons_of_short_signatures_skewed_clocks_and_expiring_certificates() {
    const HORIZON: u16 = 15993;
    const SOON: u16 = 15992;
    const SOON_TA: u16 = 15991;
    const DAY: u64 = 86_400;
    let dir = workdir("horizons");
    let good = TestCert::generate(&dir, "good", &["good.test"]);
    let other = TestCert::generate(&dir, "other", &["other.test"]);
    let now = secs(&humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string());
    // The GOOD key in a long-lived certificate, and in one that expires in 2 days.
    let (long, key) = good.reissued_until(&["xmpp.shortsig.test"], now + 365 * DAY);
    common::tls_server(HORIZON, vec![long], key.clone());
    let soon_until = now + 2 * DAY;
    let (soon, _) = good.reissued_until(&["xmpp.soon.test"], soon_until);
    common::tls_server(SOON, vec![soon], key);
    // DANE-TA: a leaf for 20 days under a CA that runs out in 5.
    let ca_until = now + 5 * DAY;
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = common::cert_params_until(&[], ca_until);
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let ca_spki = hex::encode(certwatch::dane::spki_sha256(ca_cert.der()).unwrap());
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = common::cert_params_until(&["xmpp.soon.test"], now + 20 * DAY)
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    common::tls_server(
        SOON_TA,
        vec![leaf.der().to_vec(), ca_cert.der().to_vec()],
        leaf_key.serialize_der(),
    );

    let env: Vec<(&str, String)> = vec![
        ("GOOD_SPKI", good.spki.clone()),
        ("OTHER_SPKI", other.spki.clone()),
        ("DNSLAB_ADDR_BASE", "127.54.0".into()),
        ("HORIZON_PORT", HORIZON.to_string()),
        ("SOON_PORT", SOON.to_string()),
        ("SOON_TA_PORT", SOON_TA.to_string()),
        ("SOON_TA", ca_spki),
    ];
    let dns = Lab::start("dnslab.sh", &[], &dir.join("dns"), &env);
    let lab_env = dns.env_file("env");
    let get = |k: &str| lab_env.iter().find(|(key, _)| key == k).unwrap().1.clone();
    let global = |ns: &str| lab_flags(ns, &get("TRUST_ANCHOR"));
    let auth = global(&get("AUTH_NS"));
    let text_of = |flags: &[String], domain: &str| {
        let out = certwatch()
            .args(flags)
            .args(["check", domain])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };

    // Signed for 2 days: still ok (exit 0), with the horizon in JSON and
    // text, through the authoritative server and a validating resolver.
    let tlsa_owner = format!("_{HORIZON}._tcp.xmpp.shortsig.test");
    let (ttl, inception, expiration) = served_rrsig(&get("AUTH_NS"), &tlsa_owner, "TLSA");
    assert_eq!(ttl, 30);
    for flags in [&auth, &global(&get("VALIDATING_NS"))] {
        let (code, json) = check_json(flags, "shortsig.test", &[]);
        assert_eq!(
            (code, json["verdict"].as_str()),
            (0, Some("ok")),
            "{json:#}"
        );
        let t = rrset(&json, "TLSA", &tlsa_owner);
        assert_eq!(t["zone"], "shortsig.test", "{t:#}");
        assert_eq!(t["ttl"], 30, "{t:#}");
        assert_eq!(t["inception"], inception.as_str(), "{t:#}");
        assert_eq!(t["expiration"], expiration.as_str(), "{t:#}");
        assert_eq!(
            secs(t["expires_at"].as_str().unwrap()),
            secs(&expiration) - 30,
            "{t:#}"
        );
        assert_eq!(t["problem"], "short_validity", "{t:#}");
        // The chain of trust: the zone's keys, its DS in test., and so on up.
        for (rtype, name, zone) in [
            ("SRV", "_xmpps-client._tcp.shortsig.test", "shortsig.test"),
            ("A", "xmpp.shortsig.test", "shortsig.test"),
            ("DNSKEY", "shortsig.test", "shortsig.test"),
            ("DS", "shortsig.test", "test"),
            ("DNSKEY", "test", "test"),
            ("DS", "test", "."),
            ("DNSKEY", ".", "."),
        ] {
            assert_eq!(rrset(&json, rtype, name)["zone"], zone, "{rtype} {name}");
        }
    }
    let (code, text) = text_of(&auth, "shortsig.test");
    eprintln!("{text}");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("Runs out"), "{text}");
    assert!(
        text.contains("signatures of shortsig.test expire in 1 day (")
            && text.contains("re-sign the zone"),
        "{text}"
    );
    assert!(
        text.contains("signatures of shortsig.test are valid for only 2 days"),
        "{text}"
    );

    // Re-signed for 30 days (the lab's `resign`): the horizon moves out.
    dns.run_with("resign", &["shortsig", "now+2592000"]);
    let (_, _, later) = served_rrsig(&get("AUTH_NS"), &tlsa_owner, "TLSA");
    let (code, json) = check_json(&auth, "shortsig.test", &[]);
    assert_eq!(code, 0, "{json:#}");
    let t = rrset(&json, "TLSA", &tlsa_owner);
    assert_eq!(t["expiration"], later.as_str(), "{t:#}");
    assert!(secs(&later) >= now + 29 * DAY, "{later}");
    assert!(t.get("problem").is_none(), "{t:#}");

    // Inception an hour ahead: bogus, and the report says why and when.
    let (code, text) = text_of(&auth, "skew.test");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("start only at") && text.contains("the signer's clock runs ahead"),
        "{text}"
    );

    // A certificate that expires in 2 days under DANE-EE, and a DANE-TA
    // chain whose CA runs out in 5: ok, with both dates.
    let (code, json) = check_json(&auth, "soon.test", &[]);
    assert_eq!(
        (code, json["verdict"].as_str()),
        (0, Some("ok")),
        "{json:#}"
    );
    let eps = json["horizons"]["endpoints"].as_array().unwrap();
    let ep = |port: u16| {
        eps.iter()
            .find(|e| {
                e["endpoint"]
                    .as_str()
                    .unwrap()
                    .contains(&format!(":{port} "))
            })
            .unwrap_or_else(|| panic!("no endpoint horizon for {port}: {json:#}"))
    };
    let ee = ep(SOON);
    assert_eq!(
        ee["endpoint"],
        format!("xmpps-client xmpp.soon.test:{SOON} [127.0.0.1] direct")
    );
    assert_eq!(
        secs(ee["not_after"].as_str().unwrap()),
        soon_until,
        "{ee:#}"
    );
    assert_eq!(ee["counts_for_dane"], false, "{ee:#}");
    assert!(ee.get("chain_not_after").is_none(), "{ee:#}");
    let ta = ep(SOON_TA);
    assert_eq!(ta["counts_for_dane"], true, "{ta:#}");
    assert_eq!(secs(ta["not_after"].as_str().unwrap()), now + 20 * DAY);
    assert_eq!(secs(ta["chain_not_after"].as_str().unwrap()), ca_until);
    // A normally signed zone: distant horizons, its keys and its parent's.
    let keys = rrset(&json, "DNSKEY", "soon.test");
    assert!(keys.get("problem").is_none(), "{keys:#}");
    assert!(secs(keys["expires_at"].as_str().unwrap()) > now + 29 * DAY);
    rrset(&json, "DS", "soon.test");
    rrset(&json, "DNSKEY", "test");
    let (code, text) = text_of(&auth, "soon.test");
    eprintln!("{text}");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!(
            "the certificate of xmpps-client xmpp.soon.test:{SOON} [127.0.0.1] direct expires in 1 day"
        )) && text.contains("this date does not affect the key check, but clients that check the certificate against a CA fail then"),
        "{text}"
    );
    assert!(
        text.contains("DANE-TA trust anchor of xmpps-server") && text.contains("expires in 4 days"),
        "{text}"
    );
}
