//! Faults on demand, so tests and people can rehearse what real API servers do to watchers.
//!
//! Syntax: comma-separated `key=value`, e.g. `disconnect-every=100,gone-every=500,error-rate=0.05,
//! error-status=429,retry-after=1,slow=10ms,stall-after=200,garbage-every=50,lease-stall=herald-0`. Every injected
//! fault is counted
//! (`faults_injected` in `/sim/truth`). Faults change delivery, never the stored data
//! or the ground truth.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A bad fault specification: which part, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fault spec {part:?}: {reason}")]
pub struct FaultSpecError {
    pub part: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaultSpec {
    /// Close each watch stream abruptly after this many events.
    pub disconnect_every: Option<u64>,
    /// Send `ERROR 410 Expired` on a watch stream after this many events, then close it.
    pub gone_every: Option<u64>,
    /// Fraction (0..=1) of list and watch requests answered with `error_status`.
    pub error_rate: f64,
    /// 500 (InternalError) or 429 (TooManyRequests); default 500.
    pub error_status: u16,
    /// `Retry-After` seconds sent with 429.
    pub retry_after: u64,
    /// Delay before each watch event.
    pub slow: Duration,
    /// Stop sending on a watch stream after this many events, keeping the connection open.
    pub stall_after: Option<u64>,
    /// Send a malformed line (truncated JSON, not JSON, unknown type, wrong shape, in turn) after every this
    /// many events on a watch stream; the stream goes on.
    pub garbage_every: Option<u64>,
    /// Lease writes (create or update) that would make a holder whose identity begins with this the holder get
    /// no answer, the connection staying open: an agent cut off from the API server mid-renew while the
    /// others still reach it.
    pub lease_stall: Option<String>,
}

/// A fault the simulator injected, for the count in `/sim/truth` (`faults_injected`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    /// A watch stream cut mid-stream (`disconnect-every`).
    Disconnect,
    /// `ERROR 410 Expired` on a watch stream (`gone-every`).
    Gone,
    /// A list or watch request answered with 500 (`error-rate`).
    Error500,
    /// A list or watch request answered with 429 and Retry-After (`error-rate`, `error-status=429`).
    Error429,
    /// A watch stream that stopped sending while staying open (`stall-after`).
    Stall,
    /// A malformed line in a watch stream (`garbage-every`).
    Garbage,
    /// A Lease write left unanswered (`lease-stall`).
    LeaseStall,
}

impl Injected {
    const ALL: [Injected; 7] = [
        Injected::Disconnect,
        Injected::Gone,
        Injected::Error500,
        Injected::Error429,
        Injected::Stall,
        Injected::Garbage,
        Injected::LeaseStall,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Injected::Disconnect => "disconnect",
            Injected::Gone => "gone",
            Injected::Error500 => "error_500",
            Injected::Error429 => "error_429",
            Injected::Stall => "stall",
            Injected::Garbage => "garbage",
            Injected::LeaseStall => "lease_stall",
        }
    }
}

/// How many faults of each kind the simulator injected since it started.
#[derive(Debug, Default)]
pub struct FaultCounts([AtomicU64; 7]);

impl FaultCounts {
    pub fn add(&self, fault: Injected) {
        self.0[fault as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, fault: Injected) -> u64 {
        self.0[fault as usize].load(Ordering::Relaxed)
    }

    /// Counts by kind (every kind listed, zeros included).
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        Injected::ALL
            .iter()
            .zip(&self.0)
            .map(|(f, n)| (f.as_str().to_string(), n.load(Ordering::Relaxed)))
            .collect()
    }
}

impl std::str::FromStr for FaultSpec {
    type Err = FaultSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut spec = FaultSpec {
            error_status: 500,
            retry_after: 1,
            ..FaultSpec::default()
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let err = |reason: &str| FaultSpecError {
                part: part.to_string(),
                reason: reason.to_string(),
            };
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| err("expected key=value"))?;
            let count = || {
                value
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| err("expected a positive whole number"))
            };
            match key {
                "disconnect-every" => spec.disconnect_every = Some(count()?),
                "gone-every" => spec.gone_every = Some(count()?),
                "stall-after" => spec.stall_after = Some(count()?),
                "garbage-every" => spec.garbage_every = Some(count()?),
                "lease-stall" => {
                    if value.is_empty() {
                        return Err(err("expected the start of a holder identity"));
                    }
                    spec.lease_stall = Some(value.to_string());
                }
                "retry-after" => spec.retry_after = count()?,
                "error-rate" => {
                    spec.error_rate = value
                        .parse::<f64>()
                        .ok()
                        .filter(|r| (0.0..=1.0).contains(r))
                        .ok_or_else(|| err("expected a fraction between 0 and 1"))?
                }
                "error-status" => {
                    spec.error_status = match value {
                        "500" => 500,
                        "429" => 429,
                        _ => return Err(err("expected 500 or 429")),
                    }
                }
                "slow" => {
                    spec.slow = humantime::parse_duration(value)
                        .map_err(|_| err("expected a duration like 10ms"))?
                }
                _ => {
                    return Err(err(
                        "unknown fault (disconnect-every, gone-every, error-rate, error-status, retry-after, slow, stall-after, garbage-every, lease-stall)",
                    ));
                }
            }
        }
        Ok(spec)
    }
}

impl fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(n) = self.disconnect_every {
            parts.push(format!("disconnect-every={n}"));
        }
        if let Some(n) = self.gone_every {
            parts.push(format!("gone-every={n}"));
        }
        if self.error_rate > 0.0 {
            parts.push(format!("error-rate={}", self.error_rate));
            parts.push(format!("error-status={}", self.error_status));
            parts.push(format!("retry-after={}", self.retry_after));
        }
        if !self.slow.is_zero() {
            parts.push(format!("slow={}", humantime::format_duration(self.slow)));
        }
        if let Some(n) = self.stall_after {
            parts.push(format!("stall-after={n}"));
        }
        if let Some(n) = self.garbage_every {
            parts.push(format!("garbage-every={n}"));
        }
        if let Some(holder) = &self.lease_stall {
            parts.push(format!("lease-stall={holder}"));
        }
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_back() {
        let s: FaultSpec = "disconnect-every=100,gone-every=500,error-rate=0.05,error-status=429,retry-after=2,slow=10ms,stall-after=7,garbage-every=3,lease-stall=herald-0"
            .parse()
            .unwrap();
        assert_eq!(s.disconnect_every, Some(100));
        assert_eq!(s.gone_every, Some(500));
        assert_eq!(
            (s.error_rate, s.error_status, s.retry_after),
            (0.05, 429, 2)
        );
        assert_eq!(s.slow, Duration::from_millis(10));
        assert_eq!(s.stall_after, Some(7));
        assert_eq!(s.garbage_every, Some(3));
        assert_eq!(s.lease_stall.as_deref(), Some("herald-0"));
        assert_eq!(s.to_string().parse::<FaultSpec>().unwrap(), s);
        assert_eq!("".parse::<FaultSpec>().unwrap().to_string(), "");
    }

    #[test]
    fn errors_name_the_part() {
        let e = "gone-every=0".parse::<FaultSpec>().unwrap_err();
        assert_eq!(e.part, "gone-every=0");
        assert!("explode=1".parse::<FaultSpec>().is_err());
        assert!("error-rate=2".parse::<FaultSpec>().is_err());
        assert_eq!(
            "lease-stall=".parse::<FaultSpec>().unwrap_err().part,
            "lease-stall="
        );
    }
}
