//! Child processes as tests and harnesses run them: a free loopback port to give one, a wait for it (or
//! anything else) to be ready that names what it waited for, a wait on a value that goes on while the value
//! still moves ([`Progress`]), and a guard that kills it when dropped so a failing test or run never
//! leaves one behind. What to start and what "ready" means is the caller's.

use std::net::{SocketAddr, TcpListener};
use std::ops::{Deref, DerefMut};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(20);

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The condition did not hold in time.
    #[error("timed out after {limit:?} waiting for {what}")]
    TimedOut { limit: Duration, what: String },
    /// The condition did not hold in time; `last` says how far it got.
    #[error("still not there after {limit:?}: {last}")]
    NotYet { limit: Duration, last: String },
    /// No loopback port could be bound.
    #[error("no free loopback port: {0}")]
    NoPort(#[source] std::io::Error),
    /// What a [`Progress`] followed stood still, short of what was waited for.
    #[error("stopped at {last}, unchanged for {stalled:?}")]
    Stalled { stalled: Duration, last: String },
    /// What a [`Progress`] followed still moved, but the wait's ceiling passed.
    #[error("still moving at {last} after {ceiling:?}")]
    Ceiling { ceiling: Duration, last: String },
}

/// A free loopback port (bound and released: another process may take it first, which is rare enough here).
pub fn free_addr() -> Result<SocketAddr, Error> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(Error::NoPort)
}

/// Call `f` until it gives a value, for at most `limit`; `what` names it in the error.
pub fn wait_for<T>(
    limit: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T, Error> {
    let until = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if Instant::now() > until {
            return Err(Error::TimedOut {
                limit,
                what: what.to_string(),
            });
        }
        std::thread::sleep(POLL);
    }
}

/// The async form of [`wait_for`] (it sleeps on the runtime, not the thread): `f` gives the value, or what
/// it sees instead, which the error repeats.
pub async fn eventually<T>(
    limit: Duration,
    mut f: impl FnMut() -> Result<T, String>,
) -> Result<T, Error> {
    let until = tokio::time::Instant::now() + limit;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(last) if tokio::time::Instant::now() > until => {
                return Err(Error::NotYet { limit, last });
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// A wait that follows progress instead of a clock guessed for a quiet machine: it is worth going on while
/// the value waited on still changes (a loaded machine makes herald slower, not wrong), and not once the
/// value has stood still for `stalled` (what is missing is not coming, or it went past and stays there) or
/// `ceiling` has passed in all. A wrong count therefore still fails, after `stalled`; a slow one passes.
/// The caller reads the value, sleeps its own way (thread or runtime) and asks [`Progress::observe`].
#[derive(Debug)]
pub struct Progress<V> {
    stalled: Duration,
    ceiling: Duration,
    start: Instant,
    changed: Instant,
    last: Option<V>,
}

impl<V: PartialEq + std::fmt::Display> Progress<V> {
    pub fn new(stalled: Duration, ceiling: Duration) -> Progress<V> {
        let now = Instant::now();
        Progress {
            stalled,
            ceiling,
            start: now,
            changed: now,
            last: None,
        }
    }

    /// Take the value seen now (one that has not arrived yet): an error once waiting longer is pointless.
    pub fn observe(&mut self, value: V) -> Result<(), Error> {
        if self.changed.elapsed() >= self.stalled && self.last.as_ref() == Some(&value) {
            return Err(Error::Stalled {
                stalled: self.stalled,
                last: value.to_string(),
            });
        }
        if self.start.elapsed() >= self.ceiling {
            return Err(Error::Ceiling {
                ceiling: self.ceiling,
                last: value.to_string(),
            });
        }
        if self.last.as_ref() != Some(&value) {
            self.last = Some(value);
            self.changed = Instant::now();
        }
        Ok(())
    }
}

/// A child process killed (and reaped) when dropped; it derefs to the [`Child`].
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl Deref for ChildGuard {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl ChildGuard {
    /// Send the signal `name` (`TERM`, `HUP`, ...) with kill(1): the way an operator or the kubelet does.
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.0.id().to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(sent, "kill -{name} {} failed", self.0.id());
    }

    /// The exit status, if the child exits within `limit`.
    pub fn exited_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_for(limit, "the exit", || self.0.try_wait().unwrap()).ok()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_then_says_what_for() {
        let mut n = 0;
        assert_eq!(
            wait_for(Duration::from_secs(5), "three", || {
                n += 1;
                (n == 3).then_some(n)
            })
            .unwrap(),
            3
        );
        let e = wait_for(Duration::from_millis(50), "never", || None::<()>).unwrap_err();
        assert_eq!(e.to_string(), "timed out after 50ms waiting for never");
    }

    #[tokio::test]
    async fn eventually_repeats_what_it_saw_last() {
        let mut n = 0;
        let e = eventually(Duration::from_millis(100), || {
            n += 1;
            Err::<(), _>(format!("{n} so far"))
        })
        .await
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("still not there after 100ms: {n} so far")
        );
        assert!(n > 2);
    }

    #[test]
    fn signals_and_exits() {
        let mut child = ChildGuard(Command::new("sleep").arg("30").spawn().unwrap());
        assert_eq!(child.exited_within(Duration::from_millis(50)), None);
        child.signal("TERM");
        let status = child.exited_within(Duration::from_secs(5)).unwrap();
        assert!(!status.success());
    }

    #[test]
    fn a_dropped_guard_kills_its_child() {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        drop(ChildGuard(child));
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
}

#[cfg(test)]
mod progress_tests {
    use super::*;
    use std::cell::Cell;

    const STALLED: Duration = Duration::from_millis(400);
    const CEILING: Duration = Duration::from_secs(3);

    /// Follow `read` as the callers do until it gives `want`.
    fn wait(want: f64, ceiling: Duration, mut read: impl FnMut() -> f64) -> Result<f64, Error> {
        let mut progress = Progress::new(STALLED, ceiling);
        loop {
            let now = read();
            if now == want {
                return Ok(now);
            }
            progress.observe(now)?;
            std::thread::sleep(POLL);
        }
    }

    /// A count that moves one step every 150 ms reaches its goal long after the stall window would have run
    /// out in all: a slow count passes.
    #[test]
    fn a_slow_count_that_keeps_moving_is_waited_for() {
        let t0 = Instant::now();
        let read = || (t0.elapsed().as_millis() / 150) as f64;
        assert_eq!(wait(8.0, CEILING, read).unwrap(), 8.0);
        assert!(t0.elapsed() > STALLED * 2);
    }

    /// A count that stops short fails once it has stood still for the stall window, not at the ceiling.
    #[test]
    fn a_count_that_stops_short_fails_after_the_stall_window() {
        let t0 = Instant::now();
        let read = || (t0.elapsed().as_millis() / 100).min(3) as f64;
        let e = wait(10.0, CEILING, read).unwrap_err();
        assert_eq!(e.to_string(), "stopped at 3, unchanged for 400ms");
        assert!(t0.elapsed() < CEILING, "{:?}", t0.elapsed());
    }

    /// A count past its goal (a double count) stays there and fails the same way.
    #[test]
    fn a_count_past_its_goal_fails() {
        let e = wait(5.0, CEILING, || 6.0).unwrap_err();
        assert!(
            matches!(&e, Error::Stalled { last, .. } if last == "6"),
            "{e}"
        );
    }

    /// A count that moves for ever without arriving fails at the ceiling.
    #[test]
    fn a_count_that_never_arrives_fails_at_the_ceiling() {
        let n = Cell::new(0.0);
        let read = || {
            n.set(n.get() + 1.0);
            n.get()
        };
        let e = wait(-1.0, Duration::from_secs(1), read).unwrap_err();
        assert!(matches!(e, Error::Ceiling { .. }), "{e}");
    }
}
