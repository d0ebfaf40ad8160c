//! One single-turn run: model + projector + images + prompt in, streamed text out.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use crate::ffi::mtmd::{self, ChunkInfo, Mtmd, RgbImage};
use crate::ffi::{
    Context, ContextParams, DecodeError, LoadParams, Model, Sampler, SamplerParams, Token,
};
use crate::generate::{generate, StopReason};
use crate::inputs::{check_pair, InputError, PairFacts};
use crate::prompt::{self, Message};
use crate::vision::{load_image, ImageError, LoadedImage};

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub model: PathBuf,
    pub mmproj: PathBuf,
    pub images: Vec<PathBuf>,
    pub prompt: String,
    /// Tokens to generate at most.
    pub n_predict: usize,
    pub sampling: SamplerParams,
    pub n_threads: i32,
    /// Context length in tokens.
    pub n_ctx: u32,
    /// Largest batch per decode call.
    pub n_batch: u32,
    pub max_image_pixels: u64,
    /// Run llama.cpp's warm-up encode when loading the projector.
    pub warmup: bool,
    pub load: LoadParams,
}

/// Wall-clock figures of a run, in seconds (rates in tokens per second).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timings {
    /// Loading the language model and the projector.
    pub load_secs: f64,
    /// Encoding the images with the projector.
    pub image_encode_secs: f64,
    /// Language-model prefill of the prompt (text and image embeddings), encode excluded.
    pub prompt_secs: f64,
    pub prompt_tokens_per_sec: f64,
    /// From the start of the run to the first generated token.
    pub time_to_first_token_secs: f64,
    pub generate_secs: f64,
    pub generate_tokens_per_sec: f64,
    pub total_secs: f64,
}

/// The result of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunOutput {
    pub text: String,
    /// Generated token ids.
    pub token_ids: Vec<Token>,
    /// Every position the prompt occupies: text tokens plus image embeddings.
    pub n_prompt_tokens: usize,
    /// Image embeddings fed to the model.
    pub n_image_tokens: usize,
    /// Text tokens that the image layout adds around the embeddings (`<image>`, `<slice>`, ...).
    pub n_image_layout_tokens: usize,
    /// Projector calls: overview plus slices, over all images.
    pub n_image_chunks: usize,
    pub stop: StopReason,
    pub timings: Timings,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    ModelLoad(#[from] crate::ffi::ModelLoadError),
    #[error(transparent)]
    Mtmd(#[from] mtmd::MtmdError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("the prompt needs {needed} positions ({n_text} text tokens + {n_image} image embeddings) but the context holds {n_ctx}: raise -c or use a smaller image")]
    ContextTooSmall {
        needed: usize,
        n_text: usize,
        n_image: usize,
        n_ctx: u32,
    },
    #[error("the prompt has {markers} image placeholders but {images} images were given")]
    MarkerCount { markers: usize, images: usize },
    #[error("no prompt and no image: nothing to run")]
    Nothing,
    #[error("could not create the sampler")]
    Sampler,
}

/// Runs the model once, streaming generated text to `on_text`.
pub fn run(cfg: &RunConfig, on_text: &mut dyn FnMut(&str)) -> Result<RunOutput, RunError> {
    let t_start = Instant::now();
    // Everything that can be checked is checked before llama.cpp sees it.
    let facts: PairFacts = check_pair(&cfg.model, &cfg.mmproj)?;
    let images: Vec<LoadedImage> = cfg
        .images
        .iter()
        .map(|p| load_image(p, cfg.max_image_pixels))
        .collect::<Result<_, _>>()?;
    if cfg.prompt.is_empty() && images.is_empty() {
        return Err(RunError::Nothing);
    }
    let marker = mtmd::default_marker();
    let content = prompt::user_content(facts.projector.version, &cfg.prompt, images.len(), &marker)
        .map_err(|(markers, images)| RunError::MarkerCount { markers, images })?;
    let formatted = prompt::format_chat(
        facts.projector.version,
        facts.model.chat_template.as_deref(),
        &[Message::user(content)],
        true,
    );

    let t_load = Instant::now();
    let model = Model::load(&cfg.model, cfg.load)?;
    let mut mtmd = Mtmd::load(&cfg.mmproj, &model, cfg.n_threads, cfg.warmup)?;
    let load_secs = t_load.elapsed().as_secs_f64();

    let rgb: Vec<RgbImage<'_>> = images
        .iter()
        .map(|i| RgbImage {
            width: i.width,
            height: i.height,
            data: &i.rgb,
        })
        .collect();
    let chunks = mtmd.tokenize(&formatted, &rgb, true)?;
    let infos = chunks.infos();
    let (mut n_text_in_chunks, mut n_image_tokens, mut n_image_pos, mut n_image_chunks) =
        (0usize, 0usize, 0usize, 0usize);
    for info in &infos {
        match info {
            ChunkInfo::Text(t) => n_text_in_chunks += t.len(),
            ChunkInfo::Image { n_tokens, n_pos } => {
                n_image_tokens += n_tokens;
                n_image_pos += usize::try_from(*n_pos).unwrap_or(0);
                n_image_chunks += 1;
            }
        }
    }
    // Text tokens of the prompt itself (the text between images, tokenized part by part as
    // mtmd does); the rest of the text chunks is image layout.
    let n_user_text: usize = formatted
        .split(marker.as_str())
        .enumerate()
        .map(|(i, part)| model.tokenize(part, i == 0, true).len())
        .sum();
    let n_image_layout_tokens = n_text_in_chunks.saturating_sub(n_user_text);
    let n_prompt_tokens = n_text_in_chunks + n_image_pos;

    let n_ctx = cfg.n_ctx;
    if n_prompt_tokens >= n_ctx as usize {
        return Err(RunError::ContextTooSmall {
            needed: n_prompt_tokens + 1,
            n_text: n_text_in_chunks,
            n_image: n_image_pos,
            n_ctx,
        });
    }
    let mut ctx = Context::new(
        &model,
        ContextParams {
            n_ctx,
            n_batch: cfg.n_batch,
            n_threads: cfg.n_threads,
            n_threads_batch: cfg.n_threads,
        },
    )?;
    let t_prefill = Instant::now();
    let (n_past, encode_secs) = mtmd.eval(&mut ctx, &chunks, 0, cfg.n_batch as i32)?;
    let prefill_total = t_prefill.elapsed().as_secs_f64();
    let prompt_secs = (prefill_total - encode_secs).max(0.0);

    let mut sampler = Sampler::new(&cfg.sampling, model.n_vocab()).ok_or(RunError::Sampler)?;
    let gen = generate(
        &model,
        &mut ctx,
        &mut sampler,
        n_past,
        cfg.n_predict,
        on_text,
    )?;
    let total_secs = t_start.elapsed().as_secs_f64();
    let n_gen = gen.token_ids.len();
    let timings = Timings {
        load_secs,
        image_encode_secs: encode_secs,
        prompt_secs,
        prompt_tokens_per_sec: rate(n_prompt_tokens, prompt_secs),
        time_to_first_token_secs: gen
            .first_token_at
            .map_or(total_secs, |t| t.duration_since(t_start).as_secs_f64()),
        generate_secs: gen.secs,
        generate_tokens_per_sec: rate(n_gen, gen.secs),
        total_secs,
    };
    Ok(RunOutput {
        text: gen.text,
        token_ids: gen.token_ids,
        n_prompt_tokens,
        n_image_tokens,
        n_image_layout_tokens,
        n_image_chunks,
        stop: gen.stop,
        timings,
    })
}

fn rate(n: usize, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}
