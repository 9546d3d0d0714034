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

use serde::Serialize;
use serde::de::DeserializeOwned;

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
    /// Every tracked Event: UID (or namespace/name) and the last count accounted for, oldest first.
    pub objects: Vec<(Arc<str>, u32)>,
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
    pub watches: Vec<SavedWatch>,
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
/// directory (so the rename itself survives a power loss).
pub fn save<T: Serialize>(path: &Path, value: &T) -> Result<(), Error> {
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
    Ok(())
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
}
