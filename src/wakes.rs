//! Fewer wake-ups of the runtime thread while a watch trickles.
//!
//! An API server writes each watch event in an HTTP chunk of its own, so at a steady 10k Events/s the
//! runtime thread was woken from `epoll_wait` about 10k times a second, each time to read, decode and fan out
//! a single Event with cold caches; per Event that cost several times what a burst costs (BENCHMARKS.md,
//! "Coalesced wake-ups"). Here, when a watch had to wait for its last line (the thread went idle), and the
//! thread wakes again within [`INTERVAL`] of its last wake-up after short work, it first sleeps until
//! [`INTERVAL`] after that wake-up: whatever arrived meanwhile (lines, timers, requests) is then handled in
//! one go. A burst (the next line always at hand), a list page (no watch waiting) and a wake-up after a
//! quiet spell are never held, so the most an Event, a probe or a scrape waits for this is [`INTERVAL`]. The
//! time herald measures as processing starts after the read, so the hold shows in no histogram; it is the
//! price of the lower CPU.
//!
//! The state is the process's: herald runs every task on one runtime thread, and only that runtime has the
//! hooks.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The shortest time between two wake-ups of the runtime thread while a watch trickles and the work per
/// wake-up is short; the sinks batch over the same span ([`crate::sink::LINGER`]).
pub const INTERVAL: Duration = crate::sink::LINGER;

/// A wake-up whose work took less than this is short.
const SHORT_WORK: Duration = Duration::from_micros(INTERVAL.as_micros() as u64 / 8);

static STATE: Mutex<State> = Mutex::new(State {
    woke: None,
    parked: None,
});
/// Times the runtime thread went idle (see [`park`]).
static PARKS: AtomicU64 = AtomicU64::new(0);
/// A watch waited for its next line since the last wake-up (see [`waited_for_line`]).
static TRICKLE: AtomicBool = AtomicBool::new(false);

/// The runtime's park hook (tokio's `on_thread_park`): the thread is about to wait for I/O or a timer.
pub fn park() {
    PARKS.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut s) = STATE.lock() {
        s.parked(Instant::now());
    }
}

/// The runtime's unpark hook (tokio's `on_thread_unpark`): the thread woke up; hold it back if a watch
/// trickles and the wake-ups come too close together.
pub fn unpark() {
    let trickle = TRICKLE.swap(false, Ordering::Relaxed);
    let hold = match STATE.lock() {
        Ok(mut s) => s.woke(Instant::now(), trickle),
        Err(_) => Duration::ZERO,
    };
    if !hold.is_zero() {
        std::thread::sleep(hold);
    }
}

/// How many times the runtime thread has gone idle; a reader compares it before and after waiting.
pub fn parks() -> u64 {
    PARKS.load(Ordering::Relaxed)
}

/// A watch had to wait (the thread went idle) for its next line: the stream trickles, so the next wake-up
/// may be held. A burst, where the next line is always at hand, never calls this.
pub fn waited_for_line() {
    TRICKLE.store(true, Ordering::Relaxed);
}

#[derive(Debug, Default)]
struct State {
    /// When the thread last went back to work (after any hold).
    woke: Option<Instant>,
    /// When it last went idle.
    parked: Option<Instant>,
}

impl State {
    fn parked(&mut self, now: Instant) {
        self.parked = Some(now);
    }

    /// How long to hold the thread back after it woke at `now`; `trickle`: a watch waited for a line since
    /// the last wake-up.
    fn woke(&mut self, now: Instant, trickle: bool) -> Duration {
        let hold = match (self.woke, self.parked) {
            (Some(woke), Some(parked))
                if trickle && parked.saturating_duration_since(woke) < SHORT_WORK =>
            {
                (woke + INTERVAL).saturating_duration_since(now)
            }
            _ => Duration::ZERO,
        };
        self.woke = Some(now + hold);
        hold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    /// Wakes at `start + at`, works for `work`, parks; returns the hold.
    fn cycle(s: &mut State, start: Instant, at: Duration, work: Duration) -> Duration {
        let hold = s.woke(start + at, true);
        s.parked(start + at + hold + work);
        hold
    }

    #[test]
    fn a_trickle_is_handled_once_per_interval() {
        let start = Instant::now();
        let mut s = State::default();
        assert_eq!(
            cycle(&mut s, start, Duration::ZERO, 20 * US),
            Duration::ZERO
        );
        // The next line 100 µs later: held until one interval after the first wake-up.
        assert_eq!(
            cycle(&mut s, start, 100 * US, 300 * US),
            INTERVAL - 100 * US
        );
        // The one after the batch: held until one interval after the held wake-up.
        let at = INTERVAL + 400 * US;
        assert_eq!(cycle(&mut s, start, at, 300 * US), 2 * INTERVAL - at);
    }

    #[test]
    fn long_work_and_quiet_spells_are_never_held() {
        let start = Instant::now();
        let mut s = State::default();
        cycle(&mut s, start, Duration::ZERO, 2_500 * US);
        assert_eq!(
            cycle(&mut s, start, 3_000 * US, 20 * US),
            Duration::ZERO,
            "after a list page's work the next page is read at once"
        );
        assert_eq!(
            cycle(&mut s, start, Duration::from_secs(1), 20 * US),
            Duration::ZERO,
            "a wake-up after a quiet spell is served at once"
        );
        assert!(
            cycle(&mut s, start, Duration::from_secs(1) + 100 * US, 20 * US) <= INTERVAL,
            "never longer than the interval"
        );
    }

    #[test]
    fn only_a_trickling_watch_holds_the_thread() {
        let start = Instant::now();
        let mut s = State::default();
        s.woke(start, false);
        s.parked(start + 20 * US);
        assert_eq!(
            s.woke(start + 100 * US, false),
            Duration::ZERO,
            "a list page's body arriving in many reads is read at once"
        );
    }
}
