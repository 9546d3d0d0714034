//! One rendering of `/metrics` shared by every scrape that asks while it is being made.
//!
//! Rendering 10k series builds tens of megabytes of intermediate text; when each scrape rendered its own
//! copy, 50 concurrent scrapes took herald near a gigabyte, and each held a blocking thread. Here at most one
//! rendering runs at a time, on one blocking thread, never on the runtime's workers. A scrape is answered
//! with the first rendering that *started after it arrived*, so it never sees values older than its request
//! (a test that waits for a counter and then reads it stays exact), and any number of scrapes arriving
//! during one rendering share the next one: the body is one reference-counted buffer, not a copy each.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use metrics::Counter;
use tokio::sync::watch;

use crate::telemetry::Telemetry;

/// The shared renderer.
pub struct SharedRender {
    telemetry: Arc<Telemetry>,
    state: Mutex<State>,
    latest: watch::Sender<Rendered>,
    renders: Counter,
}

#[derive(Clone, Default)]
struct Rendered {
    generation: u64,
    body: Bytes,
}

#[derive(Default)]
struct State {
    /// Generation of the rendering running now, or of the last one.
    started: u64,
    /// Highest generation a waiting scrape needs.
    wanted: u64,
    rendering: bool,
}

impl SharedRender {
    pub fn new(telemetry: Arc<Telemetry>, renders: Counter) -> Arc<SharedRender> {
        Arc::new(SharedRender {
            telemetry,
            state: Mutex::new(State::default()),
            latest: watch::Sender::new(Rendered::default()),
            renders,
        })
    }

    /// The Prometheus text of a rendering that started after this call.
    pub async fn get(self: &Arc<Self>) -> Bytes {
        let mut rx = self.latest.subscribe();
        let need = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let need = state.started + 1;
            state.wanted = state.wanted.max(need);
            if !state.rendering {
                state.rendering = true;
                state.started = need;
                let this = self.clone();
                tokio::task::spawn_blocking(move || this.render_from(need));
            }
            need
        };
        match rx.wait_for(|r| r.generation >= need).await {
            Ok(r) => r.body.clone(),
            Err(_) => Bytes::new(),
        }
    }

    /// Render `generation`, then the next one as long as scrapes arrived meanwhile.
    fn render_from(&self, mut generation: u64) {
        loop {
            let telemetry = &self.telemetry;
            // The exporter does not panic on its own data; if it ever did, waiting scrapes get an empty
            // body instead of hanging until their idle timeout.
            let body =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| telemetry.render()))
                    .unwrap_or_default();
            self.renders.increment(1);
            self.latest.send_replace(Rendered {
                generation,
                body: Bytes::from(body),
            });
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.wanted > generation {
                generation += 1;
                state.started = generation;
            } else {
                state.rendering = false;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MetricsConfig;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_scrapes_share_renderings_and_see_fresh_values() {
        let telemetry = Arc::new(Telemetry::new(&MetricsConfig::default()));
        // Enough series that a rendering takes a while and scrapes pile up behind it.
        for i in 0..3000 {
            telemetry
                .counter(crate::telemetry::EVENTS, &[("reason", &format!("r{i}"))])
                .increment(1);
        }
        let renders = telemetry.counter("herald_test_renders_total", &[]);
        let shared = SharedRender::new(telemetry.clone(), renders);
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let shared = shared.clone();
                tokio::spawn(async move { shared.get().await })
            })
            .collect();
        for t in tasks {
            let body = t.await.unwrap();
            assert!(
                std::str::from_utf8(&body)
                    .unwrap()
                    .contains(r#"herald_events_total{reason="r2999"} 1"#)
            );
        }
        let count = shared.state.lock().unwrap().started;
        assert!(
            (1..=20).contains(&count),
            "200 concurrent scrapes made {count} renderings"
        );

        // A value set before a scrape is in its answer.
        telemetry
            .counter(crate::telemetry::EVENTS, &[("reason", "late")])
            .increment(7);
        let body = shared.get().await;
        assert!(
            std::str::from_utf8(&body)
                .unwrap()
                .contains(r#"herald_events_total{reason="late"} 7"#)
        );
    }
}
