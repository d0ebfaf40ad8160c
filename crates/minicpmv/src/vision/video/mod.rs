//! Which frames of a video a MiniCPM-V version looks at: each version's reference sampler,
//! applied to a frame count and a rate (pure; the decoding that feeds it is elsewhere).
//!
//! The rules, as their reference code has them (docs/video-reference.md quotes it;
//! testdata/video_sampling.py runs it and wrote the golden indices the tests compare with):
//! - [`FrameRule::Stride`]: MiniCPM-V 2.6's model card (`encode_video`), also MiniCPM-o 2.6's:
//!   every `round(fps)`-th frame from frame 0 (about one per second; Python rounds half to
//!   even), and when that is more than the cap, `uniform_sample` keeps the middle of each of
//!   `cap` equal bins. The 2.6 rule also serves 2.5 and 4.0, whose references have no video
//!   example.
//! - [`FrameRule::Uniform`]: MiniCPM-V 4.5's card: `choose_fps` frames per second (at most the
//!   video's own, rounded), uniform over all frames, at most `max_frames` per group times
//!   `max_packing` frames per group. The 3D resampler that packs a group of frames into one
//!   query set is not in the bundled llama.cpp's clip graph, so we run the reference with
//!   `MAX_NUM_PACKING = 1` (a value it accepts, 1-6): one frame per group, at most
//!   `max_frames` frames.
//! - [`FrameRule::PerSecond`]: MiniCPM-V 4.6's video processor (transformers,
//!   `MiniCPMV4_6VideoProcessor.sample_frames`): the frame at the start of each second; a video
//!   longer than `max_frames` seconds is sampled on a 0.1 s grid cut down to `max_frames` by
//!   `np.linspace`.
//!
//! Where the references fail (a rate below 0.5 frames per second, which they round to a step
//! of 0; a 4.5 video under 0.1 s, which asks for 0 frames), we take a step of 1 and at least one
//! frame.

mod ffmpeg;
mod source;

use std::path::PathBuf;

pub use crate::model::family::{FrameRule, VideoSpec};
pub use ffmpeg::{write_mp4, FfmpegFrames, FfmpegVideo};
pub use source::{
    Animation, FrameFolder, FrameSource, VideoError, MAX_SOURCE_FRAMES, MAX_VIDEO_SECS,
};

/// A video to ask about, and how to take its frames; `None` settings are the version's
/// reference values ([`crate::model::family::VideoSpec`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct VideoRequest {
    /// A video file (read by ffmpeg), an animated GIF or WebP, or a folder of numbered frames.
    pub path: PathBuf,
    /// Frames taken per second of video.
    pub fps: Option<f64>,
    /// Frames taken at most.
    pub max_frames: Option<usize>,
    /// Slices per frame at most, 1..=9.
    pub frame_slices: Option<u32>,
    /// The rate of a folder of frames, in frames per second (default 1).
    pub folder_fps: Option<f64>,
}

/// Most frames a video request may ask for: above every reference's cap, and a bound on the
/// work one request can ask for.
pub const MAX_FRAMES_LIMIT: usize = 1024;

impl VideoRequest {
    /// The video at `path` with the version's reference settings.
    pub fn new(path: impl Into<PathBuf>) -> VideoRequest {
        VideoRequest {
            path: path.into(),
            fps: None,
            max_frames: None,
            frame_slices: None,
            folder_fps: None,
        }
    }

    /// Frames taken per second.
    pub fn fps(mut self, fps: f64) -> Self {
        self.fps = Some(fps);
        self
    }

    /// Frames taken at most.
    pub fn max_frames(mut self, n: usize) -> Self {
        self.max_frames = Some(n);
        self
    }

    /// Slices per frame at most.
    pub fn frame_slices(mut self, n: u32) -> Self {
        self.frame_slices = Some(n);
        self
    }

    /// The rate of a folder of frames.
    pub fn folder_fps(mut self, fps: f64) -> Self {
        self.folder_fps = Some(fps);
        self
    }

    /// Checks the settings (before any file is read).
    pub fn check(&self) -> Result<(), VideoError> {
        let bad = |name: &'static str, value: String, rule: &'static str| {
            Err(VideoError::Setting { name, value, rule })
        };
        for (name, v) in [("fps", self.fps), ("folder fps", self.folder_fps)] {
            if let Some(f) = v {
                if !(f.is_finite() && f > 0.0 && f <= 1000.0) {
                    return bad(name, f.to_string(), "a number above 0 and at most 1000");
                }
            }
        }
        if let Some(n) = self.max_frames {
            if !(1..=MAX_FRAMES_LIMIT).contains(&n) {
                return bad(
                    "max frames",
                    n.to_string(),
                    "from 1 to 1024 (MAX_FRAMES_LIMIT)",
                );
            }
        }
        if let Some(n) = self.frame_slices {
            if !(1..=9).contains(&n) {
                return bad("frame slices", n.to_string(), "from 1 to 9");
            }
        }
        Ok(())
    }

    /// Opens the video and takes its frames by `spec`'s rule (or this request's settings):
    /// which frames, their size, and how many slices each gets. Reads headers only.
    pub fn open(&self, spec: &VideoSpec, max_pixels: u64) -> Result<OpenedVideo, VideoError> {
        self.check()?;
        let source = FrameSource::open(&self.path, self.folder_fps.unwrap_or(1.0), max_pixels)?;
        let rule = match self.max_frames {
            Some(n) => spec.frames.with_max_frames(n),
            None => spec.frames,
        };
        let fps = self.fps.unwrap_or_else(|| rule.default_fps());
        let sample = rule
            .sample_at(source.info(), fps)
            .map_err(|reason| VideoError::Sample {
                path: self.path.clone(),
                reason,
            })?;
        let (width, height) = source.dimensions()?;
        Ok(OpenedVideo {
            rule,
            fps,
            sample,
            width,
            height,
            max_slices: self.frame_slices.unwrap_or(spec.max_slices),
            separator: spec.separator.clone(),
            source,
        })
    }
}

/// A video opened for a question: the frames that will be taken and how they are laid out.
#[derive(Debug, Clone)]
pub struct OpenedVideo {
    /// Where the frames come from.
    pub source: FrameSource,
    /// The rule, with its cap.
    pub rule: FrameRule,
    /// Frames taken per second.
    pub fps: f64,
    /// The frames taken.
    pub sample: FrameSample,
    /// Every frame's width.
    pub width: u32,
    /// Every frame's height.
    pub height: u32,
    /// Slices per frame at most.
    pub max_slices: u32,
    /// The text between frames, and between the last frame and the question.
    pub separator: String,
}

impl OpenedVideo {
    /// Frames taken.
    pub fn n_frames(&self) -> usize {
        self.sample.indices.len()
    }
}

/// A video's frame count and rate, as its container states them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VideoInfo {
    /// Frames in the video (at least 1).
    pub n_frames: usize,
    /// Frames per second (finite, above 0).
    pub fps: f64,
}

impl VideoInfo {
    /// Seconds: `n_frames / fps`.
    pub fn duration(&self) -> f64 {
        self.n_frames as f64 / self.fps
    }
}

/// Why a video cannot be sampled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SampleError {
    /// The video has no frame.
    #[error("the video has no frames")]
    NoFrames,
    /// The rate is 0, negative or not a number.
    #[error("the video's frame rate is {0}; it must be a number above 0")]
    BadRate(f64),
    /// A cap of 0 frames.
    #[error("a limit of 0 frames: at least 1 frame must be taken")]
    ZeroCap,
}

/// The frames to take, in order: indices into the video's frames (0-based) and their times.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameSample {
    /// Frame indices, ascending (the 4.5 rule can repeat one in a video shorter than its
    /// sampling rate asks for).
    pub indices: Vec<usize>,
    /// Each frame's time in seconds: `index / fps`.
    pub times: Vec<f64>,
}

/// Python's `round(x)` for the values here: half to even.
fn py_round(x: f64) -> f64 {
    x.round_ties_even()
}

/// The reference's `uniform_sample(l, n)`: the middle element of each of `n` equal bins.
fn uniform_sample(l: &[usize], n: usize) -> Vec<usize> {
    let gap = l.len() as f64 / n as f64;
    (0..n)
        .map(|i| l[((i as f64 * gap + gap / 2.0) as usize).min(l.len() - 1)])
        .collect()
}

/// `np.linspace(0, last, num, dtype=int)`: `floor(i * step)`, the last exactly `last`.
fn linspace_int(last: usize, num: usize) -> Vec<usize> {
    if num == 1 {
        return vec![0];
    }
    let step = last as f64 / (num - 1) as f64;
    (0..num)
        .map(|i| {
            if i == num - 1 {
                last
            } else {
                (i as f64 * step).floor() as usize
            }
        })
        .collect()
}

impl FrameRule {
    /// The frames this rule takes from `video` at its reference rate ([`FrameRule::default_fps`]).
    /// See the module docs for each rule's source.
    pub fn sample(&self, video: VideoInfo) -> Result<FrameSample, SampleError> {
        self.sample_at(video, self.default_fps())
    }

    /// Frames per second the reference takes: 1 for [`FrameRule::Stride`] and
    /// [`FrameRule::PerSecond`], `choose_fps` for [`FrameRule::Uniform`].
    pub fn default_fps(&self) -> f64 {
        match *self {
            FrameRule::Uniform { choose_fps, .. } => choose_fps,
            FrameRule::Stride { .. } | FrameRule::PerSecond { .. } => 1.0,
        }
    }

    /// The same rule with a cap of `max_frames`.
    pub fn with_max_frames(self, max_frames: usize) -> FrameRule {
        match self {
            FrameRule::Stride { .. } => FrameRule::Stride { max_frames },
            FrameRule::Uniform { choose_fps, .. } => FrameRule::Uniform {
                choose_fps,
                max_frames,
            },
            FrameRule::PerSecond { .. } => FrameRule::PerSecond { max_frames },
        }
    }

    /// [`FrameRule::sample`] at `fps` frames per second instead of the reference's rate: the
    /// stride becomes `round(video fps / fps)`, 4.5's `choose_fps` becomes `fps`, and 4.6 takes
    /// the frame at each `1 / fps` seconds. At the default rate this is the reference exactly.
    pub fn sample_at(&self, video: VideoInfo, fps: f64) -> Result<FrameSample, SampleError> {
        if !(fps.is_finite() && fps > 0.0) {
            return Err(SampleError::BadRate(fps));
        }
        if video.n_frames == 0 {
            return Err(SampleError::NoFrames);
        }
        if !(video.fps.is_finite() && video.fps > 0.0) {
            return Err(SampleError::BadRate(video.fps));
        }
        let indices = match *self {
            FrameRule::Stride { max_frames } => stride(video, max_frames, fps)?,
            FrameRule::Uniform { max_frames, .. } => uniform(video, fps, max_frames)?,
            FrameRule::PerSecond { max_frames } => per_second(video, max_frames, fps)?,
        };
        let times = indices.iter().map(|&i| i as f64 / video.fps).collect();
        Ok(FrameSample { indices, times })
    }

    /// The cap of frames.
    pub fn max_frames(&self) -> usize {
        match *self {
            FrameRule::Stride { max_frames }
            | FrameRule::Uniform { max_frames, .. }
            | FrameRule::PerSecond { max_frames } => max_frames,
        }
    }
}

fn check_cap(max_frames: usize) -> Result<(), SampleError> {
    if max_frames == 0 {
        Err(SampleError::ZeroCap)
    } else {
        Ok(())
    }
}

/// 2.6: `range(0, n, round(video fps / fps))`, then `uniform_sample` to the cap.
fn stride(v: VideoInfo, max_frames: usize, fps: f64) -> Result<Vec<usize>, SampleError> {
    check_cap(max_frames)?;
    let step = (py_round(v.fps / fps) as usize).max(1);
    let all: Vec<usize> = (0..v.n_frames).step_by(step).collect();
    Ok(if all.len() > max_frames {
        uniform_sample(&all, max_frames)
    } else {
        all
    })
}

/// 4.5 with `MAX_NUM_PACKING = 1`.
fn uniform(v: VideoInfo, choose_fps: f64, max_frames: usize) -> Result<Vec<usize>, SampleError> {
    check_cap(max_frames)?;
    if !(choose_fps.is_finite() && choose_fps > 0.0) {
        return Err(SampleError::BadRate(choose_fps));
    }
    let duration = v.duration();
    let cap = max_frames as f64;
    let wanted = if choose_fps * duration.trunc() <= cap {
        py_round(choose_fps.min(py_round(v.fps)) * cap.min(duration))
    } else {
        // packing_nums = ceil(duration * choose_fps / cap) > 1 = MAX_NUM_PACKING: the cap.
        cap
    };
    let all: Vec<usize> = (0..v.n_frames).collect();
    Ok(uniform_sample(&all, (wanted as usize).max(1)))
}

/// 4.6: the start of each second (each `1 / fps` s), or past the cap a 0.1 s grid (finer when
/// `fps` is above 10) cut down by `linspace`.
fn per_second(v: VideoInfo, max_frames: usize, fps: f64) -> Result<Vec<usize>, SampleError> {
    check_cap(max_frames)?;
    let duration = v.duration();
    let last = v.n_frames - 1;
    if duration * fps > max_frames as f64 {
        let per_tick = 10f64.max(fps.ceil());
        let n_ticks = (duration * per_tick) as usize;
        // At 10 ticks a second, round(i * 0.1, 1) is the double nearest i / 10.
        let tick = |i: usize| (((i as f64 / per_tick) * v.fps) as usize).min(last);
        // The reference lists every tick, then keeps `max_frames` of them by linspace: the
        // kept ticks are computed directly (a 4-hour header at 1000 fps has 14 M ticks).
        if n_ticks > max_frames {
            return Ok(linspace_int(n_ticks - 1, max_frames)
                .into_iter()
                .map(tick)
                .collect());
        }
        return Ok((0..n_ticks).map(tick).collect());
    }
    let ticks = (duration * fps).ceil() as usize;
    Ok((0..ticks)
        .map(|i| (((i as f64 / fps) * v.fps) as usize).min(last))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One case of testdata/video_sampling.json.
    #[derive(serde::Deserialize)]
    struct Golden {
        n: usize,
        fps: f64,
        v26: Vec<usize>,
        v45_unpacked: Vec<usize>,
        v46: Vec<usize>,
    }

    fn golden() -> Vec<Golden> {
        serde_json::from_str(include_str!("../testdata/video_sampling.json")).unwrap()
    }

    #[test]
    fn every_rule_takes_the_frames_its_reference_takes() {
        let rules = [
            (FrameRule::Stride { max_frames: 64 }, "2.6"),
            (
                FrameRule::Uniform {
                    choose_fps: 5.0,
                    max_frames: 180,
                },
                "4.5",
            ),
            (FrameRule::PerSecond { max_frames: 128 }, "4.6"),
        ];
        for g in golden() {
            let video = VideoInfo {
                n_frames: g.n,
                fps: g.fps,
            };
            for (rule, name) in rules {
                let expected = match name {
                    "2.6" => &g.v26,
                    "4.5" => &g.v45_unpacked,
                    _ => &g.v46,
                };
                let got = rule.sample(video).unwrap();
                assert_eq!(
                    &got.indices, expected,
                    "{name}: {} frames at {} fps",
                    g.n, g.fps
                );
                assert_eq!(got.times.len(), got.indices.len());
            }
        }
    }

    #[test]
    fn the_golden_cases_cover_short_long_and_capped_videos() {
        let g = golden();
        // Shorter and longer than each cap, and a rate that Python rounds half to even.
        assert!(g.iter().any(|c| c.v26.len() < 64) && g.iter().any(|c| c.v26.len() == 64));
        assert!(g.iter().any(|c| c.v46.len() < 128) && g.iter().any(|c| c.v46.len() == 128));
        assert!(g.iter().any(|c| c.v45_unpacked.len() == 180));
        assert!(g.iter().any(|c| c.fps == 2.5));
        assert!(g.iter().any(|c| c.n as f64 / c.fps > 128.0));
    }

    #[test]
    fn frame_times_are_index_over_rate() {
        let s = FrameRule::Stride { max_frames: 64 }
            .sample(VideoInfo {
                n_frames: 100,
                fps: 25.0,
            })
            .unwrap();
        assert_eq!(s.indices, [0, 25, 50, 75]);
        assert_eq!(s.times, [0.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn where_the_references_fail_a_frame_is_still_taken() {
        // A rate below 0.5 fps: the reference's step round(0.4) = 0 would raise.
        let slow = VideoInfo {
            n_frames: 3,
            fps: 0.4,
        };
        assert_eq!(
            FrameRule::Stride { max_frames: 64 }
                .sample(slow)
                .unwrap()
                .indices,
            [0, 1, 2]
        );
        // A 4.5 video under 0.1 s: the reference would choose 0 frames.
        let blink = VideoInfo {
            n_frames: 1,
            fps: 30.0,
        };
        let rule = FrameRule::Uniform {
            choose_fps: 5.0,
            max_frames: 180,
        };
        assert_eq!(rule.sample(blink).unwrap().indices, [0]);
    }

    #[test]
    fn bad_videos_and_caps_are_refused() {
        let rule = FrameRule::PerSecond { max_frames: 128 };
        let none = VideoInfo {
            n_frames: 0,
            fps: 30.0,
        };
        assert_eq!(rule.sample(none), Err(SampleError::NoFrames));
        for fps in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let v = VideoInfo { n_frames: 10, fps };
            assert!(
                matches!(rule.sample(v), Err(SampleError::BadRate(_))),
                "{fps}"
            );
        }
        let v = VideoInfo {
            n_frames: 10,
            fps: 1.0,
        };
        assert_eq!(
            FrameRule::Stride { max_frames: 0 }.sample(v),
            Err(SampleError::ZeroCap)
        );
    }

    #[test]
    fn every_version_has_its_references_video_rule() {
        use crate::model::family::{spec, Version};
        for v in Version::ALL {
            let video = &spec(v).video;
            assert!((1..=9).contains(&video.max_slices), "{v}");
            let clip = VideoInfo {
                n_frames: 300,
                fps: 30.0,
            };
            assert_eq!(
                video.frames.sample(clip).unwrap().indices.len(),
                if matches!(video.frames, FrameRule::Uniform { .. }) {
                    50
                } else {
                    10
                },
                "{v}"
            );
        }
        let rule = |v: Version| {
            (
                spec(v).video.frames,
                spec(v).video.max_slices,
                spec(v).video.separator.as_str(),
            )
        };
        assert_eq!(
            rule(Version::V2_6),
            (FrameRule::Stride { max_frames: 64 }, 2, "\n")
        );
        assert_eq!(rule(Version::O2_6), rule(Version::V2_6));
        let v45 = FrameRule::Uniform {
            choose_fps: 5.0,
            max_frames: 180,
        };
        assert_eq!(rule(Version::V4_5), (v45, 1, "\n"));
        assert_eq!(rule(Version::O4_5), rule(Version::V4_5));
        assert_eq!(
            rule(Version::V4_6),
            (FrameRule::PerSecond { max_frames: 128 }, 1, "")
        );
        assert_eq!(rule(Version::V4_6Thinking), rule(Version::V4_6));
    }

    #[test]
    fn linspace_matches_numpy_on_known_values() {
        // np.linspace(0, 10, 4, dtype=int) == [0, 3, 6, 10]; np.linspace(0, 1279, 128, dtype=int)[:3] == [0, 10, 20]
        assert_eq!(linspace_int(10, 4), [0, 3, 6, 10]);
        assert_eq!(&linspace_int(1279, 128)[..3], [0, 10, 20]);
        assert_eq!(linspace_int(5, 1), [0]);
    }
}
