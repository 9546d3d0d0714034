//! Fuzzing on a stable toolchain: bounded, seeded, randomized robustness tests of the decoders and the
//! config loader (`cargo fuzz` needs nightly, which these machines do not have).
//!
//! Seeds are real inputs: the objects and watch lines of `../shared/fixtures/` (override the folder with
//! `HERALD_FIXTURES`; without it a few built-in objects are the only seeds) and `src/default-config.yaml`.
//! Each case mutates a seed: structurally (delete, duplicate, retype a JSON/YAML value: numbers, arrays,
//! null, huge and odd strings, unknown keys) and/or as bytes (flips, truncation at any point, deleted and
//! duplicated ranges, inserted lone-surrogate escapes, invalid UTF-8, duplicate keys). The properties:
//! decoding, normalising and the watch-line decoder never panic and end in a record or a counted, typed
//! error; `Config::from_yaml` never panics and every error is one line `key: reason` with a non-empty key.
//!
//! Bounded and deterministic: `CASES` cases per decoder target and `CONFIG_CASES` for the config loader,
//! from a fixed seed (`PROPTEST_CASES` and `PROPTEST_RNG_SEED` override both, e.g. for a longer run); a
//! failure is shrunk and persisted in
//! `proptest-regressions/fuzz_inputs.txt`, which is replayed first on every later run.

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{fixture_objects, fixtures};
use herald::config::{Config, DEFAULT_CONFIG_YAML};
use herald::record::EventApi;
use herald::source::decode::{CoreV1, EventsApiMarker, EventsV1, LeanEvent};
use herald::source::vm_lifecycle::{self, VmResource};
use herald::source::watch::{Line, decode_line};
use kube::api::{DynamicObject, WatchEvent};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{FileFailurePersistence, RngSeed};
use serde_json::{Value, json};

/// Cases per decoder target (about 2 ms each in a debug build).
const CASES: u32 = 2000;
/// KubeVirt seeds are large (the roundtrip objects are 40 KB): about 5 ms per case.
const KUBEVIRT_CASES: u32 = 1000;
/// Cases of the config target: a valid configuration compiles its regular expressions and log filter, about
/// 25 ms per case in a debug build.
const CONFIG_CASES: u32 = 250;

fn config(cases: u32) -> ProptestConfig {
    let base = ProptestConfig::default();
    ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            base.cases
        } else {
            cases
        },
        rng_seed: match base.rng_seed {
            RngSeed::Random => RngSeed::Fixed(0x6865_7261_6c64),
            fixed => fixed,
        },
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/fuzz_inputs.txt",
        ))),
        ..base
    }
}

// ---------------------------------------------------------------------------------------------------------
// Seeds

fn files(dir: &Path, sub: &str, ext: &[&str]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir.join(sub))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    out.retain(|p| p.extension().is_some_and(|e| ext.iter().any(|x| e == *x)));
    out.sort();
    out
}

struct Seeds {
    /// Event objects (core/v1 and events.k8s.io/v1).
    events: Vec<Value>,
    /// KubeVirt objects.
    kubevirt: Vec<Value>,
    /// Complete watch lines.
    lines: Vec<Value>,
}

fn seeds() -> &'static Seeds {
    static SEEDS: OnceLock<Seeds> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut events = vec![json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "a.1", "namespace": "default", "uid": "u", "resourceVersion": "7",
                         "creationTimestamp": "2024-01-01T00:00:00Z"},
            "involvedObject": {"kind": "Pod", "name": "a", "namespace": "default", "uid": "p"},
            "reason": "BackOff", "message": "Back-off restarting", "type": "Warning", "count": 3,
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": "2024-01-01T00:00:00Z", "lastTimestamp": "2024-01-01T00:01:00Z",
        })];
        let mut kubevirt = vec![json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": "vm", "namespace": "default", "uid": "i",
                         "ownerReferences": [{"kind": "VirtualMachine", "uid": "v"}]},
            "status": {"phase": "Running", "nodeName": "n1",
                       "phaseTransitionTimestamps": [{"phase": "Running", "phaseTransitionTimestamp": "2024-01-01T00:00:00Z"}],
                       "migrationState": {"migrationUid": "m", "sourceNode": "n0", "targetNode": "n1",
                                          "startTimestamp": "2024-01-01T00:00:00Z", "endTimestamp": "2024-01-01T00:00:09Z"}},
        })];
        let mut lines = Vec::new();
        if let Some(dir) = fixtures() {
            for sub in ["events", "events-v1"] {
                for f in files(&dir, sub, &["json", "yaml"]) {
                    events.extend(fixture_objects(&f));
                }
            }
            for f in files(&dir, "kubevirt", &["json", "yaml"]) {
                kubevirt.extend(fixture_objects(&f));
            }
            for f in files(&dir, "watch", &["jsonl"]) {
                let text = std::fs::read_to_string(&f).unwrap();
                lines.extend(text.lines().filter_map(|l| serde_json::from_str(l).ok()));
            }
            for f in files(&dir, "watch", &["tsv"]) {
                let text = std::fs::read_to_string(&f).unwrap();
                lines.extend(
                    text.lines()
                        .filter_map(|l| l.rsplit('\t').next())
                        .filter_map(|l| serde_json::from_str(l).ok()),
                );
            }
        }
        // Every object also arrives as a watch line.
        for (i, o) in events.iter().chain(&kubevirt).enumerate() {
            let t = ["ADDED", "MODIFIED", "DELETED"][i % 3];
            lines.push(json!({"type": t, "object": o}));
        }
        Seeds {
            events,
            kubevirt,
            lines,
        }
    })
}

// ---------------------------------------------------------------------------------------------------------
// Mutations

/// splitmix64: each mutation draws its details from its own seed, so proptest can shrink the seeds.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Field names herald reads (and their aliases), plus unknown ones.
const EVENT_KEYS: &[&str] = &[
    "metadata",
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "involvedObject",
    "regarding",
    "related",
    "reason",
    "message",
    "note",
    "type",
    "action",
    "source",
    "deprecatedSource",
    "count",
    "deprecatedCount",
    "firstTimestamp",
    "deprecatedFirstTimestamp",
    "lastTimestamp",
    "deprecatedLastTimestamp",
    "eventTime",
    "series",
    "lastObservedTime",
    "reportingComponent",
    "reportingController",
    "reportingInstance",
    "kind",
    "component",
    "host",
    "apiVersion",
    "status",
    "phase",
    "printableStatus",
    "nodeName",
    "migrationState",
    "phaseTransitionTimestamps",
    "phaseTransitionTimestamp",
    "ownerReferences",
    "spec",
    "vmiName",
    "failed",
    "endTimestamp",
    "object",
    "code",
    "managedFields",
    "zzz-unknown",
    "",
    "ünïcödé 🚀",
];

/// A value of some other type or an odd shape.
fn odd_value(rng: &mut Rng, extra: &[&str]) -> Value {
    match rng.below(16) {
        0 => json!(rng.next() as i64),
        1 => json!(*rng.pick(&[0i64, -1, 1, i64::MIN, i64::MAX, u32::MAX as i64 + 1])),
        2 => json!(u64::MAX),
        3 => json!(*rng.pick(&[1.5f64, -0.0, 1e300, -1e-300, 0.1])),
        4 => json!(rng.below(2) == 0),
        5 => Value::Null,
        6 => json!([1, "x", null, {"a": []}]),
        7 => json!({"x": {"y": [1, 2]}, "kind": 5}),
        8 => json!("x".repeat(100_000)),
        9 => json!("é".repeat(3000) + "\u{0}\u{1f}\u{202e}🚀\u{feff}"),
        10 => json!(""),
        11 => json!(*rng.pick(&[
            "2021-13-45T99:99:99Z",
            "yesterday",
            "1970-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
            "-009999-01-01T00:00:00Z",
            "2024-01-01T00:00:00+25:00",
            "2024-01-01",
        ])),
        12 => json!(*rng.pick(&["42", "-1", "99999999999999999999", "0x10", "NaN", "1e400"])),
        13 => {
            let mut v = json!(1);
            for _ in 0..rng.below(100) {
                v = json!([v]);
            }
            v
        }
        14 if !extra.is_empty() => json!(*rng.pick(extra)),
        _ => json!(*rng.pick(&["Pod", "ADDED", "BOOKMARK", "ERROR", "Running", "Warning"])),
    }
}

/// A random node: the root, or (more likely) something inside it.
fn node<'a>(v: &'a mut Value, rng: &mut Rng, depth: usize) -> &'a mut Value {
    let n = match v {
        Value::Object(m) => m.len(),
        Value::Array(a) => a.len(),
        _ => 0,
    };
    if n == 0 || (depth > 0 && rng.below(3) == 0) {
        return v;
    }
    let i = rng.below(n);
    match v {
        Value::Object(m) => node(m.values_mut().nth(i).unwrap(), rng, depth + 1),
        Value::Array(a) => node(&mut a[i], rng, depth + 1),
        _ => unreachable!(),
    }
}

/// Delete, duplicate, retype or add a value somewhere in `root`.
fn mutate_value(root: &mut Value, seed: u64, keys: &[&str], values: &[&str]) {
    let mut rng = Rng(seed);
    let op = rng.below(5);
    let at = node(root, &mut rng, 0);
    match (op, at) {
        (0, Value::Object(m)) if !m.is_empty() => {
            let k = m.keys().nth(rng.below(m.len())).unwrap().clone();
            m.remove(&k);
        }
        (0, Value::Array(a)) if !a.is_empty() => {
            a.remove(rng.below(a.len()));
        }
        // Duplicate: a sibling's value under another (known or unknown) key, or an array element again.
        (1, Value::Object(m)) if !m.is_empty() => {
            let v = m.values().nth(rng.below(m.len())).unwrap().clone();
            m.insert(rng.pick(keys).to_string(), v);
        }
        (1, Value::Array(a)) if !a.is_empty() => {
            let v = a[rng.below(a.len())].clone();
            for _ in 0..=rng.below(3) {
                a.push(v.clone());
            }
        }
        (3, Value::Object(m)) => {
            let v = odd_value(&mut rng, values);
            m.insert(rng.pick(keys).to_string(), v);
        }
        (4, Value::Object(m)) => {
            // An object where a scalar was expected, and the other way round.
            m.insert(rng.pick(keys).to_string(), json!({"name": "x", "kind": 1}));
        }
        (_, at) => *at = odd_value(&mut rng, values),
    }
}

const SNIPPETS: &[&[u8]] = &[
    br#"\ud800"#,
    br#"\udfff\ud800x"#,
    b"\xff\xfe",
    b"\xc3",
    b"\xed\xa0\x80",
    br#"\u0000"#,
    b"\"",
    b",",
    b"}",
    b"]",
    b"{\"a\":",
    b"\n",
    b"\\",
    b"null",
    b"1e999",
    b"-",
    b"\"count\":1,",
    b"\"type\":\"ADDED\",",
    b"\"reason\":[],",
    b"\"metadata\":{},",
];

/// Flip, overwrite, truncate, delete, duplicate or insert bytes.
fn mutate_bytes(bytes: &mut Vec<u8>, seed: u64, snippets: &[&[u8]]) {
    let mut rng = Rng(seed);
    let len = bytes.len();
    let i = rng.below(len + 1);
    match rng.below(7) {
        0 if len > 0 => bytes[i.min(len - 1)] ^= 1 << rng.below(8),
        1 if len > 0 => bytes[i.min(len - 1)] = rng.next() as u8,
        2 => bytes.truncate(i),
        3 => {
            let end = (i + 1 + rng.below(64)).min(len);
            bytes.drain(i.min(end)..end);
        }
        4 => {
            let end = (i + 1 + rng.below(256)).min(len);
            let copy = bytes[i.min(end)..end].to_vec();
            bytes.splice(end..end, copy);
        }
        // A duplicate key: a snippet right after an opening brace.
        5 => {
            if let Some(p) = bytes[i..].iter().position(|b| *b == b'{') {
                let s = rng.pick(snippets).to_vec();
                bytes.splice(i + p + 1..i + p + 1, s);
            }
        }
        _ => {
            let s = rng.pick(snippets).to_vec();
            bytes.splice(i..i, s);
        }
    }
}

/// A mutation plan: which seed, value mutations, then byte mutations.
#[derive(Debug, Clone)]
struct Plan {
    seed: Index,
    values: Vec<u64>,
    bytes: Vec<u64>,
}

fn plan() -> impl Strategy<Value = Plan> {
    (
        any::<Index>(),
        proptest::collection::vec(any::<u64>(), 0..5),
        // Half the cases stay valid JSON (value mutations only).
        prop_oneof![
            Just(Vec::new()),
            proptest::collection::vec(any::<u64>(), 1..4)
        ],
    )
        .prop_map(|(seed, values, bytes)| Plan {
            seed,
            values,
            bytes,
        })
}

fn apply(seed: &Value, plan: &Plan) -> (Value, Vec<u8>) {
    let mut v = seed.clone();
    for s in &plan.values {
        mutate_value(&mut v, *s, EVENT_KEYS, &[]);
    }
    let mut bytes = serde_json::to_vec(&v).unwrap();
    for s in &plan.bytes {
        mutate_bytes(&mut bytes, *s, SNIPPETS);
    }
    (v, bytes)
}

// ---------------------------------------------------------------------------------------------------------
// Checks

const ALIASES: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("count", "deprecatedCount"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("reportingComponent", "reportingController"),
];

/// A JSON object whose fields herald reads under two names holds both: serde reports a duplicate field.
fn has_alias_pair(v: &Value) -> bool {
    ALIASES
        .iter()
        .any(|(a, b)| v.get(a).is_some() && v.get(b).is_some())
}

/// Decode as an Event of both APIs and normalise: a record, or a typed reason.
fn check_event(bytes: &[u8], still_json: Option<&Value>) {
    check_event_api::<CoreV1>(bytes, EventApi::CoreV1, still_json);
    check_event_api::<EventsV1>(bytes, EventApi::EventsV1, still_json);
}

fn check_event_api<A: EventsApiMarker>(bytes: &[u8], api: EventApi, still_json: Option<&Value>) {
    match serde_json::from_slice::<LeanEvent<A>>(bytes) {
        Ok(ev) => check_normalised(ev, api),
        Err(e) => {
            // Lenient decoding: any JSON object decodes (wrong types become Invalid fields), unless it
            // holds one field under both of its names.
            if let Some(v) = still_json {
                assert!(
                    !v.is_object() || has_alias_pair(v),
                    "a JSON object failed to decode: {e}"
                );
            }
        }
    }
}

fn check_normalised<A>(ev: LeanEvent<A>, api: EventApi) {
    match ev.into_record() {
        Ok(record) => {
            let r = record.log_entry().expect("an Event record").event;
            assert_eq!(r.api, api);
            assert!(!r.name.is_empty() && !r.namespace.is_empty());
            assert!(r.count >= 1);
        }
        Err(invalid) => {
            assert!(
                matches!(invalid.reason, "missing_field" | "wrong_type"),
                "{invalid}"
            );
            assert!(!invalid.field.is_empty());
        }
    }
}

/// Read a KubeVirt object as every resource, and derive transitions against `base`.
fn check_vm(obj: &Value, base: &Value) {
    for resource in VmResource::ALL {
        let old = vm_lifecycle::read(resource, base).ok();
        match vm_lifecycle::read(resource, obj) {
            Ok(new) => {
                assert!(!new.name.is_empty() && !new.uid.is_empty());
                let mut ts = vm_lifecycle::derive(resource, None, &new);
                ts.extend(vm_lifecycle::derive(resource, old.as_ref(), &new));
                if let Some(old) = &old {
                    ts.extend(vm_lifecycle::derive(resource, Some(&new), old));
                }
                ts.extend(vm_lifecycle::arrival(&new));
                let _ = vm_lifecycle::migration_end(old.as_ref(), &new);
                let _ = vm_lifecycle::migrated_here(&new);
                let _ = vm_lifecycle::migration_ended_here(&new);
                for t in ts {
                    let r = herald::source::kubevirt::record(t);
                    let Some(entry) = r.log_entry() else {
                        panic!("a transition's record is logged: {r:?}")
                    };
                    assert!(entry.event.count >= 1 && entry.vm.is_some());
                }
            }
            Err(invalid) => assert!(
                matches!(invalid.reason, "missing_field" | "wrong_type"),
                "{invalid}"
            ),
        }
    }
}

/// The watch-line decoder, for Events of both APIs and for KubeVirt objects.
fn check_line(bytes: &[u8], still_json: Option<&Value>) {
    fn outcome<K: serde::de::DeserializeOwned>(bytes: &[u8]) -> Option<WatchEvent<K>> {
        match decode_line::<K>(bytes) {
            Ok(Line::Event(e)) => Some(e),
            // Counted in herald_invalid_objects_total{reason="undecodable"} and skipped.
            Ok(Line::Undecodable(_)) => None,
            // A bare Status with a code: the server's error, handled like any API error.
            Err(kube::Error::Api(s)) => {
                assert_ne!(s.code, 0, "a Status without a code is no server error");
                None
            }
            Err(e) => panic!("decode_line returned an unexpected error: {e}"),
        }
    }
    // A well-formed line with an object of a known type decodes (never a restart for a bad object).
    let plain_event = still_json.is_some_and(|v| {
        v.as_object().is_some_and(|m| m.len() == 2)
            && matches!(v["type"].as_str(), Some("ADDED" | "MODIFIED" | "DELETED"))
            && v["object"].is_object()
            && !has_alias_pair(&v["object"])
    });
    for api in [EventApi::CoreV1, EventApi::EventsV1] {
        let event = if api == EventApi::CoreV1 {
            outcome::<LeanEvent<CoreV1>>(bytes).map(|e| map_event(e, |o| check_normalised(o, api)))
        } else {
            outcome::<LeanEvent<EventsV1>>(bytes)
                .map(|e| map_event(e, |o| check_normalised(o, api)))
        };
        if plain_event {
            assert_eq!(event, Some(true), "a plain watch event did not decode");
        }
    }
    if let Some(e) = outcome::<DynamicObject>(bytes) {
        map_event(e, |o| {
            let v = serde_json::to_value(&o).unwrap();
            check_vm(&v, &v);
        });
    }
}

/// Run `f` on the object of an ADDED/MODIFIED/DELETED event; true when there was one.
fn map_event<K>(e: WatchEvent<K>, f: impl FnOnce(K)) -> bool {
    match e {
        WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => {
            f(o);
            true
        }
        WatchEvent::Bookmark(_) | WatchEvent::Error(_) => false,
    }
}

proptest! {
    #![proptest_config(config(CASES))]

    #[test]
    fn mutated_events_decode_to_a_record_or_a_typed_error(plan in plan()) {
        let seeds = seeds();
        let seed = plan.seed.get(&seeds.events);
        let (value, bytes) = apply(seed, &plan);
        let still_json = plan.bytes.is_empty().then_some(&value);
        check_event(&bytes, still_json);
    }

}

proptest! {
    #![proptest_config(config(KUBEVIRT_CASES))]

    #[test]
    fn mutated_kubevirt_objects_read_to_a_state_or_a_typed_error(plan in plan()) {
        let seeds = seeds();
        let seed = plan.seed.get(&seeds.kubevirt);
        let (value, bytes) = apply(seed, &plan);
        if plan.bytes.is_empty() {
            check_vm(&value, seed);
        }
        if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
            check_vm(&v, seed);
        }
        // The watch decodes KubeVirt objects as DynamicObject first.
        if let Ok(o) = serde_json::from_slice::<DynamicObject>(&bytes) {
            check_vm(&serde_json::to_value(&o).unwrap(), seed);
        }
    }

    #[test]
    fn mutated_watch_lines_are_an_event_or_counted_as_undecodable(plan in plan()) {
        let seeds = seeds();
        let seed = plan.seed.get(&seeds.lines);
        let (value, bytes) = apply(seed, &plan);
        let still_json = plan.bytes.is_empty().then_some(&value);
        check_line(&bytes, still_json);
    }
}

// ---------------------------------------------------------------------------------------------------------
// Config

/// Every key of the default tree, webhook entry keys, and near misses.
fn config_keys() -> &'static [String] {
    static KEYS: OnceLock<Vec<String>> = OnceLock::new();
    KEYS.get_or_init(|| {
        fn walk(v: &Value, out: &mut Vec<String>) {
            if let Value::Object(m) = v {
                for (k, v) in m {
                    out.push(k.clone());
                    walk(v, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&default_tree(), &mut out);
        for k in [
            "url",
            "filter",
            "flush_interval",
            "hmac_secret_file",
            "bearer_token_file",
            "max_agee",
            "enabled ",
            "Enabled",
            "",
            "a.b",
            "[0]",
            "🚀",
            "a\nb",
            "a: b",
            "~",
        ] {
            out.push(k.to_string());
        }
        out.sort();
        out.dedup();
        out
    })
}

fn default_tree() -> Value {
    serde_saphyr::from_str(DEFAULT_CONFIG_YAML).unwrap()
}

const CONFIG_VALUES: &[&str] = &[
    "0s",
    "5m",
    "1h 30m",
    "-1s",
    "5",
    "18446744073709551615s",
    "100000000000y",
    "0.0.0.0:0",
    "[::1]:80",
    "localhost:80",
    "1.2.3.4",
    "grpc",
    "http/protobuf",
    "gzip",
    "none",
    "daemonset",
    "sidecar",
    "single",
    "bogus",
    "core/v1",
    "events.k8s.io/v1",
    "replay",
    "skip-existing",
    "own",
    "namespaces",
    "critical",
    "json",
    "text",
    "(",
    "[a-",
    "(?i)x",
    "\\",
    "a{99999999}",
    "herald=debug,kube=[",
    "=",
    "debug,,",
    "https://hooks.example.com/x",
    "ftp://x",
    "http://",
    "/nonexistent/file",
];

const YAML_SNIPPETS: &[&[u8]] = &[
    b": ",
    b"- ",
    b"\t",
    b"&a ",
    b"*a",
    b"<<: *a\n",
    b"!!binary ",
    b"%YAML 1.2\n",
    b"---\n",
    b"...\n",
    b"{",
    b"[",
    b"'",
    b"\"",
    b".inf",
    b"-.inf",
    b".nan",
    b"~",
    b"\xef\xbb\xbf",
    b"\\u0000",
    b"\xff",
    b"  ",
    b"\nlisten: x\n",
    b"\nfilters:\n  max_agee: 1\n",
    b"? ",
    b"#",
];

#[derive(Debug, Clone)]
struct ConfigPlan {
    values: Vec<u64>,
    /// Serialise as YAML (block style) or JSON (flow style, also YAML).
    block: bool,
    bytes: Vec<u64>,
}

fn config_plan() -> impl Strategy<Value = ConfigPlan> {
    (
        proptest::collection::vec(any::<u64>(), 0..6),
        any::<bool>(),
        prop_oneof![
            2 => Just(Vec::new()),
            1 => proptest::collection::vec(any::<u64>(), 1..4)
        ],
    )
        .prop_map(|(values, block, bytes)| ConfigPlan {
            values,
            block,
            bytes,
        })
}

fn check_config(text: &str) {
    match Config::from_yaml(text, "fuzz.yaml") {
        Ok(config) => {
            config.validate().unwrap();
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(!e.key.trim().is_empty(), "empty key in {shown:?}");
            assert!(!e.reason.trim().is_empty(), "empty reason in {shown:?}");
            assert!(
                !shown.contains(['\n', '\r']),
                "error is not one line: {shown:?}"
            );
            assert_eq!(shown, format!("{}: {}", e.key, e.reason));
        }
    }
}

proptest! {
    #![proptest_config(config(CONFIG_CASES))]

    #[test]
    fn mutated_configs_load_or_say_key_colon_reason_on_one_line(plan in config_plan()) {
        let keys: Vec<&str> = config_keys().iter().map(String::as_str).collect();
        let mut v = default_tree();
        for s in &plan.values {
            mutate_value(&mut v, *s, &keys, CONFIG_VALUES);
        }
        let text = if plan.block {
            serde_saphyr::to_string(&v).unwrap()
        } else {
            serde_json::to_string(&v).unwrap()
        };
        let mut bytes = text.into_bytes();
        for s in &plan.bytes {
            mutate_bytes(&mut bytes, *s, YAML_SNIPPETS);
        }
        check_config(&String::from_utf8_lossy(&bytes));
    }
}

/// The default file itself, cut in the middle of any line, is a valid or a cleanly rejected configuration.
#[test]
fn the_default_config_cut_in_any_line_loads_or_says_key_colon_reason() {
    let mut end = 0;
    for line in DEFAULT_CONFIG_YAML.split_inclusive('\n') {
        end += line.len();
        if let Some(cut) = DEFAULT_CONFIG_YAML.get(..end - line.len() / 2) {
            check_config(cut);
        }
    }
}
