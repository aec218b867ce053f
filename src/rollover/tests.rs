use super::*;

const NOW: u64 = 1_800_000_000; // 2027-01-15T08:00:00Z
const MIN: u64 = 60;
const NAME: &str = "_5222._tcp.xmpp.example.org";

fn key(c: char) -> String {
    c.to_string().repeat(64)
}

fn rec(c: char) -> String {
    format!("3 1 1 {}", key(c))
}

/// One name with `records` published and `presented` matching keys.
fn seen(records: &[char], presented: &[char], ttl: Option<u32>) -> Vec<Observed> {
    vec![Observed {
        name: NAME.into(),
        records: records.iter().map(|c| rec(*c)).collect(),
        presented: presented.iter().map(|c| key(*c)).collect(),
        alarm: false,
        ttl,
    }]
}

fn kinds(w: &Watched) -> Vec<(RolloverKind, String)> {
    w.notes
        .iter()
        .map(|n| (n.kind, n.record[6..7].to_owned()))
        .collect()
}

#[test]
fn a_full_rollover_gives_each_note_once_and_no_warning_when_patient() {
    use RolloverKind::*;
    let mut m = RolloverMemory::default();
    let ttl = Some(3600);
    // The domain as first seen: one record, in use: the recipe.
    let w = watch(Some(&mut m), &seen(&['a'], &['a'], ttl), NOW);
    assert_eq!(kinds(&w), [(SingleRecord, "a".into())]);
    assert!(w.notes[0].text.contains("--reuse-key"), "{:?}", w.notes);
    // The next key's record is published: pre-published, good.
    let w = watch(
        Some(&mut m),
        &seen(&['a', 'b'], &['a'], ttl),
        NOW + 10 * MIN,
    );
    assert_eq!(kinds(&w), [(PrePublished, "b".into())]);
    assert!(w.notes[0].text.contains("pre-published next key: good"));
    assert!(w.warnings.is_empty());
    // Two hours later the server switches: the old record is no longer used.
    let t = NOW + 130 * MIN;
    let w = watch(Some(&mut m), &seen(&['a', 'b'], &['b'], ttl), t);
    assert_eq!(kinds(&w), [(NoLongerUsed, "a".into())]);
    assert!(w.warnings.is_empty(), "published 2 h before, TTL 1 h");
    let note = &w.notes[0];
    assert_eq!(note.safe_after.as_deref(), Some("2027-01-15T11:10:00Z"));
    assert!(
        note.text.contains("no longer used")
            && note.text.contains("safe after 2027-01-15 11:10 UTC"),
        "{}",
        note.text
    );
    // Still there at the next check: the same time, not moved on.
    let w = watch(Some(&mut m), &seen(&['a', 'b'], &['b'], ttl), t + 30 * MIN);
    assert_eq!(
        w.notes[0].safe_after.as_deref(),
        Some("2027-01-15T11:10:00Z")
    );
    let w = watch(Some(&mut m), &seen(&['a', 'b'], &['b'], ttl), t + 70 * MIN);
    assert!(w.notes[0].text.contains("safe now"), "{}", w.notes[0].text);
    // Removed: the single record again.
    let w = watch(Some(&mut m), &seen(&['b'], &['b'], ttl), t + 90 * MIN);
    assert_eq!(kinds(&w), [(SingleRecord, "b".into())]);
    assert_eq!(m.records.len(), 1);
}

#[test]
fn a_key_switched_before_the_ttl_passed_is_one_warning() {
    let ttl = Some(3600);
    let mut m = RolloverMemory::default();
    watch(Some(&mut m), &seen(&['a'], &['a'], ttl), NOW);
    watch(Some(&mut m), &seen(&['a', 'b'], &['a'], ttl), NOW + 5 * MIN);
    // Ten minutes after we first saw the record, the server switches.
    let w = watch(
        Some(&mut m),
        &seen(&['a', 'b'], &['b'], ttl),
        NOW + 15 * MIN,
    );
    assert_eq!(w.warnings.len(), 1, "{w:?}");
    let text = &w.warnings[0].text;
    assert!(
        text.contains("first seen 10 minutes ago, TTL 1 hour")
            && text.contains("some resolvers still give the old RRset"),
        "{text}"
    );
    assert_eq!(w.warnings[0].kind, RolloverKind::TooEarly);
    assert_eq!(
        w.warnings[0].safe_after.as_deref(),
        Some("2027-01-15T09:05:00Z")
    );
    // Not again at the next check, though still within the TTL.
    let w = watch(
        Some(&mut m),
        &seen(&['a', 'b'], &['b'], ttl),
        NOW + 20 * MIN,
    );
    assert!(w.warnings.is_empty(), "{w:?}");
}

#[test]
fn ttl_edges_exactly_at_the_ttl_is_safe_one_second_before_is_not() {
    for (after, warned) in [(3600 - 1, true), (3600, false), (3600 + 1, false)] {
        let mut m = RolloverMemory::default();
        watch(Some(&mut m), &seen(&['a'], &['a'], Some(3600)), NOW);
        watch(
            Some(&mut m),
            &seen(&['a', 'b'], &['a'], Some(3600)),
            NOW + 1,
        );
        let w = watch(
            Some(&mut m),
            &seen(&['a', 'b'], &['b'], Some(3600)),
            NOW + 1 + after,
        );
        assert_eq!(!w.warnings.is_empty(), warned, "{after} s after");
    }
    // TTL 0: never early, but a record published with the switch is.
    let mut m = RolloverMemory::default();
    watch(Some(&mut m), &seen(&['a'], &['a'], Some(0)), NOW);
    watch(Some(&mut m), &seen(&['a', 'b'], &['a'], Some(0)), NOW + 1);
    let w = watch(Some(&mut m), &seen(&['a', 'b'], &['b'], Some(0)), NOW + 1);
    assert!(w.warnings.is_empty());
    // Record and key changed between two checks: too early whatever the TTL.
    for ttl in [Some(300), None] {
        let mut m = RolloverMemory::default();
        watch(Some(&mut m), &seen(&['a'], &['a'], ttl), NOW);
        let w = watch(Some(&mut m), &seen(&['b'], &['b'], ttl), NOW + 3600);
        assert_eq!(w.warnings.len(), 1, "{ttl:?}: {w:?}");
        assert!(w.warnings[0].text.contains("first seen only now"), "{w:?}");
    }
    // The largest TTL, and a clock absurdly far ahead: no overflow, no panic.
    for now in [NOW, u64::MAX - 10] {
        let mut m = RolloverMemory::default();
        watch(Some(&mut m), &seen(&['a'], &['a'], Some(u32::MAX)), now);
        watch(
            Some(&mut m),
            &seen(&['a', 'b'], &['a'], Some(u32::MAX)),
            now + 5,
        );
        let w = watch(
            Some(&mut m),
            &seen(&['a', 'b'], &['b'], Some(u32::MAX)),
            now + 10,
        );
        // Saturated at the end of time: early while `now` is below it.
        assert_eq!(w.warnings.len(), usize::from(now == NOW), "{now}");
    }
}

#[test]
fn the_first_check_of_a_name_warns_of_nothing() {
    let mut m = RolloverMemory::default();
    let w = watch(Some(&mut m), &seen(&['a', 'b'], &['b'], Some(3600)), NOW);
    assert!(w.warnings.is_empty());
    assert_eq!(kinds(&w), [(RolloverKind::PrePublished, "a".into())]);
}

#[test]
fn an_interceptors_key_is_never_the_next_key_and_changes_no_memory() {
    let mut m = RolloverMemory::default();
    watch(Some(&mut m), &seen(&['a', 'b'], &['a'], Some(3600)), NOW);
    let before = m.clone();
    // A mismatch at the name: the interceptor's key matched nothing, so it
    // is not among the presented (matching) keys, and the name is in alarm.
    let mut o = seen(&['a', 'b'], &[], Some(3600));
    o[0].alarm = true;
    let w = watch(Some(&mut m), &o, NOW + 3600);
    assert_eq!(w, Watched::default(), "no note while in alarm");
    assert_eq!(m, before, "nothing learnt from an alarm");
    // One address intercepted, the other matching: still an alarm there.
    let mut o = seen(&['a', 'b'], &['a'], Some(3600));
    o[0].alarm = true;
    assert_eq!(watch(Some(&mut m), &o, NOW + 7200), Watched::default());
    assert_eq!(watch(None, &o, NOW), Watched::default());
    // Unreachable (nothing presented): no "no longer used" for the old key.
    let w = watch(
        Some(&mut m),
        &seen(&['a', 'b'], &[], Some(3600)),
        NOW + 9000,
    );
    assert!(w.notes.is_empty());
}

#[test]
fn a_one_off_check_says_pre_published_honestly() {
    let w = watch(None, &seen(&['a', 'b'], &['a'], Some(3600)), NOW);
    assert_eq!(kinds(&w), [(RolloverKind::PrePublished, "b".into())]);
    let text = &w.notes[0].text;
    assert!(
        text.contains("pre-published next key") && text.contains("cannot tell"),
        "{text}"
    );
    assert_eq!(w.notes[0].first_seen, None);
    // No record matches: nothing to say (the verdict speaks).
    assert!(watch(None, &seen(&['b'], &['a'], None), NOW)
        .notes
        .is_empty());
    // Single record: the recipe.
    let w = watch(None, &seen(&['a'], &['a'], None), NOW);
    assert_eq!(w.notes[0].kind, RolloverKind::SingleRecord);
}

#[test]
fn only_3_1_1_records_are_classed() {
    let o = vec![Observed {
        name: NAME.into(),
        records: vec![
            rec('a'),
            format!("2 1 1 {}", key('c')),
            format!("3 1 2 {}", "d".repeat(128)),
        ],
        presented: vec![key('a')],
        alarm: false,
        ttl: None,
    }];
    let w = watch(None, &o, NOW);
    assert!(w.notes.is_empty(), "{w:?}");
    // A name matched through a DANE-TA record only: nothing either.
    let o = vec![Observed {
        records: vec![format!("2 1 1 {}", key('c')), rec('b')],
        presented: vec![key('a')],
        ..o[0].clone()
    }];
    assert!(watch(None, &o, NOW).notes.is_empty());
}

#[test]
fn memory_stays_bounded() {
    let mut m = RolloverMemory::default();
    let hex = "0123456789abcdef";
    for i in 0..40u64 {
        let c = hex.chars().nth((i % 16) as usize).unwrap();
        let o = vec![Observed {
            name: format!("_{i}._tcp.x.example"),
            records: vec![rec(c), format!("3 1 1 {:064x}", i)],
            presented: vec![key(c), format!("{:064x}", i + 1000)],
            alarm: false,
            ttl: Some(60),
        }];
        watch(Some(&mut m), &o, NOW + i);
        assert!(m.records.len() <= MAX_RECORDS && m.keys.len() <= MAX_KEYS);
    }
    // The newest name is kept.
    assert!(m.records.iter().any(|r| r.name == "_39._tcp.x.example"));
    let json = serde_json::to_string(&m).unwrap();
    assert!(json.len() < 8 * 1024, "{} bytes", json.len());
    let back: RolloverMemory = serde_json::from_str(&json).unwrap();
    assert_eq!(back, m);
}
