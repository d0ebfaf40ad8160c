//! What the two APIs share once their JSON is read: the body read within limits, sampling
//! settings checked field by field, images fetched from data URIs, base64, `file://` under the
//! media folder or (when allowed) http(s), and the request handed to the engine.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, HttpBody as _};
use axum::http::StatusCode;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use minicpmv::ffi::SamplerParams;
use minicpmv::session::chat::{AnswerSettings, ConversationMessage, ImageBytes};
use minicpmv::Generation;

use crate::engine::{Answer, Job, Update};
use crate::error::{ApiError, Flavor};
use crate::{AppState, ServerConfig};

/// Reads a request body of at most `--max-body-mb` within `--body-timeout` (a client that
/// sends its body slowly is cut off, not waited for) and parses it as `T`; a wrong value is
/// a 400 naming its field (`messages[2].role: unknown variant ...`).
pub async fn read_json<T: DeserializeOwned>(
    body: Body,
    config: &ServerConfig,
    flavor: Flavor,
) -> Result<T, ApiError> {
    let limits = &config.limits;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is larger than {} bytes (--max-body-mb)",
                limits.max_body_bytes
            ),
        )
        .flavor(flavor)
    };
    // A body announced as too large is refused before a byte of it is read.
    if body.size_hint().lower() > limits.max_body_bytes as u64 {
        return Err(too_large());
    }
    let read = axum::body::to_bytes(body, limits.max_body_bytes);
    let bytes = match tokio::time::timeout(limits.body_timeout, read).await {
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s (--body-timeout)",
                    limits.body_timeout.as_secs_f64()
                ),
            )
            .flavor(flavor))
        }
        Ok(Err(_)) => return Err(too_large()),
        Ok(Ok(b)) => b,
    };
    if bytes.is_empty() {
        return Err(
            ApiError::bad("body", "the request body is empty; send a JSON object").flavor(flavor),
        );
    }
    // serde would take a struct from an array too; a request is an object.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        let shown = String::from_utf8_lossy(&bytes[..bytes.len().min(40)]).into_owned();
        return Err(ApiError::bad(
            "body",
            format!("the body must be a JSON object; it starts {shown:?}"),
        )
        .flavor(flavor));
    }
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // Not JSON at all: where the parser stopped is no field of the request. (serde_json
        // calls some wrong types, a number for an enum, syntax errors too: hence the check.)
        let not_json = || serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err();
        let (param, message) = match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof
                if not_json() =>
            {
                (
                    "body".to_string(),
                    format!("the body is not valid JSON: {inner}"),
                )
            }
            _ if path == "." => (
                "body".to_string(),
                format!("the body is not a valid request: {inner}"),
            ),
            _ => (path.clone(), format!("{path}: {inner}")),
        };
        ApiError::bad(param, message).flavor(flavor)
    })
}

/// The sampling and length settings of a request, as the API named them, before checks.
#[derive(Debug, Default, Clone)]
pub struct Knobs {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub min_p: Option<f64>,
    pub repeat_penalty: Option<f64>,
    pub repeat_last_n: Option<i64>,
    pub seed: Option<i64>,
    pub max_tokens: Option<i64>,
    pub max_slices: Option<i64>,
    pub ignore_eos: Option<bool>,
    pub think: Option<bool>,
}

/// How the API names the fields of [`Knobs`]: a prefix (`options.` for Ollama) and the name of
/// the length field.
#[derive(Debug, Clone, Copy)]
pub struct Names {
    pub prefix: &'static str,
    pub max_tokens: &'static str,
    pub flavor: Flavor,
}

fn in_range(
    names: Names,
    field: &str,
    value: Option<f64>,
    ok: impl Fn(f64) -> bool,
    expected: &str,
) -> Result<Option<f32>, ApiError> {
    match value {
        None => Ok(None),
        Some(v) if v.is_finite() && ok(v) => Ok(Some(v as f32)),
        Some(v) => Err(ApiError::bad(
            format!("{}{field}", names.prefix),
            format!("{}{field} is {v}; it must be {expected}", names.prefix),
        )
        .flavor(names.flavor)),
    }
}

impl Knobs {
    /// The answer settings: the server's defaults, with what the request set, each checked.
    pub fn settings(
        &self,
        config: &ServerConfig,
        names: Names,
    ) -> Result<AnswerSettings, ApiError> {
        let bad = |field: &str, msg: String| {
            ApiError::bad(format!("{}{field}", names.prefix), msg).flavor(names.flavor)
        };
        let d = &config.defaults;
        let mut s: SamplerParams = d.sampling;
        // The float settings: field, value given, valid range (as a test and in words), target.
        type Check = fn(f64) -> bool;
        let floats: [(&str, Option<f64>, Check, &str, &mut f32); 4] = [
            (
                "temperature",
                self.temperature,
                |v| v >= 0.0,
                "0 or more",
                &mut s.temperature,
            ),
            (
                "top_p",
                self.top_p,
                |v| (0.0..=1.0).contains(&v),
                "from 0 to 1",
                &mut s.top_p,
            ),
            (
                "min_p",
                self.min_p,
                |v| (0.0..=1.0).contains(&v),
                "from 0 to 1",
                &mut s.min_p,
            ),
            (
                "repeat_penalty",
                self.repeat_penalty,
                |v| v > 0.0,
                "above 0",
                &mut s.repeat_penalty,
            ),
        ];
        for (field, value, ok, expected, target) in floats {
            if let Some(v) = in_range(names, field, value, ok, expected)? {
                *target = v;
            }
        }
        if let Some(k) = self.top_k {
            s.top_k = i32::try_from(k).ok().filter(|k| *k >= 0).ok_or_else(|| {
                bad(
                    "top_k",
                    format!("{}top_k is {k}; it must be 0 (off) or more", names.prefix),
                )
            })?;
        }
        if let Some(n) = self.repeat_last_n {
            s.repeat_last_n = i32::try_from(n).ok().filter(|n| *n >= -1).ok_or_else(|| {
                bad(
                    "repeat_last_n",
                    format!(
                        "{}repeat_last_n is {n}; it must be -1 (the context), 0 (off) or more",
                        names.prefix
                    ),
                )
            })?;
        }
        if let Some(seed) = self.seed {
            // Any integer: -1 and other negative seeds (Ollama's "random") wrap into u32.
            s.seed = seed as u32;
        }
        let limit = config.limits.max_tokens;
        let n_predict = match self.max_tokens {
            None => d.n_predict.min(limit),
            Some(n) if n >= 1 && n as u64 <= limit as u64 => n as usize,
            Some(n) => {
                return Err(ApiError::bad(
                    format!("{}{}", names.prefix, names.max_tokens),
                    format!(
                        "{}{} is {n}; it must be 1 to {limit} (--max-tokens-limit)",
                        names.prefix, names.max_tokens
                    ),
                )
                .flavor(names.flavor))
            }
        };
        let max_slices = match self.max_slices {
            None => config.max_slices,
            Some(n @ 1..=9) => n as u32,
            Some(n) => {
                return Err(bad(
                    "max_slices",
                    format!("max_slices is {n}; it must be 1 to 9"),
                ))
            }
        };
        let generation = Generation::default()
            .max_tokens(n_predict)
            .ignore_eos(self.ignore_eos.unwrap_or(d.ignore_eos))
            .sampling(s);
        Ok(AnswerSettings::new(generation)
            .max_slices(max_slices)
            .thinking(self.think.or(config.thinking)))
    }
}

/// Where an image of a request comes from, by the form of its reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageRef<'a> {
    /// `data:[type][;base64],DATA`.
    DataUri { base64: bool, data: &'a str },
    /// `http://...` or `https://...`.
    Remote(&'a str),
    /// `file://PATH`.
    File(&'a str),
    /// Anything else: raw base64.
    Base64(&'a str),
}

impl<'a> ImageRef<'a> {
    /// Classifies a reference (pure).
    pub fn parse(s: &'a str) -> ImageRef<'a> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("data:") {
            let (meta, data) = rest.split_once(',').unwrap_or((rest, ""));
            return ImageRef::DataUri {
                base64: meta.split(';').any(|p| p.eq_ignore_ascii_case("base64")),
                data,
            };
        }
        let lower = s.get(..8).unwrap_or(s).to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            ImageRef::Remote(s)
        } else if let Some(path) = s.strip_prefix("file://") {
            ImageRef::File(path)
        } else {
            ImageRef::Base64(s)
        }
    }
}

/// Decodes base64 (standard or URL-safe alphabet, padding optional, line breaks ignored).
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    use base64::alphabet::{STANDARD, URL_SAFE};
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    let cfg = GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let clean: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    GeneralPurpose::new(&STANDARD, cfg)
        .decode(&clean)
        .or_else(|_| GeneralPurpose::new(&URL_SAFE, cfg).decode(&clean))
        .ok()
}

/// The bytes of the image `reference` given in request field `field`.
pub async fn image_bytes(
    reference: &str,
    field: &str,
    config: &ServerConfig,
    flavor: Flavor,
) -> Result<ImageBytes, ApiError> {
    let bad = |msg: String| ApiError::bad(field, msg).flavor(flavor);
    let bytes = match ImageRef::parse(reference) {
        ImageRef::DataUri { base64: true, data } | ImageRef::Base64(data) => decode_base64(data)
            .ok_or_else(|| {
                bad(format!(
                    "{field} is neither valid base64 nor a data:, http(s):// or file:// URL"
                ))
            })?,
        ImageRef::DataUri { base64: false, .. } => {
            return Err(bad(format!(
                "{field} is a data URI without ;base64; send the image base64-encoded"
            )))
        }
        ImageRef::Remote(url) => {
            if !config.allow_remote_images {
                return Err(bad(format!(
                    "{field} is a remote URL ({url}); the server fetches none unless started with --allow-remote-images. Send the image as a data URI or base64"
                )));
            }
            fetch_remote(url.to_string(), config.limits.max_body_bytes)
                .await
                .map_err(|e| bad(format!("{field}: cannot fetch {url}: {e}")))?
        }
        ImageRef::File(path) => {
            read_media_file(Path::new(path), config).map_err(|e| bad(format!("{field}: {e}")))?
        }
    };
    if bytes.is_empty() {
        return Err(bad(format!("{field} is an empty image")));
    }
    Ok(ImageBytes {
        name: field.to_string(),
        bytes: bytes.into(),
    })
}

/// A `file://` image: only inside `--media-dir` (after resolving links), and only a regular
/// file within the body size limit.
fn read_media_file(path: &Path, config: &ServerConfig) -> Result<Vec<u8>, String> {
    let Some(dir) = &config.media_dir else {
        return Err("file:// images are served only with --media-dir DIR".into());
    };
    let shown = path.display();
    let real = path
        .canonicalize()
        .map_err(|e| format!("cannot open {shown}: {e}"))?;
    if !real.starts_with(dir) {
        return Err(format!(
            "{shown} is outside the media folder {}",
            dir.display()
        ));
    }
    let meta = std::fs::metadata(&real).map_err(|e| format!("cannot open {shown}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    if meta.len() > config.limits.max_body_bytes as u64 {
        return Err(format!(
            "{shown} is {} bytes, above the {} allowed",
            meta.len(),
            config.limits.max_body_bytes
        ));
    }
    std::fs::read(&real).map_err(|e| format!("cannot read {shown}: {e}"))
}

/// Fetches a remote image (when allowed): at most `limit` bytes, 30 s.
async fn fetch_remote(url: String, limit: usize) -> Result<Vec<u8>, String> {
    let work = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(std::time::Duration::from_secs(30)))
            .build()
            .into();
        let resp = agent.get(&url).call().map_err(|e| e.to_string())?;
        resp.into_body()
            .with_config()
            .limit(limit as u64)
            .read_to_vec()
            .map_err(|e| e.to_string())
    });
    work.await.map_err(|e| e.to_string())?
}

/// Sets the cancel flag when dropped: held by a handler or its response stream, so a client
/// that goes away stops its answer.
#[derive(Debug)]
pub struct CancelGuard(Arc<AtomicBool>);

impl Drop for CancelGuard {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A request the engine accepted, with its first update.
#[derive(Debug)]
pub struct Started {
    /// The first update (text, reasoning or the end).
    pub first: Update,
    /// The rest.
    pub updates: mpsc::UnboundedReceiver<Update>,
    /// Cancels the answer when dropped.
    pub guard: CancelGuard,
}

/// Queues the request and waits for its first update; a request the engine refuses (a bad
/// image, too long for the context) is an error here, before any response is sent.
pub async fn start(
    app: &AppState,
    conversation: Vec<ConversationMessage>,
    settings: AnswerSettings,
    stop: Vec<String>,
    arrived: Instant,
    flavor: Flavor,
    videos: Vec<std::sync::Arc<crate::video::StoredVideo>>,
) -> Result<Started, ApiError> {
    let (tx, mut updates) = mpsc::unbounded_channel();
    let cancel = Arc::new(AtomicBool::new(false));
    let guard = CancelGuard(Arc::clone(&cancel));
    app.engine
        .submit(Job {
            conversation,
            settings,
            stop,
            updates: tx,
            cancel,
            arrived,
        })
        .map_err(|e| e.flavor(flavor))?;
    let first = updates.recv().await.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the engine stopped before answering",
        )
        .flavor(flavor)
    })?;
    // The videos' frames are all encoded before the first update: their files may go now.
    drop(videos);
    if let Update::Done(Err(e)) = first {
        return Err(e.flavor(flavor));
    }
    Ok(Started {
        first,
        updates,
        guard,
    })
}

/// The whole answer of a started request (non-streaming responses).
pub async fn collect(mut started: Started, flavor: Flavor) -> Result<Answer, ApiError> {
    let mut next = Some(started.first);
    loop {
        match next.take() {
            Some(Update::Done(Ok(answer))) => return Ok(*answer),
            Some(Update::Done(Err(e))) => return Err(e.flavor(flavor)),
            Some(_) => {}
            None => {
                return Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the engine stopped in the middle of the answer",
                )
                .flavor(flavor))
            }
        }
        next = started.updates.recv().await;
    }
}

/// Counts the images of a request against `--max-images`.
pub fn check_image_count(
    n: usize,
    config: &ServerConfig,
    field: &str,
    flavor: Flavor,
) -> Result<(), ApiError> {
    let max = config.limits.max_images;
    if n > max {
        return Err(ApiError::bad(
            field,
            format!(
                "the request has {n} images; at most {max} are allowed per request (--max-images)"
            ),
        )
        .flavor(flavor));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_are_told_apart_by_their_form() {
        assert_eq!(
            ImageRef::parse("data:image/png;base64,iVBO"),
            ImageRef::DataUri {
                base64: true,
                data: "iVBO"
            }
        );
        assert_eq!(
            ImageRef::parse("data:,hello"),
            ImageRef::DataUri {
                base64: false,
                data: "hello"
            }
        );
        assert_eq!(
            ImageRef::parse("HTTPS://x/y.png"),
            ImageRef::Remote("HTTPS://x/y.png")
        );
        assert_eq!(
            ImageRef::parse("file:///srv/a.png"),
            ImageRef::File("/srv/a.png")
        );
        assert_eq!(ImageRef::parse(" iVBORw0K "), ImageRef::Base64("iVBORw0K"));
    }

    #[test]
    fn base64_is_accepted_with_either_alphabet_and_any_padding() {
        assert_eq!(decode_base64("aGk=").unwrap(), b"hi");
        assert_eq!(decode_base64("aGk").unwrap(), b"hi");
        assert_eq!(decode_base64("aG\nk=").unwrap(), b"hi");
        assert_eq!(decode_base64("-_8").unwrap(), [0xfb, 0xff]);
        assert!(decode_base64("not base64!").is_none());
    }
}
