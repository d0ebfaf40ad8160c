//! Pure Rust image handling (no FFI): loading and decoding images with limits, MiniCPM-V slice
//! planning ([`plan_slices`]), llama.cpp-identical resizing ([`resize`]) and normalisation
//! ([`preprocess`]).
//!
//! The unit tests compare with llama.cpp's own preprocessing through the shim oracle
//! (`crate::ffi::ClipProjector::llama_slice_plan` / `llama_preprocess`); only the tests touch FFI.

mod load;
mod preprocess;
pub mod resize;
mod slice;

pub use load::{
    decode_image, load_image, ImageError, LoadedImage, DEFAULT_MAX_PIXELS, MAX_IMAGE_FILE_BYTES,
};
pub use preprocess::{preprocess, preprocess_rgb, F32Image, PreprocessError, Preprocessed};
pub use resize::{ResizeError, RgbImage};
pub use slice::{
    plan_slices, SliceError, SliceParams, SlicePlan, SliceRect, LLAMA_CPP_MAX_SLICES,
    MAX_IMAGE_SIDE,
};

/// A tiny synthetic MiniCPM-V 2.6 projector loaded once per test binary: llama.cpp's own
/// preprocessing (the oracle) only needs its `clip_hparams`.
#[cfg(test)]
pub(crate) mod oracle {
    use std::sync::{Mutex, MutexGuard, OnceLock};

    use crate::ffi::ClipProjector;
    use crate::model::family::Version;
    use crate::tools::synth::tiny_pair;

    static PROJECTOR: OnceLock<Mutex<ClipProjector>> = OnceLock::new();

    pub(crate) fn projector() -> MutexGuard<'static, ClipProjector> {
        let m = PROJECTOR.get_or_init(|| {
            let dir = tempfile::tempdir().expect("tempdir");
            let out = tiny_pair(Version::V2_6, dir.path());
            // clip reads the whole file into memory, so the temporary folder can go afterwards
            let p = ClipProjector::load(&out.mmproj, false, Default::default())
                .unwrap_or_else(|e| panic!("{e}"));
            assert!(p.info().is_minicpmv);
            Mutex::new(p)
        });
        m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
