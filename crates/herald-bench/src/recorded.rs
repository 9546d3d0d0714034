//! The recorded API server of `herald-bench stream`: a small HTTP/1.1 server that answers the agent's Events list
//! and watch from bytes prepared **before the clock starts**, the way a captured API server response would be
//! played back, so that serving costs a `write` of memory and the agent, not the server, is what is measured.
//!
//! It prepares realistic core/v1 Events (about 1.2 KB each, `managedFields` included, unique UIDs, modelled on
//! the kubelet and scheduler Events of `tests/fixtures/events/`) as list items (paged with `limit`/`continue`,
//! `resourceVersion` and `remainingItemCount`, items without `kind`/`apiVersion`, as an API server writes them)
//! and as watch lines (`{"type":…,"object":…}`, one HTTP chunk per line, `type` first). The stream waits behind
//! a gate that the harness opens (`PUT /bench/go`) once it has sampled the agent, so the measured window holds
//! only the agent's work: in the list scenario the first list page waits, in the watch scenarios the first
//! watch's lines do. `/bench/state` reports what was served and the ground truth (occurrences the prepared
//! objects carry), computed here from what was generated, never from the agent.
//!
//! It serves nothing else of the Kubernetes API (other paths get a 404 Status) and never judges the agent.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

/// First resourceVersion of the prepared objects.
const FIRST_RV: u64 = 5_000_000;
/// Event times start here (2026-12-01T10:00:00Z) and advance one second per 1 000 objects.
const BASE_TIME: i64 = 1_796_119_200;

/// Which stream the recorded server plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// `--live` Events in a paged list (the first page waits for the gate); the watch stays quiet.
    List,
    /// An empty list, then `--events` ADDED lines written at once when the gate opens.
    Watch,
    /// `--live` Events listed, then `--events` lines at `--rate` per second, one line per write, when the gate
    /// opens: new Events (ADDED) and count increases of live ones (MODIFIED).
    Steady,
}

/// What the recorded server plays besides its scenario: `herald-bench stream`'s flags of the same names,
/// which it hands on to the server it starts ([`Played::flags`]).
#[derive(Debug, Clone, clap::Args)]
pub struct Played {
    /// Events alive in the list (list and steady).
    #[arg(long, default_value_t = 0)]
    pub live: u64,
    /// Watch notifications after the gate opens (watch and steady).
    #[arg(long, default_value_t = 0)]
    pub events: u64,
    /// Notifications per second (steady).
    #[arg(long, default_value_t = 10_000.0)]
    pub rate: f64,
    /// Percent of the steady notifications that are count increases of live Events (MODIFIED).
    #[arg(long, default_value_t = 30)]
    pub modified_percent: u64,
}

impl Played {
    /// The same, as the server's command-line flags.
    pub fn flags(&self) -> [String; 4] {
        [
            format!("--live={}", self.live),
            format!("--events={}", self.events),
            format!("--rate={}", self.rate),
            format!("--modified-percent={}", self.modified_percent),
        ]
    }
}

/// `herald-bench recorded-server` flags (the harness starts it; not meant to be run by hand).
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    #[command(flatten)]
    pub played: Played,
    /// Where to write the kubeconfig once everything is prepared and the server listens.
    #[arg(long)]
    pub write_kubeconfig: PathBuf,
}

/// The namespaces, nodes and workloads the prepared Events spread over (low metric cardinality, as in a
/// real cluster: 20 namespaces × 4 reasons).
const NAMESPACES: [&str; 20] = [
    "shop",
    "payments",
    "search",
    "checkout",
    "identity",
    "billing",
    "catalog",
    "orders",
    "inventory",
    "shipping",
    "reviews",
    "ads",
    "analytics",
    "notifications",
    "media",
    "auth",
    "gateway",
    "monitoring",
    "logging",
    "kube-system",
];
const APPS: [&str; 8] = [
    "web", "api", "worker", "cache", "frontend", "backend", "cron", "proxy",
];

fn uid(seed: u64) -> String {
    // A deterministic, well-spread UUID (splitmix64), version 4 / variant 1 bits set, unique per seed.
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let a = mix(seed);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        (a >> 32) as u32,
        (a >> 16) as u16,
        a as u16 & 0x0fff,
        0x8000 | ((seed >> 48) as u16 & 0x3fff),
        seed & 0xffff_ffff_ffff
    )
}

fn time(seconds: i64) -> String {
    jiff::Timestamp::from_second(BASE_TIME + seconds)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The fields of core/v1 Event number `i` after `metadata` begins, in the API server's order, without the
/// braces, so the same text is a list item (`{…}`) and a watch object (`{"kind":"Event","apiVersion":"v1",…}`).
/// `count` occurrences so far; `rv` its resourceVersion.
fn event_body(i: u64, count: u64, rv: u64) -> String {
    let ns = NAMESPACES[(i % NAMESPACES.len() as u64) as usize];
    let app = APPS[((i / 20) % APPS.len() as u64) as usize];
    let node = format!("aks-nodepool1-3791-vmss{:06}", i % 37);
    let pod = format!("{app}-{:x}-{:05x}", 0x5d9c_7b8f + (i % 977), i & 0xfffff);
    let pod_uid = uid(i ^ 0x5a5a_5a5a_0000_0000);
    let first = time((i / 1000) as i64);
    let last = time((i / 1000) as i64 + count as i64 * 7);
    let (reason, kind, component, message, fields_v1) = match i % 4 {
        0 => (
            "BackOff",
            "Warning",
            "kubelet",
            format!("Back-off restarting failed container {app} in pod {pod}_{ns}({pod_uid})"),
            KUBELET_FIELDS,
        ),
        1 => (
            "Pulled",
            "Normal",
            "kubelet",
            format!(
                "Container image \"registry.example.com/{ns}/{app}:1.{}.{}\" already present on machine",
                i % 9,
                i % 23
            ),
            KUBELET_FIELDS,
        ),
        2 => (
            "Unhealthy",
            "Warning",
            "kubelet",
            format!(
                "Readiness probe failed: Get \"http://10.244.{}.{}:8080/healthz\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)",
                i % 251,
                i % 253
            ),
            KUBELET_FIELDS,
        ),
        _ => (
            "FailedScheduling",
            "Warning",
            "default-scheduler",
            "0/12 nodes are available: 3 Insufficient memory, 9 node(s) didn't match Pod's node affinity/selector. preemption: 0/12 nodes are available: 3 No preemption victims found for incoming pod, 9 Preemption is not helpful for scheduling.".to_string(),
            SCHEDULER_FIELDS,
        ),
    };
    let (field_path, source, instance) = if component == "kubelet" {
        (
            format!(",\"fieldPath\":\"spec.containers{{{app}}}\""),
            format!("{{\"component\":\"kubelet\",\"host\":\"{node}\"}}"),
            node.clone(),
        )
    } else {
        (
            String::new(),
            "{\"component\":\"default-scheduler\"}".to_string(),
            "default-scheduler-6f8d7c9b5-k2x7p".to_string(),
        )
    };
    format!(
        "\"metadata\":{{\"name\":\"{pod}.{i:016x}\",\"namespace\":\"{ns}\",\"uid\":\"{uid}\",\"resourceVersion\":\"{rv}\",\"creationTimestamp\":\"{first}\",\
\"managedFields\":[{{\"manager\":\"{component}\",\"operation\":\"Update\",\"apiVersion\":\"v1\",\"time\":\"{last}\",\"fieldsType\":\"FieldsV1\",\"fieldsV1\":{fields_v1}}}]}},\
\"involvedObject\":{{\"kind\":\"Pod\",\"namespace\":\"{ns}\",\"name\":\"{pod}\",\"uid\":\"{pod_uid}\",\"apiVersion\":\"v1\",\"resourceVersion\":\"{prv}\"{field_path}}},\
\"reason\":\"{reason}\",\"message\":{message},\"source\":{source},\"firstTimestamp\":\"{first}\",\"lastTimestamp\":\"{last}\",\"count\":{count},\"type\":\"{kind}\",\
\"eventTime\":null,\"reportingComponent\":\"{component}\",\"reportingInstance\":\"{instance}\"",
        uid = uid(i),
        prv = 4_000_000 + i,
        message = serde_json::Value::String(message),
    )
}

/// `fieldsV1` of a kubelet Event's `managedFields` entry (`f:involvedObject` is atomic, so empty).
const KUBELET_FIELDS: &str = r#"{"f:count":{},"f:firstTimestamp":{},"f:involvedObject":{},"f:lastTimestamp":{},"f:message":{},"f:reason":{},"f:reportingComponent":{},"f:reportingInstance":{},"f:source":{"f:component":{},"f:host":{}},"f:type":{}}"#;
/// The same for the scheduler (no host in its source).
const SCHEDULER_FIELDS: &str = r#"{"f:count":{},"f:firstTimestamp":{},"f:involvedObject":{},"f:lastTimestamp":{},"f:message":{},"f:reason":{},"f:reportingComponent":{},"f:reportingInstance":{},"f:source":{"f:component":{}},"f:type":{}}"#;

/// Initial count of live Event `i` (1 to 5: some have repeated already).
fn initial_count(i: u64) -> u64 {
    1 + (i * 7 % 5)
}

/// One prepared list item (`{…}`), as an API server writes it inside `items`.
pub fn list_item(i: u64, rv: u64) -> String {
    format!("{{{}}}", event_body(i, initial_count(i), rv))
}

/// One prepared watch line, without the newline.
pub fn watch_line(kind: &str, i: u64, count: u64, rv: u64) -> String {
    format!(
        "{{\"type\":\"{kind}\",\"object\":{{\"kind\":\"Event\",\"apiVersion\":\"v1\",{}}}}}",
        event_body(i, count, rv)
    )
}

/// Everything served, built before the server listens.
struct Prepared {
    /// The list items back to back, and where each one ends.
    items: Vec<u8>,
    item_ends: Vec<usize>,
    /// resourceVersion of the list.
    list_rv: u64,
    /// The watch lines as HTTP chunks back to back (`<hex len>\r\n<line>\n\r\n`), and where each one ends.
    chunks: Vec<u8>,
    chunk_ends: Vec<usize>,
    /// Occurrences the list and the watch lines carry (live Events' counts, new Events' counts, +1 per count
    /// increase).
    occurrences: u64,
    /// Bytes of JSON per Event object (list items and watch objects), on average.
    object_bytes: f64,
}

fn prepare(args: &ServerArgs) -> Prepared {
    let mut rv = FIRST_RV;
    let mut items = Vec::with_capacity(args.played.live as usize * 1300);
    let mut item_ends = Vec::with_capacity(args.played.live as usize);
    let mut occurrences = 0;
    let mut object_bytes = 0usize;
    let live = match args.scenario {
        Scenario::Watch => 0,
        _ => args.played.live,
    };
    for i in 0..live {
        rv += 1;
        let item = list_item(i, rv);
        object_bytes += item.len();
        items.extend_from_slice(item.as_bytes());
        item_ends.push(items.len());
        occurrences += initial_count(i);
    }
    let list_rv = rv;
    let events = match args.scenario {
        Scenario::List => 0,
        _ => args.played.events,
    };
    let mut chunks = Vec::with_capacity(events as usize * 1400);
    let mut chunk_ends = Vec::with_capacity(events as usize);
    let mut counts: Vec<u64> = (0..live).map(initial_count).collect();
    let mut next_new = live;
    for n in 0..events {
        rv += 1;
        // Spread the count increases evenly: line n is MODIFIED when the running share falls behind.
        let modified = args.scenario == Scenario::Steady
            && live > 0
            && (n + 1) * args.played.modified_percent / 100
                > n * args.played.modified_percent / 100;
        let line = if modified {
            let target = (n * 7_919) % live;
            counts[target as usize] += 1;
            occurrences += 1;
            watch_line("MODIFIED", target, counts[target as usize], rv)
        } else {
            let i = next_new;
            next_new += 1;
            occurrences += 1;
            watch_line("ADDED", i, 1, rv)
        };
        object_bytes += line.len();
        let _ = write!(chunks, "{:x}\r\n{line}\n\r\n", line.len() + 1);
        chunk_ends.push(chunks.len());
    }
    let objects = live + events;
    Prepared {
        items,
        item_ends,
        list_rv,
        chunks,
        chunk_ends,
        occurrences,
        object_bytes: if objects > 0 {
            object_bytes as f64 / objects as f64
        } else {
            0.0
        },
    }
}

/// What the server did so far, for `/bench/state`.
#[derive(Default)]
struct Counters {
    list_requests: AtomicU64,
    list_pages: AtomicU64,
    watches: AtomicU64,
    lines_written: AtomicU64,
    other_requests: AtomicU64,
    stream_done: AtomicBool,
    /// Microseconds from the gate opening to the last line written.
    stream_micros: AtomicU64,
}

struct Server {
    args: ServerArgs,
    prepared: Prepared,
    counters: Counters,
    /// The gate: when the harness said go.
    go: Mutex<Option<Instant>>,
    opened: Condvar,
    /// The first watch takes the stream; later ones (after a failure) get a quiet one.
    stream_taken: AtomicBool,
    prepared_seconds: f64,
}

impl Server {
    /// Block until the gate opens; returns when it did.
    fn wait_for_go(&self) -> Instant {
        let mut go = self.go.lock().unwrap();
        loop {
            if let Some(at) = *go {
                return at;
            }
            go = self.opened.wait(go).unwrap();
        }
    }
}

/// `herald-bench recorded-server`: prepare, listen, write the kubeconfig, serve until killed.
pub fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let prepared = prepare(&args);
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot listen on loopback")?;
    let addr = listener.local_addr()?;
    let server = Arc::new(Server {
        prepared,
        counters: Counters::default(),
        go: Mutex::new(None),
        opened: Condvar::new(),
        stream_taken: AtomicBool::new(false),
        prepared_seconds: started.elapsed().as_secs_f64(),
        args,
    });
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: recorded\n  cluster:\n    server: http://{addr}\n\
         contexts:\n- name: recorded\n  context:\n    cluster: recorded\n    user: recorded\n    namespace: default\n\
         current-context: recorded\nusers:\n- name: recorded\n  user: {{}}\n"
    );
    let tmp = server.args.write_kubeconfig.with_extension("tmp");
    std::fs::write(&tmp, kubeconfig).context("cannot write the kubeconfig")?;
    std::fs::rename(&tmp, &server.args.write_kubeconfig).context("cannot write the kubeconfig")?;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let server = server.clone();
        std::thread::spawn(move || {
            let _ = serve(&server, stream);
        });
    }
    Ok(())
}

/// One connection: requests one after the other (keep-alive), until the client closes it.
fn serve(server: &Server, stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut content_length = 0usize;
        let mut close = false;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header)? == 0 {
                return Ok(());
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.trim().parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("connection") {
                    close = value.trim().eq_ignore_ascii_case("close");
                }
            }
        }
        let mut body = vec![0; content_length];
        reader.read_exact(&mut body)?;
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or("");
        let target = parts.next().unwrap_or("");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let param = |name: &str| {
            query.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k == name).then(|| v.to_string())
            })
        };
        match (method, path) {
            ("GET", "/api/v1/events")
                if param("watch").is_some_and(|w| w == "true" || w == "1") =>
            {
                return watch(server, &mut out);
            }
            ("GET", "/api/v1/events") => {
                let limit = param("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
                let start = param("continue")
                    .and_then(|t| t.rsplit('-').next()?.parse().ok())
                    .unwrap_or(0);
                let body = list_page(server, start, limit);
                respond(&mut out, "200 OK", &body)?;
            }
            ("GET", "/bench/state") => {
                let c = &server.counters;
                let p = &server.prepared;
                let state = serde_json::json!({
                    "scenario": server.args.scenario,
                    "list_requests": c.list_requests.load(Ordering::Relaxed),
                    "list_pages": c.list_pages.load(Ordering::Relaxed),
                    "watches": c.watches.load(Ordering::Relaxed),
                    "lines_written": c.lines_written.load(Ordering::Relaxed),
                    "other_requests": c.other_requests.load(Ordering::Relaxed),
                    "stream_done": c.stream_done.load(Ordering::Relaxed),
                    "stream_seconds": c.stream_micros.load(Ordering::Relaxed) as f64 / 1e6,
                    "live": p.item_ends.len(),
                    "lines": p.chunk_ends.len(),
                    "occurrences_total": p.occurrences,
                    "object_bytes": p.object_bytes,
                    "prepared_seconds": server.prepared_seconds,
                });
                respond(&mut out, "200 OK", state.to_string().as_bytes())?;
            }
            ("PUT", "/bench/go") => {
                server.go.lock().unwrap().get_or_insert_with(Instant::now);
                server.opened.notify_all();
                respond(&mut out, "200 OK", b"{}")?;
            }
            _ => {
                server
                    .counters
                    .other_requests
                    .fetch_add(1, Ordering::Relaxed);
                eprintln!("recorded-server: not served: {method} {target}");
                respond(&mut out, "404 Not Found", NOT_FOUND.as_bytes())?;
            }
        }
        if close {
            return Ok(());
        }
    }
}

/// The Status an API server answers for a path it does not serve.
const NOT_FOUND: &str = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the recorded server serves only core/v1 Events","reason":"NotFound","code":404}"#;

fn respond(out: &mut TcpStream, status: &str, body: &[u8]) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    out.write_all(head.as_bytes())?;
    out.write_all(body)
}

/// One page of the list from item `start`, at most `limit` items (all with 0), shaped as an API server's
/// `EventList`. The first request of the list scenario waits for the gate.
fn list_page(server: &Server, start: usize, limit: usize) -> Vec<u8> {
    let c = &server.counters;
    if start == 0
        && c.list_requests.fetch_add(1, Ordering::Relaxed) == 0
        && server.args.scenario == Scenario::List
    {
        server.wait_for_go();
    }
    c.list_pages.fetch_add(1, Ordering::Relaxed);
    let p = &server.prepared;
    let total = p.item_ends.len();
    let start = start.min(total);
    let end = if limit == 0 {
        total
    } else {
        (start + limit).min(total)
    };
    let from = if start == 0 {
        0
    } else {
        p.item_ends[start - 1]
    };
    let to = if end == 0 { 0 } else { p.item_ends[end - 1] };
    let more = if end < total {
        format!(
            ",\"continue\":\"rv-{}-{end}\",\"remainingItemCount\":{}",
            p.list_rv,
            total - end
        )
    } else {
        String::new()
    };
    let mut body = Vec::with_capacity(to - from + (end - start) + 200);
    let _ = write!(
        body,
        "{{\"kind\":\"EventList\",\"apiVersion\":\"v1\",\"metadata\":{{\"resourceVersion\":\"{}\"{more}}},\"items\":[",
        p.list_rv
    );
    let mut at = from;
    for (n, &item_end) in p.item_ends[start..end].iter().enumerate() {
        if n > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&p.items[at..item_end]);
        at = item_end;
    }
    body.extend_from_slice(b"]}");
    body
}

/// A watch: headers at once; the first watch then waits for the gate and writes the prepared lines (all at once,
/// or one per write at the steady rate); every watch is then held open without data until the client leaves.
fn watch(server: &Server, out: &mut TcpStream) -> std::io::Result<()> {
    server.counters.watches.fetch_add(1, Ordering::Relaxed);
    out.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    )?;
    let p = &server.prepared;
    if !server.stream_taken.swap(true, Ordering::AcqRel) && !p.chunk_ends.is_empty() {
        let go = server.wait_for_go();
        match server.args.scenario {
            Scenario::Steady => {
                let every = Duration::from_secs_f64(1.0 / server.args.played.rate.max(1.0));
                let started = Instant::now();
                let mut from = 0;
                for (n, &end) in p.chunk_ends.iter().enumerate() {
                    let due = started + every * n as u32;
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    out.write_all(&p.chunks[from..end])?;
                    from = end;
                    server
                        .counters
                        .lines_written
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {
                out.write_all(&p.chunks)?;
                server
                    .counters
                    .lines_written
                    .fetch_add(p.chunk_ends.len() as u64, Ordering::Relaxed);
            }
        }
        let c = &server.counters;
        c.stream_micros
            .store(go.elapsed().as_micros() as u64, Ordering::Relaxed);
        c.stream_done.store(true, Ordering::Relaxed);
    }
    // Hold the watch open (no bookmarks: the run is shorter than any watch timeout); a closed connection ends it.
    let mut probe = [0u8; 1];
    let mut reader = out.try_clone()?;
    loop {
        match reader.read(&mut probe) {
            Ok(0) | Err(_) => return Ok(()),
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepared_events_are_realistic_core_v1_objects() {
        for i in 0..8 {
            let item = list_item(i, 42);
            let v: serde_json::Value = serde_json::from_str(&item).unwrap();
            assert!(v.get("kind").is_none(), "list items carry no kind");
            assert_eq!(v["metadata"]["resourceVersion"], "42");
            assert!(v["metadata"]["managedFields"][0]["fieldsV1"]["f:count"].is_object());
            assert_eq!(v["count"], initial_count(i));
            assert!(
                (1000..1500).contains(&item.len()),
                "about 1.2 KB: {}",
                item.len()
            );
            let line = watch_line("ADDED", i, 3, 43);
            assert!(line.starts_with("{\"type\":\"ADDED\""), "type first");
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["object"]["kind"], "Event");
            assert_eq!(v["object"]["count"], 3);
        }
        let uids: std::collections::HashSet<String> = (0..100_000).map(uid).collect();
        assert_eq!(uids.len(), 100_000, "unique UIDs");
    }

    #[test]
    fn truth_counts_every_occurrence_prepared() {
        let args = ServerArgs {
            scenario: Scenario::Steady,
            played: Played {
                live: 100,
                events: 1000,
                rate: 1.0,
                modified_percent: 30,
            },
            write_kubeconfig: PathBuf::new(),
        };
        let p = prepare(&args);
        assert_eq!(p.item_ends.len(), 100);
        assert_eq!(p.chunk_ends.len(), 1000);
        let text = String::from_utf8(p.chunks.clone()).unwrap();
        let modified = text.matches("\"type\":\"MODIFIED\"").count();
        assert_eq!(modified, 300);
        let live: u64 = (0..100).map(initial_count).sum();
        assert_eq!(p.occurrences, live + 1000);
    }
}
