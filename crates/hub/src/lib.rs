//! Model downloads: a language model + mmproj pair from a Hugging Face repository into a local
//! cache folder.
//!
//! - The repository listing (`GET {endpoint}/api/models/{owner}/{name}/tree/main`) gives every
//!   file's size and, for files stored with Git LFS, its sha256 (`lfs.oid`). [`select`] picks the
//!   pair from it: the language model is the `.gguf` whose name contains the quant
//!   (case-insensitive) and does not start with `mmproj`; the projector is the `.gguf` starting
//!   with `mmproj` (the `f16` one when there are several).
//! - Files come from `GET {endpoint}/{owner}/{name}/resolve/main/{file}` (redirects followed)
//!   into `{file}.part`, resumed with `Range: bytes=N-` (a `206` appends, a `200` starts over),
//!   hashed while they arrive, checked against the listing's sha256 and renamed into place. A
//!   mismatch deletes the partial file. A `{file}.sha256` sidecar records a verified hash, so a
//!   file in place is not hashed again on every run.
//! - Cache layout: `{home}/models/{owner}--{name}/{file}`, with the listing used written next to
//!   the files as `listing.json` (same shape as the hub's), so [`cached`] can find a pair without
//!   the network.
//!
//! [`cached`] never opens a socket; only [`Hub`] does.

#![forbid(unsafe_code)]

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The default model repository: MiniCPM-V 2.6 as GGUF files, by its authors.
pub const DEFAULT_REPO: &str = "openbmb/MiniCPM-V-2_6-gguf";
/// The default language-model quantization.
pub const DEFAULT_QUANT: &str = "Q4_K_M";
/// Hugging Face; `HF_ENDPOINT` overrides it (as for `huggingface_hub`).
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// The revision downloaded.
pub const REVISION: &str = "main";
/// The listing kept next to the files of a repository in the cache.
pub const LISTING_FILE: &str = "listing.json";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const CHUNK: usize = 1 << 20;
/// A listing larger than this is refused (the real ones are a few kB).
const MAX_LISTING_BYTES: u64 = 16 << 20;

/// Errors of listing, choosing, downloading and finding model files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PullError {
    #[error("bad repository name {0:?}: expected OWNER/NAME (letters, digits, '.', '-', '_')")]
    BadRepo(String),
    #[error("bad endpoint {0:?} (HF_ENDPOINT): expected an http:// or https:// URL")]
    BadEndpoint(String),
    #[error("cannot reach {url} (HF_ENDPOINT={endpoint})")]
    Unreachable {
        url: String,
        endpoint: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("{url}: HTTP {status}{hint}")]
    Http {
        url: String,
        status: u16,
        hint: &'static str,
    },
    #[error("{url}: not a valid repository listing: {reason}")]
    BadListing { url: String, reason: String },
    #[error("{repo} has no language model for quant {quant}; available: {}", list(.available))]
    QuantNotFound {
        repo: String,
        quant: String,
        available: Vec<String>,
    },
    #[error("quant {quant} matches several files in {repo}: {}; give the full quant name", list(.files))]
    QuantAmbiguous {
        repo: String,
        quant: String,
        files: Vec<String>,
    },
    #[error("{repo} has no projector (a .gguf file whose name starts with mmproj)")]
    NoMmproj { repo: String },
    #[error(
        "download of {url} stopped at {have} of {size} bytes; {part} is kept: pull again to resume"
    )]
    Interrupted {
        url: String,
        part: PathBuf,
        have: u64,
        size: u64,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    #[error("{url}: the server sent more than the {size} bytes of the listing; the partial file was deleted")]
    TooLong { url: String, size: u64 },
    #[error("{url}: asked for bytes from {start}, the server answered with Content-Range {range:?}; the partial file was deleted: pull again")]
    BadRange {
        url: String,
        start: u64,
        range: String,
    },
    #[error(
        "{file}: sha256 mismatch: expected {expected}, got {actual}; the download was deleted"
    )]
    Checksum {
        file: String,
        expected: String,
        actual: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what} is not in the cache ({dir}): run `minicpmv pull{args}` while online")]
    NotCached {
        what: String,
        dir: PathBuf,
        args: String,
    },
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PullError + '_ {
    move |source| PullError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A Hugging Face model repository name, `owner/name`, checked so it is safe in URLs and as a
/// folder name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repo {
    owner: String,
    name: String,
}

impl Repo {
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

/// One file of a repository listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoFile {
    /// File name (top-level files only).
    pub path: String,
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
fn listing_json(files: &[RepoFile]) -> String {
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

/// The two files of a pair, chosen from a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairFiles {
    pub model: RepoFile,
    pub mmproj: RepoFile,
}

fn is_gguf(f: &RepoFile) -> bool {
    f.path.to_ascii_lowercase().ends_with(".gguf")
}

fn is_mmproj(f: &RepoFile) -> bool {
    is_gguf(f) && f.path.to_ascii_lowercase().starts_with("mmproj")
}

/// The quant part of a language-model file name: what follows the last `-` or `.` before
/// `.gguf` (`ggml-model-Q4_K_M.gguf` -> `Q4_K_M`).
pub fn quant_of(file: &str) -> &str {
    let stem = file
        .get(..file.len().saturating_sub(5))
        .filter(|_| file.to_ascii_lowercase().ends_with(".gguf"))
        .unwrap_or(file);
    stem.rsplit(['-', '.']).next().unwrap_or(stem)
}

/// Chooses the language model for `quant` and the projector from a listing.
pub fn select(files: &[RepoFile], repo: &Repo, quant: &str) -> Result<PairFiles, PullError> {
    let models: Vec<&RepoFile> = files
        .iter()
        .filter(|f| is_gguf(f) && !is_mmproj(f))
        .collect();
    let q = quant.to_ascii_lowercase();
    let matching: Vec<&RepoFile> = models
        .iter()
        .copied()
        .filter(|f| !q.is_empty() && f.path.to_ascii_lowercase().contains(&q))
        .collect();
    // An exact quant match wins over a longer name that contains it (Q4_K in Q4_K_M).
    let exact: Vec<&RepoFile> = matching
        .iter()
        .copied()
        .filter(|f| quant_of(&f.path).eq_ignore_ascii_case(quant))
        .collect();
    let model = match (exact.as_slice(), matching.as_slice()) {
        ([one], _) | ([], [one]) => (*one).clone(),
        ([], []) => {
            let mut available: Vec<String> = models
                .iter()
                .map(|f| quant_of(&f.path).to_string())
                .collect();
            available.sort();
            available.dedup();
            return Err(PullError::QuantNotFound {
                repo: repo.to_string(),
                quant: quant.to_string(),
                available,
            });
        }
        (several, all) => {
            let pick = if several.is_empty() { all } else { several };
            return Err(PullError::QuantAmbiguous {
                repo: repo.to_string(),
                quant: quant.to_string(),
                files: pick.iter().map(|f| f.path.clone()).collect(),
            });
        }
    };
    let projectors: Vec<&RepoFile> = files.iter().filter(|f| is_mmproj(f)).collect();
    let mmproj = projectors
        .iter()
        .find(|f| f.path.to_ascii_lowercase().contains("f16"))
        .or(projectors.first())
        .map(|f| (*f).clone())
        .ok_or_else(|| PullError::NoMmproj {
            repo: repo.to_string(),
        })?;
    Ok(PairFiles { model, mmproj })
}

/// Percent-encodes a path segment (everything but RFC 3986 unreserved characters).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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

fn http_hint(status: u16) -> &'static str {
    match status {
        401 | 403 => " (a gated or private repository needs a token: set HF_TOKEN)",
        404 => " (no such repository, revision or file)",
        416 => " (the server refused to resume; the partial file was deleted: pull again)",
        429 => " (too many requests: try again later)",
        500..=599 => " (server error: try again later)",
        _ => "",
    }
}

/// Progress of long steps (downloads, hashing files already on disk). All methods default to
/// doing nothing.
pub trait Progress {
    /// A step over `total` bytes starts at `pos`; `label` says what ("downloading FILE").
    fn start(&mut self, _label: &str, _total: u64, _pos: u64) {}
    /// `bytes` more are done.
    fn advance(&mut self, _bytes: u64) {}
    /// The step ended (successfully or not).
    fn finish(&mut self) {}
}

/// No progress reporting.
pub struct NoProgress;

impl Progress for NoProgress {}

/// Lower-case hex of a digest.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Feeds the first `len` bytes of `path` to `hasher`, with progress.
fn hash_prefix(
    path: &Path,
    len: u64,
    hasher: &mut Sha256,
    label: &str,
    progress: &mut dyn Progress,
) -> Result<(), PullError> {
    let file = File::open(path).map_err(io_err(path))?;
    let mut reader = file.take(len);
    let mut buf = vec![0u8; CHUNK];
    progress.start(label, len, 0);
    let mut done = 0u64;
    let result = loop {
        match reader.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                hasher.update(&buf[..n]);
                done += n as u64;
                progress.advance(n as u64);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Err(io_err(path)(e)),
        }
    };
    progress.finish();
    result?;
    if done != len {
        return Err(io_err(path)(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("expected {len} bytes, read {done}"),
        )));
    }
    Ok(())
}

/// Writes `contents` to `path` through a temporary file in the same folder and a rename.
fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), PullError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
}

/// The cache of downloaded repositories: `{home}/models/{owner}--{name}/`.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// A file of a pair in the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CachedFile {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    pub sha256: Option<String>,
    /// Downloaded (or resumed) by this call, rather than found in place.
    pub downloaded: bool,
}

/// A pair in the cache, ready to load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pair {
    pub repo: String,
    pub quant: String,
    pub dir: PathBuf,
    pub model: CachedFile,
    pub mmproj: CachedFile,
}

/// What is at a file's place in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InPlace {
    /// Right size, and the right sha256 (recorded, or just computed).
    Good,
    Missing,
    /// Wrong size or wrong hash.
    Stale,
}

impl Cache {
    /// The cache under `home` (`$MINICPMV_HOME`).
    pub fn new(home: &Path) -> Cache {
        Cache {
            root: home.join("models"),
        }
    }

    /// `{home}/models`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of one repository.
    pub fn repo_dir(&self, repo: &Repo) -> PathBuf {
        self.root.join(repo.dir_name())
    }

    /// The listing saved by the last successful pull of `repo`, if any.
    pub fn read_listing(&self, repo: &Repo) -> Result<Option<Vec<RepoFile>>, PullError> {
        let path = self.repo_dir(repo).join(LISTING_FILE);
        match fs::read_to_string(&path) {
            Ok(s) => parse_listing(&s, &path.display().to_string()).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    fn write_listing(&self, repo: &Repo, files: &[RepoFile]) -> Result<(), PullError> {
        let dir = self.repo_dir(repo);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        write_atomic(&dir.join(LISTING_FILE), listing_json(files).as_bytes())
    }

    /// Checks the file at `dir/file.path`: size, then the recorded or computed sha256. A file
    /// whose hash is computed and right gets its `.sha256` sidecar.
    fn check(
        &self,
        dir: &Path,
        file: &RepoFile,
        progress: &mut dyn Progress,
    ) -> Result<InPlace, PullError> {
        let path = dir.join(&file.path);
        let len = match fs::metadata(&path) {
            Ok(m) if m.is_file() => m.len(),
            Ok(_) => return Ok(InPlace::Stale),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(InPlace::Missing),
            Err(e) => return Err(io_err(&path)(e)),
        };
        if len != file.size {
            return Ok(InPlace::Stale);
        }
        let Some(expected) = &file.sha256 else {
            return Ok(InPlace::Good);
        };
        let sidecar = sidecar_path(&path);
        if let Ok(recorded) = fs::read_to_string(&sidecar) {
            if recorded.trim() == expected {
                return Ok(InPlace::Good);
            }
        }
        let mut hasher = Sha256::new();
        let label = format!("checking {}", file.path);
        hash_prefix(&path, len, &mut hasher, &label, progress)?;
        if hex(&hasher.finalize()) == *expected {
            write_atomic(&sidecar, format!("{expected}\n").as_bytes())?;
            Ok(InPlace::Good)
        } else {
            Ok(InPlace::Stale)
        }
    }
}

fn sidecar_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".sha256");
    PathBuf::from(s)
}

fn part_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

fn cached_file(dir: &Path, f: &RepoFile, downloaded: bool) -> CachedFile {
    CachedFile {
        name: f.path.clone(),
        path: dir.join(&f.path),
        size: f.size,
        sha256: f.sha256.clone(),
        downloaded,
    }
}

/// The `minicpmv pull` arguments that fetch `repo` + `quant` (empty for the defaults).
fn pull_args(repo: &Repo, quant: &str) -> String {
    let mut s = String::new();
    if repo.to_string() != DEFAULT_REPO {
        s.push_str(&format!(" {repo}"));
    }
    if !quant.eq_ignore_ascii_case(DEFAULT_QUANT) {
        s.push_str(&format!(" --quant {quant}"));
    }
    s
}

/// The pair for `repo` + `quant` from the cache alone (never the network): the listing saved
/// by the last pull, both files in place and matching it. [`PullError::NotCached`] otherwise.
pub fn cached(
    cache: &Cache,
    repo: &Repo,
    quant: &str,
    progress: &mut dyn Progress,
) -> Result<Pair, PullError> {
    let dir = cache.repo_dir(repo);
    let not_cached = |what: String| PullError::NotCached {
        what,
        dir: dir.clone(),
        args: pull_args(repo, quant),
    };
    let Some(listing) = cache.read_listing(repo)? else {
        return Err(not_cached(format!("{repo} ({quant})")));
    };
    let sel = select(&listing, repo, quant)?;
    for f in [&sel.model, &sel.mmproj] {
        match cache.check(&dir, f, progress)? {
            InPlace::Good => {}
            InPlace::Missing => return Err(not_cached(f.path.clone())),
            InPlace::Stale => {
                return Err(not_cached(format!(
                    "a complete {} matching the listing's size and sha256",
                    f.path
                )))
            }
        }
    }
    Ok(Pair {
        repo: repo.to_string(),
        quant: quant.to_string(),
        model: cached_file(&dir, &sel.model, false),
        mmproj: cached_file(&dir, &sel.mmproj, false),
        dir,
    })
}

/// A Hugging Face endpoint and the HTTP client for it. The only type here that opens sockets.
pub struct Hub {
    endpoint: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Hub {
    /// A client for `endpoint` (checked, trailing `/` dropped), sending `token` as a bearer
    /// token when given. Connect timeout 10 s, read timeout 60 s; proxies from the usual
    /// environment variables.
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

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn get(
        &self,
        url: &str,
        range_from: u64,
    ) -> Result<ureq::http::Response<ureq::Body>, PullError> {
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
            return Err(PullError::Http {
                url,
                status,
                hint: http_hint(status),
            });
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

    /// Downloads `file` of `repo` into `dir` (resuming `{file}.part`), checks its sha256 and
    /// renames it into place.
    fn download(
        &self,
        repo: &Repo,
        file: &RepoFile,
        dir: &Path,
        progress: &mut dyn Progress,
    ) -> Result<(), PullError> {
        let url = resolve_url(&self.endpoint, repo, &file.path);
        let dest = dir.join(&file.path);
        let part = part_path(&dest);
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut have = match fs::metadata(&part) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_err(&part)(e)),
        };
        if have > file.size {
            fs::remove_file(&part).map_err(io_err(&part))?;
            have = 0;
        }
        let mut hasher = Sha256::new();
        if have == file.size && have > 0 {
            // Complete but never verified (stopped before the rename).
            let label = format!("checking {}", file.path);
            hash_prefix(&part, have, &mut hasher, &label, progress)?;
        } else {
            let resp = self.get(&url, have)?;
            let status = resp.status().as_u16();
            let range = resp
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok());
            let decision = match resume_decision(status, have, range, &url) {
                Ok(Some(d)) => d,
                Ok(None) => {
                    if status == 416 {
                        let _ = fs::remove_file(&part);
                    }
                    return Err(PullError::Http {
                        url,
                        status,
                        hint: http_hint(status),
                    });
                }
                Err(e) => {
                    let _ = fs::remove_file(&part);
                    return Err(e);
                }
            };
            let mut out = match decision {
                Resume::Append => {
                    let label = format!("checking the partial {}", file.path);
                    hash_prefix(&part, have, &mut hasher, &label, progress)?;
                    OpenOptions::new()
                        .append(true)
                        .open(&part)
                        .map_err(io_err(&part))?
                }
                Resume::Restart => {
                    have = 0;
                    File::create(&part).map_err(io_err(&part))?
                }
            };
            let mut reader = resp.into_body().into_reader();
            progress.start(&format!("downloading {}", file.path), file.size, have);
            let result = copy_body(
                &mut reader,
                &mut out,
                &mut hasher,
                &mut have,
                file.size,
                progress,
            );
            progress.finish();
            let flushed = out.sync_all();
            drop(out);
            match result {
                Ok(()) => {}
                Err(Copy::Read(e)) => {
                    return Err(PullError::Interrupted {
                        url,
                        part,
                        have,
                        size: file.size,
                        source: Some(Box::new(e)),
                    })
                }
                Err(Copy::Write(e)) => return Err(io_err(&part)(e)),
                Err(Copy::TooLong) => {
                    let _ = fs::remove_file(&part);
                    return Err(PullError::TooLong {
                        url,
                        size: file.size,
                    });
                }
            }
            flushed.map_err(io_err(&part))?;
            if have < file.size {
                return Err(PullError::Interrupted {
                    url,
                    part,
                    have,
                    size: file.size,
                    source: None,
                });
            }
        }
        let actual = hex(&hasher.finalize());
        if let Some(expected) = &file.sha256 {
            if actual != *expected {
                fs::remove_file(&part).map_err(io_err(&part))?;
                return Err(PullError::Checksum {
                    file: file.path.clone(),
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        let _ = fs::remove_file(sidecar_path(&dest));
        fs::rename(&part, &dest).map_err(io_err(&dest))?;
        write_atomic(&sidecar_path(&dest), format!("{actual}\n").as_bytes())
    }
}

enum Copy {
    Read(io::Error),
    Write(io::Error),
    TooLong,
}

/// Copies the body to the partial file, hashing; stops with `TooLong` past `size`.
fn copy_body(
    reader: &mut dyn Read,
    out: &mut File,
    hasher: &mut Sha256,
    have: &mut u64,
    size: u64,
    progress: &mut dyn Progress,
) -> Result<(), Copy> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Copy::Read(e)),
        };
        if *have + n as u64 > size {
            return Err(Copy::TooLong);
        }
        out.write_all(&buf[..n]).map_err(Copy::Write)?;
        hasher.update(&buf[..n]);
        *have += n as u64;
        progress.advance(n as u64);
    }
}

/// Makes sure the files `sel` of `repo` are in the cache: files in place that match the
/// listing are kept, the others downloaded (resuming partial files); then saves `listing` next
/// to them. A failed first download leaves no empty repository folder behind.
pub fn fetch_pair(
    hub: &Hub,
    cache: &Cache,
    repo: &Repo,
    quant: &str,
    listing: &[RepoFile],
    sel: &PairFiles,
    progress: &mut dyn Progress,
) -> Result<Pair, PullError> {
    let dir = cache.repo_dir(repo);
    let result = (|| {
        let mut downloaded = [false; 2];
        for (i, f) in [&sel.model, &sel.mmproj].into_iter().enumerate() {
            match cache.check(&dir, f, progress)? {
                InPlace::Good => continue,
                InPlace::Missing => {}
                InPlace::Stale => {
                    let path = dir.join(&f.path);
                    fs::remove_file(&path).map_err(io_err(&path))?;
                    let _ = fs::remove_file(sidecar_path(&path));
                }
            }
            hub.download(repo, f, &dir, progress)?;
            downloaded[i] = true;
        }
        cache.write_listing(repo, listing)?;
        Ok(downloaded)
    })();
    match result {
        Ok([model_new, mmproj_new]) => Ok(Pair {
            repo: repo.to_string(),
            quant: quant.to_string(),
            model: cached_file(&dir, &sel.model, model_new),
            mmproj: cached_file(&dir, &sel.mmproj, mmproj_new),
            dir,
        }),
        Err(e) => {
            // Only succeeds when empty; a kept .part or an earlier pull's files stay.
            let _ = fs::remove_dir(&dir);
            Err(e)
        }
    }
}

/// Lists `repo`, chooses the pair for `quant` and makes sure it is in the cache.
pub fn pull(
    hub: &Hub,
    cache: &Cache,
    repo: &Repo,
    quant: &str,
    progress: &mut dyn Progress,
) -> Result<Pair, PullError> {
    let listing = hub.listing(repo)?;
    let sel = select(&listing, repo, quant)?;
    fetch_pair(hub, cache, repo, quant, &listing, &sel, progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64) -> RepoFile {
        RepoFile {
            path: path.to_string(),
            size,
            sha256: Some(format!("{:064x}", size)),
        }
    }

    fn repo() -> Repo {
        Repo::parse(DEFAULT_REPO).unwrap()
    }

    /// The file names of openbmb/MiniCPM-V-2_6-gguf.
    fn real_listing() -> Vec<RepoFile> {
        [
            ".gitattributes",
            "README.md",
            "ggml-model-F16.gguf",
            "ggml-model-IQ3_M.gguf",
            "ggml-model-IQ3_S.gguf",
            "ggml-model-IQ4_NL.gguf",
            "ggml-model-IQ4_XS.gguf",
            "ggml-model-Q2_K.gguf",
            "ggml-model-Q3_K.gguf",
            "ggml-model-Q3_K_L.gguf",
            "ggml-model-Q3_K_M.gguf",
            "ggml-model-Q3_K_S.gguf",
            "ggml-model-Q4_0.gguf",
            "ggml-model-Q4_1.gguf",
            "ggml-model-Q4_K.gguf",
            "ggml-model-Q4_K_M.gguf",
            "ggml-model-Q4_K_S.gguf",
            "ggml-model-Q5_0.gguf",
            "ggml-model-Q5_1.gguf",
            "ggml-model-Q5_K.gguf",
            "ggml-model-Q5_K_M.gguf",
            "ggml-model-Q5_K_S.gguf",
            "ggml-model-Q6_K.gguf",
            "ggml-model-Q8_0.gguf",
            "mmproj-model-f16.gguf",
        ]
        .iter()
        .enumerate()
        .map(|(i, p)| file(p, i as u64 + 1))
        .collect()
    }

    #[test]
    fn selects_the_default_pair_and_other_quants() {
        let l = real_listing();
        let p = select(&l, &repo(), DEFAULT_QUANT).unwrap();
        assert_eq!(p.model.path, "ggml-model-Q4_K_M.gguf");
        assert_eq!(p.mmproj.path, "mmproj-model-f16.gguf");
        // case-insensitive; the exact quant wins over a longer name containing it
        assert_eq!(
            select(&l, &repo(), "q8_0").unwrap().model.path,
            "ggml-model-Q8_0.gguf"
        );
        assert_eq!(
            select(&l, &repo(), "Q4_K").unwrap().model.path,
            "ggml-model-Q4_K.gguf"
        );
        assert_eq!(
            select(&l, &repo(), "f16").unwrap().model.path,
            "ggml-model-F16.gguf"
        );
    }

    #[test]
    fn a_missing_quant_lists_the_available_ones() {
        let err = select(&real_listing(), &repo(), "Q7_Z").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, PullError::QuantNotFound { .. }), "{msg}");
        for q in ["Q7_Z", "Q4_K_M", "Q8_0", "F16", DEFAULT_REPO] {
            assert!(msg.contains(q), "{msg}");
        }
        assert!(!msg.contains("f16.gguf"), "mmproj is not a quant: {msg}");
    }

    #[test]
    fn an_ambiguous_quant_is_refused() {
        let l = vec![
            file("m-Q4_K_M.gguf", 1),
            file("m-Q4_K_S.gguf", 2),
            file("mmproj-f16.gguf", 3),
        ];
        let err = select(&l, &repo(), "Q4").unwrap_err();
        assert!(matches!(err, PullError::QuantAmbiguous { .. }), "{err}");
        assert!(err.to_string().contains("m-Q4_K_S.gguf"), "{err}");
    }

    #[test]
    fn mmproj_prefers_f16_and_is_required() {
        let l = vec![
            file("model-Q8_0.gguf", 1),
            file("mmproj-Q8_0.gguf", 2),
            file("mmproj-F16.gguf", 3),
        ];
        let p = select(&l, &repo(), "Q8_0").unwrap();
        assert_eq!(p.model.path, "model-Q8_0.gguf");
        assert_eq!(p.mmproj.path, "mmproj-F16.gguf");
        let l = vec![file("model-Q8_0.gguf", 1), file("mmproj-Q8_0.gguf", 2)];
        assert_eq!(
            select(&l, &repo(), "Q8_0").unwrap().mmproj.path,
            "mmproj-Q8_0.gguf"
        );
        let err = select(&[file("model-Q8_0.gguf", 1)], &repo(), "Q8_0").unwrap_err();
        assert!(matches!(err, PullError::NoMmproj { .. }), "{err}");
    }

    #[test]
    fn quant_of_file_names() {
        assert_eq!(quant_of("ggml-model-Q4_K_M.gguf"), "Q4_K_M");
        assert_eq!(quant_of("Model-7.6B-IQ4_XS.GGUF"), "IQ4_XS");
        assert_eq!(quant_of("model.Q8_0.gguf"), "Q8_0");
        assert_eq!(quant_of("plain"), "plain");
    }

    #[test]
    fn repository_names() {
        let r = Repo::parse("openbmb/MiniCPM-V-2_6-gguf").unwrap();
        assert_eq!(r.to_string(), "openbmb/MiniCPM-V-2_6-gguf");
        assert_eq!(r.dir_name(), "openbmb--MiniCPM-V-2_6-gguf");
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
            "https://huggingface.co/api/models/openbmb/MiniCPM-V-2_6-gguf/tree/main"
        );
        assert_eq!(
            resolve_url(&e, &r, "ggml-model-Q4_K_M.gguf"),
            "https://huggingface.co/openbmb/MiniCPM-V-2_6-gguf/resolve/main/ggml-model-Q4_K_M.gguf"
        );
        assert_eq!(
            resolve_url("http://127.0.0.1:8080", &r, "a b+c.gguf"),
            "http://127.0.0.1:8080/openbmb/MiniCPM-V-2_6-gguf/resolve/main/a%20b%2Bc.gguf"
        );
        for bad in ["", "huggingface.co", "ftp://x", "https://", "http:// x"] {
            assert!(normalize_endpoint(bad).is_err(), "{bad:?}");
        }
    }

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

    #[test]
    fn the_cache_finds_verified_files_only() {
        let home = tempfile::tempdir().unwrap();
        let cache = Cache::new(home.path());
        let r = repo();
        let dir = cache.repo_dir(&r);
        let sha = |b: &[u8]| hex(&Sha256::digest(b));
        let model = RepoFile {
            path: "ggml-model-Q4_K_M.gguf".into(),
            size: 5,
            sha256: Some(sha(b"model")),
        };
        let mmproj = RepoFile {
            path: "mmproj-model-f16.gguf".into(),
            size: 6,
            sha256: Some(sha(b"mmproj")),
        };
        let listing = vec![model.clone(), mmproj.clone()];
        let err = cached(&cache, &r, DEFAULT_QUANT, &mut NoProgress).unwrap_err();
        assert!(matches!(err, PullError::NotCached { .. }), "{err}");
        assert!(err.to_string().contains("run `minicpmv pull`"), "{err}");
        cache.write_listing(&r, &listing).unwrap();
        let err = cached(&cache, &r, "Q8_0", &mut NoProgress).unwrap_err();
        assert!(matches!(err, PullError::QuantNotFound { .. }), "{err}");
        fs::write(dir.join(&model.path), b"model").unwrap();
        let err = cached(&cache, &r, DEFAULT_QUANT, &mut NoProgress).unwrap_err();
        assert!(err.to_string().contains("mmproj-model-f16.gguf"), "{err}");
        // right size, wrong bytes: refused
        fs::write(dir.join(&mmproj.path), b"MMPROJ").unwrap();
        assert!(cached(&cache, &r, DEFAULT_QUANT, &mut NoProgress).is_err());
        // right bytes: accepted, and the hash is recorded once
        fs::write(dir.join(&mmproj.path), b"mmproj").unwrap();
        let pair = cached(&cache, &r, DEFAULT_QUANT, &mut NoProgress).unwrap();
        assert_eq!(pair.model.path, dir.join("ggml-model-Q4_K_M.gguf"));
        assert_eq!(pair.mmproj.path, dir.join("mmproj-model-f16.gguf"));
        assert_eq!(
            fs::read_to_string(dir.join("mmproj-model-f16.gguf.sha256")).unwrap(),
            format!("{}\n", sha(b"mmproj"))
        );
    }

    #[test]
    fn pull_args_name_only_what_differs_from_the_defaults() {
        assert_eq!(pull_args(&repo(), "q4_k_m"), "");
        assert_eq!(
            pull_args(&Repo::parse("a/b").unwrap(), "Q8_0"),
            " a/b --quant Q8_0"
        );
    }
}
