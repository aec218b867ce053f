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

/// An error condition and its text.
type Refusal = (DefinedCondition, String);

/// The outcome of one request: a result payload, or an error condition and text.
type Answer = Result<Option<Element>, Refusal>;

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
        Iq::Result {
            from, id, payload, ..
        } => return ctx.agents.on_answer(from.as_ref(), &id, Ok(payload)),
        Iq::Error {
            from, id, error, ..
        } => {
            let why = format!("the job bounced: {:?}", error.defined_condition);
            return ctx.agents.on_answer(from.as_ref(), &id, Err(why));
        }
        _ => return,
    };
    if !ctx.engine.allow_iq(&from.to_bare().to_string()) {
        let text = "too many requests; wait a minute";
        ctx.link.send(stanzas::iq_error(
            &ctx.me,
            &from,
            &id,
            DefinedCondition::ResourceConstraint,
            text,
        ));
        return;
    }
    // A bound on requests being answered at once, over all JIDs: past it
    // the requester is told to wait (RFC 6120 §8.3.3.18, type `wait`)
    // rather than queued without end.
    let Ok(permit) = ctx.iq_in_flight.clone().try_acquire_owned() else {
        tracing::warn!(from = %from, "too many IQ requests in flight; one refused");
        ctx.link.send(stanzas::iq_error(
            &ctx.me,
            &from,
            &id,
            DefinedCondition::ResourceConstraint,
            "too many requests at once; try again in a moment",
        ));
        return;
    };
    if set && payload.is("command", super::adhoc::NS_COMMANDS) {
        return super::adhoc_front::on_command(ctx, from, id, &payload);
    }
    // Off the stanza reader: a store scan or a write waiting for its flush
    // never holds up the next stanza. A change the user is told about is
    // durable before the answer (the store answers writes after their flush).
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let result = answer(&ctx, &from, &payload, set).await;
        let reply = reply(&ctx, &from, &id, result);
        ctx.link.send_waiting(reply).await;
    });
}

/// Runs `f` (store reads that may scan a tree) on a blocking thread.
async fn off_runtime<T: Send + 'static>(
    ctx: &Arc<Ctx>,
    f: impl FnOnce(&Ctx) -> Result<T, Refusal> + Send + 'static,
) -> Result<T, Refusal> {
    let ctx = ctx.clone();
    tokio::task::spawn_blocking(move || f(&ctx))
        .await
        .unwrap_or_else(|e| Err(store_error(e)))
}

fn reply(ctx: &Ctx, from: &Jid, id: &str, answer: Answer) -> Iq {
    match answer {
        Ok(payload) => stanzas::iq_result(&ctx.me, from, id, payload),
        Err((condition, text)) => error_reply(&ctx.me, from, id, condition, &text),
    }
}

/// The XEP-0060 error namespace.
const NS_PUBSUB_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";

/// An error answer; a `policy-violation` (only sent for a subscription
/// limit) carries XEP-0060's `<too-many-subscriptions/>` (§6.1.3.9).
fn error_reply(me: &Jid, to: &Jid, id: &str, condition: DefinedCondition, text: &str) -> Iq {
    let too_many = matches!(condition, DefinedCondition::PolicyViolation);
    let mut iq = stanzas::iq_error(me, to, id, condition, text);
    if let (true, Iq::Error { error, .. }) = (too_many, &mut iq) {
        error.other = Some(Element::builder("too-many-subscriptions", NS_PUBSUB_ERRORS).build());
    }
    iq
}

async fn answer(ctx: &Arc<Ctx>, from: &Jid, payload: &Element, set: bool) -> Answer {
    let ns = payload.ns();
    match (set, payload.name(), ns.as_str()) {
        (false, "query", NS_DISCO_INFO) => match payload.attr("node") {
            Some(node) => match super::adhoc_front::disco_info(ctx, from, node) {
                Some(info) => info.map(Some).map_err(|(c, _, text)| (c, text)),
                None => disco_info(ctx, Some(node)),
            },
            None => disco_info(ctx, None),
        },
        (false, "query", NS_DISCO_ITEMS)
            if payload.attr("node") == Some(super::adhoc::NS_COMMANDS) =>
        {
            Ok(Some(super::adhoc_front::disco_items(ctx, from)))
        }
        (false, "query", NS_DISCO_ITEMS) => {
            let payload = payload.clone();
            let from = from.clone();
            off_runtime(ctx, move |ctx| {
                disco_items(
                    ctx,
                    &from,
                    payload.attr("node"),
                    payload.get_child("set", stanzas::NS_RSM),
                )
            })
            .await
        }
        (false, "ping", NS_PING) => Ok(None),
        (_, "pubsub", NS_PUBSUB) => pubsub(ctx, from, payload, set).await,
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
    // XEP-0115 §6.2: a client asks for `node#ver` after seeing our presence.
    let caps_node = format!(
        "{}#{}",
        stanzas::CAPS_NODE,
        stanzas::caps_ver(crate::commands::HELP_LINES)
    );
    if let Some(node) = node.filter(|n| *n != caps_node) {
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

/// The nodes a requester may list: an operator's, every monitored domain;
/// anyone else's, only the domains their account follows (by chat or
/// PubSub), so nobody learns who else is watched.
fn disco_items(ctx: &Ctx, from: &Jid, node: Option<&str>, rsm: Option<&Element>) -> Answer {
    if node.is_some() {
        // Leaf nodes have no sub-nodes.
        return Ok(Some(stanzas::disco_items(&ctx.me, &[])));
    }
    let bare = from.to_bare().to_string();
    let store = ctx.engine.store();
    let nodes = if ctx.engine.config().xmpp.admins.contains(&bare) {
        store.monitored().map_err(store_error)?
    } else {
        let mut mine = store.subscriptions_of(&bare).map_err(store_error)?;
        mine.extend(
            store
                .pubsub_subscriptions_of(&bare, MAX_RETURNED_SUBSCRIPTIONS)
                .map_err(store_error)?
                .into_iter()
                .map(|(node, _)| node),
        );
        mine.sort();
        mine.dedup();
        mine
    };
    let (slice, page) = page_of(&nodes, rsm)?;
    Ok(Some(stanzas::disco_items_page(
        &ctx.me,
        slice,
        page.as_ref(),
    )))
}

/// Nodes listed in one disco#items answer at most (fewer when asked).
pub const DISCO_PAGE: usize = 100;

/// The slice of `all` (sorted) one answer carries: XEP-0059 `max` with
/// `after`, `before` or `index`; a list longer than one page is paged even
/// when the request did not ask, and then says so with a `<set/>`.
fn page_of<'a>(
    all: &'a [String],
    rsm: Option<&Element>,
) -> Result<(&'a [String], Option<stanzas::Page>), Refusal> {
    let bad = |what: &str| (DefinedCondition::BadRequest, format!("result set: {what}"));
    let child = |name: &str| rsm.and_then(|r| r.get_child(name, stanzas::NS_RSM));
    let max = match child("max") {
        Some(m) => m
            .text()
            .trim()
            .parse::<usize>()
            .map_err(|_| bad("max is not a number"))?,
        None => DISCO_PAGE,
    }
    .min(DISCO_PAGE);
    let start = if let Some(after) = child("after") {
        let after = after.text();
        all.partition_point(|n| n.as_str() <= after.as_str())
    } else if let Some(before) = child("before") {
        let before = before.text();
        // An empty <before/> asks for the last page.
        let end = if before.is_empty() {
            all.len()
        } else {
            all.partition_point(|n| n.as_str() < before.as_str())
        };
        end.saturating_sub(max)
    } else if let Some(index) = child("index") {
        index
            .text()
            .trim()
            .parse::<usize>()
            .map_err(|_| bad("index is not a number"))?
    } else {
        0
    }
    .min(all.len());
    let end = match child("before") {
        Some(b) if !b.text().is_empty() => all.partition_point(|n| n.as_str() < b.text().as_str()),
        _ => all.len(),
    }
    .min(start + max);
    let slice = &all[start..end.max(start)];
    let paged = rsm.is_some() || all.len() > slice.len();
    Ok((
        slice,
        paged.then_some(stanzas::Page {
            index: start,
            count: all.len(),
        }),
    ))
}

async fn pubsub(ctx: &Ctx, from: &Jid, payload: &Element, set: bool) -> Answer {
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
                let new_domain = store
                    .domain_state(domain.as_str())
                    .map_err(store_error)?
                    .is_none();
                if let Err(refusal) = ctx
                    .engine
                    .subscribe_pubsub(&jid.to_string(), domain.as_str())
                    .await
                    .map_err(store_error)?
                {
                    // XEP-0060 §6.1.3.9 (too many subscriptions): policy-violation,
                    // with the pubsub#errors condition for clients that read it.
                    return Err((DefinedCondition::PolicyViolation, refusal));
                }
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
                    .await
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
            // Newest first, as many as fit in one stanza (at least one).
            let budget = stanzas::max_stanza().saturating_sub(4096);
            let mut used = 0;
            let mut elements = Vec::new();
            for i in &items {
                let size = stanzas::entry_len(&i.id, &i.title, &i.content, &i.updated);
                if used + size > budget && !elements.is_empty() {
                    break;
                }
                used += size;
                let entry = stanzas::atom_entry(&i.id, &i.title, &i.content, &i.updated);
                elements.push(stanzas::item(NS_PUBSUB, &i.id, entry));
            }
            Ok(Some(stanzas::items_result(domain.as_str(), elements)))
        }
        _ => Err((
            DefinedCondition::FeatureNotImplemented,
            format!("pubsub {} is not supported", op.name()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn rsm(inner: &str) -> Element {
        Element::from_str(&format!("<set xmlns='{}'>{inner}</set>", stanzas::NS_RSM)).unwrap()
    }

    /// The next IQ written to the link.
    async fn next_iq(rx: &mut tokio::sync::mpsc::Receiver<crate::xmpp::Outgoing>) -> Iq {
        let wait = std::time::Duration::from_secs(5);
        match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Some(crate::xmpp::Outgoing::Stanza { stanza, .. })) => match *stanza {
                tokio_xmpp::Stanza::Iq(iq) => iq,
                other => panic!("not an IQ: {other:?}"),
            },
            _ => panic!("no IQ written"),
        }
    }

    fn disco_items_get(id: &str) -> Iq {
        Iq::Get {
            from: Some(Jid::new("alice@x/phone").unwrap()),
            to: Some(Jid::new("certwatch.localhost").unwrap()),
            id: id.into(),
            payload: Element::builder("query", NS_DISCO_ITEMS).build(),
        }
    }

    #[tokio::test]
    async fn iqs_past_the_global_bound_are_told_to_wait_not_queued() {
        let (ctx, mut rx) = crate::xmpp::chat::tests::front();
        // Alice follows a.example: her disco#items lists it.
        ctx.engine
            .store()
            .subscribe("a.example", "alice@x")
            .await
            .unwrap();
        ctx.engine
            .store()
            .subscribe("b.example", "bob@x")
            .await
            .unwrap();
        // Every IQ slot is taken (as many slow requests in flight would).
        let all = ctx
            .iq_in_flight
            .clone()
            .try_acquire_many_owned(crate::engine::IQS_IN_FLIGHT as u32)
            .unwrap();
        on_iq(&ctx, disco_items_get("over"));
        let Iq::Error { id, error, .. } = next_iq(&mut rx).await else {
            panic!("an error expected")
        };
        assert_eq!(id, "over");
        assert_eq!(
            error.defined_condition,
            DefinedCondition::ResourceConstraint
        );
        assert_eq!(
            error.type_,
            tokio_xmpp::parsers::stanza_error::ErrorType::Wait
        );
        drop(all);
        // With a slot free it is answered, from a task of its own (the scan
        // of the nodes on a blocking thread): on_iq itself returns at once.
        on_iq(&ctx, disco_items_get("ok"));
        let Iq::Result { id, payload, .. } = next_iq(&mut rx).await else {
            panic!("a result expected")
        };
        assert_eq!(id, "ok");
        let items = payload.unwrap();
        assert_eq!(items.children().count(), 1, "only her own node: {items:?}");
        assert_eq!(
            items.children().next().and_then(|i| i.attr("node")),
            Some("a.example")
        );
        assert_eq!(
            ctx.iq_in_flight.available_permits(),
            crate::engine::IQS_IN_FLIGHT
        );
    }

    #[test]
    fn xep0060_too_many_subscriptions_round_trips() {
        let me = Jid::new("certwatch.localhost").unwrap();
        let to = Jid::new("bob@localhost/r1").unwrap();
        let iq = error_reply(
            &me,
            &to,
            "s1",
            DefinedCondition::PolicyViolation,
            "your account already has 50 PubSub subscriptions",
        );
        let xml = Element::from(iq);
        let error = xml.get_child("error", "jabber:component:accept").unwrap();
        assert_eq!(error.attr("type"), Some("wait"));
        assert!(error.has_child("policy-violation", "urn:ietf:params:xml:ns:xmpp-stanzas"));
        assert!(error.has_child("too-many-subscriptions", NS_PUBSUB_ERRORS));
        let back = Iq::try_from(xml).unwrap();
        let Iq::Error { error, .. } = back else {
            panic!("an error")
        };
        assert_eq!(error.defined_condition, DefinedCondition::PolicyViolation);
        assert_eq!(error.other.unwrap().name(), "too-many-subscriptions");
        // Other conditions carry nothing more.
        let plain = error_reply(&me, &to, "s2", DefinedCondition::BadRequest, "no");
        let Iq::Error { error, .. } = plain else {
            panic!("an error")
        };
        assert!(error.other.is_none());
    }

    #[test]
    fn disco_items_are_paged_with_result_set_management() {
        let all: Vec<String> = (0..250).map(|i| format!("d{i:03}.example")).collect();
        // Unasked, a long list comes in pages, and says so.
        let (first, page) = page_of(&all, None).unwrap();
        assert_eq!(first.len(), DISCO_PAGE);
        assert_eq!(
            page,
            Some(stanzas::Page {
                index: 0,
                count: 250
            })
        );
        // The next page starts after the last one seen.
        let after = rsm(&format!(
            "<max>100</max><after>{}</after>",
            first.last().unwrap()
        ));
        let (second, page) = page_of(&all, Some(&after)).unwrap();
        assert_eq!(second[0], "d100.example");
        assert_eq!(page.unwrap().index, 100);
        let (third, _) = page_of(&all, Some(&rsm("<after>d199.example</after>"))).unwrap();
        assert_eq!((third.len(), third[0].as_str()), (50, "d200.example"));
        // max is honoured, never above the page size.
        let (few, _) = page_of(&all, Some(&rsm("<max>7</max>"))).unwrap();
        assert_eq!(few.len(), 7);
        let (capped, _) = page_of(&all, Some(&rsm("<max>100000</max>"))).unwrap();
        assert_eq!(capped.len(), DISCO_PAGE);
        // The last page, a page before an item, and by index.
        let (last, page) = page_of(&all, Some(&rsm("<max>10</max><before/>"))).unwrap();
        assert_eq!(
            (last[0].as_str(), page.unwrap().index),
            ("d240.example", 240)
        );
        let (before, _) = page_of(
            &all,
            Some(&rsm("<max>10</max><before>d050.example</before>")),
        )
        .unwrap();
        assert_eq!(before.first().unwrap(), "d040.example");
        assert_eq!(before.last().unwrap(), "d049.example");
        let (at, _) = page_of(&all, Some(&rsm("<max>3</max><index>5</index>"))).unwrap();
        assert_eq!(at, &all[5..8]);
        let (past, page) = page_of(&all, Some(&rsm("<index>9999</index>"))).unwrap();
        assert!(past.is_empty());
        assert_eq!(page.unwrap().count, 250);
        assert!(page_of(&all, Some(&rsm("<max>many</max>"))).is_err());
        // A short list, unasked: one answer, no <set/>.
        let (whole, page) = page_of(&all[..3], None).unwrap();
        assert_eq!((whole.len(), page), (3, None));
        // The answer carries first, last and count.
        let (slice, page) = page_of(&all, None).unwrap();
        let q = stanzas::disco_items_page(
            &Jid::new("certwatch.localhost").unwrap(),
            slice,
            page.as_ref(),
        );
        let set = q.get_child("set", stanzas::NS_RSM).unwrap();
        assert_eq!(
            set.get_child("count", stanzas::NS_RSM).unwrap().text(),
            "250"
        );
        assert_eq!(
            set.get_child("last", stanzas::NS_RSM).unwrap().text(),
            "d099.example"
        );
        assert_eq!(
            set.get_child("first", stanzas::NS_RSM)
                .unwrap()
                .attr("index"),
            Some("0")
        );
    }
}
