//! Restarts without loss or double counting: herald (a child process) is killed with SIGKILL and stopped
//! with SIGTERM in the middle of the simulator's scenario, and started again on the same `state_dir`. Each
//! new process continues the counters from the checkpoint, so the last one alone must show exactly the
//! ground truth (minus the baseline it never counted), per label set; and no process ever shows a lower
//! count than one before it showed (a scrape never shows what a crash takes back).

use crate::common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::truth::*;
use common::*;
use herald_sim::{RunningSim, SimOptions};

fn config(state_dir: &std::path::Path) -> String {
    format!(
        "sinks:\n  json:\n    enabled: false\nstate_dir: {}\ncheckpoint_interval: 300ms\n",
        state_dir.display()
    )
}

/// The first total a freshly started herald shows, as soon as its server answers.
fn first_shown(herald: &Herald) -> f64 {
    let mut text = None;
    wait_until(Duration::from_secs(15), "herald's /metrics", || {
        text = herald.get("/metrics").map(|(_, body)| body);
        text.is_some()
    });
    metric_sum(&text.unwrap(), OCC, &[]) + 0.0
}

/// Scrape `herald` until the store's version reaches `until`, checking that what it shows never goes down
/// from `floor`; returns the highest total it showed.
fn watch_until(herald: &Herald, sim: &RunningSim, until: u64, floor: f64) -> f64 {
    let mut highest = floor;
    wait_until(Duration::from_secs(60), "the scenario to advance", || {
        let shown = herald.metric(OCC, &[]);
        assert!(
            shown >= highest,
            "herald showed {shown} after showing {highest}: a count went back"
        );
        highest = shown;
        version(sim) >= until
    });
    highest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashes_and_restarts_continue_counters_from_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let rate = 300.0;
    let max_events = 6_000;
    let start_after = Duration::from_secs(3);
    let sim = scenario_sim(9, rate, max_events, start_after, dir.path(), 150).await;
    let started = Instant::now();
    let baseline = sim.truth();
    let v0 = version(&sim);
    let config = config(&state);

    tokio::task::block_in_place(|| {
        let mut first = start_herald(&sim.url(), &config, Stdio::null(), &[]);
        first.wait_ready();
        assert_eq!(
            sim.truth().occurrences_total,
            baseline.occurrences_total,
            "herald must finish its first list before the generator starts"
        );
        let shown = watch_until(&first, &sim, v0 + max_events / 3, 0.0);
        first.crash();
        std::thread::sleep(Duration::from_millis(700)); // Events keep coming while no agent runs.

        let mut second = start_herald(&sim.url(), &config, Stdio::null(), &[]);
        let resumed = first_shown(&second);
        assert!(
            resumed >= shown,
            "after the crash herald showed {resumed}, before it {shown}"
        );
        second.wait_ready();
        let shown = watch_until(&second, &sim, v0 + 2 * max_events / 3, resumed);
        assert!(second.terminate(Duration::from_secs(15)).success());
        std::thread::sleep(Duration::from_millis(700));

        let third = start_herald(&sim.url(), &config, Stdio::null(), &[]);
        let resumed = first_shown(&third);
        assert!(
            resumed >= shown,
            "after SIGTERM herald showed {resumed}, before it {shown}"
        );
        third.wait_ready();
        watch_until(&third, &sim, v0 + max_events, resumed);
        tokio::runtime::Handle::current().block_on(async {
            let generating = Duration::from_secs_f64(max_events as f64 / rate) + start_after;
            wait_generator_done(&sim, started, generating).await;
        });
        let truth = sim.truth();
        eprintln!(
            "{} occurrences over {} objects; the third agent resumed at {resumed}",
            truth.occurrences_total, truth.objects
        );
        assert_exact(&third, &truth, &baseline);
    });
    sim.shutdown().await;
}

/// A corrupt checkpoint is reported and ignored: herald starts (the startup policy applies) and then
/// writes a good one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_checkpoint_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("events.json"), b"{\"watches\": [{\"wat").unwrap();
    let opts = SimOptions {
        load: vec![baseline_file(dir.path(), 20)],
        ..SimOptions::quiet()
    };
    let sim = RunningSim::start(opts, free_addr()).await.unwrap();
    let config = config(&state);
    tokio::task::block_in_place(|| {
        let herald = start_herald(&sim.url(), &config, Stdio::null(), &[]);
        herald.wait_ready();
        assert_eq!(herald.metric(OCC, &[]), 0.0, "the baseline is not counted");
        wait_until(Duration::from_secs(10), "a good checkpoint", || {
            std::fs::read(state.join("events.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<herald::checkpoint::EventsFile>(&b).ok())
                .is_some_and(|f| f.watches.len() == 1 && f.watches[0].watch.objects.len() == 20)
        });
    });
    sim.shutdown().await;
}
