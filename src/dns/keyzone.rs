//! A zone's DS RRset in its parent against its DNSKEY RRset: which DS
//! matches which key (the DS digest computed over the DNSKEY, RFC 4034
//! §5.1.4), for the KSK rollover notes. Both RRsets come from secure
//! answers only (an on-path attacker cannot add a DS: the parent signs it).

use hickory_resolver::proto::dnssec::rdata::{DNSKEY, DS};
use hickory_resolver::proto::dnssec::Verifier;
use hickory_resolver::proto::rr::Name;

use super::name_to_string;
use crate::horizon::{DsSeen, KeySeen, ZoneKeys};

/// Most DS records, and most SEP keys, looked at per zone: a rollover
/// has two or three of each; a hostile zone must not make us hash more.
pub const MAX_PER_ZONE: usize = 8;

/// `zone`'s DS records against its DNSKEY records; the DS TTL unknown yet.
pub(super) fn zone_keys(zone: &Name, keys: &[DNSKEY], ds: &[DS]) -> ZoneKeys {
    let usable: Vec<&DNSKEY> = keys
        .iter()
        .filter(|k| k.zone_key() && !k.revoke())
        .take(4 * MAX_PER_ZONE)
        .collect();
    let ds: Vec<&DS> = ds.iter().take(MAX_PER_ZONE).collect();
    let covers = |d: &DS, k: &DNSKEY| d.covers(zone, k).unwrap_or(false);
    ZoneKeys {
        zone: name_to_string(zone),
        ds: ds
            .iter()
            .map(|d| DsSeen {
                key_tag: d.key_tag(),
                algorithm: u8::from(d.algorithm()),
                digest_type: u8::from(d.digest_type()),
                digest: hex::encode(d.digest()),
                matches: usable.iter().any(|k| covers(d, k)),
            })
            .collect(),
        keys: usable
            .iter()
            .filter(|k| k.secure_entry_point())
            .take(MAX_PER_ZONE)
            .filter_map(|k| {
                Some(KeySeen {
                    key_tag: k.calculate_key_tag().ok()?,
                    algorithm: u8::from(k.algorithm()),
                    matched: ds.iter().any(|d| covers(d, k)),
                })
            })
            .collect(),
        ds_ttl: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::verify::tests::ZoneKey;
    use hickory_resolver::proto::dnssec::DigestType;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    /// `key` with the SEP flag, as a KSK.
    fn ksk(key: &DNSKEY) -> DNSKEY {
        DNSKEY::new(true, true, false, key.public_key().clone())
    }

    fn ds_of(zone: &Name, key: &DNSKEY) -> DS {
        let digest = key.to_digest(zone, DigestType::SHA256).unwrap();
        DS::new(
            key.calculate_key_tag().unwrap(),
            key.algorithm(),
            DigestType::SHA256,
            digest.as_ref().to_vec(),
        )
    }

    #[test]
    fn a_ds_matches_the_key_whose_digest_it_is() {
        let zone = name("example.org.");
        let (a, b) = (
            ksk(&ZoneKey::generate().dnskey),
            ksk(&ZoneKey::generate().dnskey),
        );
        let zsk = ZoneKey::generate().dnskey;
        let zsk = DNSKEY::new(true, false, false, zsk.public_key().clone());
        // Two KSKs, a DS for the first only, and one DS for a key the zone
        // does not publish.
        let absent = ksk(&ZoneKey::generate().dnskey);
        let got = zone_keys(
            &zone,
            &[a.clone(), b.clone(), zsk.clone()],
            &[ds_of(&zone, &a), ds_of(&zone, &absent)],
        );
        assert_eq!(got.zone, "example.org");
        let matches: Vec<bool> = got.ds.iter().map(|d| d.matches).collect();
        assert_eq!(matches, vec![true, false]);
        assert_eq!(got.ds[0].key_tag, a.calculate_key_tag().unwrap());
        assert_eq!((got.ds[0].algorithm, got.ds[0].digest_type), (13, 2));
        assert_eq!(got.ds[0].digest.len(), 64);
        // The ZSK (no SEP flag) is not a KSK candidate.
        let keys: Vec<(u16, bool)> = got.keys.iter().map(|k| (k.key_tag, k.matched)).collect();
        assert_eq!(
            keys,
            vec![
                (a.calculate_key_tag().unwrap(), true),
                (b.calculate_key_tag().unwrap(), false)
            ]
        );
        // A DS of the right key for another zone name matches nothing.
        let other = zone_keys(
            &zone,
            std::slice::from_ref(&a),
            &[ds_of(&name("evil.org."), &a)],
        );
        assert!(!other.ds[0].matches);
        assert!(!other.keys[0].matched);
    }
}
