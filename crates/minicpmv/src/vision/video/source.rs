//! Where the frames of a video come from, decoded one at a time so that a video is never held
//! in memory whole: an animated GIF or WebP ([`Animation`]), or a folder of numbered image
//! files ([`FrameFolder`]). [`FrameSource::frames`] yields only the frames a sample asks for,
//! in order, dropping the others as it goes.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::codecs::gif::GifDecoder;
use image::codecs::webp::WebPDecoder;
use image::{AnimationDecoder, Frame, ImageDecoder, ImageFormat};

use super::ffmpeg::FfmpegVideo;
use super::VideoInfo;
use crate::vision::{load_image, ImageError, LoadedImage, MAX_IMAGE_FILE_BYTES, MAX_IMAGE_SIDE};

/// Most frames read from one animation or folder: far more than any sampler takes, and a bound
/// on the time a hostile file can cost.
pub const MAX_SOURCE_FRAMES: usize = 1_000_000;

/// Why a video cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VideoError {
    /// Reading the file or folder failed.
    #[error("cannot read video {}: {source}", path.display())]
    Io {
        /// The path given.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_IMAGE_FILE_BYTES`].
    #[error("video file {} is {bytes} bytes, above the limit of {limit} bytes for an animation", path.display())]
    FileTooLarge {
        /// The path given.
        path: PathBuf,
        /// Its size.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// Not a GIF or WebP animation (a still image, or another format).
    #[error("{} is not an animated GIF or WebP{}", path.display(), if *still { " but a still image: pass it with --image" } else { "" })]
    NotAnimation {
        /// The path given.
        path: PathBuf,
        /// Whether it is a still image of a format we read.
        still: bool,
    },
    /// A frame does not decode.
    #[error("cannot decode frame {index} of {}: {reason}", path.display())]
    Decode {
        /// The path given.
        path: PathBuf,
        /// The frame, 0-based.
        index: usize,
        /// The decoder's message.
        reason: String,
    },
    /// The canvas is larger than allowed (checked from the header, before any frame).
    #[error("video {} is {width}x{height}, above the limit of {limit} pixels per frame (or {MAX_IMAGE_SIDE} per side)", path.display())]
    TooLarge {
        /// The path given.
        path: PathBuf,
        /// Width from the header.
        width: u32,
        /// Height from the header.
        height: u32,
        /// The pixel limit.
        limit: u64,
    },
    /// No frame at all (an empty animation or folder).
    #[error("video {} has no frames", path.display())]
    NoFrames {
        /// The path given.
        path: PathBuf,
    },
    /// More than [`MAX_SOURCE_FRAMES`] frames.
    #[error("video {} has more than {MAX_SOURCE_FRAMES} frames", path.display())]
    TooManyFrames {
        /// The path given.
        path: PathBuf,
    },
    /// A frame of a folder failed to load.
    #[error(transparent)]
    Frame(#[from] ImageError),
    /// `ffprobe` or `ffmpeg` is needed for this file and cannot be found.
    #[error("{program} is needed to read video {} and was not found: install ffmpeg (Debian/Ubuntu: apt-get install ffmpeg; macOS: brew install ffmpeg), set MINICPMV_FFMPEG and MINICPMV_FFPROBE to the programs, or pass an animated GIF/WebP or a folder of numbered frames", path.display())]
    NoFfmpeg {
        /// `ffmpeg` or `ffprobe`.
        program: &'static str,
        /// The video.
        path: PathBuf,
    },
    /// `ffprobe` could not read the file's header (not a video, corrupt, no video stream).
    #[error("cannot read video {}: {reason}", path.display())]
    Probe {
        /// The video.
        path: PathBuf,
        /// ffprobe's message, or what its answer lacks.
        reason: String,
    },
    /// `ffmpeg` failed, was killed, or gave fewer frames than the header announced.
    #[error("cannot decode video {}: {reason}", path.display())]
    Ffmpeg {
        /// The video.
        path: PathBuf,
        /// What happened.
        reason: String,
    },
    /// The header announces a video longer than [`MAX_VIDEO_SECS`].
    #[error("video {} lasts {secs:.0} s by its header, above the limit of {limit} s ({} h): every frame up to the last one taken is decoded, so cut it first (e.g. ffmpeg -ss START -t SECONDS -i IN -c copy OUT)", path.display(), limit / 3600)]
    TooLong {
        /// The video.
        path: PathBuf,
        /// Its duration by its header.
        secs: f64,
        /// [`MAX_VIDEO_SECS`].
        limit: u64,
    },
    /// A video setting is out of range.
    #[error("video {name} {value} is out of range: it must be {rule}")]
    Setting {
        /// The setting, in words (`fps`, `max frames`, ...).
        name: &'static str,
        /// The value given.
        value: String,
        /// The allowed range.
        rule: &'static str,
    },
    /// The frame rule cannot sample this video (no frame, a bad rate).
    #[error("cannot take frames from video {}: {reason}", path.display())]
    Sample {
        /// The video.
        path: PathBuf,
        /// Why.
        reason: super::SampleError,
    },
    /// A frame of a folder differs in size from the first frame.
    #[error("frame {} is {width}x{height}, but the video's frames are {expected_width}x{expected_height}: every frame must have the same size", path.display())]
    FrameSize {
        /// The frame's file.
        path: PathBuf,
        /// Its width.
        width: u32,
        /// Its height.
        height: u32,
        /// The first frame's width.
        expected_width: u32,
        /// The first frame's height.
        expected_height: u32,
    },
}

/// Longest video accepted, in seconds by its header (4 hours): frames are decoded in order up
/// to the last one taken, so a longer video costs hours, and a header claiming it on a small
/// file is a lie.
pub const MAX_VIDEO_SECS: u64 = 4 * 3600;

/// Refuses a frame size of zero, above llama.cpp's side limit or above `max_pixels` (from the
/// header, before any frame is decoded).
pub(super) fn check_frame_size(
    path: &Path,
    width: u32,
    height: u32,
    max_pixels: u64,
) -> Result<(), VideoError> {
    if width == 0
        || height == 0
        || width > MAX_IMAGE_SIDE
        || height > MAX_IMAGE_SIDE
        || u64::from(width) * u64::from(height) > max_pixels
    {
        return Err(VideoError::TooLarge {
            path: path.to_path_buf(),
            width,
            height,
            limit: max_pixels,
        });
    }
    Ok(())
}

/// Browsers show a GIF frame delay of 10 ms or less as 100 ms; so do we when we derive a rate.
const MIN_DELAY_MS: f64 = 10.0;
const SHORT_DELAY_AS_MS: f64 = 100.0;

/// An animated GIF or WebP held as its encoded bytes; frames are decoded when read.
#[derive(Debug, Clone)]
pub struct Animation {
    path: PathBuf,
    bytes: Vec<u8>,
    format: ImageFormat,
    info: VideoInfo,
}

impl Animation {
    /// Reads `path`, checks the canvas against `max_pixels`, and counts the frames and their
    /// delays (one decoding pass; nothing kept). The rate is frames over the summed delays.
    pub fn open(path: &Path, max_pixels: u64) -> Result<Animation, VideoError> {
        let p = || path.to_path_buf();
        let meta =
            std::fs::metadata(path).map_err(|source| VideoError::Io { path: p(), source })?;
        if meta.len() > MAX_IMAGE_FILE_BYTES {
            return Err(VideoError::FileTooLarge {
                path: p(),
                bytes: meta.len(),
                limit: MAX_IMAGE_FILE_BYTES,
            });
        }
        let bytes = std::fs::read(path).map_err(|source| VideoError::Io { path: p(), source })?;
        let format = match image::guess_format(&bytes) {
            Ok(f @ (ImageFormat::Gif | ImageFormat::WebP)) => f,
            Ok(_) => {
                return Err(VideoError::NotAnimation {
                    path: p(),
                    still: true,
                })
            }
            Err(_) => {
                return Err(VideoError::NotAnimation {
                    path: p(),
                    still: false,
                })
            }
        };
        let mut anim = Animation {
            path: p(),
            bytes,
            format,
            info: VideoInfo {
                n_frames: 0,
                fps: 1.0,
            },
        };
        let (width, height) = anim.dimensions()?;
        check_frame_size(path, width, height, max_pixels)?;
        let (mut n, mut total_ms) = (0usize, 0.0f64);
        for frame in anim.decoded_frames()? {
            let frame = frame?;
            let (num, den) = frame.delay().numer_denom_ms();
            let ms = f64::from(num) / f64::from(den.max(1));
            total_ms += if ms <= MIN_DELAY_MS {
                SHORT_DELAY_AS_MS
            } else {
                ms
            };
            n += 1;
            if n > MAX_SOURCE_FRAMES {
                return Err(VideoError::TooManyFrames { path: p() });
            }
        }
        if n < 2 {
            // One frame is a still image whatever its container says.
            return Err(if n == 0 {
                VideoError::NoFrames { path: p() }
            } else {
                VideoError::NotAnimation {
                    path: p(),
                    still: true,
                }
            });
        }
        anim.info = VideoInfo {
            n_frames: n,
            fps: n as f64 * 1000.0 / total_ms,
        };
        Ok(anim)
    }

    /// Frame count and rate.
    pub fn info(&self) -> VideoInfo {
        self.info
    }

    fn dimensions(&self) -> Result<(u32, u32), VideoError> {
        let bad = |e: image::ImageError| VideoError::Decode {
            path: self.path.clone(),
            index: 0,
            reason: e.to_string(),
        };
        Ok(match self.format {
            ImageFormat::Gif => GifDecoder::new(Cursor::new(&self.bytes))
                .map_err(bad)?
                .dimensions(),
            _ => WebPDecoder::new(Cursor::new(&self.bytes))
                .map_err(bad)?
                .dimensions(),
        })
    }

    /// The composited frames, in order, each decoded when reached.
    fn decoded_frames(
        &self,
    ) -> Result<impl Iterator<Item = Result<Frame, VideoError>> + '_, VideoError> {
        let bad = |index: usize, e: image::ImageError| VideoError::Decode {
            path: self.path.clone(),
            index,
            reason: e.to_string(),
        };
        let frames = match self.format {
            ImageFormat::Gif => GifDecoder::new(Cursor::new(&self.bytes[..]))
                .map_err(|e| bad(0, e))?
                .into_frames(),
            _ => {
                let d = WebPDecoder::new(Cursor::new(&self.bytes[..])).map_err(|e| bad(0, e))?;
                if !d.has_animation() {
                    return Err(VideoError::NotAnimation {
                        path: self.path.clone(),
                        still: true,
                    });
                }
                d.into_frames()
            }
        };
        Ok(frames
            .enumerate()
            .map(move |(i, f)| f.map_err(|e| bad(i, e))))
    }
}

/// A folder of frames: its image files in the order of the last number in their names
/// (`frame_2.png` before `frame_10.png`), at a rate the caller gives.
#[derive(Debug, Clone)]
pub struct FrameFolder {
    dir: PathBuf,
    files: Vec<PathBuf>,
    fps: f64,
    max_pixels: u64,
}

/// The last run of digits in a file stem, for the frame order.
fn frame_number(path: &Path) -> Option<u64> {
    let stem = path.file_stem()?.to_str()?;
    let end = stem.rfind(|c: char| c.is_ascii_digit())? + 1;
    let start = stem[..end]
        .rfind(|c: char| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    stem[start..end].parse().ok()
}

impl FrameFolder {
    /// The image files of `dir` (by extension: png, jpg, jpeg, webp, gif, bmp, tif, tiff) whose
    /// names carry a number, ordered by it (then by name); other files are ignored.
    pub fn open(dir: &Path, fps: f64, max_pixels: u64) -> Result<FrameFolder, VideoError> {
        let io = |source| VideoError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut files: Vec<(u64, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let is_image = path
                .extension()
                .and_then(|e| e.to_str())
                .map(|e| e.to_ascii_lowercase())
                .is_some_and(|e| {
                    ["png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff"]
                        .contains(&e.as_str())
                });
            if let (true, Some(n)) = (is_image && path.is_file(), frame_number(&path)) {
                files.push((n, path));
                if files.len() > MAX_SOURCE_FRAMES {
                    return Err(VideoError::TooManyFrames {
                        path: dir.to_path_buf(),
                    });
                }
            }
        }
        if files.is_empty() {
            return Err(VideoError::NoFrames {
                path: dir.to_path_buf(),
            });
        }
        files.sort();
        Ok(FrameFolder {
            dir: dir.to_path_buf(),
            files: files.into_iter().map(|(_, p)| p).collect(),
            fps,
            max_pixels,
        })
    }

    /// Frame count and the rate given.
    pub fn info(&self) -> VideoInfo {
        VideoInfo {
            n_frames: self.files.len(),
            fps: self.fps,
        }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The first frame's size, from its header.
    fn dimensions(&self) -> Result<(u32, u32), VideoError> {
        let first = &self.files[0];
        image::image_dimensions(first).map_err(|e| VideoError::Decode {
            path: first.clone(),
            index: 0,
            reason: e.to_string(),
        })
    }
}

/// A video to take frames from.
#[derive(Debug, Clone)]
pub enum FrameSource {
    /// An animated GIF or WebP.
    Animation(Animation),
    /// A folder of numbered frames.
    Folder(FrameFolder),
    /// Any other video file, read by the ffmpeg programs.
    Ffmpeg(FfmpegVideo),
}

/// What the first bytes of a file say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Animation,
    Still,
    Other,
}

fn sniff(path: &Path) -> Result<Kind, VideoError> {
    let mut head = [0u8; 64];
    let mut f = std::fs::File::open(path).map_err(|source| VideoError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let n = std::io::Read::read(&mut f, &mut head).map_err(|source| VideoError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(match image::guess_format(&head[..n]) {
        Ok(ImageFormat::Gif | ImageFormat::WebP) => Kind::Animation,
        Ok(_) => Kind::Still,
        Err(_) => Kind::Other,
    })
}

impl FrameSource {
    /// Opens `path` as a video: a folder of numbered frames (at `folder_fps` frames per second),
    /// an animated GIF or WebP (read here), or any other file (read by ffmpeg). Refused: a still
    /// image, frames above `max_pixels`, and a video longer than [`MAX_VIDEO_SECS`].
    pub fn open(path: &Path, folder_fps: f64, max_pixels: u64) -> Result<FrameSource, VideoError> {
        let p = || path.to_path_buf();
        let meta =
            std::fs::metadata(path).map_err(|source| VideoError::Io { path: p(), source })?;
        let source = if meta.is_dir() {
            FrameSource::Folder(FrameFolder::open(path, folder_fps, max_pixels)?)
        } else {
            if let Some(kind) = crate::gguf::special_file_kind(&meta) {
                return Err(VideoError::Io {
                    path: p(),
                    source: std::io::Error::other(format!("{kind}, not a regular file")),
                });
            }
            if meta.len() == 0 {
                return Err(VideoError::NoFrames { path: p() });
            }
            match sniff(path)? {
                Kind::Animation => FrameSource::Animation(Animation::open(path, max_pixels)?),
                Kind::Still => {
                    return Err(VideoError::NotAnimation {
                        path: p(),
                        still: true,
                    })
                }
                Kind::Other => FrameSource::Ffmpeg(FfmpegVideo::open(path, max_pixels)?),
            }
        };
        let secs = source.info().duration();
        if secs.is_nan() || secs > MAX_VIDEO_SECS as f64 {
            return Err(VideoError::TooLong {
                path: p(),
                secs,
                limit: MAX_VIDEO_SECS,
            });
        }
        Ok(source)
    }

    /// Frame count and rate.
    pub fn info(&self) -> VideoInfo {
        match self {
            FrameSource::Animation(a) => a.info(),
            FrameSource::Folder(f) => f.info(),
            FrameSource::Ffmpeg(v) => v.info(),
        }
    }

    /// Width and height of the frames (a folder's: its first frame's, from its header).
    pub fn dimensions(&self) -> Result<(u32, u32), VideoError> {
        match self {
            FrameSource::Animation(a) => a.dimensions(),
            FrameSource::Folder(f) => f.dimensions(),
            FrameSource::Ffmpeg(v) => Ok(v.dimensions()),
        }
    }

    /// SHA-256 of what the frames are decoded from: the file's bytes (an animation or a video
    /// file), or every frame file's name and bytes in order (a folder). Read in pieces.
    pub fn content_digest(&self) -> Result<[u8; 32], VideoError> {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let feed = |h: &mut Sha256, path: &Path| -> Result<(), VideoError> {
            let io = |source| VideoError::Io {
                path: path.to_path_buf(),
                source,
            };
            let mut f = std::fs::File::open(path).map_err(io)?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = std::io::Read::read(&mut f, &mut buf).map_err(io)?;
                if n == 0 {
                    return Ok(());
                }
                h.update(&buf[..n]);
            }
        };
        match self {
            FrameSource::Animation(a) => h.update(&a.bytes),
            FrameSource::Ffmpeg(v) => feed(&mut h, v.path())?,
            FrameSource::Folder(f) => {
                for file in &f.files {
                    let name = file
                        .file_name()
                        .map(|n| n.as_encoded_bytes())
                        .unwrap_or(b"");
                    h.update((name.len() as u64).to_le_bytes());
                    h.update(name);
                    feed(&mut h, file)?;
                }
            }
        }
        Ok(h.finalize().into())
    }

    /// The path given.
    pub fn path(&self) -> &Path {
        match self {
            FrameSource::Animation(a) => &a.path,
            FrameSource::Folder(f) => &f.dir,
            FrameSource::Ffmpeg(v) => v.path(),
        }
    }

    /// The frames at `indices` (ascending; a repeated index yields its frame again), decoded
    /// one at a time: frames not asked for are decoded (an animation's frames build on each
    /// other) and dropped, never kept. Every frame has the size of [`FrameSource::dimensions`]
    /// (a folder frame of another size is an error).
    pub fn frames<'a>(
        &'a self,
        indices: &'a [usize],
    ) -> Result<Box<dyn Iterator<Item = Result<LoadedImage, VideoError>> + 'a>, VideoError> {
        match self {
            FrameSource::Ffmpeg(v) => Ok(Box::new(v.frames(indices)?)),
            FrameSource::Folder(f) => {
                let (w, h) = f.dimensions()?;
                Ok(Box::new(indices.iter().map(move |&i| {
                    let img = load_image(&f.files[i], f.max_pixels)?;
                    if (img.width, img.height) != (w, h) {
                        return Err(VideoError::FrameSize {
                            path: f.files[i].clone(),
                            width: img.width,
                            height: img.height,
                            expected_width: w,
                            expected_height: h,
                        });
                    }
                    Ok(img)
                })))
            }
            FrameSource::Animation(a) => {
                let mut wanted = indices.iter().copied().peekable();
                let mut out: Vec<Result<LoadedImage, VideoError>> = Vec::new();
                let path = a.path.clone();
                // Walk the frames once; the iterator below is lazy over `decoded_frames`.
                let frames = a.decoded_frames()?;
                Ok(Box::new(
                    frames
                        .enumerate()
                        .flat_map(move |(i, frame)| {
                            out.clear();
                            while wanted.peek() == Some(&i) {
                                wanted.next();
                                out.push(frame.as_ref().map(|f| rgb_of(f, &path, i)).map_err(
                                    |e| VideoError::Decode {
                                        path: path.clone(),
                                        index: i,
                                        reason: e.to_string(),
                                    },
                                ));
                            }
                            std::mem::take(&mut out)
                        })
                        .take(indices.len()),
                ))
            }
        }
    }
}

/// A composited RGBA frame as RGB8 (alpha dropped, as for still images).
fn rgb_of(frame: &Frame, path: &Path, index: usize) -> LoadedImage {
    let buf = frame.buffer();
    let (width, height) = buf.dimensions();
    let rgb = buf.pixels().flat_map(|p| [p[0], p[1], p[2]]).collect();
    LoadedImage {
        path: PathBuf::from(format!("{}#frame{index}", path.display())),
        width,
        height,
        rgb,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::codecs::gif::{GifEncoder, Repeat};
    use image::{Delay, Rgba, RgbaImage};

    const COLOURS: [[u8; 3]; 4] = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]];

    /// An animated GIF of `n` 16x8 frames, frame i filled with COLOURS[i % 4], `delay_ms` each.
    fn gif(dir: &Path, n: usize, delay_ms: u32) -> PathBuf {
        let path = dir.join(format!("anim-{n}-{delay_ms}.gif"));
        let mut bytes = Vec::new();
        {
            let mut enc = GifEncoder::new(&mut bytes);
            enc.set_repeat(Repeat::Infinite).unwrap();
            for i in 0..n {
                let [r, g, b] = COLOURS[i % 4];
                let img = RgbaImage::from_pixel(16, 8, Rgba([r, g, b, 255]));
                let delay = Delay::from_numer_denom_ms(delay_ms, 1);
                enc.encode_frame(Frame::from_parts(img, 0, 0, delay))
                    .unwrap();
            }
        }
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn a_gif_gives_its_frame_count_rate_and_the_frames_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let anim = Animation::open(&gif(dir.path(), 10, 100), 1 << 20).unwrap();
        assert_eq!(
            anim.info(),
            VideoInfo {
                n_frames: 10,
                fps: 10.0
            }
        );
        let source = FrameSource::Animation(anim);
        let got: Vec<LoadedImage> = source
            .frames(&[0, 5, 5, 9])
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(got.len(), 4);
        for (img, i) in got.iter().zip([0usize, 5, 5, 9]) {
            assert_eq!((img.width, img.height), (16, 8));
            assert_eq!(&img.rgb[..3], &COLOURS[i % 4], "frame {i}");
        }
    }

    #[test]
    fn short_gif_delays_count_as_100_ms_as_browsers_show_them() {
        let dir = tempfile::tempdir().unwrap();
        let anim = Animation::open(&gif(dir.path(), 4, 0), 1 << 20).unwrap();
        assert_eq!(anim.info().fps, 10.0);
    }

    #[test]
    fn stills_other_files_and_big_canvases_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let one = gif(dir.path(), 1, 100);
        let err = Animation::open(&one, 1 << 20).unwrap_err();
        assert!(
            err.to_string()
                .contains("still image: pass it with --image"),
            "{err}"
        );
        let png = dir.path().join("still.png");
        RgbaImage::new(4, 4).save(&png).unwrap();
        assert!(matches!(
            Animation::open(&png, 1 << 20),
            Err(VideoError::NotAnimation { still: true, .. })
        ));
        let text = dir.path().join("notes.gif");
        std::fs::write(&text, b"not a gif at all").unwrap();
        assert!(matches!(
            Animation::open(&text, 1 << 20),
            Err(VideoError::NotAnimation { still: false, .. })
        ));
        let big = gif(dir.path(), 3, 100);
        assert!(matches!(
            Animation::open(&big, 100),
            Err(VideoError::TooLarge {
                width: 16,
                height: 8,
                ..
            })
        ));
        let missing = dir.path().join("missing.gif");
        assert!(matches!(
            Animation::open(&missing, 1 << 20),
            Err(VideoError::Io { .. })
        ));
    }

    #[test]
    fn a_folder_is_ordered_by_frame_number_not_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for (n, c) in [(10, 2usize), (2, 1), (1, 0)] {
            let [r, g, b] = COLOURS[c];
            RgbaImage::from_pixel(4, 4, Rgba([r, g, b, 255]))
                .save(dir.path().join(format!("frame_{n}.png")))
                .unwrap();
        }
        std::fs::write(dir.path().join("README.txt"), b"ignored").unwrap();
        let folder = FrameFolder::open(dir.path(), 2.0, 1 << 20).unwrap();
        assert_eq!(
            folder.info(),
            VideoInfo {
                n_frames: 3,
                fps: 2.0
            }
        );
        let source = FrameSource::Folder(folder);
        let got: Vec<LoadedImage> = source
            .frames(&[0, 1, 2])
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let firsts: Vec<&[u8]> = got.iter().map(|i| &i.rgb[..3]).collect();
        assert_eq!(firsts, [&COLOURS[0][..], &COLOURS[1][..], &COLOURS[2][..]]);
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            FrameFolder::open(empty.path(), 1.0, 1 << 20),
            Err(VideoError::NoFrames { .. })
        ));
    }

    #[test]
    fn frame_numbers_are_the_last_digits_of_the_stem() {
        assert_eq!(frame_number(Path::new("clip2_frame_0042.png")), Some(42));
        assert_eq!(frame_number(Path::new("7.jpg")), Some(7));
        assert_eq!(frame_number(Path::new("cover.png")), None);
    }
}
