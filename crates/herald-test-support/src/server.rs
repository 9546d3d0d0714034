//! A receiver's server on a task of its own: listening until stopped, where stopping drops the connections in
//! flight (the peer sees the server go down) and dropping it stops it, so a test that fails never leaves one
//! serving. What it serves is the caller's ([`crate::serve`] or tonic). Also the wait for what a receiver
//! got ([`at_least`]).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long [`Server::stop`] waits for the server's task to end.
const STOP_WITHIN: Duration = Duration::from_secs(5);

/// How long [`at_least`] waits without anything new arriving: far longer than any delivery a test expects.
const ARRIVAL_STALLED: Duration = Duration::from_secs(20);
/// The most [`at_least`] waits in all while items still arrive (a loaded machine makes herald slower, not
/// wrong: a stream that still flows is waited for).
const ARRIVAL_CEILING: Duration = Duration::from_secs(300);

pub struct Server {
    pub addr: SocketAddr,
    task: Option<JoinHandle<()>>,
    stop: CancellationToken,
}

impl Server {
    /// Listen on `addr` (port 0 for any) and run `serve` on the listener until its token is cancelled.
    pub async fn start<F>(
        addr: SocketAddr,
        serve: impl FnOnce(TcpListener, CancellationToken) -> F,
    ) -> std::io::Result<Server>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, stop.clone()));
        Ok(Server {
            addr,
            task: Some(task),
            stop,
        })
    }

    /// Stop listening; connections in flight are dropped.
    pub async fn stop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(STOP_WITHIN, t).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Wait until `received` gives at least `n` items (records, requests), and return them all. The wait follows
/// progress: it goes on while items still arrive, and panics, saying how many of `what` came, once nothing
/// new has arrived for 20 s (or after 5 min in all).
pub async fn at_least<T>(n: usize, what: &str, received: impl Fn() -> Vec<T>) -> Vec<T> {
    arrivals(n, what, received, ARRIVAL_STALLED, ARRIVAL_CEILING).await
}

async fn arrivals<T>(
    n: usize,
    what: &str,
    received: impl Fn() -> Vec<T>,
    stalled_after: Duration,
    ceiling: Duration,
) -> Vec<T> {
    let mut progress = crate::process::Progress::new(stalled_after, ceiling);
    loop {
        let got = received();
        if got.len() >= n {
            return got;
        }
        if let Err(e) = progress.observe(got.len()) {
            panic!("the receiver got {} {what}, wanted {n}: {e}", got.len());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const STALLED: Duration = Duration::from_millis(300);

    /// Items that keep arriving, one every 100 ms, are waited for well past the stall window.
    #[tokio::test]
    async fn a_slow_stream_is_waited_for() {
        let t0 = Instant::now();
        let got = arrivals(
            10,
            "records",
            || vec![(); (t0.elapsed().as_millis() / 100) as usize],
            STALLED,
            Duration::from_secs(5),
        )
        .await;
        assert!(got.len() >= 10 && t0.elapsed() > STALLED * 2);
    }

    /// A stream that stops short fails after the stall window, saying how many came.
    #[tokio::test]
    #[should_panic(
        expected = "the receiver got 3 records, wanted 10: stopped at 3, unchanged for 300ms"
    )]
    async fn a_stream_that_stops_short_fails() {
        let t0 = Instant::now();
        let received = || vec![(); (t0.elapsed().as_millis() / 50).min(3) as usize];
        arrivals(10, "records", received, STALLED, Duration::from_secs(5)).await;
    }
}
