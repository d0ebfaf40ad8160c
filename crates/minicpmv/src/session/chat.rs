//! A multi-turn chat session over one loaded model (native image pipeline), reusing the KV cache
//! between turns and an [`EmbeddingCache`] for images.
//!
//! Every turn formats the whole conversation with the chat template ([`template::format_chat`],
//! generation prompt added) and builds its full input sequence ([`sequence::build_sequence`],
//! images in order). The session remembers what its KV cache holds, position by position (a
//! text token, or row `r` of chunk `c` of the image with embedding key `k`); the common prefix of
//! the two is kept, the divergent tail dropped ([`Context::truncate_memory`]) and the rest
//! prefilled. So the model sees exactly what a fresh single-turn run of the same conversation
//! ([`crate::session::run::run_with_history`]) would feed it, even when the tokens generated last turn
//! differ from the canonical tokenization of the answer's text: the comparison finds that and
//! re-feeds from there.
//!
//! Images already in the KV cache are not encoded again; images needed again (after
//! [`ChatSession::reset`], attached once more, or behind a divergence) come from the embedding
//! cache, and only a miss calls the projector, which is loaded on first use.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::decode::generate::{generate_until, tokens_per_sec, StopReason};
use crate::decode::prefill;
use crate::encode::cache::{
    embd_key, image_digest, CacheConfig, CacheStats, EmbdCacheError, EmbdKey, EmbeddingCache,
    Expected, ProjectorId,
};
use crate::encode::{self, ImageEmbeddings, NativeError};
use crate::ffi::mtmd::default_marker;
use crate::ffi::{
    ClipError, ClipProjector, Context, ContextParams, DecodeError, KvType, Model,
    ProjectorAttention, Sampler, SamplerParams, Token,
};
use crate::model::family::Version;
use crate::model::inputs::{check_projector, InputError};
use crate::prompt::layout::LayoutStyle;
use crate::prompt::sequence::{self, LayoutTokens, Segment};
use crate::prompt::template::{self, Message, Role};
use crate::session::run::{history_message, Event, HistoryMessage, RunError};
use crate::vision::{
    load_image, plan_slices, ImageError, LoadedImage, SliceError, SliceParams, SlicePlan,
    DEFAULT_MAX_PIXELS,
};

/// Settings of a chat session.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatConfig {
    /// Tokens to generate at most per answer.
    pub n_predict: usize,
    /// Keep generating after an end-of-generation token (exactly `n_predict` tokens).
    pub ignore_eos: bool,
    /// Sampling settings of the llama.cpp sampler chain; a new sampler is made each turn.
    pub sampling: SamplerParams,
    /// CPU threads for the projector and for the language model.
    pub n_threads: i32,
    /// Context length in tokens: the whole conversation must fit.
    pub n_ctx: u32,
    /// Largest batch per decode call.
    pub n_batch: u32,
    /// Largest image accepted by [`ChatSession::attach_image`], in pixels (width x height).
    pub max_image_pixels: u64,
    /// Slices per image at most (1..=9).
    pub max_slices: u32,
    /// Run llama.cpp's warm-up when the projector is loaded.
    pub warmup: bool,
    /// Attention kernel of the projector's vision tower.
    pub projector_attention: ProjectorAttention,
    /// A system message at the start of the conversation (the template's default otherwise).
    pub system: Option<String>,
    /// Where and how much the image embedding cache keeps (memory and disk).
    pub cache: CacheConfig,
    /// Element type of the KV cache.
    pub kv_type: KvType,
    /// Low-memory mode: free the projector after each image is encoded (a new image loads it
    /// again), so it is resident next to the language model only while it encodes.
    pub low_mem: bool,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            n_predict: 256,
            ignore_eos: false,
            sampling: SamplerParams::default(),
            n_threads: 4,
            n_ctx: 4096,
            n_batch: 512,
            max_image_pixels: DEFAULT_MAX_PIXELS,
            max_slices: 9,
            warmup: false,
            projector_attention: ProjectorAttention::default(),
            system: None,
            cache: CacheConfig::default(),
            kv_type: KvType::default(),
            low_mem: false,
        }
    }
}

/// Why a chat operation failed. A failed turn leaves the conversation as it was before it
/// (the attached images stay attached).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChatError {
    /// The projector file failed the checks of [`check_projector`] in [`ChatSession::new`].
    #[error(transparent)]
    Input(#[from] InputError),
    /// An attached image could not be read or decoded, or exceeds
    /// [`ChatConfig::max_image_pixels`] (when attached, or when reloaded for re-encoding).
    #[error(transparent)]
    Image(#[from] ImageError),
    /// No slice grid could be planned for an attached image.
    #[error("{}: {source}", path.display())]
    Slice {
        /// The image file.
        path: PathBuf,
        /// Why planning failed.
        source: SliceError,
    },
    /// The projector failed to load when an image first had to be encoded.
    #[error(transparent)]
    Clip(#[from] ClipError),
    /// The layout tokens are missing from the vocabulary, or encoding an image failed.
    #[error(transparent)]
    Native(#[from] NativeError),
    /// Creating the context failed, or a prefill or generation failed (the KV cache is then
    /// cleared).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The embedding cache could not be opened, or the projector could not be identified for
    /// its keys.
    #[error(transparent)]
    Cache(#[from] EmbdCacheError),
    /// A message could not be formatted: image markers in the text do not match its images
    /// ([`RunError::MarkerCount`]).
    #[error(transparent)]
    Format(#[from] RunError),
    /// The projector's output width differs from the loaded model's embedding width.
    #[error("the projector {} produces embeddings of width {mmproj_width}, but the language model has width {model_width}: the two files do not belong together", mmproj.display())]
    WidthMismatch {
        /// The projector file.
        mmproj: PathBuf,
        /// The language model's embedding width, in floats per token.
        model_width: usize,
        /// The projector's output width, in floats per embedding.
        mmproj_width: u64,
    },
    /// The whole conversation with the new question, plus one position for the answer's
    /// first token, does not fit in [`ChatConfig::n_ctx`]; the turn is not started.
    #[error("the conversation needs {needed} positions ({n_text} text tokens + {n_image} image embeddings) but the context holds {n_ctx}")]
    ContextTooSmall {
        /// Positions needed: `n_text + n_image + 1`.
        needed: usize,
        /// Text tokens of the conversation, template and image layout tokens included.
        n_text: usize,
        /// Image embeddings of the conversation (`query_num` per chunk).
        n_image: usize,
        /// The context length, in positions.
        n_ctx: u32,
    },
    /// An image whose embeddings had to be computed again was reloaded from disk and its
    /// pixels no longer match the SHA-256 digest taken when it was attached.
    #[error("image {} changed on disk since it was attached to the conversation", path.display())]
    ImageChanged {
        /// The image file.
        path: PathBuf,
    },
    /// [`ChatSession::ask`] with an empty text and no attached image.
    #[error("an empty message and no image: nothing to ask")]
    Nothing,
    /// llama.cpp returned no sampler chain for [`ChatConfig::sampling`].
    #[error("could not create the sampler")]
    Sampler,
}

/// An image of the conversation.
#[derive(Debug, Clone)]
struct ChatImage {
    path: PathBuf,
    /// SHA-256 of the decoded pixels (to check a reloaded file).
    digest: [u8; 32],
    key: EmbdKey,
    plan: SlicePlan,
    /// The pixels while the image waits for its first turn; dropped afterwards (reloaded from
    /// `path` and checked against `digest` if its embeddings are needed again and not cached).
    pixels: Option<LoadedImage>,
}

#[derive(Debug, Clone)]
struct ChatMessage {
    role: Role,
    text: String,
    images: Vec<ChatImage>,
}

/// One position of the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pos {
    Token(Token),
    Embd { key: EmbdKey, chunk: u32, row: u32 },
}

/// How many positions of the KV cache `old` a turn whose whole input is `new` keeps: their
/// common prefix, never ending inside an image chunk (a chunk's embeddings are decoded
/// together), and always leaving at least one position of `new` to feed (its logits are
/// needed).
fn kv_reuse(old: &[Pos], new: &[Pos]) -> usize {
    let mut p0 = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    if p0 == new.len() {
        p0 = p0.saturating_sub(1);
    }
    while p0 > 0 && matches!(new[p0], Pos::Embd { row, .. } if row > 0) {
        p0 -= 1;
    }
    p0
}

/// Wall-clock figures of a turn, in seconds (rates in positions or tokens per second).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TurnTimings {
    /// Loading the projector (only the turn that first needs it).
    pub projector_load_secs: f64,
    /// Encoding this turn's images that missed both caches (sum of `chunk_encode_secs`).
    pub image_encode_secs: f64,
    /// Seconds of each projector call of this turn.
    pub chunk_encode_secs: Vec<f64>,
    /// Prefill of the new positions.
    pub prompt_secs: f64,
    /// New positions prefilled per second of `prompt_secs`.
    pub prompt_tokens_per_sec: f64,
    /// From the start of [`ChatSession::ask`] to the first token of the answer.
    pub time_to_first_token_secs: f64,
    /// Sampling and decoding the answer's tokens.
    pub generate_secs: f64,
    /// Answer tokens per second of `generate_secs`.
    pub generate_tokens_per_sec: f64,
    /// The whole turn, from the start of [`ChatSession::ask`] to the end of the answer.
    pub total_secs: f64,
}

/// The result of one turn.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TurnOutput {
    /// 1 for the first turn after start or [`ChatSession::reset`].
    pub turn: usize,
    /// The answer, as streamed in [`Event::Text`]; it is also kept in the history.
    pub text: String,
    /// The answer's generated token ids.
    pub token_ids: Vec<Token>,
    /// Why the answer ended.
    pub stop: StopReason,
    /// Projector calls made for this turn (0 when every image came from the KV cache or the
    /// embedding cache).
    pub n_projector_calls: usize,
    /// Positions of this turn's input already in the KV cache (kept from earlier turns).
    pub n_reused_positions: usize,
    /// Positions prefilled for this turn.
    pub n_new_positions: usize,
    /// Positions of the whole conversation's input (reused + new).
    pub n_prompt_positions: usize,
    /// Images of the conversation so far.
    pub n_images: usize,
    /// Images whose embeddings this turn needed and found in the embedding cache / had to
    /// encode.
    pub cache_hits: usize,
    /// Images whose embeddings this turn needed and had to encode (not in the embedding
    /// cache).
    pub cache_misses: usize,
    /// Where the turn's time went.
    pub timings: TurnTimings,
}

/// A conversation with a loaded model. See the module docs.
pub struct ChatSession<'m> {
    model: &'m Model,
    mmproj: PathBuf,
    cfg: ChatConfig,
    version: Version,
    chat_template: Option<String>,
    style: LayoutStyle,
    layout: LayoutTokens,
    slice_params: SliceParams,
    query_num: usize,
    n_embd: usize,
    projector_id: ProjectorId,
    ctx: Context<'m>,
    projector: Option<ClipProjector>,
    cache: EmbeddingCache,
    marker: String,
    history: Vec<ChatMessage>,
    pending: Vec<ChatImage>,
    /// What the KV cache holds, position by position.
    kv: Vec<Pos>,
    turn: usize,
    n_projector_calls: usize,
}

impl std::fmt::Debug for ChatSession<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatSession")
            .field("mmproj", &self.mmproj)
            .field("version", &self.version)
            .field("messages", &self.history.len())
            .field("pending_images", &self.pending.len())
            .field("kv_positions", &self.kv.len())
            .field("cache", &self.cache)
            .finish()
    }
}

impl<'m> ChatSession<'m> {
    /// Starts a session on `model` (already loaded; check it with
    /// [`crate::model::inputs::check_model`] before loading) with the projector at `mmproj`, which is
    /// checked here and loaded only when an image must be encoded.
    pub fn new(model: &'m Model, mmproj: &Path, cfg: ChatConfig) -> Result<Self, ChatError> {
        let (gguf, facts) = check_projector(mmproj)?;
        if facts.n_embd != model.n_embd() as u64 {
            return Err(ChatError::WidthMismatch {
                mmproj: mmproj.to_path_buf(),
                model_width: model.n_embd(),
                mmproj_width: facts.n_embd,
            });
        }
        let projector_id = ProjectorId::of_gguf(&gguf)?;
        let layout = LayoutTokens::lookup(model)?;
        let slice_params = SliceParams {
            image_size: facts.image_size as u32,
            patch_size: facts.patch_size as u32,
            max_slices: cfg.max_slices,
        };
        let cache = EmbeddingCache::new(cfg.cache.clone())?;
        let ctx = Context::new(
            model,
            ContextParams {
                n_ctx: cfg.n_ctx,
                n_batch: cfg.n_batch,
                n_threads: cfg.n_threads,
                n_threads_batch: cfg.n_threads,
                kv_type: cfg.kv_type,
            },
        )?;
        Ok(ChatSession {
            model,
            mmproj: mmproj.to_path_buf(),
            version: facts.version,
            chat_template: model.meta_str("tokenizer.chat_template"),
            style: LayoutStyle::for_minicpmv_version(facts.minicpmv_version),
            layout,
            slice_params,
            query_num: facts.query_num as usize,
            n_embd: model.n_embd(),
            projector_id,
            ctx,
            projector: None,
            cache,
            marker: default_marker(),
            history: Vec::new(),
            pending: Vec::new(),
            kv: Vec::new(),
            turn: 0,
            n_projector_calls: 0,
            cfg,
        })
    }

    /// Attaches an image to the next question. The file is loaded and checked now.
    pub fn attach_image(&mut self, path: &Path) -> Result<(), ChatError> {
        let img = load_image(path, self.cfg.max_image_pixels)?;
        let plan = plan_slices(img.width, img.height, &self.slice_params).map_err(|source| {
            ChatError::Slice {
                path: path.to_path_buf(),
                source,
            }
        })?;
        let digest = image_digest(&img);
        self.pending.push(ChatImage {
            path: path.to_path_buf(),
            digest,
            key: embd_key(&digest, &self.projector_id, &self.slice_params),
            plan,
            pixels: Some(img),
        });
        Ok(())
    }

    /// Images attached for the next question.
    pub fn pending_images(&self) -> Vec<PathBuf> {
        self.pending.iter().map(|i| i.path.clone()).collect()
    }

    /// Forgets the conversation, the attached images and the KV cache (the embedding cache
    /// stays).
    pub fn reset(&mut self) {
        self.history.clear();
        self.pending.clear();
        self.ctx.clear_memory();
        self.kv.clear();
        self.turn = 0;
    }

    /// The conversation so far (without the configured system message), in the form
    /// [`crate::session::run::run_with_history`] takes.
    pub fn history(&self) -> Vec<HistoryMessage> {
        self.history
            .iter()
            .map(|m| HistoryMessage {
                role: m.role,
                text: m.text.clone(),
                images: m.images.iter().map(|i| i.path.clone()).collect(),
            })
            .collect()
    }

    /// Positions currently in the KV cache.
    pub fn n_past(&self) -> usize {
        self.kv.len()
    }

    /// Lookups (memory hits, disk hits, misses), disk writes and evictions of the embedding
    /// cache since the session started.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Projector calls since the session started.
    pub fn n_projector_calls(&self) -> usize {
        self.n_projector_calls
    }

    /// The settings the session was started with.
    pub fn config(&self) -> &ChatConfig {
        &self.cfg
    }

    /// Asks `text` (with the attached images) and streams the answer through `on_event`.
    pub fn ask(
        &mut self,
        text: &str,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<TurnOutput, ChatError> {
        self.ask_until(text, on_event, &|| false)
    }

    /// [`ChatSession::ask`], stopping the answer early (kept in the history as far as it got)
    /// when `cancel()` returns true.
    pub fn ask_until(
        &mut self,
        text: &str,
        on_event: &mut dyn FnMut(Event<'_>),
        cancel: &dyn Fn() -> bool,
    ) -> Result<TurnOutput, ChatError> {
        let t_start = Instant::now();
        if text.is_empty() && self.pending.is_empty() {
            return Err(ChatError::Nothing);
        }
        let user = ChatMessage {
            role: Role::User,
            text: text.to_string(),
            images: self.pending.clone(),
        };

        // The whole conversation, formatted, and its input sequence.
        let mut messages: Vec<Message> = Vec::with_capacity(self.history.len() + 2);
        if let Some(system) = &self.cfg.system {
            messages.push(Message {
                role: Role::System,
                content: system.clone(),
            });
        }
        for m in self.history.iter().chain(std::iter::once(&user)) {
            let h = HistoryMessage {
                role: m.role,
                text: m.text.clone(),
                images: m.images.iter().map(|i| i.path.clone()).collect(),
            };
            messages.push(history_message(self.version, &h, &self.marker)?);
        }
        let formatted =
            template::format_chat(self.version, self.chat_template.as_deref(), &messages, true);
        let images: Vec<&ChatImage> = self
            .history
            .iter()
            .chain(std::iter::once(&user))
            .flat_map(|m| &m.images)
            .collect();
        let plans: Vec<&SlicePlan> = images.iter().map(|i| &i.plan).collect();
        let segments = sequence::build_sequence(
            self.model,
            &formatted,
            &self.marker,
            &plans,
            self.style,
            &self.layout,
        );
        let full = self.positions(&segments, &images);
        let n_images = images.len();
        let n_image = full
            .iter()
            .filter(|p| matches!(p, Pos::Embd { .. }))
            .count();
        if full.len() >= self.cfg.n_ctx as usize {
            return Err(ChatError::ContextTooSmall {
                needed: full.len() + 1,
                n_text: full.len() - n_image,
                n_image,
                n_ctx: self.cfg.n_ctx,
            });
        }

        let mut p0 = kv_reuse(&self.kv, &full);
        if p0 < self.kv.len() {
            if !self.ctx.truncate_memory(p0 as i32) {
                self.ctx.clear_memory();
                p0 = 0;
            }
            self.kv.truncate(p0);
        }

        // The segments still to feed, and the images they need.
        let (tail, needed) = tail_segments(&segments, &full, p0, self.query_num);
        let mut hits = 0usize;
        let mut misses = Vec::new();
        let mut embeddings: Vec<Option<Arc<ImageEmbeddings>>> = vec![None; needed.len()];
        for (slot, &img) in needed.iter().enumerate() {
            let im = images[img];
            let expect = Expected {
                plan: &im.plan,
                n_embd: self.n_embd,
                chunk_len: self.query_num * self.n_embd,
            };
            match self.cache.get(&im.key, &expect) {
                Some(e) => {
                    hits += 1;
                    embeddings[slot] = Some(e);
                }
                None => misses.push(slot),
            }
        }
        let mut timings = TurnTimings::default();
        let calls_before = self.n_projector_calls;
        if !misses.is_empty() {
            let total: usize = misses
                .iter()
                .map(|&s| images[needed[s]].plan.n_chunks())
                .sum();
            let projector = match &mut self.projector {
                Some(p) => p,
                none => {
                    let t = Instant::now();
                    let p = none.insert(ClipProjector::load(
                        &self.mmproj,
                        self.cfg.warmup,
                        self.cfg.projector_attention,
                    )?);
                    timings.projector_load_secs = t.elapsed().as_secs_f64();
                    p
                }
            };
            on_event(Event::EncodeStart { total });
            let mut done = 0usize;
            for &slot in &misses {
                let im = images[needed[slot]];
                let reloaded;
                let pixels = match &im.pixels {
                    Some(p) => p,
                    None => {
                        reloaded = load_image(&im.path, self.cfg.max_image_pixels)?;
                        if image_digest(&reloaded) != im.digest {
                            return Err(ChatError::ImageChanged {
                                path: im.path.clone(),
                            });
                        }
                        &reloaded
                    }
                };
                let before = projector.n_encode_calls();
                let result = encode::encode_image(
                    projector,
                    pixels,
                    self.cfg.max_slices,
                    self.cfg.n_threads,
                    &mut |_, _| {},
                );
                self.n_projector_calls += projector.n_encode_calls() - before;
                let emb = Arc::new(result?);
                for &secs in &emb.encode_secs {
                    done += 1;
                    timings.chunk_encode_secs.push(secs);
                    on_event(Event::ChunkEncoded { done, total, secs });
                }
                self.cache.insert(im.key, Arc::clone(&emb));
                embeddings[slot] = Some(emb);
            }
            timings.image_encode_secs = timings.chunk_encode_secs.iter().sum();
            if self.cfg.low_mem {
                self.projector = None;
            }
        }
        let emb_refs: Vec<&ImageEmbeddings> = embeddings.iter().flatten().map(|e| &**e).collect();
        debug_assert_eq!(emb_refs.len(), needed.len());

        // Prefill what is new. A failure leaves the KV cache in an unknown state: clear it.
        let t_prefill = Instant::now();
        let prefilled = prefill::prefill(
            &mut self.ctx,
            &tail,
            &emb_refs,
            self.n_embd,
            self.cfg.n_batch as usize,
            p0 as i32,
        );
        let n_past = match prefilled {
            Ok(p) => p.n_past,
            Err(e) => {
                self.ctx.clear_memory();
                self.kv.clear();
                return Err(e.into());
            }
        };
        timings.prompt_secs = t_prefill.elapsed().as_secs_f64();
        self.kv = full;
        debug_assert_eq!(n_past as usize, self.kv.len());

        let mut sampler =
            Sampler::new(&self.cfg.sampling, self.model.n_vocab()).ok_or(ChatError::Sampler)?;
        let mut on_text = |s: &str| on_event(Event::Text(s));
        let gen = match generate_until(
            self.model,
            &mut self.ctx,
            &mut sampler,
            n_past,
            self.cfg.n_predict,
            self.cfg.ignore_eos,
            &mut on_text,
            cancel,
        ) {
            Ok(g) => g,
            Err(e) => {
                self.ctx.clear_memory();
                self.kv.clear();
                return Err(e.into());
            }
        };
        // The generated tokens that were decoded are in the KV cache too.
        let n_fed = usize::try_from(gen.n_past - n_past)
            .unwrap_or(0)
            .min(gen.token_ids.len());
        self.kv
            .extend(gen.token_ids[..n_fed].iter().map(|&t| Pos::Token(t)));

        // Commit the turn.
        let n_new = n_past as usize - p0;
        let mut user = user;
        for im in &mut user.images {
            im.pixels = None;
        }
        self.pending.clear();
        self.history.push(user);
        self.history.push(ChatMessage {
            role: Role::Assistant,
            text: gen.text.clone(),
            images: Vec::new(),
        });
        self.turn += 1;
        let total_secs = t_start.elapsed().as_secs_f64();
        let n_gen = gen.token_ids.len();
        timings.prompt_tokens_per_sec = tokens_per_sec(n_new, timings.prompt_secs);
        timings.time_to_first_token_secs = gen
            .first_token_at
            .map_or(total_secs, |t| t.duration_since(t_start).as_secs_f64());
        timings.generate_secs = gen.secs;
        timings.generate_tokens_per_sec = tokens_per_sec(n_gen, gen.secs);
        timings.total_secs = total_secs;
        Ok(TurnOutput {
            turn: self.turn,
            text: gen.text,
            token_ids: gen.token_ids,
            stop: gen.stop,
            n_projector_calls: self.n_projector_calls - calls_before,
            n_reused_positions: p0,
            n_new_positions: n_new,
            n_prompt_positions: n_past as usize,
            n_images,
            cache_hits: hits,
            cache_misses: misses.len(),
            timings,
        })
    }

    /// The sequence, position by position.
    fn positions(&self, segments: &[Segment], images: &[&ChatImage]) -> Vec<Pos> {
        let mut out = Vec::new();
        for seg in segments {
            match seg {
                Segment::Tokens(t) => out.extend(t.iter().map(|&t| Pos::Token(t))),
                Segment::Chunk { image, chunk } => {
                    let key = images[*image].key;
                    out.extend((0..self.query_num as u32).map(|row| Pos::Embd {
                        key,
                        chunk: *chunk as u32,
                        row,
                    }));
                }
            }
        }
        out
    }
}

/// The part of `segments` from position `p0` on (never inside a chunk), with image indices
/// renumbered into the returned list of the images it needs (conversation indices, in order).
fn tail_segments(
    segments: &[Segment],
    full: &[Pos],
    p0: usize,
    query_num: usize,
) -> (Vec<Segment>, Vec<usize>) {
    let mut tail = Vec::new();
    let mut needed: Vec<usize> = Vec::new();
    let mut pos = 0usize;
    for seg in segments {
        let len = match seg {
            Segment::Tokens(t) => t.len(),
            Segment::Chunk { .. } => query_num,
        };
        let end = pos + len;
        if end > p0 {
            match seg {
                Segment::Tokens(t) => {
                    tail.push(Segment::Tokens(t[p0.saturating_sub(pos)..].to_vec()))
                }
                Segment::Chunk { image, chunk } => {
                    debug_assert!(pos >= p0, "p0 inside a chunk");
                    let slot = match needed.iter().position(|&i| i == *image) {
                        Some(s) => s,
                        None => {
                            needed.push(*image);
                            needed.len() - 1
                        }
                    };
                    tail.push(Segment::Chunk {
                        image: slot,
                        chunk: *chunk,
                    });
                }
            }
        }
        pos = end;
    }
    debug_assert_eq!(pos, full.len());
    (tail, needed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embd(key: u8, chunk: u32, row: u32) -> Pos {
        Pos::Embd {
            key: EmbdKey([key; 32]),
            chunk,
            row,
        }
    }

    #[test]
    fn kv_reuse_keeps_the_common_prefix() {
        let old = [Pos::Token(1), Pos::Token(2), Pos::Token(3)];
        let new = [Pos::Token(1), Pos::Token(2), Pos::Token(9), Pos::Token(4)];
        assert_eq!(kv_reuse(&old, &new), 2);
        // A new turn appended to the old conversation keeps all of it.
        let longer = [old.as_slice(), &[Pos::Token(5)]].concat();
        assert_eq!(kv_reuse(&old, &longer), 3);
        // Nothing in common, or an empty cache.
        assert_eq!(kv_reuse(&old, &[Pos::Token(7), Pos::Token(1)]), 0);
        assert_eq!(kv_reuse(&[], &new), 0);
    }

    #[test]
    fn kv_reuse_always_leaves_one_position_to_feed() {
        let same = [Pos::Token(1), Pos::Token(2), Pos::Token(3)];
        assert_eq!(kv_reuse(&same, &same), 2);
        // A shorter input than the cache: all of it but the last position.
        assert_eq!(kv_reuse(&same, &same[..2]), 1);
        assert_eq!(kv_reuse(&same, &same[..1]), 0);
    }

    #[test]
    fn kv_reuse_never_ends_inside_an_image_chunk() {
        let old = [
            Pos::Token(1),
            embd(7, 0, 0),
            embd(7, 0, 1),
            embd(7, 0, 2),
            Pos::Token(2),
        ];
        // The same image, a different image after row 1 of its chunk: back to the chunk start.
        let new = [Pos::Token(1), embd(7, 0, 0), embd(7, 0, 1), embd(8, 0, 2)];
        assert_eq!(kv_reuse(&old, &new), 1);
        // Identical up to and including a whole chunk: the chunk is kept.
        let new = [
            Pos::Token(1),
            embd(7, 0, 0),
            embd(7, 0, 1),
            embd(7, 0, 2),
            Pos::Token(3),
        ];
        assert_eq!(kv_reuse(&old, &new), 4);
        // Everything identical, ending in a chunk: the last position must be fed, and it is
        // inside the chunk, so the whole chunk is fed again.
        assert_eq!(kv_reuse(&old[..4], &old[..4]), 1);
    }

    #[test]
    fn tail_starts_at_p0_and_renumbers_images() {
        let k = EmbdKey([1; 32]);
        let segs = vec![
            Segment::Tokens(vec![1, 2, 3]),
            Segment::Chunk { image: 0, chunk: 0 },
            Segment::Tokens(vec![4, 5]),
            Segment::Chunk { image: 1, chunk: 0 },
            Segment::Chunk { image: 1, chunk: 1 },
            Segment::Tokens(vec![6]),
        ];
        let q = 2;
        let full: Vec<Pos> = vec![
            Pos::Embd {
                key: k,
                chunk: 0,
                row: 0
            };
            3 + q + 2 + 2 * q + 1
        ];
        let (tail, needed) = tail_segments(&segs, &full, 0, q);
        assert_eq!(tail, segs);
        assert_eq!(needed, vec![0, 1]);
        // from inside the second text run: image 0 is not needed, image 1 becomes slot 0
        let (tail, needed) = tail_segments(&segs, &full, 3 + q + 1, q);
        assert_eq!(
            tail,
            vec![
                Segment::Tokens(vec![5]),
                Segment::Chunk { image: 0, chunk: 0 },
                Segment::Chunk { image: 0, chunk: 1 },
                Segment::Tokens(vec![6]),
            ]
        );
        assert_eq!(needed, vec![1]);
        let (tail, needed) = tail_segments(&segs, &full, full.len() - 1, q);
        assert_eq!(tail, vec![Segment::Tokens(vec![6])]);
        assert!(needed.is_empty());
    }
}
