//! The domain model the service keeps: each monitored domain's state, the
//! alerts its changes raise, and the deliveries and PubSub items that carry
//! them. Plain data; the store stores it, the alert rules compute it.

use serde::{Deserialize, Serialize};

use crate::report::{Report, Verdict};

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

/// A state change of one domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    /// Unique id; also the PubSub item id.
    pub id: String,
    /// The domain.
    pub domain: String,
    /// The state before (None on the first check).
    pub from: Option<Verdict>,
    /// The new state.
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
    /// subscriber (the details).
    pub fn deliveries(&self, chat: &[String], pubsub: &[String]) -> Vec<Delivery> {
        let sinks = chat
            .iter()
            .map(|j| Sink::Chat(j.clone()))
            .chain(pubsub.iter().map(|j| Sink::Event {
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
