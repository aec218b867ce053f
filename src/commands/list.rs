//! `list`: one's subscriptions, each with its last state (a table).

use super::{Access, Answer, Kind, Spec, Table};
use crate::engine::Engine;
use crate::report::{Report, Verdict};
use crate::store::{StateStore as _, StoreError};

/// `list`.
pub const SPEC: Spec = Spec {
    kind: Kind::List,
    name: "list",
    title: "List your subscriptions",
    help: "your subscriptions with each domain's last state",
    fields: &[],
    access: Access::Anyone,
};

/// The table's columns.
pub const COLUMNS: [(&str, &str); 6] = [
    ("domain", "Domain"),
    ("state", "Last state"),
    ("words", "What it means"),
    ("since", "Since"),
    ("checked", "Checked at"),
    ("via", "Subscribed by"),
];

/// The most PubSub subscriptions of one account `list` reads (each
/// resource may subscribe; the account limit counts domains, not JIDs).
const MAX_PUBSUB: usize = 4 * crate::engine::DOMAINS_PER_JID;

/// How one follows a domain: by chat, by PubSub, or both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    Chat,
    PubSub,
    Both,
}

/// One's domains, by chat and by PubSub (any resource of the bare JID),
/// sorted, each once.
pub(super) fn followed_names(engine: &Engine, jid: &str) -> Result<Vec<String>, StoreError> {
    Ok(followed(engine, jid)?.into_iter().map(|(d, _)| d).collect())
}

fn followed(engine: &Engine, jid: &str) -> Result<Vec<(String, Via)>, StoreError> {
    let store = engine.store();
    let mut all: Vec<(String, Via)> = store
        .subscriptions_of(jid)?
        .into_iter()
        .map(|d| (d, Via::Chat))
        .collect();
    for (node, _) in store.pubsub_subscriptions_of(jid, MAX_PUBSUB)? {
        match all.iter_mut().find(|(d, _)| *d == node) {
            Some((_, via @ Via::Chat)) => *via = Via::Both,
            Some(_) => {}
            None => all.push((node, Via::PubSub)),
        }
    }
    all.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(all)
}

pub(super) fn run(engine: &Engine, jid: &str) -> Result<Answer, StoreError> {
    let domains = followed(engine, jid)?;
    let mut table = Table {
        columns: COLUMNS.to_vec(),
        rows: Vec::new(),
    };
    if domains.is_empty() {
        return Ok(Answer {
            table: Some(table),
            ..Answer::done("You have no subscriptions. Send \"subscribe DOMAIN\" to add one.")
        });
    }
    let mut lines = vec![format!("Your subscriptions ({}):", domains.len())];
    for (d, via) in &domains {
        let report = engine.last_report(d)?;
        let state = engine.store().domain_state(d)?;
        let since = state.as_ref().and_then(|s| s.state.zip(s.since.as_deref()));
        let name = match via {
            Via::Chat => d.clone(),
            Via::PubSub => format!("{d} (PubSub)"),
            Via::Both => format!("{d} (chat and PubSub)"),
        };
        lines.push(state_line(&name, report.as_ref(), since));
        let via_words = match via {
            Via::Chat => "chat",
            Via::PubSub => "PubSub",
            Via::Both => "chat and PubSub",
        };
        let mut row = match &report {
            Some(r) => vec![
                d.clone(),
                r.verdict.to_string(),
                words(r.verdict).to_owned(),
                since
                    .filter(|(v, _)| *v == r.verdict)
                    .map(|(_, at)| at.to_owned())
                    .unwrap_or_default(),
                r.checked_at.clone(),
            ],
            None => vec![
                d.clone(),
                "not checked yet".into(),
                String::new(),
                String::new(),
                String::new(),
            ],
        };
        row.push(via_words.to_owned());
        table.rows.push(row);
    }
    lines.push("Send \"status DOMAIN\" for one domain's details.".into());
    Ok(Answer {
        table: Some(table),
        ..Answer::done(lines.join("\n"))
    })
}

/// What a verdict means, in words.
pub fn words(v: Verdict) -> &'static str {
    match v {
        Verdict::Ok => "protected",
        Verdict::Mismatch => "ALARM: a key that matches no TLSA record",
        Verdict::Bogus => "ALARM: DNSSEC validation fails",
        Verdict::Insecure => "not protected: the zone is not signed",
        Verdict::NoTlsa => "not protected: no TLSA records",
        Verdict::Unreachable => "could not be checked",
    }
}

/// One domain's line in `list`: the last result's verdict (the same report
/// `status` shows) in words, since when the monitor has seen that state
/// (`since`: its state and when it began), and when it was checked.
pub fn state_line(domain: &str, report: Option<&Report>, since: Option<(Verdict, &str)>) -> String {
    let Some(r) = report else {
        return format!("{domain}: not checked yet");
    };
    let held = match since {
        Some((state, at)) if state == r.verdict => format!(" since {at}"),
        Some((state, at)) => format!(" (alerts: {} since {at})", words(state)),
        None => String::new(),
    };
    format!(
        "{domain}: {}, {}{held} (checked at {})",
        r.verdict,
        words(r.verdict),
        r.checked_at
    )
}

/// One domain's last state as `list` shows it, from the same report
/// `status` shows (without the monitor's state).
pub fn last_state_line(domain: &str, report: Option<&Report>) -> String {
    state_line(domain, report, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(verdict: Verdict, at: &str) -> Report {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/ok.json"),
        )
        .unwrap();
        let mut r: Report = serde_json::from_str(&text).unwrap();
        r.verdict = verdict;
        r.checked_at = at.into();
        r
    }

    #[test]
    fn a_line_says_the_state_in_words_and_since_when() {
        let ok = report(Verdict::Ok, "2026-12-04T12:00:00Z");
        assert_eq!(
            state_line(
                "a.example",
                Some(&ok),
                Some((Verdict::Ok, "2026-12-01T08:00:00Z"))
            ),
            "a.example: ok, protected since 2026-12-01T08:00:00Z (checked at 2026-12-04T12:00:00Z)"
        );
        // A chat check saw something else than the monitor's state.
        let bad = report(Verdict::Mismatch, "2026-12-04T12:00:00Z");
        assert_eq!(
            state_line("a.example", Some(&bad), Some((Verdict::Ok, "2026-12-01T08:00:00Z"))),
            "a.example: mismatch, ALARM: a key that matches no TLSA record (alerts: protected since 2026-12-01T08:00:00Z) (checked at 2026-12-04T12:00:00Z)"
        );
        assert_eq!(
            state_line("b.example", None, None),
            "b.example: not checked yet"
        );
        assert_eq!(
            last_state_line("a.example", Some(&ok)),
            "a.example: ok, protected (checked at 2026-12-04T12:00:00Z)"
        );
    }
}
