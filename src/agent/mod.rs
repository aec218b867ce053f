//! `certwatch agent`: a probe-only process for another machine and network.
//!
//! It logs in to an XMPP server as an ordinary client ([`login`]), tells
//! its coordinator it is there (directed presence), and runs the probe jobs
//! the coordinator sends (docs/agents.md) with its own `[probe]` settings.
//! Nobody else's jobs are served. No store, no DNS: it connects, does
//! STARTTLS or direct TLS, and reports what it saw.

pub mod login;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_xmpp::minidom::rxml::NcName;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::xmlstream::ReadError;

use crate::config::{Config, ConfigError};
use crate::probe::Prober;
use crate::vantage::wire::{self, Answer, Failure, Whose};
use login::{Login, Session, CLIENT_NS};

/// How often the agent repeats its presence to the coordinator (it also
/// keeps the connection busy).
pub const ANNOUNCE_EVERY: Duration = Duration::from_secs(30);
/// The longest wait between two login attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
const PING_NS: &str = "urn:xmpp:ping";
const STANZAS_NS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The transport could not start.
    #[error(transparent)]
    Setup(#[from] crate::setup::SetupError),
    /// The trust file is unusable.
    #[error(transparent)]
    Login(#[from] login::LoginError),
}

pub(crate) fn ncname(name: &str) -> NcName {
    NcName::try_from(name).expect("attribute names here are static and valid")
}

/// What one agent knows while it runs.
struct Agent {
    coordinator: String,
    /// Our account's domain: the server, which answers our keepalive pings.
    server: String,
    prober: Prober,
    allow_private: bool,
    jobs: Arc<Semaphore>,
    /// The most jobs run at once (`agent.max_jobs`).
    max_jobs: usize,
}

/// Runs the agent until the process is stopped: logs in, serves jobs,
/// logs in again with backoff when the connection ends.
pub async fn run(config: Config) -> Result<(), AgentError> {
    let a = &config.agent;
    a.validate()?;
    let password = a.password()?;
    let (_, domain) = a.jid.split_once('@').expect("validated");
    let addr = server_addr(&config).await?;
    let tls_name = if a.tls_name.is_empty() {
        domain
    } else {
        &a.tls_name
    };
    let tls = login::tls_config(&a.trust_file)?;
    let profiles = crate::setup::profiles(&config)?;
    let connector = crate::setup::connector(&config, None).await?;
    let agent = Arc::new(Agent {
        coordinator: a.coordinator.trim().to_ascii_lowercase(),
        server: domain.to_ascii_lowercase(),
        prober: crate::setup::prober(&config, connector, profiles),
        allow_private: config.probe.allow_private,
        jobs: Arc::new(Semaphore::new(a.max_jobs())),
        max_jobs: a.max_jobs(),
    });
    let l = Login {
        addr,
        jid: &a.jid,
        password: &password,
        tls_name,
        tls,
    };
    let mut backoff = Duration::from_secs(1);
    loop {
        match login::login(&l).await {
            Ok((session, full)) => {
                tracing::info!(jid = %full, coordinator = %agent.coordinator, "agent logged in");
                let began = Instant::now();
                let why = agent.clone().serve(session).await;
                tracing::warn!(reason = %why, "agent connection ended");
                if began.elapsed() > MAX_BACKOFF {
                    backoff = Duration::from_secs(1);
                }
            }
            Err(e) => tracing::warn!(error = %e, "agent login failed"),
        }
        let wait = backoff.mul_f64(0.5 + rand::random::<f64>() / 2.0);
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn server_addr(config: &Config) -> Result<SocketAddr, ConfigError> {
    let a = &config.agent;
    let (_, domain) = a.jid.split_once('@').expect("validated");
    let text = if a.server.is_empty() {
        format!("{domain}:5222")
    } else {
        a.server.clone()
    };
    let mut addrs = tokio::net::lookup_host(&text)
        .await
        .map_err(|e| ConfigError::Invalid(format!("agent.server {text:?}: {e}")))?;
    addrs
        .next()
        .ok_or_else(|| ConfigError::Invalid(format!("agent.server {text:?} has no address")))
}

impl Agent {
    /// Serves one session until it ends; says why it ended.
    async fn serve(self: Arc<Self>, mut session: Session) -> String {
        let (tx, mut rx) = mpsc::channel::<Element>(64);
        if let Err(e) = session.send(&self.presence()).await {
            return e.to_string();
        }
        let mut announce = tokio::time::interval(ANNOUNCE_EVERY);
        announce.tick().await;
        loop {
            let out = tokio::select! {
                incoming = session.next() => match incoming {
                    Some(Ok(el)) => self.handle(el, &tx),
                    // Quiet for a while: a ping the server must answer
                    // (a presence gets no answer, and the stream would
                    // end at the response timeout).
                    Some(Err(ReadError::SoftTimeout)) => Some(self.keepalive()),
                    Some(Err(ReadError::ParseError(e))) => {
                        tracing::debug!(error = %e, "unreadable element skipped");
                        None
                    }
                    Some(Err(e)) => return format!("{e:?}"),
                    None => return "the server closed the stream".into(),
                },
                Some(el) = rx.recv() => Some(el),
                _ = announce.tick() => Some(self.presence()),
            };
            if let Some(el) = out {
                if let Err(e) = session.send(&el).await {
                    return e.to_string();
                }
            }
        }
    }

    /// A ping to our server (XEP-0199); its answer, result or error, is
    /// traffic enough to keep the stream.
    fn keepalive(&self) -> Element {
        Element::builder("iq", CLIENT_NS)
            .attr(ncname("type"), "get")
            .attr(ncname("id"), "keepalive")
            .attr(ncname("to"), self.server.as_str())
            .append(Element::builder("ping", PING_NS).build())
            .build()
    }

    /// Directed presence to the coordinator: "I am here".
    fn presence(&self) -> Element {
        Element::builder("presence", CLIENT_NS)
            .attr(ncname("to"), self.coordinator.as_str())
            .build()
    }

    /// What to send for an incoming element now (jobs answer later through `tx`).
    fn handle(self: &Arc<Self>, el: Element, tx: &mpsc::Sender<Element>) -> Option<Element> {
        let from = el.attr("from").unwrap_or_default().to_owned();
        let from_coordinator = from
            .split('/')
            .next()
            .is_some_and(|b| b.eq_ignore_ascii_case(&self.coordinator));
        if el.is("presence", CLIENT_NS) {
            // The coordinator says it is (back) there: answer at once.
            let available = el.attr("type").is_none();
            return (from_coordinator && available).then(|| self.presence());
        }
        if !el.is("iq", CLIENT_NS) {
            return None;
        }
        let id = el.attr("id").unwrap_or_default().to_owned();
        let kind = el.attr("type").unwrap_or_default();
        if kind != "get" && kind != "set" {
            return None;
        }
        if el.get_child("ping", PING_NS).is_some() {
            return Some(iq_reply(&id, &from, None));
        }
        let Some(probe) = el.get_child("probe", wire::NS) else {
            return Some(iq_error(&id, &from, "cancel", "service-unavailable", None));
        };
        if !from_coordinator {
            tracing::info!(%from, "probe job from a JID that is not our coordinator: refused");
            return Some(iq_error(&id, &from, "cancel", "forbidden", None));
        }
        let job = match wire::parse_job(probe) {
            Ok(job) => job,
            Err(e) => {
                let text = wire::clip(&e.to_string());
                return Some(iq_error(&id, &from, "modify", "bad-request", Some(&text)));
            }
        };
        let Ok(permit) = self.jobs.clone().try_acquire_owned() else {
            let busy = Answer::Failed(Failure {
                whose: Whose::Busy,
                reason: "other".into(),
                text: format!("{} jobs already running (agent.max_jobs)", self.max_jobs),
            });
            let el = wire::answer_element_for(&job, &busy);
            return Some(iq_reply(&id, &from, Some(el)));
        };
        let (me, tx) = (self.clone(), tx.clone());
        tokio::spawn(async move {
            let answer = me.run_job(&job).await;
            drop(permit);
            let _ = tx
                .send(iq_reply(
                    &id,
                    &from,
                    Some(wire::answer_element_for(&job, &answer)),
                ))
                .await;
        });
        None
    }

    /// One probe, as the job asks and our own settings allow.
    async fn run_job(&self, job: &wire::Job) -> Answer {
        let target = job.target();
        tracing::info!(domain = %job.domain, host = %job.host, addr = %job.addr, "probe job");
        if let Some(why) = crate::netpolicy::refusal(target.addr, self.allow_private) {
            return Answer::Failed(Failure {
                whose: Whose::NotProbed,
                reason: "other".into(),
                text: wire::clip(&format!("this agent does not probe it: {why}")),
            });
        }
        let started = Instant::now();
        let deadline = started + job.timeout.min(self.prober.check_budget());
        let avoid: Vec<_> = job
            .avoid
            .iter()
            .map(|rsa| crate::probe::transport::ExitRelay {
                rsa: rsa.clone(),
                ed25519: None,
            })
            .collect();
        let result = self.prober.probe(&target, deadline, &avoid).await;
        let millis = started.elapsed().as_millis() as u64;
        crate::vantage::answer_of(&result, self.prober.transport(), millis)
    }
}

/// An IQ result, with an optional payload.
pub fn iq_reply(id: &str, to: &str, payload: Option<Element>) -> Element {
    let mut b = Element::builder("iq", CLIENT_NS)
        .attr(ncname("type"), "result")
        .attr(ncname("id"), id)
        .attr(ncname("to"), to);
    if let Some(p) = payload {
        b = b.append(p);
    }
    b.build()
}

/// An IQ error (RFC 6120 §8.3).
fn iq_error(id: &str, to: &str, kind: &str, condition: &str, text: Option<&str>) -> Element {
    let mut error = Element::builder("error", CLIENT_NS)
        .attr(ncname("type"), kind)
        .append(Element::builder(condition, STANZAS_NS).build());
    if let Some(t) = text {
        error = error.append(Element::builder("text", STANZAS_NS).append(t).build());
    }
    Element::builder("iq", CLIENT_NS)
        .attr(ncname("type"), "error")
        .attr(ncname("id"), id)
        .attr(ncname("to"), to)
        .append(error.build())
        .build()
}
