//! The settings of the sources (`source.events`, `source.kubevirt`): their types and defaults. The watch loops
//! in src/source/ read them; loading, checks across sections and the error type stay in `crate::config`, which
//! re-exports these names. Must not talk to the API server.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::{Duration, unset};

/// What herald watches.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SourceConfig {
    /// Kubernetes Events: each occurrence (a count increase) becomes a record.
    pub events: EventSourceConfig,
    /// KubeVirt VM lifecycle: each phase change of a VirtualMachine, VMI or migration becomes a record.
    pub kubevirt: KubevirtSourceConfig,
}

/// KubeVirt VM lifecycle (`kubevirt.io/v1` VirtualMachines, VMIs and migrations).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct KubevirtSourceConfig {
    /// Watch KubeVirt VirtualMachines, VMIs and migrations when the cluster serves `kubevirt.io/v1`; a cluster
    /// without KubeVirt is fine either way.
    pub enabled: bool,
    /// How often to check again whether KubeVirt got installed.
    pub discovery_interval: Duration,
    /// Objects per list page.
    pub page_size: u32,
    /// Bound on the per-object state kept to derive transitions, per resource (new objects beyond it are not
    /// tracked).
    pub max_tracked_objects: usize,
}

impl Default for KubevirtSourceConfig {
    fn default() -> Self {
        KubevirtSourceConfig {
            enabled: true,
            discovery_interval: Duration::from_secs(60),
            page_size: 500,
            max_tracked_objects: 100_000,
        }
    }
}

/// Which Events API to watch. Both carry the same objects on a real cluster; pick one, not both, or every
/// occurrence is seen twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
pub enum EventsApi {
    /// The `v1` Event API every cluster serves.
    #[default]
    #[serde(rename = "core/v1")]
    CoreV1,
    /// The newer `events.k8s.io/v1` API (same objects, `note` instead of `message`).
    #[serde(rename = "events.k8s.io/v1")]
    EventsV1,
}

/// Which namespaces the Event source watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// One cluster-wide watch.
    #[default]
    All,
    /// One watch per namespace listed in `namespaces`.
    Namespaces,
    /// Only herald's own namespace (sidecar): `POD_NAMESPACE`, else the service account's namespace, else the
    /// kubeconfig context's namespace.
    Own,
}

/// What to do with Events that already exist when herald starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StartupPolicy {
    /// They are a baseline: only their later count increases are occurrences.
    #[default]
    SkipExisting,
    /// Count every existing Event's full count once, as if it had just happened.
    Replay,
}

/// The Kubernetes Event watch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EventSourceConfig {
    /// Watch Events.
    pub enabled: bool,
    /// Which Events API to watch: `core/v1` or `events.k8s.io/v1` (the same objects: pick one).
    pub api: EventsApi,
    /// `all`: one cluster-wide watch; `namespaces`: one watch per entry of `namespaces`; `own`: only herald's
    /// own namespace (`POD_NAMESPACE`, else the service account's, else the kubeconfig's).
    pub scope: Scope,
    /// The namespaces watched with `scope: namespaces` (at least one then).
    pub namespaces: Vec<String>,
    /// A Kubernetes label selector on the Events (`app=web`); unset: every Event.
    #[serde(deserialize_with = "unset::option")]
    pub label_selector: Option<String>,
    /// A Kubernetes field selector on the Events (`type=Warning`); unset: every Event.
    #[serde(deserialize_with = "unset::option")]
    pub field_selector: Option<String>,
    /// Objects per list page.
    pub page_size: u32,
    /// `skip-existing`: Events that exist at start are a baseline, only later count increases are
    /// occurrences. `replay`: count every existing Event's full count once at start.
    pub startup: StartupPolicy,
    /// Bound on the per-Event state kept to turn counts into occurrence deltas. Past it the oldest entries are
    /// forgotten (a forgotten Event's next update counts its full count again, counted in
    /// `herald_source_state_evictions_total`).
    pub max_tracked_objects: usize,
    /// A watch that delivers nothing (no object, no bookmark) for this long is stalled and re-opened from its
    /// last resourceVersion (`herald_watch_restarts_total{reason="stalled"}`). Keep it above the API server's
    /// bookmark interval (about 1m) and watch timeout (290s).
    pub stall_timeout: Duration,
    /// Messages longer than this many bytes are cut on a UTF-8 character boundary and marked truncated
    /// (`herald.truncated` in the logs, `herald_messages_truncated_total`).
    pub max_message_bytes: usize,
}

impl Default for EventSourceConfig {
    fn default() -> Self {
        EventSourceConfig {
            enabled: true,
            api: EventsApi::CoreV1,
            scope: Scope::All,
            namespaces: Vec::new(),
            label_selector: None,
            field_selector: None,
            page_size: 500,
            startup: StartupPolicy::SkipExisting,
            max_tracked_objects: 200_000,
            stall_timeout: Duration::from_secs(305),
            max_message_bytes: 4096,
        }
    }
}
