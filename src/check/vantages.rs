//! Spreading probes over the vantages (our own place and the agents), an
//! agent's failure sent elsewhere, and a mismatch looked at from the others.

use super::*;
use crate::config::LOCAL_VANTAGE;
use crate::vantage::wire::Job;

/// The most other vantages a mismatch is looked at from.
pub const MAX_CONFIRMING_VANTAGES: usize = 4;

/// The most endpoints remembered as seen intercepted from one vantage only.
pub const MAX_SUSPECTS: usize = 4096;

/// Endpoints (host, address and port) where the last check saw a key no
/// record matches from one vantage only, and that vantage: their next
/// probes are made from there first (when it is available), until it sees
/// the matching key again. Without this, an interceptor that spares other
/// networks would make the verdict flap with the pick of the vantage.
#[derive(Clone, Default)]
pub struct Suspects(Arc<std::sync::Mutex<std::collections::HashMap<(String, SocketAddr), String>>>);

impl Suspects {
    /// The vantage `endpoint` was last seen intercepted from only.
    pub(super) fn get(&self, endpoint: &Endpoint) -> Option<String> {
        let key = suspect_key(endpoint)?;
        self.0.lock().expect("suspects lock").get(&key).cloned()
    }

    /// After a check judged `endpoint` (probed from `origin`): remember or forget.
    pub(super) fn update(&self, endpoint: &Endpoint, report: &EndpointReport, origin: &Origin) {
        let Some(key) = suspect_key(endpoint) else {
            return;
        };
        let mut map = self.0.lock().expect("suspects lock");
        let only = report.verdict == EndpointVerdict::Mismatch
            && report.notes.iter().any(|n| n.starts_with(SEEN_ONLY_FROM));
        if only {
            if map.len() < MAX_SUSPECTS || map.contains_key(&key) {
                map.insert(key, origin.name().to_owned());
            }
        } else if report.verdict != EndpointVerdict::Mismatch
            && map.get(&key).is_some_and(|v| v == origin.name())
        {
            map.remove(&key);
        }
    }
}

fn suspect_key(endpoint: &Endpoint) -> Option<(String, SocketAddr)> {
    let addr = SocketAddr::new(endpoint.address?, endpoint.port);
    Some((endpoint.host.to_ascii_lowercase(), addr))
}

/// How a mismatch seen from one vantage only begins its note.
pub(super) const SEEN_ONLY_FROM: &str = "seen only from ";

/// Where a probe was made from.
#[derive(Clone, Debug, Default)]
pub(super) struct Origin {
    /// The agent's name; None for our own place.
    pub(super) agent: Option<String>,
    /// How the probe reached the server (tor, socks5, direct).
    pub(super) transport: String,
}

impl Origin {
    /// The vantage's name (ours is [`LOCAL_VANTAGE`]).
    pub(super) fn name(&self) -> &str {
        self.agent.as_deref().unwrap_or(LOCAL_VANTAGE)
    }
}

/// One probe's outcome: what it saw, through which exit, from where.
pub(super) type Sight = (Probed, Option<ExitRelay>, Origin);

impl Checker {
    /// The vantages that can probe now, but none of `skip`, with weights.
    fn candidates(&self, skip: &[String]) -> Vec<(String, u32)> {
        let mut all = Vec::new();
        // `local = false` holds from the first check, before the XMPP front
        // has handed over its agents: nothing probes from here then.
        if self.local {
            all.push((LOCAL_VANTAGE.to_owned(), 1));
        }
        if let Some(v) = &self.vantages {
            all.extend(v.available());
        }
        all.retain(|(name, _)| !skip.contains(name));
        all
    }

    /// A vantage by weight among the candidates.
    fn pick(&self, skip: &[String]) -> Option<String> {
        let all = self.candidates(skip);
        let total: u32 = all.iter().map(|(_, w)| *w).sum();
        if total == 0 {
            return None;
        }
        let mut at = rand::random_range(0..total);
        for (name, w) in all {
            if at < w {
                return Some(name);
            }
            at -= w;
        }
        None
    }

    /// One probe from a vantage picked by weight; when an agent fails (not
    /// the server), the probe goes to another, until the deadline. A
    /// vantage that could not reach the server (a failure that is not a
    /// finding: not STARTTLS missing, not a chain too large) is second-guessed
    /// once from another vantage: one agent's claim (or one network's
    /// outage) does not make a server others reach "unreachable".
    pub(super) async fn probe_spread(
        &self,
        endpoint: &Endpoint,
        target: &Target,
        deadline: tokio::time::Instant,
    ) -> Sight {
        let mut skip = Vec::new();
        let mut failures = Vec::new();
        let mut unreached: Option<Sight> = None;
        // Where this endpoint was last seen intercepted from only: there first.
        let suspect = self
            .suspects
            .get(endpoint)
            .filter(|name| self.candidates(&[]).iter().any(|(n, _)| n == name));
        let mut next = suspect.or_else(|| self.pick(&skip));
        while let Some(name) = next {
            match self.probe_at(&name, endpoint, target, deadline, &[]).await {
                Ok(sight) if unreached.is_none() && not_reached(&sight.0) => {
                    tracing::info!(vantage = %name, "could not reach the server: asking another vantage");
                    unreached = Some(sight);
                    skip.push(name);
                }
                Ok(sight) if unreached.is_some() && not_reached(&sight.0) => {
                    return unreached.expect("checked");
                }
                Ok(sight) => return sight,
                Err(e) => {
                    tracing::info!(vantage = %name, error = %e, "probe sent elsewhere");
                    failures.push(e.to_string());
                    skip.push(name);
                }
            }
            next = self.pick(&skip);
        }
        if let Some(sight) = unreached {
            return sight;
        }
        (
            Probed::Failed(no_vantage(&failures)),
            None,
            Origin::default(),
        )
    }

    /// One probe from vantage `name`, avoiding `avoid` exits; an agent's
    /// failure is an error (never the server's).
    pub(super) async fn probe_at(
        &self,
        name: &str,
        endpoint: &Endpoint,
        target: &Target,
        deadline: tokio::time::Instant,
        avoid: &[ExitRelay],
    ) -> Result<Sight, crate::vantage::AgentFailure> {
        let remote = self.vantages.as_ref().filter(|_| name != LOCAL_VANTAGE);
        let Some(remote) = remote else {
            let (p, exit) = probed(self.prober.probe(target, deadline, avoid).await);
            let origin = Origin {
                agent: None,
                transport: self.prober.transport().into(),
            };
            return Ok((p, exit, origin));
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let job = Job {
            service: endpoint.service,
            domain: target.domain.trim_end_matches('.').to_owned(),
            host: endpoint.host.clone(),
            addr: target.addr,
            timeout: left.min(self.prober.check_budget() / CHECK_BUDGET_TIMEOUTS_F),
            avoid: avoid.iter().map(|e| e.rsa.clone()).collect(),
        };
        if job.timeout.is_zero() {
            return Ok((
                Probed::NotProbed(self.prober.deadline_passed().to_string()),
                None,
                Origin::default(),
            ));
        }
        let answer = tokio::time::timeout_at(deadline, remote.probe(name, job, deadline)).await;
        let (result, transport) = match answer {
            Ok(r) => r?,
            Err(_) => {
                return Err(crate::vantage::AgentFailure::agent(
                    name,
                    "no answer by the check's deadline",
                ))
            }
        };
        let (p, exit) = probed(result);
        Ok((
            p,
            exit,
            Origin {
                agent: Some(name.to_owned()),
                transport,
            },
        ))
    }

    /// Every other vantage (at most [`MAX_CONFIRMING_VANTAGES`]) probes the
    /// endpoint at once; agents that fail are left out.
    pub(super) async fn probe_others(
        &self,
        first: &Origin,
        endpoint: &Endpoint,
        target: &Target,
        deadline: tokio::time::Instant,
    ) -> Vec<Sight> {
        if self.vantages.is_none() {
            return Vec::new();
        }
        let mut others = self.candidates(&[first.name().to_owned()]);
        // A different few each time when there are more than the bound.
        rand::seq::SliceRandom::shuffle(&mut others[..], &mut rand::rng());
        others.truncate(MAX_CONFIRMING_VANTAGES);
        let probes = others
            .iter()
            .map(|(name, _)| self.probe_at(name, endpoint, target, deadline, &[]));
        futures::future::join_all(probes)
            .await
            .into_iter()
            .filter_map(Result::ok)
            .collect()
    }
}

/// No vantage could make the probe: our own failure (like our Tor
/// failing), never the server's. The endpoint is "not checked": its state
/// is left alone and the operators are told, never its subscribers.
fn no_vantage(failures: &[String]) -> ProbeError {
    use crate::report::NO_VANTAGE;
    let why = if failures.is_empty() {
        format!("{NO_VANTAGE}: no vantage is available (agents offline)")
    } else {
        format!(
            "{NO_VANTAGE}: agents offline or failing ({})",
            failures.join("; ")
        )
    };
    ProbeError::Connect(ConnectFailure::NoVantage(why))
}

/// Whether a probe failed to reach the server without a finding about it.
fn not_reached(p: &Probed) -> bool {
    matches!(p, Probed::Failed(e) if !e.is_starttls_missing() && !e.is_chain_unusable())
}

/// The probe timeout as a divisor of the check's budget.
const CHECK_BUDGET_TIMEOUTS_F: u32 = crate::probe::CHECK_BUDGET_TIMEOUTS;
