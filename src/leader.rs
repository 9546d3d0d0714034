//! Leader election over a `coordination.k8s.io/v1` Lease, so that in a DaemonSet exactly one agent watches the
//! cluster-wide Event stream and no signal is emitted N times by N agents.
//!
//! The algorithm is client-go's `leaderelection`, with its three durations: the holder renews `renewTime`
//! every `renew_interval` (retry period); another agent takes the Lease over only when it has seen the same
//! Lease version unchanged for a whole `leaseDurationSeconds` (measured on its own clock from when it first saw
//! that version, so clock skew between nodes does not matter); every write carries the `resourceVersion` it
//! read, so two candidates cannot both win (the loser gets 409 Conflict).
//!
//! What makes two leaders impossible is the **renew deadline**, shorter than the lease duration: a leader
//! counts its last renewal from the moment it *sent* the round that succeeded, and stops leading (drops
//! `herald_leader` to 0 and stops the cluster-wide watches) once `renew_deadline` has passed without another,
//! whether the API server refused, failed or simply never answered. A follower cannot have seen that renewal
//! before it was sent, so it takes over no earlier than `lease_duration` after it; the difference is the
//! margin for clock rates and for the watches to stop. Every Lease request runs under its own timeout (the
//! kube client has none for plain requests), and the deadline is watched *while* a request is outstanding, so
//! a hung request cannot keep an agent leading.
//!
//! On shutdown the leader releases the Lease so a successor takes over within one `renew_interval`.
//!
//! Why not a crate: `kube-leader-election` has a single `lease_ttl` (no renew deadline shorter than the lease,
//! no timeout on its requests) and decides expiry from the timestamps in the Lease against the local clock;
//! `kube-lease-manager` also compares Lease timestamps with the local clock (with a configurable skew grace),
//! writes with server-side apply, and its current release is built on an older kube than herald's. Neither
//! gives the "stop before anyone may take over" rule; this module is the ~250 lines of client-go's rules.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use metrics::Gauge;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Errors talking to the API server about the Lease; all are retried on the next round.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed the request.
    #[error("lease {name}: {source}")]
    Api {
        name: String,
        #[source]
        source: kube::Error,
    },
    /// The API server did not answer within the request timeout.
    #[error("lease {name}: no answer from the API server within {}ms", .after.as_millis())]
    Timeout { name: String, after: Duration },
}

#[derive(Debug, Clone)]
pub struct LeaderSettings {
    pub lease_name: String,
    /// This agent's identity in the Lease (`POD_NAME`, else the host name).
    pub identity: String,
    /// Written in the Lease: how long the others wait for a renewal before they take over.
    pub lease_duration: Duration,
    /// How often the leader renews and the others check (client-go's retry period).
    pub renew_interval: Duration,
    /// A leader that has not renewed for this long stops leading; shorter than `lease_duration`.
    pub renew_deadline: Duration,
}

impl LeaderSettings {
    /// The limit on one Lease request: a third of the renew deadline, so a leader whose request hangs still
    /// has time for another try before it must step down.
    pub fn request_timeout(&self) -> Duration {
        (self.renew_deadline / 3).max(Duration::from_millis(100))
    }

    /// `leaseDurationSeconds` as written in the Lease: rounded up, so followers never wait less than
    /// configured (rounding down could let one take over before this agent's renew deadline).
    fn lease_seconds(&self) -> i32 {
        let secs =
            self.lease_duration.as_secs() + u64::from(self.lease_duration.subsec_nanos() > 0);
        secs.clamp(1, i32::MAX as u64) as i32
    }
}

/// Until when this agent's Lease is certainly its own: when it sent its last successful renewal, plus the
/// lease duration (no follower can take over earlier). A writer of shared state asks it after a write that
/// completed just after the agent stopped leading: if the Lease was still certainly held, a successor's
/// first read comes later and sees that write. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct HeldUntil(Arc<Mutex<Option<Instant>>>);

impl HeldUntil {
    /// No follower can have taken the Lease over yet.
    pub fn certainly_held(&self) -> bool {
        self.lock().is_some_and(|until| Instant::now() < until)
    }

    fn set(&self, until: Option<Instant>) {
        *self.lock() = until;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The last Lease version seen and when it was first seen (the client-go "observed time").
struct Observed {
    resource_version: String,
    at: Instant,
}

pub struct Elector {
    api: Api<Lease>,
    settings: LeaderSettings,
    observed: Option<Observed>,
    held_until: HeldUntil,
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl Elector {
    pub fn new(api: Api<Lease>, settings: LeaderSettings) -> Elector {
        Elector {
            api,
            settings,
            observed: None,
            held_until: HeldUntil::default(),
        }
    }

    /// Keep `held` up to date with how long the Lease is certainly this agent's.
    pub fn with_held_until(mut self, held: HeldUntil) -> Elector {
        self.held_until = held;
        self
    }

    /// One Lease request under the request timeout.
    async fn call<T>(
        &self,
        request: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<Result<T, kube::Error>, Error> {
        let after = self.settings.request_timeout();
        tokio::time::timeout(after, request)
            .await
            .map_err(|_| Error::Timeout {
                name: self.settings.lease_name.clone(),
                after,
            })
    }

    fn err(&self, source: kube::Error) -> Error {
        Error::Api {
            name: self.settings.lease_name.clone(),
            source,
        }
    }

    fn spec(&self, transitions: i32, acquire: Option<MicroTime>) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            lease_duration_seconds: Some(self.settings.lease_seconds()),
            acquire_time: Some(acquire.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One round: `Ok(true)` when this agent holds the Lease afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, Error> {
        let name = self.settings.lease_name.clone();
        let current = self
            .call(self.api.get_opt(&name))
            .await?
            .map_err(|e| self.err(e))?;
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(0, None)),
            };
            return match self
                .call(self.api.create(&PostParams::default(), &lease))
                .await?
            {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(self.err(e)),
            };
        };
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        if self
            .observed
            .as_ref()
            .is_none_or(|o| o.resource_version != rv)
        {
            self.observed = Some(Observed {
                resource_version: rv,
                at: Instant::now(),
            });
        }
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64);
        let expired = self
            .observed
            .as_ref()
            .is_some_and(|o| o.at.elapsed() >= duration);
        let spec = if holder == self.settings.identity {
            self.spec(spec.lease_transitions.unwrap_or(0), spec.acquire_time)
        } else if holder.is_empty() || expired {
            self.spec(spec.lease_transitions.unwrap_or(0) + 1, None)
        } else {
            return Ok(false);
        };
        lease.spec = Some(spec);
        match self
            .call(self.api.replace(&name, &PostParams::default(), &lease))
            .await?
        {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Give the Lease up (shutdown): no holder, and a one-second duration so successors need not wait.
    pub async fn release(&mut self) -> Result<(), Error> {
        let name = self.settings.lease_name.clone();
        let Some(mut lease) = self
            .call(self.api.get_opt(&name))
            .await?
            .map_err(|e| self.err(e))?
        else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(&self.settings.identity) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        lease.spec = Some(spec);
        self.call(self.api.replace(&name, &PostParams::default(), &lease))
            .await?
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Campaign until `shutdown`, publishing leadership on `leading` and in the `herald_leader` gauge.
    pub async fn run(
        mut self,
        leading: watch::Sender<bool>,
        gauge: Gauge,
        shutdown: CancellationToken,
    ) {
        let deadline = self.settings.renew_deadline;
        // When the last round that held the Lease was sent: the renew deadline counts from there.
        let mut renewed: Option<Instant> = None;
        let mut logged_error = false;
        loop {
            let was = *leading.borrow();
            // While leading, the deadline bounds the round and the wait after it: a hung request or a late
            // round must not keep this agent leading past it.
            let step_down_at = renewed
                .filter(|_| was)
                .map(|t| tokio::time::Instant::from_std(t + deadline));
            if step_down_at.is_some_and(|at| at <= tokio::time::Instant::now()) {
                self.missed_deadline(&leading, &gauge);
                continue;
            }
            let must_step_down = async {
                match step_down_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let sent = Instant::now();
            let round = tokio::select! {
                r = self.try_acquire_or_renew() => r,
                _ = must_step_down => {
                    self.missed_deadline(&leading, &gauge);
                    continue;
                }
                _ = shutdown.cancelled() => break,
            };
            let now_leading = match round {
                Ok(held) => {
                    logged_error = false;
                    if held {
                        renewed = Some(sent);
                        self.held_until
                            .set(Some(sent + self.settings.lease_duration));
                    } else {
                        // The API server says another agent holds it (or wrote it first): not ours.
                        self.held_until.set(None);
                    }
                    held
                }
                Err(e) => {
                    if !logged_error {
                        tracing::warn!(error = %e, "cannot reach the leader Lease");
                        logged_error = true;
                    }
                    // Still within the renew deadline (checked above and again before the next round).
                    was
                }
            };
            publish(&leading, &gauge, &self.settings, was, now_leading);
            let mut wake = tokio::time::Instant::now() + self.settings.renew_interval;
            if now_leading && let Some(t) = renewed {
                wake = wake.min(tokio::time::Instant::from_std(t + deadline));
            }
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        if *leading.borrow() {
            gauge.set(0.0);
            let _ = leading.send(false);
            // Released, the Lease is free at once: nothing written from now on counts as seen.
            self.held_until.set(None);
            if let Err(e) = self.release().await {
                tracing::warn!(error = %e, "cannot release the leader Lease; a successor waits for it to expire");
            }
        }
    }

    /// The renew deadline passed: stop leading now, before any follower may take the Lease over.
    fn missed_deadline(&self, leading: &watch::Sender<bool>, gauge: &Gauge) {
        tracing::warn!(
            lease = %self.settings.lease_name,
            deadline_ms = self.settings.renew_deadline.as_millis() as u64,
            "no Lease renewal within the renew deadline: stepping down"
        );
        publish(leading, gauge, &self.settings, true, false);
    }
}

/// Publish a change of leadership (log, gauge, watch channel); nothing when `was == now`.
fn publish(
    leading: &watch::Sender<bool>,
    gauge: &Gauge,
    settings: &LeaderSettings,
    was: bool,
    now: bool,
) {
    if was == now {
        return;
    }
    tracing::info!(
        identity = %settings.identity,
        lease = %settings.lease_name,
        "{}",
        if now { "became the leader" } else { "stopped leading" }
    );
    // The gauge first: it must read 0 no later than the watches are told to stop.
    gauge.set(if now { 1.0 } else { 0.0 });
    let _ = leading.send(now);
}

/// The Lease that elects the one agent of a DaemonSet that watches cluster-wide Events (`leader_election`).
/// Loaded and checked by `crate::config`, which re-exports it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LeaderElectionConfig {
    /// Name of the Lease, in herald's own namespace (`mode: daemonset`).
    pub lease_name: String,
    /// A Lease not renewed for this long may be taken over by another agent.
    pub lease_duration: crate::config::Duration,
    /// How often the leader renews (and the others check).
    pub renew_interval: crate::config::Duration,
    /// A leader that has not renewed for this long stops emitting cluster-wide signals, before any other agent
    /// may take the Lease over (shorter than `lease_duration`, longer than `renew_interval`; the difference is
    /// the margin for clock rate and scheduling). Unset: two thirds of `lease_duration` (10s for 15s).
    #[serde(deserialize_with = "crate::config::unset::option")]
    pub renew_deadline: Option<crate::config::Duration>,
}

impl LeaderElectionConfig {
    /// `renew_deadline`, or two thirds of `lease_duration` when it is not set.
    pub fn effective_renew_deadline(&self) -> Duration {
        self.renew_deadline
            .map(|d| d.0)
            .unwrap_or_else(|| self.lease_duration.0 * 2 / 3)
    }
}

impl Default for LeaderElectionConfig {
    fn default() -> Self {
        LeaderElectionConfig {
            lease_name: "herald-leader".into(),
            lease_duration: crate::config::Duration::from_secs(15),
            renew_interval: crate::config::Duration::from_secs(2),
            renew_deadline: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_sim::{RunningSim, SimOptions, faults::FaultSpec};

    fn settings(identity: &str) -> LeaderSettings {
        LeaderSettings {
            lease_name: "test-lease".into(),
            identity: identity.into(),
            lease_duration: Duration::from_millis(1500),
            renew_interval: Duration::from_millis(100),
            renew_deadline: Duration::from_millis(1000),
        }
    }

    fn campaign(
        sim: &RunningSim,
        identity: &str,
        stop: &CancellationToken,
    ) -> watch::Receiver<bool> {
        let client = kube::Client::try_from(kube::Config::new(sim.url().parse().unwrap())).unwrap();
        let (tx, rx) = watch::channel(false);
        let elector = Elector::new(Api::namespaced(client, "default"), settings(identity));
        tokio::spawn(elector.run(tx, metrics::Gauge::noop(), stop.clone()));
        rx
    }

    #[test]
    fn the_lease_is_written_rounded_up_and_requests_get_a_third_of_the_deadline() {
        let s = settings("a");
        assert_eq!(s.lease_seconds(), 2);
        assert_eq!(s.request_timeout().as_millis(), 333);
        let whole = LeaderSettings {
            lease_duration: Duration::from_secs(15),
            ..s
        };
        assert_eq!(whole.lease_seconds(), 15);
    }

    /// A leader whose renewals hang steps down within the renew deadline, and the follower gets the Lease only
    /// after that (the Lease must go unchanged for its duration first).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leader_whose_renewals_hang_steps_down_before_the_follower_leads() {
        let sim = RunningSim::start(SimOptions::quiet(), "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let stop = CancellationToken::new();
        let mut a = campaign(&sim, "agent-a", &stop);
        tokio::time::timeout(Duration::from_secs(5), a.wait_for(|l| *l))
            .await
            .unwrap()
            .unwrap();
        let mut b = campaign(&sim, "agent-b", &stop);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!*b.borrow(), "the follower took a Lease that is renewed");

        sim.set_faults(FaultSpec {
            lease_stall: Some("agent-a".into()),
            ..FaultSpec::default()
        });
        let cut = Instant::now();
        tokio::time::timeout(Duration::from_secs(3), a.wait_for(|l| !*l))
            .await
            .unwrap()
            .unwrap();
        let stepped_down = cut.elapsed();
        assert!(
            stepped_down < Duration::from_millis(1500),
            "stepped down after {stepped_down:?}"
        );
        assert!(
            !*b.borrow(),
            "the follower led before the leader stepped down"
        );
        tokio::time::timeout(Duration::from_secs(5), b.wait_for(|l| *l))
            .await
            .unwrap()
            .unwrap();
        let took_over = cut.elapsed();
        assert!(
            took_over >= stepped_down + Duration::from_millis(300),
            "no margin: stepped down {stepped_down:?}, taken over {took_over:?}"
        );
        assert!(!*a.borrow(), "two leaders");
        assert!(sim.truth().faults_injected["lease_stall"] > 0);
        stop.cancel();
        sim.shutdown().await;
    }
}
