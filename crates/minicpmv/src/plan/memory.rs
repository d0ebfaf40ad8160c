//! The memory planner: the peak resident memory a run will need, predicted before anything is
//! loaded, broken down by what holds it and by phase of the run.
//!
//! A run has two phases, and its peak is the larger of the two:
//! - **encode**: the projector's weights and compute buffers are resident; in the default mode
//!   so are the language model's repacked weights (loaded first, as llama.cpp does), in
//!   `--low-mem` mode only its vocabulary;
//! - **generate**: the projector is freed; the language model's weights, KV cache and compute
//!   buffers are resident.
//!
//! Byte counts of weights, KV cache and compute buffers are llama.cpp's own (it plans its
//! allocations from the metadata, see [`crate::ffi::llama_memory_estimate`]); what this module
//! adds is which of them are resident when, which depends on how we load:
//! - with mmap, pages the loader reads to repack are released as it goes
//!   ([`crate::ffi::LoadParams::release_loader_pages`]), so during the encode phase only the
//!   repacked copy counts; in the generate phase every weight is touched once per token, except
//!   the token-embedding table, of which only the rows of the prompt's tokens are read;
//! - without mmap everything is read into anonymous memory at load time.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::ffi::repack::{Repack, RepackDecision};
use crate::ffi::{self, KvType, LoadParams, ProjectorAttention};
use crate::model::inputs::{check_pair, InputError};
use crate::plan::system::{self, AvailableMemory};
use crate::prompt::video::{video_budget, VideoBudget};
use crate::vision::video::{VideoError, VideoRequest};
use crate::vision::{load_image, ImageError, ImageFormat};

/// The settings of a run that change its memory.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PlanSettings {
    /// Context length in tokens (`-c`): the KV cache holds this many positions.
    pub n_ctx: u32,
    /// Logical batch size in tokens: the language model's compute buffers grow with it.
    pub n_batch: u32,
    /// Element type of the KV cache (`--kv-type`); q8_0 and q4_0 shrink the cache.
    pub kv_type: KvType,
    /// `--low-mem`: encode the images before the language model's weights are loaded, so the
    /// encode phase holds only its vocabulary (see the module docs).
    pub low_mem: bool,
    /// Memory-map the language model (the default) rather than read it into anonymous memory.
    pub use_mmap: bool,
    /// Lock the weights in RAM (`--mlock`): mapped pages then stay resident and are not
    /// released after repacking.
    pub use_mlock: bool,
    /// Whether llama.cpp may repack weights for its CPU kernels; [`Repack::Auto`] is decided
    /// per file in [`footprint`].
    pub repack: Repack,
    /// Slice cap of the images ([`crate::vision::SliceParams::max_slices`], 1..=9): more slices, more
    /// projector calls and embeddings.
    pub max_slices: u32,
    /// Threads llama.cpp would compute with (passed to its estimate); not serialised, as it is
    /// a property of the machine rather than of the plan.
    #[serde(skip)]
    pub n_threads: i32,
    /// The projector's attention kernel (its compute buffers depend on it).
    pub projector_attention: ProjectorAttention,
}

impl PlanSettings {
    /// The llama.cpp load parameters these settings imply (mmap, mlock, repack; the rest at
    /// [`LoadParams::default`], which releases the loader's pages as the planner assumes).
    pub fn load_params(&self) -> LoadParams {
        LoadParams {
            use_mmap: self.use_mmap,
            use_mlock: self.use_mlock,
            repack: self.repack,
            ..LoadParams::default()
        }
    }
}

/// What the files and llama.cpp say about a pair, for one set of settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Footprint {
    /// Whether the weights are repacked under these settings, and why.
    pub repack: RepackDecision,
    /// Language-model weights llama.cpp copies into repack buffers.
    pub text_repacked: u64,
    /// Other language-model weights (mapped, or read without mmap).
    pub text_other: u64,
    /// The token-embedding table, when it is only looked up (not also the output matrix).
    pub text_token_embd_lookup_only: u64,
    /// Bytes of the GGUF header (metadata incl. the vocabulary), a bound for a vocab-only load.
    pub text_metadata: u64,
    /// KV cache for `n_ctx` positions, in bytes (llama.cpp's estimate).
    pub kv_cache: u64,
    /// The language model's compute buffers for one `n_batch` batch, in bytes: llama.cpp's
    /// allocation less the logits rows a run never writes ([`unwritten_logits`]).
    pub text_compute: u64,
    /// The projector's weights (vision tower and resampler), in bytes; counted in the encode
    /// phase only, and only when there are images.
    pub projector_weights: u64,
    /// The projector's compute buffers for one slice (slices are encoded one at a time), in
    /// bytes; counted like [`Footprint::projector_weights`].
    pub projector_compute: u64,
    /// Decoded images (RGB), kept for the whole run.
    pub image_pixels: u64,
    /// Preprocessed chunks of the largest image (f32, overview and slices) and its resized
    /// copy, alive while that image is encoded.
    pub image_preprocessed: u64,
    /// Image embeddings (f32), all images.
    pub image_embeddings: u64,
    /// Projector calls the images need.
    pub n_image_chunks: usize,
    /// The process before any model is loaded: code, libraries, allocator, thread stacks.
    pub runtime: u64,
}

/// One line of a breakdown.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    /// What holds the memory, in words for the `plan` report (e.g. "KV cache").
    pub what: &'static str,
    /// Resident bytes it accounts for during the phase.
    pub bytes: u64,
}

/// What is resident during one phase of the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Phase {
    /// `"encode"` or `"generate"`.
    pub name: &'static str,
    /// What is resident, in a fixed order (runtime first); items of 0 bytes are kept.
    pub items: Vec<Item>,
    /// Sum of the items' bytes.
    pub total: u64,
}

/// The prediction for one set of settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// The settings predicted for.
    pub settings: PlanSettings,
    /// The encode phase, then the generate phase.
    pub phases: Vec<Phase>,
    /// The larger phase's total, in bytes: the predicted peak resident memory of the run.
    pub peak: u64,
    /// The [`Phase::name`] of that phase (generate when both are equal).
    pub peak_phase: &'static str,
}

/// Resident memory per phase for `fp` under `s`. Pure: the arithmetic of the module comment.
pub fn predict(fp: &Footprint, s: &PlanSettings) -> Prediction {
    let text_all = fp.text_repacked + fp.text_other;
    let mapped = s.use_mmap;
    let pages_released = mapped && !s.use_mlock;
    // Language model while the projector encodes (default mode: loaded before the images).
    let text_during_encode = if s.low_mem {
        Item {
            what: "language model: vocabulary only",
            bytes: 2 * fp.text_metadata,
        }
    } else if pages_released {
        Item {
            what: "language model: repacked weights (mapped pages released)",
            bytes: fp.text_repacked,
        }
    } else {
        Item {
            what: "language model: all weights",
            bytes: text_all,
        }
    };
    // Language model while it generates: a mapped token table is read row by row.
    let text_during_generate = if mapped {
        Item {
            what: "language model: weights read per token",
            bytes: text_all - fp.text_token_embd_lookup_only.min(fp.text_other),
        }
    } else {
        Item {
            what: "language model: all weights",
            bytes: text_all,
        }
    };
    let runtime = Item {
        what: "runtime (code, libraries, threads)",
        bytes: fp.runtime,
    };
    let images = Item {
        what: "decoded images",
        bytes: fp.image_pixels,
    };
    let embeddings = Item {
        what: "image embeddings",
        bytes: fp.image_embeddings,
    };
    let encode = phase(
        "encode",
        vec![
            runtime.clone(),
            text_during_encode,
            Item {
                what: "projector weights",
                bytes: if fp.n_image_chunks > 0 {
                    fp.projector_weights
                } else {
                    0
                },
            },
            Item {
                what: "projector compute buffers",
                bytes: if fp.n_image_chunks > 0 {
                    fp.projector_compute
                } else {
                    0
                },
            },
            images.clone(),
            Item {
                what: "preprocessed slices (f32)",
                bytes: fp.image_preprocessed,
            },
            embeddings.clone(),
        ],
    );
    let generate = phase(
        "generate",
        vec![
            runtime,
            text_during_generate,
            Item {
                what: "KV cache",
                bytes: fp.kv_cache,
            },
            Item {
                what: "language-model compute buffers",
                bytes: fp.text_compute,
            },
            images,
            embeddings,
        ],
    );
    let (peak, peak_phase) = if encode.total > generate.total {
        (encode.total, encode.name)
    } else {
        (generate.total, generate.name)
    };
    Prediction {
        settings: *s,
        phases: vec![encode, generate],
        peak,
        peak_phase,
    }
}

fn phase(name: &'static str, items: Vec<Item>) -> Phase {
    let total = items.iter().map(|i| i.bytes).sum();
    Phase { name, items, total }
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The model or projector file failed the checks of [`check_pair`].
    #[error(transparent)]
    Input(#[from] InputError),
    /// An image could not be loaded (the planner decodes each one to size its slices).
    #[error(transparent)]
    Image(#[from] ImageError),
    /// No slice plan exists for an image (too large, or bad slicing parameters).
    #[error("{}: {source}", path.display())]
    Slice {
        /// The image file.
        path: PathBuf,
        /// Why it cannot be sliced.
        source: crate::vision::SliceError,
    },
    /// The video cannot be opened or sampled.
    #[error(transparent)]
    Video(#[from] VideoError),
    /// A setting does not suit the pair (a context longer than the model's trained length).
    #[error(transparent)]
    Settings(#[from] crate::session::options::SettingsError),
    /// llama.cpp's `no_alloc` load for its estimate failed; the text says for which file and
    /// why.
    #[error("llama.cpp could not estimate memory for {0}")]
    Estimate(String),
}

/// The runtime's own resident memory before models: this process's RSS now, plus what
/// llama.cpp's thread pool and the kernels' code add once they run (measured on x86-64 and
/// aarch64 Linux builds: about 12 MiB).
fn runtime_bytes() -> u64 {
    const RUNTIME_EXTRA: u64 = 12 << 20;
    system::process_rss().map_or(64 << 20, |(rss, _)| rss) + RUNTIME_EXTRA
}

/// Reads the pair and the images and asks llama.cpp for its estimates under `s`.
pub fn footprint(
    model: &Path,
    mmproj: &Path,
    media: &Media<'_>,
    max_image_pixels: u64,
    s: &PlanSettings,
) -> Result<Footprint, PlanError> {
    Ok(footprint_and_video(model, mmproj, media, max_image_pixels, s)?.0)
}

/// What a run would encode: image files, and a video whose frames are streamed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Media<'a> {
    /// Image files.
    pub images: &'a [PathBuf],
    /// A video.
    pub video: Option<&'a VideoRequest>,
}

impl<'a> Media<'a> {
    /// Images only.
    pub fn images(images: &'a [PathBuf]) -> Media<'a> {
        Media {
            images,
            video: None,
        }
    }
}

/// Context positions a video plan keeps for the question and chat template.
pub const VIDEO_PROMPT_RESERVE: usize = 64;

fn footprint_and_video(
    model: &Path,
    mmproj: &Path,
    media: &Media<'_>,
    max_image_pixels: u64,
    s: &PlanSettings,
) -> Result<(Footprint, Option<VideoBudget>), PlanError> {
    // Measured first, before this function allocates anything.
    let runtime = runtime_bytes();
    let facts = check_pair(model, mmproj)?;
    if u64::from(s.n_ctx) > facts.model.n_ctx_train {
        // The estimate would size (and llama.cpp allocate bookkeeping for) a cache of that
        // length: refused up front, as a run refuses it.
        return Err(PlanError::Settings(
            crate::session::options::SettingsError::ContextTooLong {
                n_ctx: s.n_ctx,
                n_ctx_train: facts.model.n_ctx_train,
                model: model.to_path_buf(),
            },
        ));
    }
    let (gguf, _) = crate::model::inputs::check_model(model)?;
    let repack = crate::ffi::repack::decide_for_gguf(s.repack, &gguf);
    let est = ffi::llama_memory_estimate(
        model,
        s.n_ctx,
        s.n_batch,
        s.kv_type,
        repack.repack,
        s.n_threads,
    )
    .map_err(PlanError::Estimate)?;
    let clip =
        ffi::clip_memory_estimate(mmproj, s.projector_attention).map_err(PlanError::Estimate)?;
    // The token table is only looked up unless it doubles as the output matrix (tied).
    let tied = gguf.tensor("output.weight").is_none();
    let token_embd = gguf.tensor("token_embd.weight").map_or(0, |t| t.n_bytes);
    let pj = &facts.projector;
    let format = ImageFormat::of_projector(pj, s.max_slices);
    let (mut n_chunks, mut n_rows, mut rgb_bytes, mut preprocessed) = (0usize, 0u64, 0u64, 0u64);
    for path in media.images {
        let img = load_image(path, max_image_pixels)?;
        let plan = format
            .plan(img.width, img.height)
            .and_then(|plan| plan.check_resizable().map(|()| plan))
            .map_err(|source| PlanError::Slice {
                path: path.clone(),
                source,
            })?;
        n_chunks += plan.n_chunks();
        n_rows += format.plan_tokens(&plan).iter().sum::<usize>() as u64;
        rgb_bytes += img.rgb.len() as u64;
        // Every chunk's pixels, 3 f32 each, plus the resized RGB copy.
        let chunks: u64 = (0..plan.n_chunks())
            .map(|i| {
                let (w, h) = plan.chunk_size(i);
                u64::from(w) * u64::from(h) * 3 * 4
            })
            .sum();
        preprocessed = preprocessed.max(chunks + img.rgb.len() as u64);
    }
    let mut video = None;
    if let Some(req) = media.video {
        let spec = crate::model::family::spec(facts.version);
        let v = req.open(&spec.video, max_image_pixels)?;
        let frame_format = ImageFormat::of_projector(pj, v.max_slices);
        let budget = video_budget(&v, &frame_format, s.n_ctx, VIDEO_PROMPT_RESERVE, pj.n_embd)
            .map_err(|source| PlanError::Slice {
                path: req.path.clone(),
                source,
            })?;
        n_chunks += budget.projector_calls;
        n_rows += (budget.frames * budget.tokens_per_frame) as u64;
        // Frames are decoded one at a time: one frame's pixels and slices at most.
        let frame_rgb = u64::from(v.width) * u64::from(v.height) * 3;
        rgb_bytes += frame_rgb;
        let plan = frame_format
            .plan(v.width, v.height)
            .map_err(|source| PlanError::Slice {
                path: req.path.clone(),
                source,
            })?;
        let chunks: u64 = (0..plan.n_chunks())
            .map(|i| {
                let (w, h) = plan.chunk_size(i);
                u64::from(w) * u64::from(h) * 3 * 4
            })
            .sum();
        preprocessed = preprocessed.max(chunks + frame_rgb);
        video = Some(budget);
    }
    let fp = Footprint {
        repack,
        text_repacked: est.model_repack,
        text_other: est.model_other,
        text_token_embd_lookup_only: if tied { 0 } else { token_embd },
        text_metadata: gguf.data_offset,
        kv_cache: est.context,
        text_compute: est.compute.saturating_sub(unwritten_logits(
            facts.model.n_vocab,
            s.n_batch.min(s.n_ctx),
        )),
        projector_weights: clip.weights,
        projector_compute: clip.compute,
        image_pixels: rgb_bytes,
        image_preprocessed: preprocessed,
        image_embeddings: n_rows * pj.n_embd * 4,
        n_image_chunks: n_chunks,
        runtime,
    };
    Ok((fp, video))
}

/// Bytes of the logits buffer llama.cpp reserves but a run never touches. Its compute buffer is
/// sized for a batch of `n_batch` positions that all want logits (`n_batch x n_vocab` floats),
/// but every decode here asks for the last position's only, so the other rows' pages are never
/// written. It matters when the vocabulary is large for the model: MiniCPM-V 4.6's 248,094
/// entries make 508 MB of a 523 MB buffer at the default batch, and a prediction that counted
/// them was 24% above the measured peak of the real-shape pair.
pub fn unwritten_logits(n_vocab: u64, n_batch: u32) -> u64 {
    u64::from(n_batch.saturating_sub(1)) * n_vocab * 4
}

/// A change of settings that makes a run fit, with its prediction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Suggestion {
    /// The flags to add, e.g. `--low-mem -c 2048`.
    pub flags: String,
    /// The predicted peak with those flags, in bytes.
    pub peak: u64,
}

/// A full plan: the prediction for the requested settings, the memory available now, the
/// verdict and, when it does not fit, settings that would.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemPlan {
    /// The language model file planned for.
    pub model: PathBuf,
    /// The projector file planned for.
    pub mmproj: PathBuf,
    /// What the files and llama.cpp say under the requested settings.
    pub footprint: Footprint,
    /// The prediction under the requested settings.
    pub prediction: Prediction,
    /// Memory available now (`None` when it cannot be read, e.g. not on Linux: then
    /// everything is taken to fit).
    pub available: Option<AvailableMemory>,
    /// Whether the peak fits in what is available, with a 10% margin ([`fits_in`]).
    pub fits: bool,
    /// When it does not fit: cumulative changes, cheapest first (`--low-mem`, then a q8_0 KV
    /// cache, then halving the context down to 2048), each tried in turn up to and including
    /// the first that fits (all of them when none does). Empty when it fits.
    pub suggestions: Vec<Suggestion>,
    /// The video's frames, positions and whether they fit the context, when one was planned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video: Option<VideoBudget>,
}

/// Headroom kept free: predictions are within ~15%, and the OS needs some room.
const MARGIN: f64 = 1.10;

/// Whether `peak` fits in `available` with the planner's margin.
pub fn fits_in(peak: u64, available: Option<&AvailableMemory>) -> bool {
    available.is_none_or(|a| (peak as f64) * MARGIN <= a.bytes as f64)
}

/// Plans a run, and looks for settings that fit when the requested ones do not.
pub fn plan(
    model: &Path,
    mmproj: &Path,
    media: &Media<'_>,
    max_image_pixels: u64,
    s: &PlanSettings,
) -> Result<MemPlan, PlanError> {
    let (fp, video) = footprint_and_video(model, mmproj, media, max_image_pixels, s)?;
    let prediction = predict(&fp, s);
    let available = system::available_memory();
    let fits = fits_in(prediction.peak, available.as_ref());
    let mut suggestions = Vec::new();
    if !fits {
        // Cheapest changes first; each candidate adds to the previous ones.
        let mut candidates: Vec<(String, PlanSettings)> = Vec::new();
        let mut cur = *s;
        let mut flags = String::new();
        let mut push = |cur: PlanSettings, flag: &str, flags: &mut String| {
            if !flags.is_empty() {
                flags.push(' ');
            }
            flags.push_str(flag);
            candidates.push((flags.clone(), cur));
        };
        if !cur.low_mem {
            cur.low_mem = true;
            push(cur, "--low-mem", &mut flags);
        }
        if cur.kv_type == KvType::F16 {
            cur.kv_type = KvType::Q8_0;
            push(cur, "--kv-type q8_0", &mut flags);
        }
        while cur.n_ctx > 2048 {
            cur.n_ctx /= 2;
            push(cur, &format!("-c {}", cur.n_ctx), &mut flags);
        }
        for (flags, settings) in candidates {
            let fp = if settings.n_ctx == s.n_ctx && settings.kv_type == s.kv_type {
                fp.clone()
            } else {
                footprint(model, mmproj, media, max_image_pixels, &settings)?
            };
            let peak = predict(&fp, &settings).peak;
            let ok = fits_in(peak, available.as_ref());
            suggestions.push(Suggestion { flags, peak });
            if ok {
                break;
            }
        }
    }
    Ok(MemPlan {
        model: model.to_path_buf(),
        mmproj: mmproj.to_path_buf(),
        footprint: fp,
        prediction,
        available,
        fits,
        suggestions,
        video,
    })
}

/// Whether a run should switch itself to low-memory mode: the default mode does not fit
/// and low-memory mode needs less.
pub fn should_switch_to_low_mem(
    default: &Prediction,
    low_mem: &Prediction,
    available: Option<&AvailableMemory>,
) -> bool {
    !fits_in(default.peak, available) && low_mem.peak < default.peak
}

/// A quick, conservative check without asking llama.cpp: whether the two files plus a KV cache
/// bound fit easily (under half of what is available). When this says yes, a run does not need
/// the planner to choose its mode.
pub fn clearly_fits(model: &Path, mmproj: &Path, n_ctx: u32) -> bool {
    let size = |p: &Path| std::fs::metadata(p).map_or(u64::MAX / 4, |m| m.len());
    // A generous KV bound: 1 MiB per token covers every MiniCPM-V text model in f16.
    let need = size(model)
        .saturating_add(size(mmproj))
        .saturating_add(u64::from(n_ctx) << 20);
    system::available_memory().is_none_or(|a| need.saturating_mul(2) <= a.bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn settings() -> PlanSettings {
        PlanSettings {
            n_ctx: 4096,
            n_batch: 512,
            kv_type: KvType::F16,
            low_mem: false,
            use_mmap: true,
            use_mlock: false,
            repack: Repack::On,
            max_slices: 9,
            n_threads: 2,
            projector_attention: ProjectorAttention::Flash,
        }
    }

    /// Shaped like the real-shape MiniCPM-V 2.6 pair at Q4_K_M + F16 projector.
    fn footprint() -> Footprint {
        Footprint {
            repack: crate::ffi::repack::decide(Repack::On, [], &[]),
            text_repacked: 2900 * MIB,
            text_other: 1560 * MIB,
            text_token_embd_lookup_only: 290 * MIB,
            text_metadata: 8 * MIB,
            kv_cache: 224 * MIB,
            text_compute: 300 * MIB,
            projector_weights: 990 * MIB,
            projector_compute: 150 * MIB,
            image_pixels: 6 * MIB,
            image_preprocessed: 26 * MIB,
            image_embeddings: 8 * MIB,
            n_image_chunks: 9,
            runtime: 40 * MIB,
        }
    }

    fn phase_total(p: &Prediction, name: &str) -> u64 {
        p.phases.iter().find(|ph| ph.name == name).unwrap().total
    }

    #[test]
    fn default_mode_holds_repacked_weights_and_projector_while_encoding() {
        let p = predict(&footprint(), &settings());
        assert_eq!(
            phase_total(&p, "encode"),
            (40 + 2900 + 990 + 150 + 6 + 26 + 8) * MIB
        );
        assert_eq!(
            phase_total(&p, "generate"),
            (40 + 2900 + 1560 - 290 + 224 + 300 + 6 + 8) * MIB
        );
        assert_eq!(p.peak_phase, "generate");
        assert_eq!(p.peak, phase_total(&p, "generate"));
    }

    #[test]
    fn low_mem_encodes_next_to_the_vocabulary_only() {
        let s = PlanSettings {
            low_mem: true,
            ..settings()
        };
        let p = predict(&footprint(), &s);
        assert_eq!(
            phase_total(&p, "encode"),
            (40 + 16 + 990 + 150 + 6 + 26 + 8) * MIB
        );
        // Generation is the same as in the default mode.
        assert_eq!(
            phase_total(&p, "generate"),
            phase_total(&predict(&footprint(), &settings()), "generate")
        );
    }

    #[test]
    fn without_mmap_every_weight_is_resident_from_load() {
        let s = PlanSettings {
            use_mmap: false,
            ..settings()
        };
        let p = predict(&footprint(), &s);
        assert_eq!(
            phase_total(&p, "encode"),
            (40 + 2900 + 1560 + 990 + 150 + 6 + 26 + 8) * MIB
        );
        assert_eq!(
            phase_total(&p, "generate"),
            (40 + 2900 + 1560 + 224 + 300 + 6 + 8) * MIB
        );
    }

    #[test]
    fn no_images_no_projector() {
        let fp = Footprint {
            n_image_chunks: 0,
            image_pixels: 0,
            image_preprocessed: 0,
            image_embeddings: 0,
            ..footprint()
        };
        let p = predict(&fp, &settings());
        assert_eq!(phase_total(&p, "encode"), (40 + 2900) * MIB);
    }

    #[test]
    fn switches_to_low_mem_only_when_needed_and_better() {
        let fp = Footprint {
            // A projector-heavy pair: the encode phase is the default mode's peak.
            projector_weights: 4000 * MIB,
            ..footprint()
        };
        let default = predict(&fp, &settings());
        let low = predict(
            &fp,
            &PlanSettings {
                low_mem: true,
                ..settings()
            },
        );
        assert_eq!(default.peak_phase, "encode");
        assert!(low.peak < default.peak);
        let avail = |bytes| AvailableMemory {
            bytes,
            source: "test".into(),
        };
        // Plenty of memory: no switch. Too little for the default: switch.
        assert!(!should_switch_to_low_mem(
            &default,
            &low,
            Some(&avail(default.peak * 2))
        ));
        assert!(should_switch_to_low_mem(
            &default,
            &low,
            Some(&avail(default.peak))
        ));
        // When low-mem would not help (generation is the peak), never switch.
        let d2 = predict(&footprint(), &settings());
        let l2 = predict(
            &footprint(),
            &PlanSettings {
                low_mem: true,
                ..settings()
            },
        );
        assert_eq!(l2.peak, d2.peak);
        assert!(!should_switch_to_low_mem(&d2, &l2, Some(&avail(1))));
    }

    #[test]
    fn margin_decides_the_verdict() {
        let avail = |bytes| AvailableMemory {
            bytes,
            source: "test".into(),
        };
        assert!(fits_in(1000, Some(&avail(1100))));
        assert!(!fits_in(1000, Some(&avail(1099))));
        assert!(fits_in(u64::MAX, None));
    }
}
