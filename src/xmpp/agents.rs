//! The coordinator's side of the agents (docs/agents.md): who they are
//! (`[[vantage]]`), which are online (their presence), probe jobs sent as
//! IQ sets and their answers matched by id. Answers from any JID not in
//! the list are ignored and logged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use tokio::sync::oneshot;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::parsers::iq::Iq;
use tokio_xmpp::parsers::jid::Jid;

use super::Link;
use crate::config::VantageConfig;
use crate::vantage::{wire, AgentFailure, Blame, Remote, Vantages};

#[path = "agent_jobs.rs"]
mod jobs;
use jobs::{Ended, Entry, Full, Waiting};
pub use jobs::{MAX_PENDING_JOBS, MAX_PENDING_PER_AGENT};
/// How often a probe answer from a stranger is logged, at most.
pub const STRANGER_LOG_EVERY: Duration = Duration::from_secs(10);
/// The shortest and the longest an agent that keeps failing is not picked.
pub const COOL_DOWN_MIN: Duration = Duration::from_secs(30);
/// See [`COOL_DOWN_MIN`].
pub const COOL_DOWN_MAX: Duration = Duration::from_secs(600);
/// Agent failures in a row that make an operator notice.
pub const FAILURES_FOR_NOTICE: u32 = 3;

/// What the coordinator knows of one agent.
#[derive(Clone, Debug, Default)]
pub struct AgentState {
    /// The full JID it is online as, if it is.
    pub online: Option<Jid>,
    /// When it was last heard from.
    pub last_contact: Option<SystemTime>,
    /// Jobs it answered.
    pub answered: u64,
    /// Jobs it failed (timeout, gone, nonsense, busy, its transport).
    pub failed: u64,
    /// Failures since its last answer.
    pub failing: u32,
    /// Since when it has been offline (None while online; the
    /// coordinator's start for an agent not seen yet).
    pub offline_since: Option<SystemTime>,
    /// Whether the operators were told it is away or failing (and not yet
    /// that it is back).
    pub told: bool,
    /// An agent that keeps failing is not picked until then (see [`cool_down`]).
    pub resting_until: Option<tokio::time::Instant>,
}

/// How long an agent that failed `failing` jobs in a row is not picked:
/// none below [`FAILURES_FOR_NOTICE`], then [`COOL_DOWN_MIN`], doubling
/// with each further failure up to [`COOL_DOWN_MAX`]. After it, one job
/// tells whether it works again.
pub fn cool_down(failing: u32) -> Duration {
    if failing < FAILURES_FOR_NOTICE {
        return Duration::ZERO;
    }
    let doublings = (failing - FAILURES_FOR_NOTICE).min(16);
    (COOL_DOWN_MIN * 2u32.pow(doublings)).min(COOL_DOWN_MAX)
}

/// The agents of one coordinator.
pub struct Agents {
    me: Jid,
    link: Arc<Link>,
    list: Vec<VantageConfig>,
    state: Mutex<HashMap<String, AgentState>>,
    pending: jobs::Table,
    /// Job ids are `job-PREFIX-N`: the prefix is random per process, so an
    /// id is never reused across restarts nor guessed by others.
    prefix: String,
    next: AtomicU64,
    /// When a stranger's answer was last logged, and how many since were not.
    strangers: Mutex<(Option<std::time::Instant>, u64)>,
    /// How long an agent may stay offline before the operators are told.
    away: Duration,
    /// Where the operators' notices go (away or failing, and back).
    notices: Mutex<Option<tokio::sync::mpsc::UnboundedSender<String>>>,
}

impl Agents {
    /// The agents of the `[[vantage]]` list.
    pub fn new(me: Jid, link: Arc<Link>, list: Vec<VantageConfig>, away: Duration) -> Agents {
        let now = SystemTime::now();
        let state = list
            .iter()
            .map(|v| {
                let s = AgentState {
                    offline_since: Some(now),
                    ..AgentState::default()
                };
                (v.name.clone(), s)
            })
            .collect();
        Agents {
            me,
            link,
            list,
            state: Mutex::new(state),
            pending: jobs::Table::default(),
            prefix: format!("{:016x}", rand::random::<u64>()),
            next: AtomicU64::new(1),
            strangers: Mutex::new((None, 0)),
            away,
            notices: Mutex::new(None),
        }
    }

    /// Where the operators' notices about agents go.
    pub fn notify(&self, tx: tokio::sync::mpsc::UnboundedSender<String>) {
        *self.notices.lock().expect("agents lock") = Some(tx);
    }

    fn tell(&self, text: String) {
        tracing::warn!("{text}");
        if let Some(tx) = self.notices.lock().expect("agents lock").as_ref() {
            let _ = tx.send(text);
        }
    }

    /// Tells the operators, once, of each agent offline for longer than
    /// `vantage_away`; called every few seconds.
    pub fn sweep(&self, now: SystemTime) {
        let mut notes = Vec::new();
        {
            let mut state = self.state.lock().expect("agents lock");
            for (name, s) in state.iter_mut() {
                let Some(since) = s.offline_since.filter(|_| !s.told) else {
                    continue;
                };
                let gone = now.duration_since(since).unwrap_or_default();
                if gone >= self.away {
                    s.told = true;
                    notes.push(format!(
                        "Vantage agent {name} has been offline for {} (since {}): its probes are made from the other vantages; see `health`. You are told once when it is back.",
                        humantime::format_duration(Duration::from_secs(gone.as_secs())),
                        humantime::format_rfc3339_seconds(since)
                    ));
                }
            }
        }
        for n in notes {
            self.tell(n);
        }
    }

    /// The listed agent with this bare JID.
    fn named(&self, from: &Jid) -> Option<&VantageConfig> {
        let bare = from.to_bare().to_string();
        self.list.iter().find(|v| v.jid.eq_ignore_ascii_case(&bare))
    }

    /// Whether `from` is one of our agents.
    pub fn is_agent(&self, from: &Jid) -> bool {
        self.named(from).is_some()
    }

    /// The agents' bare JIDs (to say we are here when the link comes up).
    pub fn jids(&self) -> Vec<String> {
        self.list.iter().map(|v| v.jid.clone()).collect()
    }

    /// Every agent's name and state, in list order.
    pub fn states(&self) -> Vec<(String, AgentState)> {
        let state = self.state.lock().expect("agents lock");
        self.list
            .iter()
            .map(|v| {
                (
                    v.name.clone(),
                    state.get(&v.name).cloned().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// An agent's presence.
    pub fn on_presence(&self, from: &Jid, available: bool) {
        let Some(v) = self.named(from) else { return };
        let mut back = false;
        {
            let mut state = self.state.lock().expect("agents lock");
            let s = state.entry(v.name.clone()).or_default();
            let now = SystemTime::now();
            s.last_contact = Some(now);
            if available {
                if s.online.is_none() {
                    tracing::info!(agent = %v.name, jid = %from, "agent online");
                }
                s.online = Some(from.clone());
                s.offline_since = None;
                // Back from being away; one that keeps failing is back
                // when it answers again.
                back = s.told && s.failing < FAILURES_FOR_NOTICE;
                s.told &= !back;
            } else if s.online.as_ref() == Some(from) {
                tracing::info!(agent = %v.name, jid = %from, "agent offline");
                s.online = None;
                s.offline_since = Some(now);
            }
        }
        if !available {
            // Only the jobs sent to that resource: another may still answer.
            self.fail_pending(from, "the agent went offline mid-job");
        }
        if back {
            self.tell(format!("Vantage agent {} is back online.", v.name));
        }
    }

    /// Ends every job sent to the full JID `to` still waiting for its answer.
    fn fail_pending(&self, to: &Jid, why: &str) {
        self.pending
            .fail(|e| &e.to == to, || Ended::Answer(Err(why.to_owned())));
    }

    /// An IQ result or error addressed to us: a job's answer, if from the
    /// agent it was sent to. Any other probe answer is ignored and logged.
    pub fn on_answer(&self, from: Option<&Jid>, id: &str, answer: Result<Option<Element>, String>) {
        let ours = |name: &str| {
            let sent_to = self.list.iter().find(|v| v.name == name);
            matches!((from, sent_to), (Some(f), Some(v)) if f.to_bare().to_string().eq_ignore_ascii_case(&v.jid))
        };
        match self.pending.agent_of(id) {
            Some(name) if ours(&name) => {
                if let Some(e) = self.pending.take(id) {
                    let _ = e.tx.send(Ended::Answer(answer));
                }
            }
            // Another JID answers a job of ours, or sends a probe answer
            // (or an error to a job id) that no job of ours waits for.
            Some(_) => self.stranger(from, id),
            None => {
                let probe_answer = match &answer {
                    Ok(Some(el)) => el.ns() == wire::NS,
                    Ok(None) | Err(_) => id.starts_with("job-"),
                };
                if probe_answer && !from.is_some_and(|f| self.is_agent(f)) {
                    self.stranger(from, id);
                }
            }
        }
    }

    /// Logs a probe answer from a JID that is not the job's agent, at most
    /// once every [`STRANGER_LOG_EVERY`] (with how many were not logged).
    fn stranger(&self, from: Option<&Jid>, id: &str) {
        let mut s = self.strangers.lock().expect("agents lock");
        let now = std::time::Instant::now();
        if s.0
            .is_some_and(|t| now.duration_since(t) < STRANGER_LOG_EVERY)
        {
            s.1 += 1;
            return;
        }
        let unlogged = std::mem::take(&mut s.1);
        s.0 = Some(now);
        tracing::debug!(from = ?from.map(|f| f.to_string()), id, unlogged, "a probe answer from a JID that is not the agent the job went to: ignored");
    }

    fn record(&self, name: &str, ok: bool) {
        let note = {
            let mut state = self.state.lock().expect("agents lock");
            let s = state.entry(name.to_owned()).or_default();
            s.last_contact = Some(SystemTime::now());
            if ok {
                s.answered += 1;
                s.failing = 0;
                s.resting_until = None;
                let back = s.told && s.online.is_some();
                s.told &= !back;
                back.then(|| format!("Vantage agent {name} answers again."))
            } else {
                s.failed += 1;
                s.failing += 1;
                let rest = cool_down(s.failing);
                s.resting_until = (!rest.is_zero()).then(|| tokio::time::Instant::now() + rest);
                let tell = s.failing >= FAILURES_FOR_NOTICE && !s.told;
                s.told |= tell;
                tell.then(|| format!("Vantage agent {name} keeps failing ({FAILURES_FOR_NOTICE} jobs in a row): its probes are made from the other vantages; see `health` for its last contact. You are told once when it answers again."))
            }
        };
        if let Some(text) = note {
            self.tell(text);
        }
    }

    /// Our link to the server went down: every agent is offline for us
    /// (their presence comes again with the link), and every waiting job
    /// ends at once as our failure, not the agents'.
    pub fn link_lost(&self) {
        let now = SystemTime::now();
        for s in self.state.lock().expect("agents lock").values_mut() {
            if s.online.take().is_some() {
                s.offline_since = Some(now);
            }
        }
        let n = self.pending.fail(|_| true, || Ended::LinkLost);
        tracing::info!(
            jobs = n,
            "link lost: every agent offline until it says it is there"
        );
    }

    /// Marks an agent gone (its job bounced: it is not there).
    pub fn gone(&self, name: &str) {
        if let Some(s) = self.state.lock().expect("agents lock").get_mut(name) {
            if s.online.take().is_some() {
                s.offline_since = Some(SystemTime::now());
            }
        }
    }

    async fn run(
        self: Arc<Self>,
        name: String,
        job: wire::Job,
        deadline: tokio::time::Instant,
    ) -> Remote {
        let fail = |why: String| AgentFailure::agent(&name, why);
        let to = {
            let state = self.state.lock().expect("agents lock");
            state.get(&name).and_then(|s| s.online.clone())
        };
        let Some(to) = to else {
            return Err(fail("offline".into()));
        };
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("job-{}-{n}", self.prefix);
        let (tx, rx) = oneshot::channel();
        let entry = Entry {
            agent: name.clone(),
            to: to.clone(),
            tx,
        };
        match self.pending.add(&id, entry) {
            Ok(()) => {}
            Err(Full::Agent) => {
                return Err(AgentFailure {
                    blame: Blame::Busy,
                    ..fail(format!(
                        "{MAX_PENDING_PER_AGENT} of its jobs wait for answers"
                    ))
                })
            }
            Err(Full::All) => {
                tracing::warn!(agent = %name, "{MAX_PENDING_JOBS} agent jobs wait for answers: no more sent");
                return Err(ours(
                    &name,
                    format!("our table of {MAX_PENDING_JOBS} jobs waiting for answers is full"),
                ));
            }
        }
        // Taken out of the table however the wait ends, even dropped.
        let mut waiting = Waiting {
            agents: &self,
            id: id.clone(),
            agent: name.clone(),
            settled: false,
        };
        // The agent gets the job's timeout, and a little more to answer,
        // but never past the check's deadline.
        let wait = job.timeout + Duration::from_secs(5);
        let until = (tokio::time::Instant::now() + wait).min(deadline);
        let sent = self.link.try_send(Iq::Set {
            from: Some(self.me.clone()),
            to: Some(to),
            id: id.clone(),
            payload: wire::job_element(&job),
        });
        if let Err(why) = sent {
            waiting.settled = true;
            return Err(ours(
                &name,
                format!("our link could not send the job: {why}"),
            ));
        }
        let answer = tokio::time::timeout_at(until, rx).await;
        let result = match answer {
            Err(_) if until < deadline => {
                Err(fail(format!("no answer within {}s", wait.as_secs())))
            }
            Err(_) => Err(fail("no answer by the check's deadline".into())),
            Ok(Err(_)) => Err(fail("the answer was lost".into())),
            Ok(Ok(Ended::LinkLost)) => Err(ours(
                &name,
                "our link to the server was lost mid-job".into(),
            )),
            Ok(Ok(Ended::Answer(Err(e)))) => {
                self.gone(&name);
                Err(fail(e))
            }
            Ok(Ok(Ended::Answer(Ok(None)))) => Err(fail("an empty answer".into())),
            Ok(Ok(Ended::Answer(Ok(Some(el))))) => match wire::parse_answer_to(&el, &job) {
                Ok(a) => crate::vantage::remote_of(&name, a),
                Err(e) => {
                    tracing::warn!(agent = %name, %id, error = %e, "a malformed answer, or one about another endpoint than its job's");
                    Err(fail(format!("a malformed answer: {e}")))
                }
            },
        };
        // Busy, or our own failure: not the agent's.
        match &result {
            Ok(_) => self.record(&name, true),
            Err(e) if e.blame == Blame::Agent => self.record(&name, false),
            Err(_) => {}
        }
        waiting.settled = true;
        drop(waiting);
        result
    }
}

/// A job to `agent` that failed on our side (never counted against it).
fn ours(agent: &str, why: String) -> AgentFailure {
    AgentFailure {
        blame: Blame::Ours,
        ..AgentFailure::agent(agent, why)
    }
}

impl Vantages for Arc<Agents> {
    fn available(&self) -> Vec<(String, u32)> {
        let state = self.state.lock().expect("agents lock");
        let now = tokio::time::Instant::now();
        let can = |s: &AgentState| s.online.is_some() && s.resting_until.is_none_or(|t| t <= now);
        self.list
            .iter()
            .filter(|v| state.get(&v.name).is_some_and(can))
            .map(|v| (v.name.clone(), v.weight))
            .collect()
    }

    fn probe(
        &self,
        agent: &str,
        job: wire::Job,
        deadline: tokio::time::Instant,
    ) -> BoxFuture<'static, Remote> {
        Box::pin(self.clone().run(agent.to_owned(), job, deadline))
    }

    fn describe(&self) -> Vec<(String, String, String, String)> {
        self.states()
            .into_iter()
            .map(|(name, s)| {
                let state = match (&s.online, s.failing) {
                    (None, _) => "offline".to_owned(),
                    (Some(_), 0) => "online".to_owned(),
                    (Some(_), n) => {
                        let left = s
                            .resting_until
                            .map(|t| t.saturating_duration_since(tokio::time::Instant::now()));
                        match left.filter(|l| !l.is_zero()) {
                            Some(l) => format!(
                                "online, failing ({n} jobs in a row), not picked for {}s",
                                l.as_secs()
                            ),
                            None => format!("online, failing ({n} jobs in a row)"),
                        }
                    }
                };
                let contact = s
                    .last_contact
                    .map(|t| humantime::format_rfc3339_seconds(t).to_string())
                    .unwrap_or_else(|| "never".into());
                let total = s.answered + s.failed;
                let rate = match (s.answered * 100).checked_div(total) {
                    None => "no jobs yet".to_owned(),
                    Some(pct) => format!("{} of {total} jobs answered ({pct}%)", s.answered),
                };
                (name, state, contact, rate)
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "agents_tests.rs"]
mod tests;
