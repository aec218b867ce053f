//! Alerts: a change worth telling, rendered once and fed to every sink alike.

use crate::model::{Alert, DomainState, HISTORY};
use crate::render;
use crate::report::{Report, Verdict};

/// The longest chat alert, in characters (a phone screen); the details
/// are behind `status DOMAIN` and in the PubSub item.
pub const MAX_CHAT_ALERT: usize = 600;

/// `text` cut to `max` characters at a line end, saying where the rest is.
fn bounded(text: String, max: usize, domain: &str) -> String {
    if text.chars().count() <= max {
        return text;
    }
    let more = format!("\n(more: send \"status {domain}\")");
    let budget = max - more.chars().count();
    let mut out = String::new();
    for line in text.lines() {
        if out.chars().count() + line.chars().count() + 1 > budget {
            break;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(line);
    }
    if out.is_empty() {
        out = text.chars().take(budget).collect();
    }
    out + &more
}

/// Consecutive unreachable checks before the state becomes unreachable.
pub const UNREACHABLE_AFTER: u32 = 3;

/// What a new report does to a domain's stored state: the next state, and an alert if it changed.
pub fn transition(prev: &DomainState, report: &Report) -> (DomainState, Option<Alert>) {
    let mut next = prev.clone();
    next.last_report = Some(report.clone());
    next.history
        .push((report.checked_at.clone(), report.verdict));
    if next.history.len() > HISTORY {
        let excess = next.history.len() - HISTORY;
        next.history.drain(..excess);
    }
    let observed = report.verdict;
    let effective = if observed == Verdict::Unreachable {
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
    if prev.state == Some(effective) {
        return (next, None);
    }
    next.state = Some(effective);
    next.since = Some(report.checked_at.clone());
    // The first state is news only when it is an alarm.
    if prev.state.is_none() && !effective.is_alarm() {
        return (next, None);
    }
    let alert = render(prev.state, effective, report);
    (next, Some(alert))
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
    lines.push(format!(
        "Checked at {}. Details: send \"status {}\".",
        report.checked_at, report.domain
    ));
    let chat = bounded(lines.join("\n"), MAX_CHAT_ALERT, &report.domain);
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
        content,
        chat,
        updated: report.checked_at.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Sink;

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
            nxdomain: false,
            resolvers: vec![],
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
                vec![Ok, Mismatch, Mismatch, Ok],
                vec![
                    None,
                    Some((Some(Ok), Mismatch)),
                    None,
                    Some((Some(Mismatch), Ok)),
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

    #[test]
    fn history_is_bounded() {
        let mut state = DomainState::default();
        for _ in 0..(HISTORY + 7) {
            state = transition(&state, &report(Verdict::Ok)).0;
        }
        assert_eq!(state.history.len(), HISTORY);
    }
}
