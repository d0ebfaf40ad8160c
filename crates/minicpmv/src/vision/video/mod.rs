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

mod source;

pub use crate::model::family::FrameRule;
pub use source::{Animation, FrameFolder, FrameSource, VideoError, MAX_SOURCE_FRAMES};

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
    /// The frames this rule takes from `video`. See the module docs for each rule's source.
    pub fn sample(&self, video: VideoInfo) -> Result<FrameSample, SampleError> {
        if video.n_frames == 0 {
            return Err(SampleError::NoFrames);
        }
        if !(video.fps.is_finite() && video.fps > 0.0) {
            return Err(SampleError::BadRate(video.fps));
        }
        let indices = match *self {
            FrameRule::Stride { max_frames } => stride(video, max_frames)?,
            FrameRule::Uniform {
                choose_fps,
                max_frames,
            } => uniform(video, choose_fps, max_frames)?,
            FrameRule::PerSecond { max_frames } => per_second(video, max_frames)?,
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

/// 2.6: `range(0, n, round(fps))`, then `uniform_sample` to the cap.
fn stride(v: VideoInfo, max_frames: usize) -> Result<Vec<usize>, SampleError> {
    check_cap(max_frames)?;
    let step = (py_round(v.fps) as usize).max(1);
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

/// 4.6: the start of each second, or a 0.1 s grid cut down by `linspace` past the cap.
fn per_second(v: VideoInfo, max_frames: usize) -> Result<Vec<usize>, SampleError> {
    check_cap(max_frames)?;
    let duration = v.duration();
    let last = v.n_frames - 1;
    if duration > max_frames as f64 {
        let n_ticks = (duration / 0.1) as usize;
        // round(i * 0.1, 1) is the double nearest i / 10.
        let main: Vec<usize> = (0..n_ticks)
            .map(|i| (((i as f64 / 10.0) * v.fps) as usize).min(last))
            .collect();
        if main.len() > max_frames {
            return Ok(linspace_int(main.len() - 1, max_frames)
                .into_iter()
                .map(|i| main[i])
                .collect());
        }
        return Ok(main);
    }
    let seconds = duration.ceil() as usize;
    Ok((0..seconds)
        .map(|i| ((i as f64 * v.fps) as usize).min(last))
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
