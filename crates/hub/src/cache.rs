//! The cache: `{home}/models/{owner}--{name}/{file}`, with the listing used written next to
//! the files as `listing.json`; and what counts as a pair ready to load. Nothing here opens a
//! socket.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::io_err;
use crate::repo::listing_json;
use crate::verify::{file_matches, is_recorded};
use crate::{parse_listing, select, Missing, Progress, PullError, Repo, RepoFile};

/// The listing kept next to the files of a repository in the cache.
pub const LISTING_FILE: &str = "listing.json";

/// The cache of downloaded repositories: `{home}/models/{owner}--{name}/`.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// A file of a pair in the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CachedFile {
    /// The file name in the repository.
    pub name: String,
    /// Where it is in the cache.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its lower-case hex sha256, when the listing gives one.
    pub sha256: Option<String>,
    /// Downloaded (or resumed) by this call, rather than found in place.
    pub downloaded: bool,
}

/// A pair in the cache, ready to load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pair {
    /// The repository, `owner/name`.
    pub repo: String,
    /// The quant asked for.
    pub quant: String,
    /// The repository's folder in the cache.
    pub dir: PathBuf,
    /// The language model.
    pub model: CachedFile,
    /// The projector.
    pub mmproj: CachedFile,
}

impl Pair {
    /// The pair `sel` of `repo` in `dir`; `downloaded` says which of the model and the
    /// projector this call downloaded.
    pub(crate) fn new(
        repo: &Repo,
        quant: &str,
        dir: PathBuf,
        sel: &crate::PairFiles,
        downloaded: [bool; 2],
    ) -> Pair {
        let file = |f: &RepoFile, downloaded| CachedFile {
            name: f.path.clone(),
            path: dir.join(&f.path),
            size: f.size,
            sha256: f.sha256.clone(),
            downloaded,
        };
        Pair {
            repo: repo.to_string(),
            quant: quant.to_string(),
            model: file(&sel.model, downloaded[0]),
            mmproj: file(&sel.mmproj, downloaded[1]),
            dir,
        }
    }
}

/// What is at a file's place in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InPlace {
    /// Right size, and the right sha256 (recorded, or just computed).
    Good,
    /// Nothing.
    Missing,
    /// Wrong size or wrong hash.
    Stale,
}

impl Cache {
    /// The cache under `home` (the CLI's `$MINICPMV_HOME`).
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

    /// Saves `files` as the listing of `repo`.
    pub(crate) fn write_listing(&self, repo: &Repo, files: &[RepoFile]) -> Result<(), PullError> {
        let dir = self.repo_dir(repo);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        write_atomic(&dir.join(LISTING_FILE), listing_json(files).as_bytes())
    }

    /// Checks the file at `dir/file.path`: size, then the recorded or computed sha256. A file
    /// whose hash is computed and right gets its `.sha256` sidecar.
    pub(crate) fn check(
        &self,
        dir: &Path,
        file: &RepoFile,
        progress: &mut dyn Progress,
    ) -> Result<InPlace, PullError> {
        let path = dir.join(&file.path);
        // A symbolic link (or anything but a regular file) is never trusted: it is stale, and
        // removing it removes the link, not its target.
        let len = match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_file() => m.len(),
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
        if is_recorded(&path, expected) {
            return Ok(InPlace::Good);
        }
        let label = format!("checking {}", file.path);
        Ok(if file_matches(&path, len, expected, &label, progress)? {
            InPlace::Good
        } else {
            InPlace::Stale
        })
    }
}

/// Writes `contents` to `path` through a temporary file in the same folder and a rename.
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), PullError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        // create_new: never through something already there (a planted link).
        let mut f = File::options().write(true).create_new(true).open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
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
    let not_cached = |missing: Missing| PullError::NotCached {
        repo: repo.to_string(),
        quant: quant.to_string(),
        dir: dir.clone(),
        missing,
    };
    let Some(listing) = cache.read_listing(repo)? else {
        return Err(not_cached(Missing::Listing));
    };
    let sel = select(&listing, repo, quant)?;
    for f in [&sel.model, &sel.mmproj] {
        match cache.check(&dir, f, progress)? {
            InPlace::Good => {}
            InPlace::Missing => return Err(not_cached(Missing::File(f.path.clone()))),
            InPlace::Stale => return Err(not_cached(Missing::Mismatch(f.path.clone()))),
        }
    }
    Ok(Pair::new(repo, quant, dir, &sel, [false, false]))
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;
    use crate::{NoProgress, DEFAULT_QUANT, DEFAULT_REPO};

    #[test]
    fn the_cache_finds_verified_files_only() {
        let home = tempfile::tempdir().unwrap();
        let cache = Cache::new(home.path());
        let r = Repo::parse(DEFAULT_REPO).unwrap();
        let dir = cache.repo_dir(&r);
        let sha = |b: &[u8]| format!("{:x}", Sha256::digest(b));
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
        assert!(
            matches!(&err, PullError::NotCached { missing: Missing::Listing, quant, .. }
                if quant == DEFAULT_QUANT),
            "{err}"
        );
        assert!(err.to_string().contains("is not in the cache"), "{err}");
        cache.write_listing(&r, &listing).unwrap();
        let err = cached(&cache, &r, "Q8_0", &mut NoProgress).unwrap_err();
        assert!(matches!(err, PullError::QuantNotFound { .. }), "{err}");
        fs::write(dir.join(&model.path), b"model").unwrap();
        let err = cached(&cache, &r, DEFAULT_QUANT, &mut NoProgress).unwrap_err();
        assert!(err.to_string().contains("mmproj-model-f16.gguf"), "{err}");
        // right size, wrong bytes: refused
        fs::write(dir.join(&mmproj.path), b"MMPROJ").unwrap();
        let err = cached(&cache, &r, DEFAULT_QUANT, &mut NoProgress).unwrap_err();
        assert!(
            matches!(
                err,
                PullError::NotCached {
                    missing: Missing::Mismatch(_),
                    ..
                }
            ),
            "{err}"
        );
        // right bytes: accepted, and the hash is recorded once
        fs::write(dir.join(&mmproj.path), b"mmproj").unwrap();
        let pair = cached(&cache, &r, DEFAULT_QUANT, &mut NoProgress).unwrap();
        assert_eq!(pair.model.path, dir.join("ggml-model-Q4_K_M.gguf"));
        assert_eq!(pair.mmproj.path, dir.join("mmproj-model-f16.gguf"));
        let sidecar = fs::read_to_string(dir.join("mmproj-model-f16.gguf.sha256")).unwrap();
        assert!(
            sidecar.starts_with(&format!("{} 6 ", sha(b"mmproj"))),
            "{sidecar:?}"
        );
        // A cached file changed after it was verified (same size) is no longer trusted.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(dir.join(&mmproj.path), b"MMPROJ").unwrap();
        let err = cached(&cache, &r, DEFAULT_QUANT, &mut NoProgress).unwrap_err();
        assert!(
            matches!(
                err,
                PullError::NotCached {
                    missing: Missing::Mismatch(_),
                    ..
                }
            ),
            "{err}"
        );
        // A symbolic link in place of a file is never trusted, whatever it points to.
        #[cfg(unix)]
        {
            let real = home.path().join("real-mmproj");
            fs::write(&real, b"mmproj").unwrap();
            fs::remove_file(dir.join(&mmproj.path)).unwrap();
            std::os::unix::fs::symlink(&real, dir.join(&mmproj.path)).unwrap();
            let err = cached(&cache, &r, DEFAULT_QUANT, &mut NoProgress).unwrap_err();
            assert!(
                matches!(
                    err,
                    PullError::NotCached {
                        missing: Missing::Mismatch(_),
                        ..
                    }
                ),
                "{err}"
            );
        }
    }
}
