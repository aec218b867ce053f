//! The stanzas the component builds. Every one has a round-trip test.

use tokio_xmpp::minidom::rxml::NcName;
use tokio_xmpp::minidom::{Element, ElementBuilder};
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::jid::Jid;
use tokio_xmpp::parsers::message::{Message, MessageType};
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};

/// XEP-0030 disco#info.
pub const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// XEP-0030 disco#items.
pub const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
/// XEP-0199 ping.
pub const NS_PING: &str = "urn:xmpp:ping";
/// XEP-0060 PubSub.
pub const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
/// XEP-0060 PubSub events.
pub const NS_PUBSUB_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
/// XEP-0060 PubSub errors.
pub const NS_PUBSUB_ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
/// Atom (RFC 4287).
pub const NS_ATOM: &str = "http://www.w3.org/2005/Atom";
/// XEP-0004 data forms.
pub const NS_DATA: &str = "jabber:x:data";
/// XEP-0128 form type of our extended disco info.
pub const FORM_TYPE: &str = "urn:xmpp:certwatch:0";
/// The component stanza namespace.
pub const NS_COMPONENT: &str = "jabber:component:accept";

/// The pubsub features we implement (advertised in disco#info).
pub const PUBSUB_FEATURES: &[&str] = &[
    "http://jabber.org/protocol/pubsub",
    "http://jabber.org/protocol/pubsub#subscribe",
    "http://jabber.org/protocol/pubsub#retrieve-items",
    "http://jabber.org/protocol/pubsub#retrieve-subscriptions",
    "http://jabber.org/protocol/pubsub#retrieve-affiliations",
    "http://jabber.org/protocol/pubsub#persistent-items",
];

fn ncname(name: &str) -> NcName {
    NcName::try_from(name).expect("attribute names here are static and valid")
}

/// `builder.attr(name, value)` with a plain string name.
pub fn attr(builder: ElementBuilder, name: &str, value: impl Into<String>) -> ElementBuilder {
    builder.attr(ncname(name), value.into())
}

/// A chat reply with `from` set (ejabberd drops a component that omits it).
pub fn chat(from: &Jid, to: &Jid, body: &str, type_: MessageType) -> Message {
    let mut m = Message::new_with_type(type_, Some(to.clone()));
    m.from = Some(from.clone());
    m.bodies.insert(
        tokio_xmpp::parsers::message::Lang(String::new()),
        body.to_owned(),
    );
    m
}

/// An empty IQ result.
pub fn iq_result(from: &Jid, to: &Jid, id: &str, payload: Option<Element>) -> Iq {
    Iq::Result {
        from: Some(from.clone()),
        to: Some(to.clone()),
        id: id.to_owned(),
        payload,
    }
}

/// An IQ error with a defined condition (RFC 6120 §8.3).
pub fn iq_error(from: &Jid, to: &Jid, id: &str, condition: DefinedCondition, text: &str) -> Iq {
    let type_ = match condition {
        DefinedCondition::BadRequest
        | DefinedCondition::FeatureNotImplemented
        | DefinedCondition::NotAcceptable
        | DefinedCondition::ItemNotFound => ErrorType::Cancel,
        DefinedCondition::ResourceConstraint | DefinedCondition::PolicyViolation => ErrorType::Wait,
        _ => ErrorType::Cancel,
    };
    Iq::Error {
        from: Some(from.clone()),
        to: Some(to.clone()),
        id: id.to_owned(),
        payload: None,
        error: StanzaError::new(type_, condition, "en", text),
    }
}

/// A presence of the given type from the component.
pub fn presence(from: &Jid, to: &Jid, type_: PresenceType) -> Presence {
    let mut p = Presence::new(type_);
    p.from = Some(from.clone());
    p.to = Some(to.clone());
    p
}

/// XEP-0030 info: identities, features, and an XEP-0128 form listing the chat commands.
pub fn disco_info(node: Option<&str>, commands: &[&str]) -> Element {
    let mut q = Element::builder("query", NS_DISCO_INFO);
    if let Some(node) = node {
        q = attr(q, "node", node);
    }
    let identity = |cat: &str, ty: &str, name: &str| {
        attr(
            attr(
                attr(Element::builder("identity", NS_DISCO_INFO), "category", cat),
                "type",
                ty,
            ),
            "name",
            name,
        )
        .build()
    };
    match node {
        None => {
            q = q.append(identity("component", "generic", "CertWatch"));
            q = q.append(identity("pubsub", "service", "CertWatch alerts"));
        }
        Some(_) => q = q.append(identity("pubsub", "leaf", "CertWatch alerts")),
    }
    let mut features = vec![NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING];
    features.extend_from_slice(PUBSUB_FEATURES);
    for f in features {
        q = q.append(attr(Element::builder("feature", NS_DISCO_INFO), "var", f).build());
    }
    if node.is_none() {
        let field = |var: &str, ty: &str, values: &[&str]| {
            let mut f = attr(
                attr(Element::builder("field", NS_DATA), "var", var),
                "type",
                ty,
            );
            for v in values {
                f = f.append(Element::builder("value", NS_DATA).append(*v).build());
            }
            f.build()
        };
        let form = attr(Element::builder("x", NS_DATA), "type", "result")
            .append(field("FORM_TYPE", "hidden", &[FORM_TYPE]))
            .append(field("commands", "list-multi", commands))
            .build();
        q = q.append(form);
    }
    q.build()
}

/// XEP-0030 items: one per PubSub node.
pub fn disco_items(component: &Jid, nodes: &[String]) -> Element {
    let mut q = Element::builder("query", NS_DISCO_ITEMS);
    for n in nodes {
        let item = attr(
            attr(
                attr(
                    Element::builder("item", NS_DISCO_ITEMS),
                    "jid",
                    component.to_string(),
                ),
                "node",
                n.as_str(),
            ),
            "name",
            format!("CertWatch alerts for {n}"),
        );
        q = q.append(item.build());
    }
    q.build()
}

/// An Atom entry (RFC 4287) carrying one alert.
pub fn atom_entry(id: &str, title: &str, content: &str, updated: &str) -> Element {
    let text = |name: &str, value: &str| Element::builder(name, NS_ATOM).append(value).build();
    Element::builder("entry", NS_ATOM)
        .append(text("title", title))
        .append(
            attr(Element::builder("content", NS_ATOM), "type", "text")
                .append(content)
                .build(),
        )
        .append(text("updated", updated))
        .append(text("id", id))
        .build()
}

/// An `<item id>` wrapping an entry, in the given namespace (pubsub or pubsub#event).
pub fn item(ns: &str, id: &str, entry: Element) -> Element {
    attr(Element::builder("item", ns), "id", id)
        .append(entry)
        .build()
}

/// The pubsub result of a subscribe request (XEP-0060 §6.1.2).
pub fn subscription(node: &str, jid: &str) -> Element {
    Element::builder("pubsub", NS_PUBSUB)
        .append(
            attr(
                attr(
                    attr(Element::builder("subscription", NS_PUBSUB), "node", node),
                    "jid",
                    jid,
                ),
                "subscription",
                "subscribed",
            )
            .build(),
        )
        .build()
}

/// The pubsub result of a request for one's own subscriptions (XEP-0060
/// §5.6): one `<subscription/>` per (node, jid).
pub fn subscriptions(list: &[(String, String)]) -> Element {
    let mut subs = Element::builder("subscriptions", NS_PUBSUB);
    for (node, jid) in list {
        subs = subs.append(
            attr(
                attr(
                    attr(Element::builder("subscription", NS_PUBSUB), "node", node),
                    "jid",
                    jid,
                ),
                "subscription",
                "subscribed",
            )
            .build(),
        );
    }
    Element::builder("pubsub", NS_PUBSUB)
        .append(subs.build())
        .build()
}

/// The pubsub result of a request for one's own affiliations (XEP-0060
/// §5.7): a subscriber is a `member` of each node it follows.
pub fn affiliations(nodes: &[String]) -> Element {
    let mut list = Element::builder("affiliations", NS_PUBSUB);
    for node in nodes {
        list = list.append(
            attr(
                attr(Element::builder("affiliation", NS_PUBSUB), "node", node),
                "affiliation",
                "member",
            )
            .build(),
        );
    }
    Element::builder("pubsub", NS_PUBSUB)
        .append(list.build())
        .build()
}

/// The pubsub result of an items request (XEP-0060 §6.5).
pub fn items_result(node: &str, items: Vec<Element>) -> Element {
    let mut list = attr(Element::builder("items", NS_PUBSUB), "node", node);
    for i in items {
        list = list.append(i);
    }
    Element::builder("pubsub", NS_PUBSUB)
        .append(list.build())
        .build()
}

/// The event notification message payload (XEP-0060 §7.1.2).
pub fn event(node: &str, item: Element) -> Element {
    Element::builder("event", NS_PUBSUB_EVENT)
        .append(
            attr(Element::builder("items", NS_PUBSUB_EVENT), "node", node)
                .append(item)
                .build(),
        )
        .build()
}

/// A headline message carrying a PubSub event.
pub fn event_message(from: &Jid, to: &Jid, payload: Element) -> Message {
    let mut m = Message::new_with_type(MessageType::Headline, Some(to.clone()));
    m.from = Some(from.clone());
    m.payloads.push(payload);
    m
}

/// A XEP-0199 ping request to the server.
pub fn ping(from: &Jid, to: &Jid, id: &str) -> Iq {
    Iq::Get {
        from: Some(from.clone()),
        to: Some(to.clone()),
        id: id.to_owned(),
        payload: Element::builder("ping", NS_PING).build(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;
    use tokio_xmpp::parsers::stanza::Stanza;

    fn roundtrip_element(e: &Element) -> Element {
        let s = String::from(e);
        let back = Element::from_str(&s).expect("reparses");
        assert_eq!(&back, e, "{s}");
        back
    }

    fn jid(s: &str) -> Jid {
        Jid::new(s).unwrap()
    }

    #[test]
    fn disco_info_roundtrips_and_advertises_pubsub_and_commands() {
        let e = roundtrip_element(&disco_info(None, &["help", "check DOMAIN"]));
        let features: Vec<_> = e
            .children()
            .filter(|c| c.name() == "feature")
            .map(|c| c.attr("var").unwrap().to_owned())
            .collect();
        assert!(features.iter().any(|f| f == NS_PUBSUB));
        assert!(features.iter().any(|f| f == NS_PING));
        let form = e.get_child("x", NS_DATA).unwrap();
        assert!(String::from(form).contains("check DOMAIN"));
    }

    #[test]
    fn disco_items_roundtrip() {
        let e = roundtrip_element(&disco_items(
            &jid("certwatch.localhost"),
            &["example.org".into()],
        ));
        let item = e.children().next().unwrap();
        assert_eq!(item.attr("node"), Some("example.org"));
        assert_eq!(item.attr("jid"), Some("certwatch.localhost"));
    }

    #[test]
    fn atom_event_roundtrips_with_all_fields() {
        let entry = atom_entry(
            "id1",
            "example.org: ALARM",
            "details <&>",
            "2026-11-22T12:00:00Z",
        );
        let ev = roundtrip_element(&event("example.org", item(NS_PUBSUB_EVENT, "id1", entry)));
        let items = ev.get_child("items", NS_PUBSUB_EVENT).unwrap();
        assert_eq!(items.attr("node"), Some("example.org"));
        let entry = items
            .get_child("item", NS_PUBSUB_EVENT)
            .unwrap()
            .get_child("entry", NS_ATOM)
            .unwrap();
        for (name, want) in [
            ("title", "example.org: ALARM"),
            ("content", "details <&>"),
            ("updated", "2026-11-22T12:00:00Z"),
            ("id", "id1"),
        ] {
            assert_eq!(entry.get_child(name, NS_ATOM).unwrap().text(), want);
        }
    }

    #[test]
    fn xep0060_subscriptions_and_affiliations_parse_as_pubsub() {
        use tokio_xmpp::parsers::pubsub::PubSub;
        let subs = roundtrip_element(&subscriptions(&[
            // A subscription reads back with its node and jid.
            ("a.org".into(), "alice@localhost".into()),
            ("b.org".into(), "alice@localhost/phone".into()),
        ]));
        match PubSub::try_from(subs).expect("a pubsub payload") {
            PubSub::Subscriptions(s) => {
                assert_eq!(s.subscription.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        let affs = roundtrip_element(&affiliations(&["a.org".into()]));
        match PubSub::try_from(affs).expect("a pubsub payload") {
            PubSub::Affiliations(a) => assert_eq!(a.affiliations.len(), 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn stanzas_carry_from_and_roundtrip() {
        let from = jid("certwatch.localhost");
        let to = jid("alice@localhost/res");
        let stanzas: Vec<Stanza> = vec![
            chat(&from, &to, "hello", MessageType::Chat).into(),
            iq_result(
                &from,
                &to,
                "q1",
                Some(subscription("example.org", "alice@localhost")),
            )
            .into(),
            iq_error(&from, &to, "q2", DefinedCondition::ServiceUnavailable, "no").into(),
            presence(&from, &to, PresenceType::Subscribed).into(),
            event_message(
                &from,
                &to,
                event(
                    "example.org",
                    item(NS_PUBSUB_EVENT, "x", atom_entry("x", "t", "c", "u")),
                ),
            )
            .into(),
            ping(&from, &jid("localhost"), "p1").into(),
            iq_result(&from, &to, "q3", Some(items_result("example.org", vec![]))).into(),
            iq_result(
                &from,
                &to,
                "q4",
                Some(subscriptions(&[(
                    "example.org".into(),
                    "alice@localhost".into(),
                )])),
            )
            .into(),
            iq_result(
                &from,
                &to,
                "q5",
                Some(affiliations(&["example.org".into()])),
            )
            .into(),
        ];
        for s in stanzas {
            let e: Element = s.into();
            assert_eq!(e.attr("from"), Some("certwatch.localhost"));
            let back = roundtrip_element(&e);
            let parsed = Stanza::try_from(back).expect("parses as a stanza");
            assert_eq!(Element::from(parsed), e);
        }
    }
}
