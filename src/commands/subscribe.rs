//! `subscribe DOMAIN`: monitor a domain and alert its state changes.

use super::{Access, Answer, Kind, Spec, DOMAIN};
use crate::domain::Domain;
use crate::engine::{Engine, Error};
use crate::render;
use crate::store::StateStore as _;

/// `subscribe`.
pub const SPEC: Spec = Spec {
    kind: Kind::Subscribe,
    name: "subscribe",
    title: "Subscribe to a domain's alerts",
    help: "monitor a domain and get an alert when its state changes",
    fields: &[DOMAIN],
    access: Access::Anyone,
};

pub(super) async fn run(engine: &Engine, domain: &Domain, jid: &str) -> Result<Answer, Error> {
    // Not monitored until now (perhaps never, perhaps since everyone left
    // it): checked at once, whatever turn an old schedule gave it.
    let new_domain = engine.store().domain_state(domain.as_str())?.is_none();
    // Answered once it is on disk.
    let fresh = match engine.subscribe_chat(jid, domain.as_str()).await? {
        Ok(fresh) => fresh,
        Err(refusal) => return Ok(Answer::refused(refusal).about(domain)),
    };
    if new_domain {
        engine.check_soon(domain.as_str());
    } else {
        engine.wake_monitor();
    }
    let (subscribe_uri, node_uri) = render::pubsub_uris(engine.component(), domain.as_str());
    if !fresh {
        return Ok(Answer::done(format!("You are already subscribed to {domain}.")).about(domain));
    }
    let state = match engine.last_report(domain.as_str())? {
        Some(r) if !new_domain => format!("Its last check ({}): {}", r.checked_at, r.summary()),
        _ => {
            format!("It is being checked now; send \"status {domain}\" in a minute for the result.")
        }
    };
    Ok(Answer::done(format!(
        "Subscribed to {domain}. You will get a message whenever its state changes.\n{state}\nPubSub: {subscribe_uri} (node {node_uri})"
    ))
    .about(domain))
}
