//! The XEP-0050 front of the commands: the command list in disco, the
//! session flow (a form, then the result), and the sessions themselves,
//! keyed by (session id, full JID), expiring and bounded in number.
//!
//! Each command has one stage: executing it without a form answers the
//! form (status `executing`), executing or completing it with the form
//! runs it (status `completed`, a result form, or an error note). A run
//! goes through the chat commands' limits: the per-JID command rate and
//! the bound on commands in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::jid::Jid;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;

use super::adhoc::{
    Action, Actions, Command, Condition, Note, NoteType, ParseError, Status, IDENTITY_COMMAND,
    NS_COMMANDS,
};
use super::stanzas::{self, attr, NS_DATA, NS_DISCO_INFO, NS_DISCO_ITEMS};
use super::{forms, Ctx};
use crate::commands::{self, Caller, Kind, Outcome, Spec};

/// How long a session waits for its form.
pub const SESSION_TTL: Duration = Duration::from_secs(600);
/// Sessions open at once, over all JIDs.
pub const MAX_SESSIONS: usize = 1000;
/// Sessions one account (a bare JID, all its resources) may have open at once.
pub const SESSIONS_PER_JID: usize = 8;

/// An error condition, its XEP-0050 detail and its text.
type Refusal = (DefinedCondition, Option<Condition>, String);

struct Session {
    node: &'static str,
    started: Instant,
}

/// The open sessions, keyed by (session id, full JID).
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<(String, String), Session>>);

impl Sessions {
    /// Opens a session for `jid` (full) on `node`, under the id `again`
    /// (a session asking again keeps its id, as clients expect) or a new
    /// one; its id, or why not.
    fn open(
        &self,
        jid: &str,
        node: &'static str,
        again: Option<&str>,
        now: Instant,
    ) -> Result<String, Refusal> {
        let mut map = self.0.lock().expect("sessions lock");
        map.retain(|_, s| now.duration_since(s.started) < SESSION_TTL);
        // Counted per account: resources are free to make, accounts are not.
        let bare = jid.split('/').next().unwrap_or(jid);
        let mine = map
            .keys()
            .filter(|(_, j)| j.split('/').next() == Some(bare))
            .count();
        if map.len() >= MAX_SESSIONS || mine >= SESSIONS_PER_JID {
            return Err((
                DefinedCondition::ResourceConstraint,
                None,
                "too many open command sessions; finish or cancel one".into(),
            ));
        }
        let id = again
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
        map.insert((id.clone(), jid.to_owned()), Session { node, started: now });
        Ok(id)
    }

    /// Ends `jid`'s session `id` on `node`: Ok if it was open.
    fn close(&self, id: &str, jid: &str, node: &str, now: Instant) -> Result<(), Refusal> {
        let mut map = self.0.lock().expect("sessions lock");
        let key = (id.to_owned(), jid.to_owned());
        match map.get(&key) {
            Some(s) if s.node != node => Err(bad_session()),
            Some(s) if now.duration_since(s.started) >= SESSION_TTL => {
                map.remove(&key);
                Err((
                    DefinedCondition::NotAllowed,
                    Some(Condition::SessionExpired),
                    "the session expired; start the command again".into(),
                ))
            }
            Some(_) => {
                map.remove(&key);
                Ok(())
            }
            None => Err(bad_session()),
        }
    }

    /// Sessions open (for the tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().expect("sessions lock").len()
    }
}

fn bad_session() -> Refusal {
    (
        DefinedCondition::BadRequest,
        Some(Condition::BadSessionId),
        "no such session of yours on this command".into(),
    )
}

/// The commands a disco or an execution may name: all but `help`.
fn command(node: &str) -> Option<&'static Spec> {
    commands::spec(node).filter(|s| s.kind != Kind::Help)
}

/// The command `node` if `caller` may see it; others are not found.
fn visible(node: &str, caller: &Caller) -> Result<&'static Spec, Refusal> {
    match command(node) {
        Some(spec) if caller.may_run(spec) => Ok(spec),
        Some(_) => Err((
            DefinedCondition::Forbidden,
            None,
            format!("{node} is for CertWatch's operators only"),
        )),
        None => Err((
            DefinedCondition::ItemNotFound,
            None,
            format!("no command {node:?}"),
        )),
    }
}

/// disco#items on the commands node: the commands `from` may run.
pub fn disco_items(ctx: &Ctx, from: &Jid) -> Element {
    let caller = Caller::new(&ctx.engine, &from.to_bare().to_string());
    let mut q = attr(
        Element::builder("query", NS_DISCO_ITEMS),
        "node",
        NS_COMMANDS,
    );
    for spec in commands::SPECS.iter().filter(|s| s.kind != Kind::Help) {
        if !caller.may_run(spec) {
            continue;
        }
        let item = attr(
            Element::builder("item", NS_DISCO_ITEMS),
            "jid",
            ctx.me.to_string(),
        );
        q = q.append(attr(attr(item, "node", spec.name), "name", spec.title).build());
    }
    q.build()
}

/// disco#info on the commands node or on one command's node; None when
/// `node` is neither (the caller answers it as before).
pub fn disco_info(ctx: &Ctx, from: &Jid, node: &str) -> Option<Result<Element, Refusal>> {
    let caller = Caller::new(&ctx.engine, &from.to_bare().to_string());
    let (category, type_, name) = if node == NS_COMMANDS {
        ("automation", "command-list", "CertWatch commands")
    } else {
        command(node)?;
        // An operator's command is not found by others, as in disco#items.
        let spec = match visible(node, &caller) {
            Ok(s) => s,
            Err(_) => {
                return Some(Err((
                    DefinedCondition::ItemNotFound,
                    None,
                    format!("no command {node:?}"),
                )))
            }
        };
        (IDENTITY_COMMAND.0, IDENTITY_COMMAND.1, spec.title)
    };
    let identity = attr(
        attr(
            attr(
                Element::builder("identity", NS_DISCO_INFO),
                "category",
                category,
            ),
            "type",
            type_,
        ),
        "name",
        name,
    );
    let feature = |var: &str| attr(Element::builder("feature", NS_DISCO_INFO), "var", var).build();
    let q = attr(Element::builder("query", NS_DISCO_INFO), "node", node)
        .append(identity.build())
        .append(feature(NS_COMMANDS))
        .append(feature(NS_DATA))
        .build();
    Some(Ok(q))
}

/// Answers an XEP-0050 `<command/>` IQ set from `from`.
pub fn on_command(ctx: &Arc<Ctx>, from: Jid, id: String, payload: &Element) {
    let send = |answer: Result<Command, Refusal>| {
        ctx.link.send(reply(ctx, &from, &id, answer));
    };
    let cmd = match Command::try_from(payload) {
        Ok(c) => c,
        Err(e) => {
            let detail = matches!(e, ParseError::Action(_)).then_some(Condition::MalformedAction);
            return send(Err((DefinedCondition::BadRequest, detail, e.to_string())));
        }
    };
    let bare = from.to_bare().to_string();
    let caller = Caller::new(&ctx.engine, &bare);
    let spec = match visible(&cmd.node, &caller) {
        Ok(s) => s,
        Err(r) => return send(Err(r)),
    };
    let full = from.to_string();
    let now = Instant::now();
    let sessions = &ctx.adhoc;
    if let Some(sid) = &cmd.sessionid {
        if let Err(r) = sessions.close(sid, &full, spec.name, now) {
            return send(Err(r));
        }
    }
    match cmd.action.unwrap_or(Action::Execute) {
        Action::Cancel => {
            return send(match cmd.sessionid {
                Some(sid) => Ok(Command::response(spec.name, &sid, Status::Canceled)),
                None => Err(bad_session()),
            })
        }
        Action::Prev => {
            return send(Err((
                DefinedCondition::BadRequest,
                Some(Condition::BadAction),
                "these commands have a single stage".into(),
            )))
        }
        Action::Execute | Action::Next | Action::Complete => {}
    }
    let values = cmd.form().and_then(forms::submitted);
    let asked = match (&values, spec.fields.is_empty()) {
        // Nothing to fill: run it.
        (_, true) => Ok(Vec::new()),
        (Some(v), false) => forms::input(spec, v).map(|_| v.clone()).map_err(Some),
        (None, false) => Err(None),
    };
    let values = match asked {
        Ok(v) => v,
        Err(error) => {
            let given = values.unwrap_or_default();
            let again = cmd.sessionid.as_deref();
            let error = error.map(|e| e.to_string());
            return send(ask(sessions, &full, spec, again, &given, error, now));
        }
    };
    let input = forms::input(spec, &values).unwrap_or_default();
    run(
        ctx,
        from.clone(),
        id.clone(),
        spec,
        caller,
        input,
        cmd.sessionid,
    );
}

/// The form asking for `spec`'s fields in a new session, with an error
/// note when a submitted value was refused.
fn ask(
    sessions: &Sessions,
    jid: &str,
    spec: &'static Spec,
    again: Option<&str>,
    given: &[(String, String)],
    error: Option<String>,
    now: Instant,
) -> Result<Command, Refusal> {
    let sid = sessions.open(jid, spec.name, again, now)?;
    let mut r = Command::response(spec.name, &sid, Status::Executing);
    r.actions = Some(Actions {
        execute: Some(Action::Complete),
        allowed: vec![Action::Complete],
    });
    if let Some(text) = error {
        r.notes.push(Note {
            type_: NoteType::Error,
            text,
        });
    }
    let value = |var: &str| given.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone());
    r.payloads.push(forms::ask(spec, &value));
    Ok(r)
}

/// Runs the command within the chat commands' limits and sends its result.
fn run(
    ctx: &Arc<Ctx>,
    from: Jid,
    id: String,
    spec: &'static Spec,
    caller: Caller,
    input: commands::Input,
    sessionid: Option<String>,
) {
    let sid = sessionid.unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
    // A check waits in the checks' queue like a chat one (bounded per JID
    // and in all) and holds no command slot meanwhile; its place in the
    // queue is its bound. Counted against the hour only once queued.
    if spec.kind == Kind::Check {
        if let Some(refusal) = ctx.engine.allow_command(&caller.jid, false) {
            ctx.link
                .send(reply(ctx, &from, &id, Ok(failed(spec, &sid, refusal))));
            return;
        }
        let ticket = match ctx.engine.queue_check(&caller.jid) {
            Ok(ticket) => ticket,
            Err(full) => {
                let text = full.user_text();
                ctx.link
                    .send(reply(ctx, &from, &id, Ok(failed(spec, &sid, text))));
                return;
            }
        };
        if let Some(refusal) = ctx.engine.allow_check(&caller.jid) {
            ctx.link
                .send(reply(ctx, &from, &id, Ok(failed(spec, &sid, refusal))));
            return;
        }
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _ticket = ticket;
            finish(&ctx, from, id, spec, &caller, input, sid).await;
        });
        return;
    }
    if let Some(refusal) = ctx.engine.allow_command(&caller.jid, false) {
        ctx.link
            .send(reply(ctx, &from, &id, Ok(failed(spec, &sid, refusal))));
        return;
    }
    let Ok(permit) = ctx.in_flight.clone().try_acquire_owned() else {
        tracing::warn!(from = %from, "too many commands in flight; an ad-hoc one refused");
        let busy = (
            DefinedCondition::ResourceConstraint,
            None,
            "too many commands at once; try again in a minute".to_owned(),
        );
        ctx.link.send(reply(ctx, &from, &id, Err(busy)));
        return;
    };
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let _permit = permit;
        finish(&ctx, from, id, spec, &caller, input, sid).await;
    });
}

/// Runs the command and sends its result (a result form, or an error note).
async fn finish(
    ctx: &Arc<Ctx>,
    from: Jid,
    id: String,
    spec: &'static Spec,
    caller: &Caller,
    input: commands::Input,
    sid: String,
) {
    tracing::debug!(node = spec.name, "ad-hoc command");
    let answer = commands::execute(&ctx.engine, caller, spec.kind, input).await;
    let r = match answer.outcome {
        Outcome::Done => {
            let mut r = Command::response(spec.name, &sid, Status::Completed);
            if answer.table.is_some() {
                r.notes.push(Note {
                    type_: NoteType::Info,
                    text: answer.summary().to_owned(),
                });
            }
            r.payloads.push(forms::result(spec, &answer));
            r
        }
        Outcome::Refused | Outcome::Failed => failed(spec, &sid, answer.text),
    };
    ctx.link.send(reply(ctx, &from, &id, Ok(r)));
}

/// A completed command that did not do what was asked: an error note.
fn failed(spec: &Spec, sid: &str, text: String) -> Command {
    let mut r = Command::response(spec.name, sid, Status::Completed);
    r.notes.push(Note {
        type_: NoteType::Error,
        text,
    });
    r
}

fn reply(ctx: &Ctx, to: &Jid, id: &str, answer: Result<Command, Refusal>) -> Iq {
    match answer {
        Ok(cmd) => stanzas::iq_result(&ctx.me, to, id, Some(cmd.into())),
        Err((condition, detail, text)) => {
            let mut iq = stanzas::iq_error(&ctx.me, to, id, condition, &text);
            if let Iq::Error { error, .. } = &mut iq {
                error.other = detail.map(Condition::element);
            }
            iq
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_per_full_jid_and_node_expire_and_are_bounded() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let id = s.open("a@x/phone", "check", None, t0).unwrap();
        // Another resource, or another node, cannot use it.
        assert_eq!(s.close(&id, "a@x/laptop", "check", t0), Err(bad_session()));
        assert_eq!(s.close(&id, "a@x/phone", "status", t0), Err(bad_session()));
        assert_eq!(s.close(&id, "a@x/phone", "check", t0), Ok(()));
        // Once only.
        assert_eq!(s.close(&id, "a@x/phone", "check", t0), Err(bad_session()));
        // Expired.
        let id = s.open("a@x/phone", "check", None, t0).unwrap();
        let late = t0 + SESSION_TTL;
        let e = s.close(&id, "a@x/phone", "check", late).unwrap_err();
        assert_eq!(e.1, Some(Condition::SessionExpired));
        // Bounded per JID; expired ones make room.
        for _ in 0..SESSIONS_PER_JID {
            s.open("b@x/r", "list", None, t0).unwrap();
        }
        let full = s.open("b@x/r", "list", None, t0).unwrap_err();
        assert_eq!(full.0, DefinedCondition::ResourceConstraint);
        // Another resource of the same account gets no more.
        assert!(s.open("b@x/other", "list", None, t0).is_err());
        assert!(s.open("c@x/r", "list", None, t0).is_ok());
        assert!(s.open("b@x/r", "list", None, late).is_ok());
        assert_eq!(s.len(), 1, "the expired ones were dropped");
    }

    #[test]
    fn sessions_are_bounded_over_all_jids() {
        let s = Sessions::default();
        let t0 = Instant::now();
        for i in 0..MAX_SESSIONS {
            s.open(&format!("u{i}@x/r"), "list", None, t0).unwrap();
        }
        assert!(s.open("late@x/r", "list", None, t0).is_err());
    }

    #[test]
    fn the_command_list_is_the_contract_and_help_is_not_a_node() {
        let public: Vec<&str> = commands::SPECS
            .iter()
            .filter(|s| s.kind != Kind::Help && s.access == commands::Access::Anyone)
            .map(|s| s.name)
            .collect();
        assert_eq!(
            public,
            [
                "check",
                "subscribe",
                "unsubscribe",
                "list",
                "status",
                "evidence"
            ]
        );
        assert!(command("help").is_none());
        let anyone = Caller {
            jid: "a@x".into(),
            operator: false,
        };
        assert_eq!(
            visible("health", &anyone).unwrap_err().0,
            DefinedCondition::Forbidden
        );
        assert_eq!(
            visible("nope", &anyone).unwrap_err().0,
            DefinedCondition::ItemNotFound
        );
    }
}
