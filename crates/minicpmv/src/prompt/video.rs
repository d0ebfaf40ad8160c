//! A video's budget before any frame is decoded: which frames a run takes, what each costs in
//! projector calls and context positions, and whether they fit the context (pure; the header
//! was read by [`VideoRequest::open`](crate::vision::video::VideoRequest::open)). One type for
//! `plan`, `slice-plan` and a run's own check and report.

use std::path::PathBuf;

use serde::Serialize;

use crate::prompt::layout::n_layout_tokens;
use crate::vision::video::{FrameSource, OpenedVideo};
use crate::vision::{ImageFormat, SliceError};

/// What a video costs a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VideoBudget {
    /// The video.
    pub path: PathBuf,
    /// Where its frames come from: `ffmpeg`, `animation` (GIF/WebP) or `folder`.
    pub decoder: &'static str,
    /// Frames and rate by its header.
    pub source_frames: usize,
    /// Frames per second of the video.
    pub source_fps: f64,
    /// Seconds.
    pub duration_secs: f64,
    /// Frame size.
    pub width: u32,
    /// Frame size.
    pub height: u32,
    /// Frames taken per second.
    pub fps: f64,
    /// The rule's cap.
    pub max_frames: usize,
    /// Frames taken.
    pub frames: usize,
    /// Their indices.
    pub frame_indices: Vec<usize>,
    /// Their times in seconds.
    pub frame_times: Vec<f64>,
    /// Frames fed together into one query set (4.5's 3D resampler packs up to 3; the bundled
    /// llama.cpp has no such graph, so always 1).
    pub packing: usize,
    /// Slices per frame at most.
    pub frame_slices: u32,
    /// Projector calls per frame.
    pub chunks_per_frame: usize,
    /// Image embeddings per frame.
    pub tokens_per_frame: usize,
    /// Context positions per frame: embeddings, layout tokens and the separator.
    pub positions_per_frame: usize,
    /// Context positions of all frames.
    pub positions: usize,
    /// Projector calls of all frames.
    pub projector_calls: usize,
    /// Bytes of all frames' embeddings (kept until the prefill).
    pub embedding_bytes: u64,
    /// The context length checked against.
    pub n_ctx: u32,
    /// Whether the frames, one more position for the answer, and `prompt_reserve` positions for
    /// the prompt and chat template fit the context.
    pub fits: bool,
    /// Positions kept for the prompt and chat template (a plan's estimate, or a run's count).
    pub prompt_reserve: usize,
    /// The largest `--max-frames` that fits.
    pub fitting_max_frames: usize,
}

/// Positions a separator takes: the reference separators are `"\n"` (one token in every
/// MiniCPM-V vocabulary) and `""`.
fn separator_positions(separator: &str) -> usize {
    separator.chars().count()
}

/// The budget of `video` laid out in `format` (its slice cap is the video's own), with
/// `prompt_reserve` positions kept for the question and template, in a context of `n_ctx`.
/// `n_embd` sizes the embeddings (0 when unknown).
pub fn video_budget(
    video: &OpenedVideo,
    format: &ImageFormat,
    n_ctx: u32,
    prompt_reserve: usize,
    n_embd: u64,
) -> Result<VideoBudget, SliceError> {
    let plan = format
        .plan(video.width, video.height)
        .and_then(|p| p.check_resizable().map(|()| p))?;
    let tokens_per_frame: usize = format.plan_tokens(&plan).iter().sum();
    let positions_per_frame = tokens_per_frame
        + n_layout_tokens(format.style(), plan.grid)
        + separator_positions(&video.separator);
    let frames = video.n_frames();
    let positions = frames * positions_per_frame;
    let room = (n_ctx as usize).saturating_sub(prompt_reserve + 1);
    let info = video.source.info();
    Ok(VideoBudget {
        path: video.source.path().to_path_buf(),
        decoder: match video.source {
            FrameSource::Ffmpeg(_) => "ffmpeg",
            FrameSource::Animation(_) => "animation",
            FrameSource::Folder(_) => "folder",
        },
        source_frames: info.n_frames,
        source_fps: info.fps,
        duration_secs: info.duration(),
        width: video.width,
        height: video.height,
        fps: video.fps,
        max_frames: video.rule.max_frames(),
        frames,
        frame_indices: video.sample.indices.clone(),
        frame_times: video.sample.times.clone(),
        packing: 1,
        frame_slices: video.max_slices,
        chunks_per_frame: plan.n_chunks(),
        tokens_per_frame,
        positions_per_frame,
        positions,
        projector_calls: frames * plan.n_chunks(),
        embedding_bytes: (frames * tokens_per_frame) as u64 * n_embd * 4,
        n_ctx,
        fits: positions <= room,
        prompt_reserve,
        fitting_max_frames: room / positions_per_frame.max(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::family::{spec, FrameRule, Version};
    use crate::vision::video::{FrameFolder, FrameSample, FrameSource};

    /// A 2.6 video of `frames` 1280x720 frames, 2 slices each, without a file behind it.
    fn video(dir: &std::path::Path, frames: usize) -> OpenedVideo {
        image::RgbImage::new(1280, 720)
            .save(dir.join("f1.png"))
            .unwrap();
        OpenedVideo {
            source: FrameSource::Folder(FrameFolder::open(dir, 1.0, u64::MAX).unwrap()),
            rule: FrameRule::Stride { max_frames: 64 },
            fps: 1.0,
            sample: FrameSample {
                indices: vec![0; frames],
                times: vec![0.0; frames],
            },
            width: 1280,
            height: 720,
            max_slices: 2,
            separator: "\n".into(),
        }
    }

    /// docs/video-reference.md §2: with max_slice_nums = 2 a 16:9 1280x720 frame gets grid
    /// [2,1], overview + 2 slices = 192 embeddings; layout `<image></image>` + 2 x
    /// `<slice></slice>` (2.6) + the `"\n"` separator.
    #[test]
    fn a_720p_frame_on_2_6_takes_three_chunks_and_their_layout() {
        let dir = tempfile::tempdir().unwrap();
        let v = video(dir.path(), 64);
        let s = spec(Version::V2_6);
        let format = ImageFormat::of_spec(s, None, 2);
        let b = video_budget(&v, &format, 32768, 64, 3584).unwrap();
        assert_eq!((b.chunks_per_frame, b.tokens_per_frame), (3, 192));
        assert_eq!(
            b.positions_per_frame,
            192 + n_layout_tokens(format.style(), Some((2, 1))) + 1
        );
        assert_eq!(b.positions, 64 * b.positions_per_frame);
        assert!(b.fits);
        assert_eq!(b.embedding_bytes, 64 * 192 * 3584 * 4);
        // 4096 positions: (4096 - 65) / per-frame frames fit, and no more.
        let small = video_budget(&v, &format, 4096, 64, 3584).unwrap();
        assert!(!small.fits);
        assert_eq!(small.fitting_max_frames, 4031 / b.positions_per_frame);
    }
}
