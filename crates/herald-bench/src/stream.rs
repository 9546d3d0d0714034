//! `herald-bench stream`: the agent against a recorded API server ([`crate::recorded`]) instead of the simulator,
//! so that what is measured is the agent. The server (a child process of its own, `herald-bench
//! recorded-server`) prepares every list page and watch line before the clock starts and then only writes bytes;
//! the agent (`herald run`, as [`crate::load`] starts it) reaches it through its normal kube client and a
//! generated kubeconfig. Three paths: a paged list of `--live` Events, a watch that delivers `--events` ADDED
//! at once, and a steady watch at `--rate` over `--live` listed Events.
//!
//! The window: the harness waits until the agent is parked on the gated request (first list page, or first
//! watch), samples it, opens the gate, and samples every 100 ms until the agent has taken every Event and its
//! sinks have drained. It reports the agent's CPU from its own `/proc` entry only, the server's CPU beside it
//! (which of the two was the bottleneck), VmRSS before and after and the peak, `herald_processing_seconds`
//! quantiles, and the counts against the server's truth. Like `load`, it never judges the numbers.

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

use crate::probe::{self, Histogram};
use crate::recorded::{Played, Scenario};
use crate::{
    Delivered, Programs, SinkName, agent_config, drained, drops_by_queue, next_sample, per_second,
    queue_drops_text, sample, spawn,
};
use herald_test_support::process::{ChildGuard, free_addr, wait_for};

/// `herald-bench stream` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct StreamArgs {
    /// list: a paged list of --live Events; watch: --events ADDED at once; steady: --events lines at --rate over
    /// --live listed Events.
    #[arg(long, value_enum)]
    pub path: Scenario,
    #[command(flatten)]
    pub played: Played,
    /// Sinks to turn on, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "metrics,otlp,json")]
    pub sinks: Vec<SinkName>,
    /// Print one machine-readable JSON summary line instead of the report.
    #[arg(long)]
    pub json: bool,
    /// Give up when the agent takes no Event for this long.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub stall_timeout: Duration,
}

/// The result of one run: what `--json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct StreamSummary {
    pub path: Scenario,
    pub live: u64,
    pub events: u64,
    /// Notifications per second asked for (steady only).
    pub rate_target: Option<f64>,
    pub sinks: Vec<SinkName>,
    /// Events measured: the listed ones (list) or the notifications (watch, steady).
    pub measured_events: u64,
    /// JSON bytes per Event object as served, on average.
    pub object_bytes: f64,
    /// Seconds the server took to prepare every page and line (before any clock).
    pub prepared_seconds: f64,
    /// Occurrences the served objects carry (the server's truth) and what the agent counted
    /// (`herald_event_occurrences_total`; null without the metrics sink).
    pub occurrences_expected: u64,
    pub occurrences_counted: Option<u64>,
    pub otlp_sent: u64,
    pub otlp_received: u64,
    /// Every count matches: occurrences = truth, OTLP received = sent, no request the server does not serve.
    pub counts_match: bool,
    /// Gate opened to the sample where everything was taken and the sinks had drained (the CPU window; it
    /// includes up to one OTLP batch interval waiting for the last partial batch).
    pub duration_seconds: f64,
    /// Gate opened to the first sample where every Event was taken (100 ms resolution).
    pub taken_seconds: f64,
    /// Measured Events over `taken_seconds`.
    pub events_per_second: f64,
    /// Lines per second the server wrote (gate to last line; watch and steady), so a lagging server shows.
    pub server_lines_per_second: Option<f64>,
    /// The agent's utime + stime over the window (its own `/proc` entry).
    pub cpu_seconds: f64,
    pub cpu_seconds_per_100k_events: f64,
    pub cpu_percent_of_core: f64,
    /// The recorded server's over the same window.
    pub server_cpu_seconds: f64,
    pub server_cpu_percent_of_core: f64,
    /// This harness's own CPU over the window (the OTLP receiver decoding every export, and the sampling).
    pub harness_cpu_seconds: f64,
    /// The process that used more CPU in the window: "agent" or "server".
    pub bottleneck: &'static str,
    /// VmRSS just before the gate opened, after everything was taken and drained, and VmHWM.
    pub rss_before_kib: u64,
    pub rss_end_kib: u64,
    pub rss_peak_kib: u64,
    /// (RSS after − RSS before) per measured Event.
    pub rss_bytes_per_event: f64,
    /// `herald_processing_seconds` over the window, interpolated in its buckets.
    pub processing_p50_seconds: Option<f64>,
    pub processing_p99_seconds: Option<f64>,
    pub drops: u64,
    /// The same by queue (sink name), queues without drops left out.
    pub drops_by_queue: std::collections::BTreeMap<String, u64>,
    pub watch_restarts: u64,
    /// `/proc/loadavg` (1 minute) when the run started and ended: the machine is shared.
    pub load_average_start: f64,
    pub load_average_end: f64,
}

/// `herald-bench stream`: run, print, exit 0; on failure say why (and where the logs are) and exit 1.
pub fn run_stream(args: StreamArgs) -> ExitCode {
    crate::print_result(
        crate::in_scratch(|dir| measure(&args, dir)),
        args.json,
        report,
    )
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

fn server_state(addr: std::net::SocketAddr) -> Option<serde_json::Value> {
    let (status, body) = probe::http_get(addr, "/bench/state")?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

fn measure(args: &StreamArgs, dir: &Path) -> anyhow::Result<StreamSummary> {
    let load_average_start = load_average();
    let exe = Programs::find()?;
    let receiver = crate::otlp::Receiver::start().context("cannot start the OTLP receiver")?;
    let kubeconfig = dir.join("kubeconfig");
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("recorded-server")
        .arg(format!(
            "--scenario={}",
            format!("{:?}", args.path).to_lowercase()
        ))
        .args(args.played.flags())
        .arg("--write-kubeconfig")
        .arg(&kubeconfig);
    let server =
        ChildGuard(spawn(cmd, &dir.join("server.log")).context("cannot start the server")?);
    let server_pid = server.0.id();
    let server_addr = wait_for(
        Duration::from_secs(600),
        "the recorded server's kubeconfig",
        || {
            let text = std::fs::read_to_string(&kubeconfig).ok()?;
            crate::server_addr(&text)
        },
    )?;
    let state = server_state(server_addr).context("cannot read the recorded server's state")?;

    let max_tracked = (args.played.live + args.played.events).max(200_000);
    let agent_addr = free_addr()?;
    let mut agent = crate::spawn_agent(
        &exe,
        dir,
        &agent_config(&args.sinks, agent_addr, receiver.addr(), Some(max_tracked)),
    )?;
    let pid = agent.0.id();
    // Parked on the gated request: the first list page (list), or the first watch after the list (watch, steady).
    wait_for(
        Duration::from_secs(600),
        "the agent's gated request",
        || {
            let s = server_state(server_addr)?;
            let parked = match args.path {
                Scenario::List => s["list_requests"].as_u64()? >= 1,
                _ => s["watches"].as_u64()? >= 1,
            };
            parked.then_some(())
        },
    )?;
    wait_for(Duration::from_secs(600), "the agent's /metrics", || {
        let (status, _) = probe::http_get(agent_addr, "/metrics")?;
        (status == 200).then_some(())
    })?;
    // The steady list is not measured: let its records through the sinks first.
    let otlp_on = args.sinks.contains(&SinkName::Otlp);
    wait_for(Duration::from_secs(600), "the agent to settle", || {
        let s = sample(agent_addr, pid, server_pid).ok()?;
        let listed = s.scrape.sum("herald_pipeline_received_total", &[]) as u64;
        let want = if args.path == Scenario::Steady {
            args.played.live
        } else {
            0
        };
        (listed >= want && settled(&s.scrape, &receiver, otlp_on)).then_some(())
    })?;
    std::thread::sleep(Duration::from_millis(300));

    let me = std::process::id();
    let harness_before = probe::Proc::read(me).unwrap_or_default();
    let before = sample(agent_addr, pid, server_pid)?;
    let (status, _) = probe::http_put(server_addr, "/bench/go", "")
        .context("cannot open the recorded server's gate")?;
    if status != 200 {
        bail!("the recorded server's gate answered {status}");
    }
    let (measured, progress): (u64, fn(&probe::Scrape) -> u64) = match args.path {
        Scenario::List => (args.played.live, |s: &probe::Scrape| {
            s.sum("herald_pipeline_received_total", &[]) as u64
        }),
        _ => (args.played.events, probe::Scrape::watch_ops),
    };
    let base = progress(&before.scrape);
    let mut last_progress = (0, Instant::now());
    let mut taken_at = None;
    let done = loop {
        let s = next_sample(&mut agent, agent_addr, pid, server_pid)?;
        let taken = progress(&s.scrape) - base;
        if taken >= measured {
            taken_at.get_or_insert(s.at);
        }
        if taken >= measured && settled(&s.scrape, &receiver, otlp_on) {
            break s;
        }
        if taken > last_progress.0 {
            last_progress = (taken, Instant::now());
        } else if last_progress.1.elapsed() > args.stall_timeout {
            let m = |name: &str, labels: &[(&str, &str)]| s.scrape.sum(name, labels);
            bail!(
                "the agent took {taken} of {measured} Events, then nothing for {:?} (queue backlog {}, \
                 pipeline passed {}, OTLP sent {} dropped {} received {})",
                args.stall_timeout,
                m("herald_queue_backlog", &[]),
                m("herald_pipeline_received_total", &[])
                    - m("herald_pipeline_filtered_total", &[])
                    - m("herald_pipeline_deduplicated_total", &[]),
                m("herald_sink_sent_total", &[("sink", "otlp")]),
                m("herald_queue_dropped_total", &[("queue", "otlp")]),
                receiver.records(),
            );
        }
    };
    let harness_cpu_seconds =
        probe::Proc::read(me).unwrap_or_default().cpu_seconds - harness_before.cpu_seconds;
    let state_end = server_state(server_addr).context("cannot read the recorded server's state")?;
    drop(agent);
    drop(server);

    let occurrences_expected = state["occurrences_total"].as_u64().unwrap_or(0);
    let Delivered {
        occurrences_counted,
        otlp_sent,
        otlp_received,
    } = Delivered::at(&done.scrape, &args.sinks, &receiver);
    let counts_match = occurrences_counted.is_none_or(|c| c == occurrences_expected)
        && otlp_sent == otlp_received
        && state_end["other_requests"].as_u64() == Some(0);
    let duration = done.at.duration_since(before.at).as_secs_f64();
    let taken_seconds = taken_at
        .unwrap_or(done.at)
        .duration_since(before.at)
        .as_secs_f64();
    let stream_seconds = state_end["stream_seconds"].as_f64().unwrap_or(0.0);
    let cpu_seconds = done.proc.cpu_seconds - before.proc.cpu_seconds;
    let server_cpu_seconds = done.sim.cpu_seconds - before.sim.cpu_seconds;
    let processing = Histogram::delta(&done.scrape, &before.scrape, "herald_processing_seconds");
    let delta =
        |name: &str| (done.scrape.sum(name, &[]) - before.scrape.sum(name, &[])).max(0.0) as u64;
    let pct = |cpu: f64| 100.0 * per_second(cpu, duration);
    Ok(StreamSummary {
        path: args.path,
        live: args.played.live,
        events: args.played.events,
        rate_target: (args.path == Scenario::Steady).then_some(args.played.rate),
        sinks: args.sinks.clone(),
        measured_events: measured,
        object_bytes: state["object_bytes"].as_f64().unwrap_or(0.0),
        prepared_seconds: state["prepared_seconds"].as_f64().unwrap_or(0.0),
        occurrences_expected,
        occurrences_counted,
        otlp_sent,
        otlp_received,
        counts_match,
        duration_seconds: duration,
        taken_seconds,
        events_per_second: per_second(measured as f64, taken_seconds),
        server_lines_per_second: (args.path != Scenario::List && stream_seconds > 0.0)
            .then(|| args.played.events as f64 / stream_seconds),
        cpu_seconds,
        cpu_seconds_per_100k_events: cpu_seconds * 100_000.0 / measured.max(1) as f64,
        cpu_percent_of_core: pct(cpu_seconds),
        server_cpu_seconds,
        server_cpu_percent_of_core: pct(server_cpu_seconds),
        harness_cpu_seconds,
        bottleneck: if cpu_seconds >= server_cpu_seconds {
            "agent"
        } else {
            "server"
        },
        rss_before_kib: before.proc.rss_kib,
        rss_end_kib: done.proc.rss_kib,
        rss_peak_kib: done.proc.hwm_kib,
        rss_bytes_per_event: (done.proc.rss_kib as f64 - before.proc.rss_kib as f64) * 1024.0
            / measured.max(1) as f64,
        processing_p50_seconds: processing.quantile(0.5),
        processing_p99_seconds: processing.quantile(0.99),
        drops: delta("herald_queue_dropped_total"),
        drops_by_queue: drops_by_queue(&done.scrape, &before.scrape),
        watch_restarts: delta("herald_watch_restarts_total"),
        load_average_start,
        load_average_end: load_average(),
    })
}

/// Everything the agent took has left it: [`drained`], or, when the OTLP queue dropped records (counted, and
/// reported as drops), every record it did not drop was exported and received.
fn settled(scrape: &probe::Scrape, receiver: &crate::otlp::Receiver, otlp_on: bool) -> bool {
    if drained(scrape, receiver, otlp_on) {
        return true;
    }
    let dropped = scrape.sum("herald_queue_dropped_total", &[("queue", "otlp")]);
    let sent = scrape.sum("herald_sink_sent_total", &[("sink", "otlp")]);
    let passed = scrape.sum("herald_pipeline_received_total", &[])
        - scrape.sum("herald_pipeline_filtered_total", &[])
        - scrape.sum("herald_pipeline_deduplicated_total", &[]);
    otlp_on
        && dropped > 0.0
        && scrape.sum("herald_queue_backlog", &[]) == 0.0
        && sent + dropped >= passed
        && sent as u64 == receiver.records()
}

fn report(s: &StreamSummary) -> String {
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.3} ms", v * 1e3));
    let sinks: Vec<String> = s
        .sinks
        .iter()
        .map(|k| format!("{k:?}").to_lowercase())
        .collect();
    let what = match s.path {
        Scenario::List => format!("paged list of {} live Events", s.live),
        Scenario::Watch => format!("watch, {} ADDED at once", s.events),
        Scenario::Steady => format!(
            "steady watch, {} notifications at {}/s over {} live Events",
            s.events,
            s.rate_target.unwrap_or(0.0),
            s.live
        ),
    };
    format!(
        "herald-bench stream: {what}, sinks {sinks} ({bytes:.0} B per object, prepared in {prep:.1}s)\n\
         counts          {ok}: occurrences {counted} of {expected}, OTLP {recv} received of {sent} sent, {drops} dropped{by_queue}, {restarts} watch restarts\n\
         throughput      {eps:.0} Events/s (all taken after {taken:.2}s; drained after {dur:.2}s){server_rate}\n\
         agent cpu       {cpu:.3}s = {per100k:.3} s per 100k Events, {pct:.1}% of a core\n\
         server cpu      {scpu:.3}s, {spct:.1}% of a core: bottleneck {bottleneck} (harness with the OTLP receiver: {hcpu:.3}s)\n\
         memory          RSS {before} KiB before, {end} KiB after ({per:.0} B per Event), peak {peak} KiB\n\
         processing      p50 {p50}, p99 {p99} (herald_processing_seconds buckets)\n\
         load average    {la0:.2} → {la1:.2}\n",
        sinks = sinks.join(","),
        bytes = s.object_bytes,
        prep = s.prepared_seconds,
        ok = if s.counts_match { "match" } else { "MISMATCH" },
        counted = s
            .occurrences_counted
            .map_or("-".to_string(), |c| c.to_string()),
        expected = s.occurrences_expected,
        recv = s.otlp_received,
        sent = s.otlp_sent,
        drops = s.drops,
        by_queue = queue_drops_text(&s.drops_by_queue),
        restarts = s.watch_restarts,
        eps = s.events_per_second,
        taken = s.taken_seconds,
        server_rate = s
            .server_lines_per_second
            .map_or(String::new(), |r| format!("; server wrote {r:.0} lines/s")),
        dur = s.duration_seconds,
        cpu = s.cpu_seconds,
        per100k = s.cpu_seconds_per_100k_events,
        pct = s.cpu_percent_of_core,
        scpu = s.server_cpu_seconds,
        spct = s.server_cpu_percent_of_core,
        bottleneck = s.bottleneck,
        hcpu = s.harness_cpu_seconds,
        before = s.rss_before_kib,
        end = s.rss_end_kib,
        per = s.rss_bytes_per_event,
        peak = s.rss_peak_kib,
        p50 = ms(s.processing_p50_seconds),
        p99 = ms(s.processing_p99_seconds),
        la0 = s.load_average_start,
        la1 = s.load_average_end,
    )
}
