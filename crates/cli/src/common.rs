//! Flags shared by `run` and `chat` (the model pair, generation settings) and by `plan` (the
//! memory settings). One definition, flattened into each command, so they cannot drift apart.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;
use minicpmv::encode::cache::CacheConfig;
use minicpmv::session::options;

use minicpmv::ffi::repack::Repack;
use minicpmv::ffi::rpc::{Offload, RpcDevice, WorkerAddr};
use minicpmv::ffi::{KvType, LoadParams, ProjectorAttention, SamplerParams};
use minicpmv::plan::memory::{self as memplan, PlanSettings};
use minicpmv::plan::split;
use minicpmv::vision::video::VideoRequest;
use minicpmv::vision::DEFAULT_MAX_PIXELS;
use minicpmv::{Generation, SessionOptions};

use super::output::human_bytes;

#[derive(Debug, Args)]
pub struct ModelArgs {
    /// Language model GGUF. Without -m and --mmproj: the default model, MiniCPM-V 4.6 Q4_K_M
    /// with its mmproj, downloaded into the cache on first use (see `minicpmv pull`).
    #[arg(short = 'm', long, value_name = "MODEL.gguf", requires = "mmproj")]
    pub model: Option<PathBuf>,
    /// Vision projector GGUF (mmproj) that belongs to the language model.
    #[arg(long, value_name = "MMPROJ.gguf", requires = "model")]
    pub mmproj: Option<PathBuf>,
    /// Use a tiny synthetic MiniCPM-V 4.6 pair (random weights: the text is noise), generated
    /// on the fly, to try the whole pipeline without downloading anything.
    #[arg(long, conflicts_with_all = ["model", "mmproj"])]
    pub demo: bool,
    /// Never use the network: without -m, the default model must already be in the cache
    /// (also MINICPMV_OFFLINE=1 or HF_HUB_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,
}

impl ModelArgs {
    /// The pair to use, and whether it is the synthetic demo pair (announced on stderr).
    pub fn resolve(&self) -> Result<(PathBuf, PathBuf, bool)> {
        match (&self.model, &self.mmproj) {
            (Some(m), Some(p)) => Ok((m.clone(), p.clone(), false)),
            _ if self.demo => {
                let (m, p) = super::synth::demo_pair()?;
                crate::note!(
                    "note: --demo: using a tiny synthetic MiniCPM-V 4.6 pair with random weights ({}); its text is noise. Pass -m MODEL.gguf --mmproj MMPROJ.gguf for another model.",
                    m.parent().map(|d| d.display().to_string()).unwrap_or_default()
                );
                Ok((m, p, true))
            }
            _ => {
                let pair = super::pull::default_pair(self.offline)?;
                super::pull::announce(&pair);
                Ok((pair.model.path, pair.mmproj.path, false))
            }
        }
    }
}

/// What decides the memory a run needs, shared by `run`, `chat` and `plan`: the plan of a
/// command line is made from the very settings its run uses.
#[derive(Debug, Args)]
pub struct MemoryArgs {
    /// Context length in tokens (prompt or whole conversation, image embeddings, answers).
    #[arg(short = 'c', long = "ctx-size", default_value_t = options::DEFAULT_N_CTX,
          value_parser = clap::value_parser!(u32).range(16..))]
    pub ctx_size: u32,
    /// Prompt positions per decode call (llama.cpp's batch and micro-batch). Each call reads all
    /// the weights once; the compute buffers grow with it.
    #[arg(short = 'b', long, default_value_t = options::DEFAULT_N_BATCH,
          value_parser = clap::value_parser!(u32).range(1..=8192))]
    pub batch_size: u32,
    /// Largest image accepted, in pixels (width x height).
    #[arg(long, default_value_t = DEFAULT_MAX_PIXELS, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_image_pixels: u64,
    /// Slices per image at most, 1..=9 (1: the overview only, one projector call per image).
    /// Fewer slices: faster and fewer tokens, less detail.
    #[arg(long, default_value_t = options::DEFAULT_MAX_SLICES,
          value_parser = clap::value_parser!(u32).range(1..=options::DEFAULT_MAX_SLICES as i64))]
    pub max_slices: u32,
    /// Read the whole language model into RAM instead of memory-mapping it.
    #[arg(long)]
    pub no_mmap: bool,
    /// Lock the language model's weights in RAM (no paging out; needs RLIMIT_MEMLOCK).
    #[arg(long)]
    pub mlock: bool,
    /// Weight repacking for llama.cpp's repacked CPU kernels: `auto` repacks except on x86
    /// CPUs with AVX512-VNNI and K-quant models, where ggml's tiled kernel (which needs the
    /// weights as stored) prefills faster; `on` always repacks (llama.cpp's default); `off`
    /// never does (the mapped file is then the only copy).
    #[arg(long, value_name = "auto|on|off", default_value = "auto")]
    pub repack: Repack,
    /// The same as `--repack off`.
    #[arg(long, conflicts_with = "repack")]
    pub no_repack: bool,
    /// KV cache element type; q8_0 and q4_0 (with flash attention) cut its size to about
    /// half and a quarter.
    #[arg(long, value_name = "f16|q8_0|q4_0", default_value = "f16")]
    pub kv_type: KvType,
    /// Sequential low-memory mode: encode the images with only the projector loaded, free it,
    /// then load the language model (chat: the projector is loaded only while it encodes).
    /// Chosen automatically when the pair does not fit in available memory together.
    #[arg(long)]
    pub low_mem: bool,
    /// Attention kernel of the projector's vision tower: `flash` (ggml's fused kernel, the
    /// faster on CPUs) or `plain` (separate ops, llama.cpp's choice when it skips its warm-up).
    #[arg(
        long = "projector-attn",
        value_name = "flash|plain",
        default_value = "flash"
    )]
    pub projector_attention: ProjectorAttention,
}

impl MemoryArgs {
    /// Largest batch per decode call.
    pub fn n_batch(&self) -> u32 {
        self.batch_size.min(self.ctx_size)
    }

    pub fn repack(&self) -> Repack {
        if self.no_repack {
            Repack::Off
        } else {
            self.repack
        }
    }

    pub fn kv_type(&self) -> KvType {
        self.kv_type
    }

    /// The planner's view of these settings.
    pub fn plan_settings(&self, n_threads: i32) -> PlanSettings {
        PlanSettings {
            n_ctx: self.ctx_size,
            n_batch: self.n_batch(),
            kv_type: self.kv_type(),
            low_mem: self.low_mem,
            use_mmap: !self.no_mmap,
            use_mlock: self.mlock,
            repack: self.repack(),
            max_slices: self.max_slices,
            n_threads,
            projector_attention: self.projector_attention,
        }
    }
}

#[derive(Debug, Args)]
pub struct GenerationArgs {
    /// Maximum number of tokens to generate (per answer in `chat`).
    #[arg(short = 'n', long = "n-predict", default_value_t = options::DEFAULT_N_PREDICT as u32,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub n_predict: u32,
    /// Keep generating after the end-of-text token (always -n tokens; for benchmarks).
    #[arg(long)]
    pub ignore_eos: bool,
    /// Sampling temperature; 0 means greedy (deterministic).
    #[arg(long = "temp", default_value_t = SamplerParams::default().temperature,
          value_parser = non_negative, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Top-k sampling (0 disables).
    #[arg(long, default_value_t = SamplerParams::default().top_k,
          value_parser = clap::value_parser!(i32).range(0..), allow_negative_numbers = true)]
    pub top_k: i32,
    /// Top-p (nucleus) sampling (1.0 disables).
    #[arg(long, default_value_t = SamplerParams::default().top_p, value_parser = unit_interval,
          allow_negative_numbers = true)]
    pub top_p: f32,
    /// Min-p sampling (0.0 disables).
    #[arg(long, default_value_t = SamplerParams::default().min_p, value_parser = unit_interval,
          allow_negative_numbers = true)]
    pub min_p: f32,
    /// Repetition penalty (1.0 disables).
    #[arg(long, default_value_t = SamplerParams::default().repeat_penalty,
          value_parser = positive, allow_negative_numbers = true)]
    pub repeat_penalty: f32,
    /// Random seed for sampling.
    #[arg(long, default_value_t = SamplerParams::default().seed)]
    pub seed: u32,
    /// Threads (default: the physical performance cores this process may use).
    #[arg(short = 't', long, value_parser = clap::value_parser!(u32).range(1..1025))]
    pub threads: Option<u32>,
    #[command(flatten)]
    pub memory: MemoryArgs,
    #[command(flatten)]
    pub rpc: RpcArgs,
    /// Keep the mapped pages the loader read to repack (llama.cpp's own behaviour: repacked
    /// weights then stay resident twice). For comparisons.
    #[arg(long)]
    pub keep_loader_pages: bool,
    /// Draw a progress bar for image encoding even when stderr is not a terminal.
    #[arg(long)]
    pub progress: bool,
    /// Let a thinking model reason before answering (on by default for MiniCPM-V 4.5 and
    /// 4.6-Thinking; an error for a model that cannot).
    #[arg(long, overrides_with = "no_think")]
    pub think: bool,
    /// Answer without reasoning (MiniCPM-V 4.5, 4.6-Thinking).
    #[arg(long, overrides_with = "think")]
    pub no_think: bool,
    /// Do not print the reasoning of a thinking model (it is still generated, and kept in the
    /// `thinking` field of --json output).
    #[arg(long)]
    pub hide_thinking: bool,
}

impl GenerationArgs {
    /// `--think` / `--no-think`, `None` for the model's default.
    pub fn thinking(&self) -> Option<bool> {
        match (self.think, self.no_think) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        }
    }

    pub fn sampling(&self) -> SamplerParams {
        SamplerParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            seed: self.seed,
            ..SamplerParams::default()
        }
    }

    /// Length and sampling of an answer.
    pub fn generation(&self) -> Generation {
        Generation::default()
            .max_tokens(self.n_predict as usize)
            .ignore_eos(self.ignore_eos)
            .sampling(self.sampling())
    }

    /// How the pair is loaded and run, with the command's own low-memory and warm-up choices.
    /// With --rpc this connects to the workers and splits `model` over them.
    pub fn session_options(
        &self,
        model: &Path,
        low_mem: bool,
        warmup: bool,
    ) -> Result<SessionOptions> {
        let mut options = self.local_session_options(low_mem, warmup);
        options.load.offload = self.rpc.connect(model)?;
        Ok(options)
    }

    /// [`GenerationArgs::session_options`] without --rpc.
    pub fn local_session_options(&self, low_mem: bool, warmup: bool) -> SessionOptions {
        let m = &self.memory;
        SessionOptions::default()
            .threads(self.n_threads())
            .context(m.ctx_size)
            .batch(m.batch_size)
            .kv_type(m.kv_type())
            .load(self.load_params())
            .warmup(warmup)
            .projector_attention(m.projector_attention)
            .max_image_pixels(m.max_image_pixels)
            .low_mem(low_mem)
    }

    pub fn n_threads(&self) -> i32 {
        self.threads.map_or_else(default_threads, |t| t as i32)
    }

    pub fn load_params(&self) -> LoadParams {
        LoadParams {
            // With workers the file is read, not mapped: llama.cpp maps with MAP_POPULATE, which
            // makes the whole file resident here, the workers' layers included.
            use_mmap: !self.memory.no_mmap && self.rpc.rpc.is_none(),
            use_mlock: self.memory.mlock,
            repack: self.memory.repack(),
            release_loader_pages: !self.keep_loader_pages,
            ..LoadParams::default()
        }
    }

    /// Whether to run in low-memory mode: when asked, or when the planner predicts that the
    /// default mode does not fit in the memory available now but low-memory mode fits better
    /// (said on stderr). The planner is consulted only when the files are not clearly small
    /// enough, so ordinary runs pay nothing for it.
    pub fn low_mem_for(&self, model: &Path, mmproj: &Path, media: &memplan::Media<'_>) -> bool {
        let m = &self.memory;
        if m.low_mem {
            return true;
        }
        // The planner counts the whole model on this machine; with workers it does not apply.
        if self.rpc.rpc.is_some() {
            return false;
        }
        if memplan::clearly_fits(model, mmproj, m.ctx_size) {
            return false;
        }
        let settings = PlanSettings {
            low_mem: false,
            ..m.plan_settings(self.n_threads())
        };
        // A failing plan is not an error here: the run itself reports bad inputs.
        let Ok(plan) = memplan::plan(model, mmproj, media, m.max_image_pixels, &settings) else {
            return false;
        };
        let low = memplan::predict(
            &plan.footprint,
            &PlanSettings {
                low_mem: true,
                ..settings
            },
        );
        if !memplan::should_switch_to_low_mem(&plan.prediction, &low, plan.available.as_ref()) {
            return false;
        }
        crate::note!(
            "note: the model and projector need about {} together but {} is available; using --low-mem (about {}). See `minicpmv plan`.",
            human_bytes(plan.prediction.peak),
            plan.available.as_ref().map_or_else(|| "less".to_string(), |a| human_bytes(a.bytes)),
            human_bytes(low.peak),
        );
        true
    }
}

/// Default of `--embd-cache-max-mb`.
const DEFAULT_DISK_MB: f64 = 1024.0;
/// Default of `--embd-cache-mem-mb`.
const DEFAULT_MEM_MB: f64 = 512.0;

/// A video and how its frames are taken.
#[derive(Debug, Clone, Args)]
pub struct VideoArgs {
    /// A video to ask about, instead of images: a file the ffmpeg and ffprobe programs read
    /// (MP4/MOV, WebM, MKV, AVI, ...), an animated GIF or WebP (no ffmpeg needed), or a folder
    /// of numbered frame images. Frames are taken by the version's reference rule (2.5, 2.6,
    /// o2.6, 4.0: 1 per second, at most 64, 2 slices each; 4.5, o4.5: 5 per second, uniform,
    /// at most 180, 1 slice each; 4.6: the frame at each second, at most 128, 1 slice each),
    /// decoded and encoded one at a time, and laid out before the prompt as images. 4.5's
    /// temporal packing and 4.6's frame stacking are not in llama.cpp's projector graph: frames
    /// are fed unpacked (packing 1), a setting their references accept.
    #[arg(long, value_name = "FILE|DIR")]
    pub video: Option<PathBuf>,
    /// Frames taken per second of video (default: the version's reference rate).
    #[arg(long, value_name = "FPS")]
    pub fps: Option<f64>,
    /// Frames taken at most (default: the version's reference cap), 1..=1024.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub max_frames: Option<u64>,
    /// Slices per frame at most, 1..=9 (default: the version's reference value).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=9))]
    pub frame_slices: Option<u32>,
    /// The rate of a folder of frames, in frames per second (default 1).
    #[arg(long, value_name = "FPS")]
    pub folder_fps: Option<f64>,
}

impl VideoArgs {
    /// The library's request for `--video`, if given.
    pub fn request(&self) -> Option<VideoRequest> {
        Some(self.request_for(self.video.as_ref()?))
    }

    /// Refuses frame settings without `--video` (a command where they would do nothing;
    /// `chat` keeps them for `/video`).
    pub fn check_needs_video(&self) -> Result<()> {
        if self.video.is_some() {
            return Ok(());
        }
        let given = [
            ("--fps", self.fps.is_some()),
            ("--max-frames", self.max_frames.is_some()),
            ("--frame-slices", self.frame_slices.is_some()),
            ("--folder-fps", self.folder_fps.is_some()),
        ];
        match given.iter().find(|(_, set)| *set) {
            Some((flag, _)) => {
                anyhow::bail!("{flag} sets how a video's frames are taken: it needs --video")
            }
            None => Ok(()),
        }
    }

    /// A request for the video at `path` with these settings (chat's `/video PATH`).
    pub fn request_for(&self, path: &Path) -> VideoRequest {
        let mut v = VideoRequest::new(path);
        if let Some(fps) = self.folder_fps {
            v = v.folder_fps(fps);
        }
        if let Some(fps) = self.fps {
            v = v.fps(fps);
        }
        if let Some(n) = self.max_frames {
            v = v.max_frames(n as usize);
        }
        if let Some(n) = self.frame_slices {
            v = v.frame_slices(n);
        }
        v
    }
}

/// The image-embedding cache of `chat` and `serve`.
#[derive(Debug, Args)]
pub struct CacheArgs {
    /// Keep image embeddings in this folder too, so that a later session on the same image
    /// (same projector and --max-slices) makes no projector call.
    #[arg(long, value_name = "DIR")]
    pub embd_cache: Option<PathBuf>,
    /// Size bound of the --embd-cache folder in MiB; least recently used files go first.
    #[arg(long, value_name = "MB", default_value_t = DEFAULT_DISK_MB, value_parser = non_negative_mb)]
    pub embd_cache_max_mb: f64,
    /// Size bound of the in-memory embedding cache in MiB (0 disables it).
    #[arg(long, value_name = "MB", default_value_t = DEFAULT_MEM_MB, value_parser = non_negative_mb)]
    pub embd_cache_mem_mb: f64,
}

impl CacheArgs {
    pub fn config(&self) -> CacheConfig {
        CacheConfig {
            mem_max_bytes: mib_to_bytes(self.embd_cache_mem_mb),
            dir: self.embd_cache.clone(),
            disk_max_bytes: mib_to_bytes(self.embd_cache_max_mb),
        }
    }
}

fn non_negative_mb(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a size in MiB (a number >= 0)")),
    }
}

fn mib_to_bytes(mb: f64) -> u64 {
    (mb * 1024.0 * 1024.0) as u64
}

/// Longest prompt file read (16 MiB): far more text than any context holds.
const MAX_PROMPT_FILE_BYTES: u64 = 16 << 20;

/// The prompt in `path` (`-` for standard input): UTF-8 text of at most 16 MiB, from a regular
/// file or stdin; errors name the file.
pub fn read_prompt_file(path: &Path) -> Result<String> {
    use anyhow::Context as _;
    use std::io::Read as _;
    let shown = path.display();
    let mut bytes = Vec::new();
    if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(MAX_PROMPT_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .context("reading the prompt from stdin")?;
    } else {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("cannot read the prompt file {shown}"))?;
        if !meta.is_file() {
            anyhow::bail!("the prompt file {shown} is not a regular file");
        }
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_PROMPT_FILE_BYTES + 1).read_to_end(&mut bytes))
            .with_context(|| format!("cannot read the prompt file {shown}"))?;
    }
    if bytes.len() as u64 > MAX_PROMPT_FILE_BYTES {
        anyhow::bail!("the prompt file {shown} is larger than 16 MiB");
    }
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "the prompt file {shown} is not UTF-8 text (byte {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// A finite number >= 0 (clap value parser).
pub fn non_negative(s: &str) -> Result<f32, String> {
    let v = parse_finite(s)?;
    if v < 0.0 {
        return Err(format!("{v} is negative; use a number >= 0"));
    }
    Ok(v)
}

/// A finite number > 0 (clap value parser).
pub fn positive(s: &str) -> Result<f32, String> {
    let v = parse_finite(s)?;
    if v <= 0.0 {
        return Err(format!("{v} is not above 0; use a number > 0"));
    }
    Ok(v)
}

/// A number from 0 to 1 (clap value parser).
pub fn unit_interval(s: &str) -> Result<f32, String> {
    let v = parse_finite(s)?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{v} is outside 0..1; use a number from 0 to 1"));
    }
    Ok(v)
}

fn parse_finite(s: &str) -> Result<f32, String> {
    let v: f32 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if !v.is_finite() {
        return Err(format!("{s:?} is not a finite number"));
    }
    Ok(v)
}

/// Default thread count: the physical performance cores this process may use
/// ([`minicpmv::plan::system::performance_cores`]).
pub fn default_threads() -> i32 {
    minicpmv::plan::system::performance_cores() as i32
}

/// Layers on other boxes, over ggml's RPC backend (`minicpmv worker` on each).
#[derive(Debug, Clone, Default, Args)]
pub struct RpcArgs {
    /// Split the language model's layers over this machine and RPC workers
    /// (`minicpmv worker` or llama.cpp's rpc-server on each box). The projector stays here.
    /// The model file is read rather than mapped (as --no-mmap), so that the workers' layers
    /// do not stay resident here. The protocol has no authentication or encryption: trusted
    /// networks only.
    #[arg(long, value_name = "HOST:PORT[,HOST:PORT...]",
          value_parser = parse_workers)]
    pub rpc: Option<Workers>,
    /// With --rpc: each box's share of the layers, this machine first, then the workers in
    /// --rpc order (any scale: `1,1,1`, or GB of memory `8,4,4`; `0,1,1` puts every layer on
    /// the workers). Default: by memory (this machine's available, each worker's reported).
    #[arg(long, value_name = "LOCAL,W1,...", requires = "rpc", value_parser = parse_shares)]
    pub rpc_split: Option<Shares>,
}

/// `--rpc` values.
#[derive(Debug, Clone, PartialEq)]
pub struct Workers(pub Vec<WorkerAddr>);

fn parse_workers(s: &str) -> Result<Workers, String> {
    minicpmv::ffi::rpc::parse_workers(s).map(Workers)
}

/// `--rpc-split` values.
#[derive(Debug, Clone, PartialEq)]
pub struct Shares(pub Vec<f64>);

fn parse_shares(s: &str) -> Result<Shares, String> {
    s.split(',')
        .map(|p| {
            p.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| format!("{p:?} is not a share (a number >= 0)"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Shares)
}

impl RpcArgs {
    /// Connects to the workers and splits `model` over them (None without --rpc), saying on
    /// stderr which box holds which layers.
    pub fn connect(&self, model: &Path) -> Result<Option<&'static Offload>> {
        let Some(workers) = &self.rpc else {
            return Ok(None);
        };
        let placement =
            split::connect(model, &workers.0, self.rpc_split.as_ref().map(|s| &s.0[..]))?;
        crate::note!(
            "rpc: {}",
            describe_split(&placement.split, &placement.offload.devices)
        );
        Ok(Some(placement.offload))
    }
}

/// "layers 0-9 here; 10-19 on 127.0.0.1:50052 (RPC0); 20-27 and the output on ..."
pub fn describe_split(split: &split::LayerSplit, devices: &[RpcDevice]) -> String {
    let mut parts = Vec::new();
    for b in 0..=devices.len() {
        let layers = split.layers_of(b);
        let output = split.output_box() == b;
        let what = match (&layers, output) {
            (Some(r), true) => format!("layers {}-{} and the output", r.start(), r.end()),
            (Some(r), false) => format!("layers {}-{}", r.start(), r.end()),
            (None, true) => "the output layer".to_string(),
            (None, false) => "no layers".to_string(),
        };
        let place = match b {
            0 => "here".to_string(),
            b => format!("on {} ({})", devices[b - 1].addr, devices[b - 1].name),
        };
        parts.push(format!("{what} {place}"));
    }
    parts.join("; ")
}
