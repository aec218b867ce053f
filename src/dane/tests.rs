//! Table tests, named after the rule they check. Every certificate and key is
//! generated here with rcgen (or the openssl CLI when present); none is committed.

use std::process::{Command, Stdio};

use rcgen::{date_time_ymd, DistinguishedName, KeyUsagePurpose};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, PublicKeyData};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::{CertificateDer, TrustAnchor};

use super::*;

const NAME: Names = &["example.org"];

type Names<'a> = &'a [&'a str];
type Chain<'a> = &'a [Vec<u8>];
type Roots<'a> = &'a [TrustAnchor<'static>];

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(date_time_ymd(2026, 6, 1).unix_timestamp() as u64)
}

fn params(names: &[&str], cn: &str, years: (i32, i32)) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut p = CertificateParams::new(names).unwrap();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    (p.not_before, p.not_after) = (date_time_ymd(years.0, 1, 1), date_time_ymd(years.1, 1, 1));
    p
}

/// A CA whose parameters and key sign further certificates.
struct Ca {
    params: CertificateParams,
    key: KeyPair,
    der: Vec<u8>,
}

impl Ca {
    fn new(cn: &str, is_ca: bool, parent: Option<&Ca>) -> Ca {
        let (mut params, key) = (params(&[], cn, (2020, 2040)), KeyPair::generate().unwrap());
        if is_ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::DigitalSignature,
            ];
        }
        let cert = match parent {
            Some(parent) => params.signed_by(&key, &parent.issuer()),
            None => params.self_signed(&key),
        };
        let der = cert.unwrap().der().to_vec();
        Ca { params, key, der }
    }
    fn root(cn: &str) -> Ca {
        Ca::new(cn, true, None)
    }
    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::from_params(&self.params, &self.key)
    }
    fn leaf(&self, names: &[&str], years: (i32, i32)) -> Vec<u8> {
        let p = params(names, names.first().copied().unwrap_or("leaf"), years);
        p.signed_by(&KeyPair::generate().unwrap(), &self.issuer())
            .unwrap()
            .der()
            .to_vec()
    }
    fn anchor(&self) -> TrustAnchor<'static> {
        let der = CertificateDer::from(self.der.as_slice());
        webpki::anchor_from_trusted_cert(&der).unwrap().to_owned()
    }
}

fn self_signed(names: &[&str], years: (i32, i32)) -> Vec<u8> {
    let cert = params(names, "self", years).self_signed(&KeyPair::generate().unwrap());
    cert.unwrap().der().to_vec()
}

/// The outcome without the match's date (for tests about which record matched).
fn dateless(outcome: MatchOutcome) -> MatchOutcome {
    match outcome {
        MatchOutcome::Matched { record, .. } => MatchOutcome::Matched {
            record,
            valid_until: None,
        },
        other => other,
    }
}

fn rec(usage: u8, selector: u8, matching: u8, cert: &[u8]) -> Tlsa {
    record_for(cert, usage, selector, matching).unwrap()
}

fn run(
    record: &Tlsa,
    chain: &[Vec<u8>],
    names: &[&str],
    roots: &[TrustAnchor<'static>],
) -> MatchOutcome {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let ctx = MatchContext {
        chain,
        reference_names: &names,
        now: now(),
        pkix_roots: Some(roots),
    };
    match_chain(std::slice::from_ref(record), &ctx)
}

/// Asserts a match, or a mismatch with some note containing `note`.
fn expect(case: &str, outcome: MatchOutcome, matched: bool, note: &str) {
    match outcome {
        MatchOutcome::Matched { .. } => assert!(matched, "{case}: matched unexpectedly"),
        MatchOutcome::NoMatch { notes } => {
            assert!(!matched, "{case}: no match: {notes:?}");
            assert!(
                notes.iter().any(|n| n.contains(note)),
                "{case}: no {note:?} in {notes:?}"
            );
        }
        other => panic!("{case}: unexpected {other:?}"),
    }
}

#[test]
fn rfc6698_s2_2_presentation_format_round_trips_in_lowercase() {
    let t = Tlsa::parse(" 3 1 1 AB12\n cd34\t").unwrap();
    assert_eq!((t.usage, t.selector, t.matching), (3, 1, 1));
    assert_eq!(t.data, [0xab, 0x12, 0xcd, 0x34]);
    assert_eq!(t.to_string(), "3 1 1 ab12cd34");
    assert_eq!(Tlsa::parse(&t.to_string()).unwrap(), t);
}

#[test]
fn rfc6698_s2_2_presentation_format_errors() {
    use TlsaParseError::*;
    #[rustfmt::skip]
    let table = [
        ("", TooFewFields(0)),
        ("3 1", TooFewFields(2)),
        ("3 1 1", TooFewFields(3)),
        ("x 1 1 ab", NotANumber("usage", "x".into())),
        ("3 -1 1 ab", NotANumber("selector", "-1".into())),
        ("3 1 256 ab", NotANumber("matching type", "256".into())),
        ("3 1 1 abc", OddHex(3)),
        ("3 1 1 ab zz", BadHex('z', 2)),
    ];
    for (input, want) in table {
        assert_eq!(Tlsa::parse(input), Err(want), "{input:?}");
    }
}

#[test]
fn rfc7671_s4_1_rfc7218_unusable_parameters() {
    let t = |usage, selector, matching, len| Tlsa {
        usage,
        selector,
        matching,
        data: vec![7; len],
    };
    #[rustfmt::skip]
    let table = [
        (t(3, 1, 1, 32), Ok(())),
        (t(2, 0, 2, 64), Ok(())),
        (t(0, 1, 0, 91), Ok(())),
        (t(4, 1, 1, 32), Err(Unusable::Usage(4))),
        (t(255, 1, 1, 32), Err(Unusable::Usage(255))),
        (t(3, 2, 1, 32), Err(Unusable::Selector(2))),
        (t(3, 1, 3, 32), Err(Unusable::Matching(3))),
        (t(3, 1, 1, 31), Err(Unusable::DigestLength(1, 32, 31))),
        (t(3, 1, 2, 32), Err(Unusable::DigestLength(2, 64, 32))),
        (t(3, 1, 0, 0), Err(Unusable::Empty)),
    ];
    for (record, want) in table {
        assert_eq!(record.usable(), want, "{record}");
    }
}

#[test]
fn rfc7671_s4_1_only_unusable_records_means_no_tlsa() {
    let leaf = self_signed(NAME, (2020, 2040));
    let good = rec(3, 1, 1, &leaf);
    let bad_usage = Tlsa {
        usage: 4,
        ..good.clone()
    };
    let short = Tlsa {
        data: vec![1; 20],
        ..good.clone()
    };
    let names = [String::from("example.org")];
    for chain in [vec![leaf.clone()], vec![]] {
        let ctx = MatchContext {
            chain: &chain,
            reference_names: &names,
            now: now(),
            pkix_roots: Some(&[]),
        };
        let outcome = match_chain(&[bad_usage.clone(), short.clone()], &ctx);
        let MatchOutcome::NoUsableRecords { notes } = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("usage 4 is not defined"), "{notes:?}");
    }
    // Skipped, not fatal, when a usable record follows.
    let chain = [leaf];
    let ctx = MatchContext {
        chain: &chain,
        reference_names: &names,
        now: now(),
        pkix_roots: Some(&[]),
    };
    let outcome = match_chain(&[bad_usage, good.clone()], &ctx);
    assert_eq!(
        dateless(outcome),
        MatchOutcome::Matched {
            record: good,
            valid_until: None
        }
    );
}

#[test]
fn rfc7671_s5_1_dane_ee_selectors_and_matching_types() {
    let leaf = self_signed(NAME, (2020, 2040));
    let other = self_signed(NAME, (2020, 2040));
    let chain = [leaf.clone()];
    for (s, m) in [(1, 1), (0, 1), (1, 2), (1, 0), (0, 0), (0, 2)] {
        expect(
            &format!("3 {s} {m}"),
            run(&rec(3, s, m, &leaf), &chain, &[], &[]),
            true,
            "",
        );
        let outcome = run(&rec(3, s, m, &other), &chain, &[], &[]);
        expect(
            &format!("3 {s} {m} other"),
            outcome,
            false,
            "does not match the server's certificate",
        );
    }
}

#[test]
fn rfc7671_s5_1_dane_ee_ignores_names_and_dates() {
    let ca = Ca::root("Private CA");
    let expired_misnamed = ca.leaf(&["wrong.example"], (2020, 2021));
    let chain = [
        expired_misnamed.clone(),
        vec![0x30, 0x03, 0x01],
        ca.der.clone(),
    ];
    let record = rec(3, 1, 1, &expired_misnamed);
    assert_eq!(
        run(&record, &chain, NAME, &[]),
        MatchOutcome::Matched {
            record,
            valid_until: None
        }
    );
    // The rest of the chain is ignored too, so a pinned CA is not the leaf.
    expect(
        "3 1 1 of the CA",
        run(&rec(3, 1, 1, &ca.der), &chain, NAME, &[]),
        false,
        "does not match",
    );
}

#[test]
fn rfc7671_s5_2_dane_ta_private_ca_and_names() {
    let ca = Ca::root("Private CA");
    let both: Names = &["example.org", "xmpp.example.org"];
    #[rustfmt::skip]
    let table: [(&str, Names, Names, bool, &str); 7] = [
        ("exact SRV target", &["xmpp.example.org"], both, true, ""),
        ("exact service domain", NAME, both, true, ""),
        ("wildcard, one label", &["*.example.org"], &["xmpp.example.org"], true, ""),
        ("wildcard covers no parent", &["*.example.org"], NAME, false, "is for [*.example.org]"),
        ("wildcard covers one label only", &["*.example.org"], &["a.b.example.org"], false, "not for any of"),
        ("wrong name", &["other.example"], both, false, "is for [other.example], not for any of [example.org, xmpp.example.org]"),
        ("case and trailing dot", &["XMPP.Example.ORG."], &["xmpp.example.org"], true, ""),
    ];
    for (case, names, refs, matched, note) in table {
        let chain = [ca.leaf(names, (2020, 2040)), ca.der.clone()];
        for (s, m) in [(1, 1), (0, 1), (1, 2)] {
            let outcome = run(&rec(2, s, m, &ca.der), &chain, refs, &[]);
            expect(&format!("{case}, 2 {s} {m}"), outcome, matched, note);
        }
    }
}

#[test]
fn rfc6125_s6_4_4_common_name_only_without_dns_san() {
    let ca = Ca::root("Private CA");
    let pin = rec(2, 1, 1, &ca.der);
    for (case, sans, matched) in [
        ("CN fallback", &[][..], true),
        ("SAN wins over CN", &["xmpp.example.org"][..], false),
    ] {
        let leaf = params(sans, "example.org", (2020, 2040))
            .signed_by(&KeyPair::generate().unwrap(), &ca.issuer());
        let chain = [leaf.unwrap().der().to_vec(), ca.der.clone()];
        expect(
            case,
            run(&pin, &chain, NAME, &[]),
            matched,
            "is for [xmpp.example.org]",
        );
    }
}

#[test]
fn rfc7671_s5_2_dane_ta_through_intermediates_in_any_order() {
    let root = Ca::root("Root");
    let inter = Ca::new("Intermediate", true, Some(&root));
    let (l, i, r) = (
        inter.leaf(NAME, (2020, 2040)),
        inter.der.clone(),
        root.der.clone(),
    );
    let own = self_signed(NAME, (2020, 2040));
    #[rustfmt::skip]
    let table = [
        ("root pinned", rec(2, 1, 1, &r), vec![l.clone(), i.clone(), r.clone()]),
        ("intermediate pinned", rec(2, 0, 2, &i), vec![l.clone(), i.clone()]),
        ("out of order", rec(2, 1, 1, &r), vec![l.clone(), r.clone(), i.clone()]),
        ("self-signed leaf as its own anchor", rec(2, 0, 1, &own), vec![own.clone()]),
    ];
    for (case, record, chain) in table {
        assert_eq!(
            dateless(run(&record, &chain, NAME, &[])),
            MatchOutcome::Matched {
                record,
                valid_until: None
            },
            "{case}"
        );
    }
}

#[test]
fn rfc7671_s5_2_dane_ta_rejects_what_does_not_chain() {
    let real = Ca::root("Private CA");
    // Same name as the real CA, another key: the names chain, the signature does not.
    let forged = Ca::root("Private CA").leaf(NAME, (2020, 2040));
    let stranger = Ca::root("Other CA").leaf(NAME, (2020, 2040));
    let not_ca = Ca::new("Not a CA", false, Some(&real));
    let under_not_ca = not_ca.leaf(NAME, (2020, 2040));
    let expired = real.leaf(NAME, (2020, 2021));
    let (p, r) = (rec(2, 1, 1, &real.der), real.der.clone());
    #[rustfmt::skip]
    let table = [
        ("forged signature", p.clone(), vec![forged, r.clone()], "signature on certificate 0 does not verify"),
        ("unrelated issuer", p.clone(), vec![stranger.clone(), r.clone()], "no chain of issuer names leads there"),
        ("anchor absent", p.clone(), vec![stranger.clone()], "matches no certificate in the chain"),
        ("a leaf that is not self-issued", rec(2, 1, 1, &stranger), vec![stranger.clone()], "cannot be its trust anchor; a pin of the server's own key is written 3 1 1"),
        ("issuer without cA", p.clone(), vec![under_not_ca, not_ca.der.clone(), r.clone()], "CN=Not a CA) issues a certificate but is not a CA"),
        ("expired leaf", p.clone(), vec![expired, r], "is valid from 2020-01-01T00:00:00Z to 2021-01-01T00:00:00Z, not at 2026-06-01T00:00:00Z"),
    ];
    for (case, record, chain, note) in table {
        expect(case, run(&record, &chain, NAME, &[]), false, note);
    }
}

#[test]
fn rfc6698_s2_1_1_pkix_ee_needs_the_record_and_pkix() {
    let root = Ca::root("Private Root");
    let inter = Ca::new("Private Intermediate", true, Some(&root));
    let (leaf, expired) = (
        inter.leaf(NAME, (2020, 2040)),
        inter.leaf(NAME, (2020, 2021)),
    );
    let (chain, old_chain) = (
        [leaf.clone(), inter.der.clone()],
        [expired.clone(), inter.der.clone()],
    );
    let anchors = [root.anchor()];
    let other: Names = &["other.example"];
    #[rustfmt::skip]
    let table: [(&str, Tlsa, Chain, Names, Roots, bool, &str); 5] = [
        ("private root", rec(1, 1, 1, &leaf), &chain, NAME, &anchors, true, ""),
        ("untrusted root", rec(1, 1, 1, &leaf), &chain, NAME, &[], false, "matched but PKIX validation failed: no path to a trusted root"),
        ("expired leaf", rec(1, 1, 1, &expired), &old_chain, NAME, &anchors, false, "PKIX validation failed: expired at 2021-01-01T00:00:00Z"),
        ("wrong name", rec(1, 1, 1, &leaf), &chain, other, &anchors, false, "not valid for any of [other.example]"),
        ("record for another key", rec(1, 1, 1, &expired), &chain, NAME, &anchors, false, "does not match"),
    ];
    for (case, record, chain, names, roots, matched, note) in table {
        expect(case, run(&record, chain, names, roots), matched, note);
    }
    // Without roots of its own the matcher uses the public web PKI, which knows no private CA.
    let names = [String::from("example.org")];
    let ctx = MatchContext {
        chain: &chain,
        reference_names: &names,
        now: now(),
        pkix_roots: None,
    };
    let outcome = match_chain(&[rec(1, 1, 1, &leaf)], &ctx);
    expect("webpki-roots", outcome, false, "no path to a trusted root");
}

#[test]
fn rfc6698_s2_1_1_pkix_ta_names_a_ca_on_the_validated_path() {
    let root = Ca::root("Private Root");
    let inter = Ca::new("Private Intermediate", true, Some(&root));
    let leaf = inter.leaf(NAME, (2020, 2040));
    let other = Ca::root("Other Root");
    let full = [leaf.clone(), inter.der.clone(), root.der.clone()];
    let short = [leaf.clone(), inter.der.clone()];
    let stray = [leaf.clone(), inter.der.clone(), other.der.clone()];
    let anchors = [root.anchor()];
    #[rustfmt::skip]
    let table: [(&str, Tlsa, Chain, Roots, bool, &str); 6] = [
        ("root cert, presented", rec(0, 0, 1, &root.der), &full, &anchors, true, ""),
        ("root key, not presented", rec(0, 1, 1, &root.der), &short, &anchors, true, ""),
        ("intermediate", rec(0, 1, 2, &inter.der), &short, &anchors, true, ""),
        ("leaf is no CA", rec(0, 1, 1, &leaf), &short, &anchors, false, "matches no CA certificate on the validated PKIX path"),
        ("CA off the path", rec(0, 0, 1, &other.der), &stray, &anchors, false, "not on the validated PKIX path"),
        ("PKIX fails", rec(0, 0, 1, &root.der), &full, &[], false, "matched but PKIX validation failed: no path"),
    ];
    for (case, record, chain, roots, matched, note) in table {
        expect(case, run(&record, chain, NAME, roots), matched, note);
    }
}

#[test]
fn malformed_chain_is_a_finding_not_a_panic() {
    let leaf = self_signed(NAME, (2020, 2040));
    let mut trailing = leaf.clone();
    trailing.push(0);
    #[rustfmt::skip]
    let table = [
        ("empty chain", vec![], "no certificate"),
        ("garbage", vec![b"not a certificate".to_vec()], "not a DER X.509 certificate"),
        ("truncated", vec![leaf[..leaf.len() / 2].to_vec()], "not a DER X.509 certificate"),
        ("empty bytes", vec![vec![]], "not a DER X.509 certificate"),
        ("trailing bytes", vec![trailing], "1 bytes follow"),
    ];
    for (case, chain, want) in table {
        for usage in 0..=3 {
            match run(&rec(usage, 1, 1, &leaf), &chain, NAME, &[]) {
                MatchOutcome::MalformedChain { error } => {
                    assert!(error.contains(want), "{case}: {error}")
                }
                other => panic!("{case}: {other:?}"),
            }
        }
    }
    assert!(matches!(spki_sha256(b"junk"), Err(CertError::Der(_))));
    assert!(association(&leaf[..40], 1, 1).is_err());
}

#[test]
fn rfc6698_s2_1_digests_and_record_building() {
    let key = KeyPair::generate().unwrap();
    let cert = params(NAME, "example.org", (2020, 2040))
        .self_signed(&key)
        .unwrap()
        .der()
        .to_vec();
    let spki = key.subject_public_key_info();
    assert_eq!(association(&cert, 1, 0).unwrap(), spki);
    assert_eq!(association(&cert, 0, 0).unwrap(), cert);
    assert_eq!(
        spki_sha256(&cert).unwrap().to_vec(),
        association(&cert, 1, 1).unwrap()
    );
    assert_eq!(
        cert_sha256(&cert).to_vec(),
        association(&cert, 0, 1).unwrap()
    );
    assert_eq!(
        association_from_spki(&spki, 2),
        association(&cert, 1, 2).unwrap()
    );
    assert_eq!(association_from_spki(&spki, 3), Vec::<u8>::new());
    let want = format!("3 1 1 {}", hex::encode(spki_sha256(&cert).unwrap()));
    assert_eq!(record_for(&cert, 3, 1, 1).unwrap().to_string(), want);
    use Unusable::*;
    for (u, s, m, want) in [
        (4, 1, 1, Usage(4)),
        (3, 2, 1, Selector(2)),
        (3, 1, 9, Matching(9)),
    ] {
        assert_eq!(record_for(&cert, u, s, m), Err(CertError::Parameters(want)));
    }
}

fn cert_pem_for(key: &KeyPair) -> String {
    params(NAME, "example.org", (2020, 2040))
        .self_signed(key)
        .unwrap()
        .pem()
}

#[test]
fn key_files_yield_the_spki_of_certificates_made_from_them() {
    for alg in [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ED25519,
    ] {
        let key = KeyPair::generate_for(alg).unwrap();
        let cert_pem = cert_pem_for(&key);
        let (spki, der) = spki_from_cert_pem(&cert_pem).unwrap();
        assert_eq!(spki, key.subject_public_key_info(), "{alg:?}");
        assert_eq!(
            spki_sha256(&der).unwrap().to_vec(),
            association_from_spki(&spki, 1)
        );
        assert_eq!(
            spki_from_key_pem(&key.serialize_pem()).unwrap(),
            spki,
            "PKCS#8 {alg:?}"
        );
        assert_eq!(
            spki_from_key_pem(&key.public_key_pem()).unwrap(),
            spki,
            "PUBLIC KEY {alg:?}"
        );
        let combined = format!("{cert_pem}{}", key.serialize_pem());
        assert_eq!(
            spki_from_key_pem(&combined).unwrap(),
            spki,
            "certificate, then key"
        );
    }
}

#[test]
fn key_file_errors() {
    let key = KeyPair::generate().unwrap();
    let pem = |label: &str, body: &str| {
        format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n")
    };
    let legacy = pem(
        "RSA PRIVATE KEY",
        "Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA",
    );
    let no_key = |r| matches!(r, Err(KeyFileError::NoKey));
    assert!(no_key(spki_from_key_pem("hello")));
    assert!(no_key(spki_from_key_pem(&cert_pem_for(&key))));
    let encrypted = spki_from_key_pem(&pem("ENCRYPTED PRIVATE KEY", "MIIB"));
    assert!(matches!(encrypted, Err(KeyFileError::Encrypted)));
    assert!(matches!(
        spki_from_key_pem(&legacy),
        Err(KeyFileError::Encrypted)
    ));
    let bad_sec1 = spki_from_key_pem(&pem("EC PRIVATE KEY", "MAMCAQE="));
    assert!(
        matches!(bad_sec1, Err(KeyFileError::BadKey { kind: "EC", .. })),
        "{bad_sec1:?}"
    );
    let bad_base64 = spki_from_key_pem(&pem("PRIVATE KEY", "!!"));
    assert!(
        matches!(bad_base64, Err(KeyFileError::Pem(_))),
        "{bad_base64:?}"
    );
    // A key given where a certificate was asked: the error names --key.
    let no_cert = spki_from_cert_pem(&key.serialize_pem());
    assert!(
        matches!(no_cert, Err(KeyFileError::KeyNotCertificate("private"))),
        "{no_cert:?}"
    );
    assert!(no_cert.unwrap_err().to_string().contains("use --key"));
    let public = spki_from_cert_pem(&key.public_key_pem());
    assert!(matches!(
        public,
        Err(KeyFileError::KeyNotCertificate("public"))
    ));
    let nothing = spki_from_cert_pem("just text\n");
    assert!(matches!(nothing, Err(KeyFileError::NoCertificate)));
    let junk_cert = spki_from_cert_pem(&pem("CERTIFICATE", "MAMCAQE="));
    assert!(matches!(
        junk_cert,
        Err(KeyFileError::Cert(CertError::Der(_)))
    ));
}

/// Runs the openssl CLI with `input` on stdin; `None` when it is not installed.
fn openssl(args: &[&str], input: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut cmd = Command::new("openssl");
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().ok()?;
    child.stdin.take()?.write_all(input).ok()?;
    let out = child.wait_with_output().ok()?;
    assert!(out.status.success(), "openssl {args:?} failed");
    Some(out.stdout)
}

#[test]
fn key_files_from_openssl_rsa_sec1_and_p521() {
    // Keys rcgen cannot make with ring: RSA, SEC1 files, P-521.
    let gen = |alg: &str, opt: &str| openssl(&["genpkey", "-algorithm", alg, "-pkeyopt", opt], b"");
    // scripts/test.sh installs openssl: a missing CLI is a failure, not a skip.
    let rsa = gen("RSA", "rsa_keygen_bits:2048").expect("the openssl CLI is required by this test");
    #[rustfmt::skip]
    let table = [
        ("RSA PKCS#8", rsa.clone()),
        ("RSA PKCS#1", openssl(&["rsa", "-traditional"], &rsa).unwrap()),
        ("RSA 1024 PKCS#8, which ring refuses", gen("RSA", "rsa_keygen_bits:1024").unwrap()),
        ("SEC1 P-256 after EC PARAMETERS", openssl(&["ecparam", "-name", "prime256v1", "-genkey"], b"").unwrap()),
        ("PKCS#8 P-521", gen("EC", "ec_paramgen_curve:P-521").unwrap()),
    ];
    for (case, pem) in table {
        let want = openssl(&["pkey", "-pubout", "-outform", "DER"], &pem).unwrap();
        assert_eq!(
            spki_from_key_pem(&String::from_utf8(pem).unwrap()).unwrap(),
            want,
            "{case}"
        );
    }
    // The SPKI of an RSA key equals the one in a certificate made from it.
    let rsa = String::from_utf8(rsa).unwrap();
    let (spki, _) = spki_from_cert_pem(&cert_pem_for(&KeyPair::from_pem(&rsa).unwrap())).unwrap();
    assert_eq!(spki_from_key_pem(&rsa).unwrap(), spki);
}

// Chain stuffing (issue 11): a server may present hundreds of certificates
// sharing one name and key. Matching cuts the chain and counts signatures.

const STUFFED: usize = 237;
const SERVER: &str = "xmpp.example.org";

/// Issuer-less certificate parameters for `cn`, valid 2020-2040, a CA.
fn ca_params(cn: &str) -> CertificateParams {
    let mut p = params(&[], cn, (2020, 2040));
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p
}

/// `n` certificates for SERVER, all self-signed with `key`.
fn same_key_copies(key: &KeyPair, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| {
            let p = params(&[SERVER], SERVER, (2020, 2040));
            p.self_signed(key).unwrap().der().to_vec()
        })
        .collect()
}

fn run_counted(records: &[Tlsa], chain: &[Vec<u8>], names: &[&str]) -> (MatchOutcome, MatchCost) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let ctx = MatchContext {
        chain,
        reference_names: &names,
        now: now(),
        pkix_roots: Some(&[]),
    };
    let started = std::time::Instant::now();
    let result = match_chain_counted(records, &ctx);
    let said = match &result.0 {
        MatchOutcome::Matched { .. } => "matched",
        MatchOutcome::NoMatch { .. } => "no match",
        MatchOutcome::SearchExhausted { .. } => "search exhausted",
        MatchOutcome::NoUsableRecords { .. } => "no usable records",
        MatchOutcome::MalformedChain { .. } => "malformed chain",
    };
    eprintln!(
        "{} certificates, {} record(s): {said} in {:?}, {} signature checks",
        chain.len(),
        records.len(),
        started.elapsed(),
        result.1.signature_checks
    );
    result
}

fn notes(outcome: &MatchOutcome) -> String {
    match outcome {
        MatchOutcome::NoMatch { notes } | MatchOutcome::SearchExhausted { notes } => {
            notes.join("\n")
        }
        other => panic!("expected a failed match, got {other:?}"),
    }
}

#[test]
fn stuffed_chain_against_another_key_is_a_mismatch_and_cheap() {
    let key = KeyPair::generate().unwrap();
    let chain = same_key_copies(&key, STUFFED);
    let other = rec(2, 1, 1, &self_signed(&[SERVER], (2020, 2040)));
    let (outcome, cost) = run_counted(&[other], &chain, &[SERVER]);
    assert!(
        matches!(outcome, MatchOutcome::NoMatch { .. }),
        "{outcome:?}"
    );
    assert!(notes(&outcome).contains("the server presented 237 certificates"));
    assert!(notes(&outcome).contains("the other 220 are ignored"));
    assert_eq!(
        cost.signature_checks, 0,
        "no certificate matches, nothing to verify"
    );
}

#[test]
fn stuffed_chain_whose_leaf_is_the_anchor() {
    let key = KeyPair::generate().unwrap();
    let chain = same_key_copies(&key, STUFFED);
    let record = rec(2, 1, 1, &chain[0]);
    // Anchor at position 0, the self-issued leaf: a match, with no signature to check.
    let (outcome, cost) = run_counted(std::slice::from_ref(&record), &chain, &[SERVER]);
    assert_eq!(
        dateless(outcome),
        MatchOutcome::Matched {
            record: record.clone(),
            valid_until: None
        }
    );
    assert_eq!(cost.signature_checks, 0);
    // The attack of issue 11: every certificate is an anchor, and none passes the
    // name check. Each anchor used to cost a search over every certificate; now
    // each signature is verified once and only the first 16 count.
    let (outcome, cost) = run_counted(&[record], &chain, &["victim.example"]);
    assert!(
        matches!(outcome, MatchOutcome::NoMatch { .. }),
        "{outcome:?}"
    );
    assert!(cost.signature_checks <= MAX_CHAIN_BEYOND_LEAF, "{cost:?}");
    assert!(!cost.exhausted);
}

#[test]
fn an_anchor_beyond_the_bound_is_not_seen() {
    let key = KeyPair::generate().unwrap();
    let ca = Ca::root("Stuffing CA");
    let leaf = params(&[SERVER], SERVER, (2020, 2040))
        .signed_by(&key, &ca.issuer())
        .unwrap()
        .der()
        .to_vec();
    let record = rec(2, 1, 1, &ca.der);
    let chain_with_ca_at = |at: usize| {
        let mut chain = vec![leaf.clone()];
        chain.extend(same_key_copies(&key, at - 1));
        chain.push(ca.der.clone());
        chain.extend(same_key_copies(&key, STUFFED - 1 - at));
        assert_eq!(chain.len(), STUFFED);
        chain
    };
    for at in [1, 5, MAX_CHAIN_BEYOND_LEAF] {
        let (outcome, _) = run_counted(
            std::slice::from_ref(&record),
            &chain_with_ca_at(at),
            &[SERVER],
        );
        assert_eq!(
            dateless(outcome),
            MatchOutcome::Matched {
                record: record.clone(),
                valid_until: None
            },
            "CA at {at}"
        );
    }
    // Past the bound the CA is cut off with the rest: a mismatch whose notes say
    // why, which the server fixes by sending a sane chain. Never a match.
    for at in [MAX_CHAIN_BEYOND_LEAF + 1, 200] {
        let (outcome, _) = run_counted(
            std::slice::from_ref(&record),
            &chain_with_ca_at(at),
            &[SERVER],
        );
        assert!(
            matches!(outcome, MatchOutcome::NoMatch { .. }),
            "CA at {at}: {outcome:?}"
        );
        assert!(notes(&outcome).contains("are ignored"), "{outcome:?}");
        assert!(notes(&outcome).contains("matches no certificate in the chain"));
    }
}

/// A chain built so that the issuer search branches: 16 certificates named
/// like the leaf's issuer, all holding the key that signed the leaf (so each
/// is a candidate parent whose signature on the leaf verifies), each signed
/// by a key nobody presents (so each leads nowhere but only after checking
/// every other one), and the record's anchor, which signed nothing.
fn branching_chain() -> (Vec<Vec<u8>>, Tlsa) {
    let key = KeyPair::generate().unwrap();
    let issuer_params = ca_params("Branching CA");
    let leaf = params(&[SERVER], SERVER, (2020, 2040))
        .signed_by(
            &KeyPair::generate().unwrap(),
            &Issuer::from_params(&issuer_params, &key),
        )
        .unwrap()
        .der()
        .to_vec();
    let mut chain = vec![leaf];
    for _ in 0..MAX_CHAIN_BEYOND_LEAF - 1 {
        let stranger = KeyPair::generate().unwrap();
        let signer = Issuer::from_params(&issuer_params, &stranger);
        let cert = ca_params("Branching CA").signed_by(&key, &signer).unwrap();
        chain.push(cert.der().to_vec());
    }
    let anchor = ca_params("Branching CA")
        .self_signed(&KeyPair::generate().unwrap())
        .unwrap()
        .der()
        .to_vec();
    let record = rec(2, 1, 1, &anchor);
    chain.push(anchor);
    chain.extend(same_key_copies(&key, STUFFED - chain.len()));
    (chain, record)
}

#[test]
fn a_search_over_budget_is_exhausted_never_a_match() {
    let (chain, record) = branching_chain();
    let (outcome, cost) = run_counted(std::slice::from_ref(&record), &chain, &[SERVER]);
    assert_eq!(cost.signature_checks, MAX_SIGNATURE_CHECKS, "{cost:?}");
    assert!(cost.exhausted);
    let MatchOutcome::SearchExhausted { notes } = &outcome else {
        panic!("expected SearchExhausted, got {outcome:?}");
    };
    let notes = notes.join("\n");
    assert!(
        notes.contains("stopped after 64 signature checks"),
        "{notes}"
    );
    assert!(
        notes.contains("ran out before a path to it was found"),
        "{notes}"
    );
}

#[test]
fn dane_ee_is_untouched_by_an_exhausted_search() {
    let (chain, stuffed) = branching_chain();
    let pin = rec(3, 1, 1, &chain[0]);
    // The expensive record first: the budget runs out, then the leaf pin matches.
    let (outcome, cost) = run_counted(&[stuffed.clone(), pin.clone()], &chain, &[SERVER]);
    assert_eq!(
        outcome,
        MatchOutcome::Matched {
            record: pin.clone(),
            valid_until: None
        }
    );
    assert!(cost.exhausted);
    // Alone, the pin costs no signature check at all, however long the chain.
    let (outcome, cost) = run_counted(std::slice::from_ref(&pin), &chain, &[SERVER]);
    assert_eq!(
        outcome,
        MatchOutcome::Matched {
            record: pin,
            valid_until: None
        }
    );
    assert_eq!(cost, MatchCost::default());
}

#[test]
fn stuffed_chain_under_pkix_usages_is_cut_too() {
    // webpki sees the same cut chain (and has its own signature budget).
    let key = KeyPair::generate().unwrap();
    let chain = same_key_copies(&key, STUFFED);
    let roots = [Ca::root("Unrelated Root").anchor()];
    let names: Vec<String> = vec![SERVER.into()];
    let ctx = MatchContext {
        chain: &chain,
        reference_names: &names,
        now: now(),
        pkix_roots: Some(&roots),
    };
    for usage in [0, 1] {
        let record = rec(usage, 1, 1, &chain[0]);
        let started = std::time::Instant::now();
        let outcome = match_chain(std::slice::from_ref(&record), &ctx);
        eprintln!(
            "usage {usage}, {STUFFED} certificates: {:?}",
            started.elapsed()
        );
        assert!(
            matches!(outcome, MatchOutcome::NoMatch { .. }),
            "{outcome:?}"
        );
        assert!(notes(&outcome).contains("are ignored"));
    }
}

#[test]
fn rfc7671_a_match_lasts_until_the_earliest_date_it_rests_on() {
    // A leaf until 2035 under an intermediate until 2030 under a root.
    let root = Ca::root("Root");
    let mut p = params(&[], "Intermediate", (2020, 2030));
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let der = p.signed_by(&key, &root.issuer()).unwrap().der().to_vec();
    let inter = Ca {
        params: p,
        key,
        der,
    };
    let leaf = inter.leaf(NAME, (2020, 2035));
    let chain = [leaf.clone(), inter.der.clone(), root.der.clone()];
    let anchors = [root.anchor()];
    let at = |y| Some(date_time_ymd(y, 1, 1).unix_timestamp() as u64);
    #[rustfmt::skip]
    let table = [
        // DANE-EE: dates do not count.
        ("3 1 1", rec(3, 1, 1, &leaf), None),
        // DANE-TA: the path up to the anchor (the root lasts until 2040).
        ("2 1 1 root", rec(2, 1, 1, &root.der), at(2030)),
        ("2 0 1 intermediate", rec(2, 0, 1, &inter.der), at(2030)),
        // PKIX-EE and PKIX-TA: the leaf and the PKIX path's intermediates.
        ("1 1 1", rec(1, 1, 1, &leaf), at(2030)),
        ("0 1 1 root", rec(0, 1, 1, &root.der), at(2030)),
    ];
    for (case, record, until) in table {
        let outcome = run(&record, &chain, NAME, &anchors);
        let MatchOutcome::Matched { valid_until, .. } = outcome else {
            panic!("{case}: {outcome:?}")
        };
        assert_eq!(valid_until, until, "{case}");
    }
    // With the leaf expiring first, the leaf's date.
    let short = inter.leaf(NAME, (2020, 2028));
    let chain = [short.clone(), inter.der.clone()];
    let outcome = run(&rec(1, 0, 1, &short), &chain, NAME, &anchors);
    let MatchOutcome::Matched { valid_until, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(valid_until, at(2028));
}
