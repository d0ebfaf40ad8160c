//! Pure Rust image handling (no FFI): loading and decoding images with limits, MiniCPM-V slice
//! planning ([`plan_slices`]), llama.cpp-identical resizing ([`resize`]) and normalisation
//! ([`preprocess`]).
//!
//! The unit tests compare with llama.cpp's own preprocessing through the shim oracle
//! (`crate::ffi::ClipProjector::llama_slice_plan` / `llama_preprocess`); only the tests touch FFI.

mod format;
mod load;
mod preprocess;
pub mod resize;
mod slice;
pub mod video;

pub use format::ImageFormat;
pub use load::{
    decode_image, load_image, ImageError, LoadedImage, DEFAULT_MAX_PIXELS, MAX_IMAGE_FILE_BYTES,
};
pub use preprocess::{preprocess, preprocess_rgb, F32Image, PreprocessError, Preprocessed};
pub use resize::{ResizeError, RgbImage};
pub use slice::{
    plan_slices, SliceError, SliceParams, SlicePlan, SliceRect, LLAMA_CPP_MAX_SLICES,
    MAX_IMAGE_SIDE,
};

/// Tiny synthetic projectors loaded once per test binary: llama.cpp's own preprocessing (the
/// oracle) only needs their `clip_hparams`. One per merge: the MiniCPM-V 2.6 resampler (1)
/// and MiniCPM-V 4.6's merger at scale factor 4 (16x) and 2 (4x).
#[cfg(test)]
pub(crate) mod oracle {
    use std::sync::{Mutex, MutexGuard, OnceLock};

    use crate::ffi::ClipProjector;
    use crate::model::family::{Scale, Version};
    use crate::tools::synth::{synth, SynthOptions, WeightType};

    static PROJECTORS: [OnceLock<Mutex<ClipProjector>>; 3] =
        [OnceLock::new(), OnceLock::new(), OnceLock::new()];

    /// The 2.6 resampler.
    pub(crate) fn projector() -> MutexGuard<'static, ClipProjector> {
        projector_for(1)
    }

    /// The projector of `merge` patches per side: 1 (2.6's resampler), 4 or 2 (4.6's merger).
    pub(crate) fn projector_for(merge: u32) -> MutexGuard<'static, ClipProjector> {
        let (slot, version, scale_factor) = match merge {
            1 => (0, Version::V2_6, None),
            4 => (1, Version::V4_6, Some(4)),
            2 => (2, Version::V4_6, Some(2)),
            _ => panic!("no oracle projector merges {merge} patches"),
        };
        let m = PROJECTORS[slot].get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let out = synth(&SynthOptions {
                version,
                scale: Scale::Tiny,
                out_dir: dir.path().to_path_buf(),
                dtype: WeightType::F16,
                seed: 1,
                scale_factor,
            })
            .unwrap_or_else(|e| panic!("synth: {e}"));
            // clip reads the whole file into memory, so the temporary folder can go afterwards
            let p = ClipProjector::load(&out.mmproj, false, Default::default())
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(p.info().is_minicpmv);
            assert_eq!(p.info().n_merge, merge);
            Mutex::new(p)
        });
        m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
