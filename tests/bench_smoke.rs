//! A short run of the load harness (`herald bench load`) so it does not rot: no thresholds, only that it runs
//! end to end, prints one JSON line, and every count matches what the simulator sent.

use std::process::Command;

#[test]
fn bench_load_smoke_run_counts_every_event() {
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args([
            "bench", "load", "--events", "2000", "--rate", "max", "--json",
        ])
        .args(["--live-objects", "200", "--warmup", "5s"])
        .env_remove("HERALD_CONFIG")
        .output()
        .expect("herald runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "herald bench load failed: {stderr}");
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
