//! Places to probe from other than our own: a coordinator's agents.
//!
//! [`Vantages`] is what a check sees of them (which agents can take a
//! probe now, and one probe through one of them); the XMPP front implements
//! it. [`wire`] is the job protocol the agents speak (docs/agents.md).
//! An agent's failure (it timed out, went away, answered nonsense, is busy)
//! is never the server's: [`AgentFailure`] keeps it apart.

pub mod wire;

use futures::future::BoxFuture;

use crate::error::{ErrorKind, HasKind};
use crate::probe::transport::{ConnectFailure, ExitRelay};
use crate::probe::{ProbeError, ProbeFailure, Seen};
use wire::{Failure, Sighting, Whose};

/// Why an agent gave no answer about the server: never the server's doing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("vantage {agent}: {why}")]
pub struct AgentFailure {
    /// The vantage's name.
    pub agent: String,
    /// What went wrong.
    pub why: String,
    /// Whose it is: the agent's, the agent being busy, or ours.
    pub blame: Blame,
}

impl AgentFailure {
    /// The agent's own failure (it timed out, went away, answered nonsense).
    pub fn agent(agent: &str, why: impl Into<String>) -> AgentFailure {
        AgentFailure {
            agent: agent.to_owned(),
            why: why.into(),
            blame: Blame::Agent,
        }
    }
}

/// Whose an [`AgentFailure`] is. Only [`Blame::Agent`] counts against the
/// agent (its failures in a row, the operators' notice); every kind sends
/// the probe to another vantage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The agent failed.
    Agent,
    /// The agent runs as many jobs as it may: no failure, ask another.
    Busy,
    /// Our side could not send the job or wait for it (our link to the
    /// server is down, our table of waiting jobs is full).
    Ours,
}

/// What a probe through an agent gave: what the server showed (a chain, or
/// a failure of the server's), and the agent's transport; or the agent's failure.
pub type Remote = Result<(Result<Seen, ProbeError>, String), AgentFailure>;

/// The agents a check may probe through.
pub trait Vantages: Send + Sync {
    /// The agents that can take a probe now: name and weight.
    fn available(&self) -> Vec<(String, u32)>;
    /// One probe through `agent`; the future ends by the job's timeout
    /// (and a little more for the answer), never past `deadline`, and may
    /// be dropped before.
    fn probe(
        &self,
        agent: &str,
        job: wire::Job,
        deadline: tokio::time::Instant,
    ) -> BoxFuture<'static, Remote>;
    /// For operators, per agent: name, state, last contact, success rate.
    fn describe(&self) -> Vec<(String, String, String, String)> {
        Vec::new()
    }
}

/// The answer an agent sends for its own probe's result, within the
/// wire's bounds: a chain longer than [`wire::MAX_CERTS`] is cut to the
/// certificates matching considers (the leaf and the
/// [`crate::dane::MAX_CHAIN_BEYOND_LEAF`] after it: the verdict is the
/// same as from the whole chain), and a chain over [`wire::MAX_CHAIN_BYTES`]
/// is the server's `chain-too-large`, as in our own probe. So no chain a
/// server sends makes the answer malformed (the agent's failure).
pub fn answer_of(result: &Result<Seen, ProbeError>, transport: &str, millis: u64) -> wire::Answer {
    let seen = match result {
        Ok(seen) => seen,
        Err(e) => return wire::Answer::Failed(failure_of(e)),
    };
    let chain = &seen.observation.chain;
    let bytes: usize = chain.iter().map(Vec::len).sum();
    if bytes > wire::MAX_CHAIN_BYTES || chain.iter().any(Vec::is_empty) {
        let e = ProbeError::Session(ProbeFailure::ChainTooLarge {
            detail: format!("{} certificates of {bytes} bytes", chain.len()),
        });
        return wire::Answer::Failed(failure_of(&e));
    }
    if chain.len() > wire::MAX_CERTS {
        tracing::info!(
            presented = chain.len(),
            sent = wire::MAX_CERTS,
            "a long chain: only the certificates matching considers are sent"
        );
    }
    wire::Answer::Seen(Sighting {
        transport: transport.to_owned(),
        exit: seen.exit.as_ref().map(|e| e.rsa.clone()),
        chain: chain.iter().take(wire::MAX_CERTS).cloned().collect(),
        version: seen.observation.version.clone(),
        cipher: seen.observation.cipher.clone(),
        millis,
    })
}

/// Whose a probe's failure is, on the wire.
pub fn failure_of(e: &ProbeError) -> Failure {
    let (whose, reason) = match e {
        ProbeError::NotProbed(_) => (Whose::NotProbed, "other"),
        e if e.is_starttls_missing() => (
            Whose::Server,
            if matches!(e, ProbeError::Session(ProbeFailure::StartTlsRefused)) {
                "starttls-refused"
            } else {
                "starttls-missing"
            },
        ),
        e if e.is_chain_too_large() => (Whose::Server, "chain-too-large"),
        e if e.is_chain_unusable() => (Whose::Server, "chain-unparsable"),
        ProbeError::Connect(ConnectFailure::ExitRefused(_)) => (Whose::Server, "exit-refused"),
        e if e.kind() == ErrorKind::Remote => (Whose::Server, "other"),
        _ => (Whose::Transport, "other"),
    };
    Failure {
        whose,
        reason: reason.to_owned(),
        text: wire::clip(&e.to_string()),
    }
}

/// What the coordinator makes of an agent's answer.
pub fn remote_of(agent: &str, answer: wire::Answer) -> Remote {
    match answer {
        wire::Answer::Seen(s) => {
            let seen = Seen {
                observation: s.observation(),
                exit: s.exit.map(|rsa| ExitRelay { rsa, ed25519: None }),
            };
            Ok((Ok(seen), s.transport))
        }
        wire::Answer::Failed(f) if f.whose == Whose::Server => {
            let text = format!("{} (seen from {agent})", f.text);
            let e = match f.reason.as_str() {
                "starttls-missing" => ProbeError::Session(ProbeFailure::StartTlsMissing),
                "starttls-refused" => ProbeError::Session(ProbeFailure::StartTlsRefused),
                "chain-too-large" => {
                    ProbeError::Session(ProbeFailure::ChainTooLarge { detail: text })
                }
                "chain-unparsable" => {
                    ProbeError::Session(ProbeFailure::ChainUnparsable { detail: text })
                }
                "exit-refused" => ProbeError::Connect(ConnectFailure::ExitRefused(text)),
                _ => ProbeError::Connect(ConnectFailure::Remote(text)),
            };
            Ok((Err(e), String::new()))
        }
        wire::Answer::Failed(f) => Err(match f.whose {
            Whose::Busy => AgentFailure {
                blame: Blame::Busy,
                ..AgentFailure::agent(agent, format!("busy: {}", f.text))
            },
            Whose::NotProbed => AgentFailure::agent(agent, format!("did not probe: {}", f.text)),
            _ => AgentFailure::agent(agent, format!("its transport failed: {}", f.text)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::tls::TlsObservation;

    fn seen(chain: Vec<Vec<u8>>) -> Result<Seen, ProbeError> {
        Ok(Seen {
            observation: TlsObservation {
                chain,
                version: "TLSv1.3".into(),
                cipher: "TLS13_AES_128_GCM_SHA256".into(),
                alpn: None,
            },
            exit: None,
        })
    }

    /// The coordinator's reading of what the agent sends for `result`.
    fn through_the_wire(result: &Result<Seen, ProbeError>) -> Remote {
        let sent = answer_of(result, "direct", 5);
        let back = wire::parse_answer(&wire::answer_element(&sent))
            .map_err(|e| AgentFailure::agent("a1", format!("a malformed answer: {e}")))?;
        remote_of("a1", back)
    }

    #[test]
    fn a_long_chain_through_an_agent_is_what_matching_considers_never_malformed() {
        // An interceptor presents its leaf and 30 more: the agent sends the
        // leaf and the 16 matching considers, the coordinator reads them.
        let c = rcgen::generate_simple_self_signed(vec!["x".to_owned()]).unwrap();
        let leaf = c.cert.der().to_vec();
        let mut chain = vec![leaf.clone()];
        chain.extend((0..30).map(|i| vec![0x30, i as u8]));
        let (Ok(got), _) = through_the_wire(&seen(chain.clone())).unwrap() else {
            panic!("not a chain");
        };
        assert_eq!(got.observation.chain, chain[..wire::MAX_CERTS].to_vec());
        assert_eq!(wire::MAX_CERTS, 1 + crate::dane::MAX_CHAIN_BEYOND_LEAF);
        // The verdict's inputs are the same as from the whole chain.
        assert_eq!(got.observation.chain[0], leaf);
    }

    #[test]
    fn a_chain_over_the_byte_bound_is_the_servers_chain_too_large() {
        let chain = vec![vec![0x30; wire::MAX_CHAIN_BYTES / 2 + 1]; 2];
        let (Err(e), _) = through_the_wire(&seen(chain)).unwrap() else {
            panic!("not a failure");
        };
        assert!(e.is_chain_too_large() && e.is_remote(), "{e:?}");
    }

    #[test]
    fn a_chain_an_agent_cannot_use_stays_the_servers_alarm() {
        for f in [
            ProbeFailure::ChainTooLarge { detail: "x".into() },
            ProbeFailure::ChainUnparsable { detail: "x".into() },
        ] {
            let sent = failure_of(&ProbeError::Session(f.clone()));
            assert_eq!(sent.whose, Whose::Server);
            // Through the wire's own parser, as the coordinator reads it.
            let answer = wire::Answer::Failed(sent);
            let back = wire::parse_answer(&wire::answer_element(&answer)).unwrap();
            let (Err(e), _) = remote_of("a1", back).unwrap() else {
                panic!("a failure");
            };
            let ProbeError::Session(inner) = &e else {
                panic!("{f:?} came back as {e:?}");
            };
            assert_eq!(std::mem::discriminant(inner), std::mem::discriminant(&f));
            assert!(e.is_chain_unusable() && e.is_remote(), "{e:?}");
        }
    }
}
