//! Tor exits: how many streams one connection may try to leave through an
//! acceptable exit, which exits a confirming probe must avoid, and how many
//! exits of the directory allow a port.

use std::net::SocketAddr;

use super::stream::{ConnectFailure, ExitRelay};

/// How many streams (each over a fresh circuit) one Tor connection may try
/// to get one through an acceptable exit: an exit that refuses by its policy,
/// or one that must be avoided, costs one try.
pub const EXIT_TRIES: u32 = 8;

/// What the tries of one Tor connection came to, when none gave a stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitTries {
    /// Exits that refused the stream by their exit policy.
    pub refused: u32,
    /// Streams opened through an exit the probe had to avoid (then dropped).
    pub avoided: u32,
}

impl ExitTries {
    /// Whether another try may be made.
    pub fn may_retry(&self) -> bool {
        self.refused + self.avoided < EXIT_TRIES
    }

    /// The failure once the tries are used up: a refusal by every exit
    /// tried is the exits' doing, only avoided exits a confirmation that
    /// cannot be made.
    pub fn failure(&self, addr: SocketAddr, exits: Option<ExitCount>) -> ConnectFailure {
        let family = family_name(addr);
        let count = exits
            .map(|c| {
                format!(
                    "; the directory lists {} of {} exits as allowing {family} to port {}",
                    c.allowing,
                    c.exits,
                    addr.port()
                )
            })
            .unwrap_or_default();
        if self.avoided == 0 {
            ConnectFailure::ExitRefused(format!(
                "no Tor exit would carry a connection to {addr}: refused by the exit policy ({} circuits tried{count})",
                self.refused
            ))
        } else {
            ConnectFailure::NoOtherExit(format!(
                "no other Tor exit would carry a connection to {addr}: {} circuit(s) came out at an exit to avoid, {} at an exit that refused by its policy{count}",
                self.avoided, self.refused
            ))
        }
    }
}

/// How many exits of the current directory allow a port for one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitCount {
    /// Relays whose exit policy allows the port for the family.
    pub allowing: usize,
    /// Relays whose exit policy allows some port at all.
    pub exits: usize,
}

impl ExitCount {
    /// A note for the report when few exits allow the port (under a third of
    /// all exits): probes and confirmations have few exits to go through.
    pub fn few_note(&self, addr: SocketAddr) -> Option<String> {
        if self.exits == 0 || self.allowing * 3 >= self.exits {
            return None;
        }
        let hint = if addr.port() == 5269 {
            " (Tor's reduced exit policy, used by many exits, does not allow 5269)"
        } else {
            ""
        };
        Some(format!(
            "only {} of {} Tor exits allow {} connections to port {}{hint}: few exits can probe this endpoint, so it is more often unreachable over Tor and a mismatch has fewer exits to be confirmed through",
            self.allowing,
            self.exits,
            family_name(addr),
            addr.port()
        ))
    }
}

fn family_name(addr: SocketAddr) -> &'static str {
    if addr.is_ipv6() {
        "IPv6"
    } else {
        "IPv4"
    }
}

/// Whether a stream through `exit` may be used by a probe that must avoid
/// `avoid`: not one of them, nor (as `related` says) of their family. An
/// exit that cannot be named is acceptable only when there is nothing to avoid.
pub fn exit_acceptable(
    exit: Option<&ExitRelay>,
    avoid: &[ExitRelay],
    related: impl Fn(&ExitRelay, &ExitRelay) -> bool,
) -> bool {
    match exit {
        None => avoid.is_empty(),
        Some(exit) => avoid.iter().all(|a| {
            a.rsa != exit.rsa
                && a.ed25519
                    .as_ref()
                    .is_none_or(|e| Some(e) != exit.ed25519.as_ref())
                && !related(a, exit)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::HasKind as _;

    fn relay(rsa: char, ed: Option<&str>) -> ExitRelay {
        ExitRelay {
            rsa: rsa.to_string().repeat(40),
            ed25519: ed.map(str::to_owned),
        }
    }

    #[test]
    fn exit_tries_are_bounded_and_end_as_the_exits_refusal_or_no_other_exit() {
        let addr: SocketAddr = "[2001:db8::1]:5269".parse().unwrap();
        let mut tries = ExitTries::default();
        let mut n = 0;
        while tries.may_retry() {
            tries.refused += 1;
            n += 1;
        }
        assert_eq!(n, EXIT_TRIES);
        let refused = tries.failure(
            addr,
            Some(ExitCount {
                allowing: 2,
                exits: 9,
            }),
        );
        assert!(matches!(refused, ConnectFailure::ExitRefused(_)));
        // Neither the server's fault nor our Tor failing.
        assert!(!refused.is_ours());
        let text = refused.to_string();
        assert!(
            text.starts_with("no Tor exit would carry a connection to [2001:db8::1]:5269: refused by the exit policy"),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "({EXIT_TRIES} circuits tried; the directory lists 2 of 9 exits as allowing IPv6 to port 5269)"
            )),
            "{text}"
        );
        // Only exits to avoid came up: the confirming probe cannot be made.
        let avoided = ExitTries {
            refused: 1,
            avoided: EXIT_TRIES - 1,
        };
        assert!(!avoided.may_retry());
        let f = avoided.failure(addr, None);
        assert!(matches!(f, ConnectFailure::NoOtherExit(_)), "{f}");
        assert!(f.to_string().starts_with("no other Tor exit"), "{f}");
    }

    #[test]
    fn an_exit_to_avoid_is_neither_the_same_relay_nor_of_its_family() {
        let a = relay('a', Some("edA"));
        let b = relay('b', Some("edB"));
        let (c_same_ed, c_no_ed) = (relay('c', Some("edA")), relay('c', None));
        let unrelated = |_: &ExitRelay, _: &ExitRelay| false;
        let table: Vec<(Option<&ExitRelay>, Vec<ExitRelay>, bool)> = vec![
            (Some(&a), vec![], true),
            (Some(&b), vec![a.clone()], true),
            (Some(&a), vec![a.clone()], false),
            (Some(&a), vec![b.clone(), a.clone()], false),
            // The same Ed25519 identity under another RSA key is the same relay.
            (Some(&c_same_ed), vec![a.clone()], false),
            (Some(&c_no_ed), vec![a.clone()], true),
            // An exit that cannot be named cannot be shown to differ.
            (None, vec![], true),
            (None, vec![a.clone()], false),
        ];
        for (exit, avoid, want) in table {
            assert_eq!(
                exit_acceptable(exit, &avoid, unrelated),
                want,
                "{exit:?} / {avoid:?}"
            );
        }
        // A relay of the same family (or subnet) counts as the same.
        assert!(!exit_acceptable(
            Some(&b),
            std::slice::from_ref(&a),
            |_, _| true
        ));
    }

    #[test]
    fn few_exits_for_a_port_are_told() {
        let s2s: SocketAddr = "192.0.2.1:5269".parse().unwrap();
        let few = ExitCount {
            allowing: 300,
            exits: 1200,
        }
        .few_note(s2s)
        .unwrap();
        assert!(
            few.starts_with("only 300 of 1200 Tor exits allow IPv4 connections to port 5269"),
            "{few}"
        );
        assert!(few.contains("reduced exit policy"), "{few}");
        let c2s: SocketAddr = "[2001:db8::1]:5222".parse().unwrap();
        let many = ExitCount {
            allowing: 900,
            exits: 1200,
        };
        assert_eq!(many.few_note(c2s), None);
        let none = ExitCount {
            allowing: 0,
            exits: 0,
        };
        assert_eq!(none.few_note(c2s), None);
        let v6 = ExitCount {
            allowing: 1,
            exits: 10,
        }
        .few_note(c2s)
        .unwrap();
        assert!(v6.contains("IPv6 connections to port 5222"), "{v6}");
        assert!(!v6.contains("reduced exit policy"), "{v6}");
    }
}
