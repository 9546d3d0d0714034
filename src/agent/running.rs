//! The running agent's supervised tasks ([`crate::tasks`]) and how they stop: sources first, then the
//! pipeline drains the ingest ring, then the sinks drain theirs and flush, all within the deadline, naming
//! the queues still draining when it passes; last the HTTP server and the housekeeping.
//!
//! Nothing here builds or starts a task; it only holds and stops what wiring and the mode started.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::ring::Ring;
use crate::sink::Shared;
use crate::tasks::Task;

/// Every task the agent stops at shutdown, in the order it stops them.
pub(super) struct Running {
    /// Stop when the sources' token is cancelled (before [`Running::stop`]).
    pub sources: Vec<Task>,
    pub ingest: Arc<Ring<Shared>>,
    pub pipeline: Task,
    /// Each sink's task with its ring.
    pub sinks: Vec<(Task, Arc<Ring<Shared>>)>,
    pub server: Task,
    pub stop_server: CancellationToken,
    /// Upkeep, drop reports, reloads, herald's own Events: stopped with the server, never waited for.
    pub housekeeping: Vec<Task>,
}

impl Running {
    /// Drain within `deadline` (the sources were asked to stop), then stop everything.
    pub async fn stop(mut self, deadline: Duration) {
        if tokio::time::timeout(deadline, self.drain()).await.is_err() {
            tracing::warn!(
                still_draining = %self.still_draining(),
                "shutdown deadline passed before every queue drained; what they hold is dropped"
            );
        } else {
            tracing::info!("drained");
        }
        // Whatever did not finish by the deadline stops here (a sink blocked on its output, a source).
        for t in self
            .sources
            .iter()
            .chain([&self.pipeline])
            .chain(self.sinks.iter().map(|(t, _)| t))
        {
            t.abort();
        }
        self.stop_server.cancel();
        for t in &self.housekeeping {
            t.abort();
        }
        // The server closes its listener at once; a connection that lingers is not waited for long.
        if tokio::time::timeout(Duration::from_secs(1), self.server.join())
            .await
            .is_err()
        {
            self.server.abort();
        }
    }

    async fn drain(&mut self) {
        for s in self.sources.iter_mut() {
            s.join().await;
        }
        self.ingest.close();
        self.pipeline.join().await;
        // The pipeline closes them when it ends; if it died, this lets the sinks drain and end.
        for (_, ring) in self.sinks.iter() {
            ring.close();
        }
        for (s, _) in self.sinks.iter_mut() {
            s.join().await;
        }
    }

    /// What had not drained when the shutdown deadline passed: the sources still running, the ingest queue
    /// (with the pipeline), and each sink's queue whose task had not finished, with the records they hold.
    fn still_draining(&self) -> String {
        let mut parts = Vec::new();
        let running: Vec<&str> = self
            .sources
            .iter()
            .filter(|t| !t.is_finished())
            .map(|t| t.name.as_str())
            .collect();
        if !running.is_empty() {
            parts.push(format!("sources still stopping ({})", running.join(", ")));
        }
        if !self.pipeline.is_finished() {
            parts.push(format!("queue ingest ({} records)", self.ingest.len()));
        }
        for (task, ring) in &self.sinks {
            if !task.is_finished() {
                parts.push(format!(
                    "queue {} ({} records waiting, its sink still busy)",
                    ring.name(),
                    ring.len()
                ));
            }
        }
        if parts.is_empty() {
            "nothing".into()
        } else {
            parts.join(", ")
        }
    }
}
