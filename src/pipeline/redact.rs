//! Redaction, applied to every record before any sink sees it: the message of an Event about a Secret is
//! dropped (controllers sometimes quote data), then each configured regex replaces what it matches in every
//! free-text field that reaches a sink or a metric label: the message (`note`), the reason and the action.
//! Patterns are compiled once; a field no rule matches is not copied.
//!
//! "About a Secret" means a kind ending in `Secret` (Secret, SealedSecret, ExternalSecret, ...), as the object
//! the Event is about or as its related object: the quoted data is the same whichever side names it.

use std::borrow::Cow;
use std::sync::OnceLock;

use regex::{Regex, RegexSet};

use crate::config::RedactConfig;
use crate::record::{EventRecord, Sym};

/// Whether objects of `kind` hold secret data whose Events must not carry their message.
fn is_secret_kind(kind: &str) -> bool {
    kind.ends_with("Secret")
}

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
    /// Whether messages are redacted at all: not when no sink writes them (metrics only), where scanning
    /// every message was about 5 % of the agent's CPU for text that goes nowhere.
    messages: bool,
    rules: Vec<Rule>,
    /// All patterns in one automaton: a single scan tells whether any rule matches, so the common message
    /// (no secret in it) is read once instead of once per rule, and says which rules to run when one does.
    any: RegexSet,
}

/// One rule, its own regex compiled on the first text the set says it matches. Most agents never see a
/// secret, and eleven compiled regexes with their caches held about 1.4 MB of heap for nothing (BENCHMARKS.md,
/// "Idle memory"): the set alone is what every message needs.
#[derive(Debug)]
struct Rule {
    pattern: String,
    replacement: String,
    compiled: OnceLock<Option<Regex>>,
}

impl Rule {
    /// `None` only if a pattern the set accepted fails on its own, which regex's limits (smaller for one
    /// pattern than for the set) rule out; [`Redactor::redact`] then hides the whole field rather than
    /// let a secret through.
    fn regex(&self) -> Option<&Regex> {
        self.compiled
            .get_or_init(|| match Regex::new(&self.pattern) {
                Ok(re) => Some(re),
                Err(error) => {
                    tracing::error!(%error, pattern = %self.pattern, "redaction rule failed to compile; the fields it matches are hidden whole");
                    None
                }
            })
            .as_ref()
    }
}

impl Redactor {
    pub fn new(cfg: &RedactConfig) -> Result<Redactor, Error> {
        let RedactConfig {
            drop_secret_messages,
            rules,
        } = cfg;
        let any = RegexSet::new(rules.iter().map(|r| &r.pattern)).map_err(|set_error| {
            // Name the rule at fault when one is invalid on its own.
            rules
                .iter()
                .enumerate()
                .find_map(|(index, r)| {
                    Regex::new(&r.pattern).err().map(|source| Error::Pattern {
                        index,
                        name: r.name.clone(),
                        source,
                    })
                })
                .unwrap_or(Error::Set(set_error))
        })?;
        Ok(Redactor {
            drop_secret_messages: *drop_secret_messages,
            rules: rules
                .iter()
                .map(|r| Rule {
                    pattern: r.pattern.clone(),
                    replacement: r.replacement.clone(),
                    compiled: OnceLock::new(),
                })
                .collect(),
            any,
            messages: true,
        })
    }

    /// Leave messages as they are: no sink writes them. Reasons and actions are still redacted (metric labels).
    pub fn without_messages(mut self) -> Redactor {
        self.messages = false;
        self
    }

    /// Returns true when a field changed.
    pub fn apply(&self, record: &mut EventRecord) -> bool {
        let mut changed = false;
        let about_secret = || {
            is_secret_kind(&record.regarding.kind)
                || record
                    .related
                    .as_ref()
                    .is_some_and(|r| is_secret_kind(&r.kind))
        };
        if !self.messages {
            // No sink writes the message.
        } else if self.drop_secret_messages && about_secret() {
            changed = !record.message.is_empty();
            record.message.clear();
        } else if let Some(new) = self.redact(&record.message) {
            record.message = new;
            changed = true;
        }
        if let Some(new) = self.redact(&record.reason) {
            record.reason = Sym::from(new);
            changed = true;
        }
        if let Some(new) = self.redact(&record.action) {
            record.action = new.into();
            changed = true;
        }
        changed
    }

    /// `text` with every rule applied in order, or `None` when no rule matches. Each rule runs on the text
    /// the rules before it left; the set, asked again after each change, skips the rules that do not match
    /// it, which is what running them would have done.
    fn redact(&self, text: &str) -> Option<String> {
        if text.is_empty() || !self.any.is_match(text) {
            return None;
        }
        let mut out: Option<String> = None;
        let mut matching = self.any.matches(text);
        for (index, rule) in self.rules.iter().enumerate() {
            if !matching.matched(index) {
                continue;
            }
            let current = out.as_deref().unwrap_or(text);
            let Some(re) = rule.regex() else {
                return Some(HIDDEN.to_string());
            };
            if let Cow::Owned(new) = re.replace_all(current, rule.replacement.as_str()) {
                matching = self.any.matches(&new);
                out = Some(new);
            }
        }
        out
    }
}

/// What a field becomes when a rule that matches it cannot run.
const HIDDEN: &str = "[REDACTED]";

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
        assert_eq!(
            redact("SealedSecret", "data: c2VjcmV0"),
            (String::new(), true)
        );
        let r = Redactor::new(&RedactConfig::default()).unwrap();
        let mut rec = EventRecord::for_test("ns", "Pod", "x", "Failed", "Warning");
        rec.message = "data: c2VjcmV0".into();
        rec.related = Some(crate::record::ObjectRef {
            kind: "Secret".into(),
            ..Default::default()
        });
        assert!(r.apply(&mut rec));
        assert_eq!(rec.message, "", "a Secret named only as the related object");
    }

    /// Each common credential shape, and what must be left of it.
    #[test]
    fn default_rules_cover_the_common_credential_shapes() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        for (message, secret, want) in [
            (
                "sts failed for AKIAIOSFODNN7EXAMPLE in us-east-1",
                "AKIAIOSFODNN7EXAMPLE",
                "sts failed for [REDACTED] in us-east-1",
            ),
            (
                r#"bad config {"user":"admin","password":"hunter2"}"#,
                "hunter2",
                r#"bad config {"user":"admin","password":"[REDACTED]"}"#,
            ),
            (
                "probe sent Authorization: Basic YWRtaW46UzNjcmV0UFc=",
                "YWRtaW46UzNjcmV0UFc",
                "probe sent Authorization: Basic [REDACTED]",
            ),
            (
                "pull from https://admin:S3cretPW@registry.example.com/v2/ failed",
                "S3cretPW",
                "pull from https://[REDACTED]@registry.example.com/v2/ failed",
            ),
            (
                "GET /v1/x?api_key=abcd1234&page=2 returned 403",
                "abcd1234",
                "GET /v1/x?api_key=[REDACTED]&page=2 returned 403",
            ),
            (
                "tls: -----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY----- invalid",
                "MIIEpAIBAAKCAQEA",
                "tls: [REDACTED PRIVATE KEY] invalid",
            ),
            (
                "clone failed with ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
                "ghp_aBcD",
                "clone failed with [REDACTED]",
            ),
            (
                &format!("webhook rejected {jwt} as expired"),
                "eyJzdWIi",
                "webhook rejected [REDACTED] as expired",
            ),
        ] {
            let (out, changed) = redact("Pod", message);
            assert!(changed, "{message}");
            assert!(!out.contains(secret), "{message} -> {out}");
            assert_eq!(out, want);
        }
        // A PEM key cut by the message limit has no END line: all of it goes.
        let (out, _) = redact("Pod", "key -----BEGIN PRIVATE KEY-----\nMIIEvQIBADAN");
        assert_eq!(out, "key [REDACTED PRIVATE KEY]");
    }

    #[test]
    fn reason_and_action_are_redacted_too() {
        let r = Redactor::new(&RedactConfig::default()).unwrap();
        let mut rec = EventRecord::for_test("ns", "Pod", "x", "password=hunter2", "Warning");
        rec.action = "token=abc".into();
        assert!(r.apply(&mut rec));
        assert_eq!(&*rec.reason, "password=[REDACTED]");
        assert_eq!(&*rec.action, "token=[REDACTED]");
    }

    fn rules(rules: &[(&str, &str)]) -> Redactor {
        let config = RedactConfig {
            drop_secret_messages: false,
            rules: rules
                .iter()
                .enumerate()
                .map(|(i, (pattern, replacement))| crate::config::RedactRule {
                    name: format!("r{i}"),
                    pattern: (*pattern).into(),
                    replacement: (*replacement).into(),
                })
                .collect(),
        };
        Redactor::new(&config).unwrap()
    }

    #[test]
    fn each_rule_runs_on_what_the_rules_before_it_left() {
        // The second rule matches only the first one's output, the third matches nothing.
        let r = rules(&[("apple", "banana"), ("banana", "cherry"), ("durian", "x")]);
        assert_eq!(
            r.redact("an apple a day").as_deref(),
            Some("an cherry a day")
        );
        assert_eq!(r.redact("no fruit"), None);
        assert!(
            r.rules[2].compiled.get().is_none(),
            "a rule that never matched is never compiled"
        );
    }

    #[test]
    fn a_long_token_is_hidden_whole() {
        let token = format!("ghp_{}", "a".repeat(400));
        assert_eq!(
            redact("Pod", &format!("clone with {token} failed")).0,
            "clone with [REDACTED] failed"
        );
    }

    #[test]
    fn an_invalid_rule_is_named() {
        let config = RedactConfig {
            drop_secret_messages: false,
            rules: vec![crate::config::RedactRule {
                name: "broken".into(),
                pattern: "(unclosed".into(),
                replacement: String::new(),
            }],
        };
        let error = Redactor::new(&config).unwrap_err().to_string();
        assert!(
            error.starts_with("redact.rules[0] (broken): invalid pattern"),
            "{error}"
        );
    }
}
