//! What to do about an error, in terms of this program's flags. The library's errors state the
//! facts (with their values as fields); this is the one place that knows which flag changes
//! them. `main` prints the hint after the error, on the same line
//! (one error, one line).
//!
//! A `#[error(transparent)]` wrapper hides the wrapped error from the source chain (its
//! `source()` is the inner error's source), so each wrapper is looked into by hand.

use minicpmv::ffi::SamplingError;
use minicpmv::model::inputs::InputError;
use minicpmv::plan::memory::PlanError;
use minicpmv::session::chat::ChatError;
use minicpmv::session::options::SettingsError;
use minicpmv::session::run::RunError;
use minicpmv::tools::quality::QualityError;
use minicpmv::vision::{ImageError, SliceError};
use minicpmv_quantize::QuantizeError;

/// The error chain, then `: HINT` when there is one.
pub fn with_hint(err: &anyhow::Error) -> String {
    let message = crate::output::error_chain(err);
    match hint(err) {
        Some(h) => format!("{message}: {h}"),
        None => message,
    }
}

/// The hint for the first error in `err`'s chain that has one.
pub fn hint(err: &anyhow::Error) -> Option<String> {
    err.chain().find_map(|cause| {
        if let Some(e) = cause.downcast_ref::<InputError>() {
            input(e)
        } else if let Some(e) = cause.downcast_ref::<RunError>() {
            run(e)
        } else if let Some(e) = cause.downcast_ref::<ChatError>() {
            chat(e)
        } else if let Some(e) = cause.downcast_ref::<QualityError>() {
            quality(e)
        } else if let Some(e) = cause.downcast_ref::<ImageError>() {
            image(e)
        } else if let Some(e) = cause.downcast_ref::<PlanError>() {
            plan(e)
        } else if let Some(e) = cause.downcast_ref::<QuantizeError>() {
            quantize(e)
        } else if let Some(e) = cause.downcast_ref::<SliceError>() {
            slice(e)
        } else if let Some(e) = cause.downcast_ref::<SamplingError>() {
            sampling(e)
        } else if let Some(e) = cause.downcast_ref::<SettingsError>() {
            settings(e)
        } else {
            None
        }
    })
}

fn input(e: &InputError) -> Option<String> {
    Some(match e {
        InputError::ModelFile(_) => "the language model is the file given with -m".into(),
        InputError::ProjectorFile(_) => "the projector is the file given with --mmproj".into(),
        InputError::ProjectorAsModel { .. } => {
            "pass it with --mmproj, and the language model with -m".into()
        }
        InputError::ModelAsProjector { .. } => {
            "pass it with -m, and the mmproj file with --mmproj".into()
        }
        _ => return None,
    })
}

fn run(e: &RunError) -> Option<String> {
    Some(match e {
        RunError::Input(e) => return input(e),
        RunError::Image(e) => return image(e),
        RunError::ContextTooSmall { .. } => {
            "raise -c, lower --max-slices or use a smaller image".into()
        }
        RunError::LowMemNeedsNative => {
            "--low-mem needs the native pipeline: drop --pipeline llama.cpp".into()
        }
        RunError::MaxSlicesNeedsNative(n) => {
            format!("--max-slices {n} needs the native pipeline: drop --pipeline llama.cpp")
        }
        RunError::Slice { source, .. } => return slice(source),
        RunError::Settings(e) => return settings(e),
        RunError::Sampling(e) => return sampling(e),
        _ => return None,
    })
}

fn chat(e: &ChatError) -> Option<String> {
    match e {
        ChatError::Image(e) => image(e),
        ChatError::Format(e) => run(e),
        ChatError::ContextTooSmall { .. } => {
            Some("/reset, raise -c, lower --max-slices or use smaller images".into())
        }
        ChatError::Slice { source, .. } => slice(source),
        ChatError::Sampling(e) => sampling(e),
        _ => None,
    }
}

fn plan(e: &PlanError) -> Option<String> {
    match e {
        PlanError::Input(e) => input(e),
        PlanError::Settings(e) => settings(e),
        PlanError::Image(e) => image(e),
        _ => None,
    }
}

fn quality(e: &QualityError) -> Option<String> {
    match e {
        QualityError::ContextTooSmall { .. } => Some("raise -c, lower -n or --max-slices".into()),
        _ => None,
    }
}

fn image(e: &ImageError) -> Option<String> {
    match e {
        ImageError::TooLarge { .. } => Some("raise the limit with --max-image-pixels".into()),
        _ => None,
    }
}

fn settings(e: &SettingsError) -> Option<String> {
    match e {
        SettingsError::ContextTooLong { n_ctx_train, .. } => {
            Some(format!("set -c to {n_ctx_train} or less"))
        }
        SettingsError::ContextTooShort { .. } => Some("raise -c".into()),
        SettingsError::Threads { .. } => Some("set -t".into()),
        SettingsError::Batch => Some("set -b".into()),
        _ => None,
    }
}

fn slice(e: &SliceError) -> Option<String> {
    match e {
        SliceError::AspectRatio { .. } => {
            Some("crop it closer to square, or use --max-slices 1 (the overview only)".into())
        }
        _ => None,
    }
}

fn sampling(e: &SamplingError) -> Option<String> {
    let flag = match e.field {
        "temperature" => "--temp",
        "top_k" => "--top-k",
        "top_p" => "--top-p",
        "min_p" => "--min-p",
        "repeat_penalty" => "--repeat-penalty",
        _ => return None,
    };
    Some(format!("set with {flag}"))
}

fn quantize(e: &QuantizeError) -> Option<String> {
    match e {
        QuantizeError::OutputExists { .. } => Some("--force replaces it".into()),
        QuantizeError::Requantize { .. } => Some("--allow-requantize allows it".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn a_hint_is_found_through_the_context_chain() {
        let err = Err::<(), _>(RunError::MaxSlicesNeedsNative(2))
            .context("cannot run")
            .unwrap_err();
        assert_eq!(
            hint(&err).as_deref(),
            Some("--max-slices 2 needs the native pipeline: drop --pipeline llama.cpp")
        );
    }

    #[test]
    fn transparent_wrappers_are_looked_into() {
        let path = std::path::PathBuf::from("m.gguf");
        let err = anyhow::Error::from(RunError::Input(InputError::ProjectorAsModel { path }));
        assert_eq!(
            hint(&err).as_deref(),
            Some("pass it with --mmproj, and the language model with -m")
        );
    }

    #[test]
    fn errors_without_a_flag_to_change_get_none() {
        assert_eq!(hint(&anyhow::Error::from(RunError::Nothing)), None);
        assert_eq!(hint(&anyhow::anyhow!("plain")), None);
    }
}
