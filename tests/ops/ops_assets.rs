//! The operations assets, checked with the real tools: promtool (rules and their unit tests), kubectl kustomize
//! (rendering every kustomization of deploy/ and an overlay as users write it; a plain install needs no CRD),
//! the Kubernetes OpenAPI schemas offline (`tests/ops/validate_manifests.py`, which also checks hardening and
//! cross-references), `herald config check` on the rendered ConfigMaps, the Containerfile's pins, and the
//! dashboards (portable JSON, every PromQL expression parsed by promtool).
//!
//! A missing tool skips the test visibly (fails it under CI); `tools/test` installs all of them.

use crate::common;

use common::ops;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Run a tool from the repository root; a missing tool fails with how to install it.
fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{program}` ({e}). Run tools/test, which installs the tools these tests need \
                 (apt-get install prometheus prometheus-alertmanager kubernetes-client; pip install kubernetes-validate)"
            )
        })
}

fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}):\n{text}",
        args.join(" "),
        out.status
    );
    text
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `(alert name, rule)` for every alerting rule of the shipped file.
fn alerts() -> Vec<(String, Value)> {
    let rules = yaml(&root().join("alerts/herald.rules.yaml"));
    let mut out = Vec::new();
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            if let Some(name) = rule["alert"].as_str() {
                out.push((name.to_string(), rule.clone()));
            }
        }
    }
    out
}

fn dashboards() -> Vec<(String, Value)> {
    let out = ops::dashboards();
    assert_eq!(out.len(), 3, "expected three dashboards");
    out
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let Some(_) = common::fixtures::tool(&["promtool"], "prometheus") else {
        return;
    };
    let check = run_ok("promtool", &["check", "rules", "alerts/herald.rules.yaml"]);
    assert!(check.contains("SUCCESS"), "{check}");
    let mut tests: Vec<String> = std::fs::read_dir(root().join("alerts/tests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            p.strip_prefix(root())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    tests.sort();
    assert!(!tests.is_empty(), "no promtool unit tests in alerts/tests");
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    let out = run_ok("promtool", &args);
    assert!(out.contains("SUCCESS"), "{out}");
}

/// Every alert: a severity, a summary, a description, a runbook with the three sections, and unit tests that
/// see it both firing and not firing. Every runbook belongs to an alert.
#[test]
fn every_alert_has_severity_runbook_and_both_kinds_of_unit_test() {
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for entry in std::fs::read_dir(root().join("alerts/tests")).unwrap() {
        let tests = yaml(&entry.unwrap().path());
        for test in tests["tests"].as_array().unwrap() {
            for case in test["alert_rule_test"].as_array().into_iter().flatten() {
                let name = case["alertname"].as_str().unwrap().to_string();
                match case["exp_alerts"].as_array().map(|a| a.is_empty()) {
                    Some(false) => firing.insert(name),
                    _ => quiet.insert(name),
                };
            }
        }
    }
    let mut names = BTreeSet::new();
    for (name, rule) in alerts() {
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["critical", "warning", "info"].contains(&severity),
            "{name}: severity label {severity:?}"
        );
        for key in ["summary", "description"] {
            assert!(
                rule["annotations"][key]
                    .as_str()
                    .is_some_and(|s| s.len() > 10),
                "{name}: annotation {key} missing or too short"
            );
        }
        let runbook = format!("alerts/runbooks/{name}.md");
        assert_eq!(
            rule["annotations"]["runbook_url"].as_str(),
            Some(runbook.as_str()),
            "{name}: runbook_url"
        );
        let text = std::fs::read_to_string(root().join(&runbook))
            .unwrap_or_else(|e| panic!("{runbook}: {e}"));
        for section in ["# ", "## What it means", "## How to check", "## How to fix"] {
            assert!(text.contains(section), "{runbook} lacks {section:?}");
        }
        assert!(firing.contains(&name), "no unit test sees {name} firing");
        assert!(quiet.contains(&name), "no unit test sees {name} not firing");
        names.insert(name);
    }
    for entry in std::fs::read_dir(root().join("alerts/runbooks")).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        assert!(
            names.contains(&stem),
            "runbook {} has no alert",
            path.display()
        );
    }
    let readme = std::fs::read_to_string(root().join("alerts/README.md")).unwrap();
    for name in &names {
        assert!(
            readme.contains(&format!("| {name} |")),
            "alerts/README.md lacks {name}"
        );
    }
}

/// Where the alerts live as a PrometheusRule: the optional prometheus-operator component.
const PROMETHEUS_RULE: &str = "deploy/components/prometheus-operator/prometheusrule.yaml";

/// Every kustomization shipped in deploy/, as the README tells users to apply them.
const KUSTOMIZATIONS: [&str; 4] = [
    "deploy",
    "deploy/examples/single",
    "deploy/examples/sidecar",
    "deploy/examples/kube-prometheus-stack",
];

/// The overlay the README tells users to write next to deploy/, taken from the README as written and put in
/// a directory beside deploy/ (so its relative paths resolve as in a checkout). Removed when dropped.
fn readme_overlay() -> tempfile::TempDir {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = "cat > my-herald/kustomization.yaml <<'EOF'\n";
    let text = readme
        .split(start)
        .nth(1)
        .and_then(|rest| rest.split("\nEOF\n").next())
        .expect("README.md: the overlay (cat > my-herald/kustomization.yaml <<'EOF' ... EOF)");
    let dir = tempfile::Builder::new()
        .prefix(".readme-overlay-")
        .tempdir_in(root())
        .unwrap();
    std::fs::write(dir.path().join("kustomization.yaml"), text).unwrap();
    dir
}

/// Documents of a rendered kustomization.
fn render(dir: &str) -> Vec<Value> {
    serde_saphyr::from_multiple(&run_ok("kubectl", &["kustomize", dir])).unwrap()
}

fn kinds(docs: &[Value]) -> BTreeSet<String> {
    docs.iter()
        .filter_map(|d| d["kind"].as_str().map(str::to_string))
        .collect()
}

/// `kubectl apply -k deploy/` works on a plain cluster: no object of a CRD in deploy/ or the single-replica
/// example. The component adds the ServiceMonitor and PrometheusRule with the label kube-prometheus-stack's
/// Prometheus selects, and an overlay changes that label and the image without the kustomize CLI.
#[test]
fn base_needs_no_crds_and_the_component_adds_the_operator_objects() {
    let operator = |docs: &[Value]| -> Vec<(String, Value)> {
        docs.iter()
            .filter(|d| {
                d["apiVersion"]
                    .as_str()
                    .is_some_and(|v| v.starts_with("monitoring.coreos.com/"))
            })
            .map(|d| (d["kind"].as_str().unwrap().to_string(), d.clone()))
            .collect()
    };
    for plain in ["deploy", "deploy/examples/single"] {
        let docs = render(plain);
        assert!(
            kinds(&docs).contains("ConfigMap"),
            "{plain}: nothing rendered"
        );
        let extra = operator(&docs);
        assert!(
            extra.is_empty(),
            "{plain} needs the prometheus-operator CRDs for {:?}",
            extra.iter().map(|(k, _)| k).collect::<Vec<_>>()
        );
    }
    let mine = readme_overlay();
    let component_only = tempfile::Builder::new()
        .prefix(".component-overlay-")
        .tempdir_in(root())
        .unwrap();
    std::fs::write(
        component_only.path().join("kustomization.yaml"),
        "resources: [../deploy]\ncomponents: [../deploy/components/prometheus-operator]\n",
    )
    .unwrap();
    for (overlay, release, image) in [
        (
            component_only.path().to_string_lossy().into_owned(),
            "kube-prometheus-stack",
            "herald:0.1.0",
        ),
        (
            mine.path().to_string_lossy().into_owned(),
            "prometheus",
            "registry.example.com/herald:0.1.0",
        ),
        (
            "deploy/examples/kube-prometheus-stack".to_string(),
            "prometheus",
            "registry.example.com/herald:0.1.0",
        ),
    ] {
        let docs = render(&overlay);
        let found = operator(&docs);
        let names: BTreeSet<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            BTreeSet::from(["PrometheusRule", "ServiceMonitor"]),
            "{overlay}"
        );
        for (kind, d) in &found {
            assert_eq!(
                d["metadata"]["labels"]["release"], release,
                "{overlay}: {kind} release label"
            );
            assert_eq!(d["metadata"]["namespace"], "herald", "{overlay}: {kind}");
        }
        let ds = docs.iter().find(|d| d["kind"] == "DaemonSet").unwrap();
        assert_eq!(
            ds["spec"]["template"]["spec"]["containers"][0]["image"], image,
            "{overlay}: image"
        );
    }
}

/// The README's install commands work as written: the local-cluster walk-through builds and loads the image
/// deploy/ runs (its `images:` entry, tagged with the crate's version), nothing needs the standalone kustomize
/// CLI, and every path the install sections name exists.
#[test]
fn readme_install_commands_match_the_manifests() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let kustomization = yaml(&root().join("deploy/kustomization.yaml"));
    let image = &kustomization["images"][0];
    assert_eq!(image["name"], "herald");
    assert_eq!(
        image["newTag"].as_str(),
        Some(env!("CARGO_PKG_VERSION")),
        "deploy/kustomization.yaml runs another version than the crate's"
    );
    let local = format!(
        "{}:{}",
        image["newName"].as_str().unwrap(),
        image["newTag"].as_str().unwrap()
    );
    for command in [
        format!("docker build -f deploy/Containerfile -t {local} ."),
        format!("kind load docker-image {local}"),
        format!("minikube image load {local}"),
        "kubectl apply -k deploy/".to_string(),
        "cargo install --path . --locked".to_string(),
    ] {
        assert!(readme.contains(&command), "README.md lacks `{command}`");
    }
    let path = regex::Regex::new(r"`(deploy/[A-Za-z0-9_./-]+)`").unwrap();
    let mut named = 0;
    for doc in ["README.md", "deploy/README.md"] {
        let text = std::fs::read_to_string(root().join(doc)).unwrap();
        assert!(
            !text.contains("kustomize edit"),
            "{doc}: `kustomize edit` needs the standalone kustomize CLI"
        );
        for m in path.captures_iter(&text) {
            let p = m[1].trim_end_matches('/');
            assert!(
                root().join(p).exists(),
                "{doc} names {p}, which does not exist"
            );
            named += 1;
        }
    }
    assert!(
        named >= 5,
        "the install docs name almost no path of deploy/"
    );
}

#[test]
fn prometheus_rule_in_deploy_is_the_rule_file() {
    let generated = run_ok("python3", &["tests/ops/prometheusrule.py"]);
    let committed = std::fs::read_to_string(root().join(PROMETHEUS_RULE)).unwrap();
    assert!(
        generated == committed,
        "{PROMETHEUS_RULE} is out of date: run `python3 tests/ops/prometheusrule.py > {PROMETHEUS_RULE}`"
    );
}

/// `kubectl kustomize` renders every kustomization; every manifest validates against the Kubernetes OpenAPI
/// schemas offline (and the operator kinds structurally); every rendered ConfigMap passes `herald config check`.
#[test]
fn kustomizations_render_and_validate_offline() {
    let (Some(_), Some(())) = (
        common::fixtures::tool(&["kubectl"], "kubernetes-client"),
        common::fixtures::python_module("kubernetes_validate", "kubernetes-validate"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let overlay = readme_overlay();
    let mine = overlay.path().to_string_lossy().into_owned();
    let mut rendered = Vec::new();
    for (i, kustomization) in KUSTOMIZATIONS
        .iter()
        .copied()
        .chain([mine.as_str()])
        .enumerate()
    {
        let yaml = run_ok("kubectl", &["kustomize", kustomization]);
        let path = dir.path().join(format!(
            "{i}-{}.yaml",
            Path::new(kustomization)
                .file_name()
                .unwrap()
                .to_string_lossy()
        ));
        std::fs::write(&path, yaml).unwrap();
        rendered.push(path.to_string_lossy().into_owned());
    }
    let configs = dir.path().join("configs");
    std::fs::create_dir(&configs).unwrap();
    let mut args = vec![
        "tests/ops/validate_manifests.py".to_string(),
        "--dump-configs".to_string(),
        configs.to_string_lossy().into_owned(),
    ];
    args.extend(rendered);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let report = run_ok("python3", &args);
    assert!(report.starts_with("ok:"), "{report}");

    let mut checked = 0;
    for entry in std::fs::read_dir(&configs).unwrap() {
        let path = entry.unwrap().path();
        let out = Command::new(common::herald_bin())
            .args(["config", "check"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "herald config check {}: {}{}",
            path.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert_eq!(
        checked,
        KUSTOMIZATIONS.len() + 1,
        "expected one herald config per kustomization"
    );
}

/// The DaemonSet's config is the default configuration with JSON diagnostics, nothing silently different.
#[test]
fn deployed_config_is_the_default_with_json_logs() {
    let default = yaml(&root().join("src/default-config.yaml"));
    let mut deployed = yaml(&root().join("deploy/base/config.yaml"));
    assert_eq!(deployed["log"]["format"], "json");
    deployed["log"]["format"] = default["log"]["format"].clone();
    assert_eq!(deployed, default);
}

/// Every datasource is a template variable, the schema is current, ids are unique, every panel has a query.
#[test]
fn dashboards_are_portable_grafana_json() {
    for (file, d) in dashboards() {
        assert!(
            d["schemaVersion"].as_u64().unwrap_or(0) >= 39,
            "{file}: schemaVersion"
        );
        assert!(
            d["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{file}: title"
        );
        let vars = d["templating"]["list"].as_array().unwrap();
        assert!(
            vars.iter().any(|v| v["type"] == "datasource"
                && v["query"] == "prometheus"
                && v["name"] == "datasource"),
            "{file}: no ${{datasource}} variable"
        );
        let mut ids = BTreeSet::new();
        for p in d["panels"].as_array().unwrap() {
            let title = p["title"].as_str().unwrap_or_default();
            assert!(
                ids.insert(p["id"].as_u64().unwrap()),
                "{file}: duplicate id {}",
                p["id"]
            );
            assert!(
                p["gridPos"]["w"].as_u64().is_some(),
                "{file}: {title}: gridPos"
            );
            if p["type"] == "row" {
                continue;
            }
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{file}: {title}: no targets");
            for t in targets.iter().chain(std::iter::once(p)) {
                let uid = t["datasource"]["uid"].as_str().unwrap_or_default();
                assert!(
                    uid == "${datasource}" || uid == "${loki}",
                    "{file}: {title}: datasource uid {uid:?} is not a template variable"
                );
            }
            for t in targets {
                assert!(
                    t["expr"].as_str().is_some_and(|e| !e.is_empty()),
                    "{file}: {title}: empty expr"
                );
            }
        }
        // No UID of a concrete datasource anywhere (the built-in Grafana annotation source is not one).
        let text = d.to_string();
        for m in text.match_indices("\"uid\":\"") {
            let rest = &text[m.0 + 7..];
            let uid = &rest[..rest.find('"').unwrap()];
            assert!(
                uid.starts_with("${") || uid == "-- Grafana --" || uid.starts_with("herald-"),
                "{file}: hard-coded uid {uid:?}"
            );
        }
    }
}

/// Every PromQL expression of the dashboards (panels and variable queries) parses: promtool checks them as
/// recording rules. (tests/ops/ops_live.rs runs them against a real Prometheus.)
#[test]
fn dashboard_expressions_parse_with_promtool() {
    let Some(_) = common::fixtures::tool(&["promtool"], "prometheus") else {
        return;
    };
    let mut rules = String::from("groups:\n  - name: dashboards\n    rules:\n");
    let queries = ops::prometheus_queries();
    let n = queries.len();
    for (i, q) in queries.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:expr_{i}\n        expr: {}\n",
            serde_json::to_string(&ops::substitute(&q.expr)).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dashboards.rules.yaml");
    std::fs::write(&path, rules).unwrap();
    let out = run("promtool", &["check", "rules", path.to_str().unwrap()]);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        // Name the dashboard and panel of each expression promtool refused.
        let which = regex::Regex::new(r"dashboard:expr_(\d+)").unwrap();
        let culprits: Vec<String> = which
            .captures_iter(&text)
            .map(|c| {
                let q = &queries[c[1].parse::<usize>().unwrap()];
                format!("{} / {}: {}", q.dashboard, q.panel, q.expr)
            })
            .collect();
        panic!(
            "dashboard queries promtool cannot parse:\n{}\n\n{text}",
            culprits.join("\n")
        );
    }
    assert!(
        text.contains(&format!("SUCCESS: {n} rules found")),
        "{text}"
    );
}

/// Every `herald_*` metric an alert or a dashboard uses is exported by herald (telemetry::CATALOGUE): a typo
/// in a metric name fails here, not silently in Grafana. alerts/README.md lists only other exporters' metrics as
/// coming from elsewhere, never a herald one.
#[test]
fn every_metric_used_is_exported() {
    let exported: BTreeSet<&str> = herald::telemetry::CATALOGUE
        .iter()
        .map(|d| d.name)
        .collect();
    let readme = std::fs::read_to_string(root().join("alerts/README.md")).unwrap();
    let others = readme
        .split("## Metrics from other exporters")
        .nth(1)
        .expect("alerts/README.md: section 'Metrics from other exporters'");
    let name = regex::Regex::new(r"herald_[a-z_]+").unwrap();
    assert!(
        !name.is_match(others),
        "alerts/README.md lists a herald metric as coming from another exporter"
    );
    let mut used: BTreeMap<String, String> = BTreeMap::new();
    let rules = std::fs::read_to_string(root().join("alerts/herald.rules.yaml")).unwrap();
    for m in name.find_iter(&rules) {
        used.insert(m.as_str().to_string(), "alerts/herald.rules.yaml".into());
    }
    for (file, d) in dashboards() {
        for m in name.find_iter(&d.to_string()) {
            used.insert(m.as_str().to_string(), format!("dashboards/{file}"));
        }
    }
    assert!(
        used.len() > 10,
        "found almost no herald metric in the alerts and dashboards: {used:?}"
    );
    for (metric, file) in used {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| metric.strip_suffix(s))
            .unwrap_or(&metric);
        assert!(
            exported.contains(metric.as_str()) || exported.contains(base),
            "{file} uses {metric}, which herald does not export"
        );
    }
}

/// The Containerfile cannot be built here (no container daemon); check what the manifests rely on: a build stage
/// and a static, non-root final stage whose user and port match the DaemonSet.
#[test]
fn containerfile_matches_the_manifests() {
    let text = std::fs::read_to_string(root().join("deploy/Containerfile")).unwrap();
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "not a multi-stage build");
    assert!(
        froms[0].contains("alpine") || froms[0].contains("musl"),
        "the build stage must link statically (musl): {}",
        froms[0]
    );
    let last = froms[froms.len() - 1];
    assert!(
        last.contains("distroless/static") || last.contains("scratch"),
        "the final stage must be a static base: {last}"
    );
    assert!(text.contains("--locked"), "build with --locked");
    // Pinned base images: a digest, or at least a full version tag for the build stage (distroless has no
    // versioned tags) and, for any image not pinned by digest, the way to look the digest up.
    let full_version = regex::Regex::new(r":[0-9]+\.[0-9]+\.[0-9]+[^ ]*( |$)").unwrap();
    assert!(
        froms[0].contains("@sha256:") || full_version.is_match(froms[0]),
        "the build stage's base image needs a full version tag or a digest: {}",
        froms[0]
    );
    if froms.iter().any(|f| !f.contains("@sha256:")) {
        assert!(
            text.contains("imagetools inspect") && text.contains("@sha256:<digest>"),
            "a base image is not pinned by digest and the Containerfile does not say how to pin it"
        );
    }
    let daemonset = yaml(&root().join("deploy/daemonset/daemonset.yaml"));
    let pod = &daemonset["spec"]["template"]["spec"];
    let uid = pod["securityContext"]["runAsUser"].as_u64().unwrap();
    assert!(
        text.contains(&format!("USER {uid}:")) || text.contains(&format!("USER {uid}\n")),
        "the image's USER must be the DaemonSet's runAsUser {uid}"
    );
    let port = pod["containers"][0]["ports"][0]["containerPort"]
        .as_u64()
        .unwrap();
    assert!(text.contains(&format!("EXPOSE {port}")), "EXPOSE {port}");
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap_or_default();
    assert!(
        ignore.lines().any(|l| l.trim() == "target"),
        ".dockerignore must keep target/ out of the build context"
    );
}
