//! Child processes as tests and harnesses run them: a free loopback port to give one, a wait for it (or
//! anything else) to be ready that names what it waited for, and a guard that kills it when dropped so a failing test or run never
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
