//! Alerts: a change worth telling, rendered once and fed to every sink alike.

use crate::model::{Alert, DomainState, HISTORY};
use crate::render;
use crate::report::{Report, Verdict};

/// The longest chat alert, in characters (a phone screen); the details
/// are behind `status DOMAIN` and in the PubSub item.
pub const MAX_CHAT_ALERT: usize = 600;

/// `lines` then `last`, within `max` characters: whole lines are dropped
/// from the end of `lines` (saying so) until it fits; `last` always stays.
fn bounded(lines: &[String], last: &str, max: usize) -> String {
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
    let last = format!(
        "Checked at {}. Details: send \"status {}\".",
        report.checked_at, report.domain
    );
    let chat = bounded(&lines, &last, MAX_CHAT_ALERT);
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
