//! Dedup: a stable fingerprint per record and a bounded TTL window per fingerprint.
//!
//! The fingerprint is ahash with fixed seeds over the configured fields, so it is the same across restarts
//! and processes (it is written to the logs). A record whose fingerprint was first seen less than `ttl` ago
//! is a duplicate; an expired window starts a new one. At most `max_entries` windows are kept: when full,
//! the oldest window goes (amortised O(1), no allocation in steady state).

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash, Hasher};
use std::time::{Duration, Instant};

use crate::config::{DedupConfig, DedupField};
use crate::record::EventRecord;

/// Fixed seeds: a fingerprint must not change between runs.
const SEEDS: (u64, u64, u64, u64) = (
    0x6865_7261_6c64_0001,
    0x6865_7261_6c64_0002,
    0x6865_7261_6c64_0003,
    0x6865_7261_6c64_0004,
);

#[derive(Debug)]
pub struct Dedup {
    enabled: bool,
    key: Vec<DedupField>,
    ttl: Duration,
    max_entries: usize,
    hasher: ahash::RandomState,
    /// Fingerprint → start of its window.
    windows: ahash::HashMap<u64, Instant>,
    /// Windows in the order they started (a fingerprint may appear again after its window expired).
    order: VecDeque<(u64, Instant)>,
    evictions: u64,
}

impl Dedup {
    pub fn new(cfg: &DedupConfig) -> Dedup {
        let DedupConfig {
            enabled,
            key,
            ttl,
            max_entries,
        } = cfg;
        Dedup {
            enabled: *enabled,
            key: key.clone(),
            ttl: ttl.0,
            max_entries: (*max_entries).max(1),
            hasher: ahash::RandomState::with_seeds(SEEDS.0, SEEDS.1, SEEDS.2, SEEDS.3),
            windows: ahash::HashMap::default(),
            order: VecDeque::new(),
            evictions: 0,
        }
    }

    pub fn fingerprint(&self, r: &EventRecord) -> u64 {
        let mut h = self.hasher.build_hasher();
        for field in &self.key {
            let value: &str = match field {
                DedupField::Namespace => &r.namespace,
                DedupField::Kind => &r.regarding.kind,
                DedupField::Name => &r.regarding.name,
                DedupField::Reason => &r.reason,
                DedupField::Type => &r.type_,
                DedupField::Message => &r.message,
                DedupField::Component => &r.component,
            };
            value.hash(&mut h);
        }
        h.finish()
    }

    /// Set `fingerprint` and `duplicate`; returns `duplicate`.
    pub fn check(&mut self, record: &mut EventRecord, now: Instant) -> bool {
        record.fingerprint = self.fingerprint(record);
        record.duplicate = false;
        if !self.enabled {
            return false;
        }
        self.expire(now);
        if let Some(start) = self.windows.get(&record.fingerprint)
            && now.saturating_duration_since(*start) < self.ttl
        {
            record.duplicate = true;
            return true;
        }
        while self.windows.len() >= self.max_entries {
            match self.order.pop_front() {
                Some((fp, start)) => {
                    if self.windows.get(&fp) == Some(&start) {
                        self.windows.remove(&fp);
                        self.evictions += 1;
                    }
                }
                None => break,
            }
        }
        self.windows.insert(record.fingerprint, now);
        self.order.push_back((record.fingerprint, now));
        false
    }

    /// Forget windows older than the TTL (they are at the front of `order`).
    fn expire(&mut self, now: Instant) {
        while let Some(&(fp, start)) = self.order.front() {
            if now.saturating_duration_since(start) < self.ttl {
                break;
            }
            self.order.pop_front();
            if self.windows.get(&fp) == Some(&start) {
                self.windows.remove(&fp);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// Windows dropped because of the size bound (not expiry).
    pub fn evictions(&self) -> u64 {
        self.evictions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str) -> EventRecord {
        EventRecord::for_test("ns", "Pod", name, "BackOff", "Warning")
    }

    #[test]
    fn duplicates_within_ttl_then_a_new_window() {
        let mut d = Dedup::new(&DedupConfig::default());
        let t0 = Instant::now();
        let mut a = rec("web");
        assert!(!d.check(&mut a, t0));
        let mut b = rec("web");
        b.message = "different message, same key".into();
        assert!(d.check(&mut b, t0 + Duration::from_secs(30)));
        assert_eq!(a.fingerprint, b.fingerprint);
        assert!(!d.check(&mut rec("db"), t0 + Duration::from_secs(30)));
        assert!(
            !d.check(&mut rec("web"), t0 + Duration::from_secs(61)),
            "window expired"
        );
        assert!(d.check(&mut rec("web"), t0 + Duration::from_secs(90)));
    }

    #[test]
    fn fingerprint_is_stable_and_follows_the_key() {
        let d = Dedup::new(&DedupConfig::default());
        let again = Dedup::new(&DedupConfig::default());
        assert_eq!(d.fingerprint(&rec("web")), again.fingerprint(&rec("web")));
        assert_ne!(d.fingerprint(&rec("web")), d.fingerprint(&rec("db")));
    }

    #[test]
    fn bounded_oldest_first_and_disabled_never_marks() {
        let mut cfg = DedupConfig {
            max_entries: 2,
            ..DedupConfig::default()
        };
        let mut d = Dedup::new(&cfg);
        let t = Instant::now();
        for name in ["a", "b", "c"] {
            assert!(!d.check(&mut rec(name), t));
        }
        assert_eq!((d.len(), d.evictions()), (2, 1));
        assert!(!d.check(&mut rec("a"), t), "a was evicted");
        assert!(d.check(&mut rec("c"), t));
        cfg.enabled = false;
        let mut off = Dedup::new(&cfg);
        let mut r = rec("a");
        assert!(!off.check(&mut r, t) && !off.check(&mut rec("a"), t));
        assert_ne!(r.fingerprint, 0);
    }
}
