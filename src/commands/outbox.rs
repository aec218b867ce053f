//! `outbox` (operators): how many alerts wait, and the dead letters.

use super::{Access, Answer, Kind, Spec, Table};
use crate::engine::Engine;
use crate::model::{Delivery, Sink};
use crate::store::{StateStore as _, StoreError};

/// `outbox`.
pub const SPEC: Spec = Spec {
    kind: Kind::Outbox,
    name: "outbox",
    title: "Outbox and dead letters",
    help: "alerts waiting to be delivered, and the dead letters (given up after retries)",
    fields: &[],
    access: Access::Operator,
};

/// Dead letters shown, newest first.
pub const SHOWN: usize = 10;

/// The table's columns (one row per dead letter shown).
pub const COLUMNS: [(&str, &str); 4] = [
    ("alert", "Alert"),
    ("to", "To"),
    ("attempts", "Attempts"),
    ("title", "Title"),
];

pub(super) fn run(engine: &Engine) -> Result<Answer, StoreError> {
    let store = engine.store();
    let pending = store.pending()?.len();
    let dead = store.dead_letters()?;
    Ok(answer(pending, &dead))
}

fn answer(pending: usize, dead: &[Delivery]) -> Answer {
    let mut table = Table {
        columns: COLUMNS.to_vec(),
        rows: Vec::new(),
    };
    let mut lines = vec![format!(
        "Outbox: {pending} alert(s) waiting; {} dead letter(s) (given up after retries).",
        dead.len()
    )];
    // The store keeps them oldest first.
    for d in dead.iter().rev().take(SHOWN) {
        let to = match &d.sink {
            Sink::Chat(j) => j.clone(),
            Sink::Event { jid, node } => format!("{jid} (node {node})"),
        };
        let title: String = d.title.chars().take(200).collect();
        lines.push(format!(
            "{}: to {to}, {} attempt(s): {title}",
            d.alert_id, d.attempts
        ));
        table
            .rows
            .push(vec![d.alert_id.clone(), to, d.attempts.to_string(), title]);
    }
    if dead.len() > SHOWN {
        lines.push(format!("and {} older ones", dead.len() - SHOWN));
    }
    Answer {
        table: Some(table),
        ..Answer::done(lines.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_shows_the_newest_dead_letters_bounded() {
        let dead: Vec<Delivery> = (0..SHOWN + 3)
            .map(|i| Delivery {
                alert_id: format!("a{i}"),
                sink: Sink::Chat("bob@x".into()),
                title: "t".into(),
                content: "c".into(),
                updated: String::new(),
                attempts: 5,
            })
            .collect();
        let a = answer(2, &dead);
        assert!(a
            .text
            .starts_with("Outbox: 2 alert(s) waiting; 13 dead letter(s)"));
        assert!(
            a.text.contains("a12: to bob@x, 5 attempt(s): t"),
            "{}",
            a.text
        );
        assert!(!a.text.contains("a2:"), "{}", a.text);
        assert!(a.text.ends_with("and 3 older ones"));
        assert_eq!(a.table.unwrap().rows.len(), SHOWN);
    }
}
