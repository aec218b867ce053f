//! XEP-0050 (Ad-Hoc Commands) on the wire: the `<command/>` element, its
//! actions, status and notes, and its error conditions. xmpp-parsers 0.23
//! has data forms but no XEP-0050 types, so they are here, each parsed and
//! serialised, with round-trip tests on the XEP's own examples.

use tokio_xmpp::minidom::Element;

use super::stanzas::attr;

/// XEP-0050's namespace, also the disco node listing the commands.
pub const NS_COMMANDS: &str = "http://jabber.org/protocol/commands";

/// The XEP-0030 identity of one command's node (XEP-0050 §2.3).
pub const IDENTITY_COMMAND: (&str, &str) = ("automation", "command-node");

/// What the requester asks of a command (XEP-0050 §3.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Execute (the default): start, or go on with the default next step.
    Execute,
    /// Cancel the session.
    Cancel,
    /// Go back a stage.
    Prev,
    /// Go on to the next stage.
    Next,
    /// Finish with what was given.
    Complete,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Execute => "execute",
            Action::Cancel => "cancel",
            Action::Prev => "prev",
            Action::Next => "next",
            Action::Complete => "complete",
        }
    }

    fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "execute" => Action::Execute,
            "cancel" => Action::Cancel,
            "prev" => Action::Prev,
            "next" => Action::Next,
            "complete" => Action::Complete,
            _ => return None,
        })
    }
}

/// Where a command's session stands (XEP-0050 §3.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Waiting for the requester (a form to fill).
    Executing,
    /// Done; the session is over.
    Completed,
    /// Canceled; the session is over.
    Canceled,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Executing => "executing",
            Status::Completed => "completed",
            Status::Canceled => "canceled",
        }
    }

    fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "executing" => Status::Executing,
            "completed" => Status::Completed,
            "canceled" => Status::Canceled,
            _ => return None,
        })
    }
}

/// The kind of a `<note/>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoteType {
    /// Information (the default).
    Info,
    /// A warning.
    Warn,
    /// An error: the command did not do what was asked.
    Error,
}

impl NoteType {
    fn as_str(self) -> &'static str {
        match self {
            NoteType::Info => "info",
            NoteType::Warn => "warn",
            NoteType::Error => "error",
        }
    }
}

/// A `<note/>` for the person running the command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// Its kind.
    pub type_: NoteType,
    /// Its text.
    pub text: String,
}

/// The `<actions/>` a requester may take next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actions {
    /// The action `execute` stands for.
    pub execute: Option<Action>,
    /// The actions allowed (of prev, next, complete).
    pub allowed: Vec<Action>,
}

/// A `<command/>` element, request or response.
#[derive(Clone, Debug, PartialEq)]
pub struct Command {
    /// The command's node.
    pub node: String,
    /// The session, when there is one.
    pub sessionid: Option<String>,
    /// A request's action.
    pub action: Option<Action>,
    /// A response's status.
    pub status: Option<Status>,
    /// A response's next actions.
    pub actions: Option<Actions>,
    /// Notes.
    pub notes: Vec<Note>,
    /// Everything else (data forms), in order.
    pub payloads: Vec<Element>,
}

/// Why an element is not a `<command/>`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Another element.
    #[error("not an XEP-0050 command")]
    NotCommand,
    /// `node` is missing.
    #[error("the command has no node")]
    NoNode,
    /// An action XEP-0050 does not define (`malformed-action`).
    #[error("unknown action {0:?}")]
    Action(String),
    /// A status XEP-0050 does not define.
    #[error("unknown status {0:?}")]
    Status(String),
}

impl Command {
    /// A response: `node`, `sessionid`, `status`, nothing else yet.
    pub fn response(node: &str, sessionid: &str, status: Status) -> Command {
        Command {
            node: node.to_owned(),
            sessionid: Some(sessionid.to_owned()),
            action: None,
            status: Some(status),
            actions: None,
            notes: Vec::new(),
            payloads: Vec::new(),
        }
    }

    /// The data form among the payloads, if any.
    pub fn form(&self) -> Option<&Element> {
        self.payloads
            .iter()
            .find(|p| p.is("x", super::stanzas::NS_DATA))
    }
}

impl TryFrom<&Element> for Command {
    type Error = ParseError;

    fn try_from(e: &Element) -> Result<Command, ParseError> {
        if !e.is("command", NS_COMMANDS) {
            return Err(ParseError::NotCommand);
        }
        let node = e.attr("node").ok_or(ParseError::NoNode)?.to_owned();
        let action = e
            .attr("action")
            .map(|a| Action::parse(a).ok_or_else(|| ParseError::Action(a.to_owned())))
            .transpose()?;
        let status = e
            .attr("status")
            .map(|s| Status::parse(s).ok_or_else(|| ParseError::Status(s.to_owned())))
            .transpose()?;
        let mut cmd = Command {
            node,
            sessionid: e.attr("sessionid").map(str::to_owned),
            action,
            status,
            actions: None,
            notes: Vec::new(),
            payloads: Vec::new(),
        };
        for child in e.children() {
            if child.is("actions", NS_COMMANDS) {
                let execute = child
                    .attr("execute")
                    .map(|a| Action::parse(a).ok_or_else(|| ParseError::Action(a.to_owned())))
                    .transpose()?;
                let allowed = child
                    .children()
                    .filter(|c| c.ns() == NS_COMMANDS)
                    .map(|c| {
                        Action::parse(c.name()).ok_or_else(|| ParseError::Action(c.name().into()))
                    })
                    .collect::<Result<_, _>>()?;
                cmd.actions = Some(Actions { execute, allowed });
            } else if child.is("note", NS_COMMANDS) {
                let type_ = match child.attr("type") {
                    Some("warn") => NoteType::Warn,
                    Some("error") => NoteType::Error,
                    _ => NoteType::Info,
                };
                cmd.notes.push(Note {
                    type_,
                    text: child.text(),
                });
            } else {
                cmd.payloads.push(child.clone());
            }
        }
        Ok(cmd)
    }
}

impl From<Command> for Element {
    fn from(c: Command) -> Element {
        let mut b = attr(Element::builder("command", NS_COMMANDS), "node", c.node);
        if let Some(s) = c.sessionid {
            b = attr(b, "sessionid", s);
        }
        if let Some(a) = c.action {
            b = attr(b, "action", a.as_str());
        }
        if let Some(s) = c.status {
            b = attr(b, "status", s.as_str());
        }
        if let Some(actions) = c.actions {
            let mut a = Element::builder("actions", NS_COMMANDS);
            if let Some(x) = actions.execute {
                a = attr(a, "execute", x.as_str());
            }
            for x in actions.allowed {
                a = a.append(Element::builder(x.as_str(), NS_COMMANDS).build());
            }
            b = b.append(a.build());
        }
        for n in c.notes {
            b = b.append(
                attr(
                    Element::builder("note", NS_COMMANDS),
                    "type",
                    n.type_.as_str(),
                )
                .append(n.text)
                .build(),
            );
        }
        for p in c.payloads {
            b = b.append(p);
        }
        b.build()
    }
}

/// XEP-0050 §4.6 application-specific error conditions (beside an RFC 6120 one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Condition {
    /// The action is not allowed at this stage (with bad-request).
    BadAction,
    /// The session is unknown or not the requester's (with bad-request).
    BadSessionId,
    /// The session expired (with not-allowed).
    SessionExpired,
    /// The action is not one XEP-0050 defines (with bad-request).
    MalformedAction,
}

impl Condition {
    /// The condition's element, for a stanza error's `other`.
    pub fn element(self) -> Element {
        let name = match self {
            Condition::BadAction => "bad-action",
            Condition::BadSessionId => "bad-sessionid",
            Condition::SessionExpired => "session-expired",
            Condition::MalformedAction => "malformed-action",
        };
        Element::builder(name, NS_COMMANDS).build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn roundtrip(xml: &str) -> Command {
        let el = Element::from_str(xml).unwrap();
        let cmd = Command::try_from(&el).unwrap();
        let back: Element = cmd.clone().into();
        assert_eq!(back, el, "{xml}\n{}", String::from(&back));
        let again = Command::try_from(&Element::from_str(&String::from(&back)).unwrap()).unwrap();
        assert_eq!(again, cmd);
        cmd
    }

    #[test]
    fn xep0050_example_4_execute_request() {
        let c = roundtrip(
            "<command xmlns='http://jabber.org/protocol/commands' node='list' action='execute'/>",
        );
        assert_eq!(c.node, "list");
        assert_eq!(c.action, Some(Action::Execute));
        assert_eq!(c.sessionid, None);
    }

    #[test]
    fn xep0050_example_5_completed_with_a_reported_table() {
        let c = roundtrip(
            "<command xmlns='http://jabber.org/protocol/commands' \
              sessionid='list:20020923T213616Z-700' node='list' status='completed'>\
              <x xmlns='jabber:x:data' type='result'>\
                <title>Available Services</title>\
                <reported>\
                  <field var='service' label='Service'/>\
                  <field var='runlevel-1' label='Single-User mode'/>\
                </reported>\
                <item>\
                  <field var='service'><value>httpd</value></field>\
                  <field var='runlevel-1'><value>off</value></field>\
                </item>\
              </x></command>",
        );
        assert_eq!(c.status, Some(Status::Completed));
        assert_eq!(c.sessionid.as_deref(), Some("list:20020923T213616Z-700"));
        let form = c.form().unwrap();
        assert!(form.get_child("reported", "jabber:x:data").is_some());
    }

    #[test]
    fn xep0050_example_6_executing_with_actions_and_a_form() {
        let c = roundtrip(
            "<command xmlns='http://jabber.org/protocol/commands' \
              sessionid='config:20020923T213616Z-700' node='config' status='executing'>\
              <actions execute='next'><next/></actions>\
              <x xmlns='jabber:x:data' type='form'>\
                <title>Configure Service</title>\
                <instructions>Please select the service to configure.</instructions>\
                <field var='service' label='Service' type='list-single'>\
                  <option><value>httpd</value></option>\
                </field>\
              </x></command>",
        );
        assert_eq!(c.status, Some(Status::Executing));
        assert_eq!(
            c.actions,
            Some(Actions {
                execute: Some(Action::Next),
                allowed: vec![Action::Next]
            })
        );
    }

    #[test]
    fn xep0050_cancel_request_and_canceled_response() {
        let c = roundtrip(
            "<command xmlns='http://jabber.org/protocol/commands' \
              sessionid='config:20020923T213616Z-700' node='config' action='cancel'/>",
        );
        assert_eq!(c.action, Some(Action::Cancel));
        let r = roundtrip(
            "<command xmlns='http://jabber.org/protocol/commands' \
              sessionid='config:20020923T213616Z-700' node='config' status='canceled'/>",
        );
        assert_eq!(r.status, Some(Status::Canceled));
    }

    #[test]
    fn xep0050_completed_with_a_note() {
        let c = roundtrip(
            "<command xmlns='http://jabber.org/protocol/commands' \
              sessionid='config:20020923T213616Z-700' node='config' status='completed'>\
              <note type='info'>Service 'httpd' has been configured.</note></command>",
        );
        assert_eq!(
            c.notes,
            vec![Note {
                type_: NoteType::Info,
                text: "Service 'httpd' has been configured.".into()
            }]
        );
        let err = Command {
            notes: vec![Note {
                type_: NoteType::Error,
                text: "Not a valid domain: <x>".into(),
            }],
            ..Command::response("check", "s1", Status::Completed)
        };
        let el: Element = err.clone().into();
        assert_eq!(Command::try_from(&el).unwrap(), err);
        assert!(String::from(&el).contains("type='error'"));
    }

    #[test]
    fn bad_commands_are_refused_with_a_reason() {
        let parse = |xml: &str| Command::try_from(&Element::from_str(xml).unwrap());
        assert_eq!(
            parse("<command xmlns='http://jabber.org/protocol/commands' action='execute'/>"),
            Err(ParseError::NoNode)
        );
        assert_eq!(
            parse("<command xmlns='http://jabber.org/protocol/commands' node='x' action='run'/>"),
            Err(ParseError::Action("run".into()))
        );
        assert_eq!(
            parse("<command xmlns='urn:other' node='x'/>"),
            Err(ParseError::NotCommand)
        );
        let e = Condition::BadSessionId.element();
        assert_eq!(
            String::from(&e),
            "<bad-sessionid xmlns='http://jabber.org/protocol/commands'/>"
        );
    }
}
