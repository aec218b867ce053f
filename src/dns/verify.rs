//! Which signature over an RRset to believe: one that verifies, now.
//!
//! hickory marks the RRSIG its validator used, but that mark is only a
//! hint: on a validation-cache hit it marks the RRSIG at the index cached
//! from an earlier response, and the cache key covers the RRset, not its
//! RRSIGs, so any path that can add an RRSIG can have its own one marked.
//! The validator's verdict on the RRset stands (it verified some
//! signature); which signature's times CertWatch reports is decided here.
//! A signature is believed only when
//!
//! - its signer is the owner or an ancestor of it (a proper ancestor for a
//!   DS RRset, which lives in the parent zone);
//! - the check's clock lies inside its window, inception ≤ now ≤
//!   expiration, each `u32` read relative to now in RFC 4034 §3.1.5 serial
//!   arithmetic (so the 2106 wrap reads right);
//! - its key tag and algorithm name a zone key among the signer's secure
//!   DNSKEY records, and it verifies with that key over the RRset.
//!
//! The one the validator marked is tried first, then the others in the
//! order they came; the first that holds is taken. A double-signed zone's
//! horizon may so move between checks. Verifications are bounded per
//! RRset ([`MAX_TRIES_PER_RRSET`]) and per check ([`MAX_VERIFICATIONS`]);
//! an RRset none of whose signatures holds within them has no horizon.

use hickory_resolver::proto::dnssec::rdata::{DNSKEY, RRSIG};
use hickory_resolver::proto::dnssec::Verifier;
use hickory_resolver::proto::rr::{DNSClass, Name, Record, RecordType};

use super::name_to_string;
use super::signatures::Signature;

/// Most signature verifications spent on one RRset: a zone signs an RRset
/// with one key per algorithm, two or three during a rollover.
pub const MAX_TRIES_PER_RRSET: usize = 4;

/// Most signature verifications one check spends on horizons: a check
/// uses some twenty RRsets (the domain's, and the keys up to the root).
pub const MAX_VERIFICATIONS: usize = 128;

/// An RRset of a secure answer with the RRSIGs that came with it: evidence,
/// not yet believed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedRrset {
    /// The owner name, as the answer gave it.
    pub(super) owner: Name,
    /// The RRset's type.
    pub(super) rtype: RecordType,
    /// Its records.
    pub(super) records: Vec<Record>,
    /// The RRSIGs over it, the one the validator marked first.
    pub(super) rrsigs: Vec<RRSIG>,
}

impl SignedRrset {
    /// Whether `other` is the same RRset (owner and type).
    pub(super) fn same_rrset(&self, other: &SignedRrset) -> bool {
        self.rtype == other.rtype && self.owner == other.owner
    }

    /// The signers worth fetching keys for: owner or ancestors, with the
    /// window holding at `now`, the marked one first, each once.
    pub(super) fn candidate_signers(&self, now: u64) -> Vec<Name> {
        let mut out: Vec<Name> = Vec::new();
        for s in self.rrsigs.iter().filter(|s| self.plausible(s, now)) {
            let signer = &s.input().signer_name;
            if !out.contains(signer) {
                out.push(signer.clone());
            }
        }
        out
    }

    /// The checks that cost no cryptography: signer, type and window.
    fn plausible(&self, rrsig: &RRSIG, now: u64) -> bool {
        let input = rrsig.input();
        let signer = &input.signer_name;
        let placed = match self.rtype {
            RecordType::DS => signer.zone_of(&self.owner) && *signer != self.owner,
            _ => signer.zone_of(&self.owner),
        };
        placed && input.type_covered == self.rtype && window(rrsig, now).is_some()
    }
}

/// A DNSSEC time (`u32`) as UNIX seconds: the instant nearest `now` that
/// has these low 32 bits (RFC 4034 §3.1.5 serial arithmetic).
pub fn absolute(t: u32, now: u64) -> u64 {
    // Reinterpreting the difference as signed is the serial arithmetic.
    let diff = t.wrapping_sub(now as u32) as i32;
    now.saturating_add_signed(i64::from(diff))
}

/// A signature's (inception, expiration) in UNIX seconds, when `now` lies
/// inside it.
fn window(rrsig: &RRSIG, now: u64) -> Option<(u64, u64)> {
    let input = rrsig.input();
    let inception = absolute(input.sig_inception.get(), now);
    let expiration = absolute(input.sig_expiration.get(), now);
    (inception <= now && now <= expiration).then_some((inception, expiration))
}

/// The signature over `set` to believe at `now`, with `keys` giving a
/// zone's secure DNSKEY records; each verification spends one of `budget`.
pub(super) fn believe<'k>(
    set: &SignedRrset,
    keys: impl Fn(&Name) -> Option<&'k [DNSKEY]>,
    now: u64,
    budget: &mut usize,
) -> Option<Signature> {
    let mut tries = 0;
    for rrsig in set.rrsigs.iter().filter(|s| set.plausible(s, now)) {
        let input = rrsig.input();
        let Some(zone_keys) = keys(&input.signer_name) else {
            continue;
        };
        let matching = zone_keys.iter().filter(|k| {
            k.zone_key()
                && !k.revoke()
                && k.algorithm() == input.algorithm
                && k.calculate_key_tag().ok() == Some(input.key_tag)
        });
        for key in matching {
            if tries >= MAX_TRIES_PER_RRSET || *budget == 0 {
                return None;
            }
            tries += 1;
            *budget -= 1;
            let verified = key
                .verify_rrsig(&set.owner, DNSClass::IN, rrsig, set.records.iter())
                .is_ok();
            if verified {
                let (inception, expiration) = window(rrsig, now)?;
                return Some(Signature {
                    name: name_to_string(&set.owner),
                    rtype: input.type_covered.to_string(),
                    signer: name_to_string(&input.signer_name),
                    original_ttl: input.original_ttl,
                    inception,
                    expiration,
                });
            }
        }
    }
    None
}

#[cfg(test)]
#[path = "verify_tests.rs"]
pub(super) mod tests;
