//! Which connections the server keeps, and which it closes to make room.
//!
//! The server holds at most `max_connections`. At the limit, a new connection does not wait in the kernel's
//! queue behind the ones that hold the places (idle keep-alives, port scans, clients trickling a header):
//! the longest-open connection that is not inside a request is closed and the newcomer takes its place.
//! A connection is protected until its task has had a first chance to read, so in a flood a probe whose
//! request is already in its socket is answered before anything can evict it. Only when every place is
//! mid-request (say, 128 scrapes waiting for one rendering) is there nothing to close; the newcomer then
//! goes to a second, small registry of the same kind, the probe lane, where only `/healthz`, `/livez` and
//! `/readyz` are answered. So the kubelet's probes are answered at every limit, and the number of open
//! sockets never exceeds the limit plus the lane.
//!
//! It must never block the accept loop: admission is a short critical section over at most `max` entries.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

/// Places in the probe lane. Probes are answered from memory in microseconds, so a few places serve a
/// kubelet probing every few seconds.
pub const PROBE_LANE: usize = 16;

/// A bounded set of connections that makes room by closing its oldest idle member.
pub struct Registry {
    max: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    next_id: u64,
    open: HashMap<u64, Arc<Slot>>,
}

/// One connection's entry: how many requests (or a first read) are in progress, and how to close it.
#[derive(Default)]
pub struct Slot {
    busy: AtomicUsize,
    close: CancellationToken,
}

/// A place given to a new connection.
pub struct Admitted {
    pub ticket: Ticket,
    /// Protects the connection until it has been read from once; drop it after the first poll.
    pub fresh: Busy,
    /// Whether an idle connection was closed to make the place.
    pub evicted: bool,
}

/// Held by a connection's task for its whole life; gives its place back when dropped.
pub struct Ticket {
    registry: Arc<Registry>,
    id: u64,
    slot: Arc<Slot>,
}

impl Registry {
    pub fn new(max: usize) -> Arc<Registry> {
        let max = max.max(1);
        Arc::new(Registry {
            max,
            inner: Mutex::new(Inner {
                next_id: 0,
                open: HashMap::with_capacity(max),
            }),
        })
    }

    /// The limit in force.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections holding a place.
    pub fn held(&self) -> usize {
        self.lock().open.len()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave the map half-updated (every change is one insert or remove).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a new connection, closing the oldest idle one if that is what it takes; `None` when
    /// every member is mid-request.
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let mut inner = self.lock();
        let mut evicted = false;
        if inner.open.len() >= self.max {
            // Ids grow with each admission, so the smallest idle id is the longest-open idle connection.
            let oldest_idle = inner
                .open
                .iter()
                .filter(|(_, slot)| slot.busy.load(Ordering::Acquire) == 0)
                .map(|(id, _)| *id)
                .min()?;
            if let Some(slot) = inner.open.remove(&oldest_idle) {
                slot.close.cancel();
            }
            evicted = true;
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let slot = Arc::new(Slot::default());
        slot.busy.store(1, Ordering::Release);
        inner.open.insert(id, slot.clone());
        Some(Admitted {
            fresh: Busy(slot.clone()),
            ticket: Ticket {
                registry: self.clone(),
                id,
                slot,
            },
            evicted,
        })
    }
}

impl Ticket {
    /// Resolves when the registry closed this connection to make room for a newer one.
    pub async fn evicted(&self) {
        self.slot.close.cancelled().await
    }

    /// Marks the connection busy (not to be evicted) until the guard is dropped: hold it while a
    /// request is handled.
    pub fn busy(&self) -> Busy {
        self.slot.busy.fetch_add(1, Ordering::AcqRel);
        Busy(self.slot.clone())
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.registry.lock().open.remove(&self.id);
    }
}

/// A request in progress on a connection (or its first read still to come).
pub struct Busy(Arc<Slot>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Admitted and read from once.
    fn admit(reg: &Arc<Registry>) -> (Ticket, bool) {
        let a = reg.admit().expect("a place");
        (a.ticket, a.evicted)
    }

    #[tokio::test]
    async fn at_the_limit_the_oldest_idle_connection_makes_room() {
        let reg = Registry::new(3);
        let (a, _) = admit(&reg);
        let (b, _) = admit(&reg);
        let (c, _) = admit(&reg);
        let _a_busy = a.busy();
        let (d, evicted) = admit(&reg);
        assert!(evicted);
        // a is busy, so b (the oldest idle one) was closed; c and a stay.
        tokio::time::timeout(std::time::Duration::from_secs(1), b.evicted())
            .await
            .expect("b evicted");
        assert!(!a.slot.close.is_cancelled());
        assert!(!c.slot.close.is_cancelled());
        assert_eq!(reg.held(), 3);
        drop((b, c, d));
        assert_eq!(reg.held(), 1);
    }

    #[test]
    fn a_connection_not_yet_read_from_is_not_evicted() {
        let reg = Registry::new(1);
        let first = reg.admit().unwrap();
        assert!(reg.admit().is_none(), "protected until its first read");
        drop(first.fresh);
        let second = reg.admit().unwrap();
        assert!(second.evicted);
        assert!(first.ticket.slot.close.is_cancelled());
    }

    #[test]
    fn when_every_member_is_mid_request_there_is_no_place() {
        let reg = Registry::new(2);
        let (a, _) = admit(&reg);
        let (b, _) = admit(&reg);
        let busy = (a.busy(), b.busy());
        assert!(reg.admit().is_none());
        drop(busy);
        let (_c, evicted) = admit(&reg);
        assert!(evicted);
        assert_eq!(reg.held(), 2);
    }
}
