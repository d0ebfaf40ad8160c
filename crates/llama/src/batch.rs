//! Batches, owned and freed by RAII: `llama_batch` of token ids (generation, scoring), and
//! `llama_batch_ext` mixing token ids and embedding rows (the prompt prefill).

use llama_cpp_sys_2 as sys;

use super::Token;

/// A batch of token ids for [`super::Context::decode`], all in sequence 0.
#[derive(Debug)]
pub struct Batch {
    raw: sys::llama_batch,
    capacity: usize,
}

/// A batch was given more entries than it holds.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    #[error("batch is full ({capacity} entries)")]
    Full { capacity: usize },
}

impl Batch {
    /// A batch of up to `capacity` token ids.
    pub fn tokens(capacity: usize) -> Batch {
        let capacity = capacity.max(1);
        let cap = i32::try_from(capacity).unwrap_or(i32::MAX);
        // SAFETY: llama_batch_init with embd = 0 allocates token, pos, n_seq_id, seq_id (one
        // seq id each) and logits arrays of `cap` entries; freed in Drop.
        let raw = unsafe { sys::llama_batch_init(cap, 0, 1) };
        Batch { raw, capacity }
    }

    pub fn len(&self) -> usize {
        self.raw.n_tokens as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn clear(&mut self) {
        self.raw.n_tokens = 0;
    }

    /// Appends a token at position `pos`; `logits` asks for its output.
    pub fn push_token(&mut self, token: Token, pos: i32, logits: bool) -> Result<(), BatchError> {
        let i = self.next_slot()?;
        // SAFETY: i < capacity and the token array was allocated with `capacity` entries.
        unsafe { *self.raw.token.add(i) = token };
        self.set_common(i, pos, logits);
        Ok(())
    }

    fn next_slot(&self) -> Result<usize, BatchError> {
        let i = self.len();
        if i >= self.capacity {
            return Err(BatchError::Full {
                capacity: self.capacity,
            });
        }
        Ok(i)
    }

    fn set_common(&mut self, i: usize, pos: i32, logits: bool) {
        // SAFETY: i < capacity; pos, n_seq_id, seq_id and logits were allocated with `capacity`
        // entries, and seq_id[i] points to an array of one seq id (n_seq_max = 1).
        unsafe {
            *self.raw.pos.add(i) = pos;
            *self.raw.n_seq_id.add(i) = 1;
            *(*self.raw.seq_id.add(i)) = 0;
            *self.raw.logits.add(i) = i8::from(logits);
        }
        self.raw.n_tokens += 1;
    }

    pub(super) fn raw(&self) -> sys::llama_batch {
        self.raw
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        // SAFETY: raw came from llama_batch_init and is freed exactly once.
        unsafe { sys::llama_batch_free(self.raw) };
    }
}

/// One entry of a mixed batch for [`super::Context::decode_inputs`]: a token id, or one
/// embedding row as wide as the model's input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Input<'a> {
    Token(Token),
    Embedding(&'a [f32]),
}

/// llama.cpp's extended batch (`llama_batch_ext`), which may mix token ids and embedding rows
/// in one decode call. It keeps a pointer to its context's memory, so only the [`Context`]
/// that created it owns it, and frees it before itself.
///
/// [`Context`]: super::Context
#[derive(Debug)]
pub(super) struct ExtBatch {
    ptr: std::ptr::NonNull<sys::llama_batch_ext>,
}

impl ExtBatch {
    /// A batch for `ctx`, holding up to the context's `n_batch` entries. `None` if llama.cpp
    /// could not allocate it.
    ///
    /// # Safety
    /// `ctx` must be a valid context that outlives the returned batch.
    pub(super) unsafe fn new(ctx: *mut sys::llama_context) -> Option<ExtBatch> {
        // SAFETY: the caller guarantees ctx is valid; the batch only reads its parameters and
        // keeps its memory handle, which lives as long as the context.
        let raw = unsafe { sys::llama_batch_ext_init(ctx) };
        std::ptr::NonNull::new(raw).map(|ptr| ExtBatch { ptr })
    }

    pub(super) fn as_ptr(&self) -> *mut sys::llama_batch_ext {
        self.ptr.as_ptr()
    }

    pub(super) fn clear(&mut self) {
        // SAFETY: self.ptr is a valid batch.
        unsafe { sys::llama_batch_ext_clear(self.as_ptr()) };
    }

    /// Appends `input` in sequence 0 at position `pos`; `logits` asks for its output. The
    /// embedding is copied into the batch. Returns false when llama.cpp refuses the entry
    /// (batch full, token id or embedding width invalid).
    pub(super) fn push(&mut self, input: Input<'_>, pos: i32, logits: bool) -> bool {
        let idx = match input {
            // SAFETY: self.ptr is a valid batch; an invalid id is refused with -2, not used.
            Input::Token(t) => unsafe { sys::llama_batch_ext_add_token(self.as_ptr(), 0, t) },
            Input::Embedding(row) => {
                let embd = sys::llama_embd {
                    data: row.as_ptr(),
                    n_rows: 1,
                    n_embd: row.len(),
                };
                // SAFETY: embd.data points to row.len() == n_rows * n_embd floats, which
                // llama.cpp copies into the batch before returning (it keeps no pointer).
                unsafe { sys::llama_batch_ext_add_embd(self.as_ptr(), 0, embd) }
            }
        };
        if idx < 0 {
            return false;
        }
        // Room for every M-RoPE section; a plain-RoPE entry reads only the first.
        let pos = [pos; 4];
        // SAFETY: idx is an entry of this batch; pos holds 4 positions, the most llama.cpp reads
        // for one entry (GGML_MROPE_SECTIONS).
        unsafe {
            sys::llama_batch_ext_set_pos(self.as_ptr(), idx, pos.as_ptr())
                && sys::llama_batch_ext_set_output_logits(self.as_ptr(), idx, logits)
        }
    }
}

impl Drop for ExtBatch {
    fn drop(&mut self) {
        // SAFETY: ptr came from llama_batch_ext_init and is freed exactly once.
        unsafe { sys::llama_batch_ext_free(self.ptr.as_ptr()) };
    }
}
