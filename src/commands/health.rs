//! `health` (operators): each of our own parts as the self-watch sees it,
//! and whether Tor is bootstrapped.

use super::{Access, Answer, Kind, Spec, Table};
use crate::config::Transport;
use crate::engine::{Engine, TransportNow};
use crate::selfwatch::{Cause, CauseState, SelfWatch};

/// `health`.
pub const SPEC: Spec = Spec {
    kind: Kind::Health,
    name: "health",
    title: "CertWatch's own health",
    help: "our DNS resolver, transport (Tor), store and checks, as the self-watch sees them",
    fields: &[],
    access: Access::Operator,
};

/// The table's columns.
pub const COLUMNS: [(&str, &str); 4] = [
    ("part", "Part"),
    ("state", "State"),
    ("since", "Failing since"),
    ("error", "Last error"),
];

pub(super) async fn run(engine: &Engine) -> Answer {
    let tor = (engine.config().probe.transport == Transport::Tor).then(|| engine.transport_now());
    let nameservers = engine
        .config()
        .nameservers()
        .ok()
        .filter(|n| !n.is_empty())
        .map(|n| {
            n.iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_else(|| "the system's".into());
    let transport = engine.config().probe.transport.to_string();
    let mut a = answer(&engine.self_watch(), &nameservers, &transport, tor);
    let vantages = engine.vantage_lines();
    if !vantages.is_empty() {
        a.text.push_str("\nVantages:");
        for (name, state, contact, rate) in vantages {
            a.text.push_str(&format!(
                "\n{name}: {state}; last contact {contact}; {rate}"
            ));
            if let Some(t) = a.table.as_mut() {
                t.rows
                    .push(vec![format!("vantage {name}"), state, contact, rate]);
            }
        }
    }
    a
}

/// The answer from the self-watch, the resolvers' words, the transport's
/// name and (over Tor) whether Tor started and what arti says of itself.
fn answer(
    watch: &SelfWatch,
    nameservers: &str,
    transport: &str,
    tor: Option<TransportNow>,
) -> Answer {
    let mut table = Table {
        columns: COLUMNS.to_vec(),
        rows: Vec::new(),
    };
    let mut lines = Vec::new();
    let failing = watch.failing().count();
    lines.push(if failing == 0 {
        "CertWatch health: every part works (as far as the last checks showed).".to_owned()
    } else {
        format!("CertWatch health: {failing} part(s) failing.")
    });
    for cause in Cause::ALL {
        let part = match cause {
            Cause::Dns => format!("DNS resolver ({nameservers})"),
            Cause::Transport => format!("transport ({transport})"),
            Cause::Store => "store".to_owned(),
            Cause::Internal => "checks (no panics)".to_owned(),
        };
        let s: &CauseState = watch.get(cause);
        let state = if s.failures == 0 {
            "working".to_owned()
        } else {
            format!("failing, {} check(s) in a row", s.failures)
        };
        let since = s.failing_since.clone().unwrap_or_default();
        let error = s.last_error.clone().unwrap_or_default();
        lines.push(if s.failures == 0 {
            format!("{part}: {state}")
        } else {
            format!("{part}: {state} since {since}; last error: {error}")
        });
        table.rows.push(vec![part, state, since, error]);
    }
    if let Some(tor) = tor {
        let state = match tor {
            TransportNow::NotStarted => "not started yet (it starts at the first check)".to_owned(),
            TransportNow::Starting => "starting (bootstrapping)".to_owned(),
            TransportNow::Running(None) => "not in use".to_owned(),
            TransportNow::Running(Some(t)) if t.healthy() => {
                "bootstrapped, ready for traffic".to_owned()
            }
            TransportNow::Running(Some(t)) => match t.blocked {
                Some(why) => format!("not ready: {why}"),
                None => "still bootstrapping".to_owned(),
            },
        };
        lines.push(format!("Tor: {state}"));
        table
            .rows
            .push(vec!["Tor".into(), state, String::new(), String::new()]);
    }
    Answer {
        table: Some(table),
        ..Answer::done(lines.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::transport::TorState;

    #[test]
    fn each_cause_has_a_row_and_a_failing_one_says_since_when() {
        let watch = SelfWatch {
            dns: CauseState {
                failures: 4,
                failing_since: Some("2026-12-01T10:00:00Z".into()),
                last_error: Some("no answer".into()),
                alerted: true,
            },
            ..SelfWatch::default()
        };
        let a = answer(
            &watch,
            "127.0.0.1:53",
            "tor",
            Some(TransportNow::NotStarted),
        );
        assert!(a.text.starts_with("CertWatch health: 1 part(s) failing."));
        assert!(
            a.text.contains("DNS resolver (127.0.0.1:53): failing, 4 check(s) in a row since 2026-12-01T10:00:00Z; last error: no answer"),
            "{}",
            a.text
        );
        assert!(a.text.contains("store: working"), "{}", a.text);
        assert!(a.text.contains("Tor: not started yet"), "{}", a.text);
        let t = a.table.unwrap();
        assert_eq!(t.rows.len(), 5);
        assert!(t.rows.iter().all(|r| r.len() == t.columns.len()));
        let direct = answer(&SelfWatch::default(), "x", "direct", None);
        assert!(!direct.text.contains("Tor"), "{}", direct.text);
        let ready = TorState {
            ready: true,
            blocked: None,
        };
        assert!(
            answer(&watch, "x", "tor", Some(TransportNow::Running(Some(ready))))
                .text
                .contains("Tor: bootstrapped")
        );
        let stuck = TorState {
            ready: false,
            blocked: Some("no route to the guards".into()),
        };
        assert!(
            answer(&watch, "x", "tor", Some(TransportNow::Running(Some(stuck))))
                .text
                .contains("Tor: not ready: no route to the guards")
        );
        assert!(answer(&watch, "x", "tor", Some(TransportNow::Starting))
            .text
            .contains("Tor: starting (bootstrapping)"));
    }
}
