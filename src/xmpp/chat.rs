//! Chat messages to the component: each one counted against its sender's
//! limits before anything else, every reply counted too, and `check`s queued
//! apart from the other commands so that slow checks never hold a place
//! that `help`, `status` or another user's command needs.

use std::sync::Arc;

use tokio_xmpp::parsers::jid::Jid;
use tokio_xmpp::parsers::message::{Message, MessageType};

use super::{stanzas, Ctx};
use crate::commands::Command;

/// What a sender reads when every command slot is taken (other than checks).
pub const BUSY: &str =
    "CertWatch is answering many commands at once; this one was not run. Send it again in a moment.";

/// Answers a chat message; never waits (it runs on the stanza reader).
pub fn on_message(ctx: &Arc<Ctx>, m: Message) {
    if !matches!(m.type_, MessageType::Chat | MessageType::Normal) {
        return;
    }
    let (Some(from), Some(body)) = (
        m.from.clone(),
        m.get_best_body(vec![]).map(|(_, b)| b.clone()),
    ) else {
        return;
    };
    let bare = from.to_bare().to_string();
    // Every message counts against its sender's command rate, malformed or
    // not: past it, what one JID sends costs at most a few refusals.
    if let Some(refusal) = ctx.engine.allow_command(&bare, false) {
        return limited_reply(ctx, &from, &bare, &refusal);
    }
    let cmd = match Command::parse(&body) {
        Ok(cmd) => cmd,
        // Parse errors and "unknown command" are limited like every
        // refusal: another bot answering each reply cannot start a storm.
        Err(e) => return limited_reply(ctx, &from, &bare, &e.to_string()),
    };
    if matches!(cmd, Command::Check(_)) {
        return queue_check(ctx, from, bare, cmd);
    }
    // A bound on the other commands being answered at once, over all JIDs;
    // they are quick (store reads and writes), so it is rarely reached.
    let Ok(permit) = ctx.in_flight.clone().try_acquire_owned() else {
        tracing::warn!(from = %from, "too many commands in flight; one refused");
        return limited_reply(ctx, &from, &bare, BUSY);
    };
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let _permit = permit;
        tracing::debug!(?cmd, "command");
        let reply = cmd.run(&ctx.engine, &bare).await;
        ctx.link
            .send_waiting(stanzas::chat(&ctx.me, &from, &reply, MessageType::Chat))
            .await;
    });
}

/// A `check` takes a place in the bounded queue (per JID and in all) and
/// waits there for a check slot, holding no command permit.
fn queue_check(ctx: &Arc<Ctx>, from: Jid, bare: String, cmd: Command) {
    let ticket = match ctx.engine.queue_check(&bare) {
        Ok(ticket) => ticket,
        Err(full) => {
            tracing::info!(from = %from, bound = ?full, "check not queued");
            return limited_reply(ctx, &from, &bare, &full.user_text());
        }
    };
    // Counted only once queued: a check refused for the queue costs none
    // of the sender's checks of the hour.
    if let Some(refusal) = ctx.engine.allow_check(&bare) {
        return limited_reply(ctx, &from, &bare, &refusal);
    }
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let _ticket = ticket;
        tracing::debug!(?cmd, "check");
        let reply = cmd.run(&ctx.engine, &bare).await;
        ctx.link
            .send_waiting(stanzas::chat(&ctx.me, &from, &reply, MessageType::Chat))
            .await;
    });
}

/// A refusal or error reply: at most [`crate::engine::HINTS_PER_MINUTE`]
/// a minute to one JID, then silence.
fn limited_reply(ctx: &Ctx, to: &Jid, bare: &str, text: &str) {
    if ctx.engine.allow_hint(bare) {
        send_reply(ctx, to, text);
    } else {
        tracing::debug!(to = %to, "reply withheld: the sender's hint limit is reached");
    }
}

fn send_reply(ctx: &Ctx, to: &Jid, text: &str) {
    ctx.link
        .send(stanzas::chat(&ctx.me, to, text, MessageType::Chat));
}

#[cfg(test)]
pub(in crate::xmpp) mod tests {
    use super::*;
    use crate::engine::{Engine, COMMANDS_IN_FLIGHT, HINTS_PER_MINUTE, IQS_IN_FLIGHT};
    use crate::xmpp::{Link, Outgoing, PresenceBook};
    use std::sync::Mutex;
    use tokio::sync::{mpsc, Semaphore};

    /// A front whose link is a channel the test reads.
    pub(in crate::xmpp) fn front() -> (Arc<Ctx>, mpsc::Receiver<Outgoing>) {
        let mut config = crate::config::Config::default();
        config.dns.nameservers = vec!["127.0.0.1:9".into()];
        // Nothing leaves the machine: no Tor, and a resolver that is not there.
        config.probe.transport = crate::config::Transport::Direct;
        let store = crate::store::Store::temporary().unwrap();
        let engine = Engine::new(config, store, crate::clock::system()).unwrap();
        let link = Arc::new(Link::default());
        let (tx, rx) = mpsc::channel(4096);
        link.set(Some(tx));
        let me = Jid::new("certwatch.localhost").unwrap();
        let agents = Arc::new(crate::xmpp::agents::Agents::new(
            me,
            link.clone(),
            vec![],
            std::time::Duration::from_secs(300),
        ));
        let ctx = Arc::new(Ctx {
            agents,
            engine: Arc::new(engine),
            link,
            me: Jid::new("certwatch.localhost").unwrap(),
            recent: Mutex::new(Default::default()),
            in_flight: Arc::new(Semaphore::new(COMMANDS_IN_FLIGHT)),
            iq_in_flight: Arc::new(Semaphore::new(IQS_IN_FLIGHT)),
            presence: Mutex::new(PresenceBook::default()),
            presence_dirty: Default::default(),
            adhoc: crate::xmpp::adhoc_front::Sessions::default(),
        });
        (ctx, rx)
    }

    fn message(from: &str, body: &str) -> Message {
        let me = Jid::new("certwatch.localhost").unwrap();
        stanzas::chat(&Jid::new(from).unwrap(), &me, body, MessageType::Chat)
    }

    /// The chat replies written so far, as (to, body), waiting `settle` for
    /// spawned commands to answer.
    async fn replies(
        rx: &mut mpsc::Receiver<Outgoing>,
        settle: std::time::Duration,
    ) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while let Ok(Some(o)) = tokio::time::timeout(settle, rx.recv()).await {
            if let Outgoing::Stanza { stanza, .. } = o {
                if let tokio_xmpp::Stanza::Message(m) = *stanza {
                    let body = m
                        .get_best_body(vec![])
                        .map(|(_, b)| b.clone())
                        .unwrap_or_default();
                    out.push((m.to.unwrap().to_string(), body));
                }
            }
        }
        out
    }

    #[tokio::test]
    async fn five_hundred_malformed_commands_get_a_handful_of_replies() {
        let (ctx, mut rx) = front();
        let bodies = [
            "hello",
            "check",
            "check not_a_domain",
            "status a..b",
            "list everything",
        ];
        for i in 0..500 {
            on_message(&ctx, message("mallory@x/bot", bodies[i % bodies.len()]));
        }
        let got = replies(&mut rx, std::time::Duration::from_millis(300)).await;
        // Replies do arrive: the first errors, as a user would read them.
        assert!(got[0].1.starts_with("Unknown command"), "{got:?}");
        assert!(got[1].1.starts_with("Usage: check DOMAIN"), "{got:?}");
        assert_eq!(got.len(), HINTS_PER_MINUTE, "{got:?}");
        // Another user is answered as usual.
        on_message(&ctx, message("alice@x/phone", "help"));
        let got = replies(&mut rx, std::time::Duration::from_millis(300)).await;
        assert_eq!(got.len(), 1);
        assert!(got[0].1.contains("check DOMAIN"), "{got:?}");
    }

    #[tokio::test]
    async fn a_queued_check_holds_a_queue_place_and_no_command_permit() {
        let (ctx, mut rx) = front();
        // On this single-threaded runtime the spawned checks have not run
        // yet: what they hold while they wait is what is held now.
        for _ in 0..3 {
            on_message(&ctx, message("alice@x/phone", "check example.org"));
        }
        assert_eq!(ctx.engine.checks_queued(), 3);
        assert_eq!(ctx.in_flight.available_permits(), COMMANDS_IN_FLIGHT);
        // Once running (asking a resolver that is not there), still none.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(ctx.engine.checks_queued(), 3);
        assert_eq!(ctx.in_flight.available_permits(), COMMANDS_IN_FLIGHT);
        // Meanwhile another command is answered.
        on_message(&ctx, message("bob@x/desk", "help"));
        let got = replies(&mut rx, std::time::Duration::from_millis(300)).await;
        let bob: Vec<_> = got
            .iter()
            .filter(|(to, _)| to.starts_with("bob@"))
            .collect();
        assert_eq!(bob.len(), 1, "{got:?}");
        assert!(bob[0].1.contains("check DOMAIN"), "{got:?}");
        // A fourth check of alice's is refused with the bound.
        on_message(&ctx, message("alice@x/phone", "check example.org"));
        let got = replies(&mut rx, std::time::Duration::from_millis(300)).await;
        let mine = crate::admission::QueueFull::Mine.user_text();
        assert_eq!(got, vec![("alice@x/phone".to_string(), mine)]);
    }

    #[tokio::test]
    async fn checks_over_the_queue_bound_are_refused_and_others_answered() {
        let (ctx, mut rx) = front();
        // alice's checks fill her places (as slow checks waiting would).
        let held: Vec<_> = (0..crate::admission::CHECKS_QUEUED_PER_JID)
            .map(|_| ctx.engine.queue_check("alice@x").unwrap())
            .collect();
        on_message(&ctx, message("alice@x/phone", "check example.org"));
        on_message(&ctx, message("alice@x/phone", "status example.org"));
        on_message(&ctx, message("bob@x/desk", "help"));
        on_message(&ctx, message("bob@x/desk", "list"));
        let got = replies(&mut rx, std::time::Duration::from_millis(300)).await;
        let to = |who: &str| -> Vec<&String> {
            got.iter()
                .filter(|(t, _)| t.starts_with(who))
                .map(|(_, b)| b)
                .collect()
        };
        let alice = to("alice@x");
        assert_eq!(alice.len(), 2, "{got:?}");
        assert!(
            alice
                .iter()
                .any(|b| *b == &crate::admission::QueueFull::Mine.user_text()),
            "{got:?}"
        );
        assert!(
            alice.iter().any(|b| b.contains("No stored result")),
            "{got:?}"
        );
        let bob = to("bob@x");
        assert_eq!(bob.len(), 2, "{got:?}");
        // The queue is bounded in all as well: bob is told so.
        let others: Vec<_> = (0..crate::admission::CHECKS_QUEUED - held.len())
            .map(|i| ctx.engine.queue_check(&format!("u{i}@x")).unwrap())
            .collect();
        on_message(&ctx, message("bob@x/desk", "check example.org"));
        let got = replies(&mut rx, std::time::Duration::from_millis(300)).await;
        assert_eq!(
            got,
            vec![(
                "bob@x/desk".to_string(),
                crate::admission::QueueFull::Everyone.user_text()
            )]
        );
        drop((held, others));
    }
}
