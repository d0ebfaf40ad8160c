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

/// A normalised float image, HWC (3 floats per pixel, RGB), as llama.cpp's `clip_image_f32`
/// holds it: each value is `(byte / 255 - mean[c]) / std[c]`.
#[derive(Debug, Clone, PartialEq)]
pub struct F32Image {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` floats.
    pub data: Vec<f32>,
}

/// The projector inputs for one image: the overview, then the slices in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocessed {
    /// The whole image stretched to [`SlicePlan::overview`].
    pub overview: F32Image,
    /// One image per [`SlicePlan::slices`] rectangle, in the same order, cut from the refined
    /// image; empty when the plan has no grid.
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
    /// The pixel buffer's length is not `width * height * 3`.
    #[error("pixel buffer holds {len} bytes, a {width}x{height} RGB image needs {}", *width as usize * *height as usize * 3)]
    BufferSize {
        /// Width given, in pixels.
        width: u32,
        /// Height given, in pixels.
        height: u32,
        /// Bytes in the buffer.
        len: usize,
    },
    /// The plan's [`SlicePlan::source`] is not the image's size.
    #[error("the slice plan was made for a {}x{} image, not {width}x{height}", plan.0, plan.1)]
    PlanMismatch {
        /// Width of the image, in pixels.
        width: u32,
        /// Height of the image, in pixels.
        height: u32,
        /// The `(width, height)` the plan was made for.
        plan: (u32, u32),
    },
    /// The plan contradicts itself (slices without a refined size); the text says how. Only a
    /// hand-made plan can do this: [`super::plan_slices`] never returns one.
    #[error("the slice plan is inconsistent: {0}")]
    BadPlan(String),
    /// A standard deviation is zero or not finite, so the normalisation cannot divide by it.
    #[error("std[{channel}] is {value}; the normalisation divides by it")]
    Std {
        /// The channel: 0 red, 1 green, 2 blue.
        channel: usize,
        /// The offending value.
        value: f32,
    },
    /// Resizing or cropping refused (a target beyond llama.cpp's limits, a slice outside the
    /// refined image).
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
        assert_eq!(
            &out.overview.data[..3],
            &[-1.0, 1.0, (51.0f32 / 255.0 - 0.5) / 0.5]
        );
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
        assert!(
            matches!(e, PreprocessError::Resize(ResizeError::Target { .. })),
            "{e}"
        );
        // a hand-made inconsistent plan
        let mut plan = plan_slices(1000, 700, &SliceParams::default()).expect("plan");
        plan.slices[3].x += 1;
        let rgb = vec![0u8; 1000 * 700 * 3];
        assert!(preprocess_rgb(1000, 700, &rgb, &plan, MEAN, STD).is_err());
    }
}

/// Pixel parity with llama.cpp's own `preprocess()` (through the shim oracle).
#[cfg(test)]
mod parity {
    use super::super::slice::{plan_slices, SliceParams};
    use super::*;
    use crate::vision::oracle;

    /// Deterministic non-trivial content: gradients, a few hard edges and fixed-seed LCG noise.
    fn test_image(w: u32, h: u32, seed: u64) -> Vec<u8> {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut v = Vec::with_capacity(w as usize * h as usize * 3);
        for y in 0..h {
            for x in 0..w {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let noise = ((s >> 40) % 64) as i64 - 32;
                let gx = i64::from(x) * 255 / i64::from(w.max(2) - 1);
                let gy = i64::from(y) * 255 / i64::from(h.max(2) - 1);
                let edge = if (x / 37 + y / 23) % 2 == 0 { 60 } else { -60 };
                let r = gx + noise;
                let g = gy + edge + noise / 2;
                let b = (gx + gy) / 2 - edge + ((s >> 20) % 200) as i64 - 100;
                v.extend([r, g, b].map(|c| c.clamp(0, 255) as u8));
            }
        }
        v
    }

    /// Compares two float images bit for bit; returns (mismatches, max |a - b|).
    fn compare(ours: &F32Image, theirs: &(u32, u32, Vec<f32>)) -> (usize, f32) {
        assert_eq!((ours.width, ours.height), (theirs.0, theirs.1), "size");
        assert_eq!(ours.data.len(), theirs.2.len());
        let mut n = 0;
        let mut max = 0f32;
        for (a, b) in ours.data.iter().zip(&theirs.2) {
            if a.to_bits() != b.to_bits() {
                n += 1;
                max = max.max((a - b).abs());
            }
        }
        (n, max)
    }

    /// Our preprocessing against llama.cpp's for the resampler and for 4.6's merger at both
    /// scale factors (mtmd's `mtmd_image_preprocessor_minicpmv`: slices in multiples of 56 or
    /// 28, small images kept in their aspect ratio at 4x).
    #[test]
    fn preprocess_is_bit_identical_to_llama_cpp() {
        for merge in [1, 4, 2] {
            preprocess_matches(merge);
        }
    }

    fn preprocess_matches(merge: u32) {
        let proj = oracle::projector_for(merge);
        let info = *proj.info();
        let params = SliceParams {
            image_size: info.image_size,
            patch_size: info.patch_size,
            max_slices: 9,
            merge: info.n_merge,
        };
        // below 448 (stretched up), 1-pixel strips, exactly 449, odd sizes, panoramic and tall,
        // the DESIGN.md sizes and a phone photo
        let sizes: [(u32, u32); 12] = [
            (300, 200),
            (1, 1),
            (449, 1),
            (1, 700),
            (449, 449),
            (1000, 700),
            (1333, 777),
            (2000, 301),
            (517, 1913),
            (1920, 1080),
            (4032, 3024),
            (10_000, 100),
        ];
        for (i, &(w, h)) in sizes.iter().enumerate() {
            let rgb = test_image(w, h, i as u64 + 1);
            let plan = plan_slices(w, h, &params).expect("plan");
            let ours = preprocess_rgb(w, h, &rgb, &plan, info.image_mean, info.image_std)
                .unwrap_or_else(|e| panic!("{w}x{h}: {e}"));
            let theirs = proj
                .llama_preprocess(w, h, &rgb)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                theirs.len(),
                plan.n_chunks(),
                "merge {merge} {w}x{h}: number of images"
            );
            for (k, (o, t)) in ours.chunks().zip(&theirs).enumerate() {
                let (n, max) = compare(o, t);
                assert_eq!(
                    n, 0,
                    "merge {merge} {w}x{h} image {k}: {n} floats differ, max |diff| {max}"
                );
            }
        }
    }

    /// Every byte value 0..=255 in every channel goes through both normalisations (our lookup
    /// table and llama.cpp's `from_u8` + `normalize`) and gives the same bits.
    #[test]
    fn every_byte_value_normalises_identically() {
        let proj = oracle::projector();
        let info = *proj.info();
        // 448x1 -> stretched to 448x448 (only the vertical pass runs, the width is unchanged):
        // the first output row holds every byte value 0..=255 in some channel
        let (w, h) = (448u32, 1u32);
        let rgb: Vec<u8> = (0..w * 3).map(|i| (i % 256) as u8).collect();
        let plan = plan_slices(w, h, &SliceParams::default()).expect("plan");
        let ours = preprocess_rgb(w, h, &rgb, &plan, info.image_mean, info.image_std).expect("pp");
        let theirs = proj.llama_preprocess(w, h, &rgb).expect("oracle");
        assert_eq!(compare(&ours.overview, &theirs[0]), (0, 0.0));
    }
}
