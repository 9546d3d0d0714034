//! The binary's configuration commands and errors, as a user sees them.

use std::process::Command;

fn herald() -> Command {
    Command::new(env!("CARGO_BIN_EXE_herald"))
}

#[test]
fn config_default_prints_a_file_that_checks_ok() {
    let out = herald().args(["config", "default"]).output().unwrap();
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("default.yaml");
    std::fs::write(&path, &out.stdout).unwrap();
    let check = herald()
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn a_bad_file_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "filters:\n  max_age: five\n").unwrap();
    for args in [vec!["config", "check"], vec!["run", "--config"]] {
        let out = herald().args(&args).arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr.trim(),
            r#"herald: invalid configuration: filters.max_age: expected a duration like "5m", got "five""#
        );
    }
}

#[test]
fn a_bad_flag_value_names_the_key() {
    let out = herald()
        .args(["run", "--events-api", "v2"])
        .env_remove("HERALD_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("source.events.api: unknown value `v2`"),
        "{stderr}"
    );
}

#[test]
fn an_unreadable_kubeconfig_is_one_clear_line() {
    let out = herald()
        .args([
            "run",
            "--kubeconfig",
            "/nonexistent/kubeconfig",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read kubeconfig /nonexistent/kubeconfig"),
        "{stderr}"
    );
}

#[test]
fn a_list_at_the_top_of_the_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("list.yaml");
    std::fs::write(&path, "- 0.0.0.0:9477\n- daemonset\n").unwrap();
    let out = herald()
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("expected a mapping of settings (key: value), got a list"),
        "{stderr}"
    );
}

/// Flags before a subcommand apply to `run` and `demo` and are refused anywhere else, never silently dropped.
#[test]
fn flags_before_a_subcommand_apply_or_are_refused() {
    let out = herald()
        .args(["--listen", "127.0.0.1:0", "config", "default"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--listen")
            && stderr.contains("apply only to `herald run` and `herald demo`"),
        "{stderr}"
    );

    // `--config` before `run` is read: a bad file there is reported, not ignored.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "filters:\n  max_age: five\n").unwrap();
    let out = herald()
        .arg("--config")
        .arg(&path)
        .arg("run")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("filters.max_age"));
}

/// Lines of the demo's stderr until `until` appears (or the demo ends).
fn read_until(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    until: &str,
) -> Vec<String> {
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.contains(until);
        seen.push(line);
        if done {
            break;
        }
    }
    seen
}

/// A second demo on a machine whose port 9477 is taken runs on a free port and says which; the console shows
/// the tour and a summary line, without colour codes when it is not a terminal, and flags given before `demo`
/// apply (JSON lines on stdout only when asked for).
#[test]
fn the_demo_takes_a_free_port_when_its_own_is_busy_and_guides_the_user() {
    use std::io::BufRead;
    // Hold 9477; if something else already does, the demo meets the same busy port.
    let _held = std::net::TcpListener::bind("127.0.0.1:9477");
    let mut child = herald()
        .args(["--json-sink", "true", "demo", "--rate", "max"])
        .env_remove("HERALD_CONFIG")
        .env_remove("NO_COLOR")
        .env("HERALD_LOG_LEVEL", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    let mut seen = read_until(&mut lines, "Ctrl-C stops");
    seen.extend(read_until(&mut lines, "records/s"));
    let stdout = child.stdout.take().unwrap();
    let first_json = std::io::BufReader::new(stdout).lines().next();
    let _ = child.kill();
    let _ = child.wait();
    let text = seen.join("\n");
    assert!(
        text.contains("127.0.0.1:9477 is in use; taking a free port"),
        "{text}"
    );
    let metrics_line = seen
        .iter()
        .find(|l| l.trim_start().starts_with("metrics "))
        .unwrap_or_else(|| panic!("no metrics line:\n{text}"));
    assert!(
        !metrics_line.contains(":9477/") && metrics_line.contains("http://127.0.0.1:"),
        "{metrics_line}"
    );
    for expected in [
        "Next steps:",
        "kubectl --kubeconfig",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "records/s",
    ] {
        assert!(text.contains(expected), "missing {expected:?}:\n{text}");
    }
    assert!(!text.contains('\x1b'), "colour codes on a pipe:\n{text}");
    let json = first_json
        .expect("--json-sink true before `demo` turns JSON lines on")
        .unwrap();
    assert!(json.starts_with('{'), "{json}");
}

/// `herald demo --otlp-console` shows the OTLP log records (and spans) herald sends, decoded from the real OTLP
/// protobuf, one line each on stdout.
#[test]
fn the_demo_otlp_console_prints_what_a_collector_would_receive() {
    use std::io::BufRead;
    let mut child = herald()
        .args(["demo", "--otlp-console", "--listen", "127.0.0.1:0"])
        .env_remove("HERALD_CONFIG")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut logs = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if line.starts_with("otlp log  ") {
            logs.push(line);
            if logs.len() == 3 {
                break;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(logs.len(), 3, "{logs:?}");
    for line in &logs {
        // `otlp log  HH:MM:SS <severity> <namespace>/<kind>/<name> <reason>: <message>`
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(fields.len() >= 7, "{line}");
        assert_eq!(fields[4].matches('/').count(), 2, "{line}");
        assert!(fields[5].ends_with(':'), "{line}");
    }
}
