//! IQ requests to the component: disco, ping, and PubSub (XEP-0060) on one node per domain.

use crate::store::StateStore as _;
use std::sync::Arc;

use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::jid::Jid;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;

use super::stanzas::{self, NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING, NS_PUBSUB};
use super::Ctx;
use crate::domain::Domain;

/// Most items returned by one items request.
const MAX_RETURNED_ITEMS: usize = 50;
/// Most subscriptions returned by one subscriptions request (one JID's).
const MAX_RETURNED_SUBSCRIPTIONS: usize = 4 * crate::engine::DOMAINS_PER_JID;

/// The outcome of one request: a result payload, or an error condition and text.
type Answer = Result<Option<Element>, (DefinedCondition, String)>;

/// Answers an IQ; results and errors addressed to us are dropped.
pub fn on_iq(ctx: &Arc<Ctx>, iq: Iq) {
    let (from, id, payload, set) = match iq {
        Iq::Get {
            from: Some(from),
            id,
            payload,
            ..
        } => (from, id, payload, false),
        Iq::Set {
            from: Some(from),
            id,
            payload,
            ..
        } => (from, id, payload, true),
        _ => return,
    };
    let answer = answer(ctx, &from, &payload, set);
    let reply = match answer {
        Ok(payload) => stanzas::iq_result(&ctx.me, &from, &id, payload),
        Err((condition, text)) => stanzas::iq_error(&ctx.me, &from, &id, condition, &text),
    };
    ctx.link.send(reply);
}

fn answer(ctx: &Ctx, from: &Jid, payload: &Element, set: bool) -> Answer {
    let ns = payload.ns();
    match (set, payload.name(), ns.as_str()) {
        (false, "query", NS_DISCO_INFO) => disco_info(ctx, payload.attr("node")),
        (false, "query", NS_DISCO_ITEMS) => disco_items(ctx, payload.attr("node")),
        (false, "ping", NS_PING) => Ok(None),
        (_, "pubsub", NS_PUBSUB) => pubsub(ctx, from, payload, set),
        _ => Err((
            DefinedCondition::ServiceUnavailable,
            "not supported by CertWatch".into(),
        )),
    }
}

fn store_error(e: impl std::fmt::Display) -> (DefinedCondition, String) {
    tracing::warn!(error = %e, "store failed during an IQ");
    (
        DefinedCondition::InternalServerError,
        "storage failed".into(),
    )
}

/// A node name that is a monitored (or monitorable) domain, in its canonical form.
fn node_domain(node: &str) -> Result<Domain, (DefinedCondition, String)> {
    match Domain::parse(node) {
        Ok(d) if d.as_str() == node => Ok(d),
        _ => Err((
            DefinedCondition::ItemNotFound,
            format!("no node {node:?}: nodes are domains in lowercase ASCII"),
        )),
    }
}

fn disco_info(ctx: &Ctx, node: Option<&str>) -> Answer {
    if let Some(node) = node {
        node_domain(node)?;
        let known = ctx
            .engine
            .store()
            .domain_state(node)
            .map_err(store_error)?
            .is_some();
        if !known {
            return Err((
                DefinedCondition::ItemNotFound,
                format!("{node} is not monitored"),
            ));
        }
    }
    Ok(Some(stanzas::disco_info(node, crate::commands::HELP_LINES)))
}

fn disco_items(ctx: &Ctx, node: Option<&str>) -> Answer {
    if node.is_some() {
        // Leaf nodes have no sub-nodes.
        return Ok(Some(stanzas::disco_items(&ctx.me, &[])));
    }
    let nodes = ctx.engine.store().monitored().map_err(store_error)?;
    Ok(Some(stanzas::disco_items(&ctx.me, &nodes)))
}

fn pubsub(ctx: &Ctx, from: &Jid, payload: &Element, set: bool) -> Answer {
    let Some(op) = payload.children().next() else {
        return Err((DefinedCondition::BadRequest, "empty pubsub request".into()));
    };
    let store = ctx.engine.store();
    match (set, op.name()) {
        (true, "subscribe") | (true, "unsubscribe") => {
            let node = op
                .attr("node")
                .ok_or((DefinedCondition::BadRequest, "node is required".into()))?;
            let domain = node_domain(node)?;
            let jid = op.attr("jid").and_then(|j| Jid::new(j).ok()).ok_or((
                DefinedCondition::BadRequest,
                "a valid jid is required".into(),
            ))?;
            // XEP-0060 §6.1.3.1: one may only subscribe oneself.
            if jid.to_bare() != from.to_bare() {
                return Err((
                    DefinedCondition::BadRequest,
                    "the jid must be your own (invalid-jid)".into(),
                ));
            }
            if op.name() == "subscribe" {
                if let Some(refusal) = ctx
                    .engine
                    .may_subscribe(&from.to_bare().to_string(), domain.as_str())
                    .map_err(store_error)?
                {
                    return Err((DefinedCondition::PolicyViolation, refusal));
                }
                let new_domain = store.monitor(domain.as_str()).map_err(store_error)?;
                store
                    .pubsub_subscribe(domain.as_str(), &jid.to_string())
                    .map_err(store_error)?;
                if new_domain {
                    ctx.engine.check_soon(domain.as_str());
                } else {
                    ctx.engine.wake_monitor();
                }
                Ok(Some(stanzas::subscription(
                    domain.as_str(),
                    &jid.to_string(),
                )))
            } else {
                let existed = store
                    .pubsub_unsubscribe(domain.as_str(), &jid.to_string())
                    .map_err(store_error)?;
                if !existed {
                    return Err((
                        DefinedCondition::UnexpectedRequest,
                        "not subscribed (not-subscribed)".into(),
                    ));
                }
                Ok(None)
            }
        }
        // XEP-0060 §5.6 and §5.7: one's own subscriptions and affiliations,
        // for the requesting JID only (optionally one node's).
        (false, "subscriptions") | (false, "affiliations") => {
            let bare = from.to_bare().to_string();
            let only = op.attr("node");
            let mut mine = store
                .pubsub_subscriptions_of(&bare, MAX_RETURNED_SUBSCRIPTIONS)
                .map_err(store_error)?;
            mine.retain(|(node, _)| only.is_none_or(|o| o == node));
            if op.name() == "subscriptions" {
                Ok(Some(stanzas::subscriptions(&mine)))
            } else {
                let mut nodes: Vec<String> = mine.into_iter().map(|(n, _)| n).collect();
                nodes.dedup();
                Ok(Some(stanzas::affiliations(&nodes)))
            }
        }
        (false, "items") => {
            let node = op
                .attr("node")
                .ok_or((DefinedCondition::BadRequest, "node is required".into()))?;
            let domain = node_domain(node)?;
            let max = op
                .attr("max_items")
                .and_then(|m| m.parse::<usize>().ok())
                .unwrap_or(MAX_RETURNED_ITEMS)
                .min(MAX_RETURNED_ITEMS);
            let items = store.items(domain.as_str(), max).map_err(store_error)?;
            let known = !items.is_empty()
                || store
                    .domain_state(domain.as_str())
                    .map_err(store_error)?
                    .is_some();
            if !known {
                return Err((
                    DefinedCondition::ItemNotFound,
                    format!("{node} is not monitored"),
                ));
            }
            let elements = items
                .iter()
                .map(|i| {
                    let entry = stanzas::atom_entry(&i.id, &i.title, &i.content, &i.updated);
                    stanzas::item(NS_PUBSUB, &i.id, entry)
                })
                .collect();
            Ok(Some(stanzas::items_result(domain.as_str(), elements)))
        }
        _ => Err((
            DefinedCondition::FeatureNotImplemented,
            format!("pubsub {} is not supported", op.name()),
        )),
    }
}
