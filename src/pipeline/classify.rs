//! Severity classification: a table from reason to severity class, overridable in config, plus repeat
//! escalation. A hash look-up per record; the message is never scanned.

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
        Classifier {
            reasons: table,
            warning: *warning,
            normal: *normal,
            repeat_threshold: *repeat_threshold,
        }
    }

    /// Set `severity` and `repeated`. Types other than Normal (Warning, Error, unknown) classify like Warning.
    pub fn classify(&self, record: &mut EventRecord) {
        let base = match self.reasons.get(&*record.reason) {
            Some(s) => *s,
            None if &*record.type_ == "Normal" => self.normal,
            None => self.warning,
        };
        record.repeated = self.repeat_threshold > 0 && record.count >= self.repeat_threshold;
        record.severity = if record.repeated {
            base.escalate()
        } else {
            base
        };
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
