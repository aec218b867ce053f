//! Alerts: a change worth telling, rendered once and fed to every sink alike.

use crate::model::{Alert, DomainState, HISTORY};
use crate::report::{EndpointVerdict, Report, Verdict};

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
    let mut next = prev.clone();
    next.last_report = Some(report.bounded_for_store());
    next.history
        .push((report.checked_at.clone(), report.verdict));
    if next.history.len() > HISTORY {
        let excess = next.history.len() - HISTORY;
        next.history.drain(..excess);
    }
    next.checks = next.checks.saturating_add(1);
    let observed = report.verdict;
    next.ok_streak = if observed == Verdict::Ok {
        next.ok_streak.saturating_add(1)
    } else {
        0
    };
    let candidate = if observed == Verdict::Unreachable {
        next.unreachable_streak = next.unreachable_streak.saturating_add(1);
        if next.unreachable_streak < UNREACHABLE_AFTER {
            // One failed round is not news: the server may just be restarting.
            match prev.state {
                Some(s) => s,
                None => return (next, None),
            }
        } else {
            Verdict::Unreachable
        }
    } else {
        next.unreachable_streak = 0;
        observed
    };
    let effective = match prev.state {
        // An interceptor that steps aside for one check does not end the alarm.
        Some(s) if s.is_alarm() && candidate == Verdict::Ok => {
            if next.ok_streak < policy.recovery_checks.max(1) {
                s
            } else {
                Verdict::Ok
            }
        }
        _ => candidate,
    };
    let seen = alarm_lines(report);
    let new_sight: Vec<String> = if effective.is_alarm() && prev.state == Some(effective) {
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
    let changed = prev.state != Some(effective);
    if !changed && new_sight.is_empty() {
        if next.intermittent {
            next.steady = next.steady.saturating_add(1);
            if next.steady >= STEADY_CHECKS {
                next.intermittent = false;
                next.changes.clear();
                let mut alert = render(prev.state, effective, report);
                alert.title = format!(
                    "{}: steady again, {} for {STEADY_CHECKS} checks in a row (was intermittent)",
                    report.domain, effective
                );
                retitle(&mut alert);
                return (next, Some(alert));
            }
        }
        return (next, None);
    }
    if changed {
        next.state = Some(effective);
        next.since = Some(report.checked_at.clone());
    }
    // The first state is news only when it is an alarm.
    if prev.state.is_none() && !effective.is_alarm() {
        return (next, None);
    }
    let now = next.checks;
    next.changes.retain(|c| now - c < FLAP_WINDOW);
    next.changes.push(now);
    next.steady = 0;
    if next.intermittent {
        // Flapping: already said; the next alert is when it holds steady.
        return (next, None);
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
        return (next, Some(alert));
    }
    let mut alert = render(prev.state, effective, report);
    if !changed {
        alert.title = format!(
            "{}: ALARM, something new: {}",
            report.domain,
            new_sight.join("; ")
        );
        retitle(&mut alert);
    }
    (next, Some(alert))
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

/// Puts a changed title on the alert's first content line too.
fn retitle(alert: &mut Alert) {
    let rest = alert
        .content
        .split_once('\n')
        .map(|(_, r)| r.to_owned())
        .unwrap_or_default();
    alert.content = format!("{}\n{rest}", alert.title);
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
    let mut lines = vec![title.clone()];
    lines.push(format!(
        "Checked at {} over {}.",
        report.checked_at, report.transport
    ));
    for e in &report.endpoints {
        let interesting = e.verdict != EndpointVerdict::Match || to == Verdict::Ok;
        if !interesting {
            continue;
        }
        let mut line = format!(
            "{} {}:{} [{}] {}: {}",
            e.service,
            e.host,
            e.port,
            e.address
                .map(|a| a.to_string())
                .unwrap_or_else(|| "-".into()),
            e.tls,
            e.verdict_word()
        );
        if let Some(k) = &e.spki_sha256 {
            line.push_str(&format!("; key seen (SPKI sha256) {k}"));
        }
        if !e.tlsa.is_empty() {
            line.push_str(&format!("; TLSA {}", e.tlsa.join(", ")));
        }
        if let Some(err) = &e.error {
            line.push_str(&format!("; {err}"));
        }
        for n in &e.notes {
            line.push_str(&format!("; {n}"));
        }
        lines.push(line);
    }
    if !report.evidence.is_empty() {
        lines.push(format!(
            "The certificate chains presented are kept: send \"evidence {}\".",
            report.domain
        ));
    }
    if to == Verdict::Unreachable {
        // Why: the domain's own DNS failing, or what its servers did.
        lines.extend(report.errors.iter().take(2).cloned());
    }
    if to.is_alarm() {
        lines.extend(report.advice.iter().take(1).cloned());
    }
    Alert {
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
        content: lines.join("\n"),
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
        assert!(!a.content.contains("a third line"), "{}", a.content);
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
