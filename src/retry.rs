//! One backoff for every retrying caller: the watch loop (relists and reconnects), OTLP exports and webhook
//! POSTs. Exponential with full jitter: each wait is uniform in `[0, ceiling]`, the ceiling doubling from `base`
//! to `max`, so agents that failed together (a collector restart, an API server roll) spread their retries
//! instead of returning in waves. A server's own `Retry-After` is honoured up to `max`.
//!
//! It only computes waits; callers sleep (so they can also watch for shutdown) and decide what is retryable.

use std::time::Duration;

/// The wait before each retry of one operation; [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub const fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max,
            attempt: 0,
        }
    }

    /// The longest wait it ever returns.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The next wait: uniform in `[0, min(base × 2^attempt, max)]`.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        ceiling.mul_f64(fastrand::f64())
    }

    /// The next wait, or what the server asked for (`Retry-After`) when it did, capped at `max`.
    pub fn next_delay_or(&mut self, server: Option<Duration>) -> Duration {
        match server {
            Some(asked) => {
                self.attempt = self.attempt.saturating_add(1);
                asked.min(self.max)
            }
            None => self.next_delay(),
        }
    }

    /// Start again from `base` (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_stay_under_a_doubling_ceiling_capped_at_max() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let ceilings = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0];
        for (i, ceiling) in ceilings.iter().enumerate() {
            let d = b.next_delay().as_secs_f64();
            assert!(d <= *ceiling, "attempt {i}: {d} > {ceiling}");
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(500));
    }

    #[test]
    fn the_jitter_spreads_waits_over_the_whole_range() {
        let mut seen_low = false;
        let mut seen_high = false;
        for _ in 0..200 {
            let mut b = Backoff::new(Duration::from_secs(10), Duration::from_secs(10));
            let d = b.next_delay().as_secs_f64();
            seen_low |= d < 2.0;
            seen_high |= d > 8.0;
        }
        assert!(seen_low && seen_high, "full jitter covers [0, ceiling]");
    }

    #[test]
    fn a_servers_retry_after_is_honoured_up_to_max() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        assert_eq!(
            b.next_delay_or(Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        assert_eq!(
            b.next_delay_or(Some(Duration::from_secs(3600))),
            Duration::from_secs(30)
        );
        assert!(b.next_delay_or(None) <= Duration::from_secs(2));
    }
}
