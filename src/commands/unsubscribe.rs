//! `unsubscribe DOMAIN`: stop one's alerts for a domain.

use super::{Access, Answer, Kind, Spec, DOMAIN};
use crate::domain::Domain;
use crate::engine::{Engine, Error};
use crate::store::StateStore as _;

/// `unsubscribe`.
pub const SPEC: Spec = Spec {
    kind: Kind::Unsubscribe,
    name: "unsubscribe",
    title: "Unsubscribe from a domain",
    help: "stop your alerts for a domain",
    fields: &[DOMAIN],
    access: Access::Anyone,
};

/// Ends `jid`'s chat subscription to `domain` and the PubSub subscriptions
/// of the node by any of its resources: `list` shows both, so
/// `unsubscribe` ends both.
pub(super) async fn run(engine: &Engine, domain: &Domain, jid: &str) -> Result<Answer, Error> {
    let store = engine.store();
    // Each answered once it is on disk.
    let chat = store.unsubscribe(domain.as_str(), jid).await?;
    let mut pubsub = 0;
    let mine = store.pubsub_subscriptions_of(jid, 4 * crate::engine::DOMAINS_PER_JID)?;
    for (node, full) in mine.iter().filter(|(n, _)| n == domain.as_str()) {
        pubsub += usize::from(store.pubsub_unsubscribe(node, full).await?);
    }
    Ok(Answer::done(match (chat, pubsub) {
        (false, 0) => match super::list::followed_names(engine, jid)
            .ok()
            .and_then(|mine| super::given::closest(domain.as_str(), &mine).map(str::to_owned))
        {
            Some(likely) => format!(
                "You were not subscribed to {domain}. Did you mean {likely}? Send \"unsubscribe {likely}\"."
            ),
            None => format!("You were not subscribed to {domain}."),
        },
        (true, 0) => format!("Unsubscribed from {domain}."),
        (true, n) => {
            format!("Unsubscribed from {domain} (chat alerts and {n} PubSub subscription(s)).")
        }
        (false, n) => format!("Unsubscribed from {domain} ({n} PubSub subscription(s))."),
    })
    .about(domain))
}
