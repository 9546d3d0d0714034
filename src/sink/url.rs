//! Sink URLs that may carry credentials: `https://user:password@host/path?api_key=...`.
//!
//! Two jobs, so a secret written into a URL is neither lost nor shown: the userinfo is taken out of the URL
//! and sent as `Authorization: Basic` (HTTP clients do not send userinfo by themselves, so without this the
//! credentials were silently dropped), and [`shown`] gives the form every log line and error uses, with the
//! userinfo and every query value replaced by `[REDACTED]`. It must never put a credential in its output.

use base64::Engine;

/// What replaces a credential in a URL shown to people.
const HIDDEN: &str = "[REDACTED]";

/// Why a sink URL cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not a URL at all (the message shows the URL without its credentials).
    #[error("expected an http:// or https:// URL with a host, got {shown:?}")]
    Invalid { shown: String },
    /// The userinfo is not `user:password` percent-encoded text.
    #[error("the user:password in {shown:?} is not valid percent-encoded UTF-8")]
    Userinfo { shown: String },
}

/// A sink URL split into what is requested and what authenticates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkUrl {
    /// The URL without userinfo: what the request goes to.
    pub url: String,
    /// `Basic <base64(user:password)>` when the URL had userinfo.
    pub basic_auth: Option<String>,
    /// For logs and errors ([`shown`]).
    pub shown: String,
}

impl SinkUrl {
    pub fn parse(url: &str) -> Result<SinkUrl, Error> {
        let shown = shown(url);
        let uri: http::Uri = url.parse().map_err(|_| Error::Invalid {
            shown: shown.clone(),
        })?;
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err(Error::Invalid { shown });
        };
        let Some((userinfo, host)) = authority.as_str().rsplit_once('@') else {
            return Ok(SinkUrl {
                url: url.to_string(),
                basic_auth: None,
                shown,
            });
        };
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
        };
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        let (Ok(user), Ok(password)) = (decode(user), decode(password)) else {
            return Err(Error::Userinfo { shown });
        };
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let path = uri.path_and_query().map_or("", |p| p.as_str());
        Ok(SinkUrl {
            url: format!("{scheme}://{host}{path}"),
            basic_auth: Some(format!("Basic {credentials}")),
            shown,
        })
    }
}

/// `url` as logs and errors may show it: userinfo and query values replaced by `[REDACTED]`, the rest kept
/// so an operator can still tell which endpoint is meant. Works on text that is not a valid URL too.
pub fn shown(url: &str) -> String {
    let (before_fragment, fragment) = match url.split_once('#') {
        Some((u, _)) => (u, "#"),
        None => (url, ""),
    };
    let (base, query) = match before_fragment.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (before_fragment, None),
    };
    let mut out = String::with_capacity(url.len());
    // The authority runs from after "://" to the next '/'; its userinfo is what comes before its last '@'.
    match base.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            out.push_str(scheme);
            out.push_str("://");
            match authority.rsplit_once('@') {
                Some((_, host)) => {
                    out.push_str(HIDDEN);
                    out.push('@');
                    out.push_str(host);
                }
                None => out.push_str(authority),
            }
            out.push_str(path);
        }
        None => match base.rsplit_once('@') {
            // No scheme: anything before an '@' may be a credential.
            Some((_, host)) => {
                out.push_str(HIDDEN);
                out.push('@');
                out.push_str(host);
            }
            None => out.push_str(base),
        },
    }
    if let Some(query) = query {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((k, _)) => {
                    out.push_str(k);
                    out.push('=');
                    out.push_str(HIDDEN);
                }
                None => out.push_str(pair),
            }
        }
    }
    // A fragment is never sent, but it is no place for a secret either.
    if !fragment.is_empty() {
        out.push('#');
        out.push_str(HIDDEN);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_hides_userinfo_and_query_values() {
        assert_eq!(
            shown("http://admin:S3cretPW@hooks.example:8080/in?api_key=k3y&x=1"),
            "http://[REDACTED]@hooks.example:8080/in?api_key=[REDACTED]&x=[REDACTED]"
        );
        assert_eq!(shown("https://c:4318/v1/logs"), "https://c:4318/v1/logs");
        assert_eq!(shown("user:pw@host/x?flag"), "[REDACTED]@host/x?flag");
        assert_eq!(
            shown("http://a:b@c@d/p#token"),
            "http://[REDACTED]@d/p#[REDACTED]"
        );
    }

    #[test]
    fn userinfo_becomes_basic_auth_and_leaves_the_url() {
        let u = SinkUrl::parse("http://admin:S3cret%40PW@hooks.example/in?k=v").unwrap();
        assert_eq!(u.url, "http://hooks.example/in?k=v");
        // base64("admin:S3cret@PW")
        assert_eq!(u.basic_auth.as_deref(), Some("Basic YWRtaW46UzNjcmV0QFBX"));
        assert!(!u.shown.contains("S3cret"));
        let plain = SinkUrl::parse("https://hooks.example/in").unwrap();
        assert_eq!(plain.url, "https://hooks.example/in");
        assert_eq!(plain.basic_auth, None);
    }

    #[test]
    fn bad_urls_are_refused_without_their_credentials() {
        let e = SinkUrl::parse("http://admin:S3cretPW@").unwrap_err();
        assert!(!e.to_string().contains("S3cretPW"), "{e}");
        let e = SinkUrl::parse("http://admin:%FF%FE@host/").unwrap_err();
        assert!(matches!(e, Error::Userinfo { .. }), "{e}");
        assert!(!e.to_string().contains("%FF"), "{e}");
    }
}
