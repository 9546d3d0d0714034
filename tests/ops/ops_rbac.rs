//! deploy/'s RBAC against what the agent really does, per install: for deploy/ (DaemonSet), the single-replica
//! and the sidecar example, and deploy/ switched to the events.k8s.io/v1 API as deploy/README.md says, herald
//! runs against the simulator through a recording proxy as that install runs it (the rendered configuration,
//! the workload's environment and downward API, the Lease and ConfigMap the manifests create), through
//! relists, a leader's checkpoints, a rejected reload recorded twice as an Event (so the repeat is a patch)
//! and a shutdown. Every API request is turned into (API group, resource, verb, namespace, name), and
//! - each must be allowed by a rule bound to the workload's ServiceAccount (namespaces and `resourceNames`
//!   honoured as the API server does: a rule with resourceNames never allows a create or a list), and
//! - each granted verb must be used by some request: nothing is granted that herald does not use.

use crate::common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_sim::{RunningSim, SimOptions};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::Value;

/// One API request line: method and target (path and query).
#[derive(Debug, Clone)]
struct Call {
    method: String,
    target: String,
}

/// A resource request as the API server's authorizer sees it; the core group is "".
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Request {
    group: String,
    resource: String,
    verb: String,
    namespace: Option<String>,
    name: Option<String>,
}

/// One verb on one resource, from a rule of a Role (in its namespace) or ClusterRole (anywhere, when bound by a
/// ClusterRoleBinding), limited to `names` when the rule has resourceNames.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Grant {
    from: String,
    group: String,
    resource: String,
    verb: String,
    namespace: Option<String>,
    names: Option<BTreeSet<String>>,
}

impl Grant {
    /// RBAC's matching: a rule with resourceNames matches only requests for one of those names, so never a
    /// create (the name is in the body) or a list/watch of the collection.
    fn allows(&self, r: &Request) -> bool {
        self.group == r.group
            && self.resource == r.resource
            && self.verb == r.verb
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| r.namespace.as_ref() == Some(ns))
            && self
                .names
                .as_ref()
                .is_none_or(|names| r.name.as_ref().is_some_and(|n| names.contains(n)))
    }
}

/// The request's attributes; None for discovery and other non-resource URLs (which every authenticated
/// client may read through the cluster's default `system:discovery` role).
fn authorize(call: &Call) -> Option<Request> {
    let (path, query) = call.target.split_once('?').unwrap_or((&call.target, ""));
    let watch_param = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let (watch_path, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        rest => (false, rest),
    };
    let (namespace, resource, name) = match rest {
        [res] => (None, *res, None),
        [res, name] if *res != "namespaces" => (None, *res, Some(*name)),
        ["namespaces", ns, res] => (Some(ns.to_string()), *res, None),
        ["namespaces", ns, res, name, ..] => (Some(ns.to_string()), *res, Some(*name)),
        _ => return None,
    };
    let verb = match (
        call.method.as_str(),
        name.is_some(),
        watch_path || watch_param,
    ) {
        ("GET", _, true) => "watch",
        ("GET", false, false) => "list",
        ("GET", true, false) => "get",
        ("POST", _, _) => "create",
        ("PUT", _, _) => "update",
        ("PATCH", _, _) => "patch",
        ("DELETE", false, _) => "deletecollection",
        ("DELETE", true, _) => "delete",
        _ => return None,
    };
    Some(Request {
        group: group.to_string(),
        resource: resource.to_string(),
        verb: verb.to_string(),
        namespace,
        name: name.map(str::to_string),
    })
}

/// A TCP proxy to `upstream` that records the request line of every request (bodies pass through untouched;
/// responses are copied byte for byte, so chunked watch streams work).
fn recording_proxy(upstream: SocketAddr) -> (SocketAddr, Arc<Mutex<Vec<Call>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let log = calls.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect(upstream) else {
                continue;
            };
            let (mut client_w, mut server_r) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut server_r, &mut client_w);
                let _ = client_w.shutdown(Shutdown::Both);
            });
            let log = log.clone();
            std::thread::spawn(move || {
                let _ = forward_requests(client, server, &log);
            });
        }
    });
    (addr, calls)
}

fn forward_requests(
    client: TcpStream,
    mut server: TcpStream,
    log: &Mutex<Vec<Call>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client);
    loop {
        let mut head = String::new();
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            let _ = server.shutdown(Shutdown::Write);
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let call = Call {
            method: parts.next().unwrap_or_default().to_string(),
            target: parts.next().unwrap_or_default().to_string(),
        };
        head.push_str(&line);
        let mut length = 0usize;
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            head.push_str(&line);
            if let Some((k, v)) = line.trim_end().split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        log.lock().unwrap().push(call);
        server.write_all(head.as_bytes())?;
        server.write_all(&body)?;
    }
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// Every grant the rendered bindings give the ServiceAccount `sa` of namespace `ns`.
fn grants_of(docs: &[Value], ns: &str, sa: &str) -> Vec<Grant> {
    let mut out = Vec::new();
    for binding in docs
        .iter()
        .filter(|d| d["kind"] == "RoleBinding" || d["kind"] == "ClusterRoleBinding")
    {
        let binding_ns = binding["metadata"]["namespace"].as_str();
        let bound = binding["subjects"].as_array().unwrap().iter().any(|s| {
            s["kind"] == "ServiceAccount"
                && s["name"] == sa
                && s["namespace"].as_str().or(binding_ns) == Some(ns)
        });
        if !bound {
            continue;
        }
        let role_kind = binding["roleRef"]["kind"].as_str().unwrap();
        let role_name = binding["roleRef"]["name"].as_str().unwrap();
        let role = docs
            .iter()
            .find(|d| {
                d["kind"] == role_kind
                    && d["metadata"]["name"] == role_name
                    && (role_kind == "ClusterRole"
                        || d["metadata"]["namespace"].as_str() == binding_ns)
            })
            .unwrap_or_else(|| panic!("{role_kind}/{role_name} is not rendered"));
        // A RoleBinding grants in its namespace only, even when it refers to a ClusterRole.
        let scope = (binding["kind"] == "RoleBinding").then(|| binding_ns.unwrap().to_string());
        for rule in role["rules"].as_array().unwrap() {
            assert!(
                rule.get("nonResourceURLs").is_none(),
                "{role_kind}/{role_name}: unexpected rule {rule}"
            );
            let names = rule
                .get("resourceNames")
                .map(|n| strs(n).into_iter().collect::<BTreeSet<_>>());
            for group in strs(&rule["apiGroups"]) {
                for resource in strs(&rule["resources"]) {
                    for verb in strs(&rule["verbs"]) {
                        assert!(
                            group != "*" && resource != "*" && verb != "*",
                            "{role_kind}/{role_name}: wildcard in {rule}"
                        );
                        out.push(Grant {
                            from: format!("{role_kind}/{role_name}"),
                            group: group.clone(),
                            resource: resource.clone(),
                            verb,
                            namespace: scope.clone(),
                            names: names.clone(),
                        });
                    }
                }
            }
        }
    }
    out
}

fn render(dir: &str) -> Vec<Value> {
    let out = Command::new("kubectl")
        .args(["kustomize", dir])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run kubectl ({e}): run tools/test, which installs it"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_saphyr::from_multiple(&String::from_utf8(out.stdout).unwrap()).unwrap()
}

/// How an install runs herald: its namespace and ServiceAccount, the configuration file it mounts, and the
/// environment of its container (downward API values filled in as the kubelet would).
struct Install {
    namespace: String,
    service_account: String,
    config: String,
    env: Vec<(String, String)>,
}

fn install(docs: &[Value], state_dir: &str) -> Install {
    let workload = docs
        .iter()
        .find(|d| ["DaemonSet", "Deployment", "Pod"].contains(&d["kind"].as_str().unwrap_or("")))
        .expect("no workload rendered");
    let namespace = workload["metadata"]["namespace"]
        .as_str()
        .unwrap()
        .to_string();
    let pod = if workload["kind"] == "Pod" {
        &workload["spec"]
    } else {
        &workload["spec"]["template"]["spec"]
    };
    let container = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "herald")
        .expect("no herald container");
    let config_volume = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/etc/herald")
        .expect("no configuration mounted at /etc/herald")["name"]
        .clone();
    let config_map = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == config_volume)
        .unwrap()["configMap"]["name"]
        .clone();
    let config = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == config_map)
        .unwrap()["data"]["herald.yaml"]
        .as_str()
        .unwrap()
        .to_string();
    let mut env = Vec::new();
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap().to_string();
        let value = match (
            e["value"].as_str(),
            e["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        ) {
            // The state volume's mount point, on this machine.
            (Some(_), _) if name == "HERALD_STATE_DIR" => state_dir.to_string(),
            (Some(v), _) => v.to_string(),
            (None, Some("metadata.namespace")) => namespace.clone(),
            (None, Some("metadata.name")) => "herald-test-pod".to_string(),
            (None, Some("spec.nodeName")) => "node-1".to_string(),
            other => panic!("env {name}: unexpected source {other:?}"),
        };
        env.push((name, value));
    }
    Install {
        namespace,
        service_account: pod["serviceAccountName"]
            .as_str()
            .unwrap_or("default")
            .to_string(),
        config,
        env,
    }
}

/// Create the Leases and ConfigMaps of the rendering in the simulator, as `kubectl apply` would.
async fn apply_objects(sim: &RunningSim, docs: &[Value]) {
    let client = common::client(sim);
    for d in docs {
        let ns = d["metadata"]["namespace"].as_str().unwrap_or("default");
        match d["kind"].as_str() {
            Some("Lease") => {
                let lease: Lease = serde_json::from_value(d.clone()).unwrap();
                Api::<Lease>::namespaced(client.clone(), ns)
                    .create(&PostParams::default(), &lease)
                    .await
                    .unwrap();
            }
            Some("ConfigMap") => {
                let cm: ConfigMap = serde_json::from_value(d.clone()).unwrap();
                Api::<ConfigMap>::namespaced(client.clone(), ns)
                    .create(&PostParams::default(), &cm)
                    .await
                    .unwrap();
            }
            _ => {}
        }
    }
}

fn signal(herald: &common::Herald, sig: &str) {
    herald.child.signal(sig);
}

/// Run herald as `install` runs it, against the simulator through the proxy: until ready, then a reload of an
/// invalid file recorded twice (a ConfigRejected Event, then its repeat), a few seconds for a leader's
/// checkpoints, and a SIGTERM. Returns the resource requests it made.
fn observe(sim_addr: SocketAddr, install: &Install) -> Vec<Request> {
    let (proxy, calls) = recording_proxy(sim_addr);
    let env: Vec<(&str, &str)> = install
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut herald = common::start_herald_with_env(
        common::free_addr(),
        &format!("http://{proxy}"),
        &install.config,
        Stdio::null(),
        &["--log-level", "error"],
        &env,
    );
    herald.wait_ready();
    std::fs::write(herald.config_path(), "filters:\n  types: 42\n").unwrap();
    // The file change is also noticed by polling, so a third rejection may come: wait for at least n.
    let rejected = |n: f64| {
        common::wait_until(
            Duration::from_secs(30),
            "ConfigRejected Events written",
            || {
                herald.metric(
                    "herald_self_events_total",
                    &[("reason", "ConfigRejected"), ("result", "written")],
                ) >= n
            },
        )
    };
    signal(&herald, "HUP");
    rejected(1.0);
    signal(&herald, "HUP");
    rejected(2.0);
    // Long enough for a daemonset leader's checkpoints (checkpoint_interval: 2s).
    std::thread::sleep(Duration::from_secs(3));
    let status = herald.terminate(Duration::from_secs(15));
    assert!(status.success(), "herald exited with {status}");
    let calls = calls.lock().unwrap().clone();
    assert!(!calls.is_empty(), "no request went through the proxy");
    calls.iter().filter_map(authorize).collect()
}

/// deploy/ with `source.events.api: events.k8s.io/v1` and the ClusterRole's first rule moved to that group, as
/// deploy/README.md tells users to do.
fn with_events_k8s_io(mut docs: Vec<Value>) -> Vec<Value> {
    let mut changed = 0;
    for d in &mut docs {
        if d["kind"] == "ConfigMap" && d["data"]["herald.yaml"].is_string() {
            let text = d["data"]["herald.yaml"].as_str().unwrap();
            assert!(
                text.contains("    api: core/v1\n"),
                "no `api: core/v1` in the configuration"
            );
            d["data"]["herald.yaml"] =
                Value::from(text.replace("    api: core/v1\n", "    api: events.k8s.io/v1\n"));
            changed += 1;
        }
        if d["kind"] == "ClusterRole" && d["metadata"]["name"] == "herald" {
            assert_eq!(d["rules"][0]["resources"], serde_json::json!(["events"]));
            d["rules"][0]["apiGroups"] = serde_json::json!(["events.k8s.io"]);
            changed += 1;
        }
    }
    assert_eq!(changed, 2, "configuration and ClusterRole not both found");
    docs
}

/// deploy/ (DaemonSet), the single replica and the sidecar, and deploy/ switched to the events.k8s.io/v1 API:
/// every request allowed, every grant used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_grants_exactly_the_api_calls_the_agent_makes() {
    let Some(_) = common::fixtures::tool(&["kubectl"], "kubernetes-client") else {
        return;
    };
    let variants = [
        ("deploy", render("deploy")),
        ("deploy/examples/single", render("deploy/examples/single")),
        ("deploy/examples/sidecar", render("deploy/examples/sidecar")),
        (
            "deploy with events.k8s.io/v1",
            with_events_k8s_io(render("deploy")),
        ),
    ];
    for (dir, docs) in variants {
        let mut opts = SimOptions::demo(3, 30.0);
        // Relists (410) and cut streams, so every request kind of the watch loop happens.
        opts.faults = "gone-every=40,disconnect-every=25".parse().unwrap();
        let sim = RunningSim::start(opts, SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .unwrap();
        apply_objects(&sim, &docs).await;
        let state = tempfile::tempdir().unwrap();
        let install = install(&docs, state.path().to_str().unwrap());
        let grants = grants_of(&docs, &install.namespace, &install.service_account);
        assert!(
            !grants.is_empty(),
            "{dir}: nothing granted to {}",
            install.service_account
        );
        if dir.ends_with("sidecar") {
            assert!(
                grants
                    .iter()
                    .all(|g| g.namespace.as_deref() == Some(install.namespace.as_str())),
                "{dir}: the sidecar must not need rights outside its namespace: {grants:?}"
            );
        }
        for g in grants.iter().filter(|g| g.from.starts_with("ClusterRole/")) {
            assert!(
                ["list", "watch"].contains(&g.verb.as_str()),
                "{dir}: a ClusterRole must only read; it grants {g:?}"
            );
        }

        let requests = observe(sim.addr(), &install);
        let events_watch = |r: &Request| r.resource == "events" && r.verb == "watch";
        assert!(
            requests.iter().any(events_watch),
            "{dir}: herald never watched Events: is the proxy recording?"
        );
        let mut denied = BTreeSet::new();
        for r in &requests {
            if !grants.iter().any(|g| g.allows(r)) {
                denied.insert(r.clone());
            }
        }
        assert!(
            denied.is_empty(),
            "{dir}: herald made requests its RBAC does not allow: {denied:#?}"
        );
        let unused: Vec<&Grant> = grants
            .iter()
            .filter(|g| !requests.iter().any(|r| g.allows(r)))
            .collect();
        assert!(
            unused.is_empty(),
            "{dir}: granted but never used by herald: {unused:#?}"
        );
        let used: BTreeSet<String> = grants
            .iter()
            .map(|g| format!("{} {}/{} {}", g.from, g.group, g.resource, g.verb))
            .collect();
        eprintln!(
            "{dir}: every grant used ({} requests): {used:?}",
            requests.len()
        );
        sim.shutdown().await;
    }
}
