//! The coordinator's jobs waiting for an agent's answer: bounded in all and
//! per agent, and each taken out of the table when its wait ends, however
//! it ends (its answer, its timeout, or the check's deadline dropping the
//! whole probe).

use super::*;

/// Jobs waiting for an answer, at most, over all agents. A job past it is
/// our own failure (not the agent's): the probe goes to another vantage,
/// and when none is left the endpoint is not checked.
pub const MAX_PENDING_JOBS: usize = 4096;
/// Jobs waiting for one agent's answer, at most: no agent runs more at
/// once (`agent.max_jobs` is at most this). A job past it is not sent: the
/// agent counts as busy (not failing) and the probe goes elsewhere.
pub const MAX_PENDING_PER_AGENT: usize = crate::config::MAX_AGENT_JOBS;

/// How a job's wait ended, other than by its timeout.
#[derive(Debug)]
pub(super) enum Ended {
    /// The agent's answer: the payload of the IQ result, or why it bounced.
    Answer(Result<Option<Element>, String>),
    /// Our link to the server went down: the answer can no longer come
    /// (our failure, not the agent's).
    LinkLost,
}

/// Where a job's end goes.
pub(super) type Answering = oneshot::Sender<Ended>;

/// One job waiting for its answer.
pub(super) struct Entry {
    /// The agent's name.
    pub(super) agent: String,
    /// The full JID the job went to.
    pub(super) to: Jid,
    /// Where its answer goes.
    pub(super) tx: Answering,
}

/// Why a job cannot wait for its answer.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Full {
    /// The agent has [`MAX_PENDING_PER_AGENT`] jobs waiting.
    Agent,
    /// [`MAX_PENDING_JOBS`] jobs are waiting.
    All,
}

/// The jobs waiting for answers, by IQ id.
#[derive(Default)]
pub(super) struct Table(Mutex<HashMap<String, Entry>>);

impl Table {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.0.lock().expect("agent jobs lock")
    }

    /// Adds a job, within the bounds.
    pub(super) fn add(&self, id: &str, entry: Entry) -> Result<(), Full> {
        let mut map = self.lock();
        if map.len() >= MAX_PENDING_JOBS {
            return Err(Full::All);
        }
        let theirs = map.values().filter(|e| e.agent == entry.agent).count();
        if theirs >= MAX_PENDING_PER_AGENT {
            return Err(Full::Agent);
        }
        map.insert(id.to_owned(), entry);
        Ok(())
    }

    /// The agent job `id` went to, while it waits.
    pub(super) fn agent_of(&self, id: &str) -> Option<String> {
        self.lock().get(id).map(|e| e.agent.clone())
    }

    /// Takes job `id` out of the table.
    pub(super) fn take(&self, id: &str) -> Option<Entry> {
        self.lock().remove(id)
    }

    /// Ends every waiting job `which` picks as `end` says; says how many.
    pub(super) fn fail(&self, which: impl Fn(&Entry) -> bool, end: impl Fn() -> Ended) -> usize {
        let mut map = self.lock();
        let ids: Vec<String> = map
            .iter()
            .filter(|(_, e)| which(e))
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ids {
            if let Some(e) = map.remove(id) {
                let _ = e.tx.send(end());
            }
        }
        ids.len()
    }

    /// How many jobs wait.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// A job's place in the table for as long as its wait lasts. Dropped, it
/// takes the job out; a wait that ended without being settled (the
/// check's deadline dropped the probe first) counts as the agent's failure.
pub(super) struct Waiting<'a> {
    pub(super) agents: &'a Agents,
    pub(super) id: String,
    pub(super) agent: String,
    /// Whether the job's end was recorded.
    pub(super) settled: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.agents.pending.take(&self.id);
        if !self.settled {
            tracing::debug!(agent = %self.agent, id = %self.id, "a job's wait ended by the check's deadline");
            self.agents.record(&self.agent, false);
        }
    }
}
