//! Inputs and tools that live outside the repository: the real objects in `../shared/fixtures`, and the
//! programs the tests run for real (kubectl, Prometheus, Alertmanager, the Python schema validator).
//!
//! A test whose input or tool is missing must never pass as if it had checked something. Under CI (`CI` set)
//! it fails, naming what is missing and how `tools/test` installs it. Elsewhere it is skipped, and says so
//! where a user sees it: one `SKIPPED <test>: <reason>` line written straight to the terminal's stderr (libtest
//! captures only the `print!` macros, not writes to the stderr handle), and appended to `$HERALD_SKIP_LOG`
//! so `tools/test` lists every skip in its closing summary.

#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

/// The test is missing `reason`: fail under CI, else report the skip (the caller then returns).
pub fn skip(reason: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    if std::env::var_os("CI").is_some() {
        panic!("{test}: {reason} (CI requires it; tools/test installs the tools the tests need)");
    }
    let line = format!("SKIPPED {test}: {reason}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Some(Ok(mut f)) = std::env::var_os("HERALD_SKIP_LOG").map(|log| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
    }) {
        let _ = f.write_all(line.as_bytes());
    }
}

/// The folder of real objects from real clusters (`HERALD_FIXTURES`, else `../shared/fixtures`), or `None`
/// after [`skip`] when it is absent.
pub fn shared_fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("HERALD_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/fixtures"));
    if dir.is_dir() {
        Some(dir)
    } else {
        skip(&format!(
            "the real-cluster fixtures folder {} is absent (set HERALD_FIXTURES to another copy)",
            dir.display()
        ));
        None
    }
}

/// The project's own fixtures, written in the shapes real API servers return (`tests/fixtures/<sub>/<file>`).
pub fn project_fixture(path: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(path)
}

/// The repository's root: this crate lives in `crates/herald-test-support`.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The first of `names` on the PATH, or `None` after [`skip`] naming the Debian package that has it.
pub fn tool(names: &[&str], package: &str) -> Option<String> {
    let found = names.iter().find(|name| {
        Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {name}"))
            .output()
            .is_ok_and(|o| o.status.success())
    });
    match found {
        Some(name) => Some(name.to_string()),
        None => {
            skip(&format!(
                "{} is not installed (Debian package {package})",
                names.join(" or ")
            ));
            None
        }
    }
}

/// Whether `python3` can import `module`; `None` after [`skip`] naming the PyPI package when it cannot.
pub fn python_module(module: &str, package: &str) -> Option<()> {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Some(())
    } else {
        skip(&format!(
            "python3 cannot import {module} (PyPI package {package})"
        ));
        None
    }
}
