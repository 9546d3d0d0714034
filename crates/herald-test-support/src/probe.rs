//! What the harness reads from the agent: `/metrics` (Prometheus text), `/proc/<pid>/stat` and `status`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ, 100 on every Linux target herald builds for).
const TICKS_PER_SECOND: f64 = 100.0;

/// A minimal HTTP/1.1 GET: herald and the simulator answer with a Content-Length, and we ask them to close.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    http_request(addr, "GET", path, "")
}

/// The same for a PUT with a text body (the simulator's `PUT /sim/faults`).
pub fn http_put(addr: SocketAddr, path: &str, body: &str) -> Option<(u16, String)> {
    http_request(addr, "PUT", path, body)
}

fn http_request(addr: SocketAddr, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// One scrape: `(metric, labels, value)` per sample line.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    samples: Vec<(String, String, f64)>,
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let (name, labels) = series.split_once('{').unwrap_or((series, ""));
                Some((name.to_string(), labels.to_string(), value.parse().ok()?))
            })
            .collect();
        Scrape { samples }
    }

    /// Sum of the samples of `name` whose labels include every `labels` pair.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|(_, v)| v).sum()
    }

    /// Values of `name` by the value of one label.
    pub fn by_label(&self, name: &str, label: &str) -> Vec<(String, f64)> {
        let prefix = format!("{label}=\"");
        self.matching(name, &[])
            .filter_map(|(labels, v)| {
                let value = labels.split(&prefix).nth(1)?.split('"').next()?;
                Some((value.to_string(), v))
            })
            .collect()
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = (&'a str, f64)> + 'a {
        self.samples.iter().filter_map(move |(n, l, v)| {
            (n == name
                && labels
                    .iter()
                    .all(|(k, want)| l.contains(&format!("{k}=\"{want}\""))))
            .then_some((l.as_str(), *v))
        })
    }

    /// Watch notifications of the Events watch that change something: ADDED, MODIFIED, DELETED.
    pub fn watch_ops(&self) -> u64 {
        ["ADDED", "MODIFIED", "DELETED"]
            .iter()
            .map(|t| {
                self.sum(
                    "herald_watch_events_total",
                    &[("resource", "events"), ("type", t)],
                )
            })
            .sum::<f64>() as u64
    }
}

/// Cumulative buckets `(le, count)` of one histogram, `+Inf` last.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    buckets: Vec<(f64, f64)>,
}

impl Histogram {
    pub fn of(s: &Scrape, name: &str) -> Histogram {
        let bucket = format!("{name}_bucket");
        let mut buckets: Vec<(f64, f64)> = s
            .matching(&bucket, &[])
            .filter_map(|(labels, v)| {
                let le = labels.split("le=\"").nth(1)?.split('"').next()?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, v))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Histogram { buckets }
    }

    /// What was observed between two scrapes.
    pub fn delta(later: &Scrape, earlier: &Scrape, name: &str) -> Histogram {
        let (l, e) = (Histogram::of(later, name), Histogram::of(earlier, name));
        let buckets = l
            .buckets
            .iter()
            .map(|(le, v)| {
                let before = e.buckets.iter().find(|(x, _)| x == le).map_or(0.0, |b| b.1);
                (*le, (v - before).max(0.0))
            })
            .collect();
        Histogram { buckets }
    }

    /// The `q` quantile, interpolated linearly inside its bucket as Prometheus' `histogram_quantile` does;
    /// in the `+Inf` bucket, the highest finite bound. None without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let (mut lower, mut below) = (0.0, 0.0);
        for &(le, cum) in &self.buckets {
            if cum >= rank {
                if le.is_infinite() {
                    return Some(lower);
                }
                let within = if cum > below {
                    (rank - below) / (cum - below)
                } else {
                    0.0
                };
                return Some(lower + (le - lower) * within);
            }
            (lower, below) = (le, cum);
        }
        Some(lower)
    }
}

/// The `q` quantile of raw samples (nearest rank).
pub fn exact_quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    Some(v[i])
}

/// CPU and memory of a process, from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Proc {
    /// utime + stime.
    pub cpu_seconds: f64,
    pub rss_kib: u64,
    /// Peak RSS (VmHWM).
    pub hwm_kib: u64,
}

impl Proc {
    pub fn read(pid: u32) -> Option<Proc> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        Proc::parse(&stat, &status)
    }

    fn parse(stat: &str, status: &str) -> Option<Proc> {
        // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
        let cpu = ticks(11)? + ticks(12)?;
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        };
        Some(Proc {
            cpu_seconds: cpu as f64 / TICKS_PER_SECOND,
            rss_kib: kib("VmRSS:")?,
            hwm_kib: kib("VmHWM:")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE herald_processing_seconds histogram\n\
        herald_processing_seconds_bucket{le=\"0.001\"} 50\n\
        herald_processing_seconds_bucket{le=\"0.01\"} 90\n\
        herald_processing_seconds_bucket{le=\"+Inf\"} 100\n\
        herald_processing_seconds_sum 1.5\n\
        herald_watch_events_total{resource=\"events\",type=\"ADDED\"} 7\n\
        herald_watch_events_total{resource=\"events\",type=\"LISTED\"} 3\n\
        herald_watch_events_total{resource=\"events\",type=\"DELETED\"} 1\n";

    #[test]
    fn sums_and_watch_ops() {
        let s = Scrape::parse(TEXT);
        assert_eq!(s.watch_ops(), 8);
        assert_eq!(s.sum("herald_processing_seconds_sum", &[]), 1.5);
        let by_type = s.by_label("herald_watch_events_total", "type");
        assert_eq!(by_type[1], ("LISTED".to_string(), 3.0));
    }

    #[test]
    fn histogram_quantiles_interpolate_in_buckets() {
        let h = Histogram::of(&Scrape::parse(TEXT), "herald_processing_seconds");
        assert_eq!(h.quantile(0.5), Some(0.001));
        let p70 = h.quantile(0.7).unwrap();
        assert!((p70 - 0.0055).abs() < 1e-9, "{p70}");
        assert_eq!(h.quantile(0.99), Some(0.01), "in +Inf: the last bound");
        assert_eq!(Histogram::default().quantile(0.5), None);
        let none = Histogram::delta(
            &Scrape::parse(TEXT),
            &Scrape::parse(TEXT),
            "herald_processing_seconds",
        );
        assert_eq!(none.quantile(0.5), None);
    }

    #[test]
    fn exact_quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(exact_quantile(&v, 0.5), Some(50.0));
        assert_eq!(exact_quantile(&v, 0.99), Some(99.0));
        assert_eq!(exact_quantile(&[], 0.5), None);
    }

    #[test]
    fn proc_stat_and_status() {
        let stat = "1234 (herald run) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 3 0";
        let status = "Name:\therald\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        let p = Proc::parse(stat, status).unwrap();
        assert_eq!(p.cpu_seconds, 3.0);
        assert_eq!((p.rss_kib, p.hwm_kib), (10240, 20480));
    }
}
