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
use std::sync::Arc;

use crate::config::StartupPolicy;

#[derive(Debug, Clone, Copy)]
struct Tracked {
    count: u32,
    /// The list generation that last saw the object, to find those a relist no longer has.
    generation: u32,
}

/// What one observation of an object means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// The first time herald counts this object.
    pub new_object: bool,
    /// Occurrences not counted before.
    pub delta: u32,
}

/// Per-watch count state, bounded by `max_objects` (oldest first out).
#[derive(Debug)]
pub struct Accounting {
    known: ahash::HashMap<Arc<str>, Tracked>,
    /// Insertion order for eviction; may hold keys already deleted (skipped lazily).
    order: VecDeque<Arc<str>>,
    generation: u32,
    baseline: bool,
    /// A list has completed since the start (the baseline, if any, is taken).
    listed: bool,
    policy: StartupPolicy,
    max_objects: usize,
    evictions: u64,
}

impl Accounting {
    pub fn new(policy: StartupPolicy, max_objects: usize) -> Accounting {
        Accounting {
            known: ahash::HashMap::default(),
            order: VecDeque::new(),
            generation: 0,
            baseline: false,
            listed: false,
            policy,
            max_objects: max_objects.max(1),
            evictions: 0,
        }
    }

    /// A list (initial or relist) starts. A list whose page failed starts again from the first page: until
    /// one completes, every attempt is still the initial list (and the baseline under `skip-existing`).
    pub fn list_start(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        self.baseline = !self.listed && self.policy == StartupPolicy::SkipExisting;
    }

    /// The list is complete: objects it did not contain are gone. Returns how many were forgotten.
    pub fn list_done(&mut self) -> usize {
        let before = self.known.len();
        let generation = self.generation;
        self.known.retain(|_, t| t.generation == generation);
        self.baseline = false;
        self.listed = true;
        self.compact();
        before - self.known.len()
    }

    /// An object was listed, added or modified with this total `count`.
    pub fn observe(&mut self, key: &str, count: u32) -> Observation {
        let generation = self.generation;
        if let Some(t) = self.known.get_mut(key) {
            t.generation = generation;
            let delta = count.saturating_sub(t.count);
            t.count = t.count.max(count);
            return Observation {
                new_object: false,
                delta,
            };
        }
        let key: Arc<str> = Arc::from(key);
        self.known
            .insert(key.clone(), Tracked { count, generation });
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

    /// An object was deleted.
    pub fn forget(&mut self, key: &str) {
        self.known.remove(key);
        if self.order.len() > 2 * self.max_objects + 64 {
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
                    if self.known.remove(&old).is_some() {
                        self.evictions += 1;
                    }
                }
                None => break,
            }
        }
    }

    /// Drop keys of deleted objects from the eviction order.
    fn compact(&mut self) {
        let known = &self.known;
        let mut seen = ahash::HashSet::default();
        self.order
            .retain(|k| known.contains_key(k) && seen.insert(k.clone()));
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
        a.list_start();
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
        a.list_start();
        assert_eq!(a.observe("old", 5), obs(true, 5));
        a.list_done();
    }

    #[test]
    fn relist_counts_what_happened_while_away_and_forgets_the_deleted() {
        let mut a = Accounting::new(StartupPolicy::SkipExisting, 100);
        a.list_start();
        a.observe("a", 1);
        a.observe("b", 4);
        a.list_done();
        // 410: relist. a grew, b was deleted, c appeared.
        a.list_start();
        assert_eq!(a.observe("a", 3), obs(false, 2));
        assert_eq!(a.observe("c", 2), obs(true, 2), "not a baseline any more");
        assert_eq!(a.list_done(), 1);
        assert_eq!(a.len(), 2);
        assert_eq!(a.observe("b", 5), obs(true, 5), "b was forgotten");
    }

    #[test]
    fn an_initial_list_restarted_after_a_failed_page_is_still_the_baseline() {
        let mut a = Accounting::new(StartupPolicy::SkipExisting, 100);
        a.list_start();
        assert_eq!(a.observe("p1", 4), obs(false, 0));
        // Page 2 failed: the list starts over.
        a.list_start();
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
