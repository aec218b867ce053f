//! Chat commands (docs/chat.md): one type per command, each parsed, run, replied.

use crate::domain::Domain;
use crate::engine::{Engine, Error};
use crate::error::{ErrorKind, HasKind};
use crate::render;
use crate::report::Report;
use crate::store::{StateStore as _, StoreError};

/// The longest message body we read as a command.
pub const MAX_BODY: usize = 1024;

/// The command lines `help` prints and disco advertises.
pub const HELP_LINES: &[&str] = &[
    "help",
    "check DOMAIN",
    "subscribe DOMAIN",
    "unsubscribe DOMAIN",
    "list",
    "status DOMAIN",
    "evidence DOMAIN",
];

/// A parsed chat command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `help`
    Help,
    /// `check DOMAIN`
    Check(Domain),
    /// `subscribe DOMAIN`
    Subscribe(Domain),
    /// `unsubscribe DOMAIN`
    Unsubscribe(Domain),
    /// `list`
    List,
    /// `status DOMAIN`
    Status(Domain),
    /// `evidence DOMAIN`
    Evidence(Domain),
}

/// A message that is not a valid command; the reply is one line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Not a command we know.
    #[error("Unknown command. Send \"help\" for the list of commands.")]
    Unknown,
    /// A command without its domain.
    #[error("Usage: {0} DOMAIN")]
    MissingDomain(&'static str),
    /// A command with an extra argument.
    #[error("Usage: {0}")]
    Extra(&'static str),
    /// The domain is not valid.
    #[error("Not a valid domain: {0}")]
    BadDomain(String),
    /// The body is too long to be a command.
    #[error("Message too long ({0} bytes); send \"help\" for the commands.")]
    TooLong(usize),
}

impl Command {
    /// Parses a message body.
    pub fn parse(body: &str) -> Result<Command, CommandError> {
        if body.len() > MAX_BODY {
            return Err(CommandError::TooLong(body.len()));
        }
        let mut words = body.split_whitespace();
        let verb = words.next().unwrap_or("").to_ascii_lowercase();
        let arg = words.next();
        let extra = words.next().is_some();
        let domain = |name: &'static str| -> Result<Domain, CommandError> {
            let arg = arg.ok_or(CommandError::MissingDomain(name))?;
            if extra {
                return Err(CommandError::Extra(match name {
                    "check" => "check DOMAIN",
                    "subscribe" => "subscribe DOMAIN",
                    "unsubscribe" => "unsubscribe DOMAIN",
                    "evidence" => "evidence DOMAIN",
                    _ => "status DOMAIN",
                }));
            }
            Domain::parse(arg).map_err(|e| CommandError::BadDomain(e.to_string()))
        };
        let bare = |name: &'static str, cmd: Command| {
            if arg.is_some() {
                Err(CommandError::Extra(name))
            } else {
                Ok(cmd)
            }
        };
        match verb.as_str() {
            // `help check` and the like: the full list, which covers every command.
            "help" | "?" => Ok(Command::Help),
            "list" => bare("list", Command::List),
            "check" => Ok(Command::Check(domain("check")?)),
            "subscribe" => Ok(Command::Subscribe(domain("subscribe")?)),
            "unsubscribe" => Ok(Command::Unsubscribe(domain("unsubscribe")?)),
            "status" => Ok(Command::Status(domain("status")?)),
            "evidence" => Ok(Command::Evidence(domain("evidence")?)),
            _ => Err(CommandError::Unknown),
        }
    }

    /// Runs the command for `jid` (a bare JID) and returns the reply text.
    pub async fn run(self, engine: &Engine, jid: &str) -> String {
        let result = match self {
            Command::Help => Ok(help(&engine.config().probe.transport.to_string())),
            Command::Check(d) => check(engine, &d).await,
            Command::Subscribe(d) => subscribe(engine, &d, jid).await,
            Command::Unsubscribe(d) => unsubscribe(engine, &d, jid).await,
            Command::List => list(engine, jid).map_err(Error::from),
            Command::Status(d) => status(engine, &d).map_err(Error::from),
            Command::Evidence(d) => evidence(engine, &d).map_err(Error::from),
        };
        result.unwrap_or_else(|e| {
            tracing::warn!(error = %e, kind = ?e.kind(), "command failed");
            match e.kind() {
                ErrorKind::Shutdown => "CertWatch is shutting down; try again in a minute.".into(),
                ErrorKind::Tor => format!(
                    "Sorry, that failed on our side: our Tor connection is not working ({e}). Try again later; the operators are told when this persists."
                ),
                _ => format!("Sorry, that failed on our side: {e}"),
            }
        })
    }
}

fn help(transport: &str) -> String {
    let how = match transport {
        "tor" => "probing over Tor",
        "socks5" => "probing through a SOCKS5 proxy",
        _ => "probing directly, without Tor",
    };
    [
        format!("CertWatch checks that XMPP servers present the keys their DNSSEC-signed TLSA records announce, {how}."),
        "help: this list".into(),
        "check DOMAIN: check a domain now and tell what to fix".into(),
        "subscribe DOMAIN: monitor a domain and get an alert when its state changes".into(),
        "unsubscribe DOMAIN: stop your alerts for a domain".into(),
        "list: your subscriptions with each domain's last state".into(),
        "status DOMAIN: the last result (whoever asked for it) in full, without probing".into(),
        "evidence DOMAIN: what the endpoints presented at the last mismatch alert (certificate chains, PEM)".into(),
    ]
    .join("\n")
}

async fn check(engine: &Engine, domain: &Domain) -> Result<String, Error> {
    let report = engine.check_now(domain).await?;
    // Someone typed a server's host name: a monitored domain whose SRV
    // records point there is the likelier meaning than the parent.
    let likely = if report.host_unknown().is_some() {
        engine.domain_served_by(domain.as_str()).await?
    } else {
        None
    };
    Ok(render::check_reply(
        &report,
        &render::Context {
            component: engine.component(),
            likely_domain: likely.as_deref(),
        },
    ))
}

async fn subscribe(engine: &Engine, domain: &Domain, jid: &str) -> Result<String, Error> {
    // Not monitored until now (perhaps never, perhaps since everyone left
    // it): checked at once, whatever turn an old schedule gave it.
    let new_domain = engine.store().domain_state(domain.as_str())?.is_none();
    // Answered once it is on disk.
    let fresh = match engine.subscribe_chat(jid, domain.as_str()).await? {
        Ok(fresh) => fresh,
        Err(refusal) => return Ok(refusal),
    };
    if new_domain {
        engine.check_soon(domain.as_str());
    } else {
        engine.wake_monitor();
    }
    let (subscribe_uri, node_uri) = render::pubsub_uris(engine.component(), domain.as_str());
    if !fresh {
        return Ok(format!("You are already subscribed to {domain}."));
    }
    let state = match engine.last_report(domain.as_str())? {
        Some(r) if !new_domain => format!("Its last check ({}): {}", r.checked_at, r.summary()),
        _ => {
            format!("It is being checked now; send \"status {domain}\" in a minute for the result.")
        }
    };
    Ok(format!(
        "Subscribed to {domain}. You will get a message whenever its state changes.\n{state}\nPubSub: {subscribe_uri} (node {node_uri})"
    ))
}

async fn unsubscribe(engine: &Engine, domain: &Domain, jid: &str) -> Result<String, Error> {
    let store = engine.store();
    // Answered once it is on disk.
    let existed = store.unsubscribe(domain.as_str(), jid).await?;
    Ok(if existed {
        format!("Unsubscribed from {domain}.")
    } else {
        format!("You were not subscribed to {domain}.")
    })
}

fn list(engine: &Engine, jid: &str) -> Result<String, StoreError> {
    let store = engine.store();
    let domains = store.subscriptions_of(jid)?;
    if domains.is_empty() {
        return Ok("You have no subscriptions. Send \"subscribe DOMAIN\" to add one.".into());
    }
    let mut lines = vec![format!("Your subscriptions ({}):", domains.len())];
    for d in &domains {
        lines.push(last_state_line(d, engine.last_report(d)?.as_ref()));
    }
    lines.push("Send \"status DOMAIN\" for one domain's details.".into());
    Ok(lines.join("\n"))
}

/// One domain's last state as `list` shows it, from the same report `status` shows.
pub fn last_state_line(domain: &str, report: Option<&Report>) -> String {
    match report {
        Some(r) => format!("{domain}: {} (checked at {})", r.verdict, r.checked_at),
        None => format!("{domain}: not checked yet"),
    }
}

fn status(engine: &Engine, domain: &Domain) -> Result<String, StoreError> {
    let Some(report) = engine.last_report(domain.as_str())? else {
        return Ok(format!(
            "No stored result for {domain}. Send \"check {domain}\" to check it now."
        ));
    };
    let mut reply = render::status_reply(&report, engine.component());
    if let Some(last) = engine.store().evidence(domain.as_str())?.first() {
        let when = last
            .items
            .first()
            .map(|e| e.seen_at.as_str())
            .unwrap_or("?");
        reply.push_str(&format!(
            "\nEvidence of the last mismatch ({when}): send \"evidence {domain}\" for the certificate chains presented."
        ));
    }
    Ok(reply)
}

/// The evidence kept with the newest mismatch alert: per endpoint, when and
/// from where it was seen, the key, and the chain as presented (PEM).
fn evidence(engine: &Engine, domain: &Domain) -> Result<String, StoreError> {
    let kept = engine.store().evidence(domain.as_str())?;
    let Some(last) = kept.first() else {
        return Ok(format!(
            "No evidence kept for {domain}: it is kept when a mismatch is alerted."
        ));
    };
    let mut out = vec![format!(
        "Evidence for alert {} ({} kept in all): {}",
        last.alert_id,
        kept.len(),
        last.title
    )];
    for e in &last.items {
        let exit = e
            .exit
            .as_deref()
            .map(|x| format!(", exit relay {x}"))
            .unwrap_or_default();
        out.push(format!(
            "{} seen at {} over {}{exit}; key (SPKI sha256) {}\n{}",
            e.endpoint, e.seen_at, e.transport, e.spki_sha256, e.chain_pem
        ));
    }
    Ok(out.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let d = |s: &str| Domain::parse(s).unwrap();
        let ok = [
            ("help", Command::Help),
            ("  HELP ", Command::Help),
            ("help check", Command::Help),
            ("list", Command::List),
            ("check example.org", Command::Check(d("example.org"))),
            ("evidence example.org", Command::Evidence(d("example.org"))),
            ("Check Example.ORG.", Command::Check(d("example.org"))),
            (
                "subscribe bücher.example",
                Command::Subscribe(d("xn--bcher-kva.example")),
            ),
            (
                "unsubscribe example.org",
                Command::Unsubscribe(d("example.org")),
            ),
            ("status example.org", Command::Status(d("example.org"))),
        ];
        for (body, want) in ok {
            assert_eq!(Command::parse(body).unwrap(), want, "{body}");
        }
        let long = "x".repeat(MAX_BODY + 1);
        let err = [
            ("", CommandError::Unknown),
            ("hello", CommandError::Unknown),
            ("check", CommandError::MissingDomain("check")),
            (
                "subscribe a.org b.org",
                CommandError::Extra("subscribe DOMAIN"),
            ),
            ("list everything", CommandError::Extra("list")),
            (long.as_str(), CommandError::TooLong(MAX_BODY + 1)),
        ];
        for (body, want) in err {
            assert_eq!(Command::parse(body).unwrap_err(), want);
        }
        for bad in ["check not_a_domain", "check 192.0.2.1", "status a..b"] {
            let e = Command::parse(bad).unwrap_err();
            assert!(matches!(e, CommandError::BadDomain(_)), "{bad}: {e:?}");
            assert!(!e.to_string().contains('\n'));
        }
    }

    #[test]
    fn help_has_one_line_per_command_and_names_tor_only_over_tor() {
        assert!(help("tor").contains("over Tor"));
        assert!(!help("direct").contains("over Tor"));
        assert!(help("direct").contains("without Tor"));
        let h = help("tor");
        for cmd in [
            "check DOMAIN",
            "subscribe DOMAIN",
            "unsubscribe DOMAIN",
            "list",
            "status DOMAIN",
        ] {
            assert!(h.lines().any(|l| l.starts_with(cmd)), "{cmd}");
        }
    }
}
