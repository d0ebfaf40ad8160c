//! Resizing, padding and cropping of 8-bit RGB images, bit-identical to llama.cpp.
//!
//! This is a port of `img_tool` in llama.cpp's tools/mtmd/mtmd-image.cpp (llama-cpp-sys-2
//! 0.1.161): `img_tool::resize` with the two modes MiniCPM-V uses (clip.cpp leaves the default
//! `clip_hparams` for `PROJECTOR_TYPE_MINICPMV`: bicubic for both images, `PAD_NONE` for the
//! overview, `PAD_CEIL` with black for the refined image), `img_tool::resize_pillow`
//! (Pillow-compatible separable resampling with 22-bit fixed-point weights: a horizontal pass,
//! rounded to u8, then a vertical pass) and `img_tool::crop`.
//!
//! Bit-identity notes:
//! - the weights are computed in f64 exactly as in the C++ (same operation order). llama.cpp is
//!   compiled with the same `-march` as our Rust code (llama-cpp-sys-2 forwards `target-cpu`;
//!   this repository uses x86-64-v3), and GCC then contracts `a * b + c` in the bicubic kernel
//!   into fused multiply-adds (checked in the disassembly of libmtmd's `resize_pillow`). We use
//!   `mul_add` at exactly those places when the target has FMA, and plain `a * b + c` otherwise,
//!   so both builds match their llama.cpp. In practice the 22-bit rounding of the normalised
//!   weights absorbs the one-ulp differences (no fixed-point weight differed between the fused
//!   and unfused kernel for any input size 1..=3000 against the usual MiniCPM-V output sizes),
//!   but a weight that lands on a rounding boundary would change a pixel by one step;
//! - the passes themselves are integer arithmetic, so their summation order is free: we only
//!   keep the horizontal-then-vertical order and the u8 rounding in between (the algorithm is
//!   separable and llama.cpp already runs it as two passes). The work is split over rows across
//!   threads, which does not change any result.

use std::num::NonZeroUsize;

/// llama.cpp's `resize_pillow` refuses targets larger than this on either side.
pub const MAX_RESIZE_SIDE: u32 = 65_536;

/// An owned 8-bit RGB image, row-major, 3 bytes per pixel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 3` bytes.
    pub data: Vec<u8>,
}

/// Why an image could not be resized or cropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResizeError {
    /// The source buffer's length is not `width * height * 3`.
    #[error("pixel buffer holds {len} bytes, a {width}x{height} RGB image needs {}", *width as usize * *height as usize * 3)]
    BufferSize {
        /// Width given, in pixels.
        width: u32,
        /// Height given, in pixels.
        height: u32,
        /// Bytes in the buffer.
        len: usize,
    },
    /// The source image has a zero side.
    #[error("cannot resize a {width}x{height} image (zero size)")]
    ZeroSource {
        /// Width given, in pixels.
        width: u32,
        /// Height given, in pixels.
        height: u32,
    },
    /// A target side is 0 or above [`MAX_RESIZE_SIDE`] (llama.cpp's `resize_pillow` refuses
    /// it too). For [`resize_pad`] this is the aspect-preserving size inside the canvas.
    #[error(
        "resize target {width}x{height} is out of range (each side 1..={max}, llama.cpp's limit)"
    )]
    Target {
        /// Target width, in pixels.
        width: u32,
        /// Target height, in pixels.
        height: u32,
        /// The largest side allowed, [`MAX_RESIZE_SIDE`].
        max: u32,
    },
    /// The crop rectangle is empty or reaches outside the image (or the image's buffer does
    /// not match its size).
    #[error("crop {w}x{h} at ({x},{y}) does not fit in a {width}x{height} image")]
    Crop {
        /// Left edge of the rectangle, in pixels.
        x: u32,
        /// Top edge of the rectangle, in pixels.
        y: u32,
        /// Width of the rectangle, in pixels.
        w: u32,
        /// Height of the rectangle, in pixels.
        h: u32,
        /// Width of the image cropped, in pixels.
        width: u32,
        /// Height of the image cropped, in pixels.
        height: u32,
    },
}

fn check_source(src: &[u8], width: u32, height: u32) -> Result<(), ResizeError> {
    if width == 0 || height == 0 {
        return Err(ResizeError::ZeroSource { width, height });
    }
    if src.len() as u64 != u64::from(width) * u64::from(height) * 3 {
        return Err(ResizeError::BufferSize {
            width,
            height,
            len: src.len(),
        });
    }
    Ok(())
}

fn check_target(width: u32, height: u32) -> Result<(), ResizeError> {
    if width == 0 || height == 0 || width > MAX_RESIZE_SIDE || height > MAX_RESIZE_SIDE {
        return Err(ResizeError::Target {
            width,
            height,
            max: MAX_RESIZE_SIDE,
        });
    }
    Ok(())
}

/// `img_tool::resize(..., RESIZE_ALGO_BICUBIC, PAD_NONE)`: stretches `src` to exactly
/// `target_w` x `target_h` (the MiniCPM-V overview).
pub fn resize_stretch(
    src: &[u8],
    width: u32,
    height: u32,
    target_w: u32,
    target_h: u32,
) -> Result<RgbImage, ResizeError> {
    check_source(src, width, height)?;
    check_target(target_w, target_h)?;
    if (target_w, target_h) == (width, height) {
        return Ok(RgbImage {
            width,
            height,
            data: src.to_vec(),
        });
    }
    resize_bicubic(src, width, height, target_w, target_h)
}

/// `img_tool::resize(..., RESIZE_ALGO_BICUBIC, PAD_CEIL, pad)`: resizes `src` keeping its aspect
/// ratio to fit in `target_w` x `target_h` (sides rounded up, then clamped to the target) and
/// centres it on a canvas of that size filled with `pad` (the MiniCPM-V refined image, black).
pub fn resize_pad(
    src: &[u8],
    width: u32,
    height: u32,
    target_w: u32,
    target_h: u32,
    pad: [u8; 3],
) -> Result<RgbImage, ResizeError> {
    check_source(src, width, height)?;
    if target_w == 0 || target_h == 0 {
        return Err(ResizeError::Target {
            width: target_w,
            height: target_h,
            max: MAX_RESIZE_SIDE,
        });
    }
    if (target_w, target_h) == (width, height) {
        return Ok(RgbImage {
            width,
            height,
            data: src.to_vec(),
        });
    }
    // float scale_w = static_cast<float>(target.width) / src.width; (same for h)
    // float scale = std::min(scale_w, scale_h);
    let scale_w = target_w as f32 / width as f32;
    let scale_h = target_h as f32 / height as f32;
    let scale = if scale_h < scale_w { scale_h } else { scale_w };
    // PAD_CEIL: new = std::min(static_cast<int>(std::ceil(src * scale)), target)
    let new_w = ((width as f32 * scale).ceil() as u32).min(target_w);
    let new_h = ((height as f32 * scale).ceil() as u32).min(target_h);
    check_target(new_w, new_h)?;
    let resized = if (new_w, new_h) == (width, height) {
        RgbImage {
            width,
            height,
            data: src.to_vec(),
        }
    } else {
        resize_bicubic(src, width, height, new_w, new_h)?
    };
    // offset = (target - new) / 2 (integer division), then composite onto the padded canvas
    let off_x = ((target_w - new_w) / 2) as usize;
    let off_y = ((target_h - new_h) / 2) as usize;
    let (tw, th) = (target_w as usize, target_h as usize);
    let mut data = Vec::with_capacity(tw * th * 3);
    for _ in 0..tw * th {
        data.extend_from_slice(&pad);
    }
    let row_bytes = new_w as usize * 3;
    for (y, src_row) in resized.data.chunks_exact(row_bytes).enumerate() {
        let start = ((off_y + y) * tw + off_x) * 3;
        data[start..start + row_bytes].copy_from_slice(src_row);
    }
    Ok(RgbImage {
        width: target_w,
        height: target_h,
        data,
    })
}

/// `img_tool::crop`: the `w` x `h` rectangle at (`x`, `y`).
pub fn crop(img: &RgbImage, x: u32, y: u32, w: u32, h: u32) -> Result<RgbImage, ResizeError> {
    check_crop(img, x, y, w, h)?;
    let mut data = Vec::with_capacity(w as usize * h as usize * 3);
    for row in crop_rows(img, x, y, w, h) {
        data.extend_from_slice(row);
    }
    Ok(RgbImage {
        width: w,
        height: h,
        data,
    })
}

/// Whether the `w` x `h` rectangle at (`x`, `y`) is non-empty and inside `img`
/// ([`ResizeError::Crop`] otherwise).
pub(crate) fn check_crop(
    img: &RgbImage,
    x: u32,
    y: u32,
    w: u32,
    h: u32,
) -> Result<(), ResizeError> {
    let fits = w > 0
        && h > 0
        && u64::from(x) + u64::from(w) <= u64::from(img.width)
        && u64::from(y) + u64::from(h) <= u64::from(img.height)
        && img.data.len() as u64 == u64::from(img.width) * u64::from(img.height) * 3;
    if fits {
        Ok(())
    } else {
        Err(ResizeError::Crop {
            x,
            y,
            w,
            h,
            width: img.width,
            height: img.height,
        })
    }
}

/// The rows (each `w * 3` bytes) of a crop already checked with [`check_crop`].
pub(crate) fn crop_rows<'a>(
    img: &'a RgbImage,
    x: u32,
    y: u32,
    w: u32,
    h: u32,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    let stride = img.width as usize * 3;
    let (x0, len) = (x as usize * 3, w as usize * 3);
    (y as usize..y as usize + h as usize)
        .map(move |r| &img.data[r * stride + x0..r * stride + x0 + len])
}

// ---------------------------------------------------------------------------------------------
// img_tool::resize_pillow, bicubic

/// Fixed-point precision of the weights: 32 - 8 - 2 bits.
const PRECISION_BITS: u32 = 32 - 8 - 2;
/// Rounding bias (0.5 in fixed point) the accumulators start with.
const HALF: i32 = 1 << (PRECISION_BITS - 1);
/// Bicubic filter support radius (Pillow's, a = -0.5).
const BICUBIC_SUPPORT: f64 = 2.0;

/// `a * b + c`, fused exactly where GCC fuses it in llama.cpp (only when the target has FMA;
/// see the module docs).
#[inline]
fn mul_add_like_cxx(a: f64, b: f64, c: f64) -> f64 {
    if cfg!(target_feature = "fma") {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Pillow's bicubic kernel (a = -0.5) as written in llama.cpp's `resample_filter`:
/// `((a + 2) * x - (a + 3)) * x * x + 1` for |x| < 1, `(((x - 5) * x + 8) * x - 4) * a` for
/// |x| < 2. With FMA, GCC computes the first as `fma(fma(1.5, x, -2.5) * x, x, 1)` and the
/// second as `fma(fma(x - 5, x, 8), x, -4) * a`.
#[inline]
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = if x < 0.0 { -x } else { x };
    if x < 1.0 {
        mul_add_like_cxx(mul_add_like_cxx(A + 2.0, x, -(A + 3.0)) * x, x, 1.0)
    } else if x < 2.0 {
        mul_add_like_cxx(mul_add_like_cxx(x - 5.0, x, 8.0), x, -4.0) * A
    } else {
        0.0
    }
}

/// Precomputed coefficients for one dimension (`precompute_weights` in llama.cpp).
struct Filter {
    /// Per output pixel: first input index, number of inputs, offset into `weights`.
    taps: Vec<(usize, usize, usize)>,
    weights: Vec<i32>,
}

impl Filter {
    fn new(in_size: usize, out_size: usize) -> Filter {
        // filterscale = scale = (double) inSize / outSize; filterscale >= 1
        let scale = in_size as f64 / out_size as f64;
        let filterscale = if scale < 1.0 { 1.0 } else { scale };
        let support = BICUBIC_SUPPORT * filterscale;
        let ss = 1.0 / filterscale;
        let fxp_scale = f64::from(1u32 << PRECISION_BITS);
        let mut taps = Vec::with_capacity(out_size);
        let mut weights = Vec::with_capacity(out_size * (support.ceil() as usize * 2 + 1));
        let mut pre = Vec::new();
        for xx in 0..out_size {
            let center = (xx as f64 + 0.5) * scale;
            // static_cast<int> truncates toward zero, like `as`
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
            let count = (xmax - xmin).max(0) as usize;
            let xmin = xmin as usize;
            pre.clear();
            let mut ww = 0.0f64;
            for x in 0..count {
                let w = bicubic((((x + xmin) as f64 - center) + 0.5) * ss);
                pre.push(w);
                ww += w;
            }
            let offset = weights.len();
            for &w in &pre {
                let w = if ww != 0.0 { w / ww } else { w };
                // Pillow adds +/- 0.5 then truncates toward zero
                let rounded = w * fxp_scale + if w < 0.0 { -0.5 } else { 0.5 };
                weights.push(rounded as i32);
            }
            taps.push((xmin, count, offset));
        }
        Filter { taps, weights }
    }
}

#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Horizontal pass over `rows` (each `in_w * 3` bytes) into `out` (each `out_w * 3` bytes).
fn horizontal_rows(src: &[u8], in_w: usize, f: &Filter, out: &mut [u8], out_w: usize) {
    for (src_row, dst_row) in src
        .chunks_exact(in_w * 3)
        .zip(out.chunks_exact_mut(out_w * 3))
    {
        for (&(xmin, count, offset), dst) in f.taps.iter().zip(dst_row.chunks_exact_mut(3)) {
            let k = &f.weights[offset..offset + count];
            let p = &src_row[xmin * 3..(xmin + count) * 3];
            let (mut s0, mut s1, mut s2) = (HALF, HALF, HALF);
            for (&w, px) in k.iter().zip(p.chunks_exact(3)) {
                s0 = s0.wrapping_add(i32::from(px[0]).wrapping_mul(w));
                s1 = s1.wrapping_add(i32::from(px[1]).wrapping_mul(w));
                s2 = s2.wrapping_add(i32::from(px[2]).wrapping_mul(w));
            }
            dst[0] = clip8(s0);
            dst[1] = clip8(s1);
            dst[2] = clip8(s2);
        }
    }
}

/// Vertical pass: output rows `first..first + out.len() / row_elems` from `src` rows.
fn vertical_rows(src: &[u8], row_elems: usize, f: &Filter, first: usize, out: &mut [u8]) {
    let mut acc = vec![0i32; row_elems];
    for (i, dst_row) in out.chunks_exact_mut(row_elems).enumerate() {
        let (ymin, count, offset) = f.taps[first + i];
        acc.fill(HALF);
        for (y, &w) in f.weights[offset..offset + count].iter().enumerate() {
            let src_row = &src[(ymin + y) * row_elems..(ymin + y + 1) * row_elems];
            for (a, &s) in acc.iter_mut().zip(src_row) {
                *a = a.wrapping_add(i32::from(s).wrapping_mul(w));
            }
        }
        for (d, &a) in dst_row.iter_mut().zip(&acc) {
            *d = clip8(a);
        }
    }
}

/// Number of worker threads for a pass of `work` multiply-adds (1 for small jobs).
fn threads_for(work: usize) -> usize {
    const MIN_WORK_PER_THREAD: usize = 4_000_000;
    let avail = std::thread::available_parallelism()
        .map(NonZeroUsize::get)
        .unwrap_or(1)
        .min(8);
    (work / MIN_WORK_PER_THREAD).clamp(1, avail)
}

/// Runs `f(first_row, rows)` over `out` split into row blocks of `row_len` bytes, on up to
/// `threads` scoped threads. Each output row is computed independently, so the split does not
/// change the result.
fn par_rows<F>(out: &mut [u8], row_len: usize, threads: usize, f: F)
where
    F: Fn(usize, &mut [u8]) + Sync,
{
    let rows = out.len() / row_len.max(1);
    if threads <= 1 || rows < 2 {
        f(0, out);
        return;
    }
    let per = rows.div_ceil(threads);
    std::thread::scope(|scope| {
        for (i, chunk) in out.chunks_mut(per * row_len).enumerate() {
            let f = &f;
            scope.spawn(move || f(i * per, chunk));
        }
    });
}

/// `img_tool::resize_pillow` with `RESIZE_ALGO_BICUBIC`: horizontal pass (when the width
/// changes) then vertical pass (when the height changes), each rounding to u8.
fn resize_bicubic(
    src: &[u8],
    width: u32,
    height: u32,
    target_w: u32,
    target_h: u32,
) -> Result<RgbImage, ResizeError> {
    check_target(target_w, target_h)?;
    let (sw, sh) = (width as usize, height as usize);
    let (tw, th) = (target_w as usize, target_h as usize);

    let horizontal = if tw != sw {
        let f = Filter::new(sw, tw);
        let mut out = vec![0u8; tw * sh * 3];
        let threads = threads_for(f.weights.len() * sh * 3);
        par_rows(&mut out, tw * 3, threads, |first, chunk| {
            let rows = chunk.len() / (tw * 3);
            horizontal_rows(
                &src[first * sw * 3..(first + rows) * sw * 3],
                sw,
                &f,
                chunk,
                tw,
            );
        });
        Some(out)
    } else {
        None
    };
    let mid: &[u8] = horizontal.as_deref().unwrap_or(src);

    let data = if th != sh {
        let f = Filter::new(sh, th);
        let row_elems = tw * 3;
        let mut out = vec![0u8; row_elems * th];
        let threads = threads_for(f.weights.len() * row_elems);
        par_rows(&mut out, row_elems, threads, |first, chunk| {
            vertical_rows(mid, row_elems, &f, first, chunk);
        });
        out
    } else {
        match horizontal {
            Some(h) => h,
            None => src.to_vec(),
        }
    };
    Ok(RgbImage {
        width: target_w,
        height: target_h,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> Vec<u8> {
        let mut v = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                v.extend_from_slice(&[(x * 7 + y) as u8, (y * 5) as u8, ((x ^ y) * 3) as u8]);
            }
        }
        v
    }

    #[test]
    fn identity_size_is_a_copy() {
        let src = gradient(37, 23);
        let out = resize_stretch(&src, 37, 23, 37, 23).expect("resize");
        assert_eq!(out.data, src);
        let out = resize_pad(&src, 37, 23, 37, 23, [9, 9, 9]).expect("resize");
        assert_eq!(out.data, src);
    }

    #[test]
    fn one_pixel_source_upscales_to_a_constant() {
        let out = resize_stretch(&[10, 200, 255], 1, 1, 5, 3).expect("resize");
        assert_eq!((out.width, out.height), (5, 3));
        for px in out.data.chunks_exact(3) {
            assert_eq!(px, [10, 200, 255]);
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let src: Vec<u8> = [17u8, 128, 251].repeat(50 * 40);
        for (tw, th) in [(13, 7), (448, 448), (50, 41), (120, 40)] {
            let out = resize_stretch(&src, 50, 40, tw, th).expect("resize");
            assert!(
                out.data.chunks_exact(3).all(|p| p == [17, 128, 251]),
                "{tw}x{th}"
            );
        }
    }

    /// Hand-checked 1-D cases (width only; height unchanged so only the horizontal pass runs).
    #[test]
    fn hand_checked_values() {
        // 2 -> 1: centre 1.0, support 4, taps x=0,1 at distance 0.5 (scaled by 1/2: 0.25):
        // equal weights 1/2 each -> (0 + 255) / 2 = 127.5, rounded with the +0.5 bias -> 128.
        let out = resize_stretch(&[0, 0, 0, 255, 255, 255], 2, 1, 1, 1).expect("resize");
        assert_eq!(out.data, vec![128, 128, 128]);

        // 1 -> 2 upscale of one pixel: every output equals the input.
        let out = resize_stretch(&[42, 43, 44], 1, 1, 2, 1).expect("resize");
        assert_eq!(out.data, vec![42, 43, 44, 42, 43, 44]);

        // 2 -> 4 upscale of a black/white step (scale 0.5, support 2, two taps each; k is the
        // bicubic kernel, d = tap centre - output centre in input pixels):
        //  xx=0: centre 0.25, d = 0.25, 1.25: k = 0.8671875, -0.0703125 -> 255 * (-0.0703125 /
        //        0.796875) < 0 -> 0
        //  xx=1: centre 0.75, d = -0.25, 0.75: k = 0.8671875, 0.2265625 -> 255 * 0.2265625 /
        //        1.09375 = 52.82 -> 53
        //  xx=2: mirror of xx=1 -> 255 * 0.8671875 / 1.09375 = 202.18 -> 202
        //  xx=3: mirror of xx=0 -> 255 * 1.0882 > 255 -> 255
        let out = resize_stretch(&[0, 0, 0, 255, 255, 255], 2, 1, 4, 1).expect("resize");
        let r: Vec<u8> = out.data.chunks_exact(3).map(|p| p[0]).collect();
        assert_eq!(r, vec![0, 53, 202, 255]);
    }

    #[test]
    fn pad_centres_with_black() {
        // 4x2 -> 8x8: scale min(2, 4) = 2 -> 8x4 image at y offset 2
        let src = [255u8; 4 * 2 * 3];
        let out = resize_pad(&src, 4, 2, 8, 8, [0, 0, 0]).expect("resize");
        assert_eq!((out.width, out.height), (8, 8));
        for y in 0..8 {
            let row = &out.data[y * 24..(y + 1) * 24];
            let expect = if (2..6).contains(&y) { 255 } else { 0 };
            assert!(row.iter().all(|&v| v == expect), "row {y}: {row:?}");
        }
    }

    #[test]
    fn errors_instead_of_panics() {
        assert!(matches!(
            resize_stretch(&[0; 5], 1, 1, 2, 2),
            Err(ResizeError::BufferSize { .. })
        ));
        assert!(matches!(
            resize_stretch(&[], 0, 1, 2, 2),
            Err(ResizeError::ZeroSource { .. })
        ));
        assert!(matches!(
            resize_stretch(&[0; 3], 1, 1, 0, 2),
            Err(ResizeError::Target { .. })
        ));
        assert!(matches!(
            resize_stretch(&[0; 3], 1, 1, 65_537, 1),
            Err(ResizeError::Target { .. })
        ));
        let img = RgbImage {
            width: 4,
            height: 4,
            data: vec![0; 48],
        };
        assert!(crop(&img, 2, 2, 2, 2).is_ok());
        assert!(matches!(
            crop(&img, 3, 0, 2, 1),
            Err(ResizeError::Crop { .. })
        ));
        assert!(crop(&img, u32::MAX, 0, 2, 1).is_err());
        assert!(crop(&img, 0, 0, 0, 1).is_err());
    }

    #[test]
    fn crop_copies_the_rectangle() {
        let src = gradient(6, 5);
        let img = RgbImage {
            width: 6,
            height: 5,
            data: src.clone(),
        };
        let c = crop(&img, 2, 1, 3, 2).expect("crop");
        assert_eq!((c.width, c.height), (3, 2));
        assert_eq!(&c.data[0..3], &src[(6 + 2) * 3..(6 + 2) * 3 + 3]);
        assert_eq!(&c.data[15..18], &src[(2 * 6 + 4) * 3..(2 * 6 + 4) * 3 + 3]);
    }

    /// Splitting the work over threads must not change a single byte.
    #[test]
    fn threads_do_not_change_results() {
        let (w, h) = (1500u32, 1100u32);
        let mut v = Vec::with_capacity((w * h * 3) as usize);
        let mut s = 12345u32;
        for _ in 0..w * h * 3 {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            v.push((s >> 24) as u8);
        }
        let f = Filter::new(w as usize, 601);
        let mut single = vec![0u8; 601 * h as usize * 3];
        horizontal_rows(&v, w as usize, &f, &mut single, 601);
        let mut multi = vec![0u8; single.len()];
        par_rows(&mut multi, 601 * 3, 4, |first, chunk| {
            let rows = chunk.len() / (601 * 3);
            horizontal_rows(
                &v[first * w as usize * 3..(first + rows) * w as usize * 3],
                w as usize,
                &f,
                chunk,
                601,
            );
        });
        assert_eq!(single, multi);
    }
}
