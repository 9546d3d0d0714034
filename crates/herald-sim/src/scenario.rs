//! A seeded scenario generator: Events like a real cluster's (kubelet, scheduler, controllers), counts that
//! grow, deletes, and TTL expiry. The same seed gives the same sequence of operations.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::store::Store;

/// How the generator behaves.
#[derive(Debug, Clone)]
pub struct ScenarioOptions {
    /// Operations per second; infinite: as fast as the slowest watcher takes them (see [`MAX_BACKLOG`]).
    pub rate: f64,
    pub namespaces: usize,
    /// Stop after this many operations.
    pub max_events: Option<u64>,
    /// Wait before the first operation.
    pub start_after: Duration,
    /// Percentage of operations that delete a random live Event (0 to 30; the rest create or raise counts).
    pub delete_percent: u32,
    /// Generated Events are deleted this long after their last write, as the API server's `--event-ttl`
    /// (1h by default) restarts on every write. Deletion is checked once per `ttl` per Event, so an Event
    /// written again lives between `ttl` and twice that after its last write, never less.
    pub ttl: Duration,
    /// Events created at once when the generator starts, before `start_after` (live objects for load tests).
    pub preload: u64,
}

impl Default for ScenarioOptions {
    fn default() -> Self {
        ScenarioOptions {
            rate: 20.0,
            namespaces: 5,
            max_events: None,
            start_after: Duration::ZERO,
            delete_percent: 5,
            ttl: Duration::from_secs(3600),
            preload: 0,
        }
    }
}

/// `(reason, type, kind, component, message template)`; `{obj}` is the object's name, `{node}` a node.
const TEMPLATES: &[(&str, &str, &str, &str, &str)] = &[
    (
        "Scheduled",
        "Normal",
        "Pod",
        "default-scheduler",
        "Successfully assigned {ns}/{obj} to {node}",
    ),
    (
        "Pulling",
        "Normal",
        "Pod",
        "kubelet",
        "Pulling image \"registry.k8s.io/nginx:1.27\"",
    ),
    (
        "Pulled",
        "Normal",
        "Pod",
        "kubelet",
        "Successfully pulled image \"registry.k8s.io/nginx:1.27\" in 1.532s (1.532s including waiting). Image size: 71028234 bytes.",
    ),
    (
        "Created",
        "Normal",
        "Pod",
        "kubelet",
        "Created container: app",
    ),
    (
        "Started",
        "Normal",
        "Pod",
        "kubelet",
        "Started container app",
    ),
    (
        "Killing",
        "Normal",
        "Pod",
        "kubelet",
        "Stopping container app",
    ),
    (
        "BackOff",
        "Warning",
        "Pod",
        "kubelet",
        "Back-off restarting failed container app in pod {obj}_{ns}(4b1c5e2a-9d1f-4c7e-8a3b-2f6d0e9c1a7b)",
    ),
    (
        "Unhealthy",
        "Warning",
        "Pod",
        "kubelet",
        "Readiness probe failed: Get \"http://10.244.1.17:8080/healthz\": dial tcp 10.244.1.17:8080: connect: connection refused",
    ),
    (
        "FailedMount",
        "Warning",
        "Pod",
        "kubelet",
        "MountVolume.SetUp failed for volume \"config\" : configmap \"app-config\" not found",
    ),
    (
        "FailedCreatePodSandBox",
        "Warning",
        "Pod",
        "kubelet",
        "Failed to create pod sandbox: rpc error: code = Unknown desc = failed to setup network for sandbox: plugin type=\"cilium-cni\" failed (add): unable to connect to Cilium daemon",
    ),
    (
        "FailedScheduling",
        "Warning",
        "Pod",
        "default-scheduler",
        "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, 2 Insufficient memory. preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.",
    ),
    (
        "Failed",
        "Warning",
        "Pod",
        "kubelet",
        "Failed to pull image \"registry.example.com/app:v2\": rpc error: code = NotFound desc = failed to pull and unpack image: not found; ErrImagePull",
    ),
    (
        "Failed",
        "Warning",
        "Pod",
        "kubelet",
        "Error: ImagePullBackOff",
    ),
    (
        "Evicted",
        "Warning",
        "Pod",
        "kubelet",
        "The node was low on resource: memory. Threshold quantity: 100Mi, available: 91232Ki.",
    ),
    (
        "SuccessfulCreate",
        "Normal",
        "ReplicaSet",
        "replicaset-controller",
        "Created pod: {obj}-7d9f8b6c5d-x2k4p",
    ),
    (
        "SuccessfulDelete",
        "Normal",
        "ReplicaSet",
        "replicaset-controller",
        "Deleted pod: {obj}-7d9f8b6c5d-x2k4p",
    ),
    (
        "FailedCreate",
        "Warning",
        "ReplicaSet",
        "replicaset-controller",
        "Error creating: pods \"{obj}-7d9f8b6c5d-abcde\" is forbidden: exceeded quota: compute-quota, requested: requests.cpu=2, used: requests.cpu=8, limited: requests.cpu=8",
    ),
    (
        "ScalingReplicaSet",
        "Normal",
        "Deployment",
        "deployment-controller",
        "Scaled up replica set {obj}-7d9f8b6c5d to 3",
    ),
    (
        "ProvisioningSucceeded",
        "Normal",
        "PersistentVolumeClaim",
        "persistentvolume-controller",
        "Successfully provisioned volume pvc-1f2e3d4c using kubernetes.io/aws-ebs",
    ),
    (
        "OOMKilling",
        "Warning",
        "Node",
        "kernel-monitor",
        "Memory cgroup out of memory: Killed process 4242 (java) total-vm:8123456kB, anon-rss:2097152kB",
    ),
    (
        "NodeNotReady",
        "Normal",
        "Node",
        "node-controller",
        "Node {node} status is now: NodeNotReady",
    ),
];

const NAMESPACES: &[&str] = &[
    "default",
    "kube-system",
    "payments",
    "checkout",
    "monitoring",
    "ingress",
    "data",
    "ml",
    "web",
    "batch",
];
const APPS: &[&str] = &[
    "web", "api", "worker", "cache", "db", "frontend", "queue", "auth",
];

/// With an infinite rate, the generator waits while the slowest watch stream is this many changes behind
/// (the store's broadcast keeps 16k), so `--rate max` runs as fast as the agent takes the Events without
/// ever lagging a watcher into 410 Gone.
pub const MAX_BACKLOG: usize = 4096;

/// Generates and applies operations to the store at the configured rate.
pub struct Scenario {
    rng: fastrand::Rng,
    opts: ScenarioOptions,
    /// Generated Events still alive, in the order they are due for the TTL check.
    live: VecDeque<Live>,
    serial: u64,
}

/// A generated Event the scenario may raise or delete.
#[derive(Debug)]
struct Live {
    namespace: String,
    name: String,
    count: i64,
    /// When it entered the TTL queue (created, or put back because it was written since).
    queued: Instant,
    /// Its last write.
    written: Instant,
}

impl Scenario {
    pub fn new(seed: u64, opts: ScenarioOptions) -> Scenario {
        Scenario {
            rng: fastrand::Rng::with_seed(seed),
            opts,
            live: VecDeque::new(),
            serial: 0,
        }
    }

    pub async fn run(mut self, store: Arc<Store>, stop: CancellationToken) {
        if self.opts.rate <= 0.0 {
            return;
        }
        for _ in 0..self.opts.preload {
            self.create(&store);
        }
        tokio::select! {
            _ = tokio::time::sleep(self.opts.start_after) => {}
            _ = stop.cancelled() => return,
        }
        if self.opts.rate.is_infinite() {
            return self.run_max(store, stop).await;
        }
        // Batched ticks keep high rates accurate without a timer per operation.
        let tick = Duration::from_millis(10);
        let per_tick = self.opts.rate * tick.as_secs_f64();
        let mut budget = 0.0;
        let mut done = 0u64;
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = stop.cancelled() => return,
            }
            self.expire(&store, Instant::now());
            budget += per_tick;
            while budget >= 1.0 {
                budget -= 1.0;
                if self.opts.max_events.is_some_and(|m| done >= m) {
                    return;
                }
                self.step(&store);
                done += 1;
            }
        }
    }

    /// `rate: inf`: chunks of operations, each only once the watchers have caught up to [`MAX_BACKLOG`].
    async fn run_max(mut self, store: Arc<Store>, stop: CancellationToken) {
        const CHUNK: u64 = 256;
        let mut done = 0u64;
        loop {
            while store.backlog() > MAX_BACKLOG {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(1)) => {}
                    _ = stop.cancelled() => return,
                }
            }
            if stop.is_cancelled() {
                return;
            }
            self.expire(&store, Instant::now());
            for _ in 0..CHUNK {
                if self.opts.max_events.is_some_and(|m| done >= m) {
                    return;
                }
                self.step(&store);
                done += 1;
            }
            tokio::task::yield_now().await;
        }
    }

    /// Delete the Events whose last write is `ttl` old. The queue is in order of `queued`; an Event written
    /// since it was queued goes to the back instead, to be checked again one `ttl` later.
    fn expire(&mut self, store: &Store, now: Instant) {
        while let Some(front) = self.live.front() {
            if now.duration_since(front.queued) < self.opts.ttl {
                break;
            }
            let Some(mut e) = self.live.pop_front() else {
                break;
            };
            if now.duration_since(e.written) < self.opts.ttl {
                e.queued = now;
                self.live.push_back(e);
            } else {
                let _ = store.delete(&e.namespace, &e.name);
            }
        }
    }

    /// One operation: ~70% new Event, then count increases and deletes (`delete_percent`, 5 by default).
    pub fn step(&mut self, store: &Store) {
        let roll = self.rng.u32(0..100);
        if roll < 70 || self.live.is_empty() {
            self.create(store);
        } else if roll < 100 - self.opts.delete_percent.min(30) {
            let i = self.rng.usize(0..self.live.len());
            let by = self.rng.i64(1..=3);
            let e = &mut self.live[i];
            e.count += by;
            e.written = Instant::now();
            let patch = json!({"count": e.count, "lastTimestamp": now()});
            let _ = store.patch(&e.namespace, &e.name, &patch);
        } else {
            let i = self.rng.usize(0..self.live.len());
            if let Some(e) = self.live.remove(i) {
                let _ = store.delete(&e.namespace, &e.name);
            }
        }
    }

    fn create(&mut self, store: &Store) {
        self.serial += 1;
        let (reason, type_, kind, component, template) =
            TEMPLATES[self.rng.usize(0..TEMPLATES.len())];
        let ns = NAMESPACES[self
            .rng
            .usize(0..self.opts.namespaces.clamp(1, NAMESPACES.len()))];
        let node = format!("node-{}", self.rng.u32(1..=4));
        let obj = match kind {
            "Node" => node.clone(),
            _ => format!(
                "{}-{}",
                APPS[self.rng.usize(0..APPS.len())],
                self.rng.u32(0..50)
            ),
        };
        let message = template
            .replace("{obj}", &obj)
            .replace("{ns}", ns)
            .replace("{node}", &node);
        let name = format!("{obj}.{:016x}", 0x1800_0000_0000_0000u64 + self.serial);
        let count = if self.rng.u32(0..10) == 0 {
            self.rng.i64(2..=20)
        } else {
            1
        };
        let event_ns = if kind == "Node" { "default" } else { ns };
        let mut event = json!({
            "metadata": {"name": name},
            "involvedObject": {"kind": kind, "name": obj, "namespace": event_ns, "apiVersion": api_version(kind),
                               "uid": format!("{:08x}-0000-4000-8000-{:012x}", self.rng.u32(..), self.serial)},
            "reason": reason, "message": message, "type": type_,
            "source": {"component": component, "host": if component == "kubelet" { node.as_str() } else { "" }},
            "reportingComponent": component, "reportingInstance": if component == "kubelet" { node.as_str() } else { "" },
        });
        if component == "default-scheduler" {
            // New-style: eventTime and action, no count or first/last timestamps.
            event["eventTime"] = Value::String(now_micro());
            event["action"] = "Scheduling".into();
            event["source"] = json!({});
        } else {
            event["count"] = count.into();
            event["firstTimestamp"] = now().into();
            event["lastTimestamp"] = now().into();
        }
        if store.create(event_ns, event).is_ok() {
            let tracked = if component == "default-scheduler" {
                1
            } else {
                count
            };
            let at = Instant::now();
            self.live.push_back(Live {
                namespace: event_ns.to_string(),
                name,
                count: tracked,
                queued: at,
                written: at,
            });
        }
    }
}

fn api_version(kind: &str) -> &'static str {
    match kind {
        "ReplicaSet" | "Deployment" => "apps/v1",
        _ => "v1",
    }
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn now_micro() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_operations() {
        let run = |seed| {
            let store = Store::new(1000);
            let mut s = Scenario::new(seed, ScenarioOptions::default());
            for _ in 0..200 {
                s.step(&store);
            }
            let t = store.truth();
            (t.occurrences_total, t.objects, t.occurrences.len())
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        let (total, objects, _) = run(7);
        assert!(total > objects as u64, "counts grow");
    }

    #[test]
    fn ttl_counts_from_the_last_write() {
        let store = Store::new(1000);
        let opts = ScenarioOptions {
            ttl: Duration::from_secs(10),
            ..ScenarioOptions::default()
        };
        let mut s = Scenario::new(1, opts);
        for _ in 0..3 {
            s.create(&store);
        }
        let t0 = Instant::now();
        for e in &mut s.live {
            (e.queued, e.written) = (t0, t0);
        }
        s.live[1].written = t0 + Duration::from_secs(6);
        let raised = s.live[1].name.clone();
        let at = |secs| t0 + Duration::from_secs(secs);

        s.expire(&store, at(9));
        assert_eq!(store.truth().objects, 3, "nothing is 10s old yet");
        s.expire(&store, at(11));
        assert_eq!(store.truth().objects, 1, "the two written only at creation");
        assert_eq!(s.live.len(), 1);
        assert_eq!(s.live[0].name, raised, "written 5s ago: kept");
        s.expire(&store, at(20));
        assert_eq!(
            store.truth().objects,
            1,
            "checked again 10s after it was put back"
        );
        s.expire(&store, at(21));
        assert_eq!(store.truth().objects, 0);
        assert!(s.live.is_empty());
        assert_eq!(
            store.truth().occurrences_total,
            3,
            "the truth keeps what happened"
        );
    }

    #[tokio::test]
    async fn max_rate_preloads_then_runs_to_max_events() {
        let store = Arc::new(Store::new(1000));
        let opts = ScenarioOptions {
            rate: f64::INFINITY,
            max_events: Some(1000),
            preload: 50,
            ..ScenarioOptions::default()
        };
        Scenario::new(3, opts)
            .run(store.clone(), CancellationToken::new())
            .await;
        assert_eq!(store.resource_version(), 1000 + 50 + 1000, "one write each");
    }

    #[tokio::test]
    async fn max_rate_waits_for_a_slow_watcher() {
        let store = Arc::new(Store::new(100_000));
        let watcher = store.watch_from(None).unwrap();
        let opts = ScenarioOptions {
            rate: f64::INFINITY,
            max_events: Some(6_000),
            ..ScenarioOptions::default()
        };
        let run = tokio::spawn(Scenario::new(3, opts).run(store.clone(), CancellationToken::new()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let written = store.resource_version() - 1000;
        assert!(
            written > 0 && written as usize <= MAX_BACKLOG + 256,
            "{written} writes ahead of a watcher that reads nothing"
        );
        drop(watcher);
        run.await.unwrap();
        assert_eq!(store.resource_version(), 1000 + 6_000);
    }
}
