//! The content key of a cache entry: what an image's embeddings depend on, hashed.
//!
//! [`embd_key`] hashes the image content ([`image_digest`]), the projector identity
//! ([`ProjectorId`]), the slice settings, the format version and the producer; see each item
//! for what it covers and why.

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use sha2::digest::Output;
use sha2::{Digest, Sha256};

use super::{EmbdCacheError, FORMAT_VERSION};
use crate::gguf::GgufFile;
use crate::vision::{LoadedImage, SliceParams};

/// Tensor-data blocks sampled by [`ProjectorId::of_gguf`], evenly spaced (plus one at the end).
const SAMPLE_BLOCKS: u64 = 32;
/// Bytes read per sampled block.
const SAMPLE_BYTES: u64 = 64 * 1024;

/// The key of one cache entry: a SHA-256 digest from [`embd_key`]. Its 64 lower-case hex
/// digits ([`EmbdKey::hex`]) name the entry's disk file.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EmbdKey(
    /// The 32 digest bytes.
    pub [u8; 32],
);

impl EmbdKey {
    /// Lower-case hex, 64 digits: the disk file's stem.
    pub fn hex(&self) -> String {
        format!("{:x}", Output::<Sha256>::from(self.0))
    }
}

impl fmt::Debug for EmbdKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EmbdKey({:.16x})", Output::<Sha256>::from(self.0))
    }
}

/// The identity of an mmproj file: a SHA-256 over its size, its whole GGUF header and a sample
/// of its tensor data ([`ProjectorId::of_gguf`]).
///
/// It is content-based, so a renamed, copied or touched file still hits (path + size + mtime
/// would miss there, and would wrongly hit for a file replaced with `cp -p`/`rsync -t`), and
/// much cheaper than hashing a whole 1 GB file at every start. Two projectors with the same
/// metadata whose weights differ only outside every sampled block would collide; any
/// fine-tune or re-quantization changes the sampled blocks.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProjectorId(
    /// The 32 digest bytes.
    pub [u8; 32],
);

impl fmt::Debug for ProjectorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProjectorId({:.16x})", Output::<Sha256>::from(self.0))
    }
}

impl ProjectorId {
    /// Reads the GGUF header of the projector at `path` and identifies the file (see
    /// [`ProjectorId::of_gguf`]).
    pub fn of_file(path: &Path) -> Result<ProjectorId, EmbdCacheError> {
        let gguf = GgufFile::open(path).map_err(EmbdCacheError::ProjectorFile)?;
        ProjectorId::of_gguf(&gguf)
    }

    /// Identifies an already parsed GGUF file: SHA-256 of the file size, every byte of the
    /// header (metadata and tensor-info table, i.e. `[0, data_offset)`) and 64 KiB of tensor
    /// data at 32 evenly spaced offsets plus the last 64 KiB. That is about 2 MiB read, a few
    /// milliseconds, for a 1 GB mmproj.
    pub fn of_gguf(gguf: &GgufFile) -> Result<ProjectorId, EmbdCacheError> {
        let path = &gguf.path;
        let io = |source| EmbdCacheError::ProjectorRead {
            path: path.clone(),
            source,
        };
        let mut f = File::open(path).map_err(io)?;
        let size = f.metadata().map_err(io)?.len();
        let mut h = Sha256::new();
        h.update(b"minicpmv-mmproj-id\0");
        h.update(size.to_le_bytes());
        let header_len = gguf.data_offset.min(size);
        let mut header = Vec::new();
        (&mut f)
            .take(header_len)
            .read_to_end(&mut header)
            .map_err(io)?;
        h.update(&header);
        let data_len = size - header_len;
        let mut offsets: Vec<u64> = (0..SAMPLE_BLOCKS)
            .map(|i| header_len + data_len * i / SAMPLE_BLOCKS)
            .collect();
        offsets.push(size.saturating_sub(SAMPLE_BYTES).max(header_len));
        let mut buf = Vec::with_capacity(SAMPLE_BYTES as usize);
        for off in offsets {
            f.seek(SeekFrom::Start(off)).map_err(io)?;
            buf.clear();
            (&mut f)
                .take(SAMPLE_BYTES)
                .read_to_end(&mut buf)
                .map_err(io)?;
            h.update(off.to_le_bytes());
            h.update(&buf);
        }
        Ok(ProjectorId(h.finalize().into()))
    }
}

/// SHA-256 of an image's width, height and decoded RGB pixels: the same picture in another
/// file or format hits, an edited file misses. The path is not part of it.
pub fn image_digest(img: &LoadedImage) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"minicpmv-rgb8\0");
    h.update(img.width.to_le_bytes());
    h.update(img.height.to_le_bytes());
    h.update(&img.rgb);
    h.finalize().into()
}

/// What produced the floats: this crate's version and its enabled GPU backend features,
/// because another backend can give slightly different floats.
fn producer() -> String {
    let mut s = format!("minicpmv {}", env!("CARGO_PKG_VERSION"));
    for (on, name) in [
        (cfg!(feature = "metal"), "metal"),
        (cfg!(feature = "cuda"), "cuda"),
        (cfg!(feature = "vulkan"), "vulkan"),
    ] {
        if on {
            s.push('+');
            s.push_str(name);
        }
    }
    s
}

/// The cache key of an image's embeddings: SHA-256 of, in order, a format tag
/// ([`FORMAT_VERSION`]), the producer (this crate's version and its GPU backend features), the
/// image content (`image`, from [`image_digest`]), the projector identity and the slice
/// settings that change the projector input (`image_size`, `patch_size`, `max_slices`, and
/// `merge` when it is not 1, so that resampler keys stay as they were).
pub fn embd_key(image: &[u8; 32], projector: &ProjectorId, params: &SliceParams) -> EmbdKey {
    let mut h = Sha256::new();
    h.update(b"minicpmv-embd-key\0");
    h.update(FORMAT_VERSION.to_le_bytes());
    let p = producer();
    h.update((p.len() as u64).to_le_bytes());
    h.update(p.as_bytes());
    h.update(image);
    h.update(projector.0);
    h.update(params.image_size.to_le_bytes());
    h.update(params.patch_size.to_le_bytes());
    h.update(params.max_slices.to_le_bytes());
    if params.merge != 1 {
        h.update(b"merge");
        h.update(params.merge.to_le_bytes());
    }
    EmbdKey(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_depends_on_every_input() {
        let img = [7u8; 32];
        let pj = ProjectorId([9u8; 32]);
        let p = SliceParams::default();
        let k = embd_key(&img, &pj, &p);
        assert_eq!(k, embd_key(&img, &pj, &p));
        assert_ne!(k, embd_key(&[8u8; 32], &pj, &p));
        assert_ne!(k, embd_key(&img, &ProjectorId([1u8; 32]), &p));
        for q in [
            SliceParams { max_slices: 4, ..p },
            SliceParams {
                image_size: 224,
                ..p
            },
            SliceParams {
                patch_size: 16,
                ..p
            },
            SliceParams { merge: 2, ..p },
            SliceParams { merge: 4, ..p },
        ] {
            assert_ne!(k, embd_key(&img, &pj, &q));
        }
    }

    #[test]
    fn hex_is_the_64_lower_case_digits_and_debug_the_first_16() {
        let mut bytes = [0u8; 32];
        bytes[0] = 0xab;
        bytes[1] = 0x05;
        bytes[31] = 0xf0;
        let k = EmbdKey(bytes);
        let hex = k.hex();
        assert_eq!(hex.len(), 64);
        assert!(hex.starts_with("ab05000000"), "{hex}");
        assert!(hex.ends_with("00f0"), "{hex}");
        assert_eq!(format!("{k:?}"), "EmbdKey(ab05000000000000)");
        assert_eq!(
            format!("{:?}", ProjectorId(bytes)),
            "ProjectorId(ab05000000000000)"
        );
    }

    #[test]
    fn image_digest_covers_size_and_pixels() {
        let a = LoadedImage {
            path: "a.png".into(),
            width: 2,
            height: 3,
            rgb: vec![1; 18],
        };
        let mut b = a.clone();
        b.path = "elsewhere.jpg".into();
        assert_eq!(image_digest(&a), image_digest(&b));
        b.width = 3;
        b.height = 2;
        assert_ne!(image_digest(&a), image_digest(&b));
        let mut c = a.clone();
        c.rgb[17] = 2;
        assert_ne!(image_digest(&a), image_digest(&c));
    }
}
