//! Filters: which records go on to the sinks. Exact, case-sensitive matches (Kubernetes values are), on
//! precomputed sets; a record is never changed here.

use jiff::Timestamp;

use crate::config::{AllowDeny, FilterConfig};
use crate::record::{EventRecord, Severity};

/// The filter that dropped a record (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filtered {
    Type,
    Reason,
    Namespace,
    Kind,
    MaxAge,
    MinSeverity,
    /// An Event herald recorded about itself (`filters.exclude_own_events`).
    OwnEvent,
}

impl Filtered {
    pub const ALL: [Filtered; 7] = [
        Filtered::Type,
        Filtered::Reason,
        Filtered::Namespace,
        Filtered::Kind,
        Filtered::MaxAge,
        Filtered::MinSeverity,
        Filtered::OwnEvent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Filtered::Type => "type",
            Filtered::Reason => "reason",
            Filtered::Namespace => "namespace",
            Filtered::Kind => "kind",
            Filtered::MaxAge => "max_age",
            Filtered::MinSeverity => "min_severity",
            Filtered::OwnEvent => "own_event",
        }
    }
}

/// An allow set and a deny set; an empty allow set allows all, deny wins.
#[derive(Debug, Default)]
struct Lists {
    allow: ahash::HashSet<Box<str>>,
    deny: ahash::HashSet<Box<str>>,
}

impl Lists {
    fn new(cfg: &AllowDeny) -> Lists {
        Lists {
            allow: cfg.allow.iter().map(|s| s.as_str().into()).collect(),
            deny: cfg.deny.iter().map(|s| s.as_str().into()).collect(),
        }
    }

    fn admits(&self, value: &str) -> bool {
        !self.deny.contains(value) && (self.allow.is_empty() || self.allow.contains(value))
    }
}

#[derive(Debug)]
pub struct Filter {
    types: Lists,
    reasons: Lists,
    namespaces: Lists,
    kinds: Lists,
    max_age: Option<jiff::SignedDuration>,
    min_severity: Severity,
    exclude_own_events: bool,
}

impl Filter {
    pub fn new(cfg: &FilterConfig) -> Filter {
        let FilterConfig {
            types,
            reasons,
            namespaces,
            kinds,
            max_age,
            min_severity,
            exclude_own_events,
        } = cfg;
        Filter {
            types: Lists::new(&AllowDeny {
                allow: types.clone(),
                deny: Vec::new(),
            }),
            reasons: Lists::new(reasons),
            namespaces: Lists::new(namespaces),
            kinds: Lists::new(kinds),
            max_age: (!max_age.is_zero()).then(|| {
                jiff::SignedDuration::try_from(max_age.0).unwrap_or(jiff::SignedDuration::MAX)
            }),
            min_severity: *min_severity,
            exclude_own_events: *exclude_own_events,
        }
    }

    /// `Ok` keeps the record; `Err` names the filter that dropped it. Needs `record.severity` set.
    /// A record without any timestamp is never too old.
    pub fn check(&self, record: &EventRecord, now: Timestamp) -> Result<(), Filtered> {
        if self.exclude_own_events && &*record.component == crate::self_events::CONTROLLER {
            return Err(Filtered::OwnEvent);
        }
        if !self.types.admits(&record.type_) {
            return Err(Filtered::Type);
        }
        if !self.reasons.admits(&record.reason) {
            return Err(Filtered::Reason);
        }
        if !self.namespaces.admits(&record.namespace) {
            return Err(Filtered::Namespace);
        }
        if !self.kinds.admits(&record.regarding.kind) {
            return Err(Filtered::Kind);
        }
        if let (Some(max), Some(ts)) = (self.max_age, record.timestamp())
            && now.duration_since(ts) > max
        {
            return Err(Filtered::MaxAge);
        }
        if record.severity < self.min_severity {
            return Err(Filtered::MinSeverity);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Duration;

    fn rec() -> EventRecord {
        EventRecord::for_test("prod", "Pod", "web", "BackOff", "Warning")
    }

    #[test]
    fn defaults_keep_everything() {
        let f = Filter::new(&FilterConfig::default());
        assert_eq!(f.check(&rec(), Timestamp::now()), Ok(()));
    }

    #[test]
    fn each_filter_names_itself() {
        let now = Timestamp::now();
        let with = |edit: &dyn Fn(&mut FilterConfig)| {
            let mut c = FilterConfig::default();
            edit(&mut c);
            Filter::new(&c).check(&rec(), now)
        };
        assert_eq!(
            with(&|c| c.types = vec!["Normal".into()]),
            Err(Filtered::Type)
        );
        assert_eq!(
            with(&|c| c.reasons.deny = vec!["BackOff".into()]),
            Err(Filtered::Reason)
        );
        assert_eq!(
            with(&|c| c.reasons.allow = vec!["Started".into()]),
            Err(Filtered::Reason)
        );
        assert_eq!(with(&|c| c.reasons.allow = vec!["BackOff".into()]), Ok(()));
        assert_eq!(
            with(&|c| {
                c.namespaces.allow = vec!["prod".into()];
                c.namespaces.deny = vec!["prod".into()];
            }),
            Err(Filtered::Namespace),
            "deny wins"
        );
        assert_eq!(
            with(&|c| c.kinds.deny = vec!["Pod".into()]),
            Err(Filtered::Kind)
        );
        assert_eq!(
            with(&|c| c.min_severity = Severity::High),
            Err(Filtered::MinSeverity)
        );
        let mut own = rec();
        own.component = "herald".into();
        let f = Filter::new(&FilterConfig::default());
        assert_eq!(f.check(&own, now), Err(Filtered::OwnEvent));
        let f = Filter::new(&FilterConfig {
            exclude_own_events: false,
            ..FilterConfig::default()
        });
        assert_eq!(f.check(&own, now), Ok(()));
    }

    #[test]
    fn max_age_uses_the_event_timestamp() {
        let f = Filter::new(&FilterConfig {
            max_age: Duration::from_secs(300),
            ..FilterConfig::default()
        });
        let now: Timestamp = "2024-01-01T01:00:00Z".parse().unwrap();
        let mut r = rec();
        assert_eq!(f.check(&r, now), Ok(()), "no timestamp: never too old");
        r.last_timestamp = Some("2024-01-01T00:50:00Z".parse().unwrap());
        assert_eq!(f.check(&r, now), Err(Filtered::MaxAge));
        r.last_timestamp = Some("2024-01-01T00:58:00Z".parse().unwrap());
        assert_eq!(f.check(&r, now), Ok(()));
    }
}
