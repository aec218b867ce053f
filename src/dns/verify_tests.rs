//! Tests of which signature is believed, with RRsets signed by keys the
//! tests generate.

use std::net::Ipv4Addr;

use hickory_resolver::proto::dnssec::crypto::EcdsaSigningKey;
use hickory_resolver::proto::dnssec::rdata::{DNSSECRData, SigInput, DNSKEY, RRSIG};
use hickory_resolver::proto::dnssec::{Algorithm, SigningKey, TBS};
use hickory_resolver::proto::rr::rdata::A;
use hickory_resolver::proto::rr::{DNSClass, Name, RData, Record};

use super::*;

const NOW: u64 = 1_800_000_000;
const DAY: u64 = 86_400;

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

/// A zone key: the signing half and its DNSKEY.
pub(crate) struct ZoneKey {
    key: EcdsaSigningKey,
    pub(crate) dnskey: DNSKEY,
}

impl ZoneKey {
    pub(crate) fn generate() -> ZoneKey {
        let alg = Algorithm::ECDSAP256SHA256;
        let pkcs8 = EcdsaSigningKey::generate_pkcs8(alg).unwrap();
        let key = EcdsaSigningKey::from_pkcs8(&pkcs8, alg).unwrap();
        let dnskey = DNSKEY::from_key(&key.to_public_key().unwrap());
        ZoneKey { key, dnskey }
    }

    /// An RRSIG by this key of `signer` over `records` (one RRset).
    pub(crate) fn sign(&self, signer: &str, records: &[Record], window: (u64, u64)) -> RRSIG {
        let first = &records[0];
        let input = SigInput {
            type_covered: first.record_type(),
            algorithm: Algorithm::ECDSAP256SHA256,
            num_labels: first.name.num_labels(),
            original_ttl: 3600,
            sig_expiration: (window.1 as u32).into(),
            sig_inception: (window.0 as u32).into(),
            key_tag: self.dnskey.calculate_key_tag().unwrap(),
            signer_name: name(signer),
        };
        let tbs = TBS::from_input(&first.name, DNSClass::IN, &input, records.iter()).unwrap();
        RRSIG::from_sig(input, self.key.sign(&tbs).unwrap())
    }
}

fn a_rrset(owner: &str) -> Vec<Record> {
    let mut r = Record::from_rdata(name(owner), 300, RData::A(A(Ipv4Addr::new(192, 0, 2, 1))));
    r.dns_class = DNSClass::IN;
    vec![r]
}

fn set(owner: &str, records: Vec<Record>, rrsigs: Vec<RRSIG>) -> SignedRrset {
    SignedRrset {
        owner: name(owner),
        rtype: records[0].record_type(),
        records,
        rrsigs,
    }
}

/// A forged RRSIG: the real one's fields with other times, and the
/// signature bytes of another RRSIG (it does not verify).
fn forged(real: &RRSIG, window: (u64, u64)) -> RRSIG {
    let mut input = real.input().clone();
    input.sig_inception = (window.0 as u32).into();
    input.sig_expiration = (window.1 as u32).into();
    RRSIG::from_sig(input, real.sig().to_vec())
}

fn believed(s: &SignedRrset, zone: &str, keys: &[DNSKEY]) -> Option<Signature> {
    let zone = name(zone);
    let mut budget = MAX_VERIFICATIONS;
    believe(s, |z| (*z == zone).then_some(keys), NOW, &mut budget)
}

#[test]
fn rfc4034_a_forged_rrsig_beside_the_real_one_is_not_believed() {
    let key = ZoneKey::generate();
    let rrset = a_rrset("xmpp.example.org.");
    let real = key.sign("example.org.", &rrset, (NOW - DAY, NOW + 30 * DAY));
    let keys = [key.dnskey.clone()];
    // The forgery comes first (as if the validator's cache had marked it):
    // one that "expires in 1 hour", one that hides the expiry until 2100.
    for window in [(NOW - DAY, NOW + 3600), (NOW - DAY, 4_102_444_800)] {
        let s = set(
            "xmpp.example.org.",
            rrset.clone(),
            vec![forged(&real, window), real.clone()],
        );
        let sig = believed(&s, "example.org.", &keys).expect("the real one verifies");
        assert_eq!(
            (sig.inception, sig.expiration, sig.signer.as_str()),
            (NOW - DAY, NOW + 30 * DAY, "example.org")
        );
        assert_eq!(
            (sig.name.as_str(), sig.rtype.as_str()),
            ("xmpp.example.org", "A")
        );
    }
}

#[test]
fn rfc4034_a_forged_rrsig_alone_gives_no_signature() {
    let key = ZoneKey::generate();
    let rrset = a_rrset("xmpp.example.org.");
    let real = key.sign("example.org.", &rrset, (NOW - DAY, NOW + 30 * DAY));
    let s = set(
        "xmpp.example.org.",
        rrset.clone(),
        vec![forged(&real, (NOW - DAY, NOW + 3600))],
    );
    assert_eq!(
        believed(&s, "example.org.", std::slice::from_ref(&key.dnskey)),
        None
    );
    // Signed by a key the zone does not publish: nothing either.
    let stranger = ZoneKey::generate();
    let s = set("xmpp.example.org.", rrset.clone(), vec![real]);
    assert_eq!(believed(&s, "example.org.", &[stranger.dnskey]), None);
    // Altered data under a real signature: nothing.
    let mut altered = rrset;
    altered[0].data = RData::A(A(Ipv4Addr::new(203, 0, 113, 66)));
    let real = key.sign(
        "example.org.",
        &a_rrset("xmpp.example.org."),
        (NOW - DAY, NOW + DAY),
    );
    let s = set("xmpp.example.org.", altered, vec![real]);
    assert_eq!(believed(&s, "example.org.", &[key.dnskey]), None);
}

#[test]
fn a_signer_that_is_not_an_ancestor_is_ignored() {
    // The attacker signs with its own zone's key, and that zone's keys are
    // secure: still not a signer of xmpp.example.org.
    let key = ZoneKey::generate();
    let rrset = a_rrset("xmpp.example.org.");
    let alien = key.sign("attacker.example.", &rrset, (NOW - DAY, NOW + DAY));
    let s = set("xmpp.example.org.", rrset.clone(), vec![alien]);
    assert_eq!(
        believed(&s, "attacker.example.", std::slice::from_ref(&key.dnskey)),
        None
    );
    assert!(s.candidate_signers(NOW).is_empty());
    // A sibling's child is no ancestor either; an ancestor is.
    let sibling = key.sign("other.example.org.", &rrset, (NOW - DAY, NOW + DAY));
    let org = key.sign("org.", &rrset, (NOW - DAY, NOW + DAY));
    let s = set("xmpp.example.org.", rrset, vec![sibling, org]);
    assert_eq!(s.candidate_signers(NOW), vec![name("org.")]);
    assert_eq!(believed(&s, "org.", &[key.dnskey]).unwrap().signer, "org");
}

#[test]
fn rfc4034_a_ds_is_signed_by_a_proper_ancestor() {
    let key = ZoneKey::generate();
    let mut ds = a_rrset("example.org.");
    // Any RRset type stands in: only the covered type and owner matter here.
    ds[0].data = RData::DNSSEC(DNSSECRData::DS(
        hickory_resolver::proto::dnssec::rdata::DS::new(
            1,
            Algorithm::ECDSAP256SHA256,
            hickory_resolver::proto::dnssec::DigestType::SHA256,
            vec![0; 32],
        ),
    ));
    let by_child = key.sign("example.org.", &ds, (NOW - DAY, NOW + DAY));
    let s = set("example.org.", ds.clone(), vec![by_child]);
    assert_eq!(
        believed(&s, "example.org.", std::slice::from_ref(&key.dnskey)),
        None
    );
    let by_parent = key.sign("org.", &ds, (NOW - DAY, NOW + DAY));
    let s = set("example.org.", ds, vec![by_parent]);
    assert_eq!(believed(&s, "org.", &[key.dnskey]).unwrap().signer, "org");
}

#[test]
fn rfc4034_outside_its_window_a_signature_is_not_believed() {
    let key = ZoneKey::generate();
    let rrset = a_rrset("xmpp.example.org.");
    let keys = [key.dnskey.clone()];
    for window in [(NOW + 60, NOW + DAY), (NOW - 2 * DAY, NOW - DAY)] {
        let s = set(
            "xmpp.example.org.",
            rrset.clone(),
            vec![key.sign("example.org.", &rrset, window)],
        );
        assert_eq!(believed(&s, "example.org.", &keys), None, "{window:?}");
    }
}

#[test]
fn rfc4034_times_are_serial_numbers_read_near_now() {
    // 2106: the u32 wrapped. A window from just before the wrap to just after.
    let now = (1u64 << 32) + 1000;
    assert_eq!(absolute((now - 5000) as u32, now), now - 5000);
    assert_eq!(
        absolute(((now + 7 * DAY) & 0xffff_ffff) as u32, now),
        now + 7 * DAY
    );
    assert_eq!(absolute((NOW - DAY) as u32, NOW), NOW - DAY);
    assert_eq!(absolute((NOW + DAY) as u32, NOW), NOW + DAY);
    // Before the wrap, a time just after it is ahead, not 136 years back.
    let before = (1u64 << 32) - 100;
    assert_eq!(absolute(50, before), (1u64 << 32) + 50);
}

#[test]
fn verifications_are_bounded_per_rrset_and_in_all() {
    let key = ZoneKey::generate();
    let rrset = a_rrset("xmpp.example.org.");
    let real = key.sign("example.org.", &rrset, (NOW - DAY, NOW + 30 * DAY));
    let keys = [key.dnskey.clone()];
    // Forgeries that pass every check but the signature push the real one
    // past the per-RRset limit: no signature rather than a false one.
    let mut rrsigs: Vec<RRSIG> = (0..MAX_TRIES_PER_RRSET as u64)
        .map(|i| forged(&real, (NOW - DAY, NOW + i + 1)))
        .collect();
    rrsigs.push(real.clone());
    let s = set("xmpp.example.org.", rrset.clone(), rrsigs);
    let zone = name("example.org.");
    let mut budget = MAX_VERIFICATIONS;
    assert_eq!(
        believe(&s, |z| (*z == zone).then_some(&keys[..]), NOW, &mut budget),
        None
    );
    assert_eq!(budget, MAX_VERIFICATIONS - MAX_TRIES_PER_RRSET);
    // With the check's budget spent, nothing is verified.
    let s = set("xmpp.example.org.", rrset, vec![real]);
    let mut budget = 0;
    assert_eq!(
        believe(&s, |z| (*z == zone).then_some(&keys[..]), NOW, &mut budget),
        None
    );
    let mut budget = 1;
    assert!(believe(&s, |z| (*z == zone).then_some(&keys[..]), NOW, &mut budget).is_some());
    assert_eq!(budget, 0);
}

#[test]
fn the_validators_mark_on_a_forged_rrsig_does_not_make_it_believed() {
    // hickory's validation cache marks the RRSIG at a cached index: here
    // the forged one carries the mark, the real one does not.
    use hickory_resolver::proto::dnssec::Proof;
    let key = ZoneKey::generate();
    let rrset = a_rrset("xmpp.example.org.");
    let real = key.sign("example.org.", &rrset, (NOW - DAY, NOW + 30 * DAY));
    let as_record = |sig: RRSIG, proof: Proof| {
        let data = RData::DNSSEC(DNSSECRData::RRSIG(sig));
        let mut r = Record::from_rdata(name("xmpp.example.org."), 300, data);
        r.proof = proof;
        r
    };
    let mut records = rrset.clone();
    records.push(as_record(real.clone(), Proof::Indeterminate));
    records.push(as_record(
        forged(&real, (NOW - DAY, NOW + 3600)),
        Proof::Secure,
    ));
    let set = super::super::signatures::signed_rrset(
        &records,
        "xmpp.example.org",
        hickory_resolver::proto::rr::RecordType::A,
    )
    .unwrap();
    // The marked one is tried first, fails, and the real one stands.
    assert_eq!(
        set.rrsigs[0].input().sig_expiration.get() as u64,
        NOW + 3600
    );
    let sig = believed(&set, "example.org.", std::slice::from_ref(&key.dnskey)).unwrap();
    assert_eq!(sig.expiration, NOW + 30 * DAY);
}
