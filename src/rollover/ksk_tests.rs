use super::*;

const NOW: u64 = 1_800_000_000; // 2027-01-15T08:00:00Z
const MIN: u64 = 60;
const ZONE: &str = "example.org";

fn ds(tag: u16, matches: bool) -> DsSeen {
    DsSeen {
        key_tag: tag,
        algorithm: 13,
        digest_type: 2,
        digest: format!("{tag:04x}").repeat(16),
        matches,
    }
}

fn ksk(tag: u16, matched: bool) -> KeySeen {
    KeySeen {
        key_tag: tag,
        algorithm: 13,
        matched,
    }
}

fn zone(ds: Vec<DsSeen>, keys: Vec<KeySeen>, ttl: Option<u32>) -> Vec<ZoneKeys> {
    vec![ZoneKeys {
        zone: ZONE.into(),
        ds,
        keys,
        ds_ttl: ttl,
    }]
}

fn kinds(w: &Watched) -> Vec<RolloverKind> {
    w.notes.iter().map(|n| n.kind).collect()
}

#[test]
fn one_check_notes_an_extra_ds_and_a_ksk_without_ds() {
    use RolloverKind::*;
    // A DS for a key the zone does not publish, beside one that matches.
    let w = watch_keys(
        None,
        &zone(
            vec![ds(1, true), ds(2, false)],
            vec![ksk(1, true)],
            Some(86_400),
        ),
        NOW,
    );
    assert_eq!(kinds(&w), [DsPrePublished]);
    let n = &w.notes[0];
    assert_eq!((n.name.as_str(), n.ttl), (ZONE, Some(86_400)));
    assert!(n.record.starts_with("2 13 2 0002"), "{}", n.record);
    assert!(n.text.contains("a pre-published next KSK (good), or the leftover of a retired key (remove it from the parent)"), "{}", n.text);
    assert_eq!(n.first_seen, None);
    // Two KSKs, a DS for one only: the next KSK waiting for its DS.
    let w = watch_keys(
        None,
        &zone(vec![ds(1, true)], vec![ksk(1, true), ksk(7, false)], None),
        NOW,
    );
    assert_eq!(kinds(&w), [KskWithoutDs]);
    assert!(w.notes[0].text.contains("a key with no DS at the parent yet: a next KSK waiting for its DS (submit it to the parent when the rollover is due)"));
    assert!(w.notes[0].text.contains("key tag 7"));
    assert!(w.warnings.is_empty());
    // The usual zone: nothing to note.
    let w = watch_keys(
        None,
        &zone(vec![ds(1, true)], vec![ksk(1, true)], None),
        NOW,
    );
    assert!(w.notes.is_empty());
}

#[test]
fn a_zone_whose_ds_matches_no_key_gets_no_rollover_note() {
    // Nothing matches: the zone does not validate, which is the
    // validator's finding, not "the next key".
    let w = watch_keys(
        None,
        &zone(vec![ds(2, false)], vec![ksk(1, false)], None),
        NOW,
    );
    assert!(w.notes.is_empty());
}

#[test]
fn a_patient_ksk_rollover_never_warns() {
    use RolloverKind::*;
    let mut m = RolloverMemory::default();
    let ttl = Some(3600);
    let w = watch_keys(
        Some(&mut m),
        &zone(vec![ds(1, true)], vec![ksk(1, true)], ttl),
        NOW,
    );
    assert!(w.notes.is_empty());
    // The next KSK's DS appears at the parent: pre-published, first seen now.
    let t = NOW + 10 * MIN;
    let w = watch_keys(
        Some(&mut m),
        &zone(vec![ds(1, true), ds(2, false)], vec![ksk(1, true)], ttl),
        t,
    );
    assert_eq!(kinds(&w), [DsPrePublished]);
    assert_eq!(
        w.notes[0].first_seen.as_deref(),
        Some("2027-01-15T08:10:00Z")
    );
    // Two hours later the zone switches to the new KSK: the old DS is the
    // leftover now, and the switch waited past the TTL: no warning.
    let t = NOW + 130 * MIN;
    let w = watch_keys(
        Some(&mut m),
        &zone(vec![ds(1, false), ds(2, true)], vec![ksk(2, true)], ttl),
        t,
    );
    assert_eq!(kinds(&w), [DsPrePublished]);
    assert!(w.warnings.is_empty());
    assert_eq!(m.ds.len(), 2);
    // The old DS removed: forgotten.
    let w = watch_keys(
        Some(&mut m),
        &zone(vec![ds(2, true)], vec![ksk(2, true)], ttl),
        t + MIN,
    );
    assert!(w.notes.is_empty());
    assert_eq!(m.ds.len(), 1);
}

#[test]
fn keys_switched_before_the_ds_ttl_passed_warn_once() {
    use RolloverKind::*;
    let mut m = RolloverMemory::default();
    let ttl = Some(86_400);
    watch_keys(
        Some(&mut m),
        &zone(vec![ds(1, true)], vec![ksk(1, true)], ttl),
        NOW,
    );
    watch_keys(
        Some(&mut m),
        &zone(vec![ds(1, true), ds(2, false)], vec![ksk(1, true)], ttl),
        NOW + 10 * MIN,
    );
    // Ten minutes later the zone already signs with the new KSK only.
    let t = NOW + 20 * MIN;
    let w = watch_keys(
        Some(&mut m),
        &zone(vec![ds(1, false), ds(2, true)], vec![ksk(2, true)], ttl),
        t,
    );
    assert_eq!(kinds(&w), [DsPrePublished, DsTooEarly]);
    assert_eq!(w.warnings.len(), 1);
    let n = &w.warnings[0];
    assert!(
        n.text
            .contains("published 10 minutes ago, TTL 1 day: some resolvers still have the old DS"),
        "{}",
        n.text
    );
    assert_eq!(n.safe_after.as_deref(), Some("2027-01-16T08:10:00Z"));
    // Said once.
    let w = watch_keys(
        Some(&mut m),
        &zone(vec![ds(1, false), ds(2, true)], vec![ksk(2, true)], ttl),
        t + MIN,
    );
    assert_eq!(kinds(&w), [DsPrePublished]);
    assert!(w.warnings.is_empty());
}

#[test]
fn a_new_ds_and_the_switch_in_one_interval_warn_and_a_first_check_does_not() {
    let mut m = RolloverMemory::default();
    let ttl = Some(3600);
    // The first check of a zone knows no history: no warning.
    let w = watch_keys(
        Some(&mut m),
        &zone(vec![ds(2, true)], vec![ksk(2, true)], ttl),
        NOW,
    );
    assert!(w.warnings.is_empty());
    // The old DS replaced by a new one, keys switched, between two checks.
    let w = watch_keys(
        Some(&mut m),
        &zone(vec![ds(3, true)], vec![ksk(3, true)], ttl),
        NOW + 5 * MIN,
    );
    assert_eq!(w.warnings.len(), 1);
    assert!(
        w.warnings[0].text.contains("first seen only now"),
        "{}",
        w.warnings[0].text
    );
    // While an older DS still matches a key, a new one is no switch.
    let mut m = RolloverMemory::default();
    watch_keys(
        Some(&mut m),
        &zone(vec![ds(1, true)], vec![ksk(1, true)], ttl),
        NOW,
    );
    let w = watch_keys(
        Some(&mut m),
        &zone(
            vec![ds(1, true), ds(2, true)],
            vec![ksk(1, true), ksk(2, true)],
            ttl,
        ),
        NOW + MIN,
    );
    assert!(w.warnings.is_empty());
}

#[test]
fn the_ds_memory_stays_bounded() {
    let mut m = RolloverMemory::default();
    let many: Vec<DsSeen> = (0..40).map(|i| ds(i, i == 0)).collect();
    watch_keys(Some(&mut m), &zone(many, vec![ksk(0, true)], None), NOW);
    assert_eq!(m.ds.len(), MAX_DS);
    // It survives a round trip through the store, and an old state without
    // it still reads.
    let json = serde_json::to_string(&m).unwrap();
    assert_eq!(serde_json::from_str::<RolloverMemory>(&json).unwrap(), m);
    let old: RolloverMemory = serde_json::from_str(r#"{"records":[],"keys":[]}"#).unwrap();
    assert!(old.ds.is_empty());
}
