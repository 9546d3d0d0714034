//! Redaction, applied to every message before any sink sees it: the message of an Event about a Secret is
//! dropped (controllers sometimes quote data), then each configured regex replaces what it matches.
//! Patterns are compiled once; a message no rule matches is not copied.

use std::borrow::Cow;

use regex::{Regex, RegexSet};

use crate::config::RedactConfig;
use crate::record::EventRecord;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A rule's pattern is not a valid regular expression.
    #[error("redact.rules[{index}] ({name}): invalid pattern: {source}")]
    Pattern {
        index: usize,
        name: String,
        #[source]
        source: regex::Error,
    },
    /// Valid one by one, but too large together (regex's size limit applies to the combined set).
    #[error("redact.rules: the patterns together are too large: {0}")]
    Set(#[source] regex::Error),
}

#[derive(Debug)]
pub struct Redactor {
    drop_secret_messages: bool,
    rules: Vec<(Regex, String)>,
    /// All patterns in one automaton: a single scan tells whether any rule matches, so the common message
    /// (no secret in it) is read once instead of once per rule.
    any: RegexSet,
}

impl Redactor {
    pub fn new(cfg: &RedactConfig) -> Result<Redactor, Error> {
        let RedactConfig {
            drop_secret_messages,
            rules,
        } = cfg;
        let rules = rules
            .iter()
            .enumerate()
            .map(|(index, r)| {
                Regex::new(&r.pattern)
                    .map(|re| (re, r.replacement.clone()))
                    .map_err(|source| Error::Pattern {
                        index,
                        name: r.name.clone(),
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let any = RegexSet::new(rules.iter().map(|(re, _)| re.as_str())).map_err(Error::Set)?;
        Ok(Redactor {
            drop_secret_messages: *drop_secret_messages,
            rules,
            any,
        })
    }

    /// Returns true when the message changed.
    pub fn apply(&self, record: &mut EventRecord) -> bool {
        if self.drop_secret_messages && &*record.regarding.kind == "Secret" {
            let changed = !record.message.is_empty();
            record.message.clear();
            return changed;
        }
        let mut changed = false;
        if !self.any.is_match(&record.message) {
            return false;
        }
        for (re, replacement) in &self.rules {
            if let Cow::Owned(new) = re.replace_all(&record.message, replacement.as_str()) {
                record.message = new;
                changed = true;
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redact(kind: &str, message: &str) -> (String, bool) {
        let r = Redactor::new(&RedactConfig::default()).unwrap();
        let mut rec = EventRecord::for_test("ns", kind, "x", "Failed", "Warning");
        rec.message = message.into();
        let changed = r.apply(&mut rec);
        (rec.message, changed)
    }

    #[test]
    fn default_rules_hide_credentials() {
        assert_eq!(
            redact(
                "Pod",
                "GET failed: Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.abc.def"
            )
            .0,
            "GET failed: Authorization: Bearer [REDACTED]"
        );
        assert_eq!(
            redact("Pod", "login password=hunter2 failed").0,
            "login password=[REDACTED] failed"
        );
        assert_eq!(redact("Pod", "token: abc123").0, "token: [REDACTED]");
        assert_eq!(
            redact("Pod", "GET /x?token=abc&x=1").0,
            "GET /x?token=[REDACTED]&x=1"
        );
    }

    #[test]
    fn ordinary_messages_are_untouched() {
        for m in [
            "Back-off restarting failed container nginx in pod web-1_default(4b1c)",
            "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.",
            "Successfully assigned default/web-1 to node-1",
        ] {
            assert_eq!(redact("Pod", m), (m.to_string(), false));
        }
    }

    #[test]
    fn secret_messages_are_dropped() {
        assert_eq!(redact("Secret", "data: c2VjcmV0"), (String::new(), true));
    }
}
