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
//!
//! A server hands each request's whole conversation to [`ChatSession::answer`] instead: the
//! same comparison then reuses the KV prefix a request shares with the one before it (the
//! system message and template, or the whole earlier conversation when it is continued), and
//! the embedding cache serves images seen in any earlier request.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::decode::generate::{generate_until, tokens_per_sec, Generated, StopReason};
use crate::decode::prefill;
use crate::encode::cache::{
    embd_key, image_digest, CacheConfig, CacheStats, EmbdCacheError, EmbdKey, EmbeddingCache,
    Expected, ProjectorId,
};
use crate::encode::{self, ImageEmbeddings, NativeError};
use crate::ffi::mtmd::default_marker;
use crate::ffi::{ClipError, ClipProjector, Context, DecodeError, Model, Sampler, Token};
use crate::model::family::Version;
use crate::model::inputs::{PairFacts, ProjectorFacts};
use crate::prompt::sequence::{self, LayoutTokens, Segment};
use crate::prompt::template::{self, Message, Role, ThinkingPrompt};
use crate::session::options::{Generation, SessionOptions, DEFAULT_MAX_SLICES};
use crate::session::run::{history_message, Event, HistoryMessage, RunError, Split};
use crate::session::Pair;
use crate::vision::video::{OpenedVideo, VideoError, VideoRequest};
use crate::vision::{
    decode_image, load_image, ImageError, ImageFormat, LoadedImage, SliceError, SlicePlan,
};

/// One line a user types in a chat (`minicpmv chat`), parsed: a message, or a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatLine<'a> {
    /// Only white space.
    Empty,
    /// A message to the model (the line, trimmed).
    Ask(&'a str),
    /// `/image PATH`: attach an image to the next message (quotes around the path are
    /// removed; an empty path is a usage error for the caller).
    Image(&'a str),
    /// `/video PATH`: attach a video to the next message (quotes removed as for `/image`).
    Video(&'a str),
    /// `/reset`: forget the conversation.
    Reset,
    /// `/quit` or `/exit`.
    Quit,
    /// `/help`.
    Help,
    /// `/NAME` of no known command.
    Unknown(&'a str),
}

impl<'a> ChatLine<'a> {
    /// Parses one line (pure; any text is a message unless it starts with `/`).
    pub fn parse(line: &'a str) -> ChatLine<'a> {
        let line = line.trim();
        if line.is_empty() {
            return ChatLine::Empty;
        }
        let Some(cmd) = line.strip_prefix('/') else {
            return ChatLine::Ask(line);
        };
        let (name, rest) = cmd.split_once(char::is_whitespace).unwrap_or((cmd, ""));
        let rest = rest.trim();
        match name {
            "image" | "video" => {
                let unquoted = ['"', '\'']
                    .iter()
                    .find_map(|q| rest.strip_prefix(*q).and_then(|r| r.strip_suffix(*q)))
                    .unwrap_or(rest);
                if name == "image" {
                    ChatLine::Image(unquoted)
                } else {
                    ChatLine::Video(unquoted)
                }
            }
            "reset" => ChatLine::Reset,
            "quit" | "exit" => ChatLine::Quit,
            "help" => ChatLine::Help,
            _ => ChatLine::Unknown(name),
        }
    }
}

/// The settings of one conversation (the loading and running settings are the session's
/// [`SessionOptions`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ChatConfig {
    /// Length and sampling of each answer; a new sampler is made each turn.
    pub generation: Generation,
    /// Slices per image at most (1..=9), for every image of the conversation.
    pub max_slices: u32,
    /// A system message at the start of the conversation (the template's default otherwise).
    pub system: Option<String>,
    /// Where and how much the image embedding cache keeps (memory and disk).
    pub cache: CacheConfig,
    /// Whether a thinking model reasons before each answer; `None`: the model's default.
    /// The history keeps the answers only.
    pub thinking: Option<bool>,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            generation: Generation::default(),
            max_slices: DEFAULT_MAX_SLICES,
            system: None,
            cache: CacheConfig::default(),
            thinking: None,
        }
    }
}

impl ChatConfig {
    /// Thinking on or off for a thinking model; `None`: the model's default.
    pub fn thinking(mut self, thinking: Option<bool>) -> Self {
        self.thinking = thinking;
        self
    }

    /// Length and sampling of each answer.
    pub fn generation(mut self, generation: Generation) -> Self {
        self.generation = generation;
        self
    }

    /// Slices per image at most.
    pub fn max_slices(mut self, n: u32) -> Self {
        self.max_slices = n;
        self
    }

    /// A system message at the start of the conversation.
    pub fn system(mut self, system: impl Into<String>) -> Self {
        self.system = Some(system.into());
        self
    }

    /// Where and how much the image embedding cache keeps.
    pub fn cache(mut self, cache: CacheConfig) -> Self {
        self.cache = cache;
        self
    }
}

/// Why a chat operation failed. A failed turn leaves the conversation as it was before it
/// (the attached images stay attached).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChatError {
    /// Thinking was asked for a model that cannot, or switched off where it cannot be.
    #[error(transparent)]
    Thinking(#[from] crate::prompt::template::ThinkingError),
    /// An attached image could not be read or decoded, or exceeds
    /// [`SessionOptions::max_image_pixels`] (when attached, or when reloaded for re-encoding).
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
    /// The whole conversation with the new question, plus one position for the answer's
    /// first token, does not fit in [`SessionOptions::n_ctx`]; the turn is not started.
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
    /// A video could not be opened, sampled or decoded.
    #[error(transparent)]
    Video(#[from] VideoError),
    /// A video and images, or two videos, for one message.
    #[error("a message takes a video alone: not with images or another video")]
    VideoWithImages,
    /// The video's file changed since it was attached, and its frames had to be decoded again.
    #[error("video {} changed on disk since it was attached to the conversation", path.display())]
    VideoChanged {
        /// The video.
        path: PathBuf,
    },
    /// The turn was cancelled (`cancel()` returned true) while a video's frames were encoded.
    #[error("cancelled while the video's frames were encoded")]
    Cancelled,
    /// [`ChatSession::ask`] with an empty text and no attached image, or
    /// [`ChatSession::answer`] with no message.
    #[error("an empty message and no image: nothing to ask")]
    Nothing,
    /// [`ChatSession::answer`] with a slice cap outside 1..=9.
    #[error("max_slices is {0}; it must be 1 to 9")]
    MaxSlices(u32),
    /// [`ChatSession::answer`] with a conversation whose last message is not the user's.
    #[error(
        "the last message is the {role}'s; a conversation to answer must end with a user message"
    )]
    LastNotUser {
        /// The last message's role.
        role: &'static str,
    },
    /// llama.cpp returned no sampler chain for [`Generation::sampling`].
    #[error("could not create the sampler")]
    Sampler,
    /// A sampling setting of [`ChatConfig::generation`] is out of range; found when the chat
    /// starts.
    #[error(transparent)]
    Sampling(#[from] crate::ffi::SamplingError),
}

/// Where an image of the conversation is read again when its embeddings must be computed
/// again and its pixels are gone.
#[derive(Debug, Clone)]
enum ImageSource {
    /// A file ([`ChatSession::attach_image`]).
    File,
    /// Encoded bytes held in memory ([`ChatSession::answer`]).
    Bytes(Arc<[u8]>),
    /// Frame `index` (into the video's frames) of a video ([`ChatSession::attach_video`]).
    Frame {
        /// The video, shared by its frames.
        video: Arc<ChatVideo>,
        /// The frame's index in the video.
        index: usize,
    },
}

/// A video of the conversation: where its frames come from, and the digest of its content
/// taken when it was attached (frame cache keys derive from it).
#[derive(Debug)]
struct ChatVideo {
    opened: OpenedVideo,
    digest: [u8; 32],
    /// The format its frames are encoded in (the video's own slice cap).
    format: ImageFormat,
}

/// The identity of frame `index` of a video whose content has SHA-256 `video`: what a frame's
/// cache key is made of instead of its pixels (which are not decoded until needed).
fn frame_digest(video: &[u8; 32], index: usize) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"minicpmv video frame");
    h.update(video);
    h.update((index as u64).to_le_bytes());
    h.finalize().into()
}

/// An image of the conversation.
#[derive(Debug, Clone)]
struct ChatImage {
    /// The file, or the name of an image given as bytes (for messages).
    path: PathBuf,
    source: ImageSource,
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
    /// For a message about a video (its images are the frames): the text between frames.
    video_separator: Option<String>,
}

impl ChatMessage {
    fn as_history(&self) -> HistoryMessage {
        HistoryMessage {
            role: self.role,
            text: self.text.clone(),
            images: self.images.iter().map(|i| i.path.clone()).collect(),
        }
    }
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
    /// A thinking model's reasoning, as streamed in [`Event::Thinking`] (not kept in the
    /// history); `None` when the model did not think.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
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

/// An image given as its encoded bytes (PNG, JPEG, ...), e.g. an upload.
#[derive(Debug, Clone)]
pub struct ImageBytes {
    /// What errors call it: a request field such as `messages[0].content[1]`.
    pub name: String,
    /// The encoded image.
    pub bytes: Arc<[u8]>,
}

/// One message of a whole conversation given to [`ChatSession::answer`].
#[derive(Debug, Clone)]
pub struct ConversationMessage {
    /// Who said it.
    pub role: Role,
    /// What was said (image markers are placed as for [`ChatSession::ask`]).
    pub text: String,
    /// Images attached to it; only user messages may have images.
    pub images: Vec<ImageBytes>,
    /// A video attached to it instead of images (a user message only): its frames go before
    /// the text as [`ChatSession::attach_video`] places them.
    pub video: Option<VideoRequest>,
}

/// The settings of one [`ChatSession::answer`]: they replace the chat's own for that answer
/// and the ones after it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct AnswerSettings {
    /// Length and sampling of the answer.
    pub generation: Generation,
    /// Slices per image at most (1..=9), for every image of the conversation.
    pub max_slices: u32,
    /// Whether a thinking model reasons first; `None`: the model's default.
    pub thinking: Option<bool>,
}

impl AnswerSettings {
    /// The settings with `generation`, the default slice cap and the model's thinking default.
    pub fn new(generation: Generation) -> AnswerSettings {
        AnswerSettings {
            generation,
            max_slices: DEFAULT_MAX_SLICES,
            thinking: None,
        }
    }

    /// Slices per image at most.
    pub fn max_slices(mut self, n: u32) -> Self {
        self.max_slices = n;
        self
    }

    /// Thinking on or off for a thinking model; `None`: the model's default.
    pub fn thinking(mut self, thinking: Option<bool>) -> Self {
        self.thinking = thinking;
        self
    }
}

/// What decoding an image given as bytes found, kept so that the next request with the same
/// bytes needs no decode unless its embeddings must be computed.
#[derive(Debug, Clone, Copy)]
struct DecodedImage {
    digest: [u8; 32],
    width: u32,
    height: u32,
}

/// Images given as bytes remembered by [`ChatSession::answer`] (by the SHA-256 of their
/// bytes); the map is emptied when it reaches this size.
const MAX_DECODED_IMAGES: usize = 4096;

/// A conversation with a loaded model, made by [`crate::Session::chat`]. See the module docs.
pub struct ChatSession<'m> {
    model: &'m Model,
    options: SessionOptions,
    cfg: ChatConfig,
    /// The thinking mode of every turn, from [`ChatConfig::thinking`].
    thinking: ThinkingPrompt,
    version: Version,
    chat_template: Option<String>,
    layout: LayoutTokens,
    n_embd: usize,
    marker: String,
    ctx: Context<'m>,
    encoder: Encoder<'m>,
    history: Vec<ChatMessage>,
    pending: Vec<ChatImage>,
    /// The separator between frames when `pending` holds a video's frames.
    pending_video: Option<String>,
    /// What the KV cache holds, position by position.
    kv: Vec<Pos>,
    turn: usize,
    /// The projector's facts, to make the image format when the slice cap changes.
    projector_facts: ProjectorFacts,
    /// Images given as bytes, by the SHA-256 of their bytes ([`ChatSession::answer`]).
    decoded: HashMap<[u8; 32], DecodedImage>,
}

impl std::fmt::Debug for ChatSession<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatSession")
            .field("mmproj", &self.encoder.mmproj)
            .field("version", &self.version)
            .field("messages", &self.history.len())
            .field("pending_images", &self.pending.len())
            .field("kv_positions", &self.kv.len())
            .field("cache", &self.encoder.cache)
            .finish()
    }
}

/// The input of a turn: the whole conversation laid out, position by position.
struct TurnInput {
    segments: Vec<Segment>,
    positions: Vec<Pos>,
    /// Images of the conversation, this turn's included.
    n_images: usize,
}

impl<'m> ChatSession<'m> {
    /// Starts a conversation on `model`, whose pair was checked into `facts` (only
    /// [`crate::Session::chat`] makes one). The projector is loaded into `projector` when an
    /// image must first be encoded, and stays there for the session unless
    /// [`SessionOptions::low_mem`].
    pub(crate) fn new(
        model: &'m Model,
        projector: &'m mut Option<ClipProjector>,
        pair: &Pair,
        facts: &PairFacts,
        options: &SessionOptions,
        cfg: ChatConfig,
    ) -> Result<Self, ChatError> {
        cfg.generation.sampling.check()?;
        let thinking = template::thinking_prompt(facts.version, cfg.thinking)?;
        let info = &facts.projector;
        let layout = LayoutTokens::lookup(model)?;
        let encoder = Encoder {
            mmproj: pair.mmproj.clone(),
            projector,
            cache: EmbeddingCache::new(cfg.cache.clone())?,
            projector_id: ProjectorId::of_file(&pair.mmproj)?,
            format: ImageFormat::of_projector(info, cfg.max_slices),
            n_calls: 0,
        };
        let ctx = Context::new(model, options.context_params())?;
        Ok(ChatSession {
            model,
            options: options.clone(),
            version: facts.version,
            chat_template: facts.model.chat_template.clone(),
            layout,
            n_embd: model.n_embd(),
            marker: default_marker(),
            ctx,
            encoder,
            history: Vec::new(),
            pending: Vec::new(),
            pending_video: None,
            kv: Vec::new(),
            turn: 0,
            cfg,
            thinking,
            projector_facts: info.clone(),
            decoded: HashMap::new(),
        })
    }

    /// Attaches an image to the next question. The file is loaded and checked now.
    pub fn attach_image(&mut self, path: &Path) -> Result<(), ChatError> {
        if self.pending_video.is_some() {
            return Err(ChatError::VideoWithImages);
        }
        let img = load_image(path, self.options.max_image_pixels)?;
        let plan = self.plan_image(path, img.width, img.height)?;
        let digest = image_digest(&img);
        self.pending.push(ChatImage {
            path: path.to_path_buf(),
            source: ImageSource::File,
            digest,
            key: self.key_of(&digest),
            plan,
            pixels: Some(img),
        });
        Ok(())
    }

    /// Attaches a video to the next question: its header is read and its frames chosen now
    /// (the version's rule, or `req`'s settings); the frames are decoded when first encoded,
    /// one at a time. Their embeddings are cached by the video's content and the frame's
    /// index, so asking again about the same video needs no projector call. A message takes
    /// a video alone.
    pub fn attach_video(&mut self, req: &VideoRequest) -> Result<(), ChatError> {
        if !self.pending.is_empty() {
            return Err(ChatError::VideoWithImages);
        }
        let (frames, separator) = self.video_frames(req)?;
        self.pending = frames;
        self.pending_video = Some(separator);
        Ok(())
    }

    /// The frames of a video as images of the conversation, and the text between them.
    fn video_frames(&self, req: &VideoRequest) -> Result<(Vec<ChatImage>, String), ChatError> {
        let spec = crate::model::family::spec(self.version);
        let opened = req.open(&spec.video, self.options.max_image_pixels)?;
        let format = ImageFormat::of_projector(&self.projector_facts, opened.max_slices);
        let plan = format
            .plan(opened.width, opened.height)
            .and_then(|plan| plan.check_resizable().map(|()| plan))
            .map_err(|source| ChatError::Slice {
                path: req.path.clone(),
                source,
            })?;
        let digest = opened.source.content_digest()?;
        let separator = opened.separator.clone();
        let video = Arc::new(ChatVideo {
            opened,
            digest,
            format,
        });
        let frames = video
            .opened
            .sample
            .indices
            .iter()
            .map(|&index| {
                let frame_digest = frame_digest(&digest, index);
                ChatImage {
                    path: PathBuf::from(format!("{}#frame{index}", req.path.display())),
                    source: ImageSource::Frame {
                        video: Arc::clone(&video),
                        index,
                    },
                    digest: frame_digest,
                    key: embd_key(
                        &frame_digest,
                        &self.encoder.projector_id,
                        &video.format.slicing,
                    ),
                    plan: plan.clone(),
                    pixels: None,
                }
            })
            .collect();
        Ok((frames, separator))
    }

    /// The slice plan of an image of this size in the chat's format.
    fn plan_image(&self, path: &Path, width: u32, height: u32) -> Result<SlicePlan, ChatError> {
        self.encoder
            .format
            .plan(width, height)
            .and_then(|plan| plan.check_resizable().map(|()| plan))
            .map_err(|source| ChatError::Slice {
                path: path.to_path_buf(),
                source,
            })
    }

    /// The embedding-cache key of the image with these pixels, in the chat's format.
    fn key_of(&self, digest: &[u8; 32]) -> EmbdKey {
        embd_key(
            digest,
            &self.encoder.projector_id,
            &self.encoder.format.slicing,
        )
    }

    /// An image given as bytes, made ready for a turn: decoded only if these bytes were not
    /// seen before (their pixels are then kept for the turn's encode).
    fn image_from_bytes(&mut self, im: &ImageBytes) -> Result<ChatImage, ChatError> {
        use sha2::{Digest, Sha256};
        let name = PathBuf::from(&im.name);
        let id: [u8; 32] = Sha256::digest(&im.bytes).into();
        let (known, pixels) = match self.decoded.get(&id) {
            Some(&known) => (known, None),
            None => {
                let img = decode_image(&im.bytes, &name, self.options.max_image_pixels)?;
                let known = DecodedImage {
                    digest: image_digest(&img),
                    width: img.width,
                    height: img.height,
                };
                if self.decoded.len() >= MAX_DECODED_IMAGES {
                    self.decoded.clear();
                }
                self.decoded.insert(id, known);
                (known, Some(img))
            }
        };
        Ok(ChatImage {
            plan: self.plan_image(&name, known.width, known.height)?,
            key: self.key_of(&known.digest),
            path: name,
            source: ImageSource::Bytes(Arc::clone(&im.bytes)),
            digest: known.digest,
            pixels,
        })
    }

    /// The messages of a conversation given whole, their images made ready.
    fn messages_from(
        &mut self,
        conversation: &[ConversationMessage],
    ) -> Result<Vec<ChatMessage>, ChatError> {
        let mut out = Vec::with_capacity(conversation.len());
        for m in conversation {
            let images = m
                .images
                .iter()
                .map(|im| self.image_from_bytes(im))
                .collect::<Result<_, _>>()?;
            let (images, video_separator) = match &m.video {
                Some(req) if m.images.is_empty() => {
                    let (frames, sep) = self.video_frames(req)?;
                    (frames, Some(sep))
                }
                Some(_) => return Err(ChatError::VideoWithImages),
                None => (images, None),
            };
            out.push(ChatMessage {
                role: m.role,
                text: m.text.clone(),
                images,
                video_separator,
            });
        }
        Ok(out)
    }

    /// Images attached for the next question.
    pub fn pending_images(&self) -> Vec<PathBuf> {
        self.pending.iter().map(|i| i.path.clone()).collect()
    }

    /// Forgets the conversation, the attached images and the KV cache (the embedding cache
    /// stays).
    pub fn reset(&mut self) {
        self.pending_video = None;
        self.history.clear();
        self.pending.clear();
        self.ctx.clear_memory();
        self.kv.clear();
        self.turn = 0;
    }

    /// The conversation so far (without the configured system message), in the form
    /// [`crate::session::run::run_with_history`] takes.
    pub fn history(&self) -> Vec<HistoryMessage> {
        self.history.iter().map(ChatMessage::as_history).collect()
    }

    /// Positions currently in the KV cache.
    pub fn n_past(&self) -> usize {
        self.kv.len()
    }

    /// Lookups (memory hits, disk hits, misses), disk writes and evictions of the embedding
    /// cache since the session started.
    pub fn cache_stats(&self) -> CacheStats {
        self.encoder.cache.stats()
    }

    /// Projector calls since the session started.
    pub fn n_projector_calls(&self) -> usize {
        self.encoder.n_calls
    }

    /// The settings the conversation was started with.
    pub fn config(&self) -> &ChatConfig {
        &self.cfg
    }

    /// The session's loading and running settings.
    pub fn options(&self) -> &SessionOptions {
        &self.options
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
    ///
    /// A turn lays out the whole conversation, keeps the KV cache's common prefix with it
    /// ([`kv_reuse`]), gets the embeddings of the images behind that prefix (embedding cache,
    /// else the projector), prefills the rest, generates, and commits the turn to the history.
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
            video_separator: self.pending_video.clone(),
        };
        let input = self.lay_out(&user)?;
        let p0 = self.reuse_kv(&input.positions);
        let (tail, needed) = tail_segments(&input.segments, &input.positions, p0);

        let mut timings = TurnTimings::default();
        let calls_before = self.encoder.n_calls;
        let images: Vec<&ChatImage> = conversation_images(&self.history, &user).collect();
        let needed: Vec<&ChatImage> = needed.iter().map(|&i| images[i]).collect();
        let fetched = self.encoder.fetch(
            &needed,
            &self.options,
            self.n_embd,
            &mut timings,
            on_event,
            cancel,
        )?;

        let t_prefill = Instant::now();
        let n_past = self.prefill(&tail, &fetched.embeddings, p0)?;
        timings.prompt_secs = t_prefill.elapsed().as_secs_f64();
        self.kv = input.positions;
        debug_assert_eq!(n_past as usize, self.kv.len());

        let (gen, thinking) = self.generate(n_past, on_event, cancel)?;
        self.commit(user, &gen);

        let n_new = n_past as usize - p0;
        let total_secs = t_start.elapsed().as_secs_f64();
        timings.prompt_tokens_per_sec = tokens_per_sec(n_new, timings.prompt_secs);
        timings.time_to_first_token_secs = gen
            .first_token_at
            .map_or(total_secs, |t| t.duration_since(t_start).as_secs_f64());
        timings.generate_secs = gen.secs;
        timings.generate_tokens_per_sec = tokens_per_sec(gen.token_ids.len(), gen.secs);
        timings.total_secs = total_secs;
        Ok(TurnOutput {
            turn: self.turn,
            text: gen.text,
            thinking,
            token_ids: gen.token_ids,
            stop: gen.stop,
            n_projector_calls: self.encoder.n_calls - calls_before,
            n_reused_positions: p0,
            n_new_positions: n_new,
            n_prompt_positions: n_past as usize,
            n_images: input.n_images,
            cache_hits: fetched.hits,
            cache_misses: fetched.misses,
            timings,
        })
    }

    /// Answers the last message of a conversation given whole (a server request). The
    /// conversation replaces this chat's history and attached images, and `settings` its
    /// generation, slice cap and thinking mode; then the turn runs as in
    /// [`ChatSession::ask_until`]: the KV cache keeps what it shares with the new conversation
    /// and images come from the KV cache, the embedding cache or the projector. A system
    /// message configured in [`ChatConfig::system`] still comes first; a server leaves it unset
    /// and passes `system` messages in the conversation.
    pub fn answer(
        &mut self,
        conversation: &[ConversationMessage],
        settings: &AnswerSettings,
        on_event: &mut dyn FnMut(Event<'_>),
        cancel: &dyn Fn() -> bool,
    ) -> Result<TurnOutput, ChatError> {
        let (last, earlier) = conversation.split_last().ok_or(ChatError::Nothing)?;
        if last.role != Role::User {
            return Err(ChatError::LastNotUser {
                role: last.role.as_str(),
            });
        }
        if !(1..=DEFAULT_MAX_SLICES).contains(&settings.max_slices) {
            return Err(ChatError::MaxSlices(settings.max_slices));
        }
        settings.generation.sampling.check()?;
        self.thinking = template::thinking_prompt(self.version, settings.thinking)?;
        self.cfg.thinking = settings.thinking;
        self.cfg.generation = settings.generation;
        if settings.max_slices != self.cfg.max_slices {
            self.cfg.max_slices = settings.max_slices;
            self.encoder.format =
                ImageFormat::of_projector(&self.projector_facts, settings.max_slices);
        }
        let history = self.messages_from(earlier)?;
        let last = self.messages_from(std::slice::from_ref(last))?.remove(0);
        self.history = history;
        self.pending = last.images;
        self.pending_video = last.video_separator;
        self.turn = earlier.iter().filter(|m| m.role == Role::User).count();
        let out = self.ask_until(&last.text, on_event, cancel);
        // The pixels decoded for this turn are not kept: the bytes are, to decode again.
        self.pending.clear();
        self.pending_video = None;
        for im in self.history.iter_mut().flat_map(|m| &mut m.images) {
            im.pixels = None;
        }
        out
    }

    /// The whole conversation with `user` as its next message, formatted with the chat
    /// template and laid out; refused when it does not fit in the context.
    fn lay_out(&self, user: &ChatMessage) -> Result<TurnInput, ChatError> {
        let mut messages: Vec<Message> = Vec::with_capacity(self.history.len() + 2);
        if let Some(system) = &self.cfg.system {
            messages.push(Message {
                role: Role::System,
                content: system.clone(),
            });
        }
        for m in self.history.iter().chain(std::iter::once(user)) {
            messages.push(match &m.video_separator {
                Some(sep) => Message::user(
                    template::video_content(&m.text, m.images.len(), sep, &self.marker)
                        .map_err(RunError::VideoMarkers)?,
                ),
                None => history_message(self.version, &m.as_history(), &self.marker)?,
            });
        }
        let mut formatted =
            template::format_chat(self.version, self.chat_template.as_deref(), &messages, true);
        formatted.push_str(self.thinking.suffix);
        let images: Vec<&ChatImage> = conversation_images(&self.history, user).collect();
        let plans: Vec<&SlicePlan> = images.iter().map(|i| &i.plan).collect();
        let segments = sequence::build_sequence(
            self.model,
            &formatted,
            &self.marker,
            &plans,
            &self.encoder.format,
            &self.layout,
        );
        let positions = self.positions(&segments, &images);
        let n_image = positions
            .iter()
            .filter(|p| matches!(p, Pos::Embd { .. }))
            .count();
        if positions.len() >= self.options.n_ctx as usize {
            return Err(ChatError::ContextTooSmall {
                needed: positions.len() + 1,
                n_text: positions.len() - n_image,
                n_image,
                n_ctx: self.options.n_ctx,
            });
        }
        Ok(TurnInput {
            segments,
            positions,
            n_images: images.len(),
        })
    }

    /// Keeps what the KV cache shares with the turn's input ([`kv_reuse`]) and drops the
    /// rest; returns the first position to feed.
    fn reuse_kv(&mut self, positions: &[Pos]) -> usize {
        let mut p0 = kv_reuse(&self.kv, positions);
        if p0 < self.kv.len() {
            if !self.ctx.truncate_memory(p0 as i32) {
                self.ctx.clear_memory();
                p0 = 0;
            }
            self.kv.truncate(p0);
        }
        p0
    }

    /// Prefills `tail` from position `p0`; returns the positions then in the KV cache. A
    /// failure leaves the KV cache in an unknown state: it is cleared.
    fn prefill(
        &mut self,
        tail: &[Segment],
        embeddings: &[Arc<ImageEmbeddings>],
        p0: usize,
    ) -> Result<i32, ChatError> {
        let emb_refs: Vec<&ImageEmbeddings> = embeddings.iter().map(|e| &**e).collect();
        let prefilled = prefill::prefill(
            &mut self.ctx,
            tail,
            &emb_refs,
            self.n_embd,
            self.options.effective_batch() as usize,
            p0 as i32,
        );
        match prefilled {
            Ok(p) => Ok(p.n_past),
            Err(e) => {
                self.forget_kv();
                Err(e.into())
            }
        }
    }

    /// Generates the answer after `n_past` prefilled positions, and records the generated
    /// tokens that reached the KV cache. The text of the result is the answer; a thinking
    /// model's reasoning comes apart.
    fn generate(
        &mut self,
        n_past: i32,
        on_event: &mut dyn FnMut(Event<'_>),
        cancel: &dyn Fn() -> bool,
    ) -> Result<(Generated, Option<String>), ChatError> {
        let g = &self.cfg.generation;
        let mut sampler =
            Sampler::new(&g.sampling, self.model.n_vocab()).ok_or(ChatError::Sampler)?;
        let mut split = Split::new(self.thinking);
        let mut on_text = |s: &str| split.push(s, &mut *on_event);
        let gen = generate_until(
            self.model,
            &mut self.ctx,
            &mut sampler,
            n_past,
            g.n_predict,
            g.ignore_eos,
            &mut on_text,
            cancel,
        );
        let mut gen = match gen {
            Ok(g) => g,
            Err(e) => {
                self.forget_kv();
                return Err(e.into());
            }
        };
        let (answer, thinking) = split.finish(on_event);
        gen.text = answer;
        let n_fed = usize::try_from(gen.n_past - n_past)
            .unwrap_or(0)
            .min(gen.token_ids.len());
        self.kv
            .extend(gen.token_ids[..n_fed].iter().map(|&t| Pos::Token(t)));
        Ok((gen, thinking))
    }

    /// Adds the question and its answer to the history; the attached images' pixels are
    /// dropped (they are reloaded from their files if ever needed again).
    fn commit(&mut self, mut user: ChatMessage, gen: &Generated) {
        for im in &mut user.images {
            im.pixels = None;
        }
        self.pending.clear();
        self.pending_video = None;
        self.history.push(user);
        self.history.push(ChatMessage {
            role: Role::Assistant,
            text: gen.text.clone(),
            images: Vec::new(),
            video_separator: None,
        });
        self.turn += 1;
    }

    fn forget_kv(&mut self) {
        self.ctx.clear_memory();
        self.kv.clear();
    }

    /// The sequence, position by position.
    fn positions(&self, segments: &[Segment], images: &[&ChatImage]) -> Vec<Pos> {
        let mut out = Vec::new();
        for seg in segments {
            match seg {
                Segment::Tokens(t) => out.extend(t.iter().map(|&t| Pos::Token(t))),
                Segment::Chunk {
                    image,
                    chunk,
                    n_tokens,
                } => {
                    let key = images[*image].key;
                    out.extend((0..*n_tokens as u32).map(|row| Pos::Embd {
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

/// Every image of the conversation in order, `user`'s (the next message) last.
fn conversation_images<'a>(
    history: &'a [ChatMessage],
    user: &'a ChatMessage,
) -> impl Iterator<Item = &'a ChatImage> {
    history
        .iter()
        .chain(std::iter::once(user))
        .flat_map(|m| &m.images)
}

/// The projector (loaded when first needed), the embedding cache in front of it, and the
/// settings that make an image's cache key.
struct Encoder<'m> {
    mmproj: PathBuf,
    /// The session's projector slot: shared with [`crate::Session::run`].
    projector: &'m mut Option<ClipProjector>,
    cache: EmbeddingCache,
    projector_id: ProjectorId,
    format: ImageFormat,
    /// Projector calls since the chat started.
    n_calls: usize,
}

/// The embeddings of a turn's images, and where they came from.
struct Fetched {
    embeddings: Vec<Arc<ImageEmbeddings>>,
    hits: usize,
    misses: usize,
}

impl Encoder<'_> {
    /// The embeddings of `images`, in order: from the cache, else encoded (and cached). The
    /// projector is loaded on the first miss, and freed again after the turn's encodes with
    /// [`SessionOptions::low_mem`].
    fn fetch(
        &mut self,
        images: &[&ChatImage],
        options: &SessionOptions,
        n_embd: usize,
        timings: &mut TurnTimings,
        on_event: &mut dyn FnMut(Event<'_>),
        cancel: &dyn Fn() -> bool,
    ) -> Result<Fetched, ChatError> {
        let mut found: Vec<Option<Arc<ImageEmbeddings>>> = Vec::with_capacity(images.len());
        for im in images {
            let expect = Expected {
                plan: &im.plan,
                n_embd,
                chunk_lens: self
                    .format
                    .plan_tokens(&im.plan)
                    .into_iter()
                    .map(|n| n * n_embd)
                    .collect(),
            };
            found.push(self.cache.get(&im.key, &expect));
        }
        let misses: Vec<usize> = (0..images.len()).filter(|&i| found[i].is_none()).collect();
        let hits = images.len() - misses.len();
        if !misses.is_empty() {
            let total = misses.iter().map(|&i| images[i].plan.n_chunks()).sum();
            let projector = match &mut *self.projector {
                Some(p) => p,
                none => {
                    let t = Instant::now();
                    let p = none.insert(ClipProjector::load(
                        &self.mmproj,
                        options.warmup,
                        options.projector_attention,
                    )?);
                    timings.projector_load_secs = t.elapsed().as_secs_f64();
                    p
                }
            };
            on_event(Event::EncodeStart { total });
            let mut done = 0usize;
            let mut record = |emb: &ImageEmbeddings, on_event: &mut dyn FnMut(Event<'_>)| {
                for &secs in &emb.encode_secs {
                    done += 1;
                    timings.chunk_encode_secs.push(secs);
                    on_event(Event::ChunkEncoded { done, total, secs });
                }
            };
            let mut k = 0;
            while k < misses.len() {
                let im = images[misses[k]];
                if let ImageSource::Frame { video, .. } = &im.source {
                    // This video's frames among the misses, from here on: decoded in one pass.
                    let run = misses[k..]
                        .iter()
                        .take_while(|&&i| {
                            matches!(&images[i].source, ImageSource::Frame { video: v, .. } if Arc::ptr_eq(v, video))
                        })
                        .count();
                    let group: Vec<&ChatImage> =
                        misses[k..k + run].iter().map(|&i| images[i]).collect();
                    let before = projector.n_encode_calls();
                    on_event(Event::VideoStart { frames: run });
                    let mut frame_done = |emb: &ImageEmbeddings, f: usize| {
                        record(emb, on_event);
                        on_event(Event::FrameEncoded {
                            done: f,
                            total: run,
                        });
                    };
                    let result =
                        encode_frames(projector, video, &group, options, &mut frame_done, cancel);
                    self.n_calls += projector.n_encode_calls() - before;
                    for (&i, emb) in misses[k..k + run].iter().zip(result?) {
                        self.cache.insert(images[i].key, Arc::clone(&emb));
                        found[i] = Some(emb);
                    }
                    k += run;
                    continue;
                }
                let before = projector.n_encode_calls();
                let result = encode_chat_image(projector, im, options, &self.format);
                self.n_calls += projector.n_encode_calls() - before;
                let emb = Arc::new(result?);
                record(&emb, on_event);
                self.cache.insert(im.key, Arc::clone(&emb));
                found[misses[k]] = Some(emb);
                k += 1;
            }
            timings.image_encode_secs = timings.chunk_encode_secs.iter().sum();
            if options.low_mem {
                *self.projector = None;
                crate::ffi::trim_heap();
            }
        }
        Ok(Fetched {
            embeddings: found.into_iter().flatten().collect(),
            hits,
            misses: misses.len(),
        })
    }
}

/// Encodes `frames` (frames of `video`, ascending) in one decoding pass, each frame dropped
/// once encoded; `done(embeddings, n)` is told of the n-th. The video's content is checked
/// against the digest taken when it was attached.
fn encode_frames(
    projector: &mut ClipProjector,
    video: &ChatVideo,
    frames: &[&ChatImage],
    options: &SessionOptions,
    done: &mut dyn FnMut(&ImageEmbeddings, usize),
    cancel: &dyn Fn() -> bool,
) -> Result<Vec<Arc<ImageEmbeddings>>, ChatError> {
    let source = &video.opened.source;
    if source.content_digest()? != video.digest {
        return Err(ChatError::VideoChanged {
            path: source.path().to_path_buf(),
        });
    }
    let indices: Vec<usize> = frames
        .iter()
        .filter_map(|f| match f.source {
            ImageSource::Frame { index, .. } => Some(index),
            _ => None,
        })
        .collect();
    let mut out = Vec::with_capacity(indices.len());
    for img in source.frames(&indices)? {
        // A request whose client has gone stops between frames (a video can be minutes of
        // projector work); the frames encoded so far are not cached.
        if cancel() {
            return Err(ChatError::Cancelled);
        }
        let img = img?;
        let emb = encode::encode_image(
            projector,
            &img,
            &video.format,
            options.n_threads,
            &mut |_, _| {},
        )?;
        drop(img);
        done(&emb, out.len() + 1);
        out.push(Arc::new(emb));
    }
    if out.len() != indices.len() {
        return Err(VideoError::Decode {
            path: source.path().to_path_buf(),
            index: out.len(),
            reason: format!("the video gave {} of {} frames", out.len(), indices.len()),
        }
        .into());
    }
    Ok(out)
}

/// Encodes one image of the conversation: its pixels if still held, else the file reloaded
/// and checked against the digest taken when it was attached.
fn encode_chat_image(
    projector: &mut ClipProjector,
    im: &ChatImage,
    options: &SessionOptions,
    format: &ImageFormat,
) -> Result<ImageEmbeddings, ChatError> {
    let reloaded;
    let pixels = match &im.pixels {
        Some(p) => p,
        None => {
            reloaded = match &im.source {
                ImageSource::File => load_image(&im.path, options.max_image_pixels)?,
                ImageSource::Bytes(b) => decode_image(b, &im.path, options.max_image_pixels)?,
                // Frames go through encode_frames, in one pass over their video.
                ImageSource::Frame { video, .. } => {
                    return Err(ChatError::VideoChanged {
                        path: video.opened.source.path().to_path_buf(),
                    })
                }
            };
            if image_digest(&reloaded) != im.digest {
                return Err(ChatError::ImageChanged {
                    path: im.path.clone(),
                });
            }
            &reloaded
        }
    };
    Ok(encode::encode_image(
        projector,
        pixels,
        format,
        options.n_threads,
        &mut |_, _| {},
    )?)
}

/// The part of `segments` from position `p0` on (never inside a chunk), with image indices
/// renumbered into the returned list of the images it needs (conversation indices, in order).
fn tail_segments(segments: &[Segment], full: &[Pos], p0: usize) -> (Vec<Segment>, Vec<usize>) {
    let mut tail = Vec::new();
    let mut needed: Vec<usize> = Vec::new();
    let mut pos = 0usize;
    for seg in segments {
        let end = pos + seg.n_positions();
        if end > p0 {
            match seg {
                Segment::Tokens(t) => {
                    tail.push(Segment::Tokens(t[p0.saturating_sub(pos)..].to_vec()))
                }
                Segment::Chunk {
                    image,
                    chunk,
                    n_tokens,
                } => {
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
                        n_tokens: *n_tokens,
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
    fn lines_are_messages_or_commands() {
        assert_eq!(ChatLine::parse("  \n"), ChatLine::Empty);
        assert_eq!(
            ChatLine::parse("What is it?\n"),
            ChatLine::Ask("What is it?")
        );
        assert_eq!(
            ChatLine::parse("/image a b.png\n"),
            ChatLine::Image("a b.png")
        );
        assert_eq!(
            ChatLine::parse("/image \"x.png\""),
            ChatLine::Image("x.png")
        );
        assert_eq!(ChatLine::parse("/image"), ChatLine::Image(""));
        assert_eq!(ChatLine::parse("/reset"), ChatLine::Reset);
        assert_eq!(ChatLine::parse("/quit"), ChatLine::Quit);
        assert_eq!(ChatLine::parse("/exit"), ChatLine::Quit);
        assert_eq!(ChatLine::parse("/help"), ChatLine::Help);
        assert_eq!(
            ChatLine::parse("/frobnicate 3"),
            ChatLine::Unknown("frobnicate")
        );
        assert_eq!(ChatLine::parse("/ 3"), ChatLine::Unknown(""));
        assert_eq!(ChatLine::parse("/image \""), ChatLine::Image("\""));
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
        let q = 2;
        let chunk = |image, chunk| Segment::Chunk {
            image,
            chunk,
            n_tokens: q,
        };
        let segs = vec![
            Segment::Tokens(vec![1, 2, 3]),
            chunk(0, 0),
            Segment::Tokens(vec![4, 5]),
            chunk(1, 0),
            chunk(1, 1),
            Segment::Tokens(vec![6]),
        ];
        let full: Vec<Pos> = vec![
            Pos::Embd {
                key: k,
                chunk: 0,
                row: 0
            };
            3 + q + 2 + 2 * q + 1
        ];
        let (tail, needed) = tail_segments(&segs, &full, 0);
        assert_eq!(tail, segs);
        assert_eq!(needed, vec![0, 1]);
        // from inside the second text run: image 0 is not needed, image 1 becomes slot 0
        let (tail, needed) = tail_segments(&segs, &full, 3 + q + 1);
        assert_eq!(
            tail,
            vec![
                Segment::Tokens(vec![5]),
                chunk(0, 0),
                chunk(0, 1),
                Segment::Tokens(vec![6]),
            ]
        );
        assert_eq!(needed, vec![1]);
        let (tail, needed) = tail_segments(&segs, &full, full.len() - 1);
        assert_eq!(tail, vec![Segment::Tokens(vec![6])]);
        assert!(needed.is_empty());
    }
}
