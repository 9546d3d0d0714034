//! Bearer-token protection of `/metrics` (`server.metrics_bearer_token_file`).
//!
//! The token is read from its file on every check rather than once, so a rotated Kubernetes Secret (the
//! kubelet swaps the mounted file) applies from the next scrape without a restart; the file is small and a
//! scrape comes every few seconds. Tokens are compared through their SHA-256 digests, so the time a
//! comparison takes says nothing about how many leading bytes of a guess were right.
//! Probes never go through here: the kubelet sends no token.

use std::io::Read;
use std::path::{Path, PathBuf};

use hyper::header::HeaderValue;
use sha2::{Digest, Sha256};

/// A token file larger than this is not a token (and is not read whole into memory).
const MAX_TOKEN_BYTES: u64 = 16 * 1024;

/// Why the token file cannot be used. Displayed with the configuration key, which is what a user fixes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("server.metrics_bearer_token_file: cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("server.metrics_bearer_token_file: {path} holds no token (it is empty)")]
    Empty { path: PathBuf },
    #[error("server.metrics_bearer_token_file: {path} is larger than {MAX_TOKEN_BYTES} bytes")]
    TooLarge { path: PathBuf },
}

/// The outcome of checking a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No token, a malformed header or the wrong token.
    Denied,
}

/// Where the expected token lives.
#[derive(Debug, Clone)]
pub struct TokenFile {
    path: PathBuf,
}

impl TokenFile {
    /// Checks the file can be used now, so a wrong path stops herald at start-up.
    pub fn open(path: &Path) -> Result<TokenFile, Error> {
        let file = TokenFile {
            path: path.to_path_buf(),
        };
        file.read()?;
        Ok(file)
    }

    /// The token's digest, read from the file now. Surrounding whitespace (a trailing newline) is not
    /// part of the token.
    fn read(&self) -> Result<[u8; 32], Error> {
        let read_err = |source| Error::Read {
            path: self.path.clone(),
            source,
        };
        let file = std::fs::File::open(&self.path).map_err(read_err)?;
        let mut text = Vec::new();
        file.take(MAX_TOKEN_BYTES + 1)
            .read_to_end(&mut text)
            .map_err(read_err)?;
        if text.len() as u64 > MAX_TOKEN_BYTES {
            return Err(Error::TooLarge {
                path: self.path.clone(),
            });
        }
        let token = text.trim_ascii();
        if token.is_empty() {
            return Err(Error::Empty {
                path: self.path.clone(),
            });
        }
        Ok(Sha256::digest(token).into())
    }

    /// Whether `authorization` carries the token in the file now. An unreadable file denies everyone
    /// (and says why in the error) rather than opening `/metrics`.
    pub fn check(&self, authorization: Option<&HeaderValue>) -> Result<Verdict, Error> {
        let expected = self.read()?;
        let presented = authorization
            .map(|v| v.as_bytes())
            .and_then(|v| {
                let (scheme, rest) = v.split_at_checked(7)?;
                scheme.eq_ignore_ascii_case(b"bearer ").then_some(rest)
            })
            .map(|t| t.trim_ascii())
            .filter(|t| !t.is_empty());
        Ok(match presented {
            Some(token) if <[u8; 32]>::from(Sha256::digest(token)) == expected => Verdict::Allowed,
            _ => Verdict::Denied,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(v: &str) -> HeaderValue {
        HeaderValue::from_str(v).unwrap()
    }

    #[test]
    fn the_token_in_the_file_now_is_the_one_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").unwrap();
        let file = TokenFile::open(&path).unwrap();
        let check = |h: Option<&str>| file.check(h.map(header).as_ref()).unwrap();
        assert_eq!(check(Some("Bearer s3cret")), Verdict::Allowed);
        assert_eq!(check(Some("bearer s3cret")), Verdict::Allowed);
        assert_eq!(check(Some("Bearer s3cre")), Verdict::Denied);
        assert_eq!(check(Some("Basic s3cret")), Verdict::Denied);
        assert_eq!(check(Some("Bearer ")), Verdict::Denied);
        assert_eq!(check(None), Verdict::Denied);

        // Rotated: the old token stops working at once.
        std::fs::write(&path, "n3w").unwrap();
        assert_eq!(check(Some("Bearer s3cret")), Verdict::Denied);
        assert_eq!(check(Some("Bearer n3w")), Verdict::Allowed);
    }

    #[test]
    fn unusable_files_are_named_with_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let missing = TokenFile::open(&dir.path().join("nope")).unwrap_err();
        assert!(
            missing
                .to_string()
                .starts_with("server.metrics_bearer_token_file: cannot read "),
            "{missing}"
        );
        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n").unwrap();
        let e = TokenFile::open(&empty).unwrap_err().to_string();
        assert!(e.ends_with("holds no token (it is empty)"), "{e}");
        let file = TokenFile::open(&{
            let p = dir.path().join("t");
            std::fs::write(&p, "x").unwrap();
            p
        })
        .unwrap();
        std::fs::remove_file(dir.path().join("t")).unwrap();
        assert!(file.check(Some(&header("Bearer x"))).is_err());
    }
}
