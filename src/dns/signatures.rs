//! The signatures validated answers rest on: when each runs out.
//!
//! For every RRset a validated answer used (its CNAME links and its
//! records), the timing of the RRSIG the validator used: the signer, the
//! RRset's original TTL, inception and expiration (RFC 4034 §3.1). Only
//! secure RRsets have one. An RRSIG the validator did not use is never
//! taken: it was not verified, and a forged one (any path can add RRSIG
//! records) would only make noise. When hickory marks none (it marks the
//! one it used), the earliest-expiring covering RRSIG of the RRset's zone
//! stands in.
//!
//! The DNSKEY RRsets of the zones on the way from the root, and the DS
//! RRsets in their parents, are asked through the same validating resolver
//! by [`Resolver::key_signatures`](super::Resolver::key_signatures). This
//! module judges nothing: the check turns these into horizons.

use hickory_resolver::proto::dnssec::rdata::{DNSSECRData, RRSIG};
use hickory_resolver::proto::dnssec::Proof;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

use super::answer::positive;
use super::{name_to_string, parse_name, Resolver, Security};

/// Most zones whose DNSKEY and DS signatures one check asks for: the
/// zones of a domain and its hosts, and their parents up to the root, are
/// a handful; a hostile zone must not fan us out.
pub const MAX_KEY_ZONES: usize = 16;

/// The timing of the signature over one RRset.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Signature {
    /// The RRset's owner, lowercase, without the trailing dot.
    pub name: String,
    /// The RRset's type: SRV, CNAME, A, AAAA, TLSA, DNSKEY or DS.
    pub rtype: String,
    /// The zone whose key made the signature (lowercase, no trailing dot;
    /// the root is `.`).
    pub signer: String,
    /// The RRset's TTL as the signature gives it (the original TTL).
    pub original_ttl: u32,
    /// The signature's inception (UNIX seconds).
    pub inception: u64,
    /// The signature's expiration (UNIX seconds).
    pub expiration: u64,
}

impl Signature {
    fn from_rrsig(owner: &Name, rrsig: &RRSIG) -> Signature {
        let input = rrsig.input();
        Signature {
            name: name_to_string(owner),
            rtype: input.type_covered.to_string(),
            signer: name_to_string(&input.signer_name),
            original_ttl: input.original_ttl,
            inception: u64::from(input.sig_inception.get()),
            expiration: u64::from(input.sig_expiration.get()),
        }
    }
}

fn rrsig(record: &Record) -> Option<&RRSIG> {
    match &record.data {
        RData::DNSSEC(DNSSECRData::RRSIG(s)) => Some(s),
        _ => None,
    }
}

/// The signature of the `rtype` RRset at `owner` among `records` (an
/// answer section with its RRSIGs): the one the validator marked secure,
/// else the earliest-expiring one from the zone of the first covering
/// RRSIG. None when no RRSIG covers it.
pub(super) fn signature_of(
    records: &[Record],
    owner: &str,
    rtype: RecordType,
) -> Option<Signature> {
    let covering: Vec<(&Record, &RRSIG)> = records
        .iter()
        .filter(|r| name_to_string(&r.name) == owner)
        .filter_map(|r| rrsig(r).map(|s| (r, s)))
        .filter(|(_, s)| s.input().type_covered == rtype)
        .collect();
    if let Some((r, s)) = covering.iter().find(|(r, _)| r.proof == Proof::Secure) {
        return Some(Signature::from_rrsig(&r.name, s));
    }
    let signer = &covering.first()?.1.input().signer_name;
    covering
        .iter()
        .filter(|(_, s)| &s.input().signer_name == signer)
        .min_by_key(|(_, s)| s.input().sig_expiration.get())
        .map(|(r, s)| Signature::from_rrsig(&r.name, s))
}

/// The signatures of the RRsets `used` ((owner, type) pairs) among
/// `records`, each once.
pub(super) fn signatures_of(records: &[Record], used: &[(String, RecordType)]) -> Vec<Signature> {
    let mut out: Vec<Signature> = Vec::new();
    for (owner, rtype) in used {
        if let Some(sig) = signature_of(records, owner, *rtype) {
            if !out.contains(&sig) {
                out.push(sig);
            }
        }
    }
    out
}

/// Adds `more` to `into`, each RRset once (the first seen stays).
pub fn merge(into: &mut Vec<Signature>, more: impl IntoIterator<Item = Signature>) {
    for sig in more {
        if !into
            .iter()
            .any(|s| s.name == sig.name && s.rtype == sig.rtype)
        {
            into.push(sig);
        }
    }
}

impl Resolver {
    /// The signatures the chain of trust to `zones` rests on: over the
    /// DNSKEY RRset of each zone and of every zone above it up to the root,
    /// and over each one's DS RRset in its parent (the parent is the DS
    /// signature's signer). Secure RRsets only; a lookup that fails or is
    /// not secure ends its branch. At most [`MAX_KEY_ZONES`] zones: the
    /// second value says how many were left out. The validator fetched these
    /// RRsets already, so the lookups are answered from its key cache.
    pub async fn key_signatures(&self, zones: &[String]) -> (Vec<Signature>, usize) {
        let mut todo: Vec<String> = zones.iter().rev().cloned().collect();
        let mut done: Vec<String> = Vec::new();
        let mut out = Vec::new();
        let mut left_out = 0;
        while let Some(zone) = todo.pop() {
            if done.contains(&zone) {
                continue;
            }
            if done.len() >= MAX_KEY_ZONES {
                left_out += 1;
                continue;
            }
            done.push(zone.clone());
            let root = zone == ".";
            let (keys, ds) =
                tokio::join!(self.rrset_signatures(&zone, RecordType::DNSKEY), async {
                    match root {
                        true => Vec::new(),
                        false => self.rrset_signatures(&zone, RecordType::DS).await,
                    }
                });
            merge(&mut out, keys);
            for sig in ds {
                if !todo.contains(&sig.signer) && !done.contains(&sig.signer) {
                    todo.push(sig.signer.clone());
                }
                merge(&mut out, [sig]);
            }
        }
        (out, left_out)
    }

    /// The signatures of a secure `rtype` RRset at `name`; nothing otherwise.
    async fn rrset_signatures(&self, name: &str, rtype: RecordType) -> Vec<Signature> {
        let Ok(qname) = parse_name(name) else {
            return Vec::new();
        };
        match self.inner.lookup(qname.clone(), rtype).await {
            Ok(lookup) => {
                let answer = positive(&qname, lookup.answers(), rtype, &|_| Some(()));
                match answer.security {
                    Security::Secure => answer.signatures,
                    _ => Vec::new(),
                }
            }
            Err(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::dnssec::rdata::SigInput;
    use hickory_resolver::proto::dnssec::Algorithm;
    use hickory_resolver::proto::rr::rdata::A;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn sig_record(
        owner: &str,
        covered: RecordType,
        signer: &str,
        (inception, expiration): (u32, u32),
        proof: Proof,
    ) -> Record {
        let input = SigInput {
            type_covered: covered,
            algorithm: Algorithm::ECDSAP256SHA256,
            num_labels: 3,
            original_ttl: 3600,
            sig_expiration: expiration.into(),
            sig_inception: inception.into(),
            key_tag: 1,
            signer_name: name(signer),
        };
        let data = RData::DNSSEC(DNSSECRData::RRSIG(RRSIG::from_sig(input, vec![0; 64])));
        let mut r = Record::from_rdata(name(owner), 300, data);
        r.proof = proof;
        r
    }

    fn a(owner: &str) -> Record {
        let mut r =
            Record::from_rdata(name(owner), 300, RData::A(A(std::net::Ipv4Addr::LOCALHOST)));
        r.proof = Proof::Secure;
        r
    }

    #[test]
    fn rfc4034_the_signature_the_validator_used_gives_the_timing() {
        let records = [
            a("xmpp.example.org."),
            // An unverified RRSIG that expires sooner: a forgery's noise.
            sig_record(
                "xmpp.example.org.",
                RecordType::A,
                "example.org.",
                (100, 200),
                Proof::Indeterminate,
            ),
            sig_record(
                "xmpp.example.org.",
                RecordType::A,
                "Example.org.",
                (1_000, 5_000),
                Proof::Secure,
            ),
        ];
        let sig = signature_of(&records, "xmpp.example.org", RecordType::A).unwrap();
        assert_eq!(
            sig,
            Signature {
                name: "xmpp.example.org".into(),
                rtype: "A".into(),
                signer: "example.org".into(),
                original_ttl: 3600,
                inception: 1_000,
                expiration: 5_000,
            }
        );
        // None covers AAAA, nor another owner.
        assert_eq!(
            signature_of(&records, "xmpp.example.org", RecordType::AAAA),
            None
        );
        assert_eq!(signature_of(&records, "example.org", RecordType::A), None);
    }

    #[test]
    fn without_a_marked_signature_the_earliest_of_the_zone_stands_in() {
        let records = [
            sig_record(
                "x.example.org.",
                RecordType::TLSA,
                "example.org.",
                (100, 900),
                Proof::Indeterminate,
            ),
            sig_record(
                "x.example.org.",
                RecordType::TLSA,
                "example.org.",
                (100, 700),
                Proof::Indeterminate,
            ),
            // Another signer (not the zone of the first): left out.
            sig_record(
                "x.example.org.",
                RecordType::TLSA,
                "org.",
                (100, 300),
                Proof::Indeterminate,
            ),
        ];
        let sig = signature_of(&records, "x.example.org", RecordType::TLSA).unwrap();
        assert_eq!((sig.expiration, sig.signer.as_str()), (700, "example.org"));
    }

    #[test]
    fn each_rrset_is_kept_once() {
        let records = [sig_record(
            "a.example.",
            RecordType::A,
            "example.",
            (1, 2),
            Proof::Secure,
        )];
        let used = [
            ("a.example".to_owned(), RecordType::A),
            ("a.example".to_owned(), RecordType::A),
            ("b.example".to_owned(), RecordType::A),
        ];
        let sigs = signatures_of(&records, &used);
        assert_eq!(sigs.len(), 1);
        let mut all = sigs.clone();
        merge(&mut all, sigs.clone());
        assert_eq!(all, sigs);
    }
}
