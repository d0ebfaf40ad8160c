//! Decoding an image file into 8-bit RGB, with limits against decompression bombs.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use super::slice::MAX_IMAGE_SIDE;

/// Default pixel limit of [`load_image`]: 64 megapixels (width x height), about 192 MB once
/// decoded to RGB8. The CLI's `--max-image-pixels` overrides it.
pub const DEFAULT_MAX_PIXELS: u64 = 64_000_000;

/// An image decoded to RGB8, EXIF orientation applied, alpha dropped (see [`load_image`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    /// The file it was read from, for messages (the embedding cache keys on the pixels, not on
    /// this).
    pub path: PathBuf,
    /// Width in pixels, after EXIF orientation; never 0.
    pub width: u32,
    /// Height in pixels, after EXIF orientation; never 0.
    pub height: u32,
    /// `width * height * 3` bytes, row-major RGB.
    pub rgb: Vec<u8>,
}

/// Why an image could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// Nothing exists at the path.
    #[error("image file {} does not exist", path.display())]
    NotFound {
        /// The path given.
        path: PathBuf,
    },
    /// The path names a directory.
    #[error("image path {} is a directory, not an image file", path.display())]
    IsDirectory {
        /// The path given.
        path: PathBuf,
    },
    /// The path names a FIFO, a device or a socket.
    #[error("image path {} is {kind}, not a regular image file", path.display())]
    NotRegularFile {
        /// The path given.
        path: PathBuf,
        /// What it is, in words.
        kind: &'static str,
    },
    /// The file is larger than [`MAX_IMAGE_FILE_BYTES`]; nothing was read.
    #[error("image file {} is {bytes} bytes, above the limit of {limit} bytes for an image file", path.display())]
    FileTooLarge {
        /// The path given.
        path: PathBuf,
        /// Its size.
        bytes: u64,
        /// [`MAX_IMAGE_FILE_BYTES`].
        limit: u64,
    },
    /// The file has zero bytes.
    #[error("image file {} is empty", path.display())]
    Empty {
        /// The path given.
        path: PathBuf,
    },
    /// Reading the file failed (permissions, an I/O error).
    #[error("cannot read image file {}: {source}", path.display())]
    Io {
        /// The path given.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is a video container (MP4/MOV, WebM/MKV, AVI, ...), not a still image.
    #[error("{} is a video ({container}), not an image: pass it with --video", path.display())]
    IsVideo {
        /// The path given.
        path: PathBuf,
        /// The container its first bytes name.
        container: &'static str,
    },
    /// The first bytes match none of the formats the `image` crate was built with.
    #[error("{} is not an image in a supported format (PNG, JPEG, WebP, GIF, BMP, TIFF)", path.display())]
    UnknownFormat {
        /// The path given.
        path: PathBuf,
    },
    /// The format is known but the data does not decode (truncated or corrupt), including a
    /// JPEG whose last scan is not followed by an end-of-image marker.
    #[error("cannot decode image {}: {reason} (is it truncated or corrupt?)", path.display())]
    Decode {
        /// The path given.
        path: PathBuf,
        /// The decoder's message.
        reason: String,
    },
    /// The header announces more pixels than allowed; no pixel was decoded.
    #[error("image {} is {width}x{height} = {pixels} pixels, above the limit of {limit} pixels", path.display(), pixels = *width as u64 * *height as u64)]
    TooLarge {
        /// The path given.
        path: PathBuf,
        /// Width from the header, in pixels.
        width: u32,
        /// Height from the header, in pixels.
        height: u32,
        /// The `max_pixels` passed to [`load_image`].
        limit: u64,
    },
    /// The header announces a side longer than llama.cpp handles; no pixel was decoded.
    #[error("image {} is {width}x{height}; each side must be at most {max} pixels (llama.cpp's limit)", path.display())]
    SideTooLarge {
        /// The path given.
        path: PathBuf,
        /// Width from the header, in pixels.
        width: u32,
        /// Height from the header, in pixels.
        height: u32,
        /// [`MAX_IMAGE_SIDE`].
        max: u32,
    },
    /// The header announces a zero width or height.
    #[error("image {} has a zero size ({width}x{height})", path.display())]
    ZeroSize {
        /// The path given.
        path: PathBuf,
        /// Width from the header, in pixels.
        width: u32,
        /// Height from the header, in pixels.
        height: u32,
    },
}

/// Largest image file read, in bytes (512 MiB): far above any 64-megapixel JPEG, PNG or TIFF,
/// and a bound on what a wrong path (a model file given as an image) costs before it is
/// refused.
pub const MAX_IMAGE_FILE_BYTES: u64 = 512 << 20;

/// Loads an image file as RGB8. The size is checked against `max_pixels` from the header,
/// before any pixel is decoded. Alpha is dropped (the colour channels are kept as stored),
/// which is what llama.cpp's own loader (stb_image asked for 3 channels) does, so both
/// pipelines see the same pixels. EXIF orientation is applied (JPEG/TIFF/WebP).
pub fn load_image(path: &Path, max_pixels: u64) -> Result<LoadedImage, ImageError> {
    let p = || path.to_path_buf();
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ImageError::NotFound { path: p() },
        _ => ImageError::Io {
            path: p(),
            source: e,
        },
    })?;
    if meta.is_dir() {
        return Err(ImageError::IsDirectory { path: p() });
    }
    if let Some(kind) = crate::gguf::special_file_kind(&meta) {
        return Err(ImageError::NotRegularFile { path: p(), kind });
    }
    if meta.len() == 0 {
        return Err(ImageError::Empty { path: p() });
    }
    if meta.len() > MAX_IMAGE_FILE_BYTES {
        let mut head = [0u8; 16];
        let n = std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
            .unwrap_or(0);
        if let Some(container) = video_container(&head[..n]) {
            return Err(ImageError::IsVideo {
                path: p(),
                container,
            });
        }
        return Err(ImageError::FileTooLarge {
            path: p(),
            bytes: meta.len(),
            limit: MAX_IMAGE_FILE_BYTES,
        });
    }
    let bytes = std::fs::read(path).map_err(|e| ImageError::Io {
        path: p(),
        source: e,
    })?;
    decode_image(&bytes, path, max_pixels)
}

/// The video container whose signature `head` (a file's first bytes) starts with, if any.
pub fn video_container(head: &[u8]) -> Option<&'static str> {
    match head {
        // HEIF/AVIF stills (a phone's photos) are ISO files too: their brand tells.
        [_, _, _, _, b'f', b't', b'y', b'p', b'h', b'e', b'i', _, ..]
        | [_, _, _, _, b'f', b't', b'y', b'p', b'm', b'i', b'f', b'1', ..]
        | [_, _, _, _, b'f', b't', b'y', b'p', b'a', b'v', b'i', b'f', ..] => None,
        [_, _, _, _, b'f', b't', b'y', b'p', b'q', b't', ..] => Some("QuickTime MOV"),
        [_, _, _, _, b'f', b't', b'y', b'p', ..] => Some("MP4"),
        [0x1A, 0x45, 0xDF, 0xA3, ..] => Some("WebM/Matroska"),
        [b'R', b'I', b'F', b'F', _, _, _, _, b'A', b'V', b'I', b' ', ..] => Some("AVI"),
        [b'F', b'L', b'V', ..] => Some("FLV"),
        [0x00, 0x00, 0x01, 0xBA, ..] => Some("MPEG program stream"),
        [b'O', b'g', b'g', b'S', ..] => Some("Ogg"),
        _ => None,
    }
}

/// Decodes an image held in memory (a file's bytes, or an upload) as [`load_image`] does;
/// `name` is what errors call it (a path, or e.g. a request field).
pub fn decode_image(bytes: &[u8], name: &Path, max_pixels: u64) -> Result<LoadedImage, ImageError> {
    let p = || name.to_path_buf();
    if bytes.is_empty() {
        return Err(ImageError::Empty { path: p() });
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::Io {
            path: p(),
            source: e,
        })?;
    match reader.format() {
        None => {
            return Err(match video_container(bytes) {
                Some(container) => ImageError::IsVideo {
                    path: p(),
                    container,
                },
                None => ImageError::UnknownFormat { path: p() },
            })
        }
        Some(ImageFormat::Jpeg) if !jpeg_is_complete(bytes) => {
            return Err(ImageError::Decode {
                path: p(),
                reason: "the JPEG data ends before its end-of-image marker".into(),
            })
        }
        Some(_) => {}
    }
    let mut decoder = reader.into_decoder().map_err(|e| ImageError::Decode {
        path: p(),
        reason: e.to_string(),
    })?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(ImageError::ZeroSize {
            path: p(),
            width,
            height,
        });
    }
    if width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
        return Err(ImageError::SideTooLarge {
            path: p(),
            width,
            height,
            max: MAX_IMAGE_SIDE,
        });
    }
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(ImageError::TooLarge {
            path: p(),
            width,
            height,
            limit: max_pixels,
        });
    }
    let orientation = decoder.orientation().ok();
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| ImageError::Decode {
        path: p(),
        reason: e.to_string(),
    })?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    let rgb = img.into_rgb8();
    let (width, height) = rgb.dimensions();
    Ok(LoadedImage {
        path: p(),
        width,
        height,
        rgb: rgb.into_raw(),
    })
}

/// Whether a JPEG file holds its whole image: an end-of-image marker (FF D9) after the last
/// start-of-scan (FF DA). JPEG decoders fill a truncated scan with grey without an error, so a
/// cut file would otherwise reach the model silently. (Inside entropy-coded data an FF byte is
/// always followed by 00 or a restart marker, so FF D9 cannot occur there; data appended after
/// the end marker is allowed.)
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last = |marker: u8| bytes.windows(2).rposition(|w| w == [0xFF, marker]);
    match (last(0xDA), last(0xD9)) {
        (Some(sos), Some(eoi)) => eoi > sos,
        (None, Some(_)) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_containers_are_told_from_heif_and_avif_stills() {
        let ftyp = |brand: &[u8; 4]| [&[0, 0, 0, 24][..], b"ftyp", brand].concat();
        assert_eq!(video_container(&ftyp(b"isom")), Some("MP4"));
        assert_eq!(video_container(&ftyp(b"qt  ")), Some("QuickTime MOV"));
        for still in [b"heic", b"heix", b"mif1", b"avif"] {
            assert_eq!(video_container(&ftyp(still)), None, "{still:?}");
        }
        assert_eq!(
            video_container(&[0x1A, 0x45, 0xDF, 0xA3]),
            Some("WebM/Matroska")
        );
        assert_eq!(video_container(b"\x89PNG"), None);
    }

    use image::{GrayImage, Luma, Rgb, RgbImage, Rgba, RgbaImage};

    fn write(dir: &Path, name: &str, img: &DynamicImage, fmt: ImageFormat) -> PathBuf {
        let path = dir.join(name);
        img.save_with_format(&path, fmt).expect("encode test image");
        path
    }

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([(x * 7) as u8, (y * 5) as u8, ((x + y) * 3) as u8])
        })
    }

    #[test]
    fn every_supported_format_decodes_to_the_same_pixels() {
        let dir = tempfile::tempdir().unwrap();
        let img = DynamicImage::ImageRgb8(gradient(33, 17));
        // Lossless formats give the exact pixels back.
        for (name, fmt) in [
            ("a.png", ImageFormat::Png),
            ("a.bmp", ImageFormat::Bmp),
            ("a.tiff", ImageFormat::Tiff),
            ("a.webp", ImageFormat::WebP),
        ] {
            let loaded = load_image(&write(dir.path(), name, &img, fmt), DEFAULT_MAX_PIXELS)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!((loaded.width, loaded.height), (33, 17), "{name}");
            assert_eq!(loaded.rgb, img.to_rgb8().into_raw(), "{name}");
        }
        // JPEG and GIF are lossy/palettised: size and roughly the colours.
        for (name, fmt) in [("a.jpg", ImageFormat::Jpeg), ("a.gif", ImageFormat::Gif)] {
            let loaded = load_image(&write(dir.path(), name, &img, fmt), DEFAULT_MAX_PIXELS)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!((loaded.width, loaded.height), (33, 17), "{name}");
            assert_eq!(loaded.rgb.len(), 33 * 17 * 3);
        }
    }

    #[test]
    fn alpha_is_dropped_and_colours_kept_as_llama_cpp_does() {
        // llama.cpp loads images with stb_image asking for 3 channels, which drops alpha
        // without compositing: a fully transparent red pixel stays red.
        let dir = tempfile::tempdir().unwrap();
        let rgba = RgbaImage::from_fn(4, 2, |x, _| {
            if x < 2 {
                Rgba([255, 0, 0, 0])
            } else {
                Rgba([0, 0, 255, 128])
            }
        });
        let path = write(
            dir.path(),
            "alpha.png",
            &DynamicImage::ImageRgba8(rgba),
            ImageFormat::Png,
        );
        let loaded = load_image(&path, DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!(&loaded.rgb[..3], &[255, 0, 0]);
        assert_eq!(&loaded.rgb[6..9], &[0, 0, 255]);
    }

    #[test]
    fn grayscale_is_replicated_to_three_channels() {
        let dir = tempfile::tempdir().unwrap();
        let gray = GrayImage::from_fn(3, 1, |x, _| Luma([(x * 100) as u8]));
        let path = write(
            dir.path(),
            "g.png",
            &DynamicImage::ImageLuma8(gray),
            ImageFormat::Png,
        );
        let loaded = load_image(&path, DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!(loaded.rgb, vec![0, 0, 0, 100, 100, 100, 200, 200, 200]);
    }

    /// A JPEG with an EXIF APP1 segment saying `orientation`, spliced in after SOI.
    fn jpeg_with_orientation(img: &RgbImage, orientation: u16) -> Vec<u8> {
        let mut jpeg = Vec::new();
        DynamicImage::ImageRgb8(img.clone())
            .write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg)
            .unwrap();
        // TIFF header (little endian), one IFD with one entry: 0x0112 Orientation, SHORT, 1.
        let mut tiff = vec![b'I', b'I', 42, 0, 8, 0, 0, 0, 1, 0];
        tiff.extend_from_slice(&0x0112u16.to_le_bytes());
        tiff.extend_from_slice(&3u16.to_le_bytes());
        tiff.extend_from_slice(&1u32.to_le_bytes());
        tiff.extend_from_slice(&orientation.to_le_bytes());
        tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let len = (app1.len() + 2) as u16;
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&app1);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    #[test]
    fn exif_orientation_is_applied() {
        // llama.cpp's stb_image ignores EXIF; we rotate as every image viewer does, so a
        // phone photo is seen upright (a deliberate difference, documented in README).
        let dir = tempfile::tempdir().unwrap();
        let img = gradient(40, 20);
        let upright = dir.path().join("o1.jpg");
        std::fs::write(&upright, jpeg_with_orientation(&img, 1)).unwrap();
        let rotated = dir.path().join("o6.jpg");
        std::fs::write(&rotated, jpeg_with_orientation(&img, 6)).unwrap();
        let a = load_image(&upright, DEFAULT_MAX_PIXELS).unwrap();
        let b = load_image(&rotated, DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!((a.width, a.height), (40, 20));
        assert_eq!(
            (b.width, b.height),
            (20, 40),
            "orientation 6 = rotate 90 degrees"
        );
    }

    #[test]
    fn pixel_limit_is_checked_from_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "big.png",
            &DynamicImage::ImageRgb8(gradient(100, 100)),
            ImageFormat::Png,
        );
        assert!(load_image(&path, 10_000).is_ok());
        match load_image(&path, 9_999) {
            Err(ImageError::TooLarge {
                width: 100,
                height: 100,
                limit: 9_999,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn jpeg_completeness_needs_an_end_marker_after_the_last_scan() {
        let sos = [0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x01, 0xFF, 0x00, 0x12];
        assert!(!jpeg_is_complete(&sos));
        let mut full = sos.to_vec();
        full.extend_from_slice(&[0xFF, 0xD9]);
        assert!(jpeg_is_complete(&full));
        full.extend_from_slice(b"trailing data");
        assert!(jpeg_is_complete(&full));
        // An embedded thumbnail's end marker before the main scan does not count.
        let thumb_then_cut = [0xFF, 0xD8, 0xFF, 0xD9, 0xFF, 0xDA, 0x00, 0x10];
        assert!(!jpeg_is_complete(&thumb_then_cut));
    }
}
