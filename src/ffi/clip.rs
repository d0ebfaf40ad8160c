//! The vision projector (mmproj), through our C++ shim over llama.cpp's clip API.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use super::{c_buf_to_string, shim_sys as shim};

/// Hyper-parameters of a loaded projector, as llama.cpp read them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipInfo {
    pub image_size: u32,
    pub patch_size: u32,
    pub minicpmv_version: i32,
    /// Embeddings produced per slice.
    pub query_num: u32,
    /// Width of one embedding; equals the language model's n_embd for a matching pair.
    pub n_embd: usize,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    pub is_minicpmv: bool,
}

/// Loading or encoding with the projector failed inside llama.cpp.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClipError {
    #[error("llama.cpp could not load the projector {}: {message}", path.display())]
    Load { path: PathBuf, message: String },
    #[error("the projector failed to encode a {width}x{height} image: {message}")]
    Encode {
        width: u32,
        height: u32,
        message: String,
    },
}

/// A loaded mmproj (`clip_ctx` behind the shim). Freed on drop.
#[derive(Debug)]
pub struct ClipProjector {
    ptr: NonNull<shim::mcv_clip>,
    info: ClipInfo,
}

// SAFETY: the clip context is only used through &mut self for encoding (one thread at a time)
// and has no thread affinity; moving it to another thread is fine.
unsafe impl Send for ClipProjector {}

const ERR_CAP: usize = 512;

impl ClipProjector {
    /// Loads an mmproj. `warmup` runs llama.cpp's warm-up encode at load time. The caller has
    /// already validated the file as a MiniCPM-V projector GGUF.
    pub fn load(path: &Path, warmup: bool) -> Result<ClipProjector, ClipError> {
        super::init_backend();
        let load_err = |message: String| ClipError::Load {
            path: path.to_path_buf(),
            message,
        };
        let c_path = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| load_err("the path contains a NUL byte".into()))?;
        let mut err = [0 as std::os::raw::c_char; ERR_CAP];
        // SAFETY: c_path is NUL-terminated; err has ERR_CAP bytes and the shim writes at most
        // that many (NUL-terminated). The shim catches all C++ exceptions.
        let raw =
            unsafe { shim::mcv_clip_load(c_path.as_ptr(), warmup, err.as_mut_ptr(), ERR_CAP) };
        let ptr = NonNull::new(raw).ok_or_else(|| load_err(c_buf_to_string(&err)))?;
        let mut raw_info = shim::mcv_clip_info::default();
        // SAFETY: ptr is a valid projector; raw_info is a valid out-parameter.
        unsafe { shim::mcv_clip_get_info(ptr.as_ptr(), &mut raw_info) };
        let info = ClipInfo {
            image_size: u32::try_from(raw_info.image_size).unwrap_or(0),
            patch_size: u32::try_from(raw_info.patch_size).unwrap_or(0),
            minicpmv_version: raw_info.minicpmv_version,
            query_num: u32::try_from(raw_info.query_num).unwrap_or(0),
            n_embd: usize::try_from(raw_info.n_embd).unwrap_or(0),
            image_mean: raw_info.image_mean,
            image_std: raw_info.image_std,
            is_minicpmv: raw_info.is_minicpmv,
        };
        Ok(ClipProjector { ptr, info })
    }

    pub fn info(&self) -> &ClipInfo {
        &self.info
    }

    /// Number of embeddings the projector produces for a `width` x `height` input.
    pub fn n_output_tokens(&self, width: u32, height: u32) -> Option<usize> {
        let w = i32::try_from(width).ok()?;
        let h = i32::try_from(height).ok()?;
        // SAFETY: valid projector; the shim only reads the size.
        let n = unsafe { shim::mcv_clip_n_output_tokens(self.ptr.as_ptr(), w, h) };
        usize::try_from(n).ok().filter(|&n| n > 0)
    }

    /// Encodes one preprocessed image (`width*height*3` floats, HWC, normalised) into
    /// `n_output_tokens * n_embd` floats.
    pub fn encode(
        &mut self,
        pixels: &[f32],
        width: u32,
        height: u32,
        n_threads: i32,
    ) -> Result<Vec<f32>, ClipError> {
        let enc_err = |message: String| ClipError::Encode {
            width,
            height,
            message,
        };
        let expected_px = width as usize * height as usize * 3;
        if pixels.len() != expected_px || width == 0 || height == 0 {
            return Err(enc_err(format!(
                "{} floats given, {expected_px} expected",
                pixels.len()
            )));
        }
        let n_tok = self
            .n_output_tokens(width, height)
            .ok_or_else(|| enc_err("the projector reports no output for this size".into()))?;
        let mut out = vec![0f32; n_tok * self.info.n_embd];
        let mut err = [0 as std::os::raw::c_char; ERR_CAP];
        let (w, h) = (width as i32, height as i32);
        // SAFETY: pixels holds w*h*3 floats (checked above); out holds exactly out.len() floats
        // and the shim checks that this equals what the projector writes; err has ERR_CAP bytes.
        let rc = unsafe {
            shim::mcv_clip_encode(
                self.ptr.as_ptr(),
                n_threads,
                pixels.as_ptr(),
                w,
                h,
                out.as_mut_ptr(),
                out.len(),
                err.as_mut_ptr(),
                ERR_CAP,
            )
        };
        if rc != 0 {
            return Err(enc_err(c_buf_to_string(&err)));
        }
        Ok(out)
    }
}

impl Drop for ClipProjector {
    fn drop(&mut self) {
        // SAFETY: ptr came from mcv_clip_load and is freed exactly once.
        unsafe { shim::mcv_clip_free(self.ptr.as_ptr()) };
    }
}
