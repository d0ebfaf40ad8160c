//! The `.embd` file format: one cache entry as bytes ([`encode_file`], whose docs give the
//! layout) and back, verified ([`decode_file`]). Pure functions, no I/O.

use sha2::{Digest, Sha256};

use super::{EmbdKey, FORMAT_VERSION};
use crate::encode::ImageEmbeddings;
use crate::vision::{SlicePlan, SliceRect};

/// The first 8 bytes of every cache file.
const MAGIC: &[u8; 8] = b"MCVEMBD\0";

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// An optional size as stored: `(0, 0)` for `None`.
fn pair(p: Option<(u32, u32)>) -> (u32, u32) {
    p.unwrap_or((0, 0))
}

/// The bytes of the cache file of `key` holding `emb`. Little-endian throughout:
///
/// ```text
/// magic           8 bytes  "MCVEMBD\0"
/// format version  u32      FORMAT_VERSION
/// key             32 bytes (must equal the file name's)
/// n_embd          u32      width of one embedding
/// n_chunks        u32      overview + slices
/// plan            10 x u32 source w,h; overview w,h; grid cols,rows; refine w,h; slice w,h
///                          (0,0 for an absent grid/refine/slice)
/// n_slices        u32, then n_slices x (x, y, w, h) u32
/// chunk lengths   n_chunks x u64, floats per chunk
/// data            f32 x sum(chunk lengths)
/// checksum        32 bytes SHA-256 of everything before it
/// ```
///
/// The per-chunk encode times ([`ImageEmbeddings::encode_secs`]) are not stored.
pub fn encode_file(key: &EmbdKey, emb: &ImageEmbeddings) -> Vec<u8> {
    let n_floats: usize = emb.chunks.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(200 + emb.plan.slices.len() * 16 + n_floats * 4);
    out.extend_from_slice(MAGIC);
    put_u32(&mut out, FORMAT_VERSION);
    out.extend_from_slice(&key.0);
    put_u32(&mut out, emb.n_embd as u32);
    put_u32(&mut out, emb.chunks.len() as u32);
    let p = &emb.plan;
    for (a, b) in [
        p.source,
        p.overview,
        pair(p.grid),
        pair(p.refine),
        pair(p.slice),
    ] {
        put_u32(&mut out, a);
        put_u32(&mut out, b);
    }
    put_u32(&mut out, p.slices.len() as u32);
    for r in &p.slices {
        for v in [r.x, r.y, r.w, r.h] {
            put_u32(&mut out, v);
        }
    }
    for c in &emb.chunks {
        out.extend_from_slice(&(c.len() as u64).to_le_bytes());
    }
    for c in &emb.chunks {
        for v in c {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    let sum: [u8; 32] = Sha256::digest(&out).into();
    out.extend_from_slice(&sum);
    out
}

/// A bounds-checked reader over a byte slice.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| "the file is truncated".to_string())?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, String> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }

    fn pair(&mut self) -> Result<(u32, u32), String> {
        Ok((self.u32()?, self.u32()?))
    }
}

/// A stored size back to an optional one: `(0, 0)` is `None`.
fn opt(p: (u32, u32)) -> Option<(u32, u32)> {
    (p != (0, 0)).then_some(p)
}

/// Parses and verifies the bytes of the cache file of `key` (the layout of [`encode_file`]).
/// `Err` says what is wrong, in words for a warning: truncated, bad magic, checksum mismatch,
/// another format version or key, or counts and lengths that contradict each other. The
/// result has empty `encode_secs`; whether it fits the caller's image is checked separately
/// ([`Expected`](super::Expected)).
pub fn decode_file(bytes: &[u8], key: &EmbdKey) -> Result<ImageEmbeddings, String> {
    if bytes.len() < MAGIC.len() + 4 + 32 + 32 {
        return Err(format!("the file is truncated ({} bytes)", bytes.len()));
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err("not an embedding cache file (bad magic)".into());
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    let actual: [u8; 32] = Sha256::digest(body).into();
    if actual.as_slice() != sum {
        return Err("checksum mismatch (truncated or corrupt)".into());
    }
    let mut c = Cursor { b: body, pos: 0 };
    c.take(MAGIC.len())?;
    let version = c.u32()?;
    if version != FORMAT_VERSION {
        return Err(format!(
            "format version {version}, this build reads {FORMAT_VERSION}"
        ));
    }
    if c.take(32)? != key.0.as_slice() {
        return Err("it holds another key than its name says".into());
    }
    let n_embd = c.u32()? as usize;
    let n_chunks = c.u32()? as usize;
    let source = c.pair()?;
    let overview = c.pair()?;
    let grid = opt(c.pair()?);
    let refine = opt(c.pair()?);
    let slice = opt(c.pair()?);
    let n_slices = c.u32()? as usize;
    if n_slices.saturating_mul(16) > body.len() || n_chunks.saturating_mul(8) > body.len() {
        return Err("impossible counts in the header".into());
    }
    // One chunk for the overview and one per slice, and slices only with a grid of as many
    // cells (found by the embd-cache fuzz target: a plan of 2 chunks holding 1 was read).
    let cells = grid.map_or(0, |(cols, rows)| cols as usize * rows as usize);
    if n_chunks != 1 + n_slices || cells != n_slices {
        return Err(format!(
            "{n_chunks} chunks and {n_slices} slices for a grid of {cells} cells"
        ));
    }
    let mut slices = Vec::with_capacity(n_slices);
    for _ in 0..n_slices {
        slices.push(SliceRect {
            x: c.u32()?,
            y: c.u32()?,
            w: c.u32()?,
            h: c.u32()?,
        });
    }
    let mut lens = Vec::with_capacity(n_chunks);
    for _ in 0..n_chunks {
        lens.push(usize::try_from(c.u64()?).map_err(|_| "chunk length overflow".to_string())?);
    }
    let total: usize = lens
        .iter()
        .try_fold(0usize, |a, &l| a.checked_add(l))
        .ok_or_else(|| "chunk length overflow".to_string())?;
    if total.checked_mul(4) != Some(body.len() - c.pos) {
        return Err(format!(
            "the data holds {} bytes, the header announces {total} floats",
            body.len() - c.pos
        ));
    }
    if n_embd == 0 || lens.iter().any(|l| l % n_embd != 0) {
        return Err(format!(
            "chunk lengths {lens:?} are not multiples of n_embd {n_embd}"
        ));
    }
    let mut chunks = Vec::with_capacity(n_chunks);
    for len in lens {
        let raw = c.take(len * 4)?;
        chunks.push(
            raw.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        );
    }
    Ok(ImageEmbeddings {
        plan: SlicePlan {
            source,
            overview,
            grid,
            refine,
            slice,
            slices,
        },
        chunks,
        n_embd,
        encode_secs: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{key, sample};
    use super::*;

    #[test]
    fn file_round_trip_and_every_truncation_is_refused() {
        let e = sample(1000, 700, 8, 4, 1.0);
        assert_eq!(e.plan.n_chunks(), 5);
        let bytes = encode_file(&key(1), &e);
        let back = decode_file(&bytes, &key(1)).unwrap();
        assert_eq!(back, e);
        assert!(decode_file(&bytes, &key(2)).is_err(), "wrong key accepted");
        for cut in 0..bytes.len() {
            assert!(decode_file(&bytes[..cut], &key(1)).is_err(), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 1;
        assert!(decode_file(&flipped, &key(1)).is_err());
        // overview-only plan: absent grid/refine/slice survive as None
        let small = sample(300, 200, 8, 4, 2.0);
        let b = encode_file(&key(3), &small);
        assert_eq!(decode_file(&b, &key(3)).unwrap(), small);
    }
}
