//! Checks asked for on the web: started in the background so the browser
//! is redirected at once to a page that shows progress, through the same
//! engine path as chat `check`, holding a place in the same queue
//! ([`crate::admission`]: a few per client, the same bound in all).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::Domain;
use crate::engine::Engine;
use crate::error::{ErrorKind, HasKind};

/// Web checks running at once, over all clients; more are refused with 503
/// (the engine itself runs [`crate::engine::CHAT_CHECKS`] of them at a time).
pub const WEB_CHECKS_IN_FLIGHT: usize = crate::engine::COMMANDS_IN_FLIGHT;
/// How long a failed check's message is shown on the domain's page.
const FAILURE_SHOWN: Duration = Duration::from_secs(600);
/// Failure messages remembered at most.
const FAILURES_KEPT: usize = 256;

/// What the web knows about a domain's check in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Running since then.
    Running(Instant),
    /// The last web check failed on our side, with the chat's words.
    Failed(String, Instant),
}

/// The web's checks in progress and recent failures, by domain.
#[derive(Default)]
pub struct Checks {
    map: Mutex<HashMap<String, Progress>>,
}

/// Why a web check was not started.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Too many web checks are running.
    Busy,
}

impl Checks {
    /// The progress of `domain`'s web check, if any worth showing.
    pub fn progress(&self, domain: &str) -> Option<Progress> {
        let map = self.map.lock().expect("checks lock");
        match map.get(domain) {
            Some(Progress::Failed(_, at)) if at.elapsed() > FAILURE_SHOWN => None,
            other => other.cloned(),
        }
    }

    /// Starts a check of `domain` unless one is running (then it is the
    /// one the page follows), holding `ticket` until it ends.
    pub fn start(
        self: &Arc<Self>,
        engine: Arc<Engine>,
        domain: Domain,
        ticket: crate::admission::Ticket,
    ) -> Result<(), Refused> {
        let key = domain.as_str().to_owned();
        {
            let mut map = self.map.lock().expect("checks lock");
            if matches!(map.get(&key), Some(Progress::Running(_))) {
                return Ok(());
            }
            let running = map
                .values()
                .filter(|p| matches!(p, Progress::Running(_)))
                .count();
            if running >= WEB_CHECKS_IN_FLIGHT {
                return Err(Refused::Busy);
            }
            if map.len() >= WEB_CHECKS_IN_FLIGHT + FAILURES_KEPT {
                map.retain(|_, p| matches!(p, Progress::Running(_)));
            }
            map.insert(key.clone(), Progress::Running(Instant::now()));
        }
        let checks = self.clone();
        tokio::spawn(async move {
            // The check runs in a task of its own, so even a panic in it
            // ends the page's "checking…" with a message.
            let check = tokio::spawn(async move {
                let _ticket = ticket;
                engine.check_now(&domain).await
            });
            let failure = match check.await {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => {
                    tracing::warn!(domain = %key, error = %e, "web check failed");
                    Some(match e.kind() {
                        ErrorKind::Shutdown => {
                            "CertWatch is shutting down; try again in a minute.".to_owned()
                        }
                        _ => format!("Sorry, that check failed on our side: {e}"),
                    })
                }
                Err(e) => Some(format!("Sorry, that check failed on our side: {e}")),
            };
            let mut map = checks.map.lock().expect("checks lock");
            match failure {
                None => map.remove(&key),
                Some(text) => map.insert(key, Progress::Failed(text, Instant::now())),
            };
        });
        Ok(())
    }
}
