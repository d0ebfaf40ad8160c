//! llama.cpp's own multimodal pipeline (mtmd), kept as the reference implementation
//! (`--pipeline llama.cpp`) and as the test oracle for our native pipeline.

use std::ffi::{CStr, CString};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use llama_cpp_sys_2 as sys;

use super::{Context, Model, Token};

/// An error from llama.cpp's mtmd pipeline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MtmdError {
    #[error("llama.cpp's mtmd could not load the projector {}{}", path.display(), if log.is_empty() { " (run with -v for its log)" } else { log.as_str() })]
    Load { path: PathBuf, log: String },
    #[error("llama.cpp's mtmd could not tokenize the prompt: {}", tokenize_reason(*code))]
    Tokenize { code: i32 },
    #[error("llama.cpp's mtmd failed to encode image chunk {index} (code {code})")]
    Encode { index: usize, code: i32 },
    #[error("llama.cpp failed to decode chunk {index} (code {code})")]
    Decode { index: usize, code: i32 },
    #[error("invalid argument: {0}")]
    Invalid(String),
}

/// One chunk of a tokenized multimodal prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkInfo {
    Text(Vec<Token>),
    /// An image: how many embeddings it feeds and how many positions it takes.
    Image {
        n_tokens: usize,
        n_pos: i32,
    },
}

/// An RGB image for mtmd: `width * height * 3` bytes.
#[derive(Debug, Clone, Copy)]
pub struct RgbImage<'a> {
    pub width: u32,
    pub height: u32,
    pub data: &'a [u8],
}

/// The mtmd context (projector + prompt layout), bound to a language model. Freed on drop.
#[derive(Debug)]
pub struct Mtmd<'m> {
    ptr: NonNull<sys::mtmd_context>,
    _model: PhantomData<&'m Model>,
}

/// A tokenized prompt (`mtmd_input_chunks`). Freed on drop.
#[derive(Debug)]
pub struct Chunks {
    ptr: NonNull<sys::mtmd_input_chunks>,
}

/// The marker that stands for an image in a prompt given to mtmd.
pub fn default_marker() -> String {
    // SAFETY: returns a pointer to a static NUL-terminated string.
    unsafe { CStr::from_ptr(sys::mtmd_default_marker()) }
        .to_string_lossy()
        .into_owned()
}

impl<'m> Mtmd<'m> {
    pub fn load(
        path: &Path,
        model: &'m Model,
        n_threads: i32,
        warmup: bool,
        attention: super::ProjectorAttention,
    ) -> Result<Mtmd<'m>, MtmdError> {
        super::init_backend();
        let c_path = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| MtmdError::Invalid("path contains a NUL byte".into()))?;
        // SAFETY: plain struct by value.
        let mut p = unsafe { sys::mtmd_context_params_default() };
        p.use_gpu = true;
        p.print_timings = false;
        p.n_threads = n_threads;
        p.warmup = warmup;
        p.flash_attn_type = attention.llama_value();
        let capture = super::backend::ErrorCapture::begin();
        // SAFETY: c_path is NUL-terminated; model is a valid loaded model that outlives 'm.
        let raw = unsafe { sys::mtmd_init_from_file(c_path.as_ptr(), model.as_ptr(), p) };
        let ptr = NonNull::new(raw).ok_or_else(|| MtmdError::Load {
            path: path.to_path_buf(),
            log: capture.said(),
        })?;
        Ok(Mtmd {
            ptr,
            _model: PhantomData,
        })
    }

    /// Tokenizes `prompt`, replacing each [`default_marker`] by the matching image's chunks.
    pub fn tokenize(
        &self,
        prompt: &str,
        images: &[RgbImage<'_>],
        add_special: bool,
    ) -> Result<Chunks, MtmdError> {
        let c_prompt = CString::new(prompt)
            .map_err(|_| MtmdError::Invalid("prompt contains a NUL byte".into()))?;
        let mut bitmaps = Vec::with_capacity(images.len());
        for img in images {
            if img.data.len() != img.width as usize * img.height as usize * 3 {
                return Err(MtmdError::Invalid("image buffer size".into()));
            }
            // SAFETY: data holds width*height*3 bytes (checked); mtmd copies it.
            let b = unsafe { sys::mtmd_bitmap_init(img.width, img.height, img.data.as_ptr()) };
            match NonNull::new(b) {
                Some(b) => bitmaps.push(Bitmap(b)),
                None => return Err(MtmdError::Invalid("bitmap allocation".into())),
            }
        }
        let ptrs: Vec<*const sys::mtmd_bitmap> =
            bitmaps.iter().map(|b| b.0.as_ptr().cast_const()).collect();
        let text = sys::mtmd_input_text {
            text: c_prompt.as_ptr(),
            text_len: prompt.len(),
            add_special,
            parse_special: true,
        };
        // SAFETY: creates an empty chunk list.
        let chunks = NonNull::new(unsafe { sys::mtmd_input_chunks_init() })
            .ok_or_else(|| MtmdError::Invalid("chunk allocation".into()))?;
        let chunks = Chunks { ptr: chunks };
        // SAFETY: all pointers are valid for the call; bitmaps outlive it.
        let rc = unsafe {
            sys::mtmd_tokenize(
                self.ptr.as_ptr(),
                chunks.ptr.as_ptr(),
                &text,
                ptrs.as_ptr(),
                ptrs.len(),
            )
        };
        if rc != 0 {
            return Err(MtmdError::Tokenize { code: rc });
        }
        Ok(chunks)
    }

    /// Feeds all chunks to the context starting at position `n_past`, encoding images with the
    /// projector; returns the new position and the seconds of each image chunk's encode.
    pub fn eval(
        &mut self,
        ctx: &mut Context<'_>,
        chunks: &Chunks,
        n_past: i32,
        n_batch: i32,
    ) -> Result<(i32, Vec<f64>), MtmdError> {
        let mut pos = n_past;
        let mut encode_secs = Vec::new();
        let n = chunks.len();
        for index in 0..n {
            let chunk = chunks.get(index);
            let last = index + 1 == n;
            let mut new_pos: sys::llama_pos = pos;
            // SAFETY: chunk is valid while `chunks` lives.
            let ty = unsafe { sys::mtmd_input_chunk_get_type(chunk) };
            if ty == sys::MTMD_INPUT_CHUNK_TYPE_TEXT {
                // SAFETY: valid contexts and chunk; new_pos is a valid out-pointer.
                let rc = unsafe {
                    sys::mtmd_helper_eval_chunk_single(
                        self.ptr.as_ptr(),
                        ctx.as_ptr(),
                        chunk,
                        pos,
                        0,
                        n_batch,
                        last,
                        &mut new_pos,
                    )
                };
                if rc != 0 {
                    return Err(MtmdError::Decode { index, code: rc });
                }
            } else {
                let t0 = std::time::Instant::now();
                // SAFETY: valid mtmd context and media chunk.
                let rc = unsafe { sys::mtmd_encode_chunk(self.ptr.as_ptr(), chunk) };
                if rc != 0 {
                    return Err(MtmdError::Encode { index, code: rc });
                }
                encode_secs.push(t0.elapsed().as_secs_f64());
                // SAFETY: the output of the last encode, sized for this chunk, owned by mtmd.
                let embd = unsafe { sys::mtmd_get_output_embd(self.ptr.as_ptr()) };
                // SAFETY: embd holds this chunk's embeddings; the helper decodes them in batches.
                let rc = unsafe {
                    sys::mtmd_helper_decode_image_chunk(
                        self.ptr.as_ptr(),
                        ctx.as_ptr(),
                        chunk,
                        embd,
                        pos,
                        0,
                        n_batch,
                        &mut new_pos,
                        None,
                        std::ptr::null_mut(),
                    )
                };
                if rc != 0 {
                    return Err(MtmdError::Decode { index, code: rc });
                }
            }
            pos = new_pos;
        }
        Ok((pos, encode_secs))
    }

    /// Encodes image chunk `index` and returns its embeddings (`n_tokens * n_embd` floats).
    pub fn encode_chunk(
        &mut self,
        chunks: &Chunks,
        index: usize,
        n_embd: usize,
    ) -> Result<Vec<f32>, MtmdError> {
        let ChunkInfo::Image { n_tokens, .. } = chunks.info(index) else {
            return Err(MtmdError::Invalid(format!("chunk {index} is not an image")));
        };
        let chunk = chunks.get(index);
        // SAFETY: valid mtmd context and media chunk.
        let rc = unsafe { sys::mtmd_encode_chunk(self.ptr.as_ptr(), chunk) };
        if rc != 0 {
            return Err(MtmdError::Encode { index, code: rc });
        }
        // SAFETY: mtmd documents the output as n_embd * n_tokens floats for this chunk.
        let embd = unsafe { sys::mtmd_get_output_embd(self.ptr.as_ptr()) };
        if embd.is_null() {
            return Err(MtmdError::Encode { index, code: -1 });
        }
        // SAFETY: see above.
        Ok(unsafe { std::slice::from_raw_parts(embd, n_tokens * n_embd) }.to_vec())
    }
}

impl Drop for Mtmd<'_> {
    fn drop(&mut self) {
        // SAFETY: ptr came from mtmd_init_from_file and is freed exactly once.
        unsafe { sys::mtmd_free(self.ptr.as_ptr()) };
    }
}

impl Chunks {
    pub fn len(&self) -> usize {
        // SAFETY: valid chunk list.
        unsafe { sys::mtmd_input_chunks_size(self.ptr.as_ptr()) }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get(&self, index: usize) -> *const sys::mtmd_input_chunk {
        // SAFETY: callers pass index < len(); the chunk is owned by the list.
        unsafe { sys::mtmd_input_chunks_get(self.ptr.as_ptr(), index) }
    }

    /// What chunk `index` (< len) holds.
    pub fn info(&self, index: usize) -> ChunkInfo {
        let chunk = self.get(index);
        // SAFETY: chunk is valid while self lives.
        let ty = unsafe { sys::mtmd_input_chunk_get_type(chunk) };
        if ty == sys::MTMD_INPUT_CHUNK_TYPE_TEXT {
            let mut n = 0usize;
            // SAFETY: returns a pointer to n tokens owned by the chunk.
            let p = unsafe { sys::mtmd_input_chunk_get_tokens_text(chunk, &mut n) };
            let toks = if p.is_null() || n == 0 {
                Vec::new()
            } else {
                // SAFETY: p points to n tokens.
                unsafe { std::slice::from_raw_parts(p, n) }.to_vec()
            };
            ChunkInfo::Text(toks)
        } else {
            // SAFETY: valid chunk.
            let (n_tokens, n_pos) = unsafe {
                (
                    sys::mtmd_input_chunk_get_n_tokens(chunk),
                    sys::mtmd_input_chunk_get_n_pos(chunk),
                )
            };
            ChunkInfo::Image { n_tokens, n_pos }
        }
    }

    /// All chunks, in order.
    pub fn infos(&self) -> Vec<ChunkInfo> {
        (0..self.len()).map(|i| self.info(i)).collect()
    }
}

impl Drop for Chunks {
    fn drop(&mut self) {
        // SAFETY: ptr came from mtmd_input_chunks_init and is freed exactly once.
        unsafe { sys::mtmd_input_chunks_free(self.ptr.as_ptr()) };
    }
}

struct Bitmap(NonNull<sys::mtmd_bitmap>);

impl Drop for Bitmap {
    fn drop(&mut self) {
        // SAFETY: came from mtmd_bitmap_init, freed once.
        unsafe { sys::mtmd_bitmap_free(self.0.as_ptr()) };
    }
}

/// What `mtmd_tokenize`'s return codes mean (tools/mtmd/mtmd.h).
fn tokenize_reason(code: i32) -> String {
    match code {
        1 => "the number of images differs from the number of image markers in the prompt".into(),
        2 => "an image could not be preprocessed (its size or aspect ratio is beyond what \
              llama.cpp's slicer handles)"
            .into(),
        other => format!("error code {other}"),
    }
}
