//! Downloads: one file into `{file}.part` (resumed with `Range: bytes=N-`), hashed while it
//! arrives, checked against the listing's sha256 and renamed into place; and a whole pair
//! into the cache.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use ureq::http::Response;
use ureq::Body;

use crate::cache::InPlace;
use crate::error::io_err;
use crate::repo::resolve_url;
use crate::verify::{self, hash_prefix, hex_digest, CHUNK};
use crate::{
    resume_decision, select, Cache, Hub, Pair, PairFiles, Progress, PullError, Repo, RepoFile,
    Resume,
};

/// `{path}.part`.
fn part_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

/// The length of the partial file kept from an earlier download of a `size`-byte file: 0 when
/// there is none, or when it is longer than the file (then it is deleted). A symbolic link (or
/// anything but a regular file) there is refused, never followed.
fn partial_len(part: &Path, size: u64) -> Result<u64, PullError> {
    let have = match fs::symlink_metadata(part) {
        Ok(m) if m.file_type().is_file() => m.len(),
        Ok(_) => {
            return Err(PullError::NotRegularFile {
                path: part.to_path_buf(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io_err(part)(e)),
    };
    if have > size {
        fs::remove_file(part).map_err(io_err(part))?;
        return Ok(0);
    }
    Ok(have)
}

impl Hub {
    /// Downloads `file` of `repo` into `dir` (resuming `{file}.part`), checks its sha256 and
    /// renames it into place.
    pub(crate) fn download(
        &self,
        repo: &Repo,
        file: &RepoFile,
        dir: &Path,
        progress: &mut dyn Progress,
    ) -> Result<(), PullError> {
        let url = resolve_url(self.endpoint(), repo, &file.path);
        let dest = dir.join(&file.path);
        let part = part_path(&dest);
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let have = partial_len(&part, file.size)?;
        let mut hasher = Sha256::new();
        if have == file.size && have > 0 {
            // Complete but never verified (stopped before the rename).
            let label = format!("checking {}", file.path);
            hash_prefix(&part, have, &mut hasher, &label, progress)?;
        } else {
            self.fetch_into(&url, file, &part, have, &mut hasher, progress)?;
        }
        put_in_place(file, &part, &dest, hasher)
    }

    /// Asks for `url` from byte `have` and writes the body into `part` (appended on a `206`,
    /// from the start on a `200`), hashing everything `part` then holds.
    fn fetch_into(
        &self,
        url: &str,
        file: &RepoFile,
        part: &Path,
        mut have: u64,
        hasher: &mut Sha256,
        progress: &mut dyn Progress,
    ) -> Result<(), PullError> {
        let resp = self.get(url, have)?;
        let mut out = match decide(&resp, have, url, part)? {
            Resume::Append => {
                let label = format!("checking the partial {}", file.path);
                hash_prefix(part, have, hasher, &label, progress)?;
                no_follow(OpenOptions::new().append(true))
                    .open(part)
                    .map_err(io_err(part))?
            }
            Resume::Restart => {
                have = 0;
                no_follow(OpenOptions::new().write(true).create(true).truncate(true))
                    .open(part)
                    .map_err(io_err(part))?
            }
        };
        let mut reader = resp.into_body().into_reader();
        progress.start(&format!("downloading {}", file.path), file.size, have);
        let result = copy_body(
            &mut reader,
            &mut out,
            hasher,
            &mut have,
            file.size,
            progress,
        );
        progress.finish();
        let flushed = out.sync_all();
        drop(out);
        let interrupted = |source| PullError::Interrupted {
            url: url.to_string(),
            part: part.to_path_buf(),
            have,
            size: file.size,
            source,
        };
        match result {
            Ok(()) => {}
            Err(Copy::Read(e)) => return Err(interrupted(Some(Box::new(e)))),
            Err(Copy::Write(e)) => return Err(io_err(part)(e)),
            Err(Copy::TooLong) => {
                let _ = fs::remove_file(part);
                return Err(PullError::TooLong {
                    url: url.to_string(),
                    size: file.size,
                });
            }
        }
        flushed.map_err(io_err(part))?;
        if have < file.size {
            return Err(interrupted(None));
        }
        Ok(())
    }
}

/// `options` that refuse to open a symbolic link (`O_NOFOLLOW` on Unix): a link planted at the
/// partial file between our check and the open makes the open fail instead of writing through
/// it.
fn no_follow(options: &mut OpenOptions) -> &mut OpenOptions {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NOFOLLOW);
    }
    options
}

/// How to go on after the answer `resp` to a request from byte `have`. An answer that is not
/// the file, or a range that does not fit the partial file, is an error (the partial file is
/// deleted when the server refused the range or sent another one).
fn decide(resp: &Response<Body>, have: u64, url: &str, part: &Path) -> Result<Resume, PullError> {
    let status = resp.status().as_u16();
    let range = resp
        .headers()
        .get("content-range")
        .and_then(|v| v.to_str().ok());
    match resume_decision(status, have, range, url) {
        Ok(Some(d)) => Ok(d),
        Ok(None) => {
            if status == 416 {
                let _ = fs::remove_file(part);
            }
            Err(PullError::Http {
                url: url.to_string(),
                status,
            })
        }
        Err(e) => {
            let _ = fs::remove_file(part);
            Err(e)
        }
    }
}

/// Checks the hash of the complete `part` against the listing's, renames it to `dest` and
/// records the hash; a mismatch deletes `part`.
fn put_in_place(
    file: &RepoFile,
    part: &Path,
    dest: &Path,
    hasher: Sha256,
) -> Result<(), PullError> {
    let actual = hex_digest(hasher);
    if let Some(expected) = &file.sha256 {
        if actual != *expected {
            fs::remove_file(part).map_err(io_err(part))?;
            return Err(PullError::Checksum {
                file: file.path.clone(),
                expected: expected.clone(),
                actual,
            });
        }
    }
    verify::forget(dest);
    fs::rename(part, dest).map_err(io_err(dest))?;
    verify::record(dest, &actual)
}

/// How copying a body stopped early.
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
                    verify::forget(&path);
                }
            }
            hub.download(repo, f, &dir, progress)?;
            downloaded[i] = true;
        }
        cache.write_listing(repo, listing)?;
        Ok(downloaded)
    })();
    match result {
        Ok(downloaded) => Ok(Pair::new(repo, quant, dir, sel, downloaded)),
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
