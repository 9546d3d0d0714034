//! Liveness and readiness, as state the loops update and the HTTP server reads.
//!
//! Live (`/healthz`): the pipeline worker's heartbeat is recent, i.e. the process is not wedged.
//! Ready (`/readyz`): every source finished its initial list and has a watch open, every sink accepts
//! records, and no source, pipeline or sink task has died (see [`crate::tasks`]). Each check reports its own
//! line, so the probe output says what is not ready.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Shared by every component; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    sources: Mutex<Vec<Arc<SourceHealth>>>,
    sinks: Mutex<Vec<Arc<SinkHealth>>>,
    /// `single`, `sidecar`, `leader` or `follower`, reported first by `/readyz`.
    role: Mutex<&'static str>,
    /// Informational lines (e.g. "kubevirt: not installed") that do not affect readiness.
    notes: Mutex<std::collections::BTreeMap<&'static str, String>>,
    /// Tasks that ended while herald still needed them: name → (what happened, whether it costs readiness).
    /// Bounded by the number of tasks the agent runs.
    dead_tasks: Mutex<std::collections::BTreeMap<String, (String, bool)>>,
    /// Milliseconds since `epoch` of the pipeline worker's last loop; 0 = never.
    heartbeat_ms: AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
    sink_observer: SinkObserver,
}

/// Called with a sink's name and its new state each time a sink starts or stops accepting records.
pub type SinkCallback = Arc<dyn Fn(&'static str, bool) + Send + Sync>;

/// The one [`SinkCallback`], set once, shared by every [`SinkHealth`].
#[derive(Clone, Default)]
struct SinkObserver(Arc<OnceLock<SinkCallback>>);

impl std::fmt::Debug for SinkObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "SinkObserver(set)"
        } else {
            "SinkObserver(unset)"
        })
    }
}

/// One watch (per resource and namespace).
#[derive(Debug)]
pub struct SourceHealth {
    pub name: String,
    listed: AtomicBool,
    watching: AtomicBool,
}

impl SourceHealth {
    pub fn set_listed(&self, v: bool) {
        self.listed.store(v, Ordering::Relaxed);
    }
    pub fn set_watching(&self, v: bool) {
        self.watching.store(v, Ordering::Relaxed);
    }
    pub fn listed(&self) -> bool {
        self.listed.load(Ordering::Relaxed)
    }
    pub fn watching(&self) -> bool {
        self.watching.load(Ordering::Relaxed)
    }
}

/// One sink.
#[derive(Debug)]
pub struct SinkHealth {
    pub name: &'static str,
    accepting: AtomicBool,
    observer: SinkObserver,
}

impl SinkHealth {
    /// Set the state; a change is reported to the observer ([`Health::observe_sinks`]).
    pub fn set_accepting(&self, v: bool) {
        if self.accepting.swap(v, Ordering::Relaxed) != v
            && let Some(callback) = self.observer.0.get()
        {
            callback(self.name, v);
        }
    }
    pub fn accepting(&self) -> bool {
        self.accepting.load(Ordering::Relaxed)
    }
}

/// How stale the heartbeat may be before the process counts as not live.
const HEARTBEAT_LIMIT: Duration = Duration::from_secs(15);

impl Health {
    pub fn source(&self, name: String) -> Arc<SourceHealth> {
        let s = Arc::new(SourceHealth {
            name,
            listed: AtomicBool::new(false),
            watching: AtomicBool::new(false),
        });
        lock(&self.inner.sources).push(s.clone());
        s
    }

    pub fn sink(&self, name: &'static str) -> Arc<SinkHealth> {
        let s = Arc::new(SinkHealth {
            name,
            accepting: AtomicBool::new(true),
            observer: self.inner.sink_observer.clone(),
        });
        lock(&self.inner.sinks).push(s.clone());
        s
    }

    /// A line for `/readyz` that does not change readiness.
    pub fn set_note(&self, name: &'static str, note: String) {
        lock(&self.inner.notes).insert(name, note);
    }

    /// Be told whenever a sink starts or stops accepting records (set once; later calls are ignored).
    /// The callback runs on the sink's task and must not block.
    pub fn observe_sinks(&self, callback: SinkCallback) {
        let _ = self.inner.sink_observer.0.set(callback);
    }

    /// A task ended before shutdown (`what`: "ended", "panicked: ..."); with `costs_readiness`, `/readyz`
    /// fails from now on, else the line is informational.
    pub fn task_died(&self, name: &str, what: String, costs_readiness: bool) {
        lock(&self.inner.dead_tasks).insert(name.to_string(), (what, costs_readiness));
    }

    pub fn set_role(&self, role: &'static str) {
        *lock(&self.inner.role) = role;
    }

    fn epoch(&self) -> Instant {
        *self.inner.epoch.get_or_init(Instant::now)
    }

    /// Called by the pipeline worker on every loop (at least once a second).
    pub fn beat(&self) {
        let ms = self.epoch().elapsed().as_millis() as u64 + 1;
        self.inner.heartbeat_ms.store(ms, Ordering::Relaxed);
    }

    /// `(live, report)`.
    pub fn live(&self) -> (bool, String) {
        let beat = self.inner.heartbeat_ms.load(Ordering::Relaxed);
        if beat == 0 {
            return (false, "pipeline: not started\n".into());
        }
        let age = self
            .epoch()
            .elapsed()
            .saturating_sub(Duration::from_millis(beat - 1));
        if age > HEARTBEAT_LIMIT {
            (
                false,
                format!("pipeline: no heartbeat for {}s\n", age.as_secs()),
            )
        } else {
            (true, "pipeline: ok\n".into())
        }
    }

    /// `(ready, report)`: one line per check.
    pub fn ready(&self) -> (bool, String) {
        let (live, mut report) = self.live();
        let mut ready = live;
        let role = *lock(&self.inner.role);
        if !role.is_empty() {
            report.insert_str(0, &format!("role: {role}\n"));
        }
        let mut sources = lock(&self.inner.sources);
        // A watch whose task has ended (only this registry still holds it) no longer counts: a DaemonSet
        // follower runs none and is ready; a leader's watches of an ended term are forgotten.
        sources.retain(|s| Arc::strong_count(s) > 1);
        for s in sources.iter() {
            let state = match (s.listed(), s.watching()) {
                (false, _) => "initial list not done",
                (true, false) => "watch not open",
                (true, true) => "ok",
            };
            ready &= state == "ok";
            report.push_str(&format!("source {}: {state}\n", s.name));
        }
        for (name, note) in lock(&self.inner.notes).iter() {
            report.push_str(&format!("{name}: {note}\n"));
        }
        for s in lock(&self.inner.sinks).iter() {
            let ok = s.accepting();
            ready &= ok;
            let state = if ok { "ok" } else { "failing" };
            report.push_str(&format!("sink {}: {state}\n", s.name));
        }
        for (name, (what, costs_readiness)) in lock(&self.inner.dead_tasks).iter() {
            ready &= !costs_readiness;
            report.push_str(&format!("task {name}: {what}\n"));
        }
        (ready, report)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding these short critical sections cannot leave the Vec inconsistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_list_watch_sinks_and_heartbeat() {
        let h = Health::default();
        let src = h.source("events".into());
        let sink = h.sink("json");
        assert!(!h.ready().0);
        h.beat();
        assert!(h.live().0);
        assert!(!h.ready().0, "initial list not done yet");
        src.set_listed(true);
        assert!(h.ready().1.contains("source events: watch not open"));
        src.set_watching(true);
        assert!(h.ready().0, "{}", h.ready().1);
        sink.set_accepting(false);
        let (ok, report) = h.ready();
        assert!(!ok);
        assert!(report.contains("sink json: failing"), "{report}");
    }

    #[test]
    fn a_dead_task_fails_readiness_unless_it_is_auxiliary() {
        let h = Health::default();
        h.beat();
        assert!(h.ready().0);
        h.task_died("upkeep", "ended".into(), false);
        let (ok, report) = h.ready();
        assert!(ok, "{report}");
        assert!(report.contains("task upkeep: ended"), "{report}");
        h.task_died("sink json", "panicked: boom".into(), true);
        let (ok, report) = h.ready();
        assert!(!ok);
        assert!(
            report.contains("task sink json: panicked: boom"),
            "{report}"
        );
    }

    #[test]
    fn sink_changes_reach_the_observer_once_per_change() {
        let h = Health::default();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        h.observe_sinks(Arc::new(move |name, ok| s.lock().unwrap().push((name, ok))));
        let sink = h.sink("otlp");
        sink.set_accepting(true);
        sink.set_accepting(false);
        sink.set_accepting(false);
        sink.set_accepting(true);
        assert_eq!(*seen.lock().unwrap(), [("otlp", false), ("otlp", true)]);
    }
}
