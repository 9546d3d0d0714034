//! The simulator's HTTP API: discovery (with short names and categories), list (limit/continue,
//! resourceVersion, selectors, Tables for kubectl), watch (chunked NDJSON, bookmarks, timeoutSeconds, 410,
//! faults, Tables for `kubectl get -w`), get/create/update/patch (merge, strategic as merge, JSON patch)/delete/
//! deletecollection with `fieldValidation` and `dryRun`, for core/v1 and events.k8s.io/v1 Events and KubeVirt's kinds (the
//! `status` subresource of VMs and migrations), `/openapi/v3`, and Leases and ConfigMaps for herald's own use.
//! Plus `/sim/truth` and `/sim/faults` for tests and people.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{ACCEPT, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::convert;
use super::faults::{FaultCounts, FaultSpec, Injected};
use super::select::Selector;
use super::store::{Change, ChangeKind, Store, StoreError};
use super::table::{Include, Printer};

pub type Body = BoxBody<Bytes, std::io::Error>;

/// State every request sees.
pub struct Shared {
    pub store: Arc<Store>,
    /// VirtualMachines, VMIs and migrations (by `VmKind`); served only when `kubevirt` is on, so "KubeVirt not
    /// installed" can be simulated too.
    pub vm_stores: [Arc<Store>; 3],
    pub kubevirt: bool,
    pub vm_truth: Arc<Mutex<super::vm_scenario::VmTruth>>,
    pub leases: super::objects::Objects,
    pub config_maps: super::objects::Objects,
    pub faults: Mutex<FaultSpec>,
    /// Faults injected so far, by kind.
    pub injected: FaultCounts,
    pub bookmark_interval: Duration,
    pub rng: Mutex<fastrand::Rng>,
}

impl Shared {
    /// The store behind an API.
    pub fn store_for(&self, api: Api) -> &Arc<Store> {
        match api {
            Api::Core | Api::V1 => &self.store,
            Api::Kubevirt(k) => &self.vm_stores[k.index()],
        }
    }

    pub fn faults(&self) -> FaultSpec {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The ground truth with the fault counts.
    pub fn truth(&self) -> super::Truth {
        let mut truth = self.store.truth();
        truth.faults_injected = self.injected.snapshot();
        truth.faults_injected_total = truth.faults_injected.values().sum();
        truth
    }

    fn roll(&self) -> f64 {
        self.rng.lock().unwrap_or_else(|p| p.into_inner()).f64()
    }
}

fn full(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(body.into())
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    full(
        status,
        "application/json",
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

/// A `Status` object, the way the API server reports failures.
pub fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn error(code: u16, reason: &str, message: &str) -> Response<Body> {
    json_response(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &status(code, reason, message),
    )
}

fn store_error(e: StoreError) -> Response<Body> {
    let msg = e.to_string();
    match e {
        StoreError::NotFound { .. } => error(404, "NotFound", &msg),
        StoreError::AlreadyExists { .. } => error(409, "AlreadyExists", &msg),
        StoreError::Conflict { .. } => error(409, "Conflict", &msg),
        StoreError::Invalid(_) => error(422, "Invalid", &msg),
    }
}

/// Which Events API a request addressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Core,
    V1,
    /// A `kubevirt.io/v1` resource, served as stored.
    Kubevirt(VmKind),
}

/// The KubeVirt resources the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmKind {
    Vm,
    Vmi,
    Vmim,
}

impl VmKind {
    pub const ALL: [VmKind; 3] = [VmKind::Vm, VmKind::Vmi, VmKind::Vmim];

    pub fn plural(self) -> &'static str {
        match self {
            VmKind::Vm => "virtualmachines",
            VmKind::Vmi => "virtualmachineinstances",
            VmKind::Vmim => "virtualmachineinstancemigrations",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            VmKind::Vm => "VirtualMachine",
            VmKind::Vmi => "VirtualMachineInstance",
            VmKind::Vmim => "VirtualMachineInstanceMigration",
        }
    }

    /// The short names and singular name kubectl resolves (`kubectl get vm,vmi,vmim`), from KubeVirt's CRDs.
    pub fn short_names(self) -> [&'static str; 2] {
        match self {
            VmKind::Vm => ["vm", "vms"],
            VmKind::Vmi => ["vmi", "vmis"],
            VmKind::Vmim => ["vmim", "vmims"],
        }
    }

    /// Whether the CRD has a `status` subresource (VMs and migrations do; VMIs do not).
    pub fn has_status_subresource(self) -> bool {
        !matches!(self, VmKind::Vmi)
    }

    pub fn from_kind(kind: &str) -> Option<VmKind> {
        VmKind::ALL.into_iter().find(|k| k.kind() == kind)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl Api {
    fn group_version(self) -> &'static str {
        match self {
            Api::Core => "v1",
            Api::V1 => "events.k8s.io/v1",
            Api::Kubevirt(_) => "kubevirt.io/v1",
        }
    }
    /// The printer of kubectl's Tables for this API.
    fn printer(self) -> Printer {
        match self {
            Api::Core | Api::V1 => Printer::Event,
            Api::Kubevirt(k) => Printer::Kubevirt(k),
        }
    }
    fn serve(self, stored: &Value) -> Value {
        match self {
            Api::Core | Api::Kubevirt(_) => stored.clone(),
            Api::V1 => convert::to_events_v1(stored),
        }
    }
    fn store(self, body: &Value) -> Value {
        match self {
            Api::Core | Api::Kubevirt(_) => body.clone(),
            Api::V1 => convert::to_core(body),
        }
    }
}

struct Target {
    api: Api,
    watch: bool,
    namespace: Option<String>,
    name: Option<String>,
    /// `status` of `.../name/status`; anything else is refused as not found.
    subresource: Option<String>,
}

/// Parse `/api/v1/...` and `/apis/events.k8s.io/v1/...` resource paths.
fn target(segments: &[&str]) -> Option<Target> {
    let (api, rest) = match segments {
        ["api", "v1", rest @ ..] => (Api::Core, rest),
        ["apis", "events.k8s.io", "v1", rest @ ..] => (Api::V1, rest),
        ["apis", "kubevirt.io", "v1", rest @ ..] => (Api::Kubevirt(VmKind::Vm), rest),
        _ => return None,
    };
    let (watch, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        rest => (false, rest),
    };
    let plural = match api {
        Api::Kubevirt(_) => {
            let p = match rest {
                [p] | [p, ..] if !p.is_empty() && *p != "namespaces" => *p,
                ["namespaces", _, p, ..] => *p,
                _ => return None,
            };
            VmKind::ALL.into_iter().find(|k| k.plural() == p)?.plural()
        }
        _ => "events",
    };
    let api = match api {
        Api::Kubevirt(_) => Api::Kubevirt(VmKind::ALL.into_iter().find(|k| k.plural() == plural)?),
        a => a,
    };
    let (namespace, name, subresource) = match rest {
        [p] if *p == plural => (None, None, None),
        ["namespaces", ns, p] if *p == plural => (Some(ns.to_string()), None, None),
        ["namespaces", ns, p, name] if *p == plural => {
            (Some(ns.to_string()), Some(name.to_string()), None)
        }
        ["namespaces", ns, p, name, sub] if *p == plural && !watch => (
            Some(ns.to_string()),
            Some(name.to_string()),
            Some(sub.to_string()),
        ),
        _ => return None,
    };
    Some(Target {
        api,
        watch,
        namespace,
        name,
        subresource,
    })
}

pub async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let param = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    match (req.method(), segments.as_slice()) {
        (&Method::GET, ["version"]) => json_response(
            StatusCode::OK,
            &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-herald-sim",
                    "platform": "linux/amd64", "goVersion": "herald-sim"}),
        ),
        (&Method::GET, ["api"]) => json_response(
            StatusCode::OK,
            &json!({"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}),
        ),
        (&Method::GET, ["api", "v1"]) => json_response(StatusCode::OK, &resource_list("v1", true)),
        (&Method::GET, ["openapi", "v3"]) => {
            json_response(StatusCode::OK, &super::openapi::root(shared.kubevirt))
        }
        (&Method::GET, ["openapi", "v3", gv @ ..]) => {
            match super::openapi::document(&gv.join("/"), shared.kubevirt) {
                Some(doc) => json_response(StatusCode::OK, &doc),
                None => error(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                ),
            }
        }
        (&Method::GET, ["apis", "coordination.k8s.io"]) => {
            json_response(StatusCode::OK, &coordination_group())
        }
        (&Method::GET, ["apis", "coordination.k8s.io", "v1"]) => json_response(
            StatusCode::OK,
            &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "coordination.k8s.io/v1",
                    "resources": [{"name": "leases", "singularName": "lease", "namespaced": true, "kind": "Lease",
                                   "verbs": ["create", "get", "update"]}]}),
        ),
        (&Method::GET, ["apis"]) => {
            let mut groups = vec![group(), coordination_group()];
            if shared.kubevirt {
                groups.push(kubevirt_group());
            }
            json_response(
                StatusCode::OK,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            )
        }
        (&Method::GET, ["apis", "kubevirt.io"]) if shared.kubevirt => {
            json_response(StatusCode::OK, &kubevirt_group())
        }
        (&Method::GET, ["apis", "kubevirt.io", "v1"]) if shared.kubevirt => {
            json_response(StatusCode::OK, &kubevirt_resources())
        }
        (_, ["apis", "kubevirt.io", ..]) if !shared.kubevirt => error(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ),
        (&Method::GET, ["apis", "events.k8s.io"]) => json_response(StatusCode::OK, &group()),
        (&Method::GET, ["apis", "events.k8s.io", "v1"]) => {
            json_response(StatusCode::OK, &resource_list("events.k8s.io/v1", false))
        }
        (&Method::GET, ["sim", "truth"]) => {
            let mut truth = serde_json::to_value(shared.truth()).unwrap_or_default();
            let vm = shared
                .vm_truth
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            truth["vm_transitions"] = serde_json::to_value(&vm.transitions).unwrap_or_default();
            truth["quota_exceeded"] = serde_json::to_value(&vm.quota_exceeded).unwrap_or_default();
            json_response(StatusCode::OK, &truth)
        }
        (&Method::GET, ["sim", "faults"]) => full(
            StatusCode::OK,
            "text/plain",
            format!("{}\n", shared.faults()),
        ),
        (&Method::PUT, ["sim", "faults"]) => {
            let body = read_body(req).await;
            match String::from_utf8_lossy(&body).trim().parse::<FaultSpec>() {
                Ok(spec) => {
                    let text = format!("{spec}\n");
                    *shared.faults.lock().unwrap_or_else(|p| p.into_inner()) = spec;
                    full(StatusCode::OK, "text/plain", text)
                }
                Err(e) => error(400, "BadRequest", &e.to_string()),
            }
        }
        (
            method,
            [
                "apis",
                "coordination.k8s.io",
                "v1",
                "namespaces",
                ns,
                "leases",
                rest @ ..,
            ],
        ) => small_object(&shared.leases, method.clone(), ns, rest, req, Some(&shared)).await,
        (method, ["api", "v1", "namespaces", ns, "configmaps", rest @ ..]) => {
            small_object(&shared.config_maps, method.clone(), ns, rest, req, None).await
        }
        _ => match target(&segments) {
            Some(t) => resource(req, t, &query, shared).await,
            None => {
                let _ = param;
                error(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                )
            }
        },
    }
}

fn group() -> Value {
    let gv = json!({"groupVersion": "events.k8s.io/v1", "version": "v1"});
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": "events.k8s.io",
           "versions": [gv.clone()], "preferredVersion": gv})
}

fn coordination_group() -> Value {
    let gv = json!({"groupVersion": "coordination.k8s.io/v1", "version": "v1"});
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": "coordination.k8s.io",
           "versions": [gv.clone()], "preferredVersion": gv})
}

fn list_kind(api: Api) -> String {
    match api {
        Api::Kubevirt(k) => format!("{}List", k.kind()),
        _ => "EventList".to_string(),
    }
}

fn kubevirt_group() -> Value {
    let gv = json!({"groupVersion": "kubevirt.io/v1", "version": "v1"});
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": "kubevirt.io",
           "versions": [gv.clone()], "preferredVersion": gv})
}

fn kubevirt_resources() -> Value {
    let resources: Vec<Value> = VmKind::ALL
        .into_iter()
        .map(|k| {
            json!({"name": k.plural(), "singularName": k.kind().to_lowercase(), "namespaced": true,
                   "kind": k.kind(), "shortNames": k.short_names(), "categories": ["all"],
                   "verbs": ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"]})
        })
        .chain(
            VmKind::ALL
                .into_iter()
                .filter(|k| k.has_status_subresource())
                .map(|k| {
                    json!({"name": format!("{}/status", k.plural()), "singularName": "", "namespaced": true,
                           "kind": k.kind(), "verbs": ["get", "patch", "update"]})
                }),
        )
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "kubevirt.io/v1", "resources": resources})
}

fn resource_list(group_version: &str, core: bool) -> Value {
    let mut events = json!({"name": "events", "singularName": "event", "namespaced": true, "kind": "Event",
        "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]});
    // Both Events APIs answer to `ev`, as on a real API server (kubectl picks the core one).
    events["shortNames"] = json!(["ev"]);
    let mut resources = vec![events];
    if core {
        // Served for herald's checkpoint (get, create, update), so kubectl can create one from a file.
        resources.push(
            json!({"name": "configmaps", "singularName": "configmap", "namespaced": true,
            "kind": "ConfigMap", "shortNames": ["cm"], "verbs": ["create", "get", "update"]}),
        );
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
}

/// Get, create (POST) and update (PUT) of a Lease or ConfigMap. `lease_faults`: the Lease store's faults
/// (`lease-stall`) apply.
async fn small_object(
    store: &super::objects::Objects,
    method: Method,
    ns: &str,
    rest: &[&str],
    req: Request<Incoming>,
    lease_faults: Option<&Shared>,
) -> Response<Body> {
    if let Some(refused) = unsupported_body(&req) {
        return refused;
    }
    let body = |bytes: Bytes| async move {
        let v: Value = serde_json::from_slice(&bytes)?;
        if let Some(shared) = lease_faults {
            stall_lease_write(shared, &v).await;
        }
        Ok::<Value, serde_json::Error>(v)
    };
    let result = match (&method, rest) {
        (&Method::GET, [name]) => store.get(ns, name),
        (&Method::POST, []) => match body(read_body(req).await).await {
            Ok(v) => store.create(ns, v),
            Err(e) => return error(400, "BadRequest", &e.to_string()),
        },
        (&Method::PUT, [name]) => {
            let name = name.to_string();
            match body(read_body(req).await).await {
                Ok(v) => store.update(ns, &name, v),
                Err(e) => return error(400, "BadRequest", &e.to_string()),
            }
        }
        _ => return error(405, "MethodNotAllowed", "get, create and update only"),
    };
    match result {
        Ok(v) if method == Method::POST => json_response(StatusCode::CREATED, &v),
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(r) => error(r.code, r.reason, &r.message),
    }
}

/// `lease-stall`: a write naming a matching holder gets no answer, as when the API server stops answering one
/// agent (for an hour; then the write is handled, so a request nobody waits for does not live forever).
async fn stall_lease_write(shared: &Shared, lease: &Value) {
    let Some(prefix) = shared.faults().lease_stall else {
        return;
    };
    let holder = lease["spec"]["holderIdentity"].as_str().unwrap_or_default();
    if !holder.is_empty() && holder.starts_with(&prefix) {
        shared.injected.add(Injected::LeaseStall);
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

/// 415 for a write whose body is not JSON: kubectl's typed commands (`create configmap`) send protobuf, which
/// a real API server reads and the simulator does not; saying so beats a JSON parse error.
fn unsupported_body(req: &Request<Incoming>) -> Option<Response<Body>> {
    if !matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH) {
        return None;
    }
    let ct = req.headers().get(CONTENT_TYPE)?.to_str().ok()?;
    let json = ct.is_empty() || ct.starts_with("application/") && ct.contains("json");
    (!json).then(|| {
        error(
            415,
            "UnsupportedMediaType",
            &format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (herald sim does not read {ct})"
            ),
        )
    })
}

async fn read_body(req: Request<Incoming>) -> Bytes {
    req.into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default()
}

/// Whether kubectl asked for a Table (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`).
fn wants_table(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

/// How a VM or migration write treats `status` when the CRD has a status subresource: the main resource
/// ignores it (create drops it, update keeps the stored one), `/status` changes only it.
fn split_status(api: Api, body: &mut Value, current: Option<&Value>) {
    let Api::Kubevirt(k) = api else { return };
    if !k.has_status_subresource() {
        return;
    }
    if let Some(o) = body.as_object_mut() {
        match current.map(|c| &c["status"]).filter(|s| !s.is_null()) {
            Some(status) => {
                o.insert("status".into(), status.clone());
            }
            None => {
                o.remove("status");
            }
        }
    }
}

async fn resource(
    req: Request<Incoming>,
    t: Target,
    query: &[(String, String)],
    shared: Arc<Shared>,
) -> Response<Body> {
    let param = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let watch = t.watch || matches!(param("watch"), Some("true" | "1"));
    let store = shared.store_for(t.api);
    if let Some(refused) = unsupported_body(&req) {
        return refused;
    }
    let table = match (wants_table(&req), Include::parse(param("includeObject"))) {
        (false, _) => None,
        (true, Ok(include)) => Some((t.api.printer(), include)),
        (true, Err(e)) => return error(400, "BadRequest", &e),
    };
    if let Some(sub) = &t.subresource {
        let status_ok =
            sub == "status" && matches!(t.api, Api::Kubevirt(k) if k.has_status_subresource());
        if !status_ok {
            return error(
                404,
                "NotFound",
                "the server could not find the requested resource",
            );
        }
    }
    if let Some(problem) = super::openapi::field_validation(param("fieldValidation")) {
        return error(400, "BadRequest", &problem);
    }
    let strict = param("fieldValidation") == Some("Strict");
    // `dryRun=All` (kubectl diff, --dry-run=server): validated and answered as the write would be, not stored.
    let dry_run = match param("dryRun") {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return error(
                400,
                "BadRequest",
                &format!("dryRun: Unsupported value: \"{other}\": supported values: \"All\""),
            );
        }
    };
    match (req.method().clone(), &t.name) {
        (Method::GET, None) => {
            let faults = shared.faults();
            if faults.error_rate > 0.0 && shared.roll() < faults.error_rate {
                shared.injected.add(if faults.error_status == 429 {
                    Injected::Error429
                } else {
                    Injected::Error500
                });
                return injected_error(&faults);
            }
            let filter = match Filter::of(&t, param("labelSelector"), param("fieldSelector")) {
                Ok(f) => f,
                Err(e) => return error(400, "BadRequest", &e),
            };
            if watch {
                watch_response(shared.clone(), filter, param, table).await
            } else {
                list(store, &filter, param, table)
            }
        }
        (Method::DELETE, None) => {
            // deletecollection, as discovery says: every object the selectors match, returned as a list.
            let filter = match Filter::of(&t, param("labelSelector"), param("fieldSelector")) {
                Ok(f) => f,
                Err(e) => return error(400, "BadRequest", &e),
            };
            let (_, all) = store.snapshot(filter.namespace.as_deref());
            let deleted: Vec<Value> = all
                .iter()
                .filter(|o| filter.matches(o))
                .filter_map(|o| {
                    let (ns, name) = object_key(o);
                    store.delete(&ns, &name).ok().map(|gone| t.api.serve(&gone))
                })
                .collect();
            json_response(
                StatusCode::OK,
                &json!({"kind": list_kind(t.api), "apiVersion": t.api.group_version(),
                        "metadata": {"resourceVersion": store.resource_version().to_string()}, "items": deleted}),
            )
        }
        (Method::POST, None) => {
            let Some(ns) = t.namespace else {
                return error(405, "MethodNotAllowed", "create needs a namespace");
            };
            let body = read_body(req).await;
            match serde_json::from_slice::<Value>(&body) {
                Ok(v) => {
                    if strict && let Err(e) = super::openapi::strict(t.api.printer(), &v) {
                        return error(400, "BadRequest", &e);
                    }
                    let mut stored = t.api.store(&v);
                    split_status(t.api, &mut stored, None);
                    let created = if dry_run {
                        store.create_dry_run(&ns, stored)
                    } else {
                        store.create(&ns, stored)
                    };
                    match created {
                        Ok(obj) => json_response(StatusCode::CREATED, &t.api.serve(&obj)),
                        Err(e) => store_error(e),
                    }
                }
                Err(e) => error(400, "BadRequest", &format!("invalid JSON: {e}")),
            }
        }
        (method, Some(name)) => {
            let ns = t.namespace.unwrap_or_default();
            let status_only = t.subresource.is_some();
            let result = match method {
                Method::GET => store.get(&ns, name).ok_or_else(|| store.not_found(name)),
                Method::DELETE if !status_only => {
                    // kubectl sends dryRun in the DeleteOptions body rather than the query.
                    let options: Value =
                        serde_json::from_slice(&read_body(req).await).unwrap_or_default();
                    let dry_run = dry_run
                        || options["dryRun"]
                            .as_array()
                            .is_some_and(|d| d.iter().any(|v| v == "All"));
                    if dry_run {
                        store.get(&ns, name).ok_or_else(|| store.not_found(name))
                    } else {
                        store.delete(&ns, name)
                    }
                }
                Method::PUT | Method::PATCH => {
                    let is_put = method == Method::PUT;
                    let json_patch = !is_put
                        && req
                            .headers()
                            .get(CONTENT_TYPE)
                            .and_then(|v| v.to_str().ok())
                            .is_some_and(|c| c.starts_with("application/json-patch+json"));
                    let body = read_body(req).await;
                    let v: Value = match serde_json::from_slice(&body) {
                        Ok(v) => v,
                        Err(e) => return error(400, "BadRequest", &format!("invalid JSON: {e}")),
                    };
                    if strict
                        && !json_patch
                        && let Err(e) = super::openapi::strict(t.api.printer(), &v)
                    {
                        return error(400, "BadRequest", &e);
                    }
                    let Some(current) = store.get(&ns, name) else {
                        return store_error(store.not_found(name));
                    };
                    let mut next = if is_put {
                        t.api.store(&v)
                    } else if json_patch {
                        // RFC 6902 operations address the object as this API serves it.
                        let ops: Vec<json_patch::PatchOperation> =
                            match serde_json::from_value(v.clone()) {
                                Ok(ops) => ops,
                                Err(e) => {
                                    return error(
                                        400,
                                        "BadRequest",
                                        &format!("invalid JSON patch: {e}"),
                                    );
                                }
                            };
                        let mut doc = t.api.serve(&current);
                        if let Err(e) = json_patch::patch(&mut doc, &ops) {
                            return error(
                                422,
                                "Invalid",
                                &format!("the JSON patch does not apply: {e}"),
                            );
                        }
                        t.api.store(&doc)
                    } else {
                        let mut patch = t.api.store(&v);
                        if let Some(o) = patch.as_object_mut()
                            && v.get("apiVersion").is_none()
                        {
                            o.remove("apiVersion");
                            o.remove("kind");
                        }
                        let mut merged = (*current).clone();
                        super::store::merge(&mut merged, &patch);
                        merged
                    };
                    if status_only {
                        // `/status` changes the status alone: everything else stays as stored.
                        let status = next["status"].take();
                        next = (*current).clone();
                        next["status"] = status;
                    } else {
                        split_status(t.api, &mut next, Some(&current));
                    }
                    let rv = if is_put {
                        v["metadata"]["resourceVersion"]
                            .as_str()
                            .map(str::to_string)
                    } else {
                        current["metadata"]["resourceVersion"]
                            .as_str()
                            .map(str::to_string)
                    };
                    if dry_run {
                        // As the update would answer, with the stored identity and version.
                        if let Some(sent) = rv.as_deref().filter(|r| !r.is_empty())
                            && Some(sent) != current["metadata"]["resourceVersion"].as_str()
                        {
                            return store_error(store.conflict(name));
                        }
                        if let Some(o) = next.as_object_mut() {
                            let mut meta = o
                                .get("metadata")
                                .and_then(Value::as_object)
                                .cloned()
                                .unwrap_or_default();
                            for k in [
                                "name",
                                "namespace",
                                "uid",
                                "creationTimestamp",
                                "resourceVersion",
                            ] {
                                if let Some(v) = current["metadata"].get(k) {
                                    meta.insert(k.into(), v.clone());
                                }
                            }
                            o.insert("metadata".into(), Value::Object(meta));
                            o.insert("apiVersion".into(), current["apiVersion"].clone());
                            o.insert("kind".into(), current["kind"].clone());
                        }
                        Ok(Arc::new(next))
                    } else {
                        store.update(&ns, name, next, rv.as_deref())
                    }
                }
                _ => return error(405, "MethodNotAllowed", "method not allowed"),
            };
            match (result, table) {
                (Ok(obj), Some((printer, include))) => {
                    let served = t.api.serve(&obj);
                    json_response(
                        StatusCode::OK,
                        &super::table::table(printer, &[&served], include, json!({}), true),
                    )
                }
                (Ok(obj), None) => json_response(StatusCode::OK, &t.api.serve(&obj)),
                (Err(e), _) => store_error(e),
            }
        }
        _ => error(405, "MethodNotAllowed", "method not allowed"),
    }
}

fn injected_error(faults: &FaultSpec) -> Response<Body> {
    if faults.error_status == 429 {
        // As the API server does: Retry-After, and the same in the Status' details.
        let mut body = status(
            429,
            "TooManyRequests",
            "too many requests, please try again later",
        );
        body["details"] = json!({"retryAfterSeconds": faults.retry_after});
        let mut resp = json_response(StatusCode::TOO_MANY_REQUESTS, &body);
        if let Ok(v) = HeaderValue::from_str(&faults.retry_after.to_string()) {
            resp.headers_mut().insert(RETRY_AFTER, v);
        }
        resp
    } else {
        error(
            500,
            "InternalError",
            "Internal error occurred: injected by herald sim",
        )
    }
}

fn object_key(o: &Value) -> (String, String) {
    let m = &o["metadata"];
    (
        m["namespace"].as_str().unwrap_or_default().to_string(),
        m["name"].as_str().unwrap_or_default().to_string(),
    )
}

struct Filter {
    api: Api,
    namespace: Option<String>,
    labels: Selector,
    fields: Selector,
}

impl Filter {
    /// The filter of a list, watch or deletecollection of `t` with these selectors; the error is the
    /// message of a 400 for a selector that does not parse.
    fn of(t: &Target, labels: Option<&str>, fields: Option<&str>) -> Result<Filter, String> {
        Ok(Filter {
            api: t.api,
            namespace: t.namespace.clone(),
            labels: Selector::labels(labels.unwrap_or_default())?,
            fields: Selector::fields(fields.unwrap_or_default(), t.api == Api::V1)?,
        })
    }

    /// The object as this request serves it, or None when it does not match.
    fn apply(&self, stored: &Value) -> Option<Value> {
        if let Some(ns) = &self.namespace
            && stored["metadata"]["namespace"].as_str() != Some(ns)
        {
            return None;
        }
        if !self.labels.matches_labels(stored) {
            return None;
        }
        let served = self.api.serve(stored);
        self.fields.matches_fields(&served).then_some(served)
    }

    /// Whether the object matches, without building what would be served when no field selector needs it.
    fn matches(&self, stored: &Value) -> bool {
        if self.fields.is_empty() {
            self.namespace
                .as_ref()
                .is_none_or(|ns| stored["metadata"]["namespace"].as_str() == Some(ns))
                && self.labels.matches_labels(stored)
        } else {
            self.apply(stored).is_some()
        }
    }
}

fn list<'a>(
    store: &Store,
    filter: &Filter,
    param: impl Fn(&str) -> Option<&'a str>,
    table: Option<(Printer, Include)>,
) -> Response<Body> {
    let limit = param("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let (rv, items, offset, snapshot_id) = match param("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let parsed = token
                .split_once('-')
                .and_then(|(id, off)| Some((id.parse::<u64>().ok()?, off.parse::<usize>().ok()?)));
            // A token this server never wrote is a bad request; one it wrote but no longer keeps has expired.
            let Some((id, off)) = parsed else {
                return error(
                    400,
                    "BadRequest",
                    &format!(
                        "continue key is not valid: {token:?} is not a continue token of this server"
                    ),
                );
            };
            match store
                .find_snapshot(id)
                .map(|(rv, items)| (id, off, rv, items))
            {
                Some((id, off, rv, items)) => (rv, items, off, Some(id)),
                None => {
                    return error(
                        410,
                        "Expired",
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                    );
                }
            }
        }
        None => {
            let (rv, all) = store.snapshot(filter.namespace.as_deref());
            // Core objects are served as stored: the snapshot shares them instead of copying each one.
            let items: Vec<Arc<Value>> = all
                .into_iter()
                .filter_map(|o| match filter.api {
                    Api::Core | Api::Kubevirt(_) => filter.matches(&o).then_some(o),
                    Api::V1 => filter.apply(&o).map(Arc::new),
                })
                .collect();
            (rv, Arc::new(items), 0, None)
        }
    };
    let end = limit.map_or(items.len(), |l| (offset + l).min(items.len()));
    let page: Vec<&Value> = items[offset.min(end)..end].iter().map(|v| &**v).collect();
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if end < items.len() {
        let id = snapshot_id.unwrap_or_else(|| store.keep_snapshot(rv, items.clone()));
        metadata["continue"] = format!("{id}-{end}").into();
        metadata["remainingItemCount"] = (items.len() - end).into();
    } else if let Some(id) = snapshot_id {
        store.drop_snapshot(id);
    }
    if let Some((printer, include)) = table {
        return json_response(
            StatusCode::OK,
            &super::table::table(printer, &page, include, metadata, true),
        );
    }
    json_response(
        StatusCode::OK,
        &json!({"kind": list_kind(filter.api), "apiVersion": filter.api.group_version(), "metadata": metadata, "items": page}),
    )
}

async fn watch_response<'a>(
    shared: Arc<Shared>,
    filter: Filter,
    param: impl Fn(&str) -> Option<&'a str>,
    table: Option<(Printer, Include)>,
) -> Response<Body> {
    let from = match param("resourceVersion") {
        None | Some("") | Some("0") => None,
        Some(rv) => match rv.parse::<u64>() {
            Ok(rv) => Some(rv),
            Err(_) => {
                return error(
                    400,
                    "BadRequest",
                    &format!("invalid resourceVersion {rv:?}"),
                );
            }
        },
    };
    let options = WatchOptions {
        bookmarks: matches!(param("allowWatchBookmarks"), Some("true" | "1")),
        send_initial: matches!(param("sendInitialEvents"), Some("true" | "1")),
        timeout: param("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .map(Duration::from_secs),
    };
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(64);
    tokio::spawn(run_watch(tx, shared, filter, from, options, table));
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    let mut resp = Response::new(StreamBody::new(stream).boxed());
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

struct WatchOptions {
    bookmarks: bool,
    send_initial: bool,
    timeout: Option<Duration>,
}

type Tx = mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>;

/// One watch line, `type` first as the API server writes it. (`json!` would sort `object` ahead of `type`,
/// and a client's adjacently tagged decode, kube's `WatchEvent` among them, must then buffer the whole
/// object before it knows what it is: a cost a real cluster never puts on herald.)
fn line(kind: &str, object: &Value) -> Bytes {
    let mut out = Vec::with_capacity(1024);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    serde_json::to_writer(&mut out, object).expect("a JSON value serialises");
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

fn gone_line(requested: u64, oldest: u64) -> Bytes {
    line(
        "ERROR",
        &status(
            410,
            "Expired",
            &format!("too old resource version: {requested} ({oldest})"),
        ),
    )
}

/// The `n`th malformed watch line, in turn: truncated JSON, not JSON, an unknown event type, an object
/// that is not an object. None of them is an Event; each is one line.
fn garbage_line(n: u64) -> Bytes {
    let line: &str = match n % 4 {
        0 => {
            r#"{"type":"ADDED","object":{"kind":"Event","apiVersion":"v1","metadata":{"name":"cut-off","namesp"#
        }
        1 => "<html><body>502 Bad Gateway</body></html>",
        2 => {
            r#"{"type":"EXPLODED","object":{"kind":"Event","apiVersion":"v1","metadata":{"name":"x","namespace":"default"}}}"#
        }
        _ => r#"{"type":"ADDED","object":"not an object"}"#,
    };
    Bytes::from(format!("{line}\n"))
}

/// Feed one watch stream until the client leaves, the timeout ends it, or a fault does.
async fn run_watch(
    tx: Tx,
    shared: Arc<Shared>,
    filter: Filter,
    from: Option<u64>,
    options: WatchOptions,
    table: Option<(Printer, Include)>,
) {
    let store = shared.store_for(filter.api).clone();
    let start = match store.watch_from(from) {
        Ok(start) => start,
        Err(gone) => {
            let _ = tx
                .send(Ok(Frame::data(gone_line(gone.requested, gone.oldest))))
                .await;
            return;
        }
    };
    let (kind_name, kind) = match filter.api {
        Api::Kubevirt(k) => (k.kind(), "kubevirt.io/v1"),
        api => ("Event", api.group_version()),
    };
    let mut last_rv = start.rv;
    let mut sent = 0u64;
    let deadline = options.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut bookmark = tokio::time::interval(shared.bookmark_interval);
    bookmark.reset();

    // What a fault does after an event was sent; None to go on.
    enum Stop {
        Disconnect,
        Gone,
        Stall,
    }
    // Faults are read for every event, so `PUT /sim/faults` changes open streams too.
    let after_send = |sent: u64, faults: &FaultSpec| -> Option<Stop> {
        let hit = |n: Option<u64>| n.is_some_and(|n| sent.is_multiple_of(n));
        if hit(faults.disconnect_every) {
            Some(Stop::Disconnect)
        } else if hit(faults.gone_every) {
            Some(Stop::Gone)
        } else if faults.stall_after.is_some_and(|n| sent >= n) {
            Some(Stop::Stall)
        } else {
            None
        }
    };

    let mut queue: std::collections::VecDeque<(ChangeKind, Arc<Value>, u64)> = start
        .objects
        .into_iter()
        .map(|o| (ChangeKind::Added, o, start.rv))
        .chain(
            start
                .replay
                .iter()
                .map(|c: &Arc<Change>| (c.kind, c.object.clone(), c.rv)),
        )
        .collect();
    let mut rx = start.rx;
    // Objects this watch has shown as matching (namespace/name), seeded with what matches now.
    let mut matching: std::collections::HashSet<(String, String)> = store
        .snapshot(filter.namespace.as_deref())
        .1
        .iter()
        .filter(|o| filter.matches(o))
        .map(|o| object_key(o))
        .collect();
    let mut initial_done = !options.send_initial;
    loop {
        let next = if let Some(item) = queue.pop_front() {
            Some(item)
        } else {
            if !initial_done {
                initial_done = true;
                let bm = json!({"kind": kind_name, "apiVersion": kind, "metadata": {"resourceVersion": last_rv.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}});
                if tx
                    .send(Ok(Frame::data(line("BOOKMARK", &bm))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let sleep_until = deadline
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400));
            tokio::select! {
                change = rx.recv() => match change {
                    Ok(c) if c.kind == ChangeKind::Bookmark => {
                        if options.bookmarks {
                            let bm = json!({"kind": kind_name, "apiVersion": kind, "metadata": {"resourceVersion": last_rv.to_string(), "creationTimestamp": null}});
                            if tx.send(Ok(Frame::data(line("BOOKMARK", &bm)))).await.is_err() {
                                return;
                            }
                        }
                        None
                    }
                    Ok(c) if c.kind == ChangeKind::Error => {
                        let _ = tx.send(Ok(Frame::data(line("ERROR", &c.object)))).await;
                        return;
                    }
                    Ok(c) if c.rv > last_rv => Some((c.kind, c.object.clone(), c.rv)),
                    Ok(_) => None,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx.send(Ok(Frame::data(gone_line(last_rv, store.resource_version())))).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = bookmark.tick(), if options.bookmarks => {
                    let bm = json!({"kind": kind_name, "apiVersion": kind, "metadata": {"resourceVersion": last_rv.to_string(), "creationTimestamp": null}});
                    if tx.send(Ok(Frame::data(line("BOOKMARK", &bm)))).await.is_err() {
                        return;
                    }
                    None
                }
                _ = tokio::time::sleep_until(sleep_until) => return,
                _ = tx.closed() => return,
            }
        };
        let Some((change, object, rv)) = next else {
            continue;
        };
        last_rv = last_rv.max(rv);
        // As the API server's watch cache does for selectors: an object that starts matching is ADDED, one
        // that stops matching is DELETED, whatever the change was.
        let key = object_key(&object);
        let (change, served) = match (filter.apply(&object), matching.contains(&key)) {
            (Some(served), _) if change == ChangeKind::Deleted => {
                matching.remove(&key);
                (change, served)
            }
            (Some(served), was) => {
                matching.insert(key);
                (if was { change } else { ChangeKind::Added }, served)
            }
            (None, true) => {
                matching.remove(&key);
                (ChangeKind::Deleted, filter.api.serve(&object))
            }
            (None, false) => continue,
        };
        let faults = shared.faults();
        if !faults.slow.is_zero() {
            tokio::time::sleep(faults.slow).await;
        }
        // kubectl's `get -w` asks for Tables: one row per event, the columns with the first only.
        let served = match table {
            Some((printer, include)) => {
                super::table::table(printer, &[&served], include, json!({}), sent == 0)
            }
            None => served,
        };
        if tx
            .send(Ok(Frame::data(line(change.as_str(), &served))))
            .await
            .is_err()
        {
            return;
        }
        sent += 1;
        if faults.garbage_every.is_some_and(|n| sent.is_multiple_of(n)) {
            shared.injected.add(Injected::Garbage);
            let n = shared.injected.get(Injected::Garbage);
            if tx.send(Ok(Frame::data(garbage_line(n)))).await.is_err() {
                return;
            }
        }
        match after_send(sent, &faults) {
            None => {}
            Some(Stop::Disconnect) => {
                shared.injected.add(Injected::Disconnect);
                // Let hyper flush what was sent before the abort: the fault is "the connection
                // drops after N events", not "the last events vanish", which would replay the
                // same N events on every reconnect.
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = tx
                    .send(Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "injected disconnect",
                    )))
                    .await;
                return;
            }
            Some(Stop::Gone) => {
                shared.injected.add(Injected::Gone);
                let _ = tx.send(Ok(Frame::data(gone_line(last_rv, last_rv)))).await;
                return;
            }
            Some(Stop::Stall) => {
                shared.injected.add(Injected::Stall);
                tokio::select! {
                    _ = tx.closed() => {}
                    _ = tokio::time::sleep(options.timeout.unwrap_or(Duration::from_secs(3600))) => {}
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_lines_put_the_type_first_as_the_api_server_does() {
        let l = line(
            "MODIFIED",
            &json!({"metadata": {"name": "a\"b"}, "kind": "Event"}),
        );
        assert_eq!(
            &l[..],
            br#"{"type":"MODIFIED","object":{"kind":"Event","metadata":{"name":"a\"b"}}}
"#
        );
    }
}
