//! An inference context (`llama_context`): KV cache, decode, logits.

use std::marker::PhantomData;
use std::ptr::NonNull;

use llama_cpp_sys_2 as sys;

use super::batch::{ExtBatch, Input};
use super::{Batch, Model};

/// Settings of a context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextParams {
    /// Context length in tokens (text and image embeddings together).
    pub n_ctx: u32,
    /// Largest batch submitted to one decode call.
    pub n_batch: u32,
    /// Threads for single-token decode.
    pub n_threads: i32,
    /// Threads for batch (prompt) processing.
    pub n_threads_batch: i32,
    /// Element type of the KV cache (keys and values).
    pub kv_type: KvType,
}

/// Element type of the KV cache. The quantized types need flash attention, which is then
/// switched on; they cut the cache to 53% (q8_0) or 28% (q4_0) of f16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub enum KvType {
    #[default]
    #[serde(rename = "f16")]
    F16,
    #[serde(rename = "q8_0")]
    Q8_0,
    #[serde(rename = "q4_0")]
    Q4_0,
}

impl KvType {
    /// Bytes per element, block overhead included (ggml's block sizes: q8_0 34 bytes per 32,
    /// q4_0 18 bytes per 32).
    pub fn bytes_per_element(self) -> f64 {
        match self {
            KvType::F16 => 2.0,
            KvType::Q8_0 => 34.0 / 32.0,
            KvType::Q4_0 => 18.0 / 32.0,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KvType::F16 => "f16",
            KvType::Q8_0 => "q8_0",
            KvType::Q4_0 => "q4_0",
        }
    }

    /// Every type, in the order `--kv-type` lists them.
    pub const ALL: [KvType; 3] = [KvType::F16, KvType::Q8_0, KvType::Q4_0];

    pub(super) fn ggml_type(self) -> sys::ggml_type {
        match self {
            KvType::F16 => sys::GGML_TYPE_F16,
            KvType::Q8_0 => sys::GGML_TYPE_Q8_0,
            KvType::Q4_0 => sys::GGML_TYPE_Q4_0,
        }
    }
}

impl std::str::FromStr for KvType {
    type Err = String;

    /// `f16`, `q8_0` or `q4_0` (case-insensitive).
    fn from_str(s: &str) -> Result<Self, String> {
        KvType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("{s:?} is not a KV cache type: use f16, q8_0 or q4_0"))
    }
}

/// Why a decode call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("the KV cache is full (no slot for a batch of {n_tokens} tokens)")]
    NoKvSlot { n_tokens: usize },
    #[error("decoding was aborted")]
    Aborted,
    /// The language model's output held NaN or infinite values: its weights are corrupt.
    #[error("the language model produced non-finite logits ({value}): its weights are corrupt (NaN or infinite)")]
    NonFiniteLogits { value: f32 },
    #[error("llama_decode failed with code {code} on a batch of {n_tokens} tokens")]
    Failed { code: i32, n_tokens: usize },
    #[error("llama.cpp could not create a context of {n_ctx} tokens{}", if log.is_empty() { " (run with -v for its log)" } else { log.as_str() })]
    ContextInit { n_ctx: u32, log: String },
    #[error("a batch of {n_tokens} entries is larger than the context's batch size {n_batch}")]
    BatchTooLarge { n_tokens: usize, n_batch: usize },
    #[error("embedding of width {got} given to a model whose input is {expected} wide")]
    EmbeddingWidth { got: usize, expected: usize },
    #[error("token id {token} is outside the vocabulary (0..{n_vocab})")]
    BadToken { token: i32, n_vocab: usize },
    #[error("llama.cpp refused entry {index} of the batch")]
    BadEntry { index: usize },
    #[error(
        "llama.cpp refused a batch of {n_tokens} entries as invalid (run with -v for its log)"
    )]
    Rejected { n_tokens: usize },
}

/// The memory one ggml device holds for a context and its model.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceUse {
    /// ggml's device name: `CPU`, `RPC0`, ...
    pub name: String,
    /// Its description (for an RPC device, the worker's `host:port`).
    pub description: String,
    pub weights: u64,
    pub kv_cache: u64,
    pub compute: u64,
}

impl DeviceUse {
    pub(crate) fn from_shim(d: &super::shim_sys::mcv_device_mem) -> DeviceUse {
        DeviceUse {
            name: super::c_buf_to_string(&d.name),
            description: super::c_buf_to_string(&d.desc),
            weights: d.model,
            kv_cache: d.context,
            compute: d.compute,
        }
    }
}

/// An inference context over a borrowed [`Model`]. Freed on drop.
#[derive(Debug)]
pub struct Context<'m> {
    ptr: NonNull<sys::llama_context>,
    n_vocab: usize,
    n_embd: usize,
    /// The batch [`Context::decode_inputs`] fills, made on first use and freed before the
    /// context (it points into the context's memory).
    ext: Option<ExtBatch>,
    _model: PhantomData<&'m Model>,
}

impl<'m> Context<'m> {
    pub fn new(model: &'m Model, params: ContextParams) -> Result<Context<'m>, DecodeError> {
        // SAFETY: returns a plain struct by value.
        let mut cp = unsafe { sys::llama_context_default_params() };
        cp.n_ctx = params.n_ctx;
        cp.n_batch = params.n_batch;
        cp.n_ubatch = params.n_batch;
        cp.n_threads = params.n_threads;
        cp.n_threads_batch = params.n_threads_batch;
        cp.type_k = params.kv_type.ggml_type();
        cp.type_v = params.kv_type.ggml_type();
        if params.kv_type != KvType::F16 {
            // A quantized V cache needs flash attention; llama.cpp refuses the context otherwise.
            cp.flash_attn_type = sys::LLAMA_FLASH_ATTN_TYPE_ENABLED;
        }
        cp.no_perf = true;
        let capture = super::backend::ErrorCapture::begin();
        // SAFETY: model is a valid, loaded model that outlives the context (lifetime 'm).
        let raw = unsafe { sys::llama_init_from_model(model.as_ptr(), cp) };
        let ptr = NonNull::new(raw).ok_or_else(|| DecodeError::ContextInit {
            n_ctx: params.n_ctx,
            log: capture.said(),
        })?;
        Ok(Context {
            ptr,
            n_vocab: model.n_vocab(),
            n_embd: model.n_embd(),
            ext: None,
            _model: PhantomData,
        })
    }

    pub(super) fn as_ptr(&self) -> *mut sys::llama_context {
        self.ptr.as_ptr()
    }

    /// Where this context's memory is, per ggml device (llama.cpp's memory breakdown): the local
    /// `CPU` and, with RPC workers, each worker's device.
    pub fn device_use(&self) -> Vec<DeviceUse> {
        let mut out = [super::shim_sys::mcv_device_mem::default(); 32];
        // SAFETY: self.ptr is a valid context; out has room for out.len() entries and the shim
        // writes at most that many (it catches C++ exceptions).
        let n = unsafe {
            super::shim_sys::mcv_llama_device_memory(
                self.as_ptr().cast(),
                out.as_mut_ptr(),
                out.len(),
            )
        };
        out.iter()
            .take((n.max(0) as usize).min(out.len()))
            .map(DeviceUse::from_shim)
            .collect()
    }

    /// The context length actually allocated.
    pub fn n_ctx(&self) -> u32 {
        // SAFETY: self.ptr is a valid context.
        unsafe { sys::llama_n_ctx(self.as_ptr()) }
    }

    /// Runs the model over a batch of tokens, appending to the KV cache.
    pub fn decode(&mut self, batch: &Batch) -> Result<(), DecodeError> {
        let n_tokens = batch.len();
        // SAFETY: batch.raw() is a fully populated llama_batch whose arrays hold n_tokens
        // entries (Batch maintains that invariant); llama.cpp checks the token ids itself and
        // refuses an invalid one with -1, without aborting.
        let code = unsafe { sys::llama_decode(self.as_ptr(), batch.raw()) };
        match code {
            0 => Ok(()),
            1 => Err(DecodeError::NoKvSlot { n_tokens }),
            2 => Err(DecodeError::Aborted),
            code => Err(DecodeError::Failed { code, n_tokens }),
        }
    }

    /// The largest batch one decode call takes.
    pub fn n_batch(&self) -> usize {
        // SAFETY: self.ptr is a valid context.
        unsafe { sys::llama_n_batch(self.as_ptr()) as usize }
    }

    /// Runs the model over `inputs`, which may mix token ids and embedding rows, at positions
    /// `first_pos..`, with logits for the last entry when `logits_last`. One call replaces the
    /// run of [`Context::decode`] calls that tokens and embeddings need on their own, so the
    /// weights are streamed once per micro-batch instead of once per run.
    ///
    /// Everything llama.cpp would refuse is checked here first. A model whose architecture
    /// cannot mix both kinds in one batch (none of MiniCPM-V's) gives
    /// [`DecodeError::Rejected`] with the KV cache unchanged.
    pub fn decode_inputs(
        &mut self,
        inputs: &[Input<'_>],
        first_pos: i32,
        logits_last: bool,
    ) -> Result<(), DecodeError> {
        let n_tokens = inputs.len();
        let n_batch = self.n_batch();
        if n_tokens == 0 {
            return Ok(());
        }
        if n_tokens > n_batch {
            return Err(DecodeError::BatchTooLarge { n_tokens, n_batch });
        }
        for input in inputs {
            match *input {
                Input::Embedding(row) if row.len() != self.n_embd => {
                    return Err(DecodeError::EmbeddingWidth {
                        got: row.len(),
                        expected: self.n_embd,
                    })
                }
                Input::Token(t) if t < 0 || t as usize >= self.n_vocab => {
                    return Err(DecodeError::BadToken {
                        token: t,
                        n_vocab: self.n_vocab,
                    })
                }
                _ => {}
            }
        }
        if self.ext.is_none() {
            // SAFETY: self.ptr is a valid context, and the batch is stored in self and freed
            // in Drop before the context.
            self.ext = unsafe { ExtBatch::new(self.as_ptr()) };
        }
        let ctx = self.as_ptr();
        let batch = self
            .ext
            .as_mut()
            .ok_or(DecodeError::Failed { code: -1, n_tokens })?;
        batch.clear();
        for (i, &input) in inputs.iter().enumerate() {
            let logits = logits_last && i + 1 == n_tokens;
            if !batch.push(input, first_pos + i as i32, logits) {
                return Err(DecodeError::BadEntry { index: i });
            }
        }
        // SAFETY: ctx is valid and batch was made for it and filled above with checked entries.
        let code =
            unsafe { sys::llama_process(ctx, sys::LLAMA_PROCESS_TYPE_DECODE, batch.as_ptr()) };
        match code {
            0 => Ok(()),
            1 => Err(DecodeError::NoKvSlot { n_tokens }),
            2 => Err(DecodeError::Aborted),
            -1 => Err(DecodeError::Rejected { n_tokens }),
            code => Err(DecodeError::Failed { code, n_tokens }),
        }
    }

    /// Logits of the `i`-th output of the last decoded batch (`-1` is the last one).
    pub fn logits(&self, i: i32) -> Option<&[f32]> {
        // SAFETY: llama_get_logits_ith returns null for an invalid index (it logs, no abort)
        // and otherwise a pointer to n_vocab floats valid until the next decode, which needs
        // &mut self, so the borrow keeps it valid.
        let p = unsafe { sys::llama_get_logits_ith(self.as_ptr(), i) };
        if p.is_null() {
            return None;
        }
        // SAFETY: see above: p points to n_vocab initialised floats.
        Some(unsafe { std::slice::from_raw_parts(p, self.n_vocab) })
    }

    /// Clears the KV cache (all sequences).
    pub fn clear_memory(&mut self) {
        // SAFETY: the memory handle belongs to this valid context.
        unsafe { sys::llama_memory_clear(sys::llama_get_memory(self.as_ptr()), true) };
    }

    /// Removes positions `[p0, end)` of sequence 0 from the KV cache.
    pub fn truncate_memory(&mut self, p0: i32) -> bool {
        // SAFETY: the memory handle belongs to this valid context; -1 means "to the end".
        unsafe { sys::llama_memory_seq_rm(sys::llama_get_memory(self.as_ptr()), 0, p0, -1) }
    }
}

impl Drop for Context<'_> {
    fn drop(&mut self) {
        // The batch points into the context's memory: it goes first.
        self.ext = None;
        // SAFETY: self.ptr came from llama_init_from_model and is freed exactly once.
        unsafe { sys::llama_free(self.ptr.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::KvType;

    #[test]
    fn kv_types_parse_from_their_names() {
        for t in KvType::ALL {
            assert_eq!(t.name().parse::<KvType>(), Ok(t));
        }
        assert_eq!("Q8_0".parse::<KvType>(), Ok(KvType::Q8_0));
        let err = "q5_1".parse::<KvType>().unwrap_err();
        assert!(
            err.contains("\"q5_1\"") && err.contains("f16, q8_0 or q4_0"),
            "{err}"
        );
    }
}
