//! The commands, each defined once (docs/chat.md, docs/adhoc.md): its
//! name, its fields with their types, who may run it, its handler, and a
//! structured [`Answer`]. Every front renders the same definition: chat
//! text ([`chat`]), an XEP-0004 form for XEP-0050 ad-hoc commands (the
//! xmpp front), a page (the web front). No front decides anything a
//! command decides.
//!
//! One file per command, each with its [`Spec`] and its `run`.

pub mod chat;
mod check;
mod evidence;
pub mod given;
mod health;
mod help;
mod list;
mod outbox;
mod status;
mod subscribe;
mod test_alert;
mod unsubscribe;

pub use chat::{Command, CommandError, HELP_LINES, MAX_BODY};
pub use given::Target;
pub use list::last_state_line;

use crate::domain::Domain;
use crate::engine::{Engine, Error};
use crate::error::{ErrorKind, HasKind};
use crate::report::Report;
use crate::vocab::ServiceSet;

/// Which command (one per [`Spec`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `help`
    Help,
    /// `check DOMAIN`
    Check,
    /// `subscribe DOMAIN`
    Subscribe,
    /// `unsubscribe DOMAIN`
    Unsubscribe,
    /// `list`
    List,
    /// `status DOMAIN`
    Status,
    /// `evidence DOMAIN`
    Evidence,
    /// `health` (operators)
    Health,
    /// `outbox` (operators)
    Outbox,
    /// `test-alert` (operators)
    TestAlert,
}

/// Who may run a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone who can reach the component.
    Anyone,
    /// Only the JIDs of `xmpp.admins`; others neither see nor run it.
    Operator,
}

/// The type of one input field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// A domain (an XEP-0004 text-single); checked with [`Domain::parse`].
    Domain,
    /// Which services a check covers (an XEP-0004 list-single of [`SERVICES`]).
    Service,
}

/// One input field of a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// Its name (`var` of the form field).
    pub var: &'static str,
    /// What a person reads beside it.
    pub label: &'static str,
    /// Its type.
    pub kind: FieldKind,
    /// Whether it must be given.
    pub required: bool,
}

/// The `domain` field.
pub const DOMAIN: Field = Field {
    var: "domain",
    label: "Domain (the part after the @ of your XMPP addresses)",
    kind: FieldKind::Domain,
    required: true,
};

/// The `service` field: its values and what they read as.
pub const SERVICES: &[(&str, &str)] = &[
    ("all", "Clients and servers (c2s and s2s)"),
    ("client", "Clients only (c2s)"),
    ("server", "Servers only (s2s)"),
];

/// One command's definition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    /// Which command.
    pub kind: Kind,
    /// Its name: the chat verb and the XEP-0050 node.
    pub name: &'static str,
    /// A short title (the ad-hoc command's name in a client's menu).
    pub title: &'static str,
    /// What it does, as the chat `help` says it.
    pub help: &'static str,
    /// Its inputs, in order (chat takes them as words).
    pub fields: &'static [Field],
    /// Who may run it.
    pub access: Access,
}

impl Spec {
    /// How chat writes it: `check DOMAIN`, `list`.
    pub fn usage(&self) -> String {
        let mut u = self.name.to_owned();
        for f in self.fields.iter().filter(|f| f.required) {
            u.push(' ');
            u.push_str(&f.var.to_ascii_uppercase());
        }
        u
    }
}

/// Every command, in the order `help` and the command list show them.
pub const SPECS: &[&Spec] = &[
    &help::SPEC,
    &check::SPEC,
    &subscribe::SPEC,
    &unsubscribe::SPEC,
    &list::SPEC,
    &status::SPEC,
    &evidence::SPEC,
    &health::SPEC,
    &outbox::SPEC,
    &test_alert::SPEC,
];

/// The command named `name`, if any.
pub fn spec(name: &str) -> Option<&'static Spec> {
    SPECS.iter().copied().find(|s| s.name == name)
}

/// The definition of `kind`.
pub fn spec_of(kind: Kind) -> &'static Spec {
    SPECS
        .iter()
        .copied()
        .find(|s| s.kind == kind)
        .expect("every kind has a spec")
}

/// Who runs a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The bare JID.
    pub jid: String,
    /// Whether it is one of `xmpp.admins`.
    pub operator: bool,
}

impl Caller {
    /// The caller `jid` (bare), an operator when `xmpp.admins` names it.
    pub fn new(engine: &Engine, jid: &str) -> Caller {
        Caller {
            jid: jid.to_owned(),
            operator: engine.config().xmpp.admins.iter().any(|a| a == jid),
        }
    }

    /// Whether this caller may run (and see) `spec`.
    pub fn may_run(&self, spec: &Spec) -> bool {
        spec.access == Access::Anyone || self.operator
    }
}

/// The values of a command's fields, checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Input {
    /// The `domain` field.
    pub domain: Option<Domain>,
    /// What the `domain` field held when the domain was taken out of it
    /// (a URL, an XMPP address); the answer says so.
    pub given: Option<String>,
    /// The `service` field (all when not given).
    pub service: ServiceSet,
}

/// Why a field's value was refused; the front asks again.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// A required field is empty.
    #[error("{0} is required")]
    Missing(&'static str),
    /// The domain is not valid.
    #[error("Not a valid domain: {0}")]
    BadDomain(String),
    /// A value that is none of the field's options.
    #[error("{field} must be one of {options}, not {value:?}")]
    NotAnOption {
        /// The field.
        field: &'static str,
        /// The allowed values.
        options: String,
        /// What was given.
        value: String,
    },
}

impl Input {
    /// Checks raw field values (`var`, value) against `spec`'s fields.
    pub fn from_values<'a>(
        spec: &Spec,
        values: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<Input, InputError> {
        let mut input = Input::default();
        for f in spec.fields {
            let value = values(f.var).map(str::trim).filter(|v| !v.is_empty());
            let Some(value) = value else {
                if f.required {
                    return Err(InputError::Missing(f.var));
                }
                continue;
            };
            match f.kind {
                FieldKind::Domain => {
                    let t =
                        given::target(value).map_err(|e| InputError::BadDomain(e.to_string()))?;
                    input.domain = Some(t.domain);
                    input.given = t.given;
                }
                FieldKind::Service => {
                    input.service = match value {
                        "all" => ServiceSet::All,
                        "client" => ServiceSet::Client,
                        "server" => ServiceSet::Server,
                        _ => {
                            return Err(InputError::NotAnOption {
                                field: f.var,
                                options: SERVICES
                                    .iter()
                                    .map(|(v, _)| *v)
                                    .collect::<Vec<_>>()
                                    .join(", "),
                                value: value.chars().take(64).collect(),
                            })
                        }
                    }
                }
            }
        }
        Ok(input)
    }

    fn domain(&self) -> &Domain {
        self.domain
            .as_ref()
            .expect("the fronts check required fields before running")
    }
}

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It did what was asked (the answer may still be bad news about a domain).
    Done,
    /// It was refused: a limit, or a request it cannot honour; the text says why.
    Refused,
    /// It failed on our side (store, Tor, DNS, shutting down).
    Failed,
}

/// A table: columns and rows (`list`, `outbox`, `health`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Table {
    /// Each column's name (`var`) and label.
    pub columns: Vec<(&'static str, &'static str)>,
    /// Rows, one value per column.
    pub rows: Vec<Vec<String>>,
}

/// What a command answers, as data: every front renders this (and a web
/// front may serve it as JSON as it is).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Answer {
    /// How it ended.
    pub outcome: Outcome,
    /// The reply as chat shows it (the first line says what happened).
    pub text: String,
    /// The domain it was about.
    pub domain: Option<String>,
    /// The report behind it (`check`, `status`).
    pub report: Option<Report>,
    /// Rows, for commands that answer with a table.
    pub table: Option<Table>,
}

impl Answer {
    /// A plain answer.
    pub fn done(text: impl Into<String>) -> Answer {
        Answer {
            outcome: Outcome::Done,
            text: text.into(),
            domain: None,
            report: None,
            table: None,
        }
    }

    /// A refusal.
    pub fn refused(text: impl Into<String>) -> Answer {
        Answer {
            outcome: Outcome::Refused,
            ..Answer::done(text)
        }
    }

    /// About `domain`.
    pub fn about(mut self, domain: &Domain) -> Answer {
        self.domain = Some(domain.as_str().to_owned());
        self
    }

    /// The first line (a summary).
    pub fn summary(&self) -> &str {
        self.text.lines().next().unwrap_or_default()
    }
}

/// Runs `kind` for `caller` with checked `input`. The caller's right to run
/// it is checked here too, whatever the front did.
pub async fn execute(engine: &Engine, caller: &Caller, kind: Kind, input: Input) -> Answer {
    let spec = spec_of(kind);
    if !caller.may_run(spec) {
        return Answer::refused(format!(
            "\"{}\" is for CertWatch's operators only.",
            spec.name
        ));
    }
    let taken = input.domain.clone().and_then(|domain| {
        given::taken_note(&Target {
            domain,
            given: input.given.clone(),
        })
    });
    let result = match kind {
        Kind::Help => Ok(help::run(engine, caller)),
        Kind::Check => check::run(engine, &input).await,
        Kind::Subscribe => subscribe::run(engine, input.domain(), &caller.jid).await,
        Kind::Unsubscribe => unsubscribe::run(engine, input.domain(), &caller.jid).await,
        Kind::List => list::run(engine, &caller.jid).map_err(Error::from),
        Kind::Status => status::run(engine, input.domain(), &caller.jid).map_err(Error::from),
        Kind::Evidence => evidence::run(engine, input.domain()).map_err(Error::from),
        Kind::Health => Ok(health::run(engine).await),
        Kind::Outbox => outbox::run(engine).map_err(Error::from),
        Kind::TestAlert => test_alert::run(engine, &caller.jid)
            .await
            .map_err(Error::from),
    };
    let operators = !engine.config().xmpp.admins.is_empty();
    let mut answer = result.unwrap_or_else(|e| failed(&e, operators));
    if let Some(note) = taken {
        answer.text = format!("{note}\n{}", answer.text);
    }
    answer
}

/// The answer when a command failed on our side; it promises that the
/// operators are told only when there are operators to tell.
fn failed(e: &Error, operators: bool) -> Answer {
    tracing::warn!(error = %e, kind = ?e.kind(), "command failed");
    let told = if operators {
        "; the operators are told when this persists"
    } else {
        ""
    };
    let text = match e.kind() {
        ErrorKind::Shutdown => "CertWatch is shutting down; try again in a minute.".into(),
        ErrorKind::Tor => format!(
            "Sorry, that failed on our side: our Tor connection is not working ({e}). Try again later{told}."
        ),
        _ => format!("Sorry, that failed on our side: {e}"),
    };
    Answer {
        outcome: Outcome::Failed,
        ..Answer::done(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StateStore as _;

    #[test]
    fn every_kind_has_one_spec_and_names_are_unique() {
        for s in SPECS {
            assert_eq!(spec_of(s.kind).name, s.name);
            assert_eq!(spec(s.name), Some(*s));
            assert_eq!(SPECS.iter().filter(|t| t.name == s.name).count(), 1);
        }
    }

    #[test]
    fn help_lines_are_the_usages_of_the_public_commands() {
        let usages: Vec<String> = SPECS
            .iter()
            .filter(|s| s.access == Access::Anyone)
            .map(|s| s.usage())
            .collect();
        assert_eq!(usages, HELP_LINES);
    }

    #[test]
    fn input_is_checked_against_the_fields() {
        let values = |pairs: &'static [(&'static str, &'static str)]| {
            move |var: &str| pairs.iter().find(|(k, _)| *k == var).map(|(_, v)| *v)
        };
        let check = spec("check").unwrap();
        let ok = Input::from_values(check, values(&[("domain", " Example.ORG ")])).unwrap();
        assert_eq!(ok.domain.unwrap().as_str(), "example.org");
        assert_eq!(ok.service, ServiceSet::All);
        let client = Input::from_values(
            check,
            values(&[("domain", "example.org"), ("service", "client")]),
        )
        .unwrap();
        assert_eq!(client.service, ServiceSet::Client);
        assert_eq!(
            Input::from_values(check, values(&[])),
            Err(InputError::Missing("domain"))
        );
        assert!(matches!(
            Input::from_values(check, values(&[("domain", "not_a_domain")])),
            Err(InputError::BadDomain(_))
        ));
        assert!(matches!(
            Input::from_values(
                check,
                values(&[("domain", "example.org"), ("service", "both")])
            ),
            Err(InputError::NotAnOption { .. })
        ));
        let list = spec("list").unwrap();
        assert_eq!(
            Input::from_values(list, values(&[("domain", "x")])),
            Ok(Input::default())
        );
    }

    fn engine(admins: &[&str]) -> Engine {
        let mut config = crate::config::Config::default();
        config.xmpp.admins = admins.iter().map(|s| s.to_string()).collect();
        config.dns.nameservers = vec!["127.0.0.1:9".into()];
        Engine::new(
            config,
            crate::store::Store::temporary().unwrap(),
            crate::clock::system(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_domain_taken_out_of_an_address_is_said_and_used() {
        let engine = engine(&[]);
        let alice = Caller::new(&engine, "alice@x");
        let input = Input::from_values(spec("subscribe").unwrap(), |v| {
            (v == "domain").then_some("xmpp:alice@Example.ORG?message")
        })
        .unwrap();
        let answer = execute(&engine, &alice, Kind::Subscribe, input).await;
        let mut lines = answer.text.lines();
        assert_eq!(
            lines.next(),
            Some("Using example.org, the host in \"xmpp:alice@Example.ORG?message\".")
        );
        assert!(lines
            .next()
            .unwrap()
            .starts_with("Subscribed to example.org."));
        assert_eq!(answer.domain.as_deref(), Some("example.org"));
        // The chat front says the same, and list then has it as a row.
        let chat = Command::parse("unsubscribe https://example.org/")
            .unwrap()
            .run(&engine, "alice@x")
            .await;
        assert_eq!(
            chat,
            "Using example.org, the host in \"https://example.org/\".\nUnsubscribed from example.org."
        );
    }

    #[tokio::test]
    async fn list_and_unsubscribe_see_pubsub_subscriptions_of_the_same_account() {
        let engine = engine(&[]);
        let store = engine.store();
        store.subscribe("both.example", "alice@x").await.unwrap();
        store
            .pubsub_subscribe("both.example", "alice@x/phone")
            .await
            .unwrap();
        store
            .pubsub_subscribe("node.example", "alice@x/phone")
            .await
            .unwrap();
        store
            .pubsub_subscribe("node.example", "alice@x/laptop")
            .await
            .unwrap();
        store
            .pubsub_subscribe("node.example", "bob@x/r")
            .await
            .unwrap();
        let run = |cmd: &'static str| {
            let engine = &engine;
            async move { Command::parse(cmd).unwrap().run(engine, "alice@x").await }
        };
        assert_eq!(
            run("list").await,
            "Your subscriptions (2):\nboth.example (chat and PubSub): not checked yet\nnode.example (PubSub): not checked yet\nSend \"status DOMAIN\" for one domain's details."
        );
        assert_eq!(
            run("unsubscribe node.example").await,
            "Unsubscribed from node.example (2 PubSub subscription(s))."
        );
        assert_eq!(
            run("unsubscribe both.example").await,
            "Unsubscribed from both.example (chat alerts and 1 PubSub subscription(s))."
        );
        assert_eq!(
            run("unsubscribe node.example").await,
            "You were not subscribed to node.example."
        );
        assert!(run("list").await.starts_with("You have no subscriptions."));
        store.subscribe("example.org", "alice@x").await.unwrap();
        assert_eq!(
            run("unsubscribe exmaple.org").await,
            "You were not subscribed to exmaple.org. Did you mean example.org? Send \"unsubscribe example.org\"."
        );
        assert!(run("status exmaple.org")
            .await
            .starts_with("No stored result for exmaple.org. Did you mean example.org? Send \"status example.org\""));
        // Another account's subscription stays.
        assert_eq!(
            store.pubsub_subscribers("node.example").unwrap(),
            ["bob@x/r"]
        );
    }

    #[tokio::test]
    async fn operator_commands_run_for_operators_only_in_every_front() {
        let engine = engine(&["admin@x"]);
        let refused = Command::parse("health")
            .unwrap()
            .run(&engine, "alice@x")
            .await;
        assert_eq!(refused, "\"health\" is for CertWatch's operators only.");
        let admin = Caller::new(&engine, "admin@x");
        assert!(admin.operator);
        let health = execute(&engine, &admin, Kind::Health, Input::default()).await;
        assert_eq!(health.outcome, Outcome::Done);
        assert!(
            health.text.contains("DNS resolver (127.0.0.1:9): working"),
            "{}",
            health.text
        );
        let alert = execute(&engine, &admin, Kind::TestAlert, Input::default()).await;
        assert!(alert.text.starts_with("A test alert to admin@x is queued"));
        let queued = engine.store().pending().unwrap();
        assert_eq!(queued.len(), 1);
        assert_eq!(queued[0].1.sink, crate::model::Sink::Chat("admin@x".into()));
        let outbox = execute(&engine, &admin, Kind::Outbox, Input::default()).await;
        assert!(outbox
            .text
            .starts_with("Outbox: 1 alert(s) waiting; 0 dead letter(s)"));
    }

    #[test]
    fn a_failure_promises_the_operators_only_when_there_are_some() {
        let tor = Error::Setup(crate::setup::SetupError::Transport(
            crate::probe::transport::TransportSetupError::Bootstrap("no consensus".into()),
        ));
        let with = failed(&tor, true);
        assert_eq!(with.outcome, Outcome::Failed);
        assert!(
            with.text
                .ends_with("Try again later; the operators are told when this persists."),
            "{}",
            with.text
        );
        let without = failed(&tor, false);
        assert!(
            without.text.ends_with("Try again later."),
            "{}",
            without.text
        );
        assert!(!without.text.contains("operators"), "{}", without.text);
    }

    #[test]
    fn operator_commands_are_refused_to_others() {
        let alice = Caller {
            jid: "alice@x".into(),
            operator: false,
        };
        let admin = Caller {
            jid: "admin@x".into(),
            operator: true,
        };
        for s in SPECS {
            assert!(admin.may_run(s));
            assert_eq!(alice.may_run(s), s.access == Access::Anyone, "{}", s.name);
        }
        assert_eq!(spec("health").unwrap().access, Access::Operator);
    }
}
