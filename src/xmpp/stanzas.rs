//! The stanzas the component builds. Every one has a round-trip test.

use std::sync::atomic::{AtomicUsize, Ordering};

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
/// XEP-0115 entity capabilities.
pub const NS_CAPS: &str = "http://jabber.org/protocol/caps";
/// Our XEP-0115 `node`: names the software, not a place to fetch from.
pub const CAPS_NODE: &str = "urn:xmpp:certwatch:caps";
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

/// XEP-0059 Result Set Management.
pub const NS_RSM: &str = "http://jabber.org/protocol/rsm";

/// The largest stanza the component sends, in bytes (`xmpp.max_stanza_bytes`);
/// set once at start-up. Prosody's component limit is 512 KiB by default and
/// a bigger stanza makes the server drop the whole link, so every text that
/// can grow (a reply, an alert, an item) is cut to fit well within it.
static MAX_STANZA: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_STANZA);

/// `xmpp.max_stanza_bytes` when the configuration does not say.
pub const DEFAULT_MAX_STANZA: usize = 64 * 1024;

/// Sets the stanza bound (at start-up, from the configuration).
pub fn set_max_stanza(bytes: usize) {
    MAX_STANZA.store(bytes, Ordering::Relaxed);
}

/// The stanza bound in force.
pub fn max_stanza() -> usize {
    MAX_STANZA.load(Ordering::Relaxed)
}

/// What one text of a stanza (a body, an entry's content) may take, escaped:
/// half the stanza bound, the rest being room for the envelope.
pub fn text_budget() -> usize {
    max_stanza() / 2
}

/// The length of `s` once escaped as XML text or attribute value.
fn escaped_len(s: &str) -> usize {
    s.bytes()
        .map(|b| match b {
            b'&' => 5,
            b'<' | b'>' => 4,
            b'\'' | b'"' => 6,
            _ => 1,
        })
        .sum()
}

/// `s`, cut at a character boundary so that it takes at most `budget` bytes
/// once escaped, with a note saying how much was cut. Short texts pass whole.
pub fn clip_text(s: &str, budget: usize) -> std::borrow::Cow<'_, str> {
    if escaped_len(s) <= budget {
        return s.into();
    }
    let note = |cut: usize| format!("\n[... {cut} more bytes cut to fit one XMPP stanza]");
    let room = budget.saturating_sub(escaped_len(&note(s.len())));
    let mut used = 0;
    let mut end = 0;
    for (i, c) in s.char_indices() {
        let mut buf = [0u8; 4];
        let w = escaped_len(c.encode_utf8(&mut buf));
        if used + w > room {
            break;
        }
        used += w;
        end = i + c.len_utf8();
    }
    format!("{}{}", &s[..end], note(s.len() - end)).into()
}

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
        clip_text(body, text_budget()).into_owned(),
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

/// The XEP-0115 `ver` of the component's own disco#info (sha-1, base64),
/// which answers a disco#info on `CAPS_NODE#ver` too.
pub fn caps_ver(commands: &[&str]) -> String {
    caps(commands)
        .attr("ver")
        .expect("caps carry a ver")
        .to_owned()
}

/// Our XEP-0115 `<c/>`, over our own disco#info.
pub fn caps(commands: &[&str]) -> Element {
    use tokio_xmpp::parsers::{caps, hashes::Algo};
    let input = caps_input(&disco_info(None, commands));
    let hash = caps::hash_caps(input.as_bytes(), Algo::Sha_1).expect("sha-1 is supported");
    caps::Caps::new(CAPS_NODE, hash).into()
}

/// The XEP-0115 §5.1 verification string of a disco#info `<query/>`.
///
/// Written here because xmpp-parsers 0.23's `compute_disco` leaves out the
/// XEP-0128 form's FORM_TYPE and so disagrees with clients (slixmpp) on
/// any disco#info that carries a form, as ours does.
pub fn caps_input(query: &Element) -> String {
    let mut identities: Vec<String> = query
        .children()
        .filter(|c| c.is("identity", NS_DISCO_INFO))
        .map(|i| {
            let a = |n: &str| i.attr(n).unwrap_or_default().to_owned();
            let lang = i
                .attr_ns(&tokio_xmpp::minidom::rxml::Namespace::XML, "lang")
                .unwrap_or_default();
            format!("{}/{}/{lang}/{}", a("category"), a("type"), a("name"))
        })
        .collect();
    identities.sort();
    let mut features: Vec<&str> = query
        .children()
        .filter(|c| c.is("feature", NS_DISCO_INFO))
        .filter_map(|f| f.attr("var"))
        .collect();
    features.sort();
    let mut s = String::new();
    for item in identities.iter().map(String::as_str).chain(features) {
        s.push_str(item);
        s.push('<');
    }
    let mut forms: Vec<(String, String)> = Vec::new();
    for form in query.children().filter(|c| c.is("x", NS_DATA)) {
        let mut form_type = String::new();
        let mut fields: Vec<(String, Vec<String>)> = Vec::new();
        for field in form.children().filter(|c| c.is("field", NS_DATA)) {
            let var = field.attr("var").unwrap_or_default().to_owned();
            let mut values: Vec<String> = field
                .children()
                .filter(|v| v.is("value", NS_DATA))
                .map(|v| v.text())
                .collect();
            if var == "FORM_TYPE" {
                form_type = values.first().cloned().unwrap_or_default();
                continue;
            }
            values.sort();
            fields.push((var, values));
        }
        fields.sort();
        let mut f = format!("{form_type}<");
        for (var, values) in fields {
            f.push_str(&var);
            f.push('<');
            for v in values {
                f.push_str(&v);
                f.push('<');
            }
        }
        forms.push((form_type, f));
    }
    forms.sort();
    for (_, f) in forms {
        s.push_str(&f);
    }
    s
}

/// Available presence, with our XEP-0115 capabilities.
pub fn available(from: &Jid, to: &Jid, commands: &[&str]) -> Presence {
    let mut p = presence(from, to, PresenceType::None);
    p.payloads.push(caps(commands));
    p
}

/// XEP-0030 info: identities, features, and an XEP-0128 form listing the chat commands.
/// `node` is a PubSub node (a leaf), or `CAPS_NODE#ver` (the component itself).
pub fn disco_info(node: Option<&str>, commands: &[&str]) -> Element {
    let mut q = Element::builder("query", NS_DISCO_INFO);
    if let Some(node) = node {
        q = attr(q, "node", node);
    }
    let node = node.filter(|n| !n.starts_with(CAPS_NODE));
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
    if node.is_none() {
        // XEP-0050 on the component itself (the XEP-0115 ver follows).
        features.push(super::adhoc::NS_COMMANDS);
    }
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

/// Which slice of a long list one answer carries (XEP-0059).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    /// The index of the first item of the slice in the whole list.
    pub index: usize,
    /// How many items the whole list has.
    pub count: usize,
}

/// XEP-0059 `<set/>` describing one page of `items`.
pub fn rsm_set(items: &[String], page: &Page) -> Element {
    let mut set = Element::builder("set", NS_RSM);
    if let (Some(first), Some(last)) = (items.first(), items.last()) {
        set = set
            .append(
                attr(
                    Element::builder("first", NS_RSM),
                    "index",
                    page.index.to_string(),
                )
                .append(first.as_str())
                .build(),
            )
            .append(
                Element::builder("last", NS_RSM)
                    .append(last.as_str())
                    .build(),
            );
    }
    set.append(
        Element::builder("count", NS_RSM)
            .append(page.count.to_string())
            .build(),
    )
    .build()
}

/// XEP-0030 items: one per PubSub node, with the page they are when paged.
pub fn disco_items_page(component: &Jid, nodes: &[String], page: Option<&Page>) -> Element {
    let mut q = disco_items(component, nodes);
    if let Some(page) = page {
        q.append_child(rsm_set(nodes, page));
    }
    q
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
        .append(text("title", &clip_text(title, 1024)))
        .append(
            attr(Element::builder("content", NS_ATOM), "type", "text")
                .append(clip_text(content, text_budget()).into_owned())
                .build(),
        )
        .append(text("updated", updated))
        .append(text("id", id))
        .build()
}

/// About how many bytes [`atom_entry`] and its `<item>` take (an upper
/// bound within a few bytes), to fill a result without passing the bound.
pub fn entry_len(id: &str, title: &str, content: &str, updated: &str) -> usize {
    const ENVELOPE: usize = 400;
    escaped_len(title).min(1024)
        + escaped_len(content).min(text_budget())
        + 2 * escaped_len(id)
        + escaped_len(updated)
        + ENVELOPE
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

/// A headline message carrying a PubSub event, with `body` as plain text
/// beside it (XEP-0060 §12.3) for clients that show no PubSub events.
pub fn event_message(from: &Jid, to: &Jid, payload: Element, body: &str) -> Message {
    let mut m = Message::new_with_type(MessageType::Headline, Some(to.clone()));
    m.from = Some(from.clone());
    m.bodies.insert(
        tokio_xmpp::parsers::message::Lang(String::new()),
        clip_text(body, SUMMARY_BUDGET).into_owned(),
    );
    m.payloads.push(payload);
    m
}

/// The most bytes of an event's plain-text body: one short line. With the
/// entry's title (1 KiB) and content (half the stanza bound) it still fits
/// the smallest `xmpp.max_stanza_bytes` (4 KiB).
const SUMMARY_BUDGET: usize = 256;

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

    #[test]
    fn xep0115_ver_of_the_spec_examples() {
        let ver = |xml: &str| {
            use tokio_xmpp::parsers::{caps, hashes::Algo};
            let el: Element = xml.parse().unwrap();
            let h = caps::hash_caps(caps_input(&el).as_bytes(), Algo::Sha_1).unwrap();
            let c: Element = caps::Caps::new("n", h).into();
            c.attr("ver").unwrap().to_owned()
        };
        // XEP-0115 §5.2, the simple example.
        let simple = "<query xmlns='http://jabber.org/protocol/disco#info'>\
            <identity category='client' name='Exodus 0.9.1' type='pc'/>\
            <feature var='http://jabber.org/protocol/caps'/>\
            <feature var='http://jabber.org/protocol/disco#info'/>\
            <feature var='http://jabber.org/protocol/disco#items'/>\
            <feature var='http://jabber.org/protocol/muc'/></query>";
        assert_eq!(ver(simple), "QgayPKawpkPSDYmwT/WM94uAlu0=");
        // XEP-0115 §5.3, the complex example (identities in two languages, a form).
        let complex = "<query xmlns='http://jabber.org/protocol/disco#info'>\
            <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>\
            <identity xml:lang='el' category='client' name='Ψ 0.11' type='pc'/>\
            <feature var='http://jabber.org/protocol/caps'/>\
            <feature var='http://jabber.org/protocol/disco#info'/>\
            <feature var='http://jabber.org/protocol/disco#items'/>\
            <feature var='http://jabber.org/protocol/muc'/>\
            <x xmlns='jabber:x:data' type='result'>\
              <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>\
              <field var='ip_version' type='text-multi'><value>ipv4</value><value>ipv6</value></field>\
              <field var='os'><value>Mac</value></field>\
              <field var='os_version'><value>10.5.1</value></field>\
              <field var='software'><value>Psi</value></field>\
              <field var='software_version'><value>0.11</value></field>\
            </x></query>";
        assert_eq!(ver(complex), "q07IKJEyjvHSyhy//CH0CxmKi8w=");
    }

    #[test]
    fn xep0115_available_presence_roundtrips_with_caps() {
        let me = Jid::from_str("certwatch.localhost").unwrap();
        let to = Jid::from_str("alice@localhost").unwrap();
        let p = available(&me, &to, &["help", "check DOMAIN"]);
        let el: Element = p.into();
        let back = Presence::try_from(el.clone()).unwrap();
        assert_eq!(back.type_, PresenceType::None);
        let c = el.get_child("c", NS_CAPS).expect("caps");
        assert_eq!(c.attr("hash"), Some("sha-1"));
        assert_eq!(c.attr("node"), Some(CAPS_NODE));
        let ver = c.attr("ver").unwrap();
        assert_eq!(ver, caps_ver(&["help", "check DOMAIN"]));
        assert_eq!(ver.len(), 28, "base64 of 20 bytes: {ver}");
        // The ver changes with what disco#info says.
        assert_ne!(ver, caps_ver(&["help"]));
        // disco#info on node#ver is the component's own info, not a leaf's.
        let info = disco_info(Some(&format!("{CAPS_NODE}#{ver}")), &["help"]);
        let ids: Vec<_> = info
            .children()
            .filter(|c| c.name() == "identity")
            .map(|c| c.attr("category").unwrap().to_owned())
            .collect();
        assert!(ids.contains(&"component".to_string()), "{ids:?}");
        assert_eq!(
            info.attr("node"),
            Some(format!("{CAPS_NODE}#{ver}").as_str())
        );
    }

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
        // XEP-0050 is advertised on the component, so its XEP-0115 ver covers it.
        let commands = super::super::adhoc::NS_COMMANDS;
        assert!(features.iter().any(|f| f == commands));
        assert!(caps_input(&e).contains(&format!("{commands}<")));
        let leaf = disco_info(Some("example.org"), &[]);
        assert!(
            !String::from(&leaf).contains(commands),
            "a node has no commands"
        );
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
    fn long_texts_are_cut_to_fit_one_stanza() {
        assert_eq!(clip_text("short & sweet", 100), "short & sweet");
        // Escaping counts: '&' is 5 bytes on the wire.
        let amps = "&".repeat(1000);
        let cut = clip_text(&amps, 600);
        assert!(escaped_len(&cut) <= 600, "{}", escaped_len(&cut));
        assert!(cut.contains("more bytes cut"), "{cut}");
        // Never inside a character.
        let wide = "é".repeat(10_000);
        let cut = clip_text(&wide, 1000);
        assert!(cut.len() <= 1000 && cut.starts_with('é'));
        // A 28 MB alert becomes a stanza well under the bound.
        let huge = "3 1 1 abcdef0123456789; ".repeat(1_200_000);
        let me = jid("certwatch.localhost");
        let to = jid("alice@localhost");
        let chat = String::from(&Element::from(chat(&me, &to, &huge, MessageType::Chat)));
        assert!(chat.len() < max_stanza(), "{}", chat.len());
        let entry = atom_entry("id-1", &huge, &huge, "2026-12-03T00:00:00Z");
        let event = String::from(&Element::from(event_message(
            &me,
            &to,
            event("example.org", item(NS_PUBSUB_EVENT, "id-1", entry)),
            &huge,
        )));
        assert!(event.len() < max_stanza(), "{}", event.len());
        assert!(
            entry_len("id-1", &huge, &huge, "2026-12-03T00:00:00Z") + SUMMARY_BUDGET
                >= event.len() - 600,
            "entry_len is an upper bound of the entry's size"
        );
    }

    #[test]
    fn an_event_carries_its_summary_as_plain_text_beside_the_item() {
        let m = event_message(
            &jid("certwatch.localhost"),
            &jid("bob@localhost"),
            event(
                "example.org",
                item(NS_PUBSUB_EVENT, "x", atom_entry("x", "t", "c", "u")),
            ),
            "example.org: ALARM, a key no record matches",
        );
        let text = String::from(&Element::from(m.clone()));
        let back = Message::try_from(Element::from_str(&text).unwrap()).unwrap();
        assert_eq!(
            back.get_best_body(vec![]).map(|(_, b)| b.as_str()),
            Some("example.org: ALARM, a key no record matches")
        );
        assert!(text.contains(NS_PUBSUB_EVENT), "{text}");
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
                "example.org: ALARM",
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
