//! The HTTP side: [`Hub`] (the ureq agent with its timeouts, redirects and token, and the
//! repository listing), and how to read the answer to a `Range` request.

use std::time::Duration;

use ureq::http::Response;
use ureq::Body;

use crate::repo::{normalize_endpoint, parse_listing, tree_url};
use crate::{PullError, Repo, RepoFile};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// A listing larger than this is refused (the real ones are a few kB).
const MAX_LISTING_BYTES: u64 = 16 << 20;

/// A Hugging Face endpoint and the HTTP client for it. The only type here that opens sockets.
pub struct Hub {
    endpoint: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Hub {
    /// A client for `endpoint` (checked, trailing `/` dropped), sending `token` as a bearer
    /// token when given. Connect timeout 10 s, read timeout 60 s; redirects followed (the
    /// token only to the same host); proxies from the usual environment variables.
    pub fn new(endpoint: &str, token: Option<String>) -> Result<Hub, PullError> {
        let endpoint = normalize_endpoint(endpoint)?;
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_resolve(Some(CONNECT_TIMEOUT))
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_send_request(Some(READ_TIMEOUT))
            .timeout_recv_response(Some(READ_TIMEOUT))
            .timeout_per_read(Some(READ_TIMEOUT))
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
            .user_agent(concat!("minicpmv/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Hub {
            endpoint,
            token: token.filter(|t| !t.trim().is_empty()),
            agent: config.into(),
        })
    }

    /// The endpoint, without a trailing `/`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// `GET url`, from byte `range_from` when it is not 0. Any HTTP status is an answer; only
    /// no answer at all is an error.
    pub(crate) fn get(&self, url: &str, range_from: u64) -> Result<Response<Body>, PullError> {
        let mut req = self.agent.get(url);
        if let Some(t) = &self.token {
            req = req.header("Authorization", &format!("Bearer {}", t.trim()));
        }
        if range_from > 0 {
            req = req.header("Range", &format!("bytes={range_from}-"));
        }
        req.call().map_err(|e| PullError::Unreachable {
            url: url.to_string(),
            endpoint: self.endpoint.clone(),
            source: Box::new(e),
        })
    }

    /// The files of `repo` (top level of `main`).
    pub fn listing(&self, repo: &Repo) -> Result<Vec<RepoFile>, PullError> {
        let url = tree_url(&self.endpoint, repo);
        let mut resp = self.get(&url, 0)?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(PullError::Http { url, status });
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_LISTING_BYTES)
            .read_to_string()
            .map_err(|e| PullError::BadListing {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        parse_listing(&body, &url)
    }
}

/// What to do with a partial file, given the answer to a request for bytes `start..`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// `206 Partial Content` from `start`: append to the partial file.
    Append,
    /// `200 OK`: the whole file follows: start over.
    Restart,
}

/// How to continue a download asked from byte `start` (0: no Range header) after a response
/// with `status` and `Content-Range` header `range`. `Ok(None)` for a status that is not a
/// file (the caller reports it).
pub fn resume_decision(
    status: u16,
    start: u64,
    range: Option<&str>,
    url: &str,
) -> Result<Option<Resume>, PullError> {
    match status {
        200 => Ok(Some(Resume::Restart)),
        206 => {
            let first = range
                .and_then(|r| r.trim().strip_prefix("bytes "))
                .and_then(|r| r.split_once('-'))
                .and_then(|(a, _)| a.trim().parse::<u64>().ok());
            if first == Some(start) {
                Ok(Some(Resume::Append))
            } else {
                Err(PullError::BadRange {
                    url: url.to_string(),
                    start,
                    range: range.unwrap_or("").to_string(),
                })
            }
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_decisions() {
        let u = "http://h/f";
        assert_eq!(
            resume_decision(200, 0, None, u).unwrap(),
            Some(Resume::Restart)
        );
        // a server that ignores Range sends the whole file: start over
        assert_eq!(
            resume_decision(200, 500, None, u).unwrap(),
            Some(Resume::Restart)
        );
        assert_eq!(
            resume_decision(206, 500, Some("bytes 500-999/1000"), u).unwrap(),
            Some(Resume::Append)
        );
        // a range that does not start where the partial file ends would corrupt it
        for bad in [
            Some("bytes 0-999/1000"),
            Some("bytes */1000"),
            Some("junk"),
            None,
        ] {
            assert!(
                matches!(
                    resume_decision(206, 500, bad, u),
                    Err(PullError::BadRange { .. })
                ),
                "{bad:?}"
            );
        }
        for status in [404, 403, 416, 500, 302] {
            assert_eq!(resume_decision(status, 500, None, u).unwrap(), None);
        }
    }

    #[test]
    fn http_errors_explain_the_status_without_naming_flags() {
        let e = PullError::Http {
            url: "http://h/f".into(),
            status: 401,
        };
        let msg = e.to_string();
        assert!(msg.starts_with("http://h/f: HTTP 401 (a gated"), "{msg}");
        assert!(!msg.contains("HF_TOKEN"), "{msg}");
        let e = PullError::Http {
            url: "u".into(),
            status: 418,
        };
        assert_eq!(e.to_string(), "u: HTTP 418");
    }
}
