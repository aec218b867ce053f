//! The chat front of the commands: a message body parsed into a
//! [`Command`], run through [`super::execute`], answered with the text.

use super::given::{did_you_mean, target, Target};
use super::{execute, spec, Caller, Input, Kind};
use crate::engine::Engine;

/// The longest message body we read as a command.
pub const MAX_BODY: usize = 1024;

/// The command lines `help` prints and disco advertises (the usages of the
/// commands anyone may run; a unit test holds them to the specs).
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
    Check(Target),
    /// `subscribe DOMAIN`
    Subscribe(Target),
    /// `unsubscribe DOMAIN`
    Unsubscribe(Target),
    /// `list`
    List,
    /// `status DOMAIN`
    Status(Target),
    /// `evidence DOMAIN`
    Evidence(Target),
    /// `health` (operators)
    Health,
    /// `outbox` (operators)
    Outbox,
    /// `test-alert` (operators)
    TestAlert,
}

/// A message that is not a valid command; the reply is one line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Not a command we know; perhaps a typo of one.
    #[error("Unknown command.{}", did_you_mean_text(.0))]
    Unknown(Option<&'static str>),
    /// A command without its domain.
    #[error("Usage: {0} DOMAIN")]
    MissingDomain(&'static str),
    /// A command with an extra argument.
    #[error("Usage: {0}")]
    Extra(String),
    /// The domain is not valid.
    #[error("Not a valid domain: {0}")]
    BadDomain(String),
    /// The body is too long to be a command.
    #[error("Message too long ({0} bytes); send \"help\" for the commands.")]
    TooLong(usize),
}

/// The hint after "Unknown command.".
fn did_you_mean_text(usage: &Option<&'static str>) -> String {
    match usage.and_then(spec) {
        Some(s) => format!(
            " Did you mean \"{}\"? Send \"help\" for the list of commands.",
            s.usage()
        ),
        None => " Send \"help\" for the list of commands.".into(),
    }
}

impl Command {
    /// Parses a message body: a command's name, then its required fields
    /// as words (chat takes no optional ones).
    pub fn parse(body: &str) -> Result<Command, CommandError> {
        if body.len() > MAX_BODY {
            return Err(CommandError::TooLong(body.len()));
        }
        let mut words = body.split_whitespace();
        let verb = words.next().unwrap_or("").to_ascii_lowercase();
        let arg = words.next();
        let extra = words.next().is_some();
        // `help check` and the like: the full list, which covers every command.
        let verb = if verb == "?" { "help" } else { verb.as_str() };
        let spec = spec(verb).ok_or(CommandError::Unknown(did_you_mean(verb)))?;
        if spec.kind == Kind::Help {
            return Ok(Command::Help);
        }
        let domain = if spec.fields.iter().any(|f| f.required) {
            let arg = arg.ok_or(CommandError::MissingDomain(spec.name))?;
            if extra {
                return Err(CommandError::Extra(spec.usage()));
            }
            Some(target(arg).map_err(|e| CommandError::BadDomain(e.to_string()))?)
        } else if arg.is_some() {
            return Err(CommandError::Extra(spec.usage()));
        } else {
            None
        };
        Ok(match (spec.kind, domain) {
            (Kind::Check, Some(d)) => Command::Check(d),
            (Kind::Subscribe, Some(d)) => Command::Subscribe(d),
            (Kind::Unsubscribe, Some(d)) => Command::Unsubscribe(d),
            (Kind::Status, Some(d)) => Command::Status(d),
            (Kind::Evidence, Some(d)) => Command::Evidence(d),
            (Kind::List, _) => Command::List,
            (Kind::Health, _) => Command::Health,
            (Kind::Outbox, _) => Command::Outbox,
            (Kind::TestAlert, _) => Command::TestAlert,
            _ => Command::Help,
        })
    }

    /// Which command, with its input.
    pub fn kind_and_input(self) -> (Kind, Input) {
        let with = |t: Target| Input {
            domain: Some(t.domain),
            given: t.given,
            ..Input::default()
        };
        match self {
            Command::Help => (Kind::Help, Input::default()),
            Command::Check(d) => (Kind::Check, with(d)),
            Command::Subscribe(d) => (Kind::Subscribe, with(d)),
            Command::Unsubscribe(d) => (Kind::Unsubscribe, with(d)),
            Command::List => (Kind::List, Input::default()),
            Command::Status(d) => (Kind::Status, with(d)),
            Command::Evidence(d) => (Kind::Evidence, with(d)),
            Command::Health => (Kind::Health, Input::default()),
            Command::Outbox => (Kind::Outbox, Input::default()),
            Command::TestAlert => (Kind::TestAlert, Input::default()),
        }
    }

    /// Runs the command for `jid` (a bare JID) and returns the reply text.
    pub async fn run(self, engine: &Engine, jid: &str) -> String {
        let caller = Caller::new(engine, jid);
        let (kind, input) = self.kind_and_input();
        execute(engine, &caller, kind, input).await.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let d = |s: &str| Target::from(crate::domain::Domain::parse(s).unwrap());
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
            ("health", Command::Health),
            ("TEST-ALERT", Command::TestAlert),
            ("outbox", Command::Outbox),
        ];
        for (body, want) in ok {
            assert_eq!(Command::parse(body).unwrap(), want, "{body}");
        }
        let long = "x".repeat(MAX_BODY + 1);
        let err = [
            ("", CommandError::Unknown(None)),
            ("hello", CommandError::Unknown(None)),
            ("chek example.org", CommandError::Unknown(Some("check"))),
            ("check", CommandError::MissingDomain("check")),
            (
                "subscribe a.org b.org",
                CommandError::Extra("subscribe DOMAIN".into()),
            ),
            ("list everything", CommandError::Extra("list".into())),
            (long.as_str(), CommandError::TooLong(MAX_BODY + 1)),
        ];
        for (body, want) in err {
            assert_eq!(Command::parse(body).unwrap_err(), want);
        }
        assert_eq!(
            CommandError::Unknown(Some("subscribe")).to_string(),
            "Unknown command. Did you mean \"subscribe DOMAIN\"? Send \"help\" for the list of commands."
        );
        assert_eq!(
            CommandError::Unknown(None).to_string(),
            "Unknown command. Send \"help\" for the list of commands."
        );
        let Command::Check(t) = Command::parse("check https://example.org/").unwrap() else {
            panic!("a check")
        };
        assert_eq!(
            (t.domain.as_str(), t.given.as_deref()),
            ("example.org", Some("https://example.org/"))
        );
        for bad in ["check not_a_domain", "check 192.0.2.1", "status a..b"] {
            let e = Command::parse(bad).unwrap_err();
            assert!(matches!(e, CommandError::BadDomain(_)), "{bad}: {e:?}");
            assert!(!e.to_string().contains('\n'));
        }
    }
}
