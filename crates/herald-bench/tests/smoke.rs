//! Short runs of the load and soak harnesses (`herald-bench load`, `herald-bench soak`) so they do not rot:
//! no thresholds, only that they run end to end, print one JSON line, write their files, and every count
//! matches what the simulator sent. They run the `herald` and `herald-sim` programs cargo builds beside
//! `herald-bench` (`cargo test --workspace`, as `tools/test` runs it).

// A test binary: a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn bench_load_smoke_run_counts_every_event() {
    let out = Command::new(env!("CARGO_BIN_EXE_herald-bench"))
        .args(["load", "--events", "2000", "--rate", "max", "--json"])
        .args(["--live-objects", "200", "--warmup", "5s"])
        .env_remove("HERALD_CONFIG")
        .output()
        .expect("herald-bench runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "herald-bench load failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one summary line: {stdout}");
    let s: serde_json::Value = serde_json::from_str(lines[0]).expect("the summary is JSON");

    assert_eq!(s["events"], 2000);
    assert_eq!(s["watch_events"], 2000, "{s}");
    assert_eq!(s["occurrences_counted"], s["occurrences_expected"], "{s}");
    assert!(s["occurrences_expected"].as_u64().unwrap() > 2000, "{s}");
    assert_eq!(s["otlp_received"], s["otlp_sent"], "{s}");
    assert!(s["otlp_received"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["counts_match"], true, "{s}");
    assert_eq!(s["drops"], 0, "{s}");
    for key in [
        "events_per_second",
        "cpu_seconds",
        "rss_peak_kib",
        "processing_p99_seconds",
        "otlp_arrival_p99_seconds",
    ] {
        assert!(s[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {s}");
    }
}

#[test]
fn bench_soak_smoke_run_writes_samples_and_plot_and_counts_every_occurrence() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("soak");
    let out_text = out.to_str().unwrap();
    let result = Command::new(env!("CARGO_BIN_EXE_herald-bench"))
        .args(["soak", "--duration", "6s", "--interval", "1s", "--json"])
        .args(["--rate", "400", "--live-objects", "4000", "--out", out_text])
        // Both kinds of watch fault within the few seconds: disconnects, then 410 Gone (a relist).
        .args([
            "--faults",
            "disconnect-every=300;gone-every=400",
            "--fault-phase",
            "2s",
        ])
        .env_remove("HERALD_CONFIG")
        .output()
        .expect("herald-bench runs");
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        result.status.success(),
        "herald-bench soak failed: {stderr}"
    );
    let stdout = String::from_utf8_lossy(&result.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one summary line: {stdout}");
    let s: serde_json::Value = serde_json::from_str(lines[0]).expect("the summary is JSON");

    assert!(s["occurrences_truth"].as_u64().unwrap() > 1000, "{s}");
    assert_eq!(s["occurrences_counted"], s["occurrences_truth"], "{s}");
    assert_eq!(
        (&s["lost"], &s["duplicated"]),
        (&0.into(), &0.into()),
        "{s}"
    );
    assert_eq!(s["otlp_received"], s["otlp_sent"], "{s}");
    assert!(s["otlp_sent"].as_u64().unwrap() > 0, "{s}");
    assert!(s["faults_injected"].as_u64().unwrap() > 0, "{s}");
    assert!(s["events_streamed"].as_u64().unwrap() > 1000, "{s}");
    for key in ["rss_min_kib", "rss_max_kib", "rss_peak_kib", "cpu_seconds"] {
        assert!(s[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {s}");
    }
    assert!(s["verdict"] == "pass" || s["verdict"] == "fail", "{s}");

    let csv = std::fs::read_to_string(out.join("samples.csv")).expect("samples.csv");
    let mut rows = csv.lines();
    let header: Vec<&str> = rows.next().unwrap().split(',').collect();
    assert_eq!(header[0], "elapsed_s");
    for column in [
        "agent_rss_kib",
        "occurrences_counted",
        "occurrences_truth",
        "faults_injected",
    ] {
        assert!(header.contains(&column), "{column}: {header:?}");
    }
    let rows: Vec<Vec<&str>> = rows.map(|r| r.split(',').collect()).collect();
    assert!(rows.len() >= 5, "a row per second and a last one: {csv}");
    assert_eq!(rows.len(), s["samples"].as_u64().unwrap() as usize);
    assert!(rows.iter().all(|r| r.len() == header.len()), "{csv}");
    let last = rows.last().unwrap();
    let column = |name| header.iter().position(|h| *h == name).unwrap();
    assert_eq!(
        last[column("occurrences_counted")],
        s["occurrences_counted"].to_string(),
        "the last row is the caught-up state: {csv}"
    );

    let png = std::fs::read(out.join("soak.png")).expect("soak.png");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    assert!(out.join("summary.json").exists());
}

/// `herald-bench stream` with `args --json`: its one summary line.
fn stream(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_herald-bench"))
        .arg("stream")
        .args(args)
        .arg("--json")
        .env_remove("HERALD_CONFIG")
        .output()
        .expect("herald-bench runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "herald-bench stream failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one summary line: {stdout}");
    serde_json::from_str(lines[0]).expect("the summary is JSON")
}

/// The recorded server's live Events start with counts 1 + (7i mod 5): 1, 3, 5, 2, 4, … (written out here,
/// not taken from the harness).
fn live_occurrences(live: u64) -> u64 {
    (0..live).map(|i| [1, 3, 5, 2, 4][(i % 5) as usize]).sum()
}

#[test]
fn bench_stream_smoke_runs_each_path_and_counts_every_occurrence() {
    let list = stream(&["--path", "list", "--live", "2000"]);
    assert_eq!(list["measured_events"], 2000, "{list}");
    assert_eq!(
        list["occurrences_expected"],
        live_occurrences(2000),
        "{list}"
    );
    assert_eq!(
        list["occurrences_counted"], list["occurrences_expected"],
        "{list}"
    );
    assert_eq!(
        list["otlp_received"], 2000,
        "every listed Event exported: {list}"
    );

    let watch = stream(&[
        "--path",
        "watch",
        "--events",
        "2000",
        "--sinks",
        "metrics,otlp",
    ]);
    assert_eq!(watch["occurrences_expected"], 2000, "{watch}");
    assert_eq!(watch["occurrences_counted"], 2000, "{watch}");

    let steady = stream(&[
        "--path", "steady", "--live", "500", "--events", "1000", "--rate", "2000", "--sinks",
        "metrics",
    ]);
    assert_eq!(
        steady["occurrences_expected"],
        live_occurrences(500) + 1000,
        "every line adds one occurrence: {steady}"
    );
    assert_eq!(
        steady["occurrences_counted"], steady["occurrences_expected"],
        "{steady}"
    );
    assert!(
        steady["server_lines_per_second"].as_f64().unwrap() > 500.0,
        "{steady}"
    );

    for s in [&list, &watch, &steady] {
        assert_eq!(s["counts_match"], true, "{s}");
        assert_eq!(s["watch_restarts"], 0, "{s}");
        assert!(s["object_bytes"].as_f64().unwrap() > 1000.0, "{s}");
        for key in ["cpu_seconds", "rss_peak_kib", "processing_p99_seconds"] {
            assert!(s[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {s}");
        }
        assert!(
            s["bottleneck"] == "agent" || s["bottleneck"] == "server",
            "{s}"
        );
    }
}
