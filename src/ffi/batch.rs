//! `llama_batch` of tokens or of embeddings, owned and freed by RAII.

use llama_cpp_sys_2 as sys;

use super::Token;

/// A batch for [`super::Context::decode`]: either token ids or embedding vectors (one
/// `n_embd`-wide row per position), all in sequence 0.
#[derive(Debug)]
pub struct Batch {
    raw: sys::llama_batch,
    capacity: usize,
    /// `Some(n_embd)` for an embedding batch.
    n_embd: Option<usize>,
}

/// A batch was given more entries than it holds, or an embedding of the wrong width.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    #[error("batch is full ({capacity} entries)")]
    Full { capacity: usize },
    #[error("embedding of width {got} given to a batch of width {expected}")]
    Width { got: usize, expected: usize },
    #[error("wrong kind of entry for this batch (tokens vs embeddings)")]
    Kind,
}

impl Batch {
    /// A batch of up to `capacity` token ids.
    pub fn tokens(capacity: usize) -> Batch {
        Self::alloc(capacity, None)
    }

    /// A batch of up to `capacity` embeddings of width `n_embd`.
    pub fn embeddings(capacity: usize, n_embd: usize) -> Batch {
        Self::alloc(capacity, Some(n_embd))
    }

    fn alloc(capacity: usize, n_embd: Option<usize>) -> Batch {
        let capacity = capacity.max(1);
        let cap = i32::try_from(capacity).unwrap_or(i32::MAX);
        let embd = n_embd.map_or(0, |n| i32::try_from(n).unwrap_or(i32::MAX));
        // SAFETY: llama_batch_init allocates arrays for `cap` entries (embd floats per entry
        // when embd > 0, token ids otherwise) and one seq id per entry; freed in Drop.
        let raw = unsafe { sys::llama_batch_init(cap, embd, 1) };
        Batch {
            raw,
            capacity,
            n_embd,
        }
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
        if self.n_embd.is_some() {
            return Err(BatchError::Kind);
        }
        let i = self.next_slot()?;
        // SAFETY: i < capacity and the token array was allocated with `capacity` entries.
        unsafe { *self.raw.token.add(i) = token };
        self.set_common(i, pos, logits);
        Ok(())
    }

    /// Appends one embedding row at position `pos`.
    pub fn push_embedding(
        &mut self,
        row: &[f32],
        pos: i32,
        logits: bool,
    ) -> Result<(), BatchError> {
        let n_embd = self.n_embd.ok_or(BatchError::Kind)?;
        if row.len() != n_embd {
            return Err(BatchError::Width {
                got: row.len(),
                expected: n_embd,
            });
        }
        let i = self.next_slot()?;
        // SAFETY: the embd array holds capacity * n_embd floats; row i starts at i * n_embd and
        // row.len() == n_embd, so the copy stays inside it. Source and destination don't overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(row.as_ptr(), self.raw.embd.add(i * n_embd), n_embd)
        };
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
