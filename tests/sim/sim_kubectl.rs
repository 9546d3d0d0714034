//! kubectl's everyday commands against `herald sim`, checked on what kubectl prints (the columns and rows a
//! real cluster gives), not only on the JSON: get events (-A, -o wide, --sort-by, -w, --chunk-size),
//! kubectl events, get vm,vmi,vmim with KubeVirt's columns, create and apply with validation on, and patch
//! of the status subresource. The expected rows are written out in each test from the objects it stored.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{start_herald, wait_until};
use herald_sim::{RunningSim, SimOptions};
use serde_json::{Value, json};

/// A tokio runtime serving a simulator while the test thread runs kubectl.
struct Cluster {
    rt: tokio::runtime::Runtime,
    sim: Option<RunningSim>,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start(opts: SimOptions) -> Option<Cluster> {
        common::fixtures::tool(&["kubectl"], "kubernetes-client")?;
        let rt = tokio::runtime::Runtime::new().unwrap();
        let sim = rt
            .block_on(RunningSim::start(opts, "127.0.0.1:0".parse().unwrap()))
            .unwrap();
        Some(Cluster {
            rt,
            sim: Some(sim),
            dir: tempfile::tempdir().unwrap(),
        })
    }

    fn sim(&self) -> &RunningSim {
        self.sim.as_ref().unwrap()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("kubectl");
        // A kubeconfig of the test's own (kubectl keeps its discovery and OpenAPI caches beside it).
        let kubeconfig = self.dir.path().join("kubeconfig");
        if !kubeconfig.exists() {
            std::fs::write(&kubeconfig, self.sim().kubeconfig_yaml()).unwrap();
        }
        c.args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env("KUBECACHEDIR", self.dir.path().join("cache"))
            .env("HOME", self.dir.path());
        c
    }

    /// Run kubectl; the output whatever the exit status.
    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Run kubectl, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Write a file into the test's folder; its path.
    fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_string_lossy().into_owned()
    }

    fn create(&self, ns: &str, obj: Value) {
        self.sim().store().create(ns, obj).unwrap();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(sim) = self.sim.take() {
            self.rt.block_on(sim.shutdown());
        }
    }
}

/// A printed table: its header names and, per row, the cells under each (cut at the header's column starts,
/// as kubectl's tab writer aligns one printed table).
fn parse_table(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<char> = lines.next().expect("a header line").chars().collect();
    let mut starts = Vec::new();
    let mut i = 0;
    while i < header.len() {
        if header[i] != ' ' && (i == 0 || (i >= 2 && header[i - 1] == ' ' && header[i - 2] == ' '))
        {
            starts.push(i);
        }
        i += 1;
    }
    let cut = |line: &[char], k: usize| -> String {
        let from = starts[k].min(line.len());
        let to = starts
            .get(k + 1)
            .map_or(line.len(), |s| (*s).min(line.len()));
        line[from..to].iter().collect::<String>().trim().to_string()
    };
    let names = (0..starts.len()).map(|k| cut(&header, k)).collect();
    let rows = lines
        .map(|l| {
            let chars: Vec<char> = l.chars().collect();
            (0..starts.len()).map(|k| cut(&chars, k)).collect()
        })
        .collect();
    (names, rows)
}

fn now_minus(secs: i64) -> String {
    (jiff::Timestamp::now() - jiff::SignedDuration::from_secs(secs))
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Three Events in the shapes real clusters write: a kubelet Event with a count, a scheduler Event with only
/// `eventTime` and the reporting fields, and a Node Event in a series. Ages are chosen away from the
/// boundaries where a second changes them (20m10s prints 20m, 3h1m10s prints 3h1m).
fn store_three_events(c: &Cluster) {
    c.create(
        "default",
        json!({"metadata": {"name": "web.1"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default", "fieldPath": "spec.containers{app}"},
            "reason": "BackOff", "type": "Warning", "message": "Back-off restarting failed container",
            "count": 7, "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": now_minus(3 * 3600 + 70), "lastTimestamp": now_minus(20 * 60 + 10)}),
    );
    c.create(
        "kube-system",
        json!({"metadata": {"name": "db.1"},
            "involvedObject": {"kind": "Pod", "name": "db", "namespace": "kube-system"},
            "reason": "Scheduled", "type": "Normal", "message": "Successfully assigned kube-system/db to node-0",
            "source": {}, "eventTime": format!("{}", now_minus(45 * 60 + 10).replace('Z', ".000000Z")),
            "firstTimestamp": null, "lastTimestamp": null,
            "reportingComponent": "default-scheduler", "reportingInstance": "default-scheduler-node-0"}),
    );
    c.create(
        "payments",
        json!({"metadata": {"name": "node-2.1"},
            "involvedObject": {"kind": "Node", "name": "node-2"},
            "reason": "OOMKilling", "type": "Warning", "message": "Memory cgroup out of memory",
            "firstTimestamp": now_minus(120 * 60 + 10),
            "series": {"count": 4, "lastObservedTime": now_minus(25 * 60 + 10).replace('Z', ".000000Z")},
            "source": {"component": "kernel-monitor", "host": "node-2"}}),
    );
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn get_events_prints_the_api_servers_columns_and_wide_adds_five() {
    let Some(c) = Cluster::start(SimOptions::quiet()) else {
        return;
    };
    store_three_events(&c);
    let (header, mut rows) = parse_table(&c.ok(&["get", "events", "-A"]));
    assert_eq!(
        header,
        strs(&[
            "NAMESPACE",
            "LAST SEEN",
            "TYPE",
            "REASON",
            "OBJECT",
            "MESSAGE"
        ])
    );
    rows.sort();
    assert_eq!(
        rows,
        vec![
            strs(&[
                "default",
                "20m",
                "Warning",
                "BackOff",
                "pod/web",
                "Back-off restarting failed container"
            ]),
            strs(&[
                "kube-system",
                "45m",
                "Normal",
                "Scheduled",
                "pod/db",
                "Successfully assigned kube-system/db to node-0"
            ]),
            strs(&[
                "payments",
                "25m",
                "Warning",
                "OOMKilling",
                "node/node-2",
                "Memory cgroup out of memory"
            ]),
        ]
    );

    let (header, mut rows) = parse_table(&c.ok(&["get", "events", "-A", "-o", "wide"]));
    assert_eq!(
        header,
        strs(&[
            "NAMESPACE",
            "LAST SEEN",
            "TYPE",
            "REASON",
            "OBJECT",
            "SUBOBJECT",
            "SOURCE",
            "MESSAGE",
            "FIRST SEEN",
            "COUNT",
            "NAME"
        ])
    );
    rows.sort();
    let wide: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r[5].clone(),
                r[6].clone(),
                r[8].clone(),
                r[9].clone(),
                r[10].clone(),
            ]
        })
        .collect();
    assert_eq!(
        wide,
        vec![
            strs(&[
                "spec.containers{app}",
                "kubelet, node-1",
                "3h1m",
                "7",
                "web.1"
            ]),
            strs(&[
                "",
                "default-scheduler, default-scheduler-node-0",
                "45m",
                "1",
                "db.1"
            ]),
            strs(&["", "kernel-monitor, node-2", "120m", "4", "node-2.1"]),
        ]
    );
}

#[test]
fn sort_by_last_timestamp_prints_every_event_in_time_order() {
    let Some(c) = Cluster::start(SimOptions::quiet()) else {
        return;
    };
    // Stored in name order; their last occurrences in another order.
    let minutes_ago = [("a", 30), ("b", 50), ("c", 12), ("d", 40), ("e", 21)];
    for (name, m) in minutes_ago {
        c.create(
            "default",
            json!({"metadata": {"name": name}, "involvedObject": {"kind": "Pod", "name": format!("pod-{name}")},
                "reason": "Pulled", "type": "Normal", "message": format!("pulled {name}"),
                "firstTimestamp": now_minus(m * 60 + 10), "lastTimestamp": now_minus(m * 60 + 10)}),
        );
    }
    let (header, rows) = parse_table(&c.ok(&["get", "events", "-A", "--sort-by=.lastTimestamp"]));
    assert_eq!(header[1], "LAST SEEN");
    let got: Vec<(String, String)> = rows.iter().map(|r| (r[4].clone(), r[1].clone())).collect();
    let want: Vec<(String, String)> = [("b", 50), ("d", 40), ("a", 30), ("e", 21), ("c", 12)]
        .iter()
        .map(|(n, m)| (format!("pod/pod-{n}"), format!("{m}m")))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn watching_events_keeps_the_event_columns_after_the_list() {
    let Some(c) = Cluster::start(SimOptions::quiet()) else {
        return;
    };
    store_three_events(&c);
    let mut child = c
        .command(&["get", "events", "-A", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next = || {
        rx.recv_timeout(Duration::from_secs(15))
            .expect("a line from kubectl -w")
    };
    let listed: Vec<String> = (0..4).map(|_| next()).collect();
    assert!(listed[0].starts_with("NAMESPACE"), "{listed:?}");
    for (ns, name, reason, kind, message) in [
        (
            "default",
            "late.1",
            "Killing",
            "Pod",
            "Stopping container app",
        ),
        (
            "checkout",
            "late.2",
            "FailedMount",
            "Pod",
            "MountVolume.SetUp failed for volume config",
        ),
    ] {
        c.create(
            ns,
            json!({"metadata": {"name": name}, "involvedObject": {"kind": kind, "name": "api"},
                "reason": reason, "type": "Warning", "message": message,
                "lastTimestamp": now_minus(0)}),
        );
        let line = next();
        // Each watched row is printed (and aligned) on its own: cells are at least two spaces apart.
        let cells: Vec<&str> = line
            .split("  ")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        assert_eq!(cells.len(), 6, "{line:?}");
        assert_eq!(
            (cells[0], cells[2], cells[3], cells[4], cells[5]),
            (ns, "Warning", reason, "pod/api", message),
            "{line:?}"
        );
        assert!(cells[1].ends_with('s'), "LAST SEEN {line:?}");
    }
    let _ = child.kill();
    let _ = child.wait();
    let extra: Vec<String> = rx.try_iter().collect();
    assert!(
        extra.iter().all(|l| !l.starts_with("NAMESPACE")),
        "no second header: {extra:?}"
    );
}

#[test]
fn kubectl_events_and_chunked_lists_print_every_event() {
    let Some(c) = Cluster::start(SimOptions::quiet()) else {
        return;
    };
    store_three_events(&c);
    for i in 0..4 {
        c.create(
            "default",
            json!({"metadata": {"name": format!("extra.{i}")}, "involvedObject": {"kind": "Pod", "name": format!("w-{i}")},
                "reason": "Created", "type": "Normal", "message": format!("Created container c{i}"),
                "lastTimestamp": now_minus(600)}),
        );
    }
    let (header, rows) = parse_table(&c.ok(&["events", "-A"]));
    assert_eq!(
        header,
        strs(&[
            "NAMESPACE",
            "LAST SEEN",
            "TYPE",
            "REASON",
            "OBJECT",
            "MESSAGE"
        ])
    );
    assert_eq!(rows.len(), 7, "{rows:?}");
    let web = rows
        .iter()
        .find(|r| r[4] == "Pod/web")
        .expect("the kubelet Event");
    assert!(web[1].starts_with("20m (x7 over 3h1m)"), "{web:?}");
    assert_eq!((web[2].as_str(), web[3].as_str()), ("Warning", "BackOff"));
    let node = rows
        .iter()
        .find(|r| r[4] == "Node/node-2")
        .expect("the Node Event");
    assert!(node[1].starts_with("25m (x4 over"), "{node:?}");

    let whole = parse_table(&c.ok(&["get", "events", "-A"])).1;
    let out = c.run(&["get", "events", "-A", "--chunk-size=2", "-v=6"]);
    assert!(out.status.success());
    let mut chunked = parse_table(&String::from_utf8_lossy(&out.stdout)).1;
    let log = String::from_utf8_lossy(&out.stderr);
    let pages = log
        .lines()
        .filter(|l| l.contains("/api/v1/events?") && l.contains("limit=2"))
        .count();
    let continued = log.lines().filter(|l| l.contains("continue=")).count();
    assert_eq!((pages, continued), (4, 3), "{log}");
    let mut whole = whole;
    whole.sort();
    chunked.sort();
    assert_eq!(chunked, whole);

    let bad = c.run(&[
        "get",
        "--raw",
        "/api/v1/events?limit=1&continue=not-a-token",
    ]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("Error from server (BadRequest): continue key is not valid"),
        "{err}"
    );
}

fn kubevirt_file(dir: &std::path::Path) -> std::path::PathBuf {
    let created = now_minus(3 * 3600 + 70);
    let items = json!([
        {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
         "metadata": {"name": "vm-a", "namespace": "vms", "creationTimestamp": created},
         "spec": {"runStrategy": "Always"},
         "status": {"printableStatus": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
        {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
         "metadata": {"name": "vm-b", "namespace": "vms", "creationTimestamp": created},
         "spec": {"runStrategy": "Halted"}, "status": {"printableStatus": "Stopped"}},
        {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
         "metadata": {"name": "vm-a", "namespace": "vms", "creationTimestamp": created},
         "status": {"phase": "Running", "nodeName": "node-1", "interfaces": [{"ipAddress": "10.244.0.12"}],
                    "conditions": [{"type": "Ready", "status": "True"}]}},
        {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
         "metadata": {"name": "mig-a", "namespace": "vms", "creationTimestamp": created},
         "spec": {"vmiName": "vm-a"}, "status": {"phase": "Succeeded"}},
    ]);
    let path = dir.join("vms.json");
    std::fs::write(
        &path,
        serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "List", "items": items})).unwrap(),
    )
    .unwrap();
    path
}

#[test]
fn get_vm_vmi_vmim_prints_kubevirts_columns() {
    // The file is written before the simulator starts (it loads it), into a folder of its own.
    let dir = tempfile::tempdir().unwrap();
    let path = kubevirt_file(dir.path());
    let Some(c) = Cluster::start(SimOptions {
        kubevirt: true,
        load: vec![path],
        ..SimOptions::quiet()
    }) else {
        return;
    };
    let out = c.ok(&["get", "vm,vmi,vmim", "-A"]);
    let sections: Vec<&str> = out.split("\n\n").filter(|s| !s.trim().is_empty()).collect();
    assert_eq!(sections.len(), 3, "{out}");
    let tables: Vec<(Vec<String>, Vec<Vec<String>>)> =
        sections.iter().map(|s| parse_table(s)).collect();
    assert_eq!(
        tables[0],
        (
            strs(&["NAMESPACE", "NAME", "AGE", "STATUS", "READY"]),
            vec![
                strs(&[
                    "vms",
                    "virtualmachine.kubevirt.io/vm-a",
                    "3h1m",
                    "Running",
                    "True"
                ]),
                strs(&[
                    "vms",
                    "virtualmachine.kubevirt.io/vm-b",
                    "3h1m",
                    "Stopped",
                    ""
                ]),
            ]
        )
    );
    assert_eq!(
        tables[1],
        (
            strs(&[
                "NAMESPACE",
                "NAME",
                "AGE",
                "PHASE",
                "IP",
                "NODENAME",
                "READY"
            ]),
            vec![strs(&[
                "vms",
                "virtualmachineinstance.kubevirt.io/vm-a",
                "3h1m",
                "Running",
                "10.244.0.12",
                "node-1",
                "True"
            ])]
        )
    );
    assert_eq!(
        tables[2],
        (
            strs(&["NAMESPACE", "NAME", "PHASE", "VMI"]),
            vec![strs(&[
                "vms",
                "virtualmachineinstancemigration.kubevirt.io/mig-a",
                "Succeeded",
                "vm-a"
            ])]
        )
    );
    // A stale write names the migration's resource, as the API server does.
    let stale = c.file(
        "stale.yaml",
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachineInstanceMigration\nmetadata:\n  name: mig-a\n  namespace: vms\n  resourceVersion: \"1\"\nspec:\n  vmiName: vm-a\n",
    );
    let out = c.run(&["replace", "-f", &stale]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Error from server (Conflict)")
            && err.contains(
                "Operation cannot be fulfilled on virtualmachineinstancemigrations.kubevirt.io \"mig-a\": the object has been modified"
            ),
        "{err}"
    );
    // The long names resolve too, and -o wide adds the VMI's priority-1 columns.
    let (header, _) =
        parse_table(&c.ok(&["get", "virtualmachineinstances", "-n", "vms", "-o", "wide"]));
    assert_eq!(
        header,
        strs(&[
            "NAME",
            "AGE",
            "PHASE",
            "IP",
            "NODENAME",
            "READY",
            "LIVE-MIGRATABLE",
            "PAUSED"
        ])
    );
}

const EVENT_YAML: &str = "apiVersion: v1
kind: Event
metadata:
  name: deploy.1
  namespace: default
involvedObject:
  kind: Deployment
  name: shop
  namespace: default
reason: ScalingReplicaSet
type: Normal
message: Scaled up replica set shop-6cdd54d56b to 1
source:
  component: deployment-controller
";

#[test]
fn create_and_apply_validate_with_the_servers_openapi() {
    let Some(c) = Cluster::start(SimOptions::quiet()) else {
        return;
    };
    // Validation on (kubectl's default): kubectl reads /openapi/v3 and has the server check the fields.
    let file = c.file("event.yaml", EVENT_YAML);
    assert_eq!(
        c.ok(&["create", "-f", &file]).trim(),
        "event/deploy.1 created"
    );
    let got: Value =
        serde_json::from_str(&c.ok(&["get", "event", "deploy.1", "-o", "json"])).unwrap();
    assert_eq!(got["reason"], "ScalingReplicaSet");
    assert_eq!(got["involvedObject"]["name"], "shop");

    let typo = c.file(
        "typo.yaml",
        &EVENT_YAML
            .replace("deploy.1", "deploy.2")
            .replace("  name: shop", "  nmae: shop")
            .replace("reason:", "colour: red\nreason:"),
    );
    let out = c.run(&["create", "-f", &typo]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "Error from server (BadRequest)",
        "strict decoding error",
        "unknown field \"colour\"",
        "unknown field \"involvedObject.nmae\"",
    ] {
        assert!(err.contains(want), "{want}: {err}");
    }
    assert!(c.sim().store().get("default", "deploy.2").is_none());

    let applied = c.file("applied.yaml", &EVENT_YAML.replace("deploy.1", "applied.1"));
    assert_eq!(
        c.ok(&["apply", "-f", &applied]).trim(),
        "event/applied.1 created"
    );
    assert_eq!(
        c.ok(&["apply", "-f", &applied]).trim(),
        "event/applied.1 unchanged"
    );
    let changed = c.file(
        "applied.yaml",
        &EVENT_YAML
            .replace("deploy.1", "applied.1")
            .replace("to 1", "to 3"),
    );
    assert_eq!(
        c.ok(&["apply", "-f", &changed]).trim(),
        "event/applied.1 configured"
    );
    let stored = c.sim().store().get("default", "applied.1").unwrap();
    assert_eq!(
        stored["message"],
        "Scaled up replica set shop-6cdd54d56b to 3"
    );
}

#[test]
fn status_is_written_through_its_subresource_only() {
    let Some(c) = Cluster::start(SimOptions {
        kubevirt: true,
        ..SimOptions::quiet()
    }) else {
        return;
    };
    let vm = c.file(
        "vm.yaml",
        "apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata:\n  name: vm-s\n  namespace: default\nspec:\n  runStrategy: Always\nstatus:\n  printableStatus: Running\n",
    );
    assert_eq!(
        c.ok(&["create", "-f", &vm]).trim(),
        "virtualmachine.kubevirt.io/vm-s created"
    );
    let get = |c: &Cluster| -> Value {
        serde_json::from_str(&c.ok(&["get", "vm", "vm-s", "-o", "json"])).unwrap()
    };
    assert!(
        get(&c).get("status").is_none(),
        "create drops a sent status"
    );
    assert_eq!(
        c.ok(&[
            "patch",
            "vm",
            "vm-s",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"printableStatus":"Starting"}}"#
        ])
        .trim(),
        "virtualmachine.kubevirt.io/vm-s patched"
    );
    // A write of the main resource changes the spec and leaves the status alone.
    c.ok(&[
        "patch",
        "vm",
        "vm-s",
        "--type=merge",
        "-p",
        r#"{"spec":{"runStrategy":"Halted"},"status":{"printableStatus":"Stopped"}}"#,
    ]);
    let now = get(&c);
    assert_eq!(now["status"]["printableStatus"], "Starting");
    assert_eq!(now["spec"]["runStrategy"], "Halted");
    let (_, rows) = parse_table(&c.ok(&["get", "vm", "vm-s"]));
    assert_eq!(rows[0][2], "Starting");

    // Events have no status subresource, as on a real API server.
    c.create(
        "default",
        json!({"metadata": {"name": "e"}, "involvedObject": {"kind": "Pod"}, "reason": "X"}),
    );
    let out = c.run(&[
        "patch",
        "event",
        "e",
        "--subresource=status",
        "--type=merge",
        "-p",
        "{}",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Error from server (NotFound)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn patch_json_and_merge_delete_and_typed_creates_answer_as_a_server_does() {
    let Some(c) = Cluster::start(SimOptions::quiet()) else {
        return;
    };
    c.create(
        "default",
        json!({"metadata": {"name": "p.1"}, "involvedObject": {"kind": "Pod", "name": "web"},
            "reason": "BackOff", "type": "Warning", "message": "Back-off", "count": 1}),
    );
    assert_eq!(
        c.ok(&[
            "patch",
            "event",
            "p.1",
            "--type=json",
            "-p",
            r#"[{"op":"replace","path":"/count","value":4},{"op":"add","path":"/involvedObject/fieldPath","value":"spec.containers{app}"}]"#
        ])
        .trim(),
        "event/p.1 patched"
    );
    let stored = c.sim().store().get("default", "p.1").unwrap();
    assert_eq!(
        (
            stored["count"].clone(),
            stored["involvedObject"]["fieldPath"].clone()
        ),
        (json!(4), json!("spec.containers{app}"))
    );
    assert_eq!(
        c.sim().truth().occurrences_total,
        4,
        "the raise is an occurrence"
    );
    let out = c.run(&[
        "patch",
        "event",
        "p.1",
        "--type=json",
        "-p",
        r#"[{"op":"test","path":"/count","value":9}]"#,
    ]);
    assert!(!out.status.success());
    c.ok(&[
        "patch",
        "event",
        "p.1",
        "-p",
        r#"{"message":"Back-off again"}"#,
    ]);
    assert_eq!(
        c.sim().store().get("default", "p.1").unwrap()["message"],
        "Back-off again"
    );
    assert_eq!(
        c.ok(&["delete", "event", "p.1"]).trim(),
        "event \"p.1\" deleted"
    );
    let out = c.run(&["get", "event", "p.1"]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("Error from server (NotFound): events \"p.1\" not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // kubectl's typed commands send protobuf, which the simulator does not read: it says so (415).
    let out = c.run(&["create", "configmap", "c1", "--from-literal=a=b"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("herald sim does not read application/vnd.kubernetes.protobuf"),
        "{err}"
    );
}

/// The real objects of the shared fixtures (Events of both APIs from real clusters, a Harvester cluster's VMs,
/// VMIs and migrations), loaded as captured: kubectl prints one row per object, with the cells read from the
/// objects here (an events.k8s.io/v1 object by its own field names).
#[test]
fn real_captured_objects_print_as_on_their_clusters() {
    let Some(dir) = common::fixtures() else {
        return;
    };
    let mut files = Vec::new();
    for sub in ["events", "events-v1", "kubevirt"] {
        for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            // Round-trip fuzz objects have synthetic values (control characters, names no cluster prints).
            if (name.ends_with(".json") || name.ends_with(".yaml"))
                && !name.contains("roundtrip-fuzz")
            {
                files.push(path);
            }
        }
    }
    let objects: Vec<Value> = files
        .iter()
        .flat_map(|f| common::fixture_objects(f))
        .collect();
    let Some(c) = Cluster::start(SimOptions {
        kubevirt: true,
        load: files,
        ..SimOptions::quiet()
    }) else {
        return;
    };
    let s = |v: &Value| v.as_str().unwrap_or_default().trim().to_string();
    let mut want_events: Vec<Vec<String>> = objects
        .iter()
        .filter(|o| o["kind"] == "Event")
        .map(|o| {
            let v1 = o["apiVersion"] == "events.k8s.io/v1";
            let regarding = if v1 {
                &o["regarding"]
            } else {
                &o["involvedObject"]
            };
            let kind = s(&regarding["kind"]).to_lowercase();
            let object = match s(&regarding["name"]) {
                n if n.is_empty() => kind,
                n => format!("{kind}/{n}"),
            };
            let ns = match s(&o["metadata"]["namespace"]) {
                n if n.is_empty() => "default".to_string(),
                n => n,
            };
            let message = s(if v1 { &o["note"] } else { &o["message"] });
            vec![ns, s(&o["type"]), s(&o["reason"]), object, message]
        })
        .collect();
    assert!(want_events.len() >= 8, "{}", want_events.len());
    let (_, rows) = parse_table(&c.ok(&["get", "events", "-A"]));
    let mut got: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r[0].clone(),
                r[2].clone(),
                r[3].clone(),
                r[4].clone(),
                r[5].clone(),
            ]
        })
        .collect();
    want_events.sort();
    got.sort();
    assert_eq!(got, want_events);

    let ready = |o: &Value| {
        o["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
            .map(|c| s(&c["status"]))
            .unwrap_or_default()
    };
    let out = c.ok(&["get", "vm,vmi,vmim", "-A"]);
    let sections: Vec<(Vec<String>, Vec<Vec<String>>)> = out
        .split("\n\n")
        .filter(|t| !t.trim().is_empty())
        .map(parse_table)
        .collect();
    let of = |kind: &'static str| objects.iter().filter(move |o| o["kind"] == kind);
    let mut want_vms: Vec<Vec<String>> = of("VirtualMachine")
        .map(|o| {
            vec![
                format!("virtualmachine.kubevirt.io/{}", s(&o["metadata"]["name"])),
                s(&o["status"]["printableStatus"]),
                ready(o),
            ]
        })
        .collect();
    let mut want_vmis: Vec<Vec<String>> = of("VirtualMachineInstance")
        .map(|o| {
            vec![
                format!(
                    "virtualmachineinstance.kubevirt.io/{}",
                    s(&o["metadata"]["name"])
                ),
                s(&o["status"]["phase"]),
                s(&o["status"]["interfaces"][0]["ipAddress"]),
                s(&o["status"]["nodeName"]),
                ready(o),
            ]
        })
        .collect();
    let mut want_vmims: Vec<Vec<String>> = of("VirtualMachineInstanceMigration")
        .map(|o| {
            vec![
                format!(
                    "virtualmachineinstancemigration.kubevirt.io/{}",
                    s(&o["metadata"]["name"])
                ),
                s(&o["status"]["phase"]),
                s(&o["spec"]["vmiName"]),
            ]
        })
        .collect();
    assert!(!want_vms.is_empty() && !want_vmis.is_empty() && !want_vmims.is_empty());
    let pick = |rows: &[Vec<String>], cols: &[usize]| -> Vec<Vec<String>> {
        let mut v: Vec<Vec<String>> = rows
            .iter()
            .map(|r| cols.iter().map(|i| r[*i].clone()).collect())
            .collect();
        v.sort();
        v
    };
    assert_eq!(sections.len(), 3, "{out}");
    want_vms.sort();
    want_vmis.sort();
    want_vmims.sort();
    assert_eq!(pick(&sections[0].1, &[1, 3, 4]), want_vms, "{out}");
    assert_eq!(pick(&sections[1].1, &[1, 3, 4, 5, 6]), want_vmis, "{out}");
    assert_eq!(pick(&sections[2].1, &[1, 2, 3]), want_vmims, "{out}");
}

/// "Replay your own cluster" as the README tells it: a cluster (here a simulator generating Events and VM
/// lifecycles) is captured with kubectl (`get -o yaml`, then a raw watch stream), replayed by a second
/// simulator, and a herald process counting it ends with exactly the replaying simulator's truth.
#[test]
fn a_cluster_captured_with_kubectl_replays_to_herald_with_exact_totals() {
    let Some(source) = Cluster::start(SimOptions::demo(7, 40.0)) else {
        return;
    };
    std::thread::sleep(Duration::from_millis(1500));
    let objects = source.ok(&["get", "events,vm,vmi,vmim", "-A", "-o", "yaml"]);
    let objects_path = source.file("objects.yaml", &objects);
    let stream_path = source.dir.path().join("stream.ndjson");
    let mut watch = source
        .command(&[
            "get",
            "--raw",
            "/api/v1/events?watch=1&allowWatchBookmarks=true",
        ])
        .stdout(std::fs::File::create(&stream_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let _ = watch.kill();
    let _ = watch.wait();
    let captured = std::fs::read_to_string(&stream_path).unwrap();
    let modified = captured
        .lines()
        .filter(|l| l.contains("\"MODIFIED\""))
        .count();
    assert!(
        captured.lines().count() > 50 && modified > 0,
        "a stream with changes"
    );

    let replay = Cluster::start(SimOptions {
        kubevirt: true,
        load: vec![objects_path.into()],
        replay: vec![stream_path],
        replay_rate: 500.0,
        replay_start_after: Duration::from_secs(3),
        ..SimOptions::quiet()
    })
    .unwrap();
    let loaded = replay.sim().truth().occurrences_total;
    let herald = start_herald(
        &replay.sim().url(),
        "sinks:\n  json:\n    enabled: false\nsource:\n  events:\n    startup: replay\n",
        Stdio::null(),
        &[],
    );
    herald.wait_ready();
    // The replay is done when the truth stops moving.
    let mut last = (String::new(), 0);
    wait_until(Duration::from_secs(30), "the replay to finish", || {
        std::thread::sleep(Duration::from_millis(500));
        let t = replay.sim().truth();
        let now = (t.resource_version.clone(), t.occurrences_total);
        let done = now == last && t.occurrences_total > loaded;
        last = now;
        done
    });
    let truth = replay.sim().truth();
    herald.wait_metric(common::truth::OCC, &[], truth.occurrences_total as f64);
    eprintln!(
        "captured {} lines ({modified} MODIFIED) and {} bytes of objects: {} occurrences ({loaded} loaded) over {} objects",
        captured.lines().count(),
        objects.len(),
        truth.occurrences_total,
        truth.objects
    );
}

#[test]
fn server_dry_runs_and_diff_change_nothing() {
    let Some(c) = Cluster::start(SimOptions::quiet()) else {
        return;
    };
    let file = c.file("event.yaml", EVENT_YAML);
    assert_eq!(
        c.ok(&["create", "-f", &file, "--dry-run=server"]).trim(),
        "event/deploy.1 created (server dry run)"
    );
    assert!(c.sim().store().get("default", "deploy.1").is_none());
    assert_eq!(c.sim().truth().occurrences_total, 0);
    c.ok(&["create", "-f", &file]);
    let version = c.sim().truth().resource_version;

    let changed = c.file("changed.yaml", &EVENT_YAML.replace("to 1", "to 5"));
    let diff = c.run(&["diff", "-f", &changed]);
    assert_eq!(
        diff.status.code(),
        Some(1),
        "kubectl diff exits 1 on a difference"
    );
    let text = String::from_utf8_lossy(&diff.stdout);
    assert!(
        text.contains("-message: Scaled up replica set shop-6cdd54d56b to 1")
            && text.contains("+message: Scaled up replica set shop-6cdd54d56b to 5"),
        "{text}"
    );
    assert_eq!(
        c.ok(&["apply", "-f", &changed, "--dry-run=server"]).trim(),
        "event/deploy.1 configured (server dry run)"
    );
    assert_eq!(
        c.ok(&["delete", "event", "deploy.1", "--dry-run=server"])
            .trim(),
        "event \"deploy.1\" deleted (server dry run)"
    );
    let stored = c.sim().store().get("default", "deploy.1").unwrap();
    assert_eq!(
        stored["message"],
        "Scaled up replica set shop-6cdd54d56b to 1"
    );
    assert_eq!(c.sim().truth().resource_version, version, "no write at all");
}
