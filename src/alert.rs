//! Alerts: a change worth telling, rendered once and fed to every sink alike.

use crate::model::{Alert, DomainState, HISTORY};
use crate::render;
use crate::report::{EndpointVerdict, Report, Verdict};

/// The longest chat alert, in characters (a phone screen); the details
/// are behind `status DOMAIN` and in the PubSub item.
pub const MAX_CHAT_ALERT: usize = 600;

/// `lines` then `last`, within `max` characters: whole lines are dropped
/// from the end of `lines` (saying so) until it fits; `last` always stays.
pub(crate) fn bounded(lines: &[String], last: &str, max: usize) -> String {
    let fits = |body: &[String]| {
        body.iter().map(|l| l.chars().count() + 1).sum::<usize>() + last.chars().count() <= max
    };
    let mut body: Vec<String> = lines.to_vec();
    let mut cut = false;
    while !body.is_empty() && !fits(&body) {
        body.pop();
        cut = true;
    }
    if cut {
        // Make room for the notice, as for any other line.
        body.push("(more below)".into());
        while body.len() > 1 && !fits(&body) {
            body.remove(body.len() - 2);
        }
        let n = body.len() - 1;
        body[n] = "(more in the details)".into();
    }
    if body.is_empty() {
        // Not even the summary fits: cut it.
        let room = max.saturating_sub(last.chars().count() + 1);
        let title: String = lines
            .first()
            .map(|t| t.chars().take(room).collect())
            .unwrap_or_default();
        return format!("{title}\n{last}");
    }
    body.push(last.to_owned());
    body.join("\n")
}

/// Consecutive unreachable checks before the state becomes unreachable.
pub const UNREACHABLE_AFTER: u32 = 3;

/// How alerts weigh consecutive checks (`[monitor]` in the configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlertPolicy {
    /// Consecutive OK checks that end an alarm (mismatch, bogus, STARTTLS
    /// missing): one good check after an interception does not.
    pub recovery_checks: u32,
}

impl Default for AlertPolicy {
    fn default() -> Self {
        AlertPolicy { recovery_checks: 2 }
    }
}

/// Alerted changes within [`FLAP_WINDOW`] checks that make a domain
/// intermittent: one alert says so, then none until it holds steady.
pub const FLAP_CHANGES: usize = 4;
/// The checks over which [`FLAP_CHANGES`] are counted.
pub const FLAP_WINDOW: u64 = 12;
/// Checks with one state that end an intermittent spell (with one alert).
pub const STEADY_CHECKS: u32 = 6;
/// The most "endpoint=key" lines an alarm remembers.
const MAX_SEEN: usize = 64;

/// What a new report does to a domain's stored state: the next state, and an alert if it changed.
pub fn transition(prev: &DomainState, report: &Report) -> (DomainState, Option<Alert>) {
    transition_with(prev, report, &AlertPolicy::default())
}

/// [`transition`] under a given policy. An alert is raised when the state
/// changes (unreachable only after [`UNREACHABLE_AFTER`] failed checks, an
/// alarm ends only after `recovery_checks` good ones), and also while the
/// state is an alarm when it shows an endpoint or a key it has not shown
/// before (a new attacker key, or the mismatch moving). A domain whose state
/// keeps changing gets one "intermittent" alert, then none until it holds
/// steady for [`STEADY_CHECKS`] checks (one alert says so).
pub fn transition_with(
    prev: &DomainState,
    report: &Report,
    policy: &AlertPolicy,
) -> (DomainState, Option<Alert>) {
    let mut next = count_check(prev, report);
    let Some(candidate) = candidate_state(prev, &mut next, report.verdict) else {
        // A new domain's first failed checks: nothing to say yet.
        return (next, None);
    };
    let effective = hold_alarm(prev.state, candidate, next.ok_streak, policy);
    let new_sight = remember_alarm_sights(prev, &mut next, effective, report);
    let changed = prev.state != Some(effective);
    if !changed && new_sight.is_empty() {
        let alert = steady_alert(prev, &mut next, effective, report);
        return (next, alert);
    }
    if changed {
        next.state = Some(effective);
        next.since = Some(report.checked_at.clone());
    }
    // The first state is news only when it is an alarm.
    if prev.state.is_none() && !effective.is_alarm() {
        return (next, None);
    }
    let alert = news_alert(prev, &mut next, effective, report, &new_sight);
    (next, alert)
}

/// The stored state after counting one more check: its report, its place in
/// the bounded history, and the run of OK checks it extends or breaks.
fn count_check(prev: &DomainState, report: &Report) -> DomainState {
    let mut next = prev.clone();
    next.last_report = Some(report.bounded_for_store());
    next.history
        .push((report.checked_at.clone(), report.verdict));
    if next.history.len() > HISTORY {
        let excess = next.history.len() - HISTORY;
        next.history.drain(..excess);
    }
    next.checks = next.checks.saturating_add(1);
    next.ok_streak = if report.verdict == Verdict::Ok {
        next.ok_streak.saturating_add(1)
    } else {
        0
    };
    next
}

/// Which state the observed verdict points to once unreachable checks are
/// counted: `None` while a domain with no state yet has failed fewer than
/// [`UNREACHABLE_AFTER`] checks (nothing to say yet).
fn candidate_state(
    prev: &DomainState,
    next: &mut DomainState,
    observed: Verdict,
) -> Option<Verdict> {
    if observed != Verdict::Unreachable {
        next.unreachable_streak = 0;
        return Some(observed);
    }
    next.unreachable_streak = next.unreachable_streak.saturating_add(1);
    if next.unreachable_streak < UNREACHABLE_AFTER {
        // One failed round is not news: the server may just be restarting.
        prev.state
    } else {
        Some(Verdict::Unreachable)
    }
}

/// Whether an alarm still holds: an OK candidate ends it only after
/// `recovery_checks` OK checks in a row.
fn hold_alarm(
    prev: Option<Verdict>,
    candidate: Verdict,
    ok_streak: u32,
    policy: &AlertPolicy,
) -> Verdict {
    match prev {
        // An interceptor that steps aside for one check does not end the alarm.
        Some(s) if s.is_alarm() && candidate == Verdict::Ok => {
            if ok_streak < policy.recovery_checks.max(1) {
                s
            } else {
                Verdict::Ok
            }
        }
        _ => candidate,
    }
}

/// Which alarm lines (endpoint and key) this report shows that the ongoing
/// alarm had not shown before; stores them (bounded by [`MAX_SEEN`]), and
/// forgets them all when the state is no alarm or a different one.
fn remember_alarm_sights(
    prev: &DomainState,
    next: &mut DomainState,
    effective: Verdict,
    report: &Report,
) -> Vec<String> {
    let seen = alarm_lines(report);
    let same_alarm = effective.is_alarm() && prev.state == Some(effective);
    let new_sight: Vec<String> = if same_alarm {
        seen.iter()
            .filter(|l| !prev.alarm_seen.contains(l))
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    next.alarm_seen = if effective.is_alarm() {
        let mut all = if prev.state == Some(effective) {
            prev.alarm_seen.clone()
        } else {
            Vec::new()
        };
        for l in seen {
            if !all.contains(&l) && all.len() < MAX_SEEN {
                all.push(l);
            }
        }
        all
    } else {
        Vec::new()
    };
    new_sight
}

/// Whether a check that changed nothing ends an intermittent spell: after
/// [`STEADY_CHECKS`] such checks, one "steady again" alert.
fn steady_alert(
    prev: &DomainState,
    next: &mut DomainState,
    effective: Verdict,
    report: &Report,
) -> Option<Alert> {
    if !next.intermittent {
        return None;
    }
    next.steady = next.steady.saturating_add(1);
    if next.steady < STEADY_CHECKS {
        return None;
    }
    next.intermittent = false;
    next.changes.clear();
    let mut alert = render(prev.state, effective, report);
    alert.title = format!(
        "{}: steady again, {} for {STEADY_CHECKS} checks in a row (was intermittent)",
        report.domain, effective
    );
    retitle(&mut alert);
    Some(alert)
}

/// Which alert a change (or a new sight in an ongoing alarm) gets: none
/// while intermittent, one "intermittent" alert when changes come too often
/// ([`FLAP_CHANGES`] within [`FLAP_WINDOW`] checks), else the change itself.
fn news_alert(
    prev: &DomainState,
    next: &mut DomainState,
    effective: Verdict,
    report: &Report,
    new_sight: &[String],
) -> Option<Alert> {
    let now = next.checks;
    next.changes.retain(|c| now - c < FLAP_WINDOW);
    next.changes.push(now);
    next.steady = 0;
    if next.intermittent {
        // Flapping: already said; the next alert is when it holds steady.
        return None;
    }
    if next.changes.len() >= FLAP_CHANGES {
        next.intermittent = true;
        let mut alert = render(prev.state, effective, report);
        alert.title = format!(
            "{}: intermittent, its state changed {} times in the last {FLAP_WINDOW} checks (now {}); no more alerts until it holds steady for {STEADY_CHECKS} checks",
            report.domain,
            next.changes.len(),
            effective
        );
        retitle(&mut alert);
        return Some(alert);
    }
    let mut alert = render(prev.state, effective, report);
    // The same state: news only for what it shows that is new.
    if prev.state == Some(effective) {
        alert.title = format!(
            "{}: ALARM, something new: {}",
            report.domain,
            new_sight.join("; ")
        );
        retitle(&mut alert);
    }
    Some(alert)
}

/// What an alarm shows: one "endpoint=key" line per endpoint in alarm.
fn alarm_lines(report: &Report) -> Vec<String> {
    report
        .endpoints
        .iter()
        .filter(|e| {
            matches!(
                e.verdict,
                EndpointVerdict::Mismatch
                    | EndpointVerdict::StarttlsMissing
                    | EndpointVerdict::Bogus
            )
        })
        .map(|e| {
            let addr = e
                .address
                .map(|a| a.to_string())
                .unwrap_or_else(|| "-".into());
            let key = match (&e.spki_sha256, e.verdict) {
                (Some(k), _) => format!("key {k}"),
                (None, v) => format!("{v:?}").to_lowercase(),
            };
            format!("{} {}:{} [{addr}] {key}", e.service, e.host, e.port)
        })
        .collect()
}

/// Puts a changed title on the first line of the alert's content and chat form too.
fn retitle(alert: &mut Alert) {
    let swap = |text: &str| {
        let rest = text.split_once('\n').map(|(_, r)| r).unwrap_or_default();
        format!("{}\n{rest}", alert.title)
    };
    alert.content = swap(&alert.content);
    alert.chat = swap(&alert.chat);
}

/// Renders an alert from the report that caused it.
pub fn render(from: Option<Verdict>, to: Verdict, report: &Report) -> Alert {
    let title = match (from, to) {
        (Some(f), Verdict::Ok) if f != Verdict::Ok => {
            format!("{}: recovered, OK again (was {f})", report.domain)
        }
        (Some(f), Verdict::Unreachable) => format!(
            "{}: unreachable for {UNREACHABLE_AFTER} checks in a row (was {f})",
            report.domain
        ),
        (Some(Verdict::Ok), Verdict::NoTlsa) => {
            format!(
                "{}: TLSA records removed or unusable, no longer protected (was ok)",
                report.domain
            )
        }
        (Some(Verdict::Ok), Verdict::Insecure) => {
            format!(
                "{}: DNSSEC lost, no longer protected (was ok)",
                report.domain
            )
        }
        _ => report.summary(),
    };
    // The details, for the PubSub item: what `status` shows.
    let content = format!("{title}\n{}", render::details(report));
    // The chat form, for a phone: the summary, one line per group of
    // affected endpoints, where the details are.
    let mut lines = vec![title.clone()];
    lines.extend(render::alert_lines(report, to));
    if to == Verdict::Unreachable && lines.len() == 1 {
        // No endpoint to name: why, e.g. the domain's own DNS failing.
        if let Some(why) = report.errors.first() {
            lines.push(format!("Why: {why}"));
        }
    }
    if !report.evidence.is_empty() {
        lines.push(format!(
            "The certificate chains presented are kept: send \"evidence {}\".",
            report.domain
        ));
    }
    let last = format!(
        "Checked at {}. Details: send \"status {}\".",
        report.checked_at, report.domain
    );
    let chat = bounded(&lines, &last, MAX_CHAT_ALERT);
    Alert {
        kind: crate::model::AlertKind::Change,
        id: format!(
            "{}-{}-{:08x}",
            report.checked_at.replace([':', '-'], ""),
            to.as_str(),
            rand::random::<u32>()
        ),
        domain: report.domain.clone(),
        from,
        to,
        title,
        content,
        chat,
        updated: report.checked_at.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Sink;
    use crate::report::EndpointReport;

    fn report(v: Verdict) -> Report {
        Report {
            domain: "example.org".into(),
            checked_at: "2026-11-22T12:00:00Z".into(),
            verdict: v,
            endpoints: vec![],
            records_to_add: vec![],
            advice: vec![],
            transport: "tor".into(),
            errors: vec![],
            bogus_rrsets: vec![],
            evidence: vec![],
            nxdomain: false,
            resolvers: vec![],
            horizons: Default::default(),
            rollover: vec![],
        }
    }

    fn run(seq: &[Verdict]) -> Vec<Option<(Option<Verdict>, Verdict)>> {
        let mut state = DomainState::default();
        seq.iter()
            .map(|v| {
                let (next, alert) = transition(&state, &report(*v));
                state = next;
                alert.map(|a| (a.from, a.to))
            })
            .collect()
    }

    #[test]
    fn contract_s4_alerts_on_changes_only() {
        use Verdict::*;
        type Change = Option<(Option<Verdict>, Verdict)>;
        let table: Vec<(Vec<Verdict>, Vec<Change>)> = vec![
            (vec![Ok, Ok, Ok], vec![None, None, None]),
            (
                // An alarm ends after two good checks in a row, not one.
                vec![Ok, Mismatch, Mismatch, Ok, Mismatch, Ok, Ok, Ok],
                vec![
                    None,
                    Some((Some(Ok), Mismatch)),
                    None,
                    None,
                    None,
                    None,
                    Some((Some(Mismatch), Ok)),
                    None,
                ],
            ),
            (vec![Mismatch], vec![Some((None, Mismatch))]),
            (vec![Ok, Bogus], vec![None, Some((Some(Ok), Bogus))]),
            (vec![Ok, NoTlsa], vec![None, Some((Some(Ok), NoTlsa))]),
            (vec![Ok, Insecure], vec![None, Some((Some(Ok), Insecure))]),
            (
                vec![Ok, Unreachable, Unreachable, Unreachable, Unreachable, Ok],
                vec![
                    None,
                    None,
                    None,
                    Some((Some(Ok), Unreachable)),
                    None,
                    Some((Some(Unreachable), Ok)),
                ],
            ),
            (
                vec![Ok, Unreachable, Ok, Unreachable, Unreachable],
                vec![None; 5],
            ),
            (
                vec![Unreachable, Unreachable, Unreachable],
                vec![None, None, None],
            ),
        ];
        for (seq, want) in table {
            assert_eq!(run(&seq), want, "{seq:?}");
        }
    }

    #[test]
    fn alert_renders_titles_and_one_delivery_per_sink() {
        let a = render(Some(Verdict::Mismatch), Verdict::Ok, &report(Verdict::Ok));
        assert!(a.title.contains("recovered"), "{}", a.title);
        let a = render(
            Some(Verdict::Ok),
            Verdict::Insecure,
            &report(Verdict::Insecure),
        );
        assert!(a.title.contains("DNSSEC lost"), "{}", a.title);
        let d = a.deliveries(&["a@x".into(), "b@x".into()], &["c@x/r".into()]);
        assert_eq!(d.len(), 3);
        assert!(d.iter().all(|d| d.alert_id == a.id));
        assert_eq!(
            d[2].sink,
            Sink::Event {
                node: "example.org".into(),
                jid: "c@x/r".into()
            }
        );
        let b = render(
            Some(Verdict::Ok),
            Verdict::Insecure,
            &report(Verdict::Insecure),
        );
        assert_ne!(a.id, b.id);
    }

    fn endpoint(host: &str, verdict: EndpointVerdict, key: &str) -> EndpointReport {
        EndpointReport {
            service: "xmpp-client".into(),
            host: host.into(),
            port: 5222,
            address: Some("192.0.2.1".parse().unwrap()),
            tls: "starttls".into(),
            verdict,
            tlsa: vec!["3 1 1 aa".into()],
            spki_sha256: Some(key.into()),
            cert_sha256: None,
            matched: None,
            matched_until: None,
            error: None,
            tlsa_name: String::new(),
            tls_version: None,
            cipher: None,
            notes: vec![],
            vantage: vec![],
            confirmed: None,
        }
    }

    /// A report whose endpoints are (host, key): key "aa" matches, others do not.
    fn seen(eps: &[(&str, &str)]) -> Report {
        let endpoints: Vec<EndpointReport> = eps
            .iter()
            .map(|(h, k)| {
                let v = if *k == "aa" {
                    EndpointVerdict::Match
                } else {
                    EndpointVerdict::Mismatch
                };
                endpoint(h, v, k)
            })
            .collect();
        let verdict = if endpoints
            .iter()
            .any(|e| e.verdict == EndpointVerdict::Mismatch)
        {
            Verdict::Mismatch
        } else {
            Verdict::Ok
        };
        Report {
            endpoints,
            ..report(verdict)
        }
    }

    fn titles(seq: &[Report], policy: &AlertPolicy) -> Vec<Option<String>> {
        let mut state = DomainState::default();
        seq.iter()
            .map(|r| {
                let (next, alert) = transition_with(&state, r, policy);
                state = next;
                alert.map(|a| a.title)
            })
            .collect()
    }

    #[test]
    fn a_new_key_or_a_moved_mismatch_is_a_new_alert() {
        let p = AlertPolicy::default();
        let t = titles(
            &[
                seen(&[("a", "aa"), ("b", "aa")]),
                seen(&[("a", "bad1"), ("b", "aa")]),
                // Same key again: nothing new.
                seen(&[("a", "bad1"), ("b", "aa")]),
                // A new attacker key on the same endpoint.
                seen(&[("a", "bad2"), ("b", "aa")]),
                // The first key again: already shown in this alarm.
                seen(&[("a", "bad1"), ("b", "aa")]),
                // The mismatch moves to another endpoint.
                seen(&[("a", "aa"), ("b", "bad1")]),
                // Fewer endpoints in alarm is not news.
                seen(&[("a", "aa"), ("b", "aa"), ("a", "bad2")]),
            ],
            &p,
        );
        assert!(t[0].is_none());
        assert!(t[1].as_deref().unwrap().contains("ALARM"), "{t:?}");
        assert_eq!(t[2], None);
        let new_key = t[3].as_deref().unwrap();
        assert!(
            new_key.contains("something new") && new_key.contains("bad2"),
            "{new_key}"
        );
        assert_eq!(t[4], None);
        let moved = t[5].as_deref().unwrap();
        assert!(
            moved.contains(" b:5222") && moved.contains("bad1"),
            "{moved}"
        );
        assert_eq!(t[6], None, "{t:?}");
    }

    #[test]
    fn recovery_needs_the_configured_good_checks() {
        let bad = seen(&[("a", "bad")]);
        let good = seen(&[("a", "aa")]);
        let seq = [
            good.clone(),
            bad.clone(),
            good.clone(),
            good.clone(),
            good.clone(),
        ];
        let one = titles(&seq, &AlertPolicy { recovery_checks: 1 });
        assert!(one[2].as_deref().unwrap().contains("recovered"), "{one:?}");
        let three = titles(&seq, &AlertPolicy { recovery_checks: 3 });
        assert_eq!((three[2].as_ref(), three[3].as_ref()), (None, None));
        assert!(
            three[4].as_deref().unwrap().contains("recovered"),
            "{three:?}"
        );
    }

    #[test]
    fn a_flapping_domain_gets_one_intermittent_alert_then_steady() {
        let bad = seen(&[("a", "bad")]);
        let good = seen(&[("a", "aa")]);
        let p = AlertPolicy { recovery_checks: 1 };
        let mut seq = vec![good.clone()];
        for _ in 0..6 {
            seq.push(bad.clone());
            seq.push(good.clone());
        }
        seq.extend(std::iter::repeat_n(
            good.clone(),
            STEADY_CHECKS as usize + 2,
        ));
        let t = titles(&seq, &p);
        let alerts: Vec<&String> = t.iter().flatten().collect();
        // alarm, recovered, alarm, then one "intermittent", then one "steady".
        assert_eq!(alerts.len(), 5, "{alerts:#?}");
        assert!(alerts[3].contains("intermittent"), "{alerts:#?}");
        assert!(alerts[4].contains("steady again, ok"), "{alerts:#?}");
        // Flapping with the default hysteresis never leaves the alarm at all.
        let t = titles(&seq[..13], &AlertPolicy::default());
        assert_eq!(t.iter().flatten().count(), 1, "{t:?}");
    }

    #[test]
    fn unreachable_alert_says_why() {
        let mut r = report(Verdict::Unreachable);
        r.errors = vec![
            "no DNS answer for _xmpp-client._tcp.example.org: SERVFAIL".into(),
            "our resolver answers for the root zone, so the 4 failed lookup(s) of example.org are its own DNS failing (or being blocked)".into(),
            "a third line".into(),
        ];
        let a = render(Some(Verdict::Ok), Verdict::Unreachable, &r);
        assert!(a.content.contains("its own DNS failing"), "{}", a.content);
        assert!(a.chat.contains("no DNS answer"), "{}", a.chat);
    }

    fn lab_report(name: &str) -> Report {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden")
            .join(format!("{name}.json"));
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn an_alert_reads_on_a_phone_and_the_details_go_to_pubsub() {
        // Eight endpoints from a lab run (four presenting another key, four
        // refused), then the same with every endpoint a different key.
        let mut r = lab_report("intercepted");
        assert_eq!(r.endpoints.len(), 8);
        for round in 0..2 {
            let a = render(Some(Verdict::Ok), Verdict::Mismatch, &r);
            let chat = &a.chat;
            assert!(chat.chars().count() < MAX_CHAT_ALERT, "{round}: {chat}");
            assert!(chat.lines().count() <= 8, "{round}: {chat}");
            assert_eq!(chat.lines().next().unwrap(), a.title);
            assert!(chat.ends_with("send \"status good.test\"."), "{chat}");
            // No record or key printed twice.
            for e in &r.endpoints {
                if let Some(k) = &e.spki_sha256 {
                    assert!(chat.matches(k.as_str()).count() <= 1, "{chat}");
                }
                for t in &e.tlsa {
                    assert!(chat.matches(t.as_str()).count() <= 1, "{chat}");
                }
            }
            // The PubSub item carries every endpoint.
            assert!(a.content.len() > chat.len());
            let d = a.deliveries(&["a@x".into()], &["b@x".into()]);
            assert_eq!(d[0].content, a.chat);
            assert_eq!(d[1].content, a.content);
            assert_eq!(a.item().content, a.content);
            for e in r.endpoints.iter_mut() {
                e.verdict = crate::report::EndpointVerdict::Mismatch;
                e.spki_sha256 = Some(format!("{:02x}", e.port % 256).repeat(32));
                e.port += u16::from(e.address.is_some_and(|a| a.is_ipv6())) * 1000;
            }
        }
        let long: Vec<String> = (0..50)
            .map(|i| format!("line {i} {}", "x".repeat(40)))
            .collect();
        let cut = bounded(&long, "Details: send \"status d.org\".", 300);
        assert!(cut.chars().count() <= 300, "{cut}");
        assert!(
            cut.starts_with("line 0 ") && cut.ends_with("status d.org\"."),
            "{cut}"
        );
        assert!(cut.contains("(more in the details)"), "{cut}");
        let huge = vec!["t".repeat(1000)];
        assert!(bounded(&huge, "end", 100).chars().count() <= 100);
    }

    #[test]
    fn history_is_bounded() {
        let mut state = DomainState::default();
        for _ in 0..(HISTORY + 7) {
            state = transition(&state, &report(Verdict::Ok)).0;
        }
        assert_eq!(state.history.len(), HISTORY);
    }
}
