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

pub(super) async fn run(engine: &Engine, domain: &Domain, jid: &str) -> Result<Answer, Error> {
    let store = engine.store();
    let existed = store.unsubscribe(domain.as_str(), jid)?;
    store.flush().await?;
    Ok(Answer::done(if existed {
        format!("Unsubscribed from {domain}.")
    } else {
        format!("You were not subscribed to {domain}.")
    })
    .about(domain))
}
