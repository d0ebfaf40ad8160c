//! The language model: loading, vocabulary, tokenization.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use llama_cpp_sys_2 as sys;

use crate::repack::{decide_for_file, Repack};

/// A token id of the language model's vocabulary.
pub type Token = i32;

/// How to load the language model's weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadParams {
    /// Memory-map the file (default) instead of reading it into RAM.
    pub use_mmap: bool,
    /// Lock the weights in RAM.
    pub use_mlock: bool,
    /// Layers to offload to a GPU backend (0 on CPU-only builds).
    pub n_gpu_layers: i32,
    /// Whether llama.cpp may repack weights into the layouts of its repacked CPU kernels
    /// (Q4_0, Q4_K, IQ4_NL, ... into interleaved blocks; the copy is anonymous memory).
    /// [`Repack::Auto`] is decided at load from the file's tensor types and the CPU
    /// ([`crate::repack`]).
    pub repack: Repack,
    /// With mmap: release, while the model loads, the pages of the mapped file that the
    /// loader read (llama.cpp maps with MAP_POPULATE and reads every tensor it repacks).
    /// Without this, every repacked tensor stays resident twice (the mapped original and the
    /// repacked copy) until the OS reclaims the page cache. Pages of tensors used straight from
    /// the mapping come back on first use; those never read in full (the token-embedding table,
    /// of which a prompt reads a few rows) stay out, also without repacking.
    pub release_loader_pages: bool,
    /// Layers placed on RPC workers ([`crate::rpc`]); `None` keeps the whole model local.
    pub offload: Option<&'static crate::rpc::Offload>,
}

impl Default for LoadParams {
    fn default() -> Self {
        LoadParams {
            use_mmap: true,
            use_mlock: false,
            n_gpu_layers: 0,
            repack: Repack::Auto,
            release_loader_pages: true,
            offload: None,
        }
    }
}

/// What the load progress callback needs: where the model file is mapped (found on the first
/// call, once llama.cpp has mapped it) and how far the last release went.
struct PageRelease {
    file: PathBuf,
    ranges: Option<Vec<(usize, usize)>>,
    last: f32,
}

/// llama.cpp's load progress callback: every 1% of progress (and at the end), drop the
/// model file's mapped pages from this process (`MADV_DONTNEED`). The mapping is read-only and
/// shared with the page cache, so tensors that are used from the mapping read the same bytes
/// again on their next access; tensors that were copied into repacked buffers are never read
/// from the mapping again, and their pages stop counting against this process.
extern "C" fn release_pages_progress(progress: f32, user_data: *mut std::ffi::c_void) -> bool {
    // SAFETY: user_data is the `&mut PageRelease` that Model::load passed for this load; it
    // lives on Model::load's stack for the whole llama_model_load_from_file call.
    let st = unsafe { &mut *(user_data as *mut PageRelease) };
    if progress < 1.0 && progress - st.last < 0.01 {
        return true;
    }
    st.last = progress;
    if st.ranges.is_none() {
        st.ranges = Some(super::pages::file_mappings(&st.file));
    }
    for &(start, end) in st.ranges.iter().flatten() {
        super::pages::release(start, end);
    }
    true
}

/// An error from llama.cpp while loading a model (its own message goes to the `-v` log).
#[derive(Debug, thiserror::Error)]
#[error("llama.cpp could not load the language model {}{}", path.display(), hint)]
pub struct ModelLoadError {
    pub path: PathBuf,
    hint: String,
}

/// A loaded language model (`llama_model`). Freed on drop.
#[derive(Debug)]
pub struct Model {
    ptr: NonNull<sys::llama_model>,
    vocab: NonNull<sys::llama_vocab>,
    repacked: bool,
}

// SAFETY: a llama_model is immutable after loading and llama.cpp documents it as shareable
// between contexts on different threads; we only hand out shared references.
unsafe impl Send for Model {}
// SAFETY: see above; all methods taking &self only read the model.
unsafe impl Sync for Model {}

/// Full (weights) model loads in this process, counted by [`Model::load`]: how a test shows that
/// N runs on one `minicpmv::Session` load the model once.
static MODEL_LOADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many times this process has loaded a language model's weights (vocabulary-only loads are
/// not counted).
pub fn model_load_count() -> usize {
    MODEL_LOADS.load(std::sync::atomic::Ordering::Relaxed)
}

impl Model {
    /// Loads a GGUF language model. The caller has already checked that the file exists and is a
    /// language-model GGUF (llama.cpp aborts the process on some malformed files).
    pub fn load(path: &Path, params: LoadParams) -> Result<Model, ModelLoadError> {
        MODEL_LOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self::load_with(path, params, false)
    }

    /// Loads only the vocabulary and metadata (a few MB): enough to tokenize, while the
    /// weights stay on disk. Used to lay out the prompt before the projector runs in low-memory
    /// mode.
    pub fn load_vocab_only(path: &Path) -> Result<Model, ModelLoadError> {
        Self::load_with(path, LoadParams::default(), true)
    }

    fn load_with(
        path: &Path,
        params: LoadParams,
        vocab_only: bool,
    ) -> Result<Model, ModelLoadError> {
        super::init_backend();
        let err = |hint: &str| ModelLoadError {
            path: path.to_path_buf(),
            hint: hint.to_string(),
        };
        let repack = if vocab_only {
            false
        } else {
            let d = decide_for_file(params.repack, path)
                .map_err(|e| err(&format!(" (its tensor table: {e})")))?;
            log::info!(
                "{}: weight repacking {}: {}",
                path.display(),
                if d.repack { "on" } else { "off" },
                d.reason
            );
            d.repack
        };
        let c_path = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| err(" (the path contains a NUL byte)"))?;
        // SAFETY: llama_model_default_params returns a plain struct by value.
        let mut mp = unsafe { sys::llama_model_default_params() };
        mp.vocab_only = vocab_only;
        mp.n_gpu_layers = params.n_gpu_layers;
        if let (false, Some(off)) = (vocab_only, params.offload) {
            mp.devices = off.devices_ptr();
            mp.n_gpu_layers = off.n_gpu_layers;
            mp.tensor_split = off.tensor_split_ptr();
            mp.split_mode = sys::LLAMA_SPLIT_MODE_LAYER;
        }
        mp.load_mode = match (params.use_mmap, params.use_mlock) {
            (true, false) => sys::LLAMA_LOAD_MODE_MMAP,
            (true, true) => sys::LLAMA_LOAD_MODE_MMAP_MLOCK,
            (false, true) => sys::LLAMA_LOAD_MODE_MLOCK,
            (false, false) => sys::LLAMA_LOAD_MODE_NONE,
        };
        mp.use_extra_bufts = repack;
        let mut release = PageRelease {
            file: path.to_path_buf(),
            ranges: None,
            last: 0.0,
        };
        // Releasing pages undoes mlock's purpose and is pointless without a mapping.
        if !vocab_only && params.use_mmap && !params.use_mlock && params.release_loader_pages {
            mp.progress_callback = Some(release_pages_progress);
            mp.progress_callback_user_data = (&mut release as *mut PageRelease).cast();
        }
        let capture = super::backend::ErrorCapture::begin();
        // SAFETY: c_path is a valid NUL-terminated string for the duration of the call; mp is a
        // fully initialised params struct whose callback user data (`release`) outlives the
        // call. A null result means failure.
        let raw = unsafe { sys::llama_model_load_from_file(c_path.as_ptr(), mp) };
        let ptr = NonNull::new(raw).ok_or_else(|| {
            let said = capture.said();
            if said.is_empty() {
                err(" (run with -v to see llama.cpp's log)")
            } else {
                err(&said)
            }
        })?;
        // SAFETY: ptr is a valid model; the vocab it returns lives as long as the model.
        let vocab = NonNull::new(unsafe { sys::llama_model_get_vocab(ptr.as_ptr()) } as *mut _);
        if !vocab_only && params.offload.is_some() {
            crate::rpc::watch_connections();
        }
        match vocab {
            Some(vocab) => Ok(Model {
                ptr,
                vocab,
                repacked: repack,
            }),
            None => {
                // SAFETY: ptr was returned by llama_model_load_from_file and is freed once here.
                unsafe { sys::llama_model_free(ptr.as_ptr()) };
                Err(err(" (it has no vocabulary)"))
            }
        }
    }

    /// Whether llama.cpp repacked the weights at load (see [`LoadParams::repack`]).
    pub fn repacked(&self) -> bool {
        self.repacked
    }

    pub(super) fn as_ptr(&self) -> *mut sys::llama_model {
        self.ptr.as_ptr()
    }

    fn vocab(&self) -> *const sys::llama_vocab {
        self.vocab.as_ptr()
    }

    /// Width of the token embeddings (what image embeddings must match).
    pub fn n_embd(&self) -> usize {
        // SAFETY: self.ptr is a valid model for the lifetime of self.
        let n = unsafe { sys::llama_model_n_embd_inp(self.as_ptr()) };
        usize::try_from(n).unwrap_or(0)
    }

    /// Context length the model was trained with.
    pub fn n_ctx_train(&self) -> u32 {
        // SAFETY: self.ptr is a valid model.
        let n = unsafe { sys::llama_model_n_ctx_train(self.as_ptr()) };
        u32::try_from(n).unwrap_or(0)
    }

    /// Number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> usize {
        // SAFETY: self.vocab is valid for the lifetime of the model.
        let n = unsafe { sys::llama_vocab_n_tokens(self.vocab()) };
        usize::try_from(n).unwrap_or(0)
    }

    /// Bytes of weights.
    pub fn size_bytes(&self) -> u64 {
        // SAFETY: self.ptr is a valid model.
        unsafe { sys::llama_model_size(self.as_ptr()) }
    }

    /// Number of parameters.
    pub fn n_params(&self) -> u64 {
        // SAFETY: self.ptr is a valid model.
        unsafe { sys::llama_model_n_params(self.as_ptr()) }
    }

    /// Whether the tokenizer adds a BOS token at the start of a sequence.
    pub fn add_bos(&self) -> bool {
        // SAFETY: self.vocab is valid.
        unsafe { sys::llama_vocab_get_add_bos(self.vocab()) }
    }

    /// Whether the tokenizer adds an EOS token at the end of a sequence.
    pub fn add_eos(&self) -> bool {
        // SAFETY: self.vocab is valid.
        unsafe { sys::llama_vocab_get_add_eos(self.vocab()) }
    }

    /// The EOS token, if the vocabulary has one.
    pub fn eos(&self) -> Option<Token> {
        // SAFETY: self.vocab is valid.
        let t = unsafe { sys::llama_vocab_eos(self.vocab()) };
        (t >= 0).then_some(t)
    }

    /// The BOS token, if the vocabulary has one.
    pub fn bos(&self) -> Option<Token> {
        // SAFETY: self.vocab is valid.
        let t = unsafe { sys::llama_vocab_bos(self.vocab()) };
        (t >= 0).then_some(t)
    }

    /// Whether `token` ends generation (EOS, EOT or another end-of-generation token).
    pub fn is_eog(&self, token: Token) -> bool {
        // SAFETY: self.vocab is valid; llama.cpp checks the id against its tables.
        unsafe { sys::llama_vocab_is_eog(self.vocab(), token) }
    }

    /// Tokenizes `text`. `add_special` adds BOS/EOS as the model is configured to;
    /// `parse_special` turns special-token texts such as `<image>` into their ids.
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<Token> {
        let len = i32::try_from(text.len()).unwrap_or(i32::MAX);
        let mut tokens: Vec<Token> = vec![0; text.len() + 2];
        for _ in 0..2 {
            let cap = i32::try_from(tokens.len()).unwrap_or(i32::MAX);
            // SAFETY: text points to `len` valid bytes; tokens has room for `cap` tokens.
            let n = unsafe {
                sys::llama_tokenize(
                    self.vocab(),
                    text.as_ptr().cast(),
                    len,
                    tokens.as_mut_ptr(),
                    cap,
                    add_special,
                    parse_special,
                )
            };
            if n >= 0 {
                tokens.truncate(n as usize);
                return tokens;
            }
            // A negative result is the number of tokens needed.
            tokens.resize(n.unsigned_abs() as usize, 0);
        }
        Vec::new()
    }

    /// The id of a token given by its exact text (e.g. `<image>`), if the vocabulary has a single
    /// token for it.
    pub fn token_id(&self, text: &str) -> Option<Token> {
        let toks = self.tokenize(text, false, true);
        match toks.as_slice() {
            [t] if self.token_text(*t).as_deref() == Some(text) => Some(*t),
            _ => None,
        }
    }

    /// The raw text of a vocabulary entry.
    pub fn token_text(&self, token: Token) -> Option<String> {
        if token < 0 || token as usize >= self.n_vocab() {
            return None;
        }
        // SAFETY: token is in range; the returned string is owned by the vocab.
        let p = unsafe { sys::llama_vocab_get_text(self.vocab(), token) };
        if p.is_null() {
            return None;
        }
        // SAFETY: p is a valid NUL-terminated string owned by the vocab.
        Some(
            unsafe { std::ffi::CStr::from_ptr(p) }
                .to_string_lossy()
                .into_owned(),
        )
    }

    /// The bytes a token stands for when printed (special tokens rendered when `special`).
    pub fn token_to_bytes(&self, token: Token, special: bool) -> Vec<u8> {
        let mut buf = vec![0u8; 64];
        for _ in 0..2 {
            let cap = i32::try_from(buf.len()).unwrap_or(i32::MAX);
            // SAFETY: buf has room for `cap` bytes; llama.cpp writes at most that many.
            let n = unsafe {
                sys::llama_token_to_piece(
                    self.vocab(),
                    token,
                    buf.as_mut_ptr().cast(),
                    cap,
                    0,
                    special,
                )
            };
            if n >= 0 {
                buf.truncate(n as usize);
                return buf;
            }
            buf.resize(n.unsigned_abs() as usize, 0);
        }
        Vec::new()
    }

    /// A metadata string of the GGUF file, as llama.cpp parsed it.
    pub fn meta_str(&self, key: &str) -> Option<String> {
        let c_key = CString::new(key).ok()?;
        let mut buf = vec![0u8; 256];
        for _ in 0..2 {
            // SAFETY: c_key is NUL-terminated; buf has buf.len() bytes.
            let n = unsafe {
                sys::llama_model_meta_val_str(
                    self.as_ptr(),
                    c_key.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if n < 0 {
                return None;
            }
            let n = n as usize;
            if n < buf.len() {
                buf.truncate(n);
                return Some(String::from_utf8_lossy(&buf).into_owned());
            }
            buf.resize(n + 1, 0);
        }
        None
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: self.ptr came from llama_model_load_from_file and is freed exactly once; every
        // Context borrows the Model, so none outlives it.
        unsafe { sys::llama_model_free(self.ptr.as_ptr()) };
    }
}

/// Formats a conversation with llama.cpp's built-in chat templates. `tmpl` is a template name
/// or a Jinja template string that llama.cpp recognises by its content; `None` when it does not
/// recognise it. `messages` are (role, content) pairs.
pub fn apply_chat_template(
    tmpl: &str,
    messages: &[(&str, &str)],
    add_assistant: bool,
) -> Option<String> {
    let c_tmpl = CString::new(tmpl).ok()?;
    let owned: Vec<(CString, CString)> = messages
        .iter()
        .map(|(r, c)| Some((CString::new(*r).ok()?, CString::new(*c).ok()?)))
        .collect::<Option<_>>()?;
    let msgs: Vec<sys::llama_chat_message> = owned
        .iter()
        .map(|(r, c)| sys::llama_chat_message {
            role: r.as_ptr(),
            content: c.as_ptr(),
        })
        .collect();
    let mut buf = vec![0u8; 1024 + 2 * messages.iter().map(|(_, c)| c.len()).sum::<usize>()];
    for _ in 0..2 {
        let cap = i32::try_from(buf.len()).ok()?;
        // SAFETY: c_tmpl and every message string are NUL-terminated and outlive the call;
        // msgs holds msgs.len() valid entries; buf has `cap` bytes.
        let n = unsafe {
            sys::llama_chat_apply_template(
                c_tmpl.as_ptr(),
                msgs.as_ptr(),
                msgs.len(),
                add_assistant,
                buf.as_mut_ptr().cast(),
                cap,
            )
        };
        if n < 0 {
            return None;
        }
        let n = n as usize;
        if n <= buf.len() {
            buf.truncate(n);
            return String::from_utf8(buf).ok();
        }
        buf.resize(n, 0);
    }
    None
}
