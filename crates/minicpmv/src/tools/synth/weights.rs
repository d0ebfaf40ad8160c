//! Deterministic weights: one PRNG stream per tensor, values on a 65536-step grid, written in
//! chunks without changing the stream.

use super::{FileRole, Init, TensorSpec};
use crate::gguf::GgmlType;

pub(super) fn elem_size(ty: GgmlType) -> u64 {
    match ty {
        GgmlType::F16 => 2,
        _ => 4,
    }
}

/// SplitMix64 step (seeding).
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a, 64 bit.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01B3);
        }
        h ^= 0xFF;
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// xoshiro256++ (Blackman & Vigna), a small fast PRNG with a fixed, documented output.
#[derive(Debug, Clone)]
struct Xoshiro256pp {
    s: [u64; 4],
}

impl Xoshiro256pp {
    fn new(seed: u64) -> Self {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Xoshiro256pp { s }
    }

    #[inline(always)]
    fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }
}

/// The value of a 16-bit draw: the midpoint of step `r` of a uniform on `[-a, a]`,
/// `a = std * sqrt(3)`.
fn grid_value(r: u16, std: f32) -> f32 {
    let a = std * 3f32.sqrt();
    ((f32::from(r) + 0.5) / 65536.0 * 2.0 - 1.0) * a
}

/// Per-std lookup tables from a 16-bit draw to the output bytes (little-endian).
#[derive(Default)]
pub(super) struct TableCache {
    f16: Vec<(u32, Vec<[u8; 2]>)>,
    f32: Vec<(u32, Vec<[u8; 4]>)>,
}

impl TableCache {
    fn f16(&mut self, std: f32) -> &[[u8; 2]] {
        let key = std.to_bits();
        let pos = match self.f16.iter().position(|(k, _)| *k == key) {
            Some(p) => p,
            None => {
                let table = (0..=u16::MAX)
                    .map(|r| half::f16::from_f32(grid_value(r, std)).to_le_bytes())
                    .collect();
                self.f16.push((key, table));
                self.f16.len() - 1
            }
        };
        &self.f16[pos].1
    }

    fn f32(&mut self, std: f32) -> &[[u8; 4]] {
        let key = std.to_bits();
        let pos = match self.f32.iter().position(|(k, _)| *k == key) {
            Some(p) => p,
            None => {
                let table = (0..=u16::MAX)
                    .map(|r| grid_value(r, std).to_le_bytes())
                    .collect();
                self.f32.push((key, table));
                self.f32.len() - 1
            }
        };
        &self.f32[pos].1
    }
}

/// Produces one tensor's bytes sequentially, in chunks of any size that is a multiple of the
/// element size; the output does not depend on the chunking.
pub(super) struct Generator<'a> {
    kind: GenKind<'a>,
    /// Index of the next element.
    pos: u64,
}

enum GenKind<'a> {
    RandomF16 {
        rng: Xoshiro256pp,
        lanes: u64,
        n_lanes: u32,
        table: &'a [[u8; 2]],
    },
    RandomF32 {
        rng: Xoshiro256pp,
        lanes: u64,
        n_lanes: u32,
        table: &'a [[u8; 4]],
    },
    Const(Vec<u8>),
    SinCos {
        dim: u64,
        side: u64,
        f16: bool,
    },
}

impl<'a> Generator<'a> {
    pub(super) fn new(
        t: &TensorSpec,
        role: FileRole,
        seed: u64,
        tables: &'a mut TableCache,
    ) -> Self {
        let f16 = t.ty == GgmlType::F16;
        let kind = match t.init {
            Init::Random { std } => {
                let stream = fnv1a(&[role.tag().as_bytes(), t.name.as_bytes()]);
                let rng = Xoshiro256pp::new(seed ^ stream);
                if f16 {
                    GenKind::RandomF16 {
                        rng,
                        lanes: 0,
                        n_lanes: 0,
                        table: tables.f16(std),
                    }
                } else {
                    GenKind::RandomF32 {
                        rng,
                        lanes: 0,
                        n_lanes: 0,
                        table: tables.f32(std),
                    }
                }
            }
            Init::Const(c) => GenKind::Const(if f16 {
                half::f16::from_f32(c).to_le_bytes().to_vec()
            } else {
                c.to_le_bytes().to_vec()
            }),
            Init::SinCos2d { dim, side } => GenKind::SinCos { dim, side, f16 },
        };
        Generator { kind, pos: 0 }
    }

    /// Fills `buf` with the next `buf.len() / elem_size` elements.
    pub(super) fn fill(&mut self, buf: &mut [u8]) {
        let size = match &mut self.kind {
            GenKind::RandomF16 {
                rng,
                lanes,
                n_lanes,
                table,
            } => {
                fill_random(buf, rng, lanes, n_lanes, table);
                2
            }
            GenKind::RandomF32 {
                rng,
                lanes,
                n_lanes,
                table,
            } => {
                fill_random(buf, rng, lanes, n_lanes, table);
                4
            }
            GenKind::Const(bytes) => {
                for out in buf.chunks_exact_mut(bytes.len()) {
                    out.copy_from_slice(bytes);
                }
                bytes.len()
            }
            GenKind::SinCos { dim, side, f16 } => {
                let size = if *f16 { 2 } else { 4 };
                for (k, out) in buf.chunks_exact_mut(size).enumerate() {
                    let v = sincos_value(self.pos + k as u64, *dim, *side);
                    if *f16 {
                        out.copy_from_slice(&half::f16::from_f32(v).to_le_bytes());
                    } else {
                        out.copy_from_slice(&v.to_le_bytes());
                    }
                }
                size
            }
        };
        self.pos += (buf.len() / size) as u64;
    }
}

/// Fills `buf` with elements of `N` bytes, one per 16-bit lane of the PRNG output (4 lanes per
/// draw, low lane first); unused lanes carry over to the next call, so chunking does not change
/// the output.
fn fill_random<const N: usize>(
    buf: &mut [u8],
    rng: &mut Xoshiro256pp,
    lanes: &mut u64,
    n_lanes: &mut u32,
    table: &[[u8; N]],
) {
    let n = buf.len() / N;
    let mut i = 0;
    while i < n && *n_lanes > 0 {
        buf[i * N..(i + 1) * N].copy_from_slice(&table[(*lanes & 0xFFFF) as usize]);
        *lanes >>= 16;
        *n_lanes -= 1;
        i += 1;
    }
    let mut quads = buf[i * N..n * N].chunks_exact_mut(4 * N);
    for q in &mut quads {
        let r = rng.next_u64();
        q[..N].copy_from_slice(&table[(r & 0xFFFF) as usize]);
        q[N..2 * N].copy_from_slice(&table[((r >> 16) & 0xFFFF) as usize]);
        q[2 * N..3 * N].copy_from_slice(&table[((r >> 32) & 0xFFFF) as usize]);
        q[3 * N..].copy_from_slice(&table[(r >> 48) as usize]);
    }
    let tail = quads.into_remainder();
    if !tail.is_empty() {
        let mut r = rng.next_u64();
        let m = tail.len() / N;
        for out in tail.chunks_exact_mut(N) {
            out.copy_from_slice(&table[(r & 0xFFFF) as usize]);
            r >>= 16;
        }
        *lanes = r;
        *n_lanes = 4 - m as u32;
    }
}

/// Element `k` of the converter's `get_2d_sincos_pos_embed(dim, (side, side))`, stored
/// `[dim, side*side]` (row `m = i*side + j` for grid row `i`, column `j`): the first half of a
/// row encodes the column `j`, the second half the row `i`; each half is `sin` then `cos` of
/// `pos * 10000^(-k/(dim/4))`.
pub(super) fn sincos_value(k: u64, dim: u64, side: u64) -> f32 {
    let m = k / dim;
    let e = k % dim;
    let (i, j) = (m / side, m % side);
    let half = dim / 2;
    let quarter = dim / 4;
    let (pos, e) = if e < half { (j, e) } else { (i, e - half) };
    let (f, idx) = if e < quarter {
        (0, e)
    } else {
        (1, e - quarter)
    };
    let omega = 1.0 / 10000f64.powf(idx as f64 / quarter as f64);
    let x = pos as f64 * omega;
    (if f == 0 { x.sin() } else { x.cos() }) as f32
}
