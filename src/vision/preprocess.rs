//! From RGB pixels and a [`SlicePlan`] to the normalised float images the projector encodes.
//!
//! Mirrors llama.cpp's `mtmd_image_preprocessor_llava_uhd::preprocess` and `slice_image`
//! (tools/mtmd/mtmd-image.cpp): the overview is the whole image stretched to `plan.overview`
//! (bicubic, no padding); the slices are cut from the image resized to `plan.refine` keeping its
//! aspect ratio and centre-padded with black; each image is converted as
//! `clip_image_f32::from_u8` (`x / 255.0f`) then `normalize` (`(x - mean[c]) / std[c]`), all in
//! f32. The output is bit-identical to llama.cpp's (see the tests).

use super::load::LoadedImage;
use super::resize::{self, ResizeError, RgbImage};
use super::slice::{SlicePlan, SliceRect};

/// A normalised float image, HWC (3 floats per pixel, RGB).
#[derive(Debug, Clone, PartialEq)]
pub struct F32Image {
    pub width: u32,
    pub height: u32,
    /// `width * height * 3` floats.
    pub data: Vec<f32>,
}

/// The projector inputs for one image: the overview, then the slices in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessed {
    pub overview: F32Image,
    pub slices: Vec<F32Image>,
}

impl Preprocessed {
    /// The overview followed by the slices: the order the projector is run in.
    pub fn chunks(&self) -> impl Iterator<Item = &F32Image> {
        std::iter::once(&self.overview).chain(self.slices.iter())
    }
}

/// Why an image could not be preprocessed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PreprocessError {
    #[error("pixel buffer holds {len} bytes, a {width}x{height} RGB image needs {}", *width as usize * *height as usize * 3)]
    BufferSize { width: u32, height: u32, len: usize },
    #[error("the slice plan was made for a {}x{} image, not {width}x{height}", plan.0, plan.1)]
    PlanMismatch {
        width: u32,
        height: u32,
        plan: (u32, u32),
    },
    #[error("the slice plan is inconsistent: {0}")]
    BadPlan(String),
    #[error("std[{channel}] is {value}; the normalisation divides by it")]
    Std { channel: usize, value: f32 },
    #[error(transparent)]
    Resize(#[from] ResizeError),
}

/// `u8 -> (u8 / 255 - mean[c]) / std[c]` for every byte value and channel, computed with the
/// same f32 operations as llama.cpp (`from_u8` then `normalize`), so a lookup gives identical
/// bits.
struct Normalizer {
    lut: [[f32; 256]; 3],
}

impl Normalizer {
    fn new(mean: [f32; 3], std: [f32; 3]) -> Normalizer {
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, out) in table.iter_mut().enumerate() {
                let x = v as f32 / 255.0f32;
                *out = (x - mean[c]) / std[c];
            }
        }
        Normalizer { lut }
    }

    fn extend(&self, out: &mut Vec<f32>, rgb: &[u8]) {
        for px in rgb.chunks_exact(3) {
            out.push(self.lut[0][usize::from(px[0])]);
            out.push(self.lut[1][usize::from(px[1])]);
            out.push(self.lut[2][usize::from(px[2])]);
        }
    }

    fn image(&self, img: &RgbImage) -> F32Image {
        let mut data = Vec::with_capacity(img.data.len());
        self.extend(&mut data, &img.data);
        F32Image {
            width: img.width,
            height: img.height,
            data,
        }
    }

    fn crop(&self, img: &RgbImage, r: &SliceRect) -> Result<F32Image, ResizeError> {
        resize::check_crop(img, r.x, r.y, r.w, r.h)?;
        let mut data = Vec::with_capacity(r.w as usize * r.h as usize * 3);
        for row in resize::crop_rows(img, r.x, r.y, r.w, r.h) {
            self.extend(&mut data, row);
        }
        Ok(F32Image {
            width: r.w,
            height: r.h,
            data,
        })
    }
}

/// Preprocesses a loaded image; see [`preprocess_rgb`].
pub fn preprocess(
    img: &LoadedImage,
    plan: &SlicePlan,
    mean: [f32; 3],
    std: [f32; 3],
) -> Result<Preprocessed, PreprocessError> {
    preprocess_rgb(img.width, img.height, &img.rgb, plan, mean, std)
}

/// Preprocesses a `width` x `height` RGB image (`rgb.len() == width*height*3`, row-major)
/// following `plan` (from [`super::plan_slices`] for the same size), normalising with the
/// projector's `mean`/`std` (`ClipInfo::image_mean`/`image_std`).
pub fn preprocess_rgb(
    width: u32,
    height: u32,
    rgb: &[u8],
    plan: &SlicePlan,
    mean: [f32; 3],
    std: [f32; 3],
) -> Result<Preprocessed, PreprocessError> {
    if rgb.len() as u64 != u64::from(width) * u64::from(height) * 3 {
        return Err(PreprocessError::BufferSize {
            width,
            height,
            len: rgb.len(),
        });
    }
    if plan.source != (width, height) {
        return Err(PreprocessError::PlanMismatch {
            width,
            height,
            plan: plan.source,
        });
    }
    if let Some((channel, &value)) = std
        .iter()
        .enumerate()
        .find(|(_, v)| **v == 0.0 || !v.is_finite())
    {
        return Err(PreprocessError::Std { channel, value });
    }
    let norm = Normalizer::new(mean, std);

    // slice_image: the overview is a plain (PAD_NONE) bicubic resize of the original
    let (ow, oh) = plan.overview;
    let overview = norm.image(&resize::resize_stretch(rgb, width, height, ow, oh)?);

    let mut slices = Vec::with_capacity(plan.slices.len());
    if !plan.slices.is_empty() {
        let (rw, rh) = plan.refine.ok_or_else(|| {
            PreprocessError::BadPlan(format!("{} slices but no refined size", plan.slices.len()))
        })?;
        // the refined image: aspect-preserving bicubic resize, centre-padded with black
        // (hparams.image_pad_rf = PAD_CEIL, image_pad_color_rf = {0, 0, 0})
        let refined = resize::resize_pad(rgb, width, height, rw, rh, [0, 0, 0])?;
        for r in &plan.slices {
            slices.push(norm.crop(&refined, r)?);
        }
    }
    Ok(Preprocessed { overview, slices })
}

#[cfg(test)]
mod tests {
    use super::super::slice::{plan_slices, SliceParams};
    use super::*;

    const MEAN: [f32; 3] = [0.5, 0.5, 0.5];
    const STD: [f32; 3] = [0.5, 0.5, 0.5];

    #[test]
    fn normalises_like_llama_cpp() {
        let plan = plan_slices(1, 1, &SliceParams::default()).expect("plan");
        let out = preprocess_rgb(1, 1, &[0, 255, 51], &plan, MEAN, STD).expect("preprocess");
        assert_eq!((out.overview.width, out.overview.height), (448, 448));
        assert!(out.slices.is_empty());
        assert_eq!(&out.overview.data[..3], &[-1.0, 1.0, (51.0f32 / 255.0 - 0.5) / 0.5]);
    }

    #[test]
    fn sizes_follow_the_plan() {
        let (w, h) = (1000u32, 700u32);
        let rgb = vec![128u8; (w * h * 3) as usize];
        let plan = plan_slices(w, h, &SliceParams::default()).expect("plan");
        let out = preprocess_rgb(w, h, &rgb, &plan, MEAN, STD).expect("preprocess");
        assert_eq!((out.overview.width, out.overview.height), plan.overview);
        assert_eq!(out.slices.len(), plan.n_slices());
        assert_eq!(out.chunks().count(), plan.n_chunks());
        for (s, r) in out.slices.iter().zip(&plan.slices) {
            assert_eq!((s.width, s.height), (r.w, r.h));
            assert_eq!(s.data.len(), (r.w * r.h * 3) as usize);
        }
    }

    #[test]
    fn errors() {
        let plan = plan_slices(10, 10, &SliceParams::default()).expect("plan");
        assert!(matches!(
            preprocess_rgb(10, 10, &[0; 299], &plan, MEAN, STD),
            Err(PreprocessError::BufferSize { .. })
        ));
        assert!(matches!(
            preprocess_rgb(10, 5, &[0; 150], &plan, MEAN, STD),
            Err(PreprocessError::PlanMismatch { .. })
        ));
        assert!(matches!(
            preprocess_rgb(10, 10, &[0; 300], &plan, MEAN, [0.5, 0.0, 0.5]),
            Err(PreprocessError::Std { channel: 1, .. })
        ));
        // 46000x1: llama.cpp's refined image would be 92008 pixels wide, beyond its resize
        // limit; we report the same refusal instead of panicking.
        let plan = plan_slices(46_000, 1, &SliceParams::default()).expect("plan");
        let e = preprocess_rgb(46_000, 1, &vec![0; 46_000 * 3], &plan, MEAN, STD).unwrap_err();
        assert!(matches!(e, PreprocessError::Resize(ResizeError::Target { .. })), "{e}");
        // a hand-made inconsistent plan
        let mut plan = plan_slices(1000, 700, &SliceParams::default()).expect("plan");
        plan.slices[3].x += 1;
        let rgb = vec![0u8; 1000 * 700 * 3];
        assert!(preprocess_rgb(1000, 700, &rgb, &plan, MEAN, STD).is_err());
    }
}
