//! MiniCPM-V "UHD" slice planning: how an image is cut into one overview plus a grid of slices.
//!
//! [`plan_slices`] reproduces, bit for bit, llama.cpp's
//! `mtmd_image_preprocessor_llava_uhd::get_slice_instructions` (tools/mtmd/mtmd-image.cpp of the
//! llama.cpp bundled in llama-cpp-sys-2 0.1.161), which mtmd uses for
//! `PROJECTOR_TYPE_MINICPMV` (tools/mtmd/mtmd.cpp, `init_vision`), and its override
//! `mtmd_image_preprocessor_minicpmv::get_slice_instructions` (mtmd-image.cpp:895-909) for
//! `PROJECTOR_TYPE_MINICPMV4_6`. With `s` = image size (448) and `p` = patch size (14) times
//! `n_merge` ([`SliceParams::merge`]: 1 for the resampler, 4 or 2 for 4.6's merger):
//!
//! ```text
//! 4.6 with n_merge == 2:     if float(w) * h / (s*s) <= 1: overview = get_best_resize(w, h, true),
//!                            no slices (aspect kept, up- or down-scaled; not stretched)
//! ensure_divide(L, p)      = max(int(roundf(float(L) / p) * p), p)          // roundf: half away from 0
//! get_best_resize(w,h,up)  : if w*h > s*s (int) or up:
//!                              r = float(w)/h; h = int(s / sqrtf(r)); w = int(h * r)   // float32
//!                            return (ensure_divide(w, p), ensure_divide(h, p))
//! if w <= s and h <= s:      overview = (s, s) (stretched), no slices
//! overview                 = get_best_resize(w, h, false)
//! log_ratio (float)        = (float) log((double)(float(w) / h))
//! ratio (float)            = float(w) * h / (s*s)
//! multiple (int)           = int(fmin(ceilf(ratio), max_slices))            // llama.cpp: max_slices = 9
//! get_best_grid            : n in {multiple-1, multiple, multiple+1}, skipping n == 1 and n > max;
//!                            for each n, m = 1..=n dividing n gives the grid (cols m, rows n/m);
//!                            error (float) = |log_ratio - log((double) cols / rows)| (in double);
//!                            the first grid with a strictly smaller error wins (start: 1x1, +inf)
//! get_refine_size          : cell = get_best_resize(ensure_divide(w, cols) / cols,
//!                                                   ensure_divide(h, rows) / rows, true)
//!                            refine = cell * (cols, rows)
//! slices                   : row-major (x = c * cell.w, y = r * cell.h, cell)
//! ```
//!
//! Every step uses the same types as the C++ (f32 where it uses float, f64 where it uses double,
//! truncating casts where it uses `static_cast<int>`), so the results are identical; the golden
//! table `testdata/slice_golden.tsv` was produced by llama.cpp itself through the shim oracle
//! ([`crate::ffi::ClipProjector::llama_slice_plan`]) and the tests compare with it.
//!
//! **Our extension:** llama.cpp hard-codes `max_slice_nums = 9`. [`SliceParams::max_slices`]
//! lets the caller lower that cap (2..=8 run the same algorithm with the smaller cap); `1` means
//! "overview only": an image larger than `s` gets the same aspect-preserving overview llama.cpp
//! would give it, and no slices (llama.cpp's algorithm would otherwise produce a single 1x1
//! "grid" slice, which is never useful).

use super::resize::MAX_RESIZE_SIDE;
use std::fmt;

/// The largest image side llama.cpp accepts: `clip_image_size::area()` GGML_ASSERTs
/// `width, height <= 46000` (which also keeps `w * h` within `int`).
pub const MAX_IMAGE_SIDE: u32 = 46_000;

/// The slice cap llama.cpp hard-codes (`max_slice_nums = 9` in `get_slice_instructions`).
pub const LLAMA_CPP_MAX_SLICES: u32 = 9;

/// Parameters of the slicing: the projector's square input size and patch size, the patches
/// it merges per side, and the maximum number of slices (not counting the overview).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SliceParams {
    /// Side of the square vision-tower input (`clip.vision.image_size`), 448 for MiniCPM-V.
    pub image_size: u32,
    /// Patch size (`clip.vision.patch_size`), 14 for MiniCPM-V.
    pub patch_size: u32,
    /// 1..=9; 9 is llama.cpp's value, 1 means overview only (see the module docs).
    pub max_slices: u32,
    /// Patches merged per side into one embedding (llama.cpp's `n_merge`): 1 for the
    /// resampler, 4 (16x compression) or 2 (4x) for MiniCPM-V 4.6. Every side is a multiple of
    /// `patch_size * merge`, so each chunk has a whole number of embeddings.
    pub merge: u32,
}

impl Default for SliceParams {
    /// The resampler's values with llama.cpp's slice cap: 448, 14, 9, no merge.
    fn default() -> Self {
        SliceParams {
            image_size: 448,
            patch_size: 14,
            max_slices: LLAMA_CPP_MAX_SLICES,
            merge: 1,
        }
    }
}

impl SliceParams {
    /// The alignment of every side: `patch_size * merge`.
    pub fn align(&self) -> u32 {
        self.patch_size.saturating_mul(self.merge)
    }
}

/// One slice: a rectangle of the refined image, in pixels. In a plan every slice has the size
/// [`SlicePlan::slice`] and the slices tile [`SlicePlan::refine`] exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SliceRect {
    /// Left edge: column index times the slice width.
    pub x: u32,
    /// Top edge: row index times the slice height.
    pub y: u32,
    /// Width, a multiple of the alignment ([`SliceParams::align`]).
    pub w: u32,
    /// Height, a multiple of the alignment.
    pub h: u32,
}

/// How one image is turned into chunks: an overview, and optionally a grid of slices cut from
/// the image resized ("refined") to `refine`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlicePlan {
    /// Size of the input image this plan was made for.
    pub source: (u32, u32),
    /// Size the whole image is resized to for the overview (stretched, no padding).
    pub overview: (u32, u32),
    /// `(columns, rows)` of the slice grid; `None` when there are no slices.
    pub grid: Option<(u32, u32)>,
    /// Size of the refined image (aspect-preserving resize, centre-padded with black).
    pub refine: Option<(u32, u32)>,
    /// Size of one slice (`refine / grid`).
    pub slice: Option<(u32, u32)>,
    /// The slices, row-major (empty when there are none).
    pub slices: Vec<SliceRect>,
}

impl SlicePlan {
    /// Number of slices (0 when the image is only seen through its overview).
    pub fn n_slices(&self) -> usize {
        self.slices.len()
    }

    /// Number of projector passes: the overview plus each slice.
    pub fn n_chunks(&self) -> usize {
        1 + self.slices.len()
    }

    /// The pixel size of chunk `i`: 0 is the overview, 1.. the slices.
    pub fn chunk_size(&self, i: usize) -> (u32, u32) {
        match i.checked_sub(1).and_then(|k| self.slices.get(k)) {
            Some(r) => (r.w, r.h),
            None => self.overview,
        }
    }
}

/// Why no slice plan can be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SliceError {
    /// The image has a zero side.
    #[error("image has a zero size ({width}x{height})")]
    ZeroSize {
        /// Image width, in pixels.
        width: u32,
        /// Image height, in pixels.
        height: u32,
    },
    /// A side exceeds [`MAX_IMAGE_SIDE`], which llama.cpp would assert on.
    #[error(
        "image is {width}x{height}; each side must be at most {max} pixels (llama.cpp's limit)"
    )]
    TooLarge {
        /// Image width, in pixels.
        width: u32,
        /// Image height, in pixels.
        height: u32,
        /// The limit, [`MAX_IMAGE_SIDE`].
        max: u32,
    },
    /// The aspect ratio is so extreme that the slicer's resize target has a side above
    /// [`MAX_RESIZE_SIDE`] (llama.cpp refuses to resize there).
    #[error("image is {width}x{height}: at this aspect ratio the slicer would resize it to {target_width}x{target_height}, beyond llama.cpp's limit of {max} pixels per side")]
    AspectRatio {
        /// Image width, in pixels.
        width: u32,
        /// Image height, in pixels.
        height: u32,
        /// Width of the resize target, in pixels.
        target_width: u32,
        /// Height of the resize target, in pixels.
        target_height: u32,
        /// The limit, [`MAX_RESIZE_SIDE`].
        max: u32,
    },
    /// [`SliceParams::max_slices`] is 0 or above [`LLAMA_CPP_MAX_SLICES`].
    #[error("max_slices is {max_slices}; it must be in 1..={max}")]
    MaxSlices {
        /// The value given.
        max_slices: u32,
        /// The largest value allowed, [`LLAMA_CPP_MAX_SLICES`].
        max: u32,
    },
    /// The projector sizes are unusable: a zero patch or merge, an aligned patch
    /// (`patch_size * merge`) larger than the input or, with a merge, not dividing it, or an
    /// input side above [`MAX_IMAGE_SIDE`].
    #[error("invalid slicing parameters: image_size {image_size}, patch_size {patch_size}, merge {merge} (need 1 <= patch_size * merge <= image_size <= {max}, and with a merge above 1, image_size a multiple of patch_size * merge)")]
    Params {
        /// [`SliceParams::image_size`] given.
        image_size: u32,
        /// [`SliceParams::patch_size`] given.
        patch_size: u32,
        /// [`SliceParams::merge`] given.
        merge: u32,
        /// The largest `image_size` allowed, [`MAX_IMAGE_SIDE`].
        max: u32,
    },
}

impl SlicePlan {
    /// Whether the images of this plan can be made: the overview and the refined image are
    /// resized, and llama.cpp's resizer refuses a side above [`MAX_RESIZE_SIDE`], which a plan
    /// reaches at extreme aspect ratios (46000x1 refines to 92008x14). Planning itself follows
    /// llama.cpp's geometry for every size; this is checked before any pixel is touched.
    pub fn check_resizable(&self) -> Result<(), SliceError> {
        for target in std::iter::once(self.overview).chain(self.refine) {
            if target.0 > MAX_RESIZE_SIDE || target.1 > MAX_RESIZE_SIDE {
                return Err(SliceError::AspectRatio {
                    width: self.source.0,
                    height: self.source.1,
                    target_width: target.0,
                    target_height: target.1,
                    max: MAX_RESIZE_SIDE,
                });
            }
        }
        Ok(())
    }
}

/// Plans the slices of a `width` x `height` image (see the module docs for the algorithm and
/// the llama.cpp functions it mirrors). At `max_slices == 9` the result equals llama.cpp's
/// `get_slice_instructions` exactly.
pub fn plan_slices(width: u32, height: u32, p: &SliceParams) -> Result<SlicePlan, SliceError> {
    if p.patch_size == 0
        || p.merge == 0
        || p.align() > p.image_size
        || (p.merge > 1 && p.image_size % p.align() != 0)
        || p.image_size > MAX_IMAGE_SIDE
    {
        return Err(SliceError::Params {
            image_size: p.image_size,
            patch_size: p.patch_size,
            merge: p.merge,
            max: MAX_IMAGE_SIDE,
        });
    }
    if !(1..=LLAMA_CPP_MAX_SLICES).contains(&p.max_slices) {
        return Err(SliceError::MaxSlices {
            max_slices: p.max_slices,
            max: LLAMA_CPP_MAX_SLICES,
        });
    }
    if width == 0 || height == 0 {
        return Err(SliceError::ZeroSize { width, height });
    }
    if width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
        return Err(SliceError::TooLarge {
            width,
            height,
            max: MAX_IMAGE_SIDE,
        });
    }
    // All of these fit in i32 (checked above), as in the C++ (`int`).
    let (w, h) = (width as i32, height as i32);
    let s = p.image_size as i32;
    // "align slices by patch_size * n_merge so an integer number of merger output tokens fits
    // per slice" (get_slice_instructions)
    let patch = p.align() as i32;
    let max_slices = p.max_slices as i32;
    let source = (width, height);

    // mtmd_image_preprocessor_minicpmv (4.6): with n_merge == 2, an image of at most s*s
    // pixels keeps its aspect ratio in a single overview, up- or down-scaled.
    // const float ratio = (float)original_size.width * original_size.height / (slice_size * slice_size);
    if p.merge == 2 && (w as f32 * h as f32) / ((s * s) as f32) <= 1.0 {
        return Ok(SlicePlan {
            source,
            overview: to_u32_pair(best_resize(w, h, s, patch, true)),
            grid: None,
            refine: None,
            slice: None,
            slices: Vec::new(),
        });
    }

    // has_slices = original width > slice_size || height > slice_size
    if w <= s && h <= s {
        return Ok(SlicePlan {
            source,
            overview: (p.image_size, p.image_size),
            grid: None,
            refine: None,
            slice: None,
            slices: Vec::new(),
        });
    }

    // overview: get_best_resize(original, s, patch, allow_upscale = !has_slices = false)
    let overview = best_resize(w, h, s, patch, false);
    if max_slices == 1 {
        // Our extension: overview only.
        return Ok(SlicePlan {
            source,
            overview: to_u32_pair(overview),
            grid: None,
            refine: None,
            slice: None,
            slices: Vec::new(),
        });
    }

    // const float log_ratio = log((float)original_width / original_height);
    // `log` of the float quotient is the C double log (the disassembly calls `log`, not `logf`).
    let log_ratio = f64::from(w as f32 / h as f32).ln() as f32;
    // const float ratio = (float)original_width * original_height / (slice_size * slice_size);
    let ratio = (w as f32 * h as f32) / ((s * s) as f32);
    // const int multiple = fmin(ceil(ratio), max_slice_nums);
    let multiple = f64::from(ratio.ceil()).min(f64::from(max_slices)) as i32;

    let grid = best_grid(max_slices, multiple, log_ratio);
    let refine = refine_size(w, h, grid, s, patch);

    // The slice loop of get_slice_instructions: grid cells of refine / grid, row-major.
    let cell = (refine.0 / grid.0, refine.1 / grid.1);
    let mut slices = Vec::with_capacity((grid.0 * grid.1) as usize);
    let (mut y, mut row) = (0i32, 0i32);
    while y < refine.1 && row < grid.1 {
        let (mut x, mut col) = (0i32, 0i32);
        while x < refine.0 && col < grid.0 {
            slices.push(SliceRect {
                x: x as u32,
                y: y as u32,
                w: cell.0 as u32,
                h: cell.1 as u32,
            });
            x += cell.0;
            col += 1;
        }
        y += cell.1;
        row += 1;
    }

    Ok(SlicePlan {
        source,
        overview: to_u32_pair(overview),
        grid: Some(to_u32_pair(grid)),
        refine: Some(to_u32_pair(refine)),
        slice: Some(to_u32_pair(cell)),
        slices,
    })
}

/// Every value we produce is non-negative (`ensure_divide` returns at least the patch size and
/// the grid at least 1x1); negative values cannot occur, but map them to 0 rather than wrap.
fn to_u32_pair((a, b): (i32, i32)) -> (u32, u32) {
    (a.max(0) as u32, b.max(0) as u32)
}

/// `ensure_divide`: `std::max(static_cast<int>(std::round(static_cast<float>(length) /
/// patch_size) * patch_size), patch_size)` — `roundf` (half away from zero, like `f32::round`),
/// the product in float, then truncation.
fn ensure_divide(length: i32, patch: i32) -> i32 {
    let q = (length as f32 / patch as f32).round();
    ((q * patch as f32) as i32).max(patch)
}

/// `get_best_resize`: an aspect-preserving resize to about `s*s` pixels (when the image is
/// larger than that, or always with `allow_upscale`), then each side rounded to the patch size.
fn best_resize(w: i32, h: i32, s: i32, patch: i32, allow_upscale: bool) -> (i32, i32) {
    let (mut w, mut h) = (w, h);
    // `width * height > scale_resolution * scale_resolution` in int; the sides are at most
    // 46000 here, so the product fits i32 in the C++ too. i64 avoids any overflow question.
    if i64::from(w) * i64::from(h) > i64::from(s) * i64::from(s) || allow_upscale {
        let r = w as f32 / h as f32;
        h = (s as f32 / r.sqrt()) as i32;
        w = (h as f32 * r) as i32;
    }
    (ensure_divide(w, patch), ensure_divide(h, patch))
}

/// `get_refine_size` (always called with `allow_upscale = true`).
fn refine_size(w: i32, h: i32, grid: (i32, i32), s: i32, patch: i32) -> (i32, i32) {
    let refine_w = ensure_divide(w, grid.0);
    let refine_h = ensure_divide(h, grid.1);
    let cell = best_resize(refine_w / grid.0, refine_h / grid.1, s, patch, true);
    (cell.0 * grid.0, cell.1 * grid.1)
}

/// `get_best_grid`: the `(cols, rows)` whose log aspect ratio is closest to the image's.
fn best_grid(max_slices: i32, multiple: i32, log_ratio: f32) -> (i32, i32) {
    let mut best = (1, 1);
    let mut min_error = f32::INFINITY;
    for n in [multiple - 1, multiple, multiple + 1] {
        if n == 1 || n > max_slices {
            continue;
        }
        // candidate grids for n: (m, n / m) for each divisor m of n, m ascending
        let mut m = 1;
        while m <= n {
            if n % m == 0 {
                let grid = (m, n / m);
                // float error = std::abs(log_ratio - std::log(1.0 * grid.width / grid.height));
                // computed in double, stored in float
                let err = (f64::from(log_ratio) - (f64::from(grid.0) / f64::from(grid.1)).ln())
                    .abs() as f32;
                if err < min_error {
                    best = grid;
                    min_error = err;
                }
            }
            m += 1;
        }
    }
    best
}

impl fmt::Display for SlicePlan {
    /// `overview WxH, grid CxR, refine WxH, N slices of WxH` (or `overview WxH, no slices`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "overview {}x{}", self.overview.0, self.overview.1)?;
        match (self.grid, self.refine, self.slice) {
            (Some(g), Some(r), Some(c)) => write!(
                f,
                ", grid {}x{}, refine {}x{}, {} slices of {}x{}",
                g.0,
                g.1,
                r.0,
                r.1,
                self.slices.len(),
                c.0,
                c.1
            ),
            _ => write!(f, ", no slices"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(w: u32, h: u32) -> SlicePlan {
        plan_slices(w, h, &SliceParams::default()).unwrap_or_else(|e| panic!("{w}x{h}: {e}"))
    }

    /// The known values of DESIGN.md §3 (from llama.cpp's mtmd on these sizes).
    #[test]
    fn design_known_values() {
        let p = plan(1000, 700);
        assert_eq!(p.overview, (532, 378));
        assert_eq!(p.grid, Some((2, 2)));
        assert_eq!(p.refine, Some((1064, 756)));
        assert_eq!(p.slice, Some((532, 378)));
        assert_eq!(p.n_slices(), 4);
        assert_eq!(p.n_chunks(), 5);
        assert_eq!(
            p.slices,
            vec![
                SliceRect {
                    x: 0,
                    y: 0,
                    w: 532,
                    h: 378
                },
                SliceRect {
                    x: 532,
                    y: 0,
                    w: 532,
                    h: 378
                },
                SliceRect {
                    x: 0,
                    y: 378,
                    w: 532,
                    h: 378
                },
                SliceRect {
                    x: 532,
                    y: 378,
                    w: 532,
                    h: 378
                },
            ]
        );

        let p = plan(1920, 1080);
        assert_eq!(p.overview, (602, 336));
        assert_eq!(p.grid, Some((4, 2)));
        assert_eq!(p.refine, Some((1680, 952)));
        assert_eq!(p.n_slices(), 8);
        assert_eq!(
            p.slices[5],
            SliceRect {
                x: 420,
                y: 476,
                w: 420,
                h: 476
            }
        );

        let p = plan(300, 200);
        assert_eq!(p.overview, (448, 448));
        assert_eq!((p.grid, p.refine, p.slice), (None, None, None));
        assert_eq!(p.n_slices(), 0);
        assert_eq!(p.n_chunks(), 1);
    }

    #[test]
    fn exactly_448_has_no_slices_but_449_has() {
        assert_eq!(plan(448, 448).n_slices(), 0);
        assert_eq!(plan(448, 1).n_slices(), 0);
        assert!(plan(449, 448).n_slices() > 0);
        assert!(plan(1, 449).n_slices() > 0);
    }

    #[test]
    fn extreme_inputs_never_panic() {
        let d = SliceParams::default();
        assert_eq!(
            plan_slices(0, 10, &d),
            Err(SliceError::ZeroSize {
                width: 0,
                height: 10
            })
        );
        assert_eq!(
            plan_slices(10, 0, &d),
            Err(SliceError::ZeroSize {
                width: 10,
                height: 0
            })
        );
        let e = plan_slices(46_001, 10, &d).unwrap_err();
        assert_eq!(
            e,
            SliceError::TooLarge {
                width: 46_001,
                height: 10,
                max: 46_000
            }
        );
        assert!(e.to_string().contains("46001x10"), "{e}");
        assert!(plan_slices(10, u32::MAX, &d).is_err());
        for (w, h) in [
            (1, 1),
            (449, 1),
            (1, 449),
            (2000, 1),
            (10_000, 100),
            (100, 10_000),
            (46_000, 1),
            (1, 46_000),
            (46_000, 46_000),
            (46_000, 449),
        ] {
            let p = plan(w, h);
            assert_eq!(p.source, (w, h));
            if let (Some(g), Some(r), Some(c)) = (p.grid, p.refine, p.slice) {
                assert_eq!(p.n_slices() as u32, g.0 * g.1, "{w}x{h}");
                assert_eq!((c.0 * g.0, c.1 * g.1), r, "{w}x{h}");
                assert!(p.n_slices() <= 9);
            }
        }
    }

    #[test]
    fn bad_params_are_errors() {
        for max_slices in [0, 10, u32::MAX] {
            let p = SliceParams {
                max_slices,
                ..SliceParams::default()
            };
            let e = plan_slices(1000, 1000, &p).unwrap_err();
            assert_eq!(e, SliceError::MaxSlices { max_slices, max: 9 });
            assert!(e.to_string().contains(&max_slices.to_string()), "{e}");
        }
        let p = SliceParams {
            image_size: 448,
            patch_size: 0,
            max_slices: 9,
            merge: 1,
        };
        assert!(matches!(
            plan_slices(1000, 1000, &p),
            Err(SliceError::Params { .. })
        ));
        let p = SliceParams {
            image_size: 10,
            patch_size: 14,
            max_slices: 9,
            merge: 1,
        };
        assert!(plan_slices(1000, 1000, &p).is_err());
        for (image_size, merge) in [(448, 0), (100, 4), (448, 33)] {
            let p = SliceParams {
                image_size,
                merge,
                ..SliceParams::default()
            };
            let e = plan_slices(1000, 1000, &p).unwrap_err();
            assert!(matches!(e, SliceError::Params { .. }), "{e}");
            assert!(e.to_string().contains(&format!("merge {merge}")), "{e}");
        }
    }

    #[test]
    fn max_slices_caps_the_grid() {
        for max in 1..=9u32 {
            let p = SliceParams {
                max_slices: max,
                ..SliceParams::default()
            };
            for (w, h) in [
                (4032, 3024),
                (1920, 1080),
                (1000, 700),
                (449, 449),
                (10_000, 100),
            ] {
                let plan = plan_slices(w, h, &p).expect("plan");
                assert!(plan.n_slices() <= max as usize, "{w}x{h} max {max}: {plan}");
                // the overview never depends on the cap
                assert_eq!(
                    plan.overview,
                    plan_slices(w, h, &SliceParams::default())
                        .expect("plan")
                        .overview
                );
                if max == 1 {
                    assert_eq!(plan.n_slices(), 0);
                    assert_eq!(plan.grid, None);
                } else {
                    assert!(plan.n_slices() >= 2);
                }
            }
        }
        // small images never slice, whatever the cap
        let p = SliceParams {
            max_slices: 4,
            ..SliceParams::default()
        };
        assert_eq!(plan_slices(448, 300, &p).expect("plan").n_slices(), 0);
    }

    #[test]
    fn display() {
        assert_eq!(
            plan(1000, 700).to_string(),
            "overview 532x378, grid 2x2, refine 1064x756, 4 slices of 532x378"
        );
        assert_eq!(plan(300, 200).to_string(), "overview 448x448, no slices");
    }
}

/// The golden tables: llama.cpp's own slice instructions for many sizes, produced by llama.cpp
/// through the shim oracle (never by this module), and checks of [`plan_slices`] against them.
/// One table per merge: the resampler's (2.5 .. 4.5), and 4.6's merger at 16x and 4x.
///
/// Regenerate (after a llama.cpp bump) with
/// `MINICPMV_WRITE_GOLDEN=1 cargo test --release --lib golden_file_is_llama_cpps_current_answer`.
#[cfg(test)]
mod golden {
    use super::*;
    use crate::ffi::LlamaSlicePlan;
    use crate::vision::oracle;

    /// One golden table: its file, the slicing it was made with and llama.cpp's class.
    struct Table {
        text: &'static str,
        path: &'static str,
        merge: u32,
        preprocessor: &'static str,
        projector: &'static str,
    }

    const TABLES: [Table; 3] = [
        Table {
            text: include_str!("testdata/slice_golden.tsv"),
            path: "src/vision/testdata/slice_golden.tsv",
            merge: 1,
            preprocessor: "mtmd_image_preprocessor_llava_uhd",
            projector: "MiniCPM-V 2.6 mmproj (the resampler of 2.5 .. 4.5: no merge)",
        },
        Table {
            text: include_str!("testdata/slice_golden_4_6_16x.tsv"),
            path: "src/vision/testdata/slice_golden_4_6_16x.tsv",
            merge: 4,
            preprocessor: "mtmd_image_preprocessor_minicpmv",
            projector: "MiniCPM-V 4.6 mmproj at scale factor 4 (16x: sides multiples of 56)",
        },
        Table {
            text: include_str!("testdata/slice_golden_4_6_4x.tsv"),
            path: "src/vision/testdata/slice_golden_4_6_4x.tsv",
            merge: 2,
            preprocessor: "mtmd_image_preprocessor_minicpmv",
            projector: "MiniCPM-V 4.6 mmproj at scale factor 2 (4x: sides multiples of 28, an \
                        image of at most 448x448 pixels kept whole)",
        },
    ];

    impl Table {
        fn params(&self) -> SliceParams {
            SliceParams {
                merge: self.merge,
                ..SliceParams::default()
            }
        }
    }

    const HEADER: &str = "width\theight\toverview_w\toverview_h\tgrid_cols\tgrid_rows\trefine_w\trefine_h\tn_slices\tslices(x,y,w,h)";

    /// The sizes of the table: the DESIGN.md examples, small and boundary sizes, common
    /// camera/screen sizes, panoramas, 1-pixel strips, odd sizes, plus 40 pseudo-random ones.
    #[rustfmt::skip]
    fn sizes() -> Vec<(u32, u32)> {
        let mut v: Vec<(u32, u32)> = vec![
            // DESIGN.md §3
            (1000, 700), (1920, 1080), (300, 200),
            // small, square, exactly 448 and around it
            (1, 1), (2, 2), (14, 14), (100, 50), (224, 224), (447, 447), (448, 448), (448, 1),
            (1, 448), (448, 300), (449, 449), (449, 448), (448, 449), (450, 450), (460, 460),
            (500, 500), (600, 600), (633, 633), (634, 634), (672, 672), (700, 700), (896, 896),
            (897, 897), (1000, 1000), (1344, 1344), (2048, 2048), (4096, 4096),
            // screens, cameras, phones
            (640, 480), (800, 600), (1024, 768), (1280, 720), (1280, 1024), (1366, 768),
            (1600, 1200), (1200, 1600), (2560, 1440), (3840, 2160), (7680, 4320), (4032, 3024),
            (3024, 4032), (1080, 2400), (2400, 1080), (1080, 1920), (720, 1280), (6000, 4000),
            (4000, 6000),
            // panoramic and tall
            (900, 300), (1500, 400), (2000, 500), (3000, 400), (5000, 1000), (8000, 1000),
            (12000, 800), (449, 2000), (10000, 100), (100, 10000),
            // 1-pixel strips and the size limit
            (449, 1), (1, 449), (2000, 1), (1, 2000), (10000, 1), (46000, 1), (1, 46000),
            (46000, 449), (46000, 46000),
            // odd sizes
            (1333, 777), (777, 1333), (999, 1001), (1001, 999), (517, 913), (2999, 1999),
            (3001, 2001), (12345, 6789),
        ];
        let mut s = 0x2545_f491_4f6c_dd1du64;
        let mut next = |max: u64| {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            1 + ((s >> 33) % max) as u32
        };
        for i in 0..40 {
            let max = if i < 20 { 2500 } else { 9000 };
            v.push((next(max), next(max)));
        }
        v
    }

    /// One table line for llama.cpp's plan (no slices: grid and refine are 0, as llama.cpp says).
    fn llama_line(w: u32, h: u32, p: &LlamaSlicePlan) -> String {
        let rects: Vec<String> = p
            .slices
            .iter()
            .map(|r| format!("{},{},{},{}", r.x, r.y, r.w, r.h))
            .collect();
        line(w, h, p.overview, p.grid, p.refined, &rects)
    }

    /// The same line for our plan.
    fn our_line(p: &SlicePlan) -> String {
        let rects: Vec<String> = p
            .slices
            .iter()
            .map(|r| format!("{},{},{},{}", r.x, r.y, r.w, r.h))
            .collect();
        line(
            p.source.0,
            p.source.1,
            p.overview,
            p.grid.unwrap_or((0, 0)),
            p.refine.unwrap_or((0, 0)),
            &rects,
        )
    }

    fn line(
        w: u32,
        h: u32,
        ov: (u32, u32),
        grid: (u32, u32),
        refine: (u32, u32),
        rects: &[String],
    ) -> String {
        let rects = if rects.is_empty() {
            "-".to_string()
        } else {
            rects.join(" ")
        };
        format!(
            "{w}\t{h}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{rects}",
            ov.0,
            ov.1,
            grid.0,
            grid.1,
            refine.0,
            refine.1,
            rects.split(' ').filter(|r| *r != "-").count()
        )
    }

    /// The data lines of a checked-in table (comments and the header skipped).
    fn golden_lines(t: &Table) -> Vec<&'static str> {
        t.text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("width\t") && !l.trim().is_empty())
            .collect()
    }

    fn size_of(line: &str) -> (u32, u32) {
        let mut it = line.split('\t').map(|v| v.parse::<u32>().expect("size"));
        (it.next().expect("width"), it.next().expect("height"))
    }

    /// plan_slices reproduces every line of llama.cpp's tables.
    #[test]
    fn plan_slices_matches_llama_cpp_golden_table() {
        for t in &TABLES {
            let lines = golden_lines(t);
            assert!(
                lines.len() >= 100,
                "{}: only {} golden lines",
                t.path,
                lines.len()
            );
            for l in lines {
                let (w, h) = size_of(l);
                let plan = plan_slices(w, h, &t.params()).expect("plan");
                assert_eq!(our_line(&plan), l, "{} {w}x{h}", t.path);
            }
        }
    }

    /// The DESIGN.md values are in the tables as llama.cpp computed them.
    #[test]
    fn golden_table_has_the_design_values() {
        let has = |t: &Table, prefix: &str| {
            let lines = golden_lines(t);
            assert!(
                lines.iter().any(|l| l.starts_with(prefix)),
                "{}: {prefix}",
                t.path
            );
        };
        for prefix in [
            "1000\t700\t532\t378\t2\t2\t1064\t756\t4\t",
            "1920\t1080\t602\t336\t4\t2\t1680\t952\t8\t",
            "300\t200\t448\t448\t0\t0\t0\t0\t0\t-",
        ] {
            has(&TABLES[0], prefix);
        }
        // 4.6 at 16x: sides in multiples of 56; a small image is still stretched to 448
        has(&TABLES[1], "300\t200\t448\t448\t0\t0\t0\t0\t0\t-");
        has(
            &TABLES[1],
            "1920\t1080\t616\t336\t4\t2\t1792\t896\t8\t0,0,448,448 ",
        );
        // 4.6 at 4x: an image of at most 448x448 pixels keeps its aspect ratio (scaled up to
        // about 448x448 pixels, in 28s); larger ones slice in 28s
        has(&TABLES[2], "300\t200\t560\t364\t0\t0\t0\t0\t0\t-");
        has(
            &TABLES[2],
            "1920\t1080\t588\t336\t4\t2\t1680\t952\t8\t0,0,420,476 ",
        );
    }

    /// Re-derives the table through llama.cpp now (catches a table that no longer matches the
    /// linked llama.cpp), and sweeps many more sizes comparing plan_slices with llama.cpp.
    #[test]
    fn golden_table_matches_llama_cpp_now() {
        for t in &TABLES {
            let proj = oracle::projector_for(t.merge);
            let lines = golden_lines(t);
            let want: Vec<(u32, u32)> = sizes();
            assert_eq!(
                lines.len(),
                want.len(),
                "{}: the table and sizes() differ; regenerate",
                t.path
            );
            for (l, (w, h)) in lines.iter().zip(want) {
                let ll = proj
                    .llama_slice_plan(w, h)
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(llama_line(w, h, &ll), *l, "{} {w}x{h}", t.path);
            }
        }
    }

    #[test]
    fn plan_slices_matches_llama_cpp_on_a_sweep() {
        for t in &TABLES {
            sweep(t);
        }
    }

    fn sweep(t: &Table) {
        let proj = oracle::projector_for(t.merge);
        let params = t.params();
        let mut checked = 0usize;
        let mut check = |w: u32, h: u32| {
            let ll = proj
                .llama_slice_plan(w, h)
                .unwrap_or_else(|e| panic!("{e}"));
            let ours = plan_slices(w, h, &params).expect("plan");
            assert_eq!(our_line(&ours), llama_line(w, h, &ll), "{} {w}x{h}", t.path);
            checked += 1;
        };
        // every size around the no-slice boundary and the first grid changes
        for w in (1..=1400).step_by(7) {
            for h in (1..=1400).step_by(11) {
                check(w, h);
            }
        }
        // every width with a 1-pixel height and vice versa, up to 3000
        for v in 1..=3000 {
            check(v, 1);
            check(1, v);
        }
        // pseudo-random sizes over the whole range, biased to realistic sizes
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..20_000 {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let max = if i % 4 == 0 { 46_000 } else { 8_000 };
            let w = 1 + ((s >> 33) % max) as u32;
            let h = 1 + ((s >> 13) % max) as u32;
            check(w, h);
        }
        assert!(checked > 40_000);
    }

    /// The oracle rejects what llama.cpp would abort on, instead of crashing.
    #[test]
    fn oracle_rejects_out_of_range_sizes() {
        let proj = oracle::projector();
        for (w, h) in [(0, 10), (10, 0), (46_001, 10), (10, 46_001), (u32::MAX, 1)] {
            assert!(proj.llama_slice_plan(w, h).is_err(), "{w}x{h}");
            assert!(proj.llama_preprocess(w, h, &[]).is_err(), "{w}x{h}");
        }
        assert!(proj.llama_preprocess(2, 2, &[0; 11]).is_err());
    }

    /// The committed table is exactly what llama.cpp answers now; with
    /// `MINICPMV_WRITE_GOLDEN=1` the table is rewritten from llama.cpp's answers instead
    /// (after a llama.cpp bump).
    #[test]
    fn golden_file_is_llama_cpps_current_answer() {
        for t in &TABLES {
            write_or_compare(t);
        }
    }

    fn write_or_compare(t: &Table) {
        let proj = oracle::projector_for(t.merge);
        let mut out = String::new();
        out.push_str("# llama.cpp's own MiniCPM-V slice instructions (image_size 448, patch 14, 9 slices):\n");
        out.push_str(&format!(
            "# {}::get_slice_instructions of the llama.cpp bundled in\n",
            t.preprocessor
        ));
        out.push_str("# llama-cpp-sys-2 0.1.161, called through the shim (mcv_llama_slice_plan) on a synthetic\n");
        out.push_str(&format!("# {}. Generated by\n", t.projector));
        out.push_str("#   MINICPMV_WRITE_GOLDEN=1 cargo test --release --lib golden_file_is_llama_cpps_current_answer\n");
        out.push_str("# No slices: grid and refine are 0 (llama.cpp's representation). Do not edit by hand.\n");
        out.push_str(HEADER);
        out.push('\n');
        for (w, h) in sizes() {
            let ll = proj
                .llama_slice_plan(w, h)
                .unwrap_or_else(|e| panic!("{e}"));
            out.push_str(&llama_line(w, h, &ll));
            out.push('\n');
        }
        if std::env::var_os("MINICPMV_WRITE_GOLDEN").is_some() {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(t.path);
            let tmp = path.with_extension("tsv.tmp");
            std::fs::write(&tmp, &out).expect("write golden table");
            std::fs::rename(&tmp, &path).expect("rename golden table");
            eprintln!("wrote {}", path.display());
        } else {
            assert_eq!(out, t.text, "{} is not llama.cpp's current answer", t.path);
        }
    }
}
