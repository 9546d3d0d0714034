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
