//! `minicpmv serve`: an OpenAI- and Ollama-compatible HTTP server for one loaded pair (the
//! server itself is the `minicpmv-server` crate). Logs go to stderr; the first line says where
//! it listens (`listening on http://HOST:PORT`), a second when the model is ready.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;

use minicpmv_server::{Limits, ServerConfig};

use super::common::{CacheArgs, GenerationArgs, ModelArgs};

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub pair: ModelArgs,
    /// Address to listen on. Loopback by default; anything else exposes the model to the
    /// network (use --api-key).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// The model's name in /v1/models and /api/tags (default: the model file's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Require `Authorization: Bearer KEY` on every route but /health.
    #[arg(long, env = "MINICPMV_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Requests that may wait while one is answered (requests are answered one at a time);
    /// more get 429.
    #[arg(long, default_value_t = 32)]
    pub max_queue: usize,
    /// Largest request body in MiB (base64 images included).
    #[arg(long, value_name = "MB", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_body_mb: u32,
    /// Seconds a request body may take to arrive.
    #[arg(long, value_name = "SECS", default_value_t = 30.0, value_parser = positive_secs)]
    pub body_timeout: f64,
    /// Images per request at most.
    #[arg(long, default_value_t = 16)]
    pub max_images: usize,
    /// Largest max_tokens (num_predict) a request may ask for (default: the context size).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_tokens_limit: Option<u32>,
    /// Fetch http(s):// image URLs (refused otherwise: the server would make requests on a
    /// client's behalf).
    #[arg(long)]
    pub allow_remote_images: bool,
    /// Serve file:// image URLs from this folder (refused otherwise).
    #[arg(long, value_name = "DIR")]
    pub media_dir: Option<PathBuf>,
    /// Seconds SIGTERM waits for answers in progress before stopping them.
    #[arg(long, value_name = "SECS", default_value_t = 30.0, value_parser = non_negative_secs)]
    pub shutdown_grace: f64,
    /// Run llama.cpp's projector warm-up when the projector is loaded.
    #[arg(long)]
    pub warmup: bool,
    #[command(flatten)]
    pub cache: CacheArgs,
    /// Defaults of requests that do not set them (a request's own values win).
    #[command(flatten)]
    pub gen: GenerationArgs,
}

fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number of seconds above 0 (at most 86400)"
        )),
    }
}

fn non_negative_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds from 0 to 86400")),
    }
}

pub fn main(args: ServeArgs) -> Result<()> {
    super::output::enable_server_log();
    let media_dir = match &args.media_dir {
        Some(d) => Some(
            d.canonicalize()
                .with_context(|| format!("--media-dir {}", d.display()))?,
        ),
        None => None,
    };
    let (model, mmproj, _synthetic) = args.pair.resolve()?;
    let gen = &args.gen;
    let low_mem = gen.low_mem_for(&model, &mmproj, &Default::default());
    let name = args.name.clone().unwrap_or_else(|| {
        model
            .file_stem()
            .map_or_else(|| "minicpmv".into(), |s| s.to_string_lossy().into_owned())
    });
    let config = ServerConfig {
        pair: minicpmv::Pair::new(&model, &mmproj),
        options: gen.session_options(&model, low_mem, args.warmup)?,
        cache: args.cache.config(),
        defaults: gen.generation(),
        max_slices: gen.memory.max_slices,
        thinking: gen.thinking(),
        model_name: name,
        limits: Limits {
            max_body_bytes: args.max_body_mb as usize * (1 << 20),
            body_timeout: Duration::from_secs_f64(args.body_timeout),
            max_images: args.max_images,
            max_tokens: args.max_tokens_limit.unwrap_or(gen.memory.ctx_size) as usize,
        },
        max_queue: args.max_queue,
        api_key: args.api_key.clone().filter(|k| !k.is_empty()),
        allow_remote_images: args.allow_remote_images,
        media_dir,
        shutdown_grace: Duration::from_secs_f64(args.shutdown_grace),
    };
    let addr = format!("{}:{}", args.host, args.port);
    let has_key = config.api_key.is_some();
    minicpmv_server::run(
        config,
        &addr,
        |bound| {
            crate::note!("listening on http://{bound}");
            if !bound.ip().is_loopback() && !has_key {
                crate::note!(
                    "warning: {bound} is reachable from the network and no --api-key is set: anyone who can reach it can use the model"
                );
            }
        },
        |loaded| {
            crate::note!(
                "ready: MiniCPM-V {} loaded in {:.1} s; answering one request at a time",
                loaded.facts.version,
                loaded.load_secs
            )
        },
    )?;
    crate::note!("stopped");
    Ok(())
}
