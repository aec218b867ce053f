//! Why an answer failed DNSSEC validation, in the admin's words.
//!
//! The validator only says "bogus". When it does, the same names are asked
//! again without validation (still with CD=1, so a validating resolver in
//! front hands the data over) and the usual causes are looked for, zone
//! first: a DS in the parent that matches no DNSKEY, a DS for a zone served
//! unsigned, expired or not yet valid signatures, missing signatures. What
//! is left is a signature that does not verify: altered or forged data.
//! Only the wording depends on this; the verdict is the validator's.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_resolver::proto::dnssec::rdata::{DNSSECRData, DNSKEY, DS, RRSIG};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};

use super::cd::CdProvider;
use super::name_to_string;
use crate::clock::rfc3339;

/// A resolver that does not validate, for looking at what failed.
pub(super) type Raw = hickory_resolver::Resolver<CdProvider>;

/// Why the `rtype` records at `name` (or their denial) failed validation.
pub(super) async fn why_bogus(
    raw: &Raw,
    name: &Name,
    rtype: RecordType,
    now: SystemTime,
) -> String {
    let sigs = records(raw, name, RecordType::RRSIG).await;
    let zone = sigs
        .iter()
        .filter_map(rrsig)
        .map(|s| s.input().signer_name.clone())
        .next()
        .or(zone_of(raw, name).await);
    if let Some(zone) = zone {
        if let Some(why) = zone_problem(raw, &zone, now).await {
            return why;
        }
    }
    let covering: Vec<&RRSIG> = sigs
        .iter()
        .filter_map(rrsig)
        .filter(|s| s.input().type_covered == rtype)
        .collect();
    let what = format!("the {rtype} records at {}", name_to_string(name));
    if covering.is_empty() {
        return if records(raw, name, rtype).await.is_empty() {
            format!(
                "the proof that {} has no {rtype} records does not validate",
                name_to_string(name)
            )
        } else {
            format!("no signature covers {what} (RRSIG missing)")
        };
    }
    timing(&covering, now, &what).unwrap_or_else(|| {
        format!(
            "a signature over {what} does not verify: the data was altered or forged on the way"
        )
    })
}

/// A fault of the whole zone: its delegation or its keys.
async fn zone_problem(raw: &Raw, zone: &Name, now: SystemTime) -> Option<String> {
    let z = name_to_string(zone);
    let ds: Vec<DS> = records(raw, zone, RecordType::DS)
        .await
        .iter()
        .filter_map(|r| match &r.data {
            RData::DNSSEC(DNSSECRData::DS(ds)) => Some(ds.clone()),
            _ => None,
        })
        .collect();
    let key_records = records(raw, zone, RecordType::DNSKEY).await;
    let keys: Vec<&DNSKEY> = key_records
        .iter()
        .filter_map(|r| match &r.data {
            RData::DNSSEC(DNSSECRData::DNSKEY(k)) => Some(k),
            _ => None,
        })
        .collect();
    if !ds.is_empty() && keys.is_empty() {
        return Some(format!(
            "the parent zone has a DS record for {z}, but {z} publishes no DNSKEY: it is served unsigned (remove the DS at the registrar, or sign the zone again)"
        ));
    }
    if !ds.is_empty()
        && !ds
            .iter()
            .any(|d| keys.iter().any(|k| d.covers(zone, k).unwrap_or(false)))
    {
        let tags = |t: Vec<u16>| t.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
        return Some(format!(
            "the DS record(s) for {z} in its parent zone (key tag {}) match none of its DNSKEY records (key tag {}): publish the DS of the current KSK",
            tags(ds.iter().map(DS::key_tag).collect()),
            tags(keys.iter().filter_map(|k| k.calculate_key_tag().ok()).collect()),
        ));
    }
    let sigs = records(raw, zone, RecordType::RRSIG).await;
    let key_sigs: Vec<&RRSIG> = sigs
        .iter()
        .filter_map(rrsig)
        .filter(|s| s.input().type_covered == RecordType::DNSKEY)
        .collect();
    timing(&key_sigs, now, &format!("the DNSKEY records of {z}"))
}

/// "Expired" or "not yet valid" when every signature is out of its window.
fn timing(sigs: &[&RRSIG], now: SystemTime, what: &str) -> Option<String> {
    let at = |secs: u32| UNIX_EPOCH + Duration::from_secs(u64::from(secs));
    let windows: Vec<(SystemTime, SystemTime)> = sigs
        .iter()
        .map(|s| {
            (
                at(s.input().sig_inception.get()),
                at(s.input().sig_expiration.get()),
            )
        })
        .collect();
    if windows.is_empty() {
        return None;
    }
    if windows.iter().all(|(_, until)| *until < now) {
        let last = windows.iter().map(|(_, until)| *until).max()?;
        return Some(format!(
            "the signatures over {what} expired on {} (re-sign the zone; is its signer running?)",
            rfc3339(last)
        ));
    }
    if windows.iter().all(|(from, _)| *from > now) {
        let first = windows.iter().map(|(from, _)| *from).min()?;
        return Some(format!(
            "the signatures over {what} start only at {}: the signer's clock runs ahead (or ours behind), and validators without a skew allowance, CertWatch's among them, reject them until then",
            rfc3339(first)
        ));
    }
    None
}

fn rrsig(r: &Record) -> Option<&RRSIG> {
    match &r.data {
        RData::DNSSEC(DNSSECRData::RRSIG(s)) => Some(s),
        _ => None,
    }
}

/// The records of `rtype` at `name`, unvalidated; nothing when the lookup fails.
async fn records(raw: &Raw, name: &Name, rtype: RecordType) -> Vec<Record> {
    match raw.lookup(name.clone(), rtype).await {
        Ok(lookup) => lookup
            .answers()
            .iter()
            .filter(|r| r.record_type() == rtype && r.name == *name)
            .cloned()
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The zone that holds `name`, from an unvalidated SOA.
pub(super) async fn zone_of(raw: &Raw, name: &Name) -> Option<Name> {
    use hickory_resolver::net::{DnsError, NetError};
    match raw.lookup(name.clone(), RecordType::SOA).await {
        Ok(lookup) => lookup
            .answers()
            .iter()
            .chain(lookup.authorities())
            .find(|r| r.record_type() == RecordType::SOA)
            .map(|r| r.name.clone()),
        Err(NetError::Dns(DnsError::NoRecordsFound(nr))) => nr.soa.as_ref().map(|s| s.name.clone()),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_resolver::proto::dnssec::rdata::SigInput;
    use hickory_resolver::proto::dnssec::Algorithm;

    fn sig(from: u32, until: u32) -> RRSIG {
        let input = SigInput {
            type_covered: RecordType::TLSA,
            algorithm: Algorithm::ECDSAP256SHA256,
            num_labels: 3,
            original_ttl: 300,
            sig_expiration: until.into(),
            sig_inception: from.into(),
            key_tag: 1,
            signer_name: Name::from_ascii("example.org.").unwrap(),
        };
        RRSIG::from_sig(input, vec![0; 64])
    }

    #[test]
    fn expired_and_early_signatures_are_named_with_their_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let expired = [sig(1_577_836_800, 1_580_515_200)];
        let refs: Vec<&RRSIG> = expired.iter().collect();
        let why = timing(&refs, now, "the TLSA records at x").unwrap();
        assert!(why.contains("expired on 2020-02-01T00:00:00Z"), "{why}");
        let early = [sig(1_900_000_000, 1_950_000_000)];
        let refs: Vec<&RRSIG> = early.iter().collect();
        assert!(timing(&refs, now, "x")
            .unwrap()
            .contains("start only at 2030-03-17T17:46:40Z"));
        // One signature still in its window: not a timing problem.
        let mixed = [
            sig(1_577_836_800, 1_580_515_200),
            sig(1_700_000_000, 1_900_000_000),
        ];
        let refs: Vec<&RRSIG> = mixed.iter().collect();
        assert_eq!(timing(&refs, now, "x"), None);
        assert_eq!(timing(&[], now, "x"), None);
    }
}
