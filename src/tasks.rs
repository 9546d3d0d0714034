//! Supervision of the agent's long-running tasks: a task that panics or returns while herald still needs it
//! is logged, named in `/readyz`, and, when herald cannot run without it, stops the agent with an error so
//! the process exits non-zero and the kubelet restarts it. Without this a dead task is a silent hole: its
//! `JoinError` is dropped, its queue fills, and `/readyz` may stay green.
//!
//! A task that ends after its stop token was cancelled (shutdown, or the end of a leadership term) ended as
//! asked and is not reported. A panic is logged whenever it happens.
//!
//! Debug builds only (tests run them; release builds compile it out): `HERALD_DEBUG_PANIC_TASK=NAME@DELAY`
//! (e.g. `sink json@2s`) makes the task of that name panic after the delay, inside the task itself, so the
//! end-to-end tests can watch a real task die.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::task::{AbortHandle, JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::health::Health;

/// Whether herald can go on without a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Sources, the pipeline, the sinks, the leader election, the HTTP server: without it herald is wrong or
    /// mute. Its death fails `/readyz` and stops the agent with an error.
    Essential,
    /// Housekeeping (metric upkeep, drop reports, reloads, herald's own Kubernetes Events): its death is
    /// logged and shown in `/readyz` without failing it.
    Auxiliary,
}

/// Spawns and watches tasks; cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    health: Health,
    /// Cancelled when the tasks are asked to stop: an end after that is expected.
    stop: CancellationToken,
    /// Cancelled when an essential task died; the first one's name is kept.
    failed: CancellationToken,
    first_failure: Arc<Mutex<Option<String>>>,
}

/// A supervised task: its name, and a handle that ends when the task has ended (and been reported).
pub struct Task {
    pub name: String,
    monitor: JoinHandle<()>,
    inner: AbortHandle,
}

impl Task {
    /// Wait for the task to end.
    pub async fn join(&mut self) {
        let _ = (&mut self.monitor).await;
    }

    pub fn is_finished(&self) -> bool {
        self.monitor.is_finished()
    }

    /// Stop the task now (at shutdown, after the deadline).
    pub fn abort(&self) {
        self.inner.abort();
    }
}

impl Supervisor {
    /// Tasks end as expected once `stop` is cancelled.
    pub fn new(health: Health, stop: CancellationToken) -> Supervisor {
        Supervisor {
            health,
            stop,
            failed: CancellationToken::new(),
            first_failure: Arc::default(),
        }
    }

    /// The same supervisor for tasks that end as expected once `stop` is cancelled (a leadership term).
    pub fn until(&self, stop: CancellationToken) -> Supervisor {
        Supervisor {
            stop,
            ..self.clone()
        }
    }

    /// Spawn `task` under supervision.
    pub fn spawn<F>(&self, name: impl Into<String>, need: Need, task: F) -> Task
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let name = name.into();
        #[cfg(debug_assertions)]
        let task = debug_panic(name.clone(), task);
        self.watch(name, need, tokio::spawn(task))
    }

    /// Supervise a task spawned elsewhere.
    pub fn watch(&self, name: impl Into<String>, need: Need, handle: JoinHandle<()>) -> Task {
        let name = name.into();
        let inner = handle.abort_handle();
        let this = self.clone();
        let task_name = name.clone();
        let monitor = tokio::spawn(async move {
            let what = match handle.await {
                Ok(()) if this.stop.is_cancelled() => return,
                Ok(()) => "ended".to_string(),
                // Aborted: only the agent aborts, at shutdown.
                Err(e) if e.is_cancelled() => return,
                Err(e) => format!("panicked: {}", panic_message(e.into_panic())),
            };
            this.died(&task_name, need, what);
        });
        Task {
            name,
            monitor,
            inner,
        }
    }

    fn died(&self, name: &str, need: Need, what: String) {
        if self.stop.is_cancelled() {
            tracing::error!(task = name, "{what} while stopping");
            return;
        }
        match need {
            Need::Essential => {
                tracing::error!(
                    task = name,
                    "{what}: herald cannot run without it and stops, to be restarted"
                );
                let mut first = self.first_failure.lock().unwrap_or_else(|p| p.into_inner());
                first.get_or_insert_with(|| format!("{name} {what}"));
                self.failed.cancel();
            }
            Need::Auxiliary => tracing::error!(task = name, "{what}; herald goes on without it"),
        }
        self.health.task_died(name, what, need == Need::Essential);
    }

    /// Resolves when an essential task has died, with its name and what happened.
    pub async fn failed(&self) -> String {
        self.failed.cancelled().await;
        self.first_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default()
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(s) => (*s).to_string(),
            Err(_) => "(no message)".to_string(),
        },
    }
}

/// `HERALD_DEBUG_PANIC_TASK=NAME@DELAY`: the task `NAME` panics after `DELAY` (debug builds only).
#[cfg(debug_assertions)]
fn debug_panic<F>(name: String, task: F) -> impl Future<Output = ()> + Send + 'static
where
    F: Future<Output = ()> + Send + 'static,
{
    let after = std::env::var("HERALD_DEBUG_PANIC_TASK").ok().and_then(|v| {
        let (task, delay) = v.rsplit_once('@')?;
        (task == name).then(|| humantime::parse_duration(delay).ok())?
    });
    async move {
        let Some(after) = after else {
            return task.await;
        };
        tokio::select! {
            _ = task => {}
            _ = tokio::time::sleep(after) => panic!("{name}: panic asked for by HERALD_DEBUG_PANIC_TASK"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_essential_task_that_ends_early_fails_readiness_and_the_agent() {
        let health = Health::default();
        health.beat();
        let stop = CancellationToken::new();
        let sup = Supervisor::new(health.clone(), stop.clone());
        let mut quiet = sup.spawn("upkeep", Need::Auxiliary, std::future::pending());
        let mut t = sup.spawn("sink json", Need::Essential, async {});
        t.join().await;
        assert_eq!(sup.failed().await, "sink json ended");
        let (ready, report) = health.ready();
        assert!(!ready);
        assert!(report.contains("task sink json: ended"), "{report}");
        assert!(!quiet.is_finished());
        quiet.abort();
        quiet.join().await;
        assert!(!health.ready().1.contains("upkeep"));
    }

    #[tokio::test]
    async fn a_panic_is_named_and_an_end_after_stop_is_not() {
        let health = Health::default();
        health.beat();
        let stop = CancellationToken::new();
        let sup = Supervisor::new(health.clone(), stop.clone());
        let mut p = sup.spawn("pipeline", Need::Essential, async { panic!("boom") });
        p.join().await;
        assert!(health.ready().1.contains("task pipeline: panicked: boom"));

        let health = Health::default();
        health.beat();
        let sup = Supervisor::new(health.clone(), stop.clone());
        let term = CancellationToken::new();
        let stopping = term.clone();
        let mut w = sup
            .until(term.clone())
            .spawn("source events", Need::Essential, async move {
                stopping.cancelled().await
            });
        term.cancel();
        w.join().await;
        assert!(health.ready().0, "{}", health.ready().1);
    }
}
