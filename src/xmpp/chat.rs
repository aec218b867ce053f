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
        send_reply(&ctx, &from, &reply);
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
        send_reply(&ctx, &from, &reply);
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
