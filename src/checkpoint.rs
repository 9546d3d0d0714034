//! Checkpoint files in `state_dir`: small JSON documents written atomically, so a crash at any moment leaves
//! either the previous checkpoint or the new one, never a torn file.
//!
//! A checkpoint that cannot be read or parsed is reported by the caller once and treated as absent: losing a
//! checkpoint costs a fresh start (the startup policy applies), which is always better than not starting.
//!
//! The Event checkpoint ([`EventsFile`], `events.json`) is written by the metrics sink, because it must hold
//! two things that agree: each Event watch's per-object counts ([`EventWatch`], taken by the watch) and the
//! counter totals that include exactly the records the watch emitted before taking them. The watch sends its
//! state down the pipeline behind its records, so when the metrics sink receives it, its totals are those
//! of the same moment.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::source::accounting::key_hash;

/// Why a checkpoint could not be read or written; always names the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("checkpoint {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("checkpoint ConfigMap {name}: {source}")]
    Api {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("checkpoint ConfigMap {name} is corrupt: {reason}")]
    CorruptConfigMap { name: String, reason: String },
    #[error("checkpoint ConfigMap {name} not written: this agent no longer leads")]
    NotLeading { name: String },
}

/// The name of the Event checkpoint in `state_dir`.
pub const EVENTS_FILE: &str = "events.json";

/// One Event watch's position and what it has counted, at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct EventWatch {
    /// Which watch: the API, namespace and selectors (`events::watch_keys`). A checkpoint of a watch that the
    /// configuration no longer has is ignored.
    pub key: String,
    /// Where to resume the watch; if the API server no longer has it (410), herald lists and compares.
    pub resource_version: String,
    /// The newest Event time among the records the watch emitted (for people reading the file).
    pub last_event_time: Option<jiff::Timestamp>,
    /// Numbers the barriers of one watch within one run, so the watch knows whether the last one was saved.
    #[serde(default)]
    pub sequence: u64,
    /// Every tracked Event: the hash of its UID (or namespace/name, [`key_hash`]) and the last count
    /// accounted for, oldest first. Written as `[hash, count]` pairs of JSON numbers; a checkpoint written
    /// before herald kept hashes has the UID itself as a string, which is hashed as it is read.
    #[serde(deserialize_with = "tracked_objects")]
    pub objects: Vec<(u64, u32)>,
}

/// One tracked Event's identity in a checkpoint: a hash (now) or a UID (older checkpoints).
struct TrackedKey(u64);

impl<'de> serde::Deserialize<'de> for TrackedKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = TrackedKey;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an Event's UID hash (a number) or UID (a string)")
            }
            fn visit_u64<E>(self, v: u64) -> Result<TrackedKey, E> {
                Ok(TrackedKey(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<TrackedKey, E> {
                Ok(TrackedKey(key_hash(v)))
            }
        }
        d.deserialize_any(V)
    }
}

fn tracked_objects<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<(u64, u32)>, D::Error> {
    let pairs = <Vec<(TrackedKey, u32)>>::deserialize(d)?;
    Ok(pairs.into_iter().map(|(k, c)| (k.0, c)).collect())
}

/// What an Event watch tells the metrics sink, in order with its records.
#[derive(Debug, Clone, PartialEq)]
pub enum Barrier {
    /// The watch starts (at start-up, or a new leadership term): what it counted in an earlier run beyond
    /// its last saved checkpoint will be counted again from that checkpoint (by this run or by the agent that
    /// led meanwhile), so the sink forgets it.
    Start,
    /// Save this state with the totals of the records before it.
    Save(Arc<EventWatch>),
}

/// One counter series' value, as the metrics sink saved it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct SavedCounter {
    pub metric: String,
    pub labels: Vec<(String, String)>,
    pub value: u64,
}

/// One watch and the counter totals of the records it emitted.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct SavedWatch {
    pub watch: Arc<EventWatch>,
    pub counters: Vec<SavedCounter>,
}

/// `events.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct EventsFile {
    /// The agent that wrote it (its pod name): in daemonset mode a restarted agent continues its counters
    /// only from a checkpoint it wrote itself; a successor continues the counting, not the counters.
    #[serde(default)]
    pub writer: String,
    pub watches: Vec<SavedWatch>,
}

/// Where the Event checkpoint is kept.
pub enum Store {
    /// `state_dir/events.json`: one agent's own restarts (single and sidecar mode).
    File(PathBuf),
    /// A ConfigMap in herald's namespace, shared by a daemonset's agents, so a new leader continues from what
    /// the old one saved (daemonset mode).
    ConfigMap(Box<ConfigMapStore>),
}

impl Store {
    /// Read the checkpoint; `Ok(None)` when there is none yet.
    pub async fn load(&self) -> Result<Option<EventsFile>, Error> {
        match self {
            Store::File(path) => load(path),
            Store::ConfigMap(c) => c.load().await,
        }
    }

    /// Write the checkpoint durably; only then may counters show what it holds. Returns the bytes written.
    pub async fn save(&self, file: EventsFile) -> Result<usize, Error> {
        match self {
            Store::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || save(&path, &file))
                    .await
                    .map_err(|e| Error::Io {
                        path: PathBuf::new(),
                        source: std::io::Error::other(e),
                    })?
            }
            Store::ConfigMap(c) => c.save(&file).await,
        }
    }

    /// Where, for messages.
    pub fn describe(&self) -> String {
        match self {
            Store::File(path) => path.display().to_string(),
            Store::ConfigMap(c) => format!("ConfigMap {}", c.name),
        }
    }
}

/// The daemonset leader's Event checkpoint in a ConfigMap (gzip-compressed JSON in `binaryData`, as the
/// per-Event counts of a large cluster would not fit in 1 MiB of plain JSON). Only the Lease holder writes
/// it: an agent that stopped leading gets [`Error::NotLeading`], so it can never overwrite its successor's
/// state with an older one.
#[derive(Clone)]
pub struct ConfigMapStore {
    api: kube::Api<k8s_openapi::api::core::v1::ConfigMap>,
    name: String,
    leading: tokio::sync::watch::Receiver<bool>,
    /// How long the Lease is certainly still this agent's (see [`ConfigMapStore::with_held_until`]).
    held_until: Option<crate::leader::HeldUntil>,
}

/// The key in the ConfigMap's `binaryData`.
const CONFIG_MAP_KEY: &str = "events.json.gz";

/// The API server refuses ConfigMaps over 1 MiB; stay clear of it.
const CONFIG_MAP_MAX_BYTES: usize = 1000 * 1000;

impl ConfigMapStore {
    pub fn new(
        api: kube::Api<k8s_openapi::api::core::v1::ConfigMap>,
        name: String,
        leading: tokio::sync::watch::Receiver<bool>,
    ) -> ConfigMapStore {
        ConfigMapStore {
            api,
            name,
            leading,
            held_until: None,
        }
    }

    /// A write that completes after the agent stopped leading still counts as saved while the Lease is
    /// certainly its own (a leader stops at its renew deadline, before any successor can take over and read):
    /// the successor will read it, so its counts must be shown, or they would be counted by nobody.
    pub fn with_held_until(mut self, held: crate::leader::HeldUntil) -> ConfigMapStore {
        self.held_until = Some(held);
        self
    }

    fn api_error(&self, source: kube::Error) -> Error {
        Error::Api {
            name: self.name.clone(),
            source,
        }
    }

    pub async fn load(&self) -> Result<Option<EventsFile>, Error> {
        let Some(cm) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.api_error(e))?
        else {
            return Ok(None);
        };
        let Some(bytes) = cm.binary_data.as_ref().and_then(|d| d.get(CONFIG_MAP_KEY)) else {
            return Ok(None);
        };
        let corrupt = |reason: String| Error::CorruptConfigMap {
            name: self.name.clone(),
            reason,
        };
        let mut json = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes.0[..]), &mut json)
            .map_err(|e| corrupt(e.to_string()))?;
        serde_json::from_slice(&json)
            .map(Some)
            .map_err(|e| corrupt(e.to_string()))
    }

    async fn save(&self, file: &EventsFile) -> Result<usize, Error> {
        use k8s_openapi::ByteString;
        use k8s_openapi::api::core::v1::ConfigMap;
        use kube::api::{ObjectMeta, PostParams};

        let not_leading = || Error::NotLeading {
            name: self.name.clone(),
        };
        if !*self.leading.borrow() {
            return Err(not_leading());
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        serde_json::to_writer(&mut gz, file)
            .map_err(|e| self.api_error(kube::Error::SerdeError(e)))?;
        let mut bytes = gz.finish().map_err(|e| Error::Io {
            path: PathBuf::from(&self.name),
            source: e,
        })?;
        if bytes.len() > CONFIG_MAP_MAX_BYTES {
            // Too many Events to hand over: say so, and leave a checkpoint without watches (a successor
            // then starts from its startup policy) rather than an old one it would count from twice.
            warn_too_large(&self.name, bytes.len());
            let empty = EventsFile {
                writer: file.writer.clone(),
                watches: Vec::new(),
            };
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            serde_json::to_writer(&mut gz, &empty)
                .map_err(|e| self.api_error(kube::Error::SerdeError(e)))?;
            bytes = gz.finish().map_err(|e| Error::Io {
                path: PathBuf::from(&self.name),
                source: e,
            })?;
        }
        let written = bytes.len();
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                labels: Some([("app.kubernetes.io/name".to_string(), "herald".to_string())].into()),
                ..ObjectMeta::default()
            },
            binary_data: Some([(CONFIG_MAP_KEY.to_string(), ByteString(bytes))].into()),
            ..ConfigMap::default()
        };
        let pp = PostParams::default();
        // Replace without a resourceVersion: the Lease already says who may write, and a successor must
        // not be refused because of what its predecessor wrote last.
        match self.api.replace(&self.name, &pp, &cm).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => match self.api.create(&pp, &cm).await {
                Ok(_) => Ok(()),
                Err(e) => Err(self.api_error(e)),
            },
            Err(e) => Err(self.api_error(e)),
        }?;
        if *self.leading.borrow() || self.held_until.as_ref().is_some_and(|h| h.certainly_held()) {
            Ok(written)
        } else {
            // Written, but the lead was lost meanwhile: the successor may have read the older state, so
            // what this agent counted since must not be shown.
            Err(not_leading())
        }
    }
}

fn warn_too_large(name: &str, bytes: usize) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::warn!(
            configmap = name,
            bytes,
            "the Event checkpoint is too large for a ConfigMap: after a fail-over the new leader starts from its startup policy (lower source.events.max_tracked_objects to fit)"
        )
    });
}

/// The last barrier the metrics sink saved, per Event watch: a watch whose last barrier was not saved (it
/// met a full queue) sends another even if nothing changed, so the final state of a burst is never left out.
#[derive(Debug, Default)]
pub struct Acks(Vec<std::sync::atomic::AtomicU64>);

impl Acks {
    pub fn new(watches: usize) -> Acks {
        Acks((0..watches).map(|_| Default::default()).collect())
    }

    pub fn saved(&self, watch: u16) -> u64 {
        self.0
            .get(usize::from(watch))
            .map_or(0, |a| a.load(std::sync::atomic::Ordering::Acquire))
    }

    pub fn ack(&self, watch: u16, sequence: u64) {
        if let Some(a) = self.0.get(usize::from(watch)) {
            a.fetch_max(sequence, std::sync::atomic::Ordering::AcqRel);
        }
    }
}

/// Read a checkpoint; `Ok(None)` when there is none yet.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, Error> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Io {
                path: path.into(),
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| Error::Corrupt {
            path: path.into(),
            source,
        })
}

/// Write atomically and durably: a temporary file next to it, fsync, rename over the old one, fsync the
/// directory (so the rename itself survives a power loss). Returns the bytes written; while it runs the
/// old file and the new one both exist, so the state volume needs room for twice the largest checkpoint.
pub fn save<T: Serialize>(path: &Path, value: &T) -> Result<usize, Error> {
    let io = |source| Error::Io {
        path: path.into(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let bytes = serde_json::to_vec(value).map_err(|e| io(std::io::Error::other(e)))?;
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)?;
    // Not every filesystem lets a directory be opened for fsync; the rename is done either way.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_absent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        assert!(load::<Vec<u32>>(&path).unwrap().is_none());
        save(&path, &vec![1u32, 2, 3]).unwrap();
        save(&path, &vec![4u32]).unwrap();
        assert_eq!(load::<Vec<u32>>(&path).unwrap(), Some(vec![4]));
        assert!(
            !dir.path().join("sub/state.json.tmp").exists(),
            "the temporary file was renamed"
        );
    }

    #[test]
    fn corrupt_files_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, b"{\"truncat").unwrap();
        let e = load::<Vec<u32>>(&path).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }));
        assert!(e.to_string().contains("state.json is corrupt"), "{e}");
    }

    /// An `events.json` as herald wrote it while it kept UIDs (trimmed to one watch and two Events).
    const UID_CHECKPOINT: &str = r#"{"writer":"herald-0","watches":[{"watch":{"key":"events namespace=* labels= fields=","resource_version":"1234","last_event_time":"2026-11-26T10:00:00Z","sequence":7,"objects":[["0f4b6a52-1c3e-4e8b-9a61-2d7c5e8f9a01",3],["b2c1d0e9-8f7a-4b6c-8d5e-4f3a2b1c0d9e",1]]},"counters":[{"metric":"herald_event_occurrences_total","labels":[["namespace","default"]],"value":4}]}]}"#;

    #[test]
    fn a_checkpoint_with_uids_restores_as_their_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(EVENTS_FILE);
        std::fs::write(&path, UID_CHECKPOINT).unwrap();
        let file: EventsFile = load(&path).unwrap().unwrap();
        let watch = &file.watches[0].watch;
        assert_eq!(
            watch.objects,
            [
                (key_hash("0f4b6a52-1c3e-4e8b-9a61-2d7c5e8f9a01"), 3),
                (key_hash("b2c1d0e9-8f7a-4b6c-8d5e-4f3a2b1c0d9e"), 1)
            ]
        );
        assert_eq!(watch.resource_version, "1234");

        // The accounting restored from it knows both Events by UID and counts only what came since.
        let mut a = crate::source::accounting::Accounting::new(
            crate::config::StartupPolicy::SkipExisting,
            100,
        );
        a.restore(watch.objects.iter().copied());
        a.list_start(0);
        assert_eq!(
            a.observe("0f4b6a52-1c3e-4e8b-9a61-2d7c5e8f9a01", 5).delta,
            2
        );
        assert_eq!(
            a.observe("b2c1d0e9-8f7a-4b6c-8d5e-4f3a2b1c0d9e", 1).delta,
            0
        );

        // Saved again, it holds the hashes as numbers and reads back the same.
        save(&path, &file).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains(&format!(
                "[{},3]",
                key_hash("0f4b6a52-1c3e-4e8b-9a61-2d7c5e8f9a01")
            )),
            "{text}"
        );
        assert_eq!(load::<EventsFile>(&path).unwrap().unwrap(), file);
    }
}
