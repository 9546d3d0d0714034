//! Helpers shared by the operations-asset tests: the dashboards and their PromQL.

use std::path::PathBuf;

use serde_json::Value;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `(file name, dashboard JSON)` of every dashboard, sorted by file name.
pub fn dashboards() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root().join("dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let json: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((
                path.file_name().unwrap().to_string_lossy().into_owned(),
                json,
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// One PromQL query of a dashboard: where it comes from and the expression as Grafana stores it.
pub struct PanelQuery {
    pub dashboard: String,
    pub panel: String,
    pub expr: String,
}

/// Every Prometheus query of every dashboard: panel targets, and variable queries (`label_values(m, l)` as
/// `count by (l) (m)`, which returns data exactly when the variable has values).
pub fn prometheus_queries() -> Vec<PanelQuery> {
    let label_values = regex::Regex::new(r"^label_values\((.*),\s*([A-Za-z_]+)\)$").unwrap();
    let mut out = Vec::new();
    for (file, d) in dashboards() {
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if t["datasource"]["type"] != "prometheus" {
                    continue;
                }
                out.push(PanelQuery {
                    dashboard: file.clone(),
                    panel: p["title"].as_str().unwrap_or_default().to_string(),
                    expr: t["expr"].as_str().unwrap_or_default().to_string(),
                });
            }
        }
        for v in d["templating"]["list"].as_array().unwrap() {
            if v["type"] != "query" {
                continue;
            }
            let q = v["definition"].as_str().unwrap_or_default();
            let caps = label_values
                .captures(q)
                .unwrap_or_else(|| panic!("{file}: variable {}: unexpected query {q}", v["name"]));
            out.push(PanelQuery {
                dashboard: file.clone(),
                panel: format!("variable {}", v["name"].as_str().unwrap_or_default()),
                expr: format!("count by ({}) ({})", &caps[2], &caps[1]),
            });
        }
    }
    out
}

/// Grafana's variables replaced by values Prometheus accepts: intervals by 1m, every other variable by `.*`
/// (all the dashboards' variables are used in `=~` matchers).
pub fn substitute(expr: &str) -> String {
    let mut s = expr.to_string();
    for from in ["$__rate_interval", "$__interval", "$__range"] {
        s = s.replace(from, "1m");
    }
    let var = regex::Regex::new(r"\$\{?[A-Za-z_][A-Za-z0-9_]*(:[a-z]+)?\}?").unwrap();
    var.replace_all(&s, ".*").into_owned()
}
