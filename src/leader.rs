//! Leader election over a `coordination.k8s.io/v1` Lease, so that in a DaemonSet exactly one agent watches the
//! cluster-wide Event stream and no signal is emitted N times by N agents.
//!
//! The algorithm is client-go's: the holder renews `renewTime` every `renew_interval`; another agent takes
//! the Lease over only when it has seen the same Lease version unchanged for a whole `leaseDurationSeconds`
//! (measured on its own clock, so clock skew between nodes does not matter); every write carries the
//! `resourceVersion` it read, so two candidates cannot both win (the loser gets 409 Conflict). A leader that
//! cannot renew for `lease_duration` (or sees another holder) steps down at once, before anyone else can take
//! over. On shutdown the leader releases the Lease so a successor takes over within one `renew_interval`.

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
    #[error("lease {name}: {source}")]
    Api {
        name: String,
        #[source]
        source: kube::Error,
    },
}

#[derive(Debug, Clone)]
pub struct LeaderSettings {
    pub lease_name: String,
    /// This agent's identity in the Lease (`POD_NAME`, else the host name).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_interval: Duration,
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
        }
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
            lease_duration_seconds: Some(self.settings.lease_duration.as_secs().max(1) as i32),
            acquire_time: Some(acquire.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One round: `Ok(true)` when this agent holds the Lease afterwards.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, Error> {
        let name = self.settings.lease_name.clone();
        let current = self.api.get_opt(&name).await.map_err(|e| self.err(e))?;
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(0, None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
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
            .api
            .replace(&name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Give the Lease up (shutdown): no holder, and a one-second duration so successors need not wait.
    pub async fn release(&mut self) -> Result<(), Error> {
        let name = self.settings.lease_name.clone();
        let Some(mut lease) = self.api.get_opt(&name).await.map_err(|e| self.err(e))? else {
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
        self.api
            .replace(&name, &PostParams::default(), &lease)
            .await
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
        let mut last_renewed: Option<Instant> = None;
        let mut logged_error = false;
        loop {
            let was = *leading.borrow();
            let now_leading = match self.try_acquire_or_renew().await {
                Ok(held) => {
                    logged_error = false;
                    if held {
                        last_renewed = Some(Instant::now());
                    }
                    held
                }
                Err(e) => {
                    if !logged_error {
                        tracing::warn!(error = %e, "cannot reach the leader Lease");
                        logged_error = true;
                    }
                    // Keep leading only while the Lease we renewed last is certainly still ours.
                    was && last_renewed.is_some_and(|t| t.elapsed() < self.settings.lease_duration)
                }
            };
            if now_leading != was {
                tracing::info!(
                    identity = %self.settings.identity,
                    lease = %self.settings.lease_name,
                    "{}",
                    if now_leading { "became the leader" } else { "stopped leading" }
                );
                gauge.set(if now_leading { 1.0 } else { 0.0 });
                let _ = leading.send(now_leading);
            }
            tokio::select! {
                _ = tokio::time::sleep(self.settings.renew_interval) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        if *leading.borrow() {
            gauge.set(0.0);
            let _ = leading.send(false);
            if let Err(e) = self.release().await {
                tracing::warn!(error = %e, "cannot release the leader Lease; a successor waits for it to expire");
            }
        }
    }
}
