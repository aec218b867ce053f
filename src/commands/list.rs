//! `list`: one's subscriptions, each with its last state (a table).

use super::{Access, Answer, Kind, Spec, Table};
use crate::engine::Engine;
use crate::report::Report;
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
pub const COLUMNS: [(&str, &str); 3] = [
    ("domain", "Domain"),
    ("state", "Last state"),
    ("checked", "Checked at"),
];

pub(super) fn run(engine: &Engine, jid: &str) -> Result<Answer, StoreError> {
    let domains = engine.store().subscriptions_of(jid)?;
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
    for d in &domains {
        let report = engine.last_report(d)?;
        lines.push(last_state_line(d, report.as_ref()));
        table.rows.push(match &report {
            Some(r) => vec![d.clone(), r.verdict.to_string(), r.checked_at.clone()],
            None => vec![d.clone(), "not checked yet".into(), String::new()],
        });
    }
    lines.push("Send \"status DOMAIN\" for one domain's details.".into());
    Ok(Answer {
        table: Some(table),
        ..Answer::done(lines.join("\n"))
    })
}

/// One domain's last state as `list` shows it, from the same report `status` shows.
pub fn last_state_line(domain: &str, report: Option<&Report>) -> String {
    match report {
        Some(r) => format!("{domain}: {} (checked at {})", r.verdict, r.checked_at),
        None => format!("{domain}: not checked yet"),
    }
}
