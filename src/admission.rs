//! Who may be served now: the queue of chat checks, bounded per JID and in
//! all, so that slow checks asked for by a few users cannot take the place
//! of everyone else's commands.
//!
//! A check holds a [`Ticket`] from the moment it is accepted until its reply
//! is written (waiting for a check slot included); nothing else is held while
//! it waits, so `help`, `status` and `list` are answered meanwhile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Chat checks one JID may have waiting or running at once.
pub const CHECKS_QUEUED_PER_JID: usize = 3;
/// Chat checks waiting or running at once, over all JIDs.
pub const CHECKS_QUEUED: usize = 32;

/// Why a check was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueFull {
    /// This JID already has [`CHECKS_QUEUED_PER_JID`] checks waiting or running.
    Mine,
    /// [`CHECKS_QUEUED`] checks are waiting or running in all.
    Everyone,
}

impl QueueFull {
    /// The one line the user reads: the bound, and what to do.
    pub fn user_text(self) -> String {
        match self {
            QueueFull::Mine => format!(
                "You already have {CHECKS_QUEUED_PER_JID} checks waiting or running, the most one account may; this one was not started. Wait for their results, then ask again."
            ),
            QueueFull::Everyone => format!(
                "CertWatch is running as many checks as it takes at once ({CHECKS_QUEUED}, for all users); this one was not started. Try again in a few minutes, or send \"status DOMAIN\" for the last result."
            ),
        }
    }
}

/// The chat checks waiting or running, per bare JID.
#[derive(Clone, Default)]
pub struct CheckQueue {
    inner: Arc<Mutex<Counts>>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_jid: HashMap<String, usize>,
}

impl CheckQueue {
    /// Takes a place for one check of `jid`, or says which bound is reached.
    pub fn enter(&self, jid: &str) -> Result<Ticket, QueueFull> {
        let mut c = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mine = c.per_jid.get(jid).copied().unwrap_or(0);
        if mine >= CHECKS_QUEUED_PER_JID {
            return Err(QueueFull::Mine);
        }
        if c.total >= CHECKS_QUEUED {
            return Err(QueueFull::Everyone);
        }
        c.total += 1;
        *c.per_jid.entry(jid.to_owned()).or_default() += 1;
        Ok(Ticket {
            queue: self.inner.clone(),
            jid: jid.to_owned(),
        })
    }

    /// Checks waiting or running, in all.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).total
    }

    /// Whether no check is waiting or running.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One check's place in the queue, given back when dropped (also when the
/// task holding it ends early or panics).
pub struct Ticket {
    queue: Arc<Mutex<Counts>>,
    jid: String,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut c = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_jid.get_mut(&self.jid) {
            *n -= 1;
            if *n == 0 {
                // Bounded by CHECKS_QUEUED entries: no JID is kept once idle.
                c.per_jid.remove(&self.jid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_per_jid_and_in_all_and_given_back_on_drop() {
        let q = CheckQueue::default();
        let mine: Vec<Ticket> = (0..CHECKS_QUEUED_PER_JID)
            .map(|_| q.enter("a@x").unwrap())
            .collect();
        assert_eq!(q.enter("a@x").err(), Some(QueueFull::Mine));
        // Another JID is not affected by a@x's bound.
        let other = q.enter("b@x").unwrap();
        drop(mine);
        assert!(q.enter("a@x").is_ok(), "places are given back");
        drop(other);
        assert!(q.is_empty());
        let mut all = Vec::new();
        for i in 0.. {
            match q.enter(&format!("u{i}@x")) {
                Ok(t) => all.push(t),
                Err(e) => {
                    assert_eq!(e, QueueFull::Everyone);
                    break;
                }
            }
        }
        assert_eq!(all.len(), CHECKS_QUEUED);
        assert_eq!(q.enter("fresh@x").err(), Some(QueueFull::Everyone));
        drop(all);
        assert!(q.is_empty());
        assert!(
            q.inner.lock().unwrap().per_jid.is_empty(),
            "idle JIDs forgotten"
        );
    }

    #[test]
    fn the_user_is_told_the_bound_and_what_to_do() {
        let mine = QueueFull::Mine.user_text();
        assert!(mine.contains(&CHECKS_QUEUED_PER_JID.to_string()), "{mine}");
        assert!(mine.contains("Wait for their results"), "{mine}");
        let all = QueueFull::Everyone.user_text();
        assert!(all.contains(&CHECKS_QUEUED.to_string()), "{all}");
        assert!(all.contains("status DOMAIN"), "{all}");
        assert!(!mine.contains('\n') && !all.contains('\n'), "one line each");
    }
}
