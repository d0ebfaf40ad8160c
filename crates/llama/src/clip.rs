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
    /// `clip.minicpmv_version` of a resampler (0 for 4.6's merger).
    pub minicpmv_version: i32,
    /// Embeddings produced per slice by a resampler (0 for 4.6's merger, whose count follows
    /// the slice's pixels).
    pub query_num: u32,
    /// Patches merged per side into one embedding: 1 for the resampler, 4.6's scale factor.
    pub n_merge: u32,
    /// Width of one embedding; equals the language model's n_embd for a matching pair.
    pub n_embd: usize,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    /// A MiniCPM-V projector: the resampler of 2.5 .. 4.5, or 4.6's merger.
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
    /// llama.cpp's own preprocessing (the reference we compare with) refused or failed.
    #[error("llama.cpp's reference {what} failed for a {width}x{height} image: {message}")]
    Reference {
        what: &'static str,
        width: u32,
        height: u32,
        message: String,
    },
}

/// One slice rectangle of [`LlamaSlicePlan`], in pixels of the refined image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LlamaSliceRect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

/// llama.cpp's slice instructions for one image size, as computed by its own
/// `mtmd_image_preprocessor_llava_uhd::get_slice_instructions` (the reference for
/// `minicpmv::vision::plan_slices`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlamaSlicePlan {
    /// Size of the overview image.
    pub overview: (u32, u32),
    /// Size of the refined image the slices are cut from; `(0, 0)` when there are no slices.
    pub refined: (u32, u32),
    /// `(columns, rows)`; `(0, 0)` when there are no slices.
    pub grid: (u32, u32),
    /// Row-major slice rectangles (empty when there are no slices).
    pub slices: Vec<LlamaSliceRect>,
}

/// One image of [`ClipProjector::llama_preprocess`]: width, height and `width*height*3`
/// normalised floats (HWC).
pub type LlamaImageF32 = (u32, u32, Vec<f32>);

/// The largest image side llama.cpp's clip code accepts (`clip_image_size::area` asserts it).
pub const LLAMA_MAX_IMAGE_SIDE: u32 = 46_000;

/// More slices than llama.cpp ever makes (it hard-codes 9); a larger count is reported as an error.
const MAX_ORACLE_SLICES: usize = 64;

/// Owns an `mcv_preproc` result; freed on drop.
struct Preproc(NonNull<shim::mcv_preproc>);

impl Drop for Preproc {
    fn drop(&mut self) {
        // SAFETY: the pointer came from mcv_llama_preprocess and is freed exactly once.
        unsafe { shim::mcv_preproc_free(self.0.as_ptr()) };
    }
}

/// The attention kernel of the projector's vision tower.
///
/// llama.cpp's own default is "auto", which becomes flash attention only when a warm-up pass
/// tests it at load time; without the warm-up it stays plain. We always choose explicitly, so
/// the result does not depend on the warm-up setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProjectorAttention {
    /// ggml's fused flash-attention kernel (K and V cast to f16, f32 accumulation). Faster on
    /// CPUs, see docs/BENCHMARKS.md; what llama-mtmd-cli runs with its default warm-up.
    #[default]
    Flash,
    /// Q·K, softmax, ·V as separate ops (llama.cpp's choice without a warm-up).
    Plain,
}

impl std::str::FromStr for ProjectorAttention {
    type Err = String;

    /// `flash` or `plain`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "flash" => Ok(ProjectorAttention::Flash),
            "plain" => Ok(ProjectorAttention::Plain),
            other => Err(format!(
                "{other:?} is not an attention kernel: use flash or plain"
            )),
        }
    }
}

impl ProjectorAttention {
    /// The shim's `flash_attn` argument.
    pub(crate) fn shim_value(self) -> i32 {
        match self {
            ProjectorAttention::Flash => 1,
            ProjectorAttention::Plain => 0,
        }
    }

    /// The same choice as llama.cpp's mtmd parameter.
    pub(crate) fn llama_value(self) -> llama_cpp_sys_2::llama_flash_attn_type {
        match self {
            ProjectorAttention::Flash => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED,
            ProjectorAttention::Plain => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED,
        }
    }
}

/// A loaded mmproj (`clip_ctx` behind the shim). Freed on drop.
#[derive(Debug)]
pub struct ClipProjector {
    ptr: NonNull<shim::mcv_clip>,
    info: ClipInfo,
    /// Successful [`ClipProjector::encode`] calls so far.
    n_encodes: usize,
}

// SAFETY: the clip context is only used through &mut self for encoding (one thread at a time)
// and has no thread affinity; moving it to another thread is fine.
unsafe impl Send for ClipProjector {}

const ERR_CAP: usize = 512;

impl ClipProjector {
    /// Loads an mmproj. `warmup` runs llama.cpp's warm-up graph reservation at load time;
    /// `attention` picks the vision tower's attention kernel. The caller has already validated
    /// the file as a MiniCPM-V projector GGUF.
    pub fn load(
        path: &Path,
        warmup: bool,
        attention: ProjectorAttention,
    ) -> Result<ClipProjector, ClipError> {
        super::init_backend();
        let load_err = |message: String| ClipError::Load {
            path: path.to_path_buf(),
            message,
        };
        let c_path = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| load_err("the path contains a NUL byte".into()))?;
        let mut err = [0 as std::os::raw::c_char; ERR_CAP];
        let capture = super::backend::ErrorCapture::begin();
        // SAFETY: c_path is NUL-terminated; err has ERR_CAP bytes and the shim writes at most
        // that many (NUL-terminated). The shim catches all C++ exceptions.
        let raw = unsafe {
            shim::mcv_clip_load(
                c_path.as_ptr(),
                warmup,
                attention.shim_value(),
                err.as_mut_ptr(),
                ERR_CAP,
            )
        };
        let ptr =
            NonNull::new(raw).ok_or_else(|| load_err(with_log(c_buf_to_string(&err), &capture)))?;
        let mut raw_info = shim::mcv_clip_info::default();
        // SAFETY: ptr is a valid projector; raw_info is a valid out-parameter.
        unsafe { shim::mcv_clip_get_info(ptr.as_ptr(), &mut raw_info) };
        let info = ClipInfo {
            image_size: u32::try_from(raw_info.image_size).unwrap_or(0),
            patch_size: u32::try_from(raw_info.patch_size).unwrap_or(0),
            minicpmv_version: raw_info.minicpmv_version,
            query_num: u32::try_from(raw_info.query_num).unwrap_or(0),
            n_merge: u32::try_from(raw_info.n_merge).unwrap_or(0).max(1),
            n_embd: usize::try_from(raw_info.n_embd).unwrap_or(0),
            image_mean: raw_info.image_mean,
            image_std: raw_info.image_std,
            is_minicpmv: raw_info.is_minicpmv || raw_info.is_minicpmv4_6,
        };
        Ok(ClipProjector {
            ptr,
            info,
            n_encodes: 0,
        })
    }

    /// How many images this projector has encoded (each call to [`ClipProjector::encode`]).
    pub fn n_encode_calls(&self) -> usize {
        self.n_encodes
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
        self.n_encodes += 1;
        Ok(out)
    }
}

/// Reference implementations: llama.cpp's own MiniCPM-V preprocessing, run through the shim.
/// They are what our pure-Rust `minicpmv::vision` code is tested against.
impl ClipProjector {
    fn check_reference_input(
        &self,
        what: &'static str,
        width: u32,
        height: u32,
    ) -> Result<(i32, i32), ClipError> {
        let err = |message: String| ClipError::Reference {
            what,
            width,
            height,
            message,
        };
        if !self.info.is_minicpmv {
            return Err(err(
                "the projector is not a MiniCPM-V resampler or merger (llama.cpp uses another \
                 preprocessor)"
                    .into(),
            ));
        }
        if !(1..=LLAMA_MAX_IMAGE_SIDE).contains(&width)
            || !(1..=LLAMA_MAX_IMAGE_SIDE).contains(&height)
        {
            return Err(err(format!(
                "each side must be in 1..={LLAMA_MAX_IMAGE_SIDE} (llama.cpp asserts it)"
            )));
        }
        // Both fit in i32 because they are at most 46000.
        Ok((width as i32, height as i32))
    }

    /// llama.cpp's slice instructions for a `width` x `height` image
    /// (`mtmd_image_preprocessor_llava_uhd::get_slice_instructions`, always at most 9 slices).
    pub fn llama_slice_plan(&self, width: u32, height: u32) -> Result<LlamaSlicePlan, ClipError> {
        const WHAT: &str = "slice plan";
        let (w, h) = self.check_reference_input(WHAT, width, height)?;
        let err = |message: String| ClipError::Reference {
            what: WHAT,
            width,
            height,
            message,
        };
        let mut plan = shim::mcv_slice_plan::default();
        let mut rects = vec![shim::mcv_slice_rect::default(); MAX_ORACLE_SLICES];
        let mut err_buf = [0 as std::os::raw::c_char; ERR_CAP];
        // SAFETY: self.ptr is a valid projector (only read); plan is a valid out-parameter;
        // rects holds rects.len() elements and the shim writes at most that many; err_buf has
        // ERR_CAP bytes. w and h are in 1..=46000 (checked) and the projector is MiniCPM-V, so
        // llama.cpp takes no asserting path; the shim catches all C++ exceptions.
        let rc = unsafe {
            shim::mcv_llama_slice_plan(
                self.ptr.as_ptr(),
                w,
                h,
                &mut plan,
                rects.as_mut_ptr(),
                rects.len(),
                err_buf.as_mut_ptr(),
                ERR_CAP,
            )
        };
        if rc != 0 {
            return Err(err(c_buf_to_string(&err_buf)));
        }
        let to_u32 = |v: i32, name: &str| {
            u32::try_from(v).map_err(|_| err(format!("llama.cpp returned a negative {name}: {v}")))
        };
        let n = usize::try_from(plan.n_slices)
            .ok()
            .filter(|&n| n <= rects.len())
            .ok_or_else(|| err(format!("bad slice count {}", plan.n_slices)))?;
        let mut slices = Vec::with_capacity(n);
        for r in &rects[..n] {
            slices.push(LlamaSliceRect {
                x: to_u32(r.x, "slice x")?,
                y: to_u32(r.y, "slice y")?,
                w: to_u32(r.w, "slice width")?,
                h: to_u32(r.h, "slice height")?,
            });
        }
        Ok(LlamaSlicePlan {
            overview: (
                to_u32(plan.overview_w, "overview width")?,
                to_u32(plan.overview_h, "overview height")?,
            ),
            refined: (
                to_u32(plan.refined_w, "refined width")?,
                to_u32(plan.refined_h, "refined height")?,
            ),
            grid: (
                to_u32(plan.grid_w, "grid width")?,
                to_u32(plan.grid_h, "grid height")?,
            ),
            slices,
        })
    }

    /// Runs llama.cpp's full MiniCPM-V `preprocess()` on a `width` x `height` RGB image
    /// (`rgb.len() == width*height*3`, row-major). Returns the overview first, then the slices
    /// in row-major order, each as normalised HWC floats.
    pub fn llama_preprocess(
        &self,
        width: u32,
        height: u32,
        rgb: &[u8],
    ) -> Result<Vec<LlamaImageF32>, ClipError> {
        const WHAT: &str = "preprocessing";
        let (w, h) = self.check_reference_input(WHAT, width, height)?;
        let err = |message: String| ClipError::Reference {
            what: WHAT,
            width,
            height,
            message,
        };
        let need = width as usize * height as usize * 3;
        if rgb.len() != need {
            return Err(err(format!(
                "{} bytes given, a {width}x{height} RGB image has {need}",
                rgb.len()
            )));
        }
        let mut err_buf = [0 as std::os::raw::c_char; ERR_CAP];
        // SAFETY: self.ptr is a valid projector (only read); rgb holds exactly rgb.len() bytes,
        // which equals w*h*3 (checked above); err_buf has ERR_CAP bytes; w and h are in
        // 1..=46000 and the projector is MiniCPM-V (checked). The shim catches all C++
        // exceptions (e.g. llama.cpp's "resize target out of range") and returns NULL then.
        let raw = unsafe {
            shim::mcv_llama_preprocess(
                self.ptr.as_ptr(),
                rgb.as_ptr(),
                rgb.len(),
                w,
                h,
                err_buf.as_mut_ptr(),
                ERR_CAP,
            )
        };
        let pp = Preproc(NonNull::new(raw).ok_or_else(|| err(c_buf_to_string(&err_buf)))?);
        // SAFETY: pp.0 is a valid mcv_preproc until pp is dropped.
        let count = unsafe { shim::mcv_preproc_count(pp.0.as_ptr()) };
        let mut out = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        for i in 0..count.max(0) {
            let (mut iw, mut ih) = (0i32, 0i32);
            // SAFETY: valid handle, i < count, iw/ih are valid out-parameters.
            let rc = unsafe { shim::mcv_preproc_size(pp.0.as_ptr(), i, &mut iw, &mut ih) };
            let (iw, ih) = match (rc, u32::try_from(iw), u32::try_from(ih)) {
                (0, Ok(a), Ok(b)) => (a, b),
                _ => return Err(err(format!("cannot read the size of image {i}"))),
            };
            let mut buf = vec![0f32; iw as usize * ih as usize * 3];
            // SAFETY: valid handle, i < count; buf holds exactly buf.len() floats and the shim
            // checks that this equals the image's element count before writing.
            let rc =
                unsafe { shim::mcv_preproc_copy(pp.0.as_ptr(), i, buf.as_mut_ptr(), buf.len()) };
            if rc != 0 {
                return Err(err(format!("cannot copy image {i} ({iw}x{ih})")));
            }
            out.push((iw, ih, buf));
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

/// `message` with what llama.cpp logged as errors meanwhile, or a pointer to `-v` when it
/// logged nothing.
pub(crate) fn with_log(message: String, capture: &super::backend::ErrorCapture) -> String {
    let said = capture.said();
    if said.is_empty() {
        format!("{message} (run with -v for llama.cpp's log)")
    } else {
        format!("{message}{said}")
    }
}
