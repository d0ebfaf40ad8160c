//! Token sampling: a llama.cpp sampler chain.

use std::ptr::NonNull;

use llama_cpp_sys_2 as sys;

use super::{Context, Token};

/// Sampling settings. `temperature <= 0` means greedy decoding (argmax), which is deterministic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplerParams {
    pub temperature: f32,
    /// 0 disables top-k.
    pub top_k: i32,
    /// 1.0 disables top-p.
    pub top_p: f32,
    /// 0.0 disables min-p.
    pub min_p: f32,
    /// 1.0 disables the repetition penalty.
    pub repeat_penalty: f32,
    /// How many recent tokens the repetition penalty looks at.
    pub repeat_last_n: i32,
    pub seed: u32,
}

impl Default for SamplerParams {
    fn default() -> Self {
        SamplerParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

/// A sampling setting outside the range llama.cpp's samplers are defined for (they would run
/// with it and sample garbage, or divide by it).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field} is {value}; it must be {expected}")]
pub struct SamplingError {
    /// The setting, as [`SamplerParams`] names it (`temperature`, `top_p`, ...).
    pub field: &'static str,
    /// The value given, as text (NaN and infinities included).
    pub value: String,
    /// The range it must be in, in words.
    pub expected: &'static str,
}

impl SamplerParams {
    /// Checks every setting: `temperature` finite and >= 0 (0 is greedy), `top_k` >= 0 (0
    /// disables it), `top_p` and `min_p` in 0..=1, `repeat_penalty` finite and > 0,
    /// `repeat_last_n` >= -1 (-1: the whole context).
    pub fn check(&self) -> Result<(), SamplingError> {
        let err = |field, value: String, expected| {
            Err(SamplingError {
                field,
                value,
                expected,
            })
        };
        let t = self.temperature;
        if !(t.is_finite() && t >= 0.0) {
            return err(
                "temperature",
                t.to_string(),
                "a finite number >= 0 (0: greedy)",
            );
        }
        if self.top_k < 0 {
            return err("top_k", self.top_k.to_string(), "an integer >= 0 (0: off)");
        }
        for (field, v) in [("top_p", self.top_p), ("min_p", self.min_p)] {
            if !(0.0..=1.0).contains(&v) {
                return err(field, v.to_string(), "between 0 and 1");
            }
        }
        let r = self.repeat_penalty;
        if !(r.is_finite() && r > 0.0) {
            return err(
                "repeat_penalty",
                r.to_string(),
                "a finite number > 0 (1: off)",
            );
        }
        if self.repeat_last_n < -1 {
            return err(
                "repeat_last_n",
                self.repeat_last_n.to_string(),
                "an integer >= -1 (-1: the whole context, 0: off)",
            );
        }
        Ok(())
    }
}

/// A sampler chain. Freed on drop (the chain owns its members).
#[derive(Debug)]
pub struct Sampler {
    ptr: NonNull<sys::llama_sampler>,
}

impl Sampler {
    /// Builds the chain for a vocabulary of `n_vocab` tokens. `None` only if llama.cpp could
    /// not allocate the chain.
    pub fn new(p: &SamplerParams, n_vocab: usize) -> Option<Sampler> {
        // SAFETY: plain struct by value.
        let cp = unsafe { sys::llama_sampler_chain_default_params() };
        // SAFETY: chain_init returns a new, empty chain or null.
        let ptr = NonNull::new(unsafe { sys::llama_sampler_chain_init(cp) })?;
        let n_vocab = i32::try_from(n_vocab).unwrap_or(i32::MAX);
        let add = |s: *mut sys::llama_sampler| {
            // SAFETY: s is a freshly created sampler whose ownership passes to the chain.
            unsafe { sys::llama_sampler_chain_add(ptr.as_ptr(), s) }
        };
        // SAFETY: every init call below takes plain values and returns a new sampler.
        unsafe {
            if p.repeat_penalty != 1.0 && p.repeat_last_n != 0 {
                add(sys::llama_sampler_init_penalties(
                    n_vocab,
                    p.repeat_last_n,
                    p.repeat_penalty,
                    0.0,
                    0.0,
                ));
            }
            if p.temperature <= 0.0 {
                add(sys::llama_sampler_init_greedy());
            } else {
                if p.top_k > 0 {
                    add(sys::llama_sampler_init_top_k(p.top_k));
                }
                if p.top_p < 1.0 {
                    add(sys::llama_sampler_init_top_p(p.top_p, 1));
                }
                if p.min_p > 0.0 {
                    add(sys::llama_sampler_init_min_p(p.min_p, 1));
                }
                add(sys::llama_sampler_init_temp(p.temperature));
                add(sys::llama_sampler_init_dist(p.seed));
            }
        }
        Some(Sampler { ptr })
    }

    /// Samples the next token from the logits of output `idx` of the last decode (-1 = last),
    /// and records it for the repetition penalty.
    pub fn sample(&mut self, ctx: &Context<'_>, idx: i32) -> Token {
        // SAFETY: both handles are valid; llama_sampler_sample reads the context's logits of the
        // last decode and accepts the chosen token into the chain.
        unsafe { sys::llama_sampler_sample(self.ptr.as_ptr(), ctx.as_ptr(), idx) }
    }

    /// Records a token that was fed without sampling (e.g. the prompt) for the penalties.
    pub fn accept(&mut self, token: Token) {
        // SAFETY: valid chain; any token id is accepted (penalties keep a ring buffer).
        unsafe { sys::llama_sampler_accept(self.ptr.as_ptr(), token) };
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        // SAFETY: the chain came from llama_sampler_chain_init and is freed exactly once; it
        // frees the samplers added to it.
        unsafe { sys::llama_sampler_free(self.ptr.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::SamplerParams;

    #[test]
    fn sampling_settings_are_checked() {
        assert_eq!(SamplerParams::default().check(), Ok(()));
        let greedy = SamplerParams {
            temperature: 0.0,
            top_p: 1.0,
            min_p: 0.0,
            ..SamplerParams::default()
        };
        assert_eq!(greedy.check(), Ok(()));
        let bad = [
            (
                SamplerParams {
                    temperature: f32::NAN,
                    ..greedy
                },
                "temperature",
                "NaN",
            ),
            (
                SamplerParams {
                    temperature: f32::INFINITY,
                    ..greedy
                },
                "temperature",
                "inf",
            ),
            (
                SamplerParams {
                    temperature: -0.5,
                    ..greedy
                },
                "temperature",
                "-0.5",
            ),
            (
                SamplerParams {
                    top_k: -1,
                    ..greedy
                },
                "top_k",
                "-1",
            ),
            (
                SamplerParams {
                    top_p: 1.5,
                    ..greedy
                },
                "top_p",
                "1.5",
            ),
            (
                SamplerParams {
                    top_p: f32::NAN,
                    ..greedy
                },
                "top_p",
                "NaN",
            ),
            (
                SamplerParams {
                    min_p: -0.1,
                    ..greedy
                },
                "min_p",
                "-0.1",
            ),
            (
                SamplerParams {
                    repeat_penalty: 0.0,
                    ..greedy
                },
                "repeat_penalty",
                "0",
            ),
            (
                SamplerParams {
                    repeat_penalty: f32::NAN,
                    ..greedy
                },
                "repeat_penalty",
                "NaN",
            ),
            (
                SamplerParams {
                    repeat_last_n: -2,
                    ..greedy
                },
                "repeat_last_n",
                "-2",
            ),
        ];
        for (p, field, value) in bad {
            let e = p.check().expect_err(field);
            assert_eq!((e.field, e.value.as_str()), (field, value));
            assert!(e
                .to_string()
                .starts_with(&format!("{field} is {value}; it must be")));
        }
    }
}
