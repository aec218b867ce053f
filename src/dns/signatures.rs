//! The signatures validated answers rest on: when each runs out.
//!
//! For every RRset a validated answer used (its CNAME links and its
//! records), the timing of a signature over it that verifies: the signer,
//! the RRset's original TTL, inception and expiration (RFC 4034 §3.1).
//! Answers carry the evidence ([`SignedRrset`]: the records and every RRSIG
//! that came with them); which signature to believe is decided in
//! [`verify`](super::verify), against the signer zone's secure DNSKEY
//! records. An RRset without a signature that verifies has no timing: an
//! unverified RRSIG is never taken (any path can add RRSIG records).
//!
//! The DNSKEY RRsets of the signer zones and of the zones above them up to
//! the root, and the DS RRsets in their parents, are asked through the same
//! validating resolver by [`Resolver::signatures`](super::Resolver::signatures)
//! (they give the keys, and have signatures of their own). This module
//! judges nothing: the check turns these into horizons.

use std::collections::HashMap;

use hickory_resolver::proto::dnssec::rdata::{DNSSECRData, DNSKEY, DS, RRSIG};
use hickory_resolver::proto::dnssec::Proof;
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

use super::answer::positive;
use super::keyzone::zone_keys;
pub use super::verify::SignedRrset;
use super::verify::{believe, MAX_VERIFICATIONS};
use super::{name_to_string, Resolver, Security};
use crate::horizon::ZoneKeys;

/// Most zones whose DNSKEY and DS RRsets one check asks for: the zones of
/// a domain and its hosts, and their parents up to the root, are a handful;
/// a hostile zone must not fan us out.
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

fn rrsig(record: &Record) -> Option<&RRSIG> {
    match &record.data {
        RData::DNSSEC(DNSSECRData::RRSIG(s)) => Some(s),
        _ => None,
    }
}

/// The `rtype` RRset at `owner` among `records` (an answer section with its
/// RRSIGs) with the RRSIGs over it, the one the validator marked first.
/// None when no record of it is there.
pub(super) fn signed_rrset(
    records: &[Record],
    owner: &str,
    rtype: RecordType,
) -> Option<SignedRrset> {
    let at_owner = || records.iter().filter(|r| name_to_string(&r.name) == owner);
    let rrset: Vec<Record> = at_owner()
        .filter(|r| r.record_type() == rtype)
        .cloned()
        .collect();
    let first = rrset.first()?;
    let mut covering: Vec<(&Record, &RRSIG)> = at_owner()
        .filter_map(|r| rrsig(r).map(|s| (r, s)))
        .filter(|(_, s)| s.input().type_covered == rtype)
        .collect();
    // Stable: the marked one first, the others in the order they came.
    covering.sort_by_key(|(r, _)| r.proof != Proof::Secure);
    Some(SignedRrset {
        owner: first.name.clone(),
        rtype,
        rrsigs: covering.into_iter().map(|(_, s)| s.clone()).collect(),
        records: rrset,
    })
}

/// The RRsets `used` ((owner, type) pairs) among `records`, each once.
pub(super) fn signed_rrsets(records: &[Record], used: &[(String, RecordType)]) -> Vec<SignedRrset> {
    let mut out = Vec::new();
    merge(
        &mut out,
        used.iter()
            .filter_map(|(owner, rtype)| signed_rrset(records, owner, *rtype)),
    );
    out
}

/// Adds `more` to `into`, each RRset once (the first seen stays).
pub fn merge(into: &mut Vec<SignedRrset>, more: impl IntoIterator<Item = SignedRrset>) {
    for set in more {
        if !into.iter().any(|s| s.same_rrset(&set)) {
            into.push(set);
        }
    }
}

/// The zones to fetch keys for, in order: those the validator's marks
/// and the DS RRsets name first, the other plausible signers after.
#[derive(Default)]
struct Zones {
    first: Vec<Name>,
    then: Vec<Name>,
    done: Vec<Name>,
    left_out: Vec<Name>,
}

impl Zones {
    fn add(&mut self, set: &SignedRrset, now: u64) {
        for (i, zone) in set.candidate_signers(now).into_iter().enumerate() {
            let queue = if i == 0 {
                &mut self.first
            } else {
                &mut self.then
            };
            queue.push(zone);
        }
    }

    /// The next zone to fetch, each once; past [`MAX_KEY_ZONES`] the rest
    /// are counted as left out.
    fn next(&mut self) -> Option<Name> {
        loop {
            let zone = match self.first.is_empty() {
                false => self.first.remove(0),
                true if !self.then.is_empty() => self.then.remove(0),
                true => return None,
            };
            if self.done.contains(&zone) || self.left_out.contains(&zone) {
                continue;
            }
            if self.done.len() >= MAX_KEY_ZONES {
                self.left_out.push(zone);
                continue;
            }
            self.done.push(zone.clone());
            return Some(zone);
        }
    }
}

impl Resolver {
    /// The signatures to believe over `rrsets` and over the chain of trust
    /// they rest on: the DNSKEY RRset of each signer zone and of every zone
    /// above it up to the root, and each one's DS RRset in its parent.
    /// Secure RRsets only; a lookup that fails or is not secure ends its
    /// branch. At most [`MAX_KEY_ZONES`] zones: the second value says how
    /// many were left out. The validator fetched these RRsets already, so
    /// the lookups are answered from its key cache. With them, per zone
    /// that signs one of `rrsets` (not the zones above) and whose DS and
    /// DNSKEY RRsets are both secure, which DS matches which key
    /// ([`ZoneKeys`], the DS TTL from a signature that verifies).
    pub async fn signatures(
        &self,
        rrsets: &[SignedRrset],
    ) -> (Vec<Signature>, Vec<ZoneKeys>, usize) {
        let now = crate::horizon::unix(self.clock.now());
        let mut zones = Zones::default();
        for set in rrsets {
            zones.add(set, now);
        }
        let mut keys: HashMap<String, Vec<DNSKEY>> = HashMap::new();
        let mut chain: Vec<SignedRrset> = Vec::new();
        let mut delegations: Vec<(Name, Vec<DS>)> = Vec::new();
        while let Some(zone) = zones.next() {
            let (dnskey, ds) = tokio::join!(self.secure_rrset(&zone, RecordType::DNSKEY), async {
                match zone.is_root() {
                    true => None,
                    false => self.secure_rrset(&zone, RecordType::DS).await,
                }
            });
            if let Some(set) = dnskey {
                keys.insert(name_to_string(&zone), dnskeys(&set.records));
                merge(&mut chain, [set]);
            }
            if let Some(set) = ds {
                delegations.push((zone.clone(), ds_records(&set.records)));
                zones.add(&set, now);
                merge(&mut chain, [set]);
            }
        }
        let mut budget = MAX_VERIFICATIONS;
        let mut out: Vec<Signature> = Vec::new();
        for set in rrsets.iter().chain(&chain) {
            let lookup = |zone: &Name| keys.get(&name_to_string(zone)).map(Vec::as_slice);
            if let Some(sig) = believe(set, lookup, now, &mut budget) {
                out.push(sig);
            }
        }
        // The zones that sign the domain's own records: the TLD and the
        // root above them are not the admin's to roll.
        let own: Vec<&str> = out
            .iter()
            .filter(|s| crate::horizon::is_own_record(&s.rtype))
            .map(|s| s.signer.as_str())
            .collect();
        let mut pairs = Vec::new();
        for (zone, ds) in &delegations {
            let name = name_to_string(zone);
            let Some(keys) = keys.get(&name).filter(|_| own.contains(&name.as_str())) else {
                continue;
            };
            let mut pair = zone_keys(zone, keys, ds);
            pair.ds_ttl = out
                .iter()
                .find(|s| s.rtype == "DS" && s.name == pair.zone)
                .map(|s| s.original_ttl);
            pairs.push(pair);
        }
        (out, pairs, zones.left_out.len())
    }

    /// A secure `rtype` RRset at `name` with its RRSIGs; None otherwise.
    async fn secure_rrset(&self, name: &Name, rtype: RecordType) -> Option<SignedRrset> {
        let lookup = self.inner.lookup(name.clone(), rtype).await.ok()?;
        let answer = positive(name, lookup.answers(), rtype, &|_| Some(()));
        match answer.security {
            Security::Secure => answer.signed.into_iter().find(|s| s.rtype == rtype),
            _ => None,
        }
    }
}

/// The DS records among `records`.
fn ds_records(records: &[Record]) -> Vec<DS> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::DNSSEC(DNSSECRData::DS(d)) => Some(d.clone()),
            _ => None,
        })
        .collect()
}

/// The DNSKEY records among `records`.
fn dnskeys(records: &[Record]) -> Vec<DNSKEY> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::DNSSEC(DNSSECRData::DNSKEY(k)) => Some(k.clone()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::dnssec::rdata::SigInput;
    use hickory_resolver::proto::dnssec::Algorithm;
    use hickory_resolver::proto::rr::rdata::A;

    const NOW: u64 = 1_800_000_000;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn sig_record(owner: &str, covered: RecordType, signer: &str, proof: Proof) -> Record {
        let input = SigInput {
            type_covered: covered,
            algorithm: Algorithm::ECDSAP256SHA256,
            num_labels: 3,
            original_ttl: 3600,
            sig_expiration: ((NOW + 100) as u32).into(),
            sig_inception: ((NOW - 100) as u32).into(),
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

    fn signers(set: &SignedRrset) -> Vec<String> {
        set.rrsigs
            .iter()
            .map(|s| name_to_string(&s.input().signer_name))
            .collect()
    }

    #[test]
    fn an_rrset_comes_with_its_rrsigs_the_marked_one_first() {
        let records = [
            sig_record(
                "xmpp.example.org.",
                RecordType::A,
                "org.",
                Proof::Indeterminate,
            ),
            a("xmpp.example.org."),
            sig_record(
                "xmpp.example.org.",
                RecordType::A,
                "example.org.",
                Proof::Secure,
            ),
            // Over another type, or at another owner: not this RRset's.
            sig_record(
                "xmpp.example.org.",
                RecordType::AAAA,
                "example.org.",
                Proof::Secure,
            ),
            sig_record(
                "other.example.org.",
                RecordType::A,
                "example.org.",
                Proof::Secure,
            ),
            a("other.example.org."),
        ];
        let set = signed_rrset(&records, "xmpp.example.org", RecordType::A).unwrap();
        assert_eq!(set.records, vec![a("xmpp.example.org.")]);
        assert_eq!(signers(&set), vec!["example.org", "org"]);
        // The marked signer is the first zone asked for.
        assert_eq!(
            set.candidate_signers(NOW),
            vec![name("example.org."), name("org.")]
        );
        // No record of the type: nothing, whatever RRSIGs there are.
        assert_eq!(
            signed_rrset(&records, "xmpp.example.org", RecordType::AAAA),
            None
        );
    }

    #[test]
    fn each_rrset_is_kept_once() {
        let records = [
            a("a.example."),
            sig_record("a.example.", RecordType::A, "example.", Proof::Secure),
        ];
        let used = [
            ("a.example".to_owned(), RecordType::A),
            ("a.example".to_owned(), RecordType::A),
            ("b.example".to_owned(), RecordType::A),
        ];
        let sets = signed_rrsets(&records, &used);
        assert_eq!(sets.len(), 1);
        let mut all = sets.clone();
        merge(&mut all, sets.clone());
        assert_eq!(all, sets);
    }

    #[test]
    fn zones_are_fetched_once_and_left_out_once() {
        let mut zones = Zones::default();
        // More zones than a check looks at, each named several times (as
        // the DS RRsets of many children name their parent).
        let many: Vec<Name> = (0..MAX_KEY_ZONES + 3)
            .map(|i| name(&format!("z{i}.example.")))
            .collect();
        for _ in 0..3 {
            zones.first.extend(many.iter().cloned());
        }
        let mut fetched = Vec::new();
        while let Some(z) = zones.next() {
            fetched.push(z);
        }
        assert_eq!(fetched, many[..MAX_KEY_ZONES].to_vec());
        assert_eq!(zones.left_out.len(), 3);
    }

    #[test]
    fn the_zones_the_validator_marked_come_before_other_signers() {
        let records = [
            a("xmpp.example.org."),
            sig_record(
                "xmpp.example.org.",
                RecordType::A,
                "example.org.",
                Proof::Secure,
            ),
            sig_record(
                "xmpp.example.org.",
                RecordType::A,
                "org.",
                Proof::Indeterminate,
            ),
        ];
        let set = signed_rrset(&records, "xmpp.example.org", RecordType::A).unwrap();
        let mut zones = Zones::default();
        zones.add(&set, NOW);
        zones.first.push(name("example."));
        assert_eq!(zones.next(), Some(name("example.org.")));
        assert_eq!(zones.next(), Some(name("example.")));
        assert_eq!(zones.next(), Some(name("org.")));
        assert_eq!(zones.next(), None);
    }
}
