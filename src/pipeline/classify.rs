//! Severity classification: a table from reason to severity class, overridable in config, plus repeat
//! escalation. A hash look-up per record. The message is read only for the kubelet's generic reasons
//! `Failed` and `BackOff`, which is how real kubelets report image pull failures (`Failed` with
//! "Error: ErrImagePull" or "Failed to pull image ...", `BackOff` with "Back-off pulling image ..."): those are
//! classed like the `ErrImagePull`/`ImagePullBackOff` reasons unless the configuration sets `Failed` or
//! `BackOff` itself.

use crate::config::SeverityConfig;
use crate::record::{EventRecord, Severity};

/// The built-in table (documented in the README and the default config).
pub const BUILT_IN: &[(&str, Severity)] = &[
    ("OOMKilled", Severity::Critical),
    ("OOMKilling", Severity::Critical),
    ("CrashLoopBackOff", Severity::Critical),
    ("ImagePullBackOff", Severity::High),
    ("ErrImagePull", Severity::High),
    ("FailedScheduling", Severity::High),
    ("Evicted", Severity::High),
    ("Unhealthy", Severity::Medium),
    ("BackOff", Severity::Medium),
    ("FailedMount", Severity::Medium),
];

#[derive(Debug)]
pub struct Classifier {
    reasons: ahash::HashMap<Box<str>, Severity>,
    /// The class of an image pull failure reported under a generic reason (`None`: the user set that reason).
    image_pull_failed: Option<Severity>,
    image_pull_backoff: Option<Severity>,
    warning: Severity,
    normal: Severity,
    repeat_threshold: u32,
}

impl Classifier {
    pub fn new(cfg: &SeverityConfig) -> Classifier {
        let SeverityConfig {
            reasons,
            warning,
            normal,
            repeat_threshold,
        } = cfg;
        let mut table: ahash::HashMap<Box<str>, Severity> =
            BUILT_IN.iter().map(|(r, s)| ((*r).into(), *s)).collect();
        table.extend(reasons.iter().map(|(r, s)| (r.as_str().into(), *s)));
        let unless_set = |generic: &str, specific: &str| {
            (!reasons.contains_key(generic))
                .then(|| table.get(specific).copied())
                .flatten()
        };
        Classifier {
            image_pull_failed: unless_set("Failed", "ErrImagePull"),
            image_pull_backoff: unless_set("BackOff", "ImagePullBackOff"),
            reasons: table,
            warning: *warning,
            normal: *normal,
            repeat_threshold: *repeat_threshold,
        }
    }

    /// Set `severity` and `repeated`. Types other than Normal (Warning, Error, unknown) classify like Warning.
    pub fn classify(&self, record: &mut EventRecord) {
        let base = match self.image_pull(record) {
            Some(s) => s,
            None => match self.reasons.get(&*record.reason) {
                Some(s) => *s,
                None if &*record.type_ == "Normal" => self.normal,
                None => self.warning,
            },
        };
        record.repeated = self.repeat_threshold > 0 && record.count >= self.repeat_threshold;
        record.severity = if record.repeated {
            base.escalate()
        } else {
            base
        };
    }
}

impl Classifier {
    /// An image pull failure that a kubelet reported under `Failed` or `BackOff` (see the module header).
    fn image_pull(&self, record: &EventRecord) -> Option<Severity> {
        let message = &*record.message;
        match &*record.reason {
            "Failed"
                if message.contains("ErrImagePull")
                    || message.contains("ImagePullBackOff")
                    || message.starts_with("Failed to pull image") =>
            {
                self.image_pull_failed
            }
            "BackOff" if message.starts_with("Back-off pulling image") => self.image_pull_backoff,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify(cfg: &SeverityConfig, reason: &str, type_: &str, count: u32) -> (Severity, bool) {
        let mut r = EventRecord::for_test("ns", "Pod", "p", reason, type_);
        r.count = count;
        Classifier::new(cfg).classify(&mut r);
        (r.severity, r.repeated)
    }

    #[test]
    fn built_in_table_and_defaults() {
        let c = SeverityConfig::default();
        assert_eq!(
            classify(&c, "OOMKilling", "Warning", 1),
            (Severity::Critical, false)
        );
        assert_eq!(
            classify(&c, "FailedScheduling", "Warning", 1),
            (Severity::High, false)
        );
        assert_eq!(
            classify(&c, "FailedMount", "Warning", 1),
            (Severity::Medium, false)
        );
        assert_eq!(
            classify(&c, "SomethingOdd", "Warning", 1),
            (Severity::Low, false)
        );
        assert_eq!(
            classify(&c, "SomethingOdd", "Error", 1),
            (Severity::Low, false)
        );
        assert_eq!(
            classify(&c, "Started", "Normal", 1),
            (Severity::Info, false)
        );
    }

    fn classify_message(cfg: &SeverityConfig, reason: &str, message: &str) -> Severity {
        let mut r = EventRecord::for_test("ns", "Pod", "p", reason, "Warning");
        r.message = message.into();
        Classifier::new(cfg).classify(&mut r);
        r.severity
    }

    /// The messages real kubelets write for image pull failures under their generic reasons.
    #[test]
    fn image_pull_failures_under_generic_reasons_are_high() {
        let c = SeverityConfig::default();
        for (reason, message) in [
            ("Failed", "Error: ErrImagePull"),
            ("Failed", "Error: ImagePullBackOff"),
            (
                "Failed",
                "Failed to pull image \"nginx:nope\": rpc error: code = NotFound desc = failed to pull and unpack image",
            ),
            ("BackOff", "Back-off pulling image \"nginx:nope\""),
        ] {
            assert_eq!(
                classify_message(&c, reason, message),
                Severity::High,
                "{reason}: {message}"
            );
        }
        // The same reasons about something else keep their own class.
        assert_eq!(
            classify_message(&c, "BackOff", "Back-off restarting failed container web"),
            Severity::Medium
        );
        assert_eq!(
            classify_message(&c, "Failed", "Error: container create failed"),
            Severity::Low
        );
        // A user who classes `Failed` decides for every `Failed` Event.
        let mut own = SeverityConfig::default();
        own.reasons.insert("Failed".into(), Severity::Critical);
        assert_eq!(
            classify_message(&own, "Failed", "Error: ErrImagePull"),
            Severity::Critical
        );
    }

    #[test]
    fn overrides_and_repeat_escalation() {
        let mut c = SeverityConfig::default();
        c.reasons.insert("FailedMount".into(), Severity::High);
        assert_eq!(
            classify(&c, "FailedMount", "Warning", 1),
            (Severity::High, false)
        );
        assert_eq!(
            classify(&c, "BackOff", "Warning", 10),
            (Severity::High, true)
        );
        assert_eq!(
            classify(&c, "BackOff", "Warning", 9),
            (Severity::Medium, false)
        );
        assert_eq!(
            classify(&c, "OOMKilled", "Warning", 50),
            (Severity::Critical, true)
        );
        c.repeat_threshold = 0;
        assert_eq!(
            classify(&c, "BackOff", "Warning", 1000),
            (Severity::Medium, false)
        );
    }
}
