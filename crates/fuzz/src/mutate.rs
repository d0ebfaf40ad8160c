//! A deterministic random source and byte-level mutations.

/// xorshift64*: small, fast, and the same sequence on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for iteration `i` of a run seeded with `seed` (the input of an iteration
    /// depends on nothing else, so any failure is replayed from its number).
    pub fn for_iteration(seed: u64, target: &str, i: u64) -> Rng {
        let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
        for b in target.bytes().chain(i.to_le_bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Rng::new(h)
    }

    /// A generator from a seed (0 is replaced: xorshift must not start at 0).
    pub fn new(seed: u64) -> Rng {
        let mut r = Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        });
        r.next_u64();
        r
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Values that break code: zero, one, powers of two and their neighbours, sign boundaries.
pub const INTERESTING_U64: [u64; 16] = [
    0,
    1,
    2,
    3,
    7,
    64,
    255,
    512,
    513,
    4096,
    65_536,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    1 << 40,
    u64::MAX,
];

/// Applies 1 to 4 random byte-level mutations to `input` (splicing from `others`).
pub fn mutate_bytes(rng: &mut Rng, input: &[u8], others: &[Vec<u8>]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        mutate_once(rng, &mut out, others);
    }
    out
}

/// A position biased towards the start, where headers live.
fn position(rng: &mut Rng, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    if rng.one_in(2) {
        rng.below(len.min(256))
    } else {
        rng.below(len)
    }
}

fn mutate_once(rng: &mut Rng, out: &mut Vec<u8>, others: &[Vec<u8>]) {
    let len = out.len();
    match rng.below(10) {
        0 if len > 0 => {
            let at = position(rng, len);
            out[at] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let at = position(rng, len);
            out[at] = rng.next_u64() as u8;
        }
        2 if len >= 4 => {
            let at = position(rng, len - 3);
            let v = *rng.pick(&INTERESTING_U64) as u32;
            out[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        3 if len >= 8 => {
            let at = position(rng, len - 7);
            let v = *rng.pick(&INTERESTING_U64);
            out[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        4 => {
            let at = position(rng, len + 1);
            let n = 1 + rng.below(16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            out.splice(at..at, bytes);
        }
        5 if len > 1 => {
            let at = position(rng, len);
            let n = 1 + rng.below((len - at).min(64));
            out.drain(at..at + n);
        }
        6 if len > 1 => {
            let at = rng.below(len);
            out.truncate(at);
        }
        7 if !others.is_empty() => {
            let other = rng.pick(others);
            if !other.is_empty() {
                let from = rng.below(other.len());
                let n = 1 + rng.below((other.len() - from).min(256));
                let at = position(rng, len + 1);
                out.splice(at..at, other[from..from + n].iter().copied());
            }
        }
        8 if len > 1 => {
            let from = rng.below(len);
            let n = 1 + rng.below((len - from).min(64));
            let chunk = out[from..from + n].to_vec();
            let at = position(rng, len + 1);
            out.splice(at..at, chunk);
        }
        _ => {
            if let Some(b) = out.last_mut() {
                *b = b.wrapping_add(1);
            } else {
                out.push(rng.next_u64() as u8);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterations_are_reproducible() {
        let a: Vec<u64> = (0..3)
            .map(|i| Rng::for_iteration(7, "gguf", i).next_u64())
            .collect();
        let b: Vec<u64> = (0..3)
            .map(|i| Rng::for_iteration(7, "gguf", i).next_u64())
            .collect();
        assert_eq!(a, b);
        assert_ne!(a[0], a[1]);
        assert_ne!(
            Rng::for_iteration(7, "gguf", 0).next_u64(),
            Rng::for_iteration(7, "image", 0).next_u64()
        );
    }

    #[test]
    fn mutations_change_inputs_and_stay_in_bounds() {
        let mut rng = Rng::new(1);
        let seed = b"GGUF\x03\x00\x00\x00 some header bytes".to_vec();
        let mut changed = 0;
        for _ in 0..10_000 {
            let m = mutate_bytes(&mut rng, &seed, std::slice::from_ref(&seed));
            changed += usize::from(m != seed);
            assert!(m.len() <= seed.len() * 2 + 64 * 4 + 256 * 4);
        }
        assert!(changed > 9_000, "{changed}");
        // Empty inputs too.
        for _ in 0..100 {
            mutate_bytes(&mut rng, &[], &[]);
        }
    }
}
