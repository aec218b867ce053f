//! The process's own watchdog: a plain thread, outside the async runtime,
//! that ends `serve` when it can no longer make progress, so a supervisor
//! (systemd's `Restart=on-failure`) starts it again instead of leaving a
//! silent monitor running.
//!
//! It ends the process (exit 70) when
//! - writes wait and the store's owner thread has not moved for
//!   `store.watchdog` (a wedged disk, a sled deadlock);
//! - the runtime has not ticked for `store.watchdog` (every worker stuck);
//! - SIGTERM or SIGINT came and the process is still running
//!   [`SHUTDOWN_GRACE`] later.
//!
//! Before a stall exit it logs what it was waiting on and queues the
//! operators an alert through the engine's in-memory queue, giving the XMPP
//! front [`TELL_GRACE`] to send it (it cannot when the runtime is what is
//! stuck).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::engine::Engine;
use crate::store::{IdleWatch, Progress};

/// Exit status when the watchdog ends the process (sysexits EX_SOFTWARE).
pub const EXIT_STALLED: i32 = 70;
/// How long after SIGTERM or SIGINT the process may take to stop.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long the front gets to send the operators' alert before the exit.
pub const TELL_GRACE: Duration = Duration::from_secs(3);
/// How often the watchdog looks.
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// What the watchdog found stuck.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stall {
    /// The store's owner thread.
    Store {
        /// What it was doing.
        doing: &'static str,
        /// For how long.
        for_secs: u64,
        /// Writes waiting for it.
        waiting: usize,
    },
    /// The async runtime: its heartbeat stopped.
    Runtime {
        /// Seconds since the last beat.
        for_secs: u64,
    },
}

impl std::fmt::Display for Stall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stall::Store {
                doing,
                for_secs,
                waiting,
            } => write!(
                f,
                "the store has made no progress for {for_secs} s ({doing}; {waiting} writes waiting)"
            ),
            Stall::Runtime { for_secs } => {
                write!(f, "the async runtime has not run for {for_secs} s")
            }
        }
    }
}

/// The runtime's heartbeat: a task bumps it, the watchdog reads it.
#[derive(Debug)]
pub struct Heartbeat {
    started: Instant,
    last_ms: AtomicU64,
}

impl Heartbeat {
    fn new() -> Heartbeat {
        Heartbeat {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn beat(&self) {
        self.last_ms.store(self.now_ms(), Ordering::SeqCst);
    }

    fn age(&self) -> Duration {
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.last_ms.load(Ordering::SeqCst)),
        )
    }
}

/// What is stuck, if anything, given the store's progress and the
/// runtime's heartbeat age.
pub fn stall(
    progress: &Progress,
    idle: &mut IdleWatch,
    heartbeat_age: Duration,
    limit: Duration,
) -> Option<Stall> {
    let snap = progress.snapshot();
    if snap.stalled(limit) {
        return Some(Stall::Store {
            doing: snap.phase.words(),
            for_secs: snap.phase_for.as_secs(),
            waiting: snap.waiting,
        });
    }
    if let Some(waited) = idle.look(&snap, std::time::Instant::now()) {
        if waited >= limit {
            return Some(Stall::Store {
                doing: snap.phase.words(),
                for_secs: waited.as_secs(),
                waiting: snap.waiting,
            });
        }
    }
    (heartbeat_age >= limit).then_some(Stall::Runtime {
        for_secs: heartbeat_age.as_secs(),
    })
}

/// Starts the heartbeat task (on the current runtime), the signal thread
/// and the watchdog thread. Call once, from `serve`.
pub fn start(engine: Arc<Engine>) -> std::io::Result<()> {
    let limit = engine.config().store.watchdog;
    let progress = engine.store().progress();
    let heartbeat = Arc::new(Heartbeat::new());
    let beat = heartbeat.clone();
    tokio::spawn(async move {
        loop {
            beat.beat();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    // The first SIGTERM or SIGINT, in ms since the heartbeat's start + 1.
    let term_at = Arc::new(AtomicU64::new(0));
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])?;
    let (term, hb) = (term_at.clone(), heartbeat.clone());
    std::thread::Builder::new()
        .name("certwatch-signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                term.store(hb.now_ms() + 1, Ordering::SeqCst);
            }
        })?;
    std::thread::Builder::new()
        .name("certwatch-watchdog".into())
        .spawn(move || watch(&engine, &progress, &heartbeat, &term_at, limit))?;
    Ok(())
}

fn watch(
    engine: &Engine,
    progress: &Progress,
    heartbeat: &Heartbeat,
    term_at: &AtomicU64,
    limit: Duration,
) {
    let mut idle = IdleWatch::default();
    loop {
        std::thread::sleep(LOOK_EVERY);
        let term = term_at.load(Ordering::SeqCst);
        if term != 0
            && heartbeat.now_ms().saturating_sub(term - 1)
                >= u64::try_from(SHUTDOWN_GRACE.as_millis()).unwrap_or(u64::MAX)
        {
            let why = stall(
                progress,
                &mut IdleWatch::default(),
                heartbeat.age(),
                Duration::ZERO,
            )
            .map_or_else(|| "nothing found stuck".to_owned(), |s| s.to_string());
            tracing::error!(
                "still running {} s after SIGTERM/SIGINT ({why}); exiting without a clean shutdown",
                SHUTDOWN_GRACE.as_secs()
            );
            std::process::exit(EXIT_STALLED);
        }
        if let Some(stall) = stall(progress, &mut idle, heartbeat.age(), limit) {
            tracing::error!(
                "watchdog: {stall}; exiting {EXIT_STALLED} so the supervisor restarts CertWatch"
            );
            engine.tell_operators_urgently(&format!(
                "CertWatch operator alert: {stall}, so nothing is checked or answered. CertWatch exits (status {EXIT_STALLED}) to be restarted by its supervisor; look at its log."
            ));
            std::thread::sleep(TELL_GRACE);
            std::process::exit(EXIT_STALLED);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frozen_runtime_is_a_stall_and_a_ticking_one_is_not() {
        let store = crate::store::Store::temporary().unwrap();
        let progress = store.progress();
        let limit = Duration::from_secs(30);
        let mut idle = IdleWatch::default();
        assert_eq!(
            stall(&progress, &mut idle, Duration::from_secs(1), limit),
            None
        );
        assert_eq!(
            stall(&progress, &mut idle, Duration::from_secs(31), limit),
            Some(Stall::Runtime { for_secs: 31 })
        );
        assert!(Stall::Runtime { for_secs: 31 }
            .to_string()
            .contains("has not run for 31 s"));
    }
}
