//! Model downloads: a language model + mmproj pair from a Hugging Face repository into a local
//! cache folder.
//!
//! - The repository listing (`GET {endpoint}/api/models/{owner}/{name}/tree/main`, see
//!   [`Hub::listing`]) gives every file's size and, for files stored with Git LFS, its sha256
//!   (`lfs.oid`). [`select()`] picks the pair from it: the language model is the `.gguf` whose
//!   name contains the quant (case-insensitive) and does not start with `mmproj`; the projector
//!   is the `.gguf` starting with `mmproj` (the `f16` one when there are several).
//! - Files come from `GET {endpoint}/{owner}/{name}/resolve/main/{file}` (redirects followed)
//!   into `{file}.part`, resumed with `Range: bytes=N-` (a `206` appends, a `200` starts over),
//!   hashed while they arrive, checked against the listing's sha256 and renamed into place. A
//!   mismatch deletes the partial file. A `{file}.sha256` sidecar records a verified hash, so a
//!   file in place is not hashed again on every run. [`fetch_pair`] does this for a pair,
//!   [`pull()`] lists, selects and fetches.
//! - Cache layout: `{home}/models/{owner}--{name}/{file}`, with the listing used written next to
//!   the files as `listing.json` (same shape as the hub's), so [`cached`] can find a pair without
//!   the network.
//!
//! [`cached`] never opens a socket; only [`Hub`] does. The crate reads no environment variable
//! and knows no command line: its errors ([`PullError`]) state the facts, with the values as
//! fields, for the caller to word in terms of its own flags.
//!
//! Modules, all private (everything is re-exported here): `repo` (names, URLs, the listing),
//! `select` (the pair for a quant), `http` ([`Hub`], ranges), `download` (`.part` files, the
//! pair), `verify` (sha256, sidecars), `cache` (layout, what is ready), `progress`, `error`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cache;
mod download;
mod error;
mod http;
mod progress;
mod repo;
mod select;
mod verify;

pub use cache::{cached, Cache, CachedFile, Pair, LISTING_FILE};
pub use download::{fetch_pair, pull};
pub use error::{Missing, PullError};
pub use http::{resume_decision, Hub, Resume};
pub use progress::{NoProgress, Progress};
pub use repo::{
    normalize_endpoint, parse_listing, resolve_url, tree_url, Repo, RepoFile, DEFAULT_ENDPOINT,
    DEFAULT_REPO, REVISION,
};
pub use select::{quant_of, select, PairFiles, DEFAULT_QUANT};
