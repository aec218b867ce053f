//! The operator self-watch: whether our own DNS resolver, transport (Tor or
//! the SOCKS5 proxy), store, or code keeps failing, counted per cause.
//!
//! Each cause has its own count of failures in a row, so a check that shows
//! one part working says nothing about another: Tor carrying probes does not
//! end a DNS outage, and a domain whose lookups failed (no probes) does not
//! end a Tor outage. Pure: the engine feeds it what each check showed and
//! sends what it returns.

use serde::{Deserialize, Serialize};

/// A part of CertWatch that can fail on our side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cause {
    /// Our DNS resolver (decided by its canary, the root zone).
    Dns,
    /// Our Tor client, SOCKS5 proxy, or network connection.
    Transport,
    /// Our store (sled).
    Store,
    /// A bug in CertWatch: a check panicked.
    Internal,
}

impl Cause {
    /// Every cause, in the order the operators read them.
    pub const ALL: [Cause; 4] = [Cause::Dns, Cause::Transport, Cause::Store, Cause::Internal];

    /// The cause's short name (logs, alert ids).
    pub fn key(self) -> &'static str {
        match self {
            Cause::Dns => "dns",
            Cause::Transport => "transport",
            Cause::Store => "store",
            Cause::Internal => "internal",
        }
    }
}

/// What one check showed about one cause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The part was used and worked.
    Worked,
    /// The part failed, with what it said.
    Failed(String),
}

/// One cause's failures in a row.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CauseState {
    /// Checks in a row that this part failed.
    pub failures: u32,
    /// When the failures began.
    pub failing_since: Option<String>,
    /// The last failure.
    pub last_error: Option<String>,
    /// Whether the operators were told.
    pub alerted: bool,
}

/// Every cause's state, as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SelfWatch {
    /// Our DNS resolver.
    pub dns: CauseState,
    /// Our Tor client or SOCKS5 proxy.
    pub transport: CauseState,
    /// Our store.
    pub store: CauseState,
    /// Checks that panicked.
    pub internal: CauseState,
}

/// What the operators are to be told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// `cause` has failed `failures` checks in a row since `since`.
    Failing {
        /// The part.
        cause: Cause,
        /// When it began.
        since: String,
        /// How many checks in a row.
        failures: u32,
        /// The last error.
        last_error: String,
    },
    /// `cause` works again after failing since `since`.
    Recovered {
        /// The part.
        cause: Cause,
        /// When it had begun.
        since: String,
    },
}

impl SelfWatch {
    /// One cause's state.
    pub fn get(&self, cause: Cause) -> &CauseState {
        match cause {
            Cause::Dns => &self.dns,
            Cause::Transport => &self.transport,
            Cause::Store => &self.store,
            Cause::Internal => &self.internal,
        }
    }

    fn get_mut(&mut self, cause: Cause) -> &mut CauseState {
        match cause {
            Cause::Dns => &mut self.dns,
            Cause::Transport => &mut self.transport,
            Cause::Store => &mut self.store,
            Cause::Internal => &mut self.internal,
        }
    }

    /// Records what a check showed about `cause` at `now`; the operators
    /// are told once `after` failures in a row are reached, and once when
    /// it works again after that.
    pub fn note(
        &mut self,
        cause: Cause,
        outcome: Outcome,
        now: &str,
        after: u32,
    ) -> Option<Notice> {
        let s = self.get_mut(cause);
        match outcome {
            Outcome::Failed(error) => {
                s.failures = s.failures.saturating_add(1);
                let since = s
                    .failing_since
                    .get_or_insert_with(|| now.to_owned())
                    .clone();
                s.last_error = Some(error.clone());
                if s.failures >= after.max(1) && !s.alerted {
                    s.alerted = true;
                    return Some(Notice::Failing {
                        cause,
                        since,
                        failures: s.failures,
                        last_error: error,
                    });
                }
                None
            }
            Outcome::Worked => {
                let was = std::mem::take(s);
                was.alerted.then(|| Notice::Recovered {
                    cause,
                    since: was.failing_since.unwrap_or_default(),
                })
            }
        }
    }

    /// The causes failing now, with their state.
    pub fn failing(&self) -> impl Iterator<Item = (Cause, &CauseState)> {
        Cause::ALL
            .into_iter()
            .map(|c| (c, self.get(c)))
            .filter(|(_, s)| s.failures > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(e: &str) -> Outcome {
        Outcome::Failed(e.into())
    }

    #[test]
    fn told_once_after_three_in_a_row_and_once_on_recovery() {
        let mut w = SelfWatch::default();
        assert_eq!(w.note(Cause::Dns, failed("a"), "t1", 3), None);
        assert_eq!(w.note(Cause::Dns, failed("b"), "t2", 3), None);
        assert_eq!(
            w.note(Cause::Dns, failed("c"), "t3", 3),
            Some(Notice::Failing {
                cause: Cause::Dns,
                since: "t1".into(),
                failures: 3,
                last_error: "c".into()
            })
        );
        assert_eq!(w.note(Cause::Dns, failed("d"), "t4", 3), None, "no repeat");
        assert_eq!(
            w.note(Cause::Dns, Outcome::Worked, "t5", 3),
            Some(Notice::Recovered {
                cause: Cause::Dns,
                since: "t1".into()
            })
        );
        assert_eq!(w.note(Cause::Dns, Outcome::Worked, "t6", 3), None);
        assert_eq!(w, SelfWatch::default());
    }

    #[test]
    fn a_part_that_works_does_not_end_another_parts_outage() {
        let mut w = SelfWatch::default();
        for t in ["t1", "t2"] {
            w.note(Cause::Dns, failed("no answer for the root"), t, 3);
            // Tor carried other domains' probes meanwhile.
            assert_eq!(w.note(Cause::Transport, Outcome::Worked, t, 3), None);
        }
        let told = w.note(Cause::Dns, failed("no answer for the root"), "t3", 3);
        assert!(matches!(
            told,
            Some(Notice::Failing {
                cause: Cause::Dns,
                ..
            })
        ));
        assert_eq!(w.get(Cause::Transport), &CauseState::default());
        assert_eq!(
            w.failing().map(|(c, _)| c).collect::<Vec<_>>(),
            vec![Cause::Dns]
        );
        // Tor fails too, for a while: its own alert, DNS still failing.
        for t in ["t4", "t5", "t6"] {
            w.note(Cause::Transport, failed("no circuit"), t, 3);
        }
        assert!(w.get(Cause::Transport).alerted);
        assert_eq!(w.get(Cause::Dns).failures, 3);
        // Tor back: only Tor recovers.
        assert!(matches!(
            w.note(Cause::Transport, Outcome::Worked, "t7", 3),
            Some(Notice::Recovered {
                cause: Cause::Transport,
                ..
            })
        ));
        assert!(w.get(Cause::Dns).alerted);
    }

    #[test]
    fn a_worked_check_between_failures_starts_the_count_again() {
        let mut w = SelfWatch::default();
        for _ in 0..10 {
            assert_eq!(w.note(Cause::Store, failed("io"), "t", 3), None);
            assert_eq!(w.note(Cause::Store, failed("io"), "t", 3), None);
            assert_eq!(w.note(Cause::Store, Outcome::Worked, "t", 3), None);
        }
    }

    #[test]
    fn the_stored_form_round_trips_and_old_or_partial_forms_load() {
        let mut w = SelfWatch::default();
        w.note(Cause::Internal, failed("panic"), "t1", 1);
        let json = serde_json::to_string(&w).unwrap();
        assert_eq!(serde_json::from_str::<SelfWatch>(&json).unwrap(), w);
        // The single-counter form of earlier versions loads as all well.
        let old = r#"{"failures":2,"failing_since":"t","last_error":"x","alerted":true}"#;
        assert_eq!(
            serde_json::from_str::<SelfWatch>(old).unwrap(),
            SelfWatch::default()
        );
    }
}
