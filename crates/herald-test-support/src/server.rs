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

/// How long [`at_least`] waits: far longer than any delivery a test expects.
const ARRIVAL_WITHIN: Duration = Duration::from_secs(20);

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

/// Wait until `received` gives at least `n` items (records, requests), and return them all; panic, saying how
/// many of `what` came, when they do not within 20 s.
pub async fn at_least<T>(n: usize, what: &str, received: impl Fn() -> Vec<T>) -> Vec<T> {
    crate::process::eventually(ARRIVAL_WITHIN, || {
        let got = received();
        if got.len() >= n {
            Ok(got)
        } else {
            Err(format!("the receiver got {} {what}, wanted {n}", got.len()))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}
