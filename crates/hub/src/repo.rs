//! Repositories on the hub: their names, the URLs of their listing and files, and the listing
//! itself (`GET {endpoint}/api/models/{owner}/{name}/tree/main`, also the shape of the cache's
//! `listing.json`).

use std::fmt;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::{Deserialize, Serialize};

use crate::cache::LISTING_FILE;
use crate::PullError;

/// The default model repository: MiniCPM-V 2.6 as GGUF files, by its authors.
pub const DEFAULT_REPO: &str = "openbmb/MiniCPM-V-4.6-gguf";
/// Hugging Face. (Callers may take another endpoint from `HF_ENDPOINT`, as `huggingface_hub`
/// does; this crate reads no environment variable.)
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// The revision downloaded.
pub const REVISION: &str = "main";

/// A Hugging Face model repository name, `owner/name`, checked so it is safe in URLs and as a
/// folder name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    owner: String,
    name: String,
}

impl Repo {
    /// Parses `owner/name`: two non-empty parts of ASCII letters, digits, `.`, `-` and `_`,
    /// neither `.` nor `..` and not starting with `-`.
    pub fn parse(s: &str) -> Result<Repo, PullError> {
        let ok_part = |p: &str| {
            !p.is_empty()
                && p != "."
                && p != ".."
                && !p.starts_with('-')
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        };
        match s.split_once('/') {
            Some((owner, name)) if ok_part(owner) && ok_part(name) => Ok(Repo {
                owner: owner.to_string(),
                name: name.to_string(),
            }),
            _ => Err(PullError::BadRepo(s.to_string())),
        }
    }

    /// The folder name in the cache: `owner--name`.
    pub fn dir_name(&self) -> String {
        format!("{}--{}", self.owner, self.name)
    }
}

impl fmt::Display for Repo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// Checks an endpoint URL and drops trailing slashes.
pub fn normalize_endpoint(endpoint: &str) -> Result<String, PullError> {
    let e = endpoint.trim().trim_end_matches('/');
    let rest = e
        .strip_prefix("https://")
        .or_else(|| e.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => Ok(e.to_string()),
        _ => Err(PullError::BadEndpoint(endpoint.to_string())),
    }
}

/// `{endpoint}/api/models/{owner}/{name}/tree/{revision}`.
pub fn tree_url(endpoint: &str, repo: &Repo) -> String {
    format!("{endpoint}/api/models/{repo}/tree/{REVISION}")
}

/// `{endpoint}/{owner}/{name}/resolve/{revision}/{file}`.
pub fn resolve_url(endpoint: &str, repo: &Repo, file: &str) -> String {
    format!(
        "{endpoint}/{repo}/resolve/{REVISION}/{}",
        encode_segment(file)
    )
}

/// What a path segment keeps as it is: the RFC 3986 unreserved characters (ASCII letters,
/// digits, `-`, `.`, `_`, `~`). Everything else, non-ASCII bytes included, is `%XX`.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes one URL path segment (`/` included, so a name stays one segment).
fn encode_segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// One file of a repository listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoFile {
    /// File name (top-level files only).
    pub path: String,
    /// Size in bytes (of the LFS object for files stored with Git LFS).
    pub size: u64,
    /// Lower-case hex sha256 for files stored with Git LFS; `None` for small git files.
    pub sha256: Option<String>,
}

/// The hub's listing entry, as `GET /api/models/{repo}/tree/{rev}` returns it (extra fields
/// ignored) and as `listing.json` stores it.
#[derive(Debug, Serialize, Deserialize)]
struct RawEntry {
    #[serde(rename = "type")]
    kind: String,
    path: String,
    #[serde(default)]
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lfs: Option<RawLfs>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RawLfs {
    oid: String,
    size: u64,
}

/// Whether a listed path is a plain file name we can place in the cache folder as it is.
fn is_plain_name(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('.')
        && !p.contains(['/', '\\', '\0'])
        && !p.ends_with(".part")
        && !p.ends_with(".sha256")
        && p != LISTING_FILE
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Parses a listing (the hub's JSON, or `listing.json`): the top-level files with plain names;
/// folders and other entries are skipped. `source` names the URL or file in errors.
pub fn parse_listing(json: &str, source: &str) -> Result<Vec<RepoFile>, PullError> {
    let bad = |reason: String| PullError::BadListing {
        url: source.to_string(),
        reason,
    };
    let raw: Vec<RawEntry> = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    let mut files = Vec::new();
    for e in raw {
        if e.kind != "file" || !is_plain_name(&e.path) {
            continue;
        }
        let (size, sha256) = match e.lfs {
            Some(lfs) => {
                if !is_sha256_hex(&lfs.oid) {
                    return Err(bad(format!(
                        "{}: lfs.oid {:?} is not a sha256",
                        e.path, lfs.oid
                    )));
                }
                (lfs.size, Some(lfs.oid.to_ascii_lowercase()))
            }
            None => (e.size, None),
        };
        files.push(RepoFile {
            path: e.path,
            size,
            sha256,
        });
    }
    Ok(files)
}

/// The listing as `listing.json` stores it (the hub's shape).
pub(crate) fn listing_json(files: &[RepoFile]) -> String {
    let raw: Vec<RawEntry> = files
        .iter()
        .map(|f| RawEntry {
            kind: "file".to_string(),
            path: f.path.clone(),
            size: f.size,
            lfs: f.sha256.as_ref().map(|oid| RawLfs {
                oid: oid.clone(),
                size: f.size,
            }),
        })
        .collect();
    serde_json::to_string_pretty(&raw).unwrap_or_else(|_| "[]".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> Repo {
        Repo::parse(DEFAULT_REPO).unwrap()
    }

    #[test]
    fn repository_names() {
        let r = repo();
        assert_eq!(r.to_string(), "openbmb/MiniCPM-V-4.6-gguf");
        assert_eq!(r.dir_name(), "openbmb--MiniCPM-V-4.6-gguf");
        for bad in [
            "", "openbmb", "/x", "x/", "a/b/c", "../x", "a/..", "a b/c", "a/-x", "a/b?c",
        ] {
            assert!(Repo::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn urls() {
        let r = repo();
        let e = normalize_endpoint("https://huggingface.co/").unwrap();
        assert_eq!(
            tree_url(&e, &r),
            "https://huggingface.co/api/models/openbmb/MiniCPM-V-4.6-gguf/tree/main"
        );
        assert_eq!(
            resolve_url(&e, &r, "ggml-model-Q4_K_M.gguf"),
            "https://huggingface.co/openbmb/MiniCPM-V-4.6-gguf/resolve/main/ggml-model-Q4_K_M.gguf"
        );
        assert_eq!(
            resolve_url("http://127.0.0.1:8080", &r, "a b+c.gguf"),
            "http://127.0.0.1:8080/openbmb/MiniCPM-V-4.6-gguf/resolve/main/a%20b%2Bc.gguf"
        );
        for bad in ["", "huggingface.co", "ftp://x", "https://", "http:// x"] {
            assert!(normalize_endpoint(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_path_segment_keeps_only_unreserved_characters() {
        assert_eq!(
            encode_segment("a b/c%d?e#f~g_h-i.é.gguf"),
            "a%20b%2Fc%25d%3Fe%23f~g_h-i.%C3%A9.gguf"
        );
        assert_eq!(
            encode_segment("ggml-model-Q4_K_M.gguf"),
            "ggml-model-Q4_K_M.gguf"
        );
    }

    #[test]
    fn listings_parse_and_round_trip() {
        let oid = "A".repeat(64);
        let json = format!(
            r#"[{{"type":"file","oid":"x","size":1519,"path":".gitattributes"}},
               {{"type":"directory","oid":"y","size":0,"path":"sub"}},
               {{"type":"file","size":10,"path":"README.md"}},
               {{"type":"file","size":4,"path":"../evil.gguf","lfs":{{"oid":"{oid}","size":4}}}},
               {{"type":"file","size":4681089344,"path":"ggml-model-Q4_K_M.gguf",
                 "lfs":{{"oid":"{oid}","size":4681089344,"pointerSize":135}}}}]"#
        );
        let files = parse_listing(&json, "u").unwrap();
        assert_eq!(
            files,
            vec![
                RepoFile {
                    path: "README.md".into(),
                    size: 10,
                    sha256: None
                },
                RepoFile {
                    path: "ggml-model-Q4_K_M.gguf".into(),
                    size: 4681089344,
                    sha256: Some("a".repeat(64))
                },
            ]
        );
        assert_eq!(parse_listing(&listing_json(&files), "f").unwrap(), files);
        assert!(parse_listing("{}", "u").is_err());
        assert!(parse_listing("not json", "u").is_err());
        let bad_oid = r#"[{"type":"file","size":4,"path":"m.gguf","lfs":{"oid":"xyz","size":4}}]"#;
        let err = parse_listing(bad_oid, "http://h/tree")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("http://h/tree") && err.contains("m.gguf"),
            "{err}"
        );
    }
}
