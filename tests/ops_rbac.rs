//! deploy/'s RBAC against what the agent really does: herald runs against the simulator through a recording
//! proxy, every API request is turned into (API group, resource, verb, namespace), and the rendered ClusterRole
//! and Role must allow each of them, and grant nothing beyond them except the grants listed in `AHEAD` (code that
//! the simulator does not exercise yet, each with its reason).

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald::sim::{RunningSim, SimOptions};
use serde_json::Value;

/// `(api group, resource, verb)`; the core group is "".
type Grant = (String, String, String);

/// Granted by deploy/ for code paths the simulator does not serve or this test does not drive.
const AHEAD: &[(&str, &str, &str, &str)] = &[
    (
        "",
        "events",
        "get",
        "read one Event by name (kubectl-style reads, herald's own-Event dedup)",
    ),
    ("events.k8s.io", "events", "get", "as above, new Events API"),
    (
        "kubevirt.io",
        "virtualmachines",
        "*",
        "the KubeVirt source (get/list/watch)",
    ),
    (
        "kubevirt.io",
        "virtualmachineinstances",
        "*",
        "the KubeVirt source (get/list/watch)",
    ),
    (
        "kubevirt.io",
        "virtualmachineinstancemigrations",
        "*",
        "the KubeVirt source (get/list/watch)",
    ),
    ("", "events", "create", "herald's own Events about itself"),
    (
        "",
        "events",
        "patch",
        "herald's own Events about itself (count updates)",
    ),
    (
        "events.k8s.io",
        "events",
        "create",
        "herald's own Events, new Events API",
    ),
    (
        "events.k8s.io",
        "events",
        "patch",
        "herald's own Events, new Events API",
    ),
];

fn is_ahead(g: &Grant) -> bool {
    AHEAD
        .iter()
        .any(|(group, res, verb, _)| *group == g.0 && *res == g.1 && (*verb == "*" || *verb == g.2))
}

/// One API request: method, path and query.
#[derive(Debug, Clone)]
struct Call {
    method: String,
    target: String,
}

/// `(group, resource, verb, namespace)` of a resource request; None for discovery and other non-resource URLs.
fn authorize(call: &Call) -> Option<(Grant, Option<String>)> {
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
    Some((
        (group.to_string(), resource.to_string(), verb.to_string()),
        namespace,
    ))
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

/// The `rules` of the rendered object of `kind` named `name` in `docs`, as grants (with `*` kept).
fn rules(docs: &[Value], kind: &str, name: &str, namespace: Option<&str>) -> Vec<Grant> {
    let doc = docs
        .iter()
        .find(|d| {
            d["kind"] == kind
                && d["metadata"]["name"] == name
                && namespace.is_none_or(|ns| d["metadata"]["namespace"] == ns)
        })
        .unwrap_or_else(|| panic!("no {kind}/{name} rendered"));
    let mut out = Vec::new();
    for rule in doc["rules"].as_array().unwrap() {
        assert!(
            rule.get("resourceNames").is_none() && rule.get("nonResourceURLs").is_none(),
            "{kind}/{name}: unexpected rule {rule}"
        );
        let strs = |k: &str| -> Vec<String> {
            rule[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        };
        for g in strs("apiGroups") {
            for r in strs("resources") {
                for v in strs("verbs") {
                    assert!(
                        g != "*" && r != "*" && v != "*",
                        "{kind}/{name}: wildcard in {rule}"
                    );
                    out.push((g.clone(), r.clone(), v));
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

/// Run herald with `args` against the simulator through the proxy until ready and a little longer; return the
/// resource requests it made.
fn observe(
    sim_addr: SocketAddr,
    args: &[&str],
    env: &[(&str, &str)],
) -> Vec<(Grant, Option<String>)> {
    let (proxy, calls) = recording_proxy(sim_addr);
    let mut all_args = vec!["--log-level", "error"];
    all_args.extend_from_slice(args);
    let mut herald = common::start_herald_with_env(
        common::free_addr(),
        &format!("http://{proxy}"),
        "",
        Stdio::null(),
        &all_args,
        env,
    );
    herald.wait_ready();
    // Long enough for a daemonset leader's first checkpoint (checkpoint_interval: 2s).
    std::thread::sleep(Duration::from_secs(3));
    let status = herald.terminate(Duration::from_secs(15));
    assert!(status.success(), "herald exited with {status}");
    let calls = calls.lock().unwrap().clone();
    assert!(!calls.is_empty(), "no request went through the proxy");
    calls.iter().filter_map(authorize).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_grants_exactly_the_api_calls_the_agent_makes() {
    let Some(_) = common::fixtures::tool(&["kubectl"], "kubernetes-client") else {
        return;
    };
    let mut opts = SimOptions::demo(3, 30.0);
    // Relists (410) and cut streams, so every request kind of the watch loop happens.
    opts.faults = "gone-every=40,disconnect-every=25".parse().unwrap();
    let sim = RunningSim::start(opts, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();

    let deploy = render("deploy");
    let cluster: BTreeSet<Grant> = rules(&deploy, "ClusterRole", "herald", None)
        .into_iter()
        .collect();
    let role: BTreeSet<Grant> = rules(&deploy, "Role", "herald", Some("herald"))
        .into_iter()
        .collect();
    for g in &cluster {
        assert!(
            ["get", "list", "watch"].contains(&g.2.as_str()),
            "the ClusterRole must only read; it grants {g:?}"
        );
    }

    // Single: cluster-wide, both Events APIs; DaemonSet: also the Lease and the leader's checkpoint
    // ConfigMap in herald's own namespace.
    let state = tempfile::tempdir().unwrap();
    let state = state.path().to_str().unwrap();
    let daemonset = ["--mode", "daemonset", "--state-dir", state];
    let mut used: BTreeSet<Grant> = BTreeSet::new();
    for (args, env) in [
        (&[][..], &[][..]),
        (&["--events-api", "events.k8s.io/v1"][..], &[][..]),
        (
            &daemonset[..],
            &[("POD_NAMESPACE", "herald"), ("POD_NAME", "herald-0")][..],
        ),
    ] {
        for (grant, namespace) in observe(sim.addr(), args, env) {
            let allowed = cluster.contains(&grant)
                || (namespace.as_deref() == Some("herald") && role.contains(&grant));
            assert!(
                allowed,
                "herald {args:?} made a request deploy/ does not allow: {grant:?} in {namespace:?}"
            );
            used.insert(grant);
        }
    }
    let mut unexercised = Vec::new();
    for g in cluster.iter().chain(&role) {
        if !used.contains(g) {
            assert!(
                is_ahead(g),
                "deploy/ grants {g:?}, which herald never used against the simulator and AHEAD does not justify"
            );
            unexercised.push(format!("{g:?}"));
        }
    }
    eprintln!(
        "granted ahead of use (see AHEAD): {}",
        unexercised.join(", ")
    );
    for want in [
        ("", "events", "list"),
        ("", "events", "watch"),
        ("events.k8s.io", "events", "watch"),
    ] {
        let want = (want.0.to_string(), want.1.to_string(), want.2.to_string());
        assert!(
            used.contains(&want),
            "herald never made {want:?}: is the proxy recording?"
        );
    }

    // Sidecar: only its own namespace, with the namespaced Role of deploy/examples/sidecar.
    let sidecar = render("deploy/examples/sidecar");
    let sidecar_role: BTreeSet<Grant> = rules(&sidecar, "Role", "herald-sidecar", Some("shop"))
        .into_iter()
        .collect();
    assert!(
        !sidecar
            .iter()
            .any(|d| d["kind"] == "ClusterRole" || d["kind"] == "ClusterRoleBinding"),
        "the sidecar example must not need cluster-wide rights"
    );
    // The sidecar's own config (mode: sidecar, so scope own) and its namespace from the downward API, as in the example pod.
    let own = observe(
        sim.addr(),
        &["--mode", "sidecar"],
        &[("POD_NAMESPACE", "shop"), ("POD_NAME", "shop-app")],
    );
    assert!(
        own.iter().any(|(g, _)| g.2 == "watch"),
        "the sidecar herald never watched: {own:?}"
    );
    for (grant, namespace) in own {
        assert!(
            namespace.as_deref() == Some("shop") && sidecar_role.contains(&grant),
            "a sidecar herald made a request its Role does not allow: {grant:?} in {namespace:?}"
        );
    }
    sim.shutdown().await;
}
