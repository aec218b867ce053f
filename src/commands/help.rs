//! `help`: the commands this caller may run, one line each.

use super::{Access, Answer, Caller, Kind, Spec, SPECS};
use crate::engine::Engine;

/// `help`.
pub const SPEC: Spec = Spec {
    kind: Kind::Help,
    name: "help",
    title: "Help",
    help: "this list",
    fields: &[],
    access: Access::Anyone,
};

pub(super) fn run(engine: &Engine, caller: &Caller) -> Answer {
    Answer::done(text(&engine.config().probe.transport.to_string(), caller))
}

/// The help text: what CertWatch does, then `usage: what it does` per
/// command the caller may run.
pub(super) fn text(transport: &str, caller: &Caller) -> String {
    let how = match transport {
        "tor" => "probing over Tor",
        "socks5" => "probing through a SOCKS5 proxy",
        _ => "probing directly, without Tor",
    };
    let mut lines = vec![format!(
        "CertWatch checks that XMPP servers present the keys their DNSSEC-signed TLSA records announce, {how}."
    )];
    for s in SPECS.iter().filter(|s| caller.may_run(s)) {
        let operator = if s.access == Access::Operator {
            " (operators only)"
        } else {
            ""
        };
        lines.push(format!("{}: {}{operator}", s.usage(), s.help));
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(operator: bool) -> Caller {
        Caller {
            jid: "a@x".into(),
            operator,
        }
    }

    #[test]
    fn help_has_one_line_per_command_and_names_tor_only_over_tor() {
        let anyone = caller(false);
        assert!(text("tor", &anyone).contains("over Tor"));
        assert!(!text("direct", &anyone).contains("over Tor"));
        assert!(text("direct", &anyone).contains("without Tor"));
        let h = text("tor", &anyone);
        for cmd in [
            "help: this list",
            "check DOMAIN",
            "subscribe DOMAIN",
            "unsubscribe DOMAIN",
            "list",
            "status DOMAIN",
            "evidence DOMAIN",
        ] {
            assert!(h.lines().any(|l| l.starts_with(cmd)), "{cmd}");
        }
        assert!(!h.contains("health"), "{h}");
        let op = text("tor", &caller(true));
        for cmd in ["health:", "outbox:", "test-alert:"] {
            assert!(op.lines().any(|l| l.starts_with(cmd)), "{cmd}: {op}");
        }
    }
}
