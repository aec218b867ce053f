//! The domain model the service keeps: each monitored domain's state, the
//! alerts its changes raise, and the deliveries and PubSub items that carry
//! them. Plain data; the store stores it, the alert rules compute it.

use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::report::{Report, Verdict};
use crate::rollover::RolloverMemory;

/// How many history entries are kept per domain.
pub const HISTORY: usize = 20;

/// What we know about one monitored domain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainState {
    /// The state alerts are about (None until the first check).
    pub state: Option<Verdict>,
    /// When that state began (RFC 3339).
    pub since: Option<String>,
    /// The last report.
    pub last_report: Option<Report>,
    /// Consecutive checks that found the domain unreachable.
    pub unreachable_streak: u32,
    /// Recent (time, verdict) pairs, newest last.
    pub history: Vec<(String, Verdict)>,
    /// Checks made so far (numbers the checks for [`DomainState::changes`]).
    #[serde(default)]
    pub checks: u64,
    /// Consecutive checks that found the domain OK.
    #[serde(default)]
    pub ok_streak: u32,
    /// While in an alarm state: what the alarm has shown so far, as
    /// "endpoint=key" lines; a line not among them is a new alert.
    #[serde(default)]
    pub alarm_seen: Vec<String>,
    /// The check numbers of recent alerted changes (for flapping).
    #[serde(default)]
    pub changes: Vec<u64>,
    /// Flapping: alerts are held until the state holds steady.
    #[serde(default)]
    pub intermittent: bool,
    /// While intermittent: consecutive checks with the same state.
    #[serde(default)]
    pub steady: u32,
    /// Expiry warnings sent, per horizon ("signatures example.org",
    /// "certificate <endpoint>"): the threshold last warned. Apart from the
    /// state above: warnings never change it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub warned: BTreeMap<String, WarnMark>,
    /// What the rollover watch remembers: TLSA records and keys seen.
    #[serde(default, skip_serializing_if = "RolloverMemory::is_empty")]
    pub rollover: RolloverMemory,
}

/// The warning last sent for one horizon.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarnMark {
    /// The threshold crossed, in seconds before the horizon.
    pub threshold: u64,
    /// The horizon warned about (UNIX seconds).
    pub at: u64,
    /// When the warning was made (UNIX seconds).
    pub since: u64,
}

/// Expiry warnings a domain's state remembers at most (the oldest go first).
pub const MAX_WARN_MARKS: usize = 32;

/// What an alert is about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// The domain's state changed, or an alarm shows something new.
    #[default]
    Change,
    /// Something the verdict rests on runs out soon (signatures, a
    /// certificate), or a key rollover went too fast: never an alarm.
    Warning,
    /// A horizon warned about moved out again (re-signed, renewed).
    Renewed,
}

impl AlertKind {
    /// The word in item ids: `...-warning-...`, `...-renewed-...`.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Change => "change",
            AlertKind::Warning => "warning",
            AlertKind::Renewed => "renewed",
        }
    }
}

/// Where one alert goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sink {
    /// A chat message to a bare JID.
    Chat(String),
    /// A PubSub event notification of a node's new item to one subscriber.
    Event {
        /// The node.
        node: String,
        /// The subscriber.
        jid: String,
    },
}

/// One alert waiting to be delivered to one sink.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The alert's id (also the PubSub item id).
    pub alert_id: String,
    /// Where it goes.
    pub sink: Sink,
    /// One-line summary.
    pub title: String,
    /// Details.
    pub content: String,
    /// RFC 3339 time of the alert.
    pub updated: String,
    /// How many times sending it was tried (it is dead-lettered after
    /// [`MAX_DELIVERY_ATTEMPTS`]).
    #[serde(default)]
    pub attempts: u32,
}

/// Tries before a delivery is given up and kept as a dead letter, so one
/// item the server will not take never blocks the alerts queued behind it.
pub const MAX_DELIVERY_ATTEMPTS: u32 = 5;

/// PubSub subscriptions one account (bare JID) may hold: each node and each
/// full JID counts, so one account's alerts cost at most this many events
/// per alert. A subscribe past it is refused (`policy-violation`).
pub const PUBSUB_SUBSCRIPTIONS_PER_ACCOUNT: usize = 50;

/// A published PubSub item.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// The item id.
    pub id: String,
    /// One-line summary.
    pub title: String,
    /// Details.
    pub content: String,
    /// RFC 3339 time.
    pub updated: String,
}

/// A state change of one domain, or a warning about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    /// A state change, a warning, or a renewed note.
    pub kind: AlertKind,
    /// Unique id; also the PubSub item id.
    pub id: String,
    /// The domain.
    pub domain: String,
    /// The state before (None on the first check).
    pub from: Option<Verdict>,
    /// The new state (for a warning: the state, unchanged).
    pub to: Verdict,
    /// One-line summary.
    pub title: String,
    /// The details (the PubSub item's content).
    pub content: String,
    /// The short form for chat: the summary, one line per group of affected
    /// endpoints, and where the details are.
    pub chat: String,
    /// RFC 3339 time.
    pub updated: String,
}

impl Alert {
    /// The PubSub item for this alert.
    pub fn item(&self) -> Item {
        Item {
            id: self.id.clone(),
            title: self.title.clone(),
            content: self.content.clone(),
            updated: self.updated.clone(),
        }
    }

    /// One delivery per chat subscriber (the short form) and per PubSub
    /// subscriber (the details): at most once per JID, and at most
    /// [`PUBSUB_SUBSCRIPTIONS_PER_ACCOUNT`] PubSub JIDs per account (bare
    /// JID), whatever the store holds.
    pub fn deliveries(&self, chat: &[String], pubsub: &[String]) -> Vec<Delivery> {
        let mut seen = std::collections::HashSet::new();
        let mut per_account: std::collections::HashMap<&str, usize> = Default::default();
        let pubsub = pubsub.iter().filter(|j| {
            let account = j.split('/').next().unwrap_or(j);
            let n = per_account.entry(account).or_default();
            if !seen.insert(j.as_str()) || *n >= PUBSUB_SUBSCRIPTIONS_PER_ACCOUNT {
                return false;
            }
            *n += 1;
            true
        });
        let mut chat_seen = std::collections::HashSet::new();
        let sinks = chat
            .iter()
            .filter(|j| chat_seen.insert(j.as_str()))
            .map(|j| Sink::Chat(j.clone()))
            .chain(pubsub.map(|j| Sink::Event {
                node: self.domain.clone(),
                jid: j.clone(),
            }));
        sinks
            .map(|sink| Delivery {
                alert_id: self.id.clone(),
                content: match sink {
                    Sink::Chat(_) => self.chat.clone(),
                    Sink::Event { .. } => self.content.clone(),
                },
                sink,
                title: self.title.clone(),
                updated: self.updated.clone(),
                attempts: 0,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alert_goes_once_per_jid_and_never_past_an_accounts_bound() {
        let a = Alert {
            kind: AlertKind::Change,
            id: "a1".into(),
            domain: "example.org".into(),
            from: Some(Verdict::Ok),
            to: Verdict::Mismatch,
            title: "t".into(),
            content: "c".into(),
            chat: "short".into(),
            updated: "2026-11-22T12:00:00Z".into(),
        };
        // One account with more full JIDs than its bound (a store written
        // before the bound, say), one JID twice, and another account.
        let mut pubsub: Vec<String> = (0..PUBSUB_SUBSCRIPTIONS_PER_ACCOUNT + 5)
            .map(|i| format!("many@x/r{i}"))
            .collect();
        pubsub.push("many@x/r0".into());
        pubsub.push("other@x".into());
        let chat = vec!["c@x".to_string(), "c@x".to_string()];
        let d = a.deliveries(&chat, &pubsub);
        let events: Vec<&String> = d
            .iter()
            .filter_map(|d| match &d.sink {
                Sink::Event { jid, .. } => Some(jid),
                Sink::Chat(_) => None,
            })
            .collect();
        let many = events.iter().filter(|j| j.starts_with("many@x/")).count();
        assert_eq!(many, PUBSUB_SUBSCRIPTIONS_PER_ACCOUNT);
        let unique: std::collections::HashSet<_> = events.iter().collect();
        assert_eq!(unique.len(), events.len(), "no JID twice");
        assert!(events.iter().any(|j| *j == "other@x"), "others unaffected");
        assert_eq!(
            d.iter().filter(|d| matches!(d.sink, Sink::Chat(_))).count(),
            1
        );
    }
}
