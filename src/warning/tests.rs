use super::*;
use crate::horizon::{thresholds, EndpointHorizon, RrsetHorizon};
use crate::report::EndpointReport;

const H: u64 = 3600;
const DAY: u64 = 86_400;
const NOW: u64 = 1_800_000_000; // 2027-01-15T08:00:00Z
const GOOD: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const BAD: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn limits() -> Vec<Duration> {
    thresholds(&[Duration::from_secs(14 * DAY), Duration::from_secs(3 * DAY)])
}

fn endpoint(port: u16, key: &str) -> EndpointReport {
    EndpointReport {
        service: "xmpp-client".into(),
        host: "xmpp.live.example".into(),
        port,
        address: Some("192.0.2.1".parse().unwrap()),
        tls: "starttls".into(),
        verdict: if key == GOOD {
            EndpointVerdict::Match
        } else {
            EndpointVerdict::Mismatch
        },
        tlsa: vec![format!("3 1 1 {GOOD}")],
        spki_sha256: Some(key.into()),
        cert_sha256: None,
        matched: (key == GOOD).then(|| format!("3 1 1 {GOOD}")),
        matched_until: None,
        error: None,
        tlsa_name: format!("_{port}._tcp.xmpp.live.example"),
        tls_version: None,
        cipher: None,
        notes: vec![],
        vantage: vec![],
        confirmed: (key != GOOD).then_some(true),
    }
}

/// live.example at `now`: its signatures usable until `sigs`, and each
/// endpoint (port, key presented) with a certificate valid until `cert`.
fn report(now: u64, sigs: u64, eps: &[(u16, &str)], cert: u64) -> Report {
    let endpoints: Vec<EndpointReport> = eps.iter().map(|(p, k)| endpoint(*p, k)).collect();
    let horizons = Horizons {
        zone_keys: Vec::new(),
        rrsets: vec![RrsetHorizon::new(
            "_xmpp-client._tcp.live.example",
            "SRV",
            "live.example",
            0,
            // A long lifetime: overdue for re-signing within every threshold.
            (sigs.saturating_sub(400 * DAY), sigs),
        )],
        endpoints: endpoints
            .iter()
            .map(|e| EndpointHorizon {
                endpoint: e.label(),
                not_after: cert,
                chain_not_after: None,
                counts_for_dane: false,
                usage: Some(3),
                selector: Some(1),
            })
            .collect(),
    };
    let t = std::time::UNIX_EPOCH + Duration::from_secs(now);
    Report {
        domain: "live.example".into(),
        checked_at: humantime::format_rfc3339_seconds(t).to_string(),
        verdict: Report::overall(&endpoints, false, false),
        endpoints,
        records_to_add: vec![],
        advice: vec![],
        transport: "tor".into(),
        errors: vec![],
        bogus_rrsets: vec![],
        evidence: vec![],
        nxdomain: false,
        resolvers: vec![],
        horizons,
        rollover: vec![],
    }
}

/// Runs checks, returning each check's alerts as (kind, title).
fn run(
    state: &mut DomainState,
    reports: impl IntoIterator<Item = (u64, Report)>,
) -> Vec<Vec<(AlertKind, String)>> {
    reports
        .into_iter()
        .map(|(now, r)| {
            let out = after_check(state, r, &AlertPolicy::default(), &limits(), now);
            *state = out.next;
            out.alerts.into_iter().map(|a| (a.kind, a.title)).collect()
        })
        .collect()
}

fn far() -> u64 {
    NOW + 400 * DAY
}

#[test]
fn one_warning_per_threshold_not_per_check() {
    let sigs = NOW + 20 * DAY;
    let mut state = DomainState::default();
    let checks = (0..=21 * 24).map(|h| {
        let now = NOW + h * H;
        (now, report(now, sigs, &[(5222, GOOD)], far()))
    });
    let alerts: Vec<(usize, AlertKind, String)> = run(&mut state, checks)
        .into_iter()
        .enumerate()
        .flat_map(|(i, a)| a.into_iter().map(move |(k, t)| (i, k, t)))
        .collect();
    let at: Vec<usize> = alerts.iter().map(|(i, _, _)| *i).collect();
    // 14 days, 3 days and 12 hours before: hours 144, 408 and 468.
    assert_eq!(at, [6 * 24, 17 * 24, 19 * 24 + 12], "{alerts:#?}");
    assert!(alerts.iter().all(|(_, k, _)| *k == AlertKind::Warning));
    assert_eq!(
        alerts[1].2,
        "signatures of live.example expire in 3 days (2027-02-04 08:00 UTC): re-sign the zone"
    );
    assert!(alerts[2].2.contains("expire in 12 hours"), "{alerts:?}");
}

#[test]
fn several_thresholds_crossed_at_once_give_one_warning_for_the_nearest() {
    let mut state = DomainState::default();
    let got = run(
        &mut state,
        [
            (NOW, report(NOW, NOW + 2 * DAY, &[(5222, GOOD)], far())),
            (
                NOW + H,
                report(NOW + H, NOW + 2 * DAY, &[(5222, GOOD)], far()),
            ),
        ],
    );
    assert_eq!(got[0].len(), 1, "{got:?}");
    assert!(got[0][0].1.contains("expire in 2 days"), "{got:?}");
    assert!(got[1].is_empty());
}

#[test]
fn re_signing_gives_one_renewed_note_and_the_next_crossing_warns_again() {
    let mut state = DomainState::default();
    let at = |now: u64, sigs: u64| (now, report(now, sigs, &[(5222, GOOD)], far()));
    let got = run(
        &mut state,
        [
            at(NOW, NOW + 2 * DAY),
            // Re-signed for 30 days: one note, then quiet.
            at(NOW + H, NOW + 30 * DAY),
            at(NOW + 2 * H, NOW + 30 * DAY),
            // Re-signed again for 2 days, then for 10 (still under 14 days).
            at(NOW + 3 * H, NOW + 2 * DAY),
            at(NOW + 4 * H, NOW + 10 * DAY),
            at(NOW + 5 * H, NOW + 10 * DAY),
            // The 10 days run down to 3: warned again.
            at(NOW + 7 * DAY, NOW + 10 * DAY),
        ],
    );
    let kinds: Vec<Vec<AlertKind>> = got
        .iter()
        .map(|a| a.iter().map(|(k, _)| *k).collect())
        .collect();
    use AlertKind::*;
    assert_eq!(
        kinds,
        [
            vec![Warning],
            vec![Renewed],
            vec![],
            vec![Warning],
            vec![Renewed],
            vec![],
            vec![Warning],
        ],
        "{got:#?}"
    );
    assert_eq!(
        got[1][0].1,
        "signatures of live.example renewed: now expire in 29 days (2027-02-14 08:00 UTC)"
    );
    assert!(state.warned.contains_key("signatures live.example"));
}

#[test]
fn a_security_alert_comes_first_unchanged_and_warnings_are_no_state_change() {
    let policy = AlertPolicy::default();
    let sigs = NOW + 2 * DAY;
    let ok = report(NOW, sigs, &[(5222, GOOD)], far());
    let mut state = after_check(&DomainState::default(), ok.clone(), &policy, &limits(), NOW).next;
    state.warned.clear();
    // Interception and a signature due in the same check: both, alarm first.
    let bad = report(NOW + H, sigs, &[(5222, BAD)], NOW + DAY);
    let out = after_check(&state, bad.clone(), &policy, &limits(), NOW + H);
    let (alone_next, alone) = transition_with(&state, &bad, &policy);
    let alone = alone.unwrap();
    assert_eq!(out.alerts.len(), 2, "{:#?}", out.alerts);
    assert_eq!(out.alerts[0].kind, AlertKind::Change);
    assert_eq!(
        out.alerts[0].title, alone.title,
        "the alarm is what it would be alone"
    );
    assert_eq!(
        (out.alerts[0].from, out.alerts[0].to),
        (alone.from, alone.to)
    );
    assert_eq!(out.alerts[1].kind, AlertKind::Warning);
    // The interceptor's certificate (expiring in a day) is never warned about.
    assert!(
        !out.alerts[1].content.contains("certificate of"),
        "{}",
        out.alerts[1].content
    );
    assert!(out.alerts[1].title.contains("signatures of live.example"));
    // The state machine is exactly as without warnings.
    let mut next = out.next.clone();
    next.warned = alone_next.warned.clone();
    next.rollover = alone_next.rollover.clone();
    assert_eq!(next, alone_next);
    assert_eq!(out.next.state, Some(Verdict::Mismatch));
    // Warnings alone leave the flapping count and the state untouched.
    let mut state = DomainState::default();
    let mut changes = Vec::new();
    for i in 0..5 {
        let now = NOW + i * 3 * DAY;
        let out = after_check(
            &state,
            report(
                now,
                now + [20, 10, 2, 30, 1][i as usize] * DAY,
                &[(5222, GOOD)],
                far(),
            ),
            &policy,
            &limits(),
            now,
        );
        changes.push(out.next.changes.len());
        assert!(out.alerts.iter().all(|a| a.kind != AlertKind::Change));
        state = out.next;
    }
    assert_eq!(changes, [0; 5]);
    assert!(!state.intermittent);
}

#[test]
fn certificates_are_warned_and_marked_once_per_host_with_what_dane_ee_means() {
    let mut state = DomainState::default();
    let eps = [(5222, GOOD), (5223, GOOD), (5269, GOOD)];
    let out = after_check(
        &state,
        report(NOW, far(), &eps, NOW + 2 * DAY),
        &AlertPolicy::default(),
        &limits(),
        NOW,
    );
    assert_eq!(out.alerts.len(), 1);
    let a = &out.alerts[0];
    assert_eq!(
        a.title,
        "live.example: certificate of xmpp.live.example expires in 2 days (2027-01-17 08:00 UTC): with a DANE-EE record (3 x x) this date does not affect the key check, but clients that check the certificate against a CA fail then; renew it, keeping the key or publishing the new key's TLSA record first"
    );
    assert!(a.chat.contains("A warning, not an alarm"), "{}", a.chat);
    assert!(a.chat.chars().count() <= MAX_CHAT_ALERT);
    assert!(a.id.contains("-warning-"), "{}", a.id);
    assert_eq!(
        out.next.warned.len(),
        1,
        "one mark per host, whatever its endpoints"
    );
    state = out.next;
    // Renewed on every endpoint: one note.
    let out = after_check(
        &state,
        report(NOW + H, far(), &eps, NOW + 90 * DAY),
        &AlertPolicy::default(),
        &limits(),
        NOW + H,
    );
    assert_eq!(out.alerts.len(), 1);
    assert_eq!(out.alerts[0].kind, AlertKind::Renewed);
    assert!(
        out.alerts[0]
            .title
            .contains("certificate of xmpp.live.example renewed: now expires in 89 days"),
        "{}",
        out.alerts[0].title
    );
    assert!(out.alerts[0].id.contains("-renewed-"));
    assert!(out.next.warned.is_empty());
}

#[test]
fn an_unreachable_check_neither_renews_nor_forgets() {
    let mut state = DomainState::default();
    let warned = run(
        &mut state,
        [(NOW, report(NOW, NOW + 2 * DAY, &[(5222, GOOD)], far()))],
    );
    assert_eq!(warned[0].len(), 1);
    let mut blind = report(NOW + H, NOW + 2 * DAY, &[], far());
    blind.horizons = Horizons::default();
    let got = run(&mut state, [(NOW + H, blind)]);
    assert!(got[0].is_empty());
    assert_eq!(state.warned.len(), 1);
    let got = run(
        &mut state,
        [(
            NOW + 2 * H,
            report(NOW + 2 * H, NOW + 2 * DAY, &[(5222, GOOD)], far()),
        )],
    );
    assert!(
        got[0].is_empty(),
        "not repeated after the blind check: {got:?}"
    );
}

#[test]
fn a_restart_neither_loses_nor_repeats_a_warning() {
    let policy = AlertPolicy::default();
    let first = report(NOW, NOW + 2 * DAY, &[(5222, GOOD)], far());
    let stored = DomainState::default();
    // Killed before the commit: the state on disk is the old one, so the
    // check after the restart warns (nothing lost).
    let out = after_check(&stored, first.clone(), &policy, &limits(), NOW);
    assert_eq!(out.alerts.len(), 1);
    let again = after_check(&stored, first, &policy, &limits(), NOW + H);
    assert_eq!(again.alerts.len(), 1, "not lost");
    // Committed: what the store reads back holds the mark (it stores JSON).
    let bytes = serde_json::to_vec(&again.next).unwrap();
    let back: DomainState = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(back, again.next);
    let later = after_check(
        &back,
        report(NOW + 2 * H, NOW + 2 * DAY, &[(5222, GOOD)], far()),
        &policy,
        &limits(),
        NOW + 2 * H,
    );
    assert!(later.alerts.is_empty(), "not repeated");
    // A store written before warnings existed still reads.
    let mut old = serde_json::to_value(DomainState::default()).unwrap();
    old.as_object_mut().unwrap().remove("warned");
    old.as_object_mut().unwrap().remove("rollover");
    let _: DomainState = serde_json::from_value(old).unwrap();
}

#[test]
fn a_rollover_done_too_fast_is_a_warning_and_no_alarm() {
    let policy = AlertPolicy::default();
    let next_key = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
    let with = |now: u64, records: &[&str], key: &str| {
        let mut r = report(now, far(), &[(5222, GOOD)], far());
        let e = &mut r.endpoints[0];
        e.tlsa = records.iter().map(|k| format!("3 1 1 {k}")).collect();
        e.spki_sha256 = Some(key.into());
        e.matched = Some(format!("3 1 1 {key}"));
        r.horizons.rrsets.push(RrsetHorizon::new(
            &e.tlsa_name.clone(),
            "TLSA",
            "live.example",
            3600,
            (NOW - DAY, far()),
        ));
        r
    };
    let mut state = DomainState::default();
    let mut step = |now: u64, r: Report| {
        let out = after_check(&state, r, &policy, &limits(), now);
        state = out.next;
        (out.alerts, out.report.rollover)
    };
    let (a, notes) = step(NOW, with(NOW, &[GOOD], GOOD));
    assert!(a.is_empty());
    assert_eq!(notes[0].kind, rollover::RolloverKind::SingleRecord);
    let (a, notes) = step(NOW + 600, with(NOW + 600, &[GOOD, next_key], GOOD));
    assert!(a.is_empty());
    assert_eq!(notes[0].kind, rollover::RolloverKind::PrePublished);
    let (a, notes) = step(NOW + 1200, with(NOW + 1200, &[GOOD, next_key], next_key));
    assert_eq!(a.len(), 1, "{a:#?}");
    assert_eq!(a[0].kind, AlertKind::Warning);
    assert!(
        a[0].title.contains("first seen 10 minutes ago, TTL 1 hour"),
        "{}",
        a[0].title
    );
    assert_eq!(a[0].to, Verdict::Ok);
    let kinds: Vec<_> = notes.iter().map(|n| n.kind).collect();
    assert_eq!(
        kinds,
        [
            rollover::RolloverKind::NoLongerUsed,
            rollover::RolloverKind::TooEarly
        ]
    );
    let (a, _) = step(NOW + 1800, with(NOW + 1800, &[GOOD, next_key], next_key));
    assert!(a.is_empty(), "once");
}

#[test]
fn keys_switched_before_the_ds_ttl_passed_are_a_warning_and_no_alarm() {
    use crate::horizon::{DsSeen, KeySeen, ZoneKeys};
    let policy = AlertPolicy::default();
    let ds = |tag: u16, matches: bool| DsSeen {
        key_tag: tag,
        algorithm: 13,
        digest_type: 2,
        digest: "ab".repeat(32),
        matches,
    };
    let with = |now: u64, ds: Vec<DsSeen>, ksk: u16| {
        let mut r = report(now, far(), &[(5222, GOOD)], far());
        r.horizons.zone_keys = vec![ZoneKeys {
            zone: "live.example".into(),
            ds,
            keys: vec![KeySeen {
                key_tag: ksk,
                algorithm: 13,
                matched: true,
            }],
            ds_ttl: Some(86_400),
        }];
        r
    };
    let mut state = DomainState::default();
    let mut step = |now: u64, r: Report| {
        let out = after_check(&state, r, &policy, &limits(), now);
        state = out.next;
        (out.alerts, out.report.rollover)
    };
    let (a, _) = step(NOW, with(NOW, vec![ds(1, true)], 1));
    assert!(a.is_empty());
    let (a, notes) = step(
        NOW + 600,
        with(NOW + 600, vec![ds(1, true), ds(2, false)], 1),
    );
    assert!(a.is_empty());
    assert!(notes
        .iter()
        .any(|n| n.kind == rollover::RolloverKind::DsPrePublished));
    let switched = with(NOW + 1200, vec![ds(1, false), ds(2, true)], 2);
    let (a, notes) = step(NOW + 1200, switched.clone());
    assert_eq!(a.len(), 1, "{a:#?}");
    assert_eq!(a[0].kind, AlertKind::Warning);
    assert_eq!(a[0].to, Verdict::Ok);
    assert!(
        a[0].title.contains("published 10 minutes ago, TTL 1 day"),
        "{}",
        a[0].title
    );
    assert!(notes
        .iter()
        .any(|n| n.kind == rollover::RolloverKind::DsTooEarly));
    let (a, _) = step(NOW + 1800, switched);
    assert!(a.is_empty(), "once");
    // The DS records seen are stored with the domain's state.
    assert_eq!(state.rollover.ds.len(), 2);
}

#[test]
fn a_certificate_warning_says_what_the_matched_record_needs() {
    // PKIX-EE with selector 0: the check fails with the certificate, and
    // the renewed certificate needs its record first.
    let eps = [(5222, GOOD)];
    let mut r = report(NOW, far(), &eps, NOW + 2 * DAY);
    let e = &mut r.horizons.endpoints[0];
    (e.usage, e.selector, e.counts_for_dane) = (Some(1), Some(0), true);
    let out = after_check(
        &DomainState::default(),
        r,
        &AlertPolicy::default(),
        &limits(),
        NOW,
    );
    let title = &out.alerts[0].title;
    assert!(
        title.contains("PKIX-EE record (1 x x) needs a valid PKIX path, so the check fails then")
            && title.contains("publish the new certificate's TLSA record before installing it")
            && !title.contains("DANE-EE"),
        "{title}"
    );
}

/// live.example's SRV signed in `zone` for `lifetime` until `until`, as a
/// report at `now` with no endpoints.
fn signed(now: u64, rtype: &str, zone: &str, lifetime: u64, until: u64) -> Report {
    let mut r = report(now, far(), &[], far());
    r.horizons.rrsets.push(RrsetHorizon::new(
        "live.example",
        rtype,
        zone,
        0,
        (until - lifetime, until),
    ));
    r
}

#[test]
fn a_signer_on_its_usual_rhythm_is_not_warned_about_until_it_is_overdue() {
    let mut state = DomainState::default();
    // Knot's defaults: 14 days, re-signed with a tenth and more to go. 5 days
    // and 1.5 days left are its normal rhythm, inside both thresholds.
    let knot = |now: u64, left: u64| signed(now, "DNSKEY", "live.example", 14 * DAY, now + left);
    let quiet = run(
        &mut state,
        [(NOW, knot(NOW, 5 * DAY)), (NOW + H, knot(NOW + H, 36 * H))],
    );
    assert!(quiet.iter().all(Vec::is_empty), "{quiet:?}");
    // The signer stopped: a day left of 14 is overdue, one warning.
    let late = run(&mut state, [(NOW + 2 * H, knot(NOW + 2 * H, DAY))]);
    assert_eq!(late[0].len(), 1, "{late:?}");
    assert_eq!(late[0][0].0, AlertKind::Warning);
    assert!(
        late[0][0]
            .1
            .contains("signatures of live.example expire in 1 day"),
        "{late:?}"
    );
}

#[test]
fn zones_above_the_domain_and_ds_records_are_never_warned_about() {
    let mut state = DomainState::default();
    // The root's signatures (13 days) and a TLD's DS, both about to run
    // out: shown in the report's horizons, not the domain admin's to fix.
    let mut r = signed(NOW, "DNSKEY", ".", 13 * DAY, NOW + H);
    r.horizons.rrsets.push(RrsetHorizon::new(
        "live.example",
        "DS",
        "example",
        0,
        (NOW - 6 * DAY, NOW + H),
    ));
    let alerts = run(&mut state, [(NOW, r.clone())]);
    assert!(alerts[0].is_empty(), "{alerts:?}");
    // The same times on the domain's own zone do warn (the test can fail).
    r.horizons.rrsets[1].zone = "live.example".into();
    r.horizons.rrsets[1].rtype = "DNSKEY".into();
    let own = run(&mut DomainState::default(), [(NOW, r)]);
    assert_eq!(own[0].len(), 1, "{own:?}");
}

#[test]
fn a_warning_during_an_alarm_does_not_say_nothing_is_wrong() {
    let mut state = DomainState::default();
    let alerts = after_check(
        &state,
        report(NOW, NOW + 2 * DAY, &[(5222, BAD)], far()),
        &AlertPolicy::default(),
        &limits(),
        NOW,
    );
    state = alerts.next;
    let warning = alerts
        .alerts
        .iter()
        .find(|a| a.kind == AlertKind::Warning)
        .expect("a warning beside the alarm");
    assert!(
        !warning.chat.contains("nothing is wrong"),
        "{}",
        warning.chat
    );
    assert!(
        warning.chat.contains("beside the alarm"),
        "{}",
        warning.chat
    );
    assert!(state.state.is_some_and(Verdict::is_alarm));
}
