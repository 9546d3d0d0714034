//! Turning Event counts into occurrences, exactly once.
//!
//! An Event object stands for `count` occurrences. herald remembers the last count it accounted for per
//! object (by UID), so: a new object adds its count, an update adds only the increase, a delete adds nothing
//! and forgets the object. The first list after start is a baseline under `startup: skip-existing` (its
//! counts are remembered, not counted); a later relist (after 410 Gone) counts objects it has not seen as new
//! (they were created while the watch was down) and forgets those that were not listed (deleted meanwhile).
//! Counts never go backwards: a lower count than remembered adds nothing and is not remembered, so a stale
//! replay cannot make the next increase count twice.

use std::collections::VecDeque;
use std::hash::Hasher;

use crate::config::StartupPolicy;

/// How an Event's identity (its UID, or namespace/name) becomes the 64-bit key herald remembers it by.
///
/// Why a hash and not the UID: a UID is 36 bytes plus an allocation (about 80 bytes with its `Arc`, twice: in
/// the map and in the eviction order); a `u64` is 8, so a tracked Event costs about 30 bytes in all (measured
/// in BENCHMARKS.md, "Hot path"). Why FNV-1a: the keys go into checkpoints, so the hash must be the same in
/// every build, on every CPU and in every later version (ahash and std's `DefaultHasher` promise neither).
///
/// **Collisions.** Two different Events with the same hash are taken for one object: the second one's count
/// is compared with the first one's, so its occurrences up to the first one's count are not counted (an
/// undercount, never a double count), and a delete of either forgets both. For random UIDs the chance that
/// any two of n tracked Events collide is about n² / 2⁶⁵: 1 in 10⁹ for 200 000 (the default bound), 1 in 10¹¹
/// for 20 000. The API server chooses UIDs (a client cannot), so nobody can aim for a collision; the
/// namespace/name fallback is only used for malformed objects without a UID.
pub fn key_hash(key: &str) -> u64 {
    let mut h = fnv::FnvHasher::default();
    h.write(key.as_bytes());
    h.finish()
}

/// A map key: the 64-bit hash as two halves, so an entry is 12 bytes (4-byte aligned) instead of 16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key([u32; 2]);

impl From<u64> for Key {
    fn from(k: u64) -> Key {
        Key([(k >> 32) as u32, k as u32])
    }
}

/// The last counted count and, in bit 31, whether the list in progress has shown the object (to find those a
/// relist no longer has). Counts are int32 in the API (`normalise` refuses larger ones), so bit 31 is free;
/// a larger count given here is taken as 2^31 - 1.
#[derive(Debug, Clone, Copy)]
struct Tracked(u32);

impl Tracked {
    const LISTED: u32 = 1 << 31;
    const MAX_COUNT: u32 = Tracked::LISTED - 1;

    fn new(count: u32) -> Tracked {
        Tracked(count.min(Tracked::MAX_COUNT) | Tracked::LISTED)
    }

    fn count(self) -> u32 {
        self.0 & Tracked::MAX_COUNT
    }

    fn listed(self) -> bool {
        self.0 & Tracked::LISTED != 0
    }
}

/// What one observation of an object means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// The first time herald counts this object.
    pub new_object: bool,
    /// Occurrences not counted before.
    pub delta: u32,
}

/// Per-watch count state, bounded by `max_objects` (oldest first out). Objects are known by
/// [`key_hash`] of their identity (12 bytes per map entry, 8 per eviction-order entry).
#[derive(Debug)]
pub struct Accounting {
    known: ahash::HashMap<Key, Tracked>,
    /// Insertion order for eviction; may hold keys already deleted (skipped lazily, compacted once they are
    /// as many as the live ones, so it stays within about twice the tracked objects).
    order: VecDeque<u64>,
    baseline: bool,
    /// A list has completed since the start (the baseline, if any, is taken).
    listed: bool,
    policy: StartupPolicy,
    max_objects: usize,
    evictions: u64,
    hash: fn(&str) -> u64,
}

impl Accounting {
    pub fn new(policy: StartupPolicy, max_objects: usize) -> Accounting {
        Accounting::with_hash(policy, max_objects, key_hash)
    }

    /// The same with another identity hash: tests force collisions through it.
    pub fn with_hash(
        policy: StartupPolicy,
        max_objects: usize,
        hash: fn(&str) -> u64,
    ) -> Accounting {
        Accounting {
            known: ahash::HashMap::default(),
            order: VecDeque::new(),
            baseline: false,
            listed: false,
            policy,
            max_objects: max_objects.max(1),
            evictions: 0,
            hash,
        }
    }

    /// A list (initial or relist) starts. A list whose page failed starts again from the first page: until
    /// one completes, every attempt is still the initial list (and the baseline under `skip-existing`).
    ///
    /// `expected` objects (what the server says the list holds, within the bound) are made room for at once:
    /// growing page by page would double the map and the eviction order several times, and each doubling
    /// holds the old table and the new one at the same time (for 200k Events, about 2 MiB above the final
    /// size at the last doubling).
    pub fn list_start(&mut self, expected: usize) {
        let expected = expected.min(self.max_objects);
        self.known
            .reserve(expected.saturating_sub(self.known.len()));
        self.order
            .reserve(expected.saturating_sub(self.order.len()));
        for t in self.known.values_mut() {
            t.0 &= Tracked::MAX_COUNT;
        }
        self.baseline = !self.listed && self.policy == StartupPolicy::SkipExisting;
    }

    /// The list is complete: objects it did not contain are gone. Returns how many were forgotten.
    pub fn list_done(&mut self) -> usize {
        let before = self.known.len();
        self.known.retain(|_, t| t.listed());
        self.baseline = false;
        self.listed = true;
        self.compact();
        before - self.known.len()
    }

    /// An object was listed, added or modified with this total `count`; `key` is its UID (or namespace/name).
    pub fn observe(&mut self, key: &str, count: u32) -> Observation {
        self.observe_hash(self.key_of(key), count)
    }

    /// The key an identity is known by, so a caller can take it before it gives the object away.
    pub fn key_of(&self, key: &str) -> u64 {
        (self.hash)(key)
    }

    /// [`Accounting::observe`] with the key from [`Accounting::key_of`].
    pub fn observe_hash(&mut self, key: u64, count: u32) -> Observation {
        if let Some(t) = self.known.get_mut(&Key::from(key)) {
            let delta = count.min(Tracked::MAX_COUNT).saturating_sub(t.count());
            *t = Tracked::new(t.count().max(count));
            return Observation {
                new_object: false,
                delta,
            };
        }
        let count = count.min(Tracked::MAX_COUNT);
        self.known.insert(Key::from(key), Tracked::new(count));
        self.order.push_back(key);
        self.evict_over_bound();
        if self.baseline {
            Observation {
                new_object: false,
                delta: 0,
            }
        } else {
            Observation {
                new_object: true,
                delta: count,
            }
        }
    }

    /// Continue from a checkpoint: `objects` (identity hash and last counted count, oldest first) are known,
    /// and the start's first list compares with them instead of being a baseline, so only what happened since
    /// counts.
    pub fn restore(&mut self, objects: impl IntoIterator<Item = (u64, u32)>) {
        for (key, count) in objects {
            if self
                .known
                .insert(Key::from(key), Tracked::new(count))
                .is_none()
            {
                self.order.push_back(key);
            }
        }
        self.evict_over_bound();
        self.listed = true;
    }

    /// The per-object counts to checkpoint, oldest first (so a restore keeps the eviction order).
    pub fn snapshot(&self) -> Vec<(u64, u32)> {
        let mut seen = ahash::HashSet::default();
        seen.reserve(self.known.len());
        let mut out = Vec::with_capacity(self.known.len());
        for k in &self.order {
            if let Some(t) = self.known.get(&Key::from(*k))
                && seen.insert(*k)
            {
                out.push((*k, t.count()));
            }
        }
        out
    }

    /// A list has completed since the start or the restore: the counts are worth a checkpoint.
    pub fn is_listed(&self) -> bool {
        self.listed
    }

    /// An object was deleted.
    pub fn forget(&mut self, key: &str) {
        self.known.remove(&Key::from((self.hash)(key)));
        if self.order.len() > 2 * self.known.len() + 64 {
            self.compact();
        }
    }

    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// Objects forgotten because of the bound since the start.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    fn evict_over_bound(&mut self) {
        while self.known.len() > self.max_objects {
            match self.order.pop_front() {
                Some(old) => {
                    if self.known.remove(&Key::from(old)).is_some() {
                        self.evictions += 1;
                    }
                }
                None => break,
            }
        }
    }

    /// Drop keys of deleted objects (and repeats of a key seen again after a delete) from the eviction order.
    ///
    /// Every tracked key is in the order, so an order no longer than the map has nothing to drop; that is the
    /// usual case at the end of a list, where building the set of seen keys would be the largest allocation
    /// of the whole list (9 bytes per tracked Event at once).
    fn compact(&mut self) {
        if self.order.len() == self.known.len() {
            return;
        }
        let known = &self.known;
        let mut seen = ahash::HashSet::default();
        seen.reserve(known.len());
        self.order
            .retain(|k| known.contains_key(&Key::from(*k)) && seen.insert(*k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(new_object: bool, delta: u32) -> Observation {
        Observation { new_object, delta }
    }

    #[test]
    fn skip_existing_baseline_then_increases() {
        let mut a = Accounting::new(StartupPolicy::SkipExisting, 100);
        a.list_start(0);
        assert_eq!(a.observe("old", 5), obs(false, 0));
        a.list_done();
        assert_eq!(
            a.observe("old", 7),
            obs(false, 2),
            "only the increase counts"
        );
        assert_eq!(
            a.observe("old", 7),
            obs(false, 0),
            "an unchanged update counts nothing"
        );
        assert_eq!(
            a.observe("new", 3),
            obs(true, 3),
            "a new object counts its count"
        );
        a.forget("new");
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn replay_counts_existing() {
        let mut a = Accounting::new(StartupPolicy::Replay, 100);
        a.list_start(0);
        assert_eq!(a.observe("old", 5), obs(true, 5));
        a.list_done();
    }

    #[test]
    fn relist_counts_what_happened_while_away_and_forgets_the_deleted() {
        let mut a = Accounting::new(StartupPolicy::SkipExisting, 100);
        a.list_start(0);
        a.observe("a", 1);
        a.observe("b", 4);
        a.list_done();
        // 410: relist. a grew, b was deleted, c appeared.
        a.list_start(0);
        assert_eq!(a.observe("a", 3), obs(false, 2));
        assert_eq!(a.observe("c", 2), obs(true, 2), "not a baseline any more");
        assert_eq!(a.list_done(), 1);
        assert_eq!(a.len(), 2);
        assert_eq!(a.observe("b", 5), obs(true, 5), "b was forgotten");
    }

    #[test]
    fn an_initial_list_restarted_after_a_failed_page_is_still_the_baseline() {
        let mut a = Accounting::new(StartupPolicy::SkipExisting, 100);
        a.list_start(0);
        assert_eq!(a.observe("p1", 4), obs(false, 0));
        // Page 2's continue token expired: the list starts over.
        a.list_start(0);
        assert_eq!(a.observe("p1", 4), obs(false, 0));
        assert_eq!(
            a.observe("p2", 6),
            obs(false, 0),
            "still existing before start"
        );
        a.list_done();
        assert_eq!(a.observe("p2", 7), obs(false, 1));
    }

    #[test]
    fn counts_never_go_backwards() {
        let mut a = Accounting::new(StartupPolicy::SkipExisting, 100);
        assert_eq!(a.observe("x", 5), obs(true, 5));
        assert_eq!(a.observe("x", 4), obs(false, 0));
        assert_eq!(a.observe("x", 6), obs(false, 1));
    }

    #[test]
    fn a_restored_state_counts_only_what_happened_since() {
        let mut before = Accounting::new(StartupPolicy::SkipExisting, 100);
        before.list_start(0);
        before.observe("a", 3);
        before.list_done();
        before.observe("b", 2);
        let saved = before.snapshot();
        assert_eq!(saved, [(key_hash("a"), 3), (key_hash("b"), 2)]);

        let mut after = Accounting::new(StartupPolicy::SkipExisting, 100);
        after.restore(saved);
        after.list_start(2);
        assert_eq!(
            after.observe("a", 5),
            obs(false, 2),
            "no baseline after a restore"
        );
        assert_eq!(
            after.observe("c", 1),
            obs(true, 1),
            "created while herald was down"
        );
        assert_eq!(after.list_done(), 1, "b was deleted while herald was down");
    }

    /// Every key hashes alike: all objects collide.
    fn collide(_: &str) -> u64 {
        7
    }

    #[test]
    fn a_collision_undercounts_and_never_double_counts() {
        let mut a = Accounting::with_hash(StartupPolicy::Replay, 100, collide);
        assert_eq!(a.observe("uid-a", 5), obs(true, 5));
        assert_eq!(
            a.observe("uid-b", 3),
            obs(false, 0),
            "taken for uid-a: its 3 occurrences are below uid-a's 5 and not counted"
        );
        assert_eq!(
            a.observe("uid-b", 8),
            obs(false, 3),
            "only what exceeds the shared count"
        );
        assert_eq!(a.len(), 1);
        a.forget("uid-a");
        assert!(a.is_empty(), "a delete of either forgets both");
        assert_eq!(a.observe("uid-b", 9), obs(true, 9), "then counted as new");
    }

    #[test]
    fn distinct_uids_do_not_collide() {
        let mut a = Accounting::new(StartupPolicy::Replay, 1_000_000);
        let mut counted = 0u64;
        for i in 0..200_000u32 {
            counted += u64::from(
                a.observe(&format!("{i:08x}-8c1f-4b7e-9d2a-3f6e5c4b{i:04x}"), 1)
                    .delta,
            );
        }
        assert_eq!(counted, 200_000);
        assert_eq!(a.len(), 200_000);
    }

    #[test]
    fn the_hash_is_fixed_across_builds() {
        // Checkpoints hold these keys: a change here makes every saved checkpoint count again.
        assert_eq!(key_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(key_hash("a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn counts_beyond_int32_are_held_at_its_maximum() {
        let mut a = Accounting::new(StartupPolicy::Replay, 100);
        assert_eq!(a.observe("x", i32::MAX as u32), obs(true, i32::MAX as u32));
        assert_eq!(a.observe("x", u32::MAX), obs(false, 0));
        a.list_start(0);
        a.observe("x", 1);
        assert_eq!(
            a.list_done(),
            0,
            "still listed: the flag is not part of the count"
        );
        assert_eq!(a.snapshot(), [(key_hash("x"), i32::MAX as u32)]);
    }

    #[test]
    fn deletes_do_not_grow_the_eviction_order() {
        let mut a = Accounting::new(StartupPolicy::Replay, 200_000);
        a.observe("live", 1);
        for i in 0..10_000 {
            let k = format!("gone-{i}");
            a.observe(&k, 1);
            a.forget(&k);
        }
        assert!(
            a.order.len() <= 2 * a.len() + 65,
            "{} keys in the eviction order for {} tracked",
            a.order.len(),
            a.len()
        );
        assert_eq!(a.snapshot(), [(key_hash("live"), 1)]);
    }

    #[test]
    fn a_list_makes_room_for_what_the_server_announces_within_the_bound() {
        let mut a = Accounting::new(StartupPolicy::SkipExisting, 1_000);
        a.list_start(600);
        assert!(a.known.capacity() >= 600 && a.order.capacity() >= 600);
        let mut b = Accounting::new(StartupPolicy::SkipExisting, 1_000);
        b.list_start(usize::MAX);
        assert!(
            b.known.capacity() < 4_000,
            "a server's count is held to the bound: {}",
            b.known.capacity()
        );
    }

    #[test]
    fn bounded_oldest_first() {
        let mut a = Accounting::new(StartupPolicy::SkipExisting, 2);
        a.observe("1", 1);
        a.observe("2", 1);
        a.forget("1");
        a.observe("3", 1);
        assert_eq!(a.evictions(), 0, "the deleted key made room");
        a.observe("4", 1);
        assert_eq!(a.evictions(), 1);
        assert_eq!(a.len(), 2);
        assert_eq!(
            a.observe("2", 2),
            obs(true, 2),
            "2 was the oldest and was evicted"
        );
    }
}

/// Property: whatever the API server does, herald's total equals the ground truth.
///
/// A model API server holds objects with counts; its ground truth is every creation's count plus every
/// increase. herald's [`Accounting`] sees what a list+watch client sees: while watching, every change (and,
/// after a resumed watch, some of them again, or stale); after a 410, nothing until a relist shows the current
/// objects (a relist may restart when a page fails). Under `skip-existing` the objects of the first list are
/// the baseline, under `replay` they count. Deletes during a relist gap are left out: list+watch cannot see an
/// Event that was created or raised and deleted while no watch was open (a documented limit).
#[cfg(test)]
mod props {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// Create object `k` (if absent) with this count.
        Add(u8, u32),
        /// Raise object `k`'s count by this much (0: an update that does not change the count).
        Raise(u8, u32),
        Delete(u8),
        /// The watch resumes from an older resourceVersion: object `k`'s state (as of up to `back` changes
        /// ago) is delivered again.
        Redeliver(u8, u8),
        /// 410: these changes happen unseen, then a relist; `failed_page` restarts the list once.
        Relist {
            gap: Vec<(u8, u32, bool)>,
            failed_page: bool,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        let k = 0u8..12;
        prop_oneof![
            3 => (k.clone(), 1u32..20).prop_map(|(k, c)| Op::Add(k, c)),
            4 => (k.clone(), 0u32..5).prop_map(|(k, c)| Op::Raise(k, c)),
            1 => k.clone().prop_map(Op::Delete),
            1 => (k.clone(), 0u8..4).prop_map(|(k, b)| Op::Redeliver(k, b)),
            1 => (proptest::collection::vec((k, 1u32..5, any::<bool>()), 0..6), any::<bool>())
                .prop_map(|(gap, failed_page)| Op::Relist { gap, failed_page }),
        ]
    }

    /// The model API server: current objects and the history of counts each went through.
    #[derive(Default)]
    struct World {
        objects: BTreeMap<u8, u32>,
        history: BTreeMap<u8, Vec<u32>>,
        truth: u64,
        /// Objects are recreated under a new UID after a delete, as Kubernetes does.
        uid: BTreeMap<u8, u32>,
    }

    impl World {
        fn key(&self, k: u8) -> String {
            format!("{k}/{}", self.uid.get(&k).copied().unwrap_or(0))
        }
        /// Apply a create or raise; returns the new count when something changed.
        fn write(&mut self, k: u8, by: u32, create: bool) -> Option<u32> {
            match self.objects.get_mut(&k) {
                Some(c) if !create => {
                    *c += by;
                    self.truth += u64::from(by);
                    let c = *c;
                    self.history.entry(k).or_default().push(c);
                    Some(c)
                }
                None if create => {
                    self.objects.insert(k, by);
                    self.truth += u64::from(by);
                    self.history.insert(k, vec![by]);
                    Some(by)
                }
                _ => None,
            }
        }
        fn delete(&mut self, k: u8) -> bool {
            let gone = self.objects.remove(&k).is_some();
            if gone {
                self.history.remove(&k);
                *self.uid.entry(k).or_default() += 1;
            }
            gone
        }
        fn list(&self, a: &mut Accounting, failed_page: bool) -> u64 {
            let mut counted = 0;
            a.list_start(self.objects.len());
            if failed_page {
                // The first page arrived, the second failed: the list starts again.
                for (k, c) in self.objects.iter().take(self.objects.len() / 2) {
                    counted += u64::from(a.observe(&self.key(*k), *c).delta);
                }
                a.list_start(self.objects.len());
            }
            for (k, c) in &self.objects {
                counted += u64::from(a.observe(&self.key(*k), *c).delta);
            }
            a.list_done();
            counted
        }
    }

    fn run(policy: StartupPolicy, initial: Vec<(u8, u32)>, first_fails: bool, ops: Vec<Op>) {
        let mut w = World::default();
        for (k, c) in initial {
            w.write(k, c, true);
        }
        let mut a = Accounting::new(policy, 10_000);
        let baseline = match policy {
            StartupPolicy::SkipExisting => w.truth,
            StartupPolicy::Replay => 0,
        };
        let mut counted = w.list(&mut a, first_fails);
        for op in ops {
            match op {
                Op::Add(k, c) => {
                    if let Some(c) = w.write(k, c, true) {
                        counted += u64::from(a.observe(&w.key(k), c).delta);
                    }
                }
                Op::Raise(k, by) => {
                    if let Some(c) = w.write(k, by, false) {
                        counted += u64::from(a.observe(&w.key(k), c).delta);
                    }
                }
                Op::Delete(k) => {
                    let key = w.key(k);
                    if w.delete(k) {
                        a.forget(&key);
                    }
                }
                Op::Redeliver(k, back) => {
                    if let Some(h) = w.history.get(&k) {
                        let i = h.len().saturating_sub(1 + usize::from(back));
                        counted += u64::from(a.observe(&w.key(k), h[i]).delta);
                    }
                }
                Op::Relist { gap, failed_page } => {
                    for (k, by, create) in gap {
                        w.write(k, by, create);
                    }
                    counted += w.list(&mut a, failed_page);
                }
            }
        }
        assert_eq!(counted, w.truth - baseline);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn any_history_counts_the_ground_truth(
            replay in any::<bool>(),
            initial in proptest::collection::vec((0u8..12, 1u32..20), 0..8),
            first_fails in any::<bool>(),
            ops in proptest::collection::vec(op(), 0..60),
        ) {
            let policy = if replay { StartupPolicy::Replay } else { StartupPolicy::SkipExisting };
            run(policy, initial, first_fails, ops);
        }
    }
}
