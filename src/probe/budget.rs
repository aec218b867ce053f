//! The circuit budget: how fast probes may ask Tor for fresh circuits.
//!
//! Every Tor probe uses a fresh isolation group, so a fresh circuit, and every
//! circuit is one CREATE at our guard. Relays defend themselves against
//! clients that create circuits too fast (tor's `DoSCircuitCreationRate`,
//! 3 per second with a burst of 90 per client address by default), so the
//! budget is a token bucket kept below that: a generic cell-rate algorithm
//! (the bucket as one "theoretical arrival time"), on tokio's clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

pub use crate::config::{CIRCUITS_PER_SECOND, CIRCUIT_BURST};

/// A token bucket for fresh circuits, shared by every probe of the service.
#[derive(Debug)]
pub struct CircuitBudget {
    /// Time between two tokens.
    every: Duration,
    /// How far ahead of the steady rate a burst may run.
    tolerance: Duration,
    /// When the bucket would be empty again if no one asked in between.
    tat: Mutex<Option<Instant>>,
    taken: AtomicU64,
}

impl CircuitBudget {
    /// `per_second` tokens a second, at most `burst` at once (both at least
    /// a sliver above zero; the config check rejects absurd values).
    pub fn new(per_second: f64, burst: u32) -> CircuitBudget {
        let per_second = if per_second.is_finite() && per_second > 0.0 {
            per_second.min(1_000_000.0)
        } else {
            CIRCUITS_PER_SECOND
        };
        let every = Duration::from_secs_f64(1.0 / per_second);
        CircuitBudget {
            every,
            tolerance: every * burst.max(1).saturating_sub(1),
            tat: Mutex::new(None),
            taken: AtomicU64::new(0),
        }
    }

    /// Takes the next token if it comes by `deadline`: when the circuit may
    /// be asked for. None (nothing taken) when it would come later.
    pub fn reserve(&self, deadline: Instant) -> Option<Instant> {
        let now = Instant::now();
        let mut tat = self.tat.lock().expect("budget lock");
        let base = tat.map_or(now, |t| t.max(now));
        let at = base.checked_sub(self.tolerance).unwrap_or(now).max(now);
        if at > deadline {
            return None;
        }
        *tat = Some(base + self.every);
        self.taken.fetch_add(1, Ordering::Relaxed);
        Some(at)
    }

    /// Tokens taken so far (fresh circuits asked for).
    pub fn taken(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_steady_rate_and_nothing_past_the_deadline() {
        let b = CircuitBudget::new(3.0, 5);
        let t0 = Instant::now();
        let far = t0 + Duration::from_secs(3600);
        for _ in 0..5 {
            assert_eq!(b.reserve(far), Some(t0), "the burst goes at once");
        }
        let next: Vec<Instant> = (0..3).map(|_| b.reserve(far).unwrap()).collect();
        let third = Duration::from_secs(1) / 3;
        assert_eq!(next, vec![t0 + third, t0 + third * 2, t0 + third * 3]);
        // A token after the deadline is not taken: the next caller gets the same slot.
        assert_eq!(b.reserve(t0 + third), None);
        assert_eq!(b.reserve(far), Some(t0 + third * 4));
        assert_eq!(b.taken(), 9);
        // After a quiet time the burst is back, but no more than it.
        tokio::time::advance(Duration::from_secs(60)).await;
        let now = Instant::now();
        let free = (0..10).filter(|_| b.reserve(far) == Some(now)).count();
        assert_eq!(free, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn over_a_minute_no_more_than_rate_times_time_plus_burst() {
        let b = CircuitBudget::new(CIRCUITS_PER_SECOND, CIRCUIT_BURST);
        let t0 = Instant::now();
        let minute = t0 + Duration::from_secs(60);
        let mut granted = 0;
        while b.reserve(minute).is_some() {
            granted += 1;
        }
        let most = (CIRCUITS_PER_SECOND * 60.0) as u32 + CIRCUIT_BURST;
        assert_eq!(granted, most, "{granted}");
    }

    #[test]
    fn absurd_rates_fall_back_to_the_default() {
        let b = CircuitBudget::new(f64::NAN, 0);
        assert_eq!(b.every, Duration::from_secs_f64(1.0 / CIRCUITS_PER_SECOND));
        assert_eq!(b.tolerance, Duration::ZERO);
    }
}
