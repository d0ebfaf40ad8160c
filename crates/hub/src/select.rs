//! Choosing the pair from a listing: the language model for a quantization, and the projector.

use crate::{PullError, Repo, RepoFile};

/// The default language-model quantization.
pub const DEFAULT_QUANT: &str = "Q4_K_M";

/// The two files of a pair, chosen from a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairFiles {
    /// The language model.
    pub model: RepoFile,
    /// The projector (mmproj).
    pub mmproj: RepoFile,
}

fn is_gguf(f: &RepoFile) -> bool {
    f.path.to_ascii_lowercase().ends_with(".gguf")
}

/// A projector file: `mmproj*.gguf` as llama.cpp's converters name them, or a name with a
/// `vision` part, as OpenBMB's omni toolchain names MiniCPM-o 4.5's
/// (`MiniCPM-o-4_5-vision-F16.gguf`, its llama.cpp cookbook).
fn is_mmproj(f: &RepoFile) -> bool {
    let name = f.path.to_ascii_lowercase();
    is_gguf(f)
        && (name.starts_with("mmproj")
            || name
                .trim_end_matches(".gguf")
                .split(['-', '_', '.'])
                .any(|part| part == "mmproj" || part == "vision"))
}

/// The quant part of a language-model file name: what follows the last `-` or `.` before
/// `.gguf` (`ggml-model-Q4_K_M.gguf` -> `Q4_K_M`).
pub fn quant_of(file: &str) -> &str {
    let stem = file
        .get(..file.len().saturating_sub(5))
        .filter(|_| file.to_ascii_lowercase().ends_with(".gguf"))
        .unwrap_or(file);
    stem.rsplit(['-', '.']).next().unwrap_or(stem)
}

/// Chooses the language model for `quant` and the projector from a listing.
///
/// The language model is the `.gguf` whose name contains `quant` (case-insensitive) and is not
/// a projector; when several do, the one whose [`quant_of`] is `quant` exactly. The projector
/// is the `.gguf` named as one (`mmproj*`, or a `vision` part), the `f16` one when there are
/// several.
pub fn select(files: &[RepoFile], repo: &Repo, quant: &str) -> Result<PairFiles, PullError> {
    Ok(PairFiles {
        model: choose_model(files, repo, quant)?,
        mmproj: choose_mmproj(files, repo)?,
    })
}

fn choose_model(files: &[RepoFile], repo: &Repo, quant: &str) -> Result<RepoFile, PullError> {
    let models: Vec<&RepoFile> = files
        .iter()
        .filter(|f| is_gguf(f) && !is_mmproj(f))
        .collect();
    let q = quant.to_ascii_lowercase();
    let matching: Vec<&RepoFile> = models
        .iter()
        .copied()
        .filter(|f| !q.is_empty() && f.path.to_ascii_lowercase().contains(&q))
        .collect();
    // An exact quant match wins over a longer name that contains it (Q4_K in Q4_K_M).
    let exact: Vec<&RepoFile> = matching
        .iter()
        .copied()
        .filter(|f| quant_of(&f.path).eq_ignore_ascii_case(quant))
        .collect();
    match (exact.as_slice(), matching.as_slice()) {
        ([one], _) | ([], [one]) => Ok((*one).clone()),
        ([], []) => {
            let mut available: Vec<String> = models
                .iter()
                .map(|f| quant_of(&f.path).to_string())
                .collect();
            available.sort();
            available.dedup();
            Err(PullError::QuantNotFound {
                repo: repo.to_string(),
                quant: quant.to_string(),
                available,
            })
        }
        (several, all) => {
            let pick = if several.is_empty() { all } else { several };
            Err(PullError::QuantAmbiguous {
                repo: repo.to_string(),
                quant: quant.to_string(),
                files: pick.iter().map(|f| f.path.clone()).collect(),
            })
        }
    }
}

fn choose_mmproj(files: &[RepoFile], repo: &Repo) -> Result<RepoFile, PullError> {
    let projectors: Vec<&RepoFile> = files.iter().filter(|f| is_mmproj(f)).collect();
    projectors
        .iter()
        .find(|f| f.path.to_ascii_lowercase().contains("f16"))
        .or(projectors.first())
        .map(|f| (*f).clone())
        .ok_or_else(|| PullError::NoMmproj {
            repo: repo.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DEFAULT_REPO;

    fn file(path: &str, size: u64) -> RepoFile {
        RepoFile {
            path: path.to_string(),
            size,
            sha256: Some(format!("{:064x}", size)),
        }
    }

    fn repo() -> Repo {
        Repo::parse(DEFAULT_REPO).unwrap()
    }

    /// The file names of openbmb/MiniCPM-V-2_6-gguf.
    fn real_listing() -> Vec<RepoFile> {
        [
            ".gitattributes",
            "README.md",
            "ggml-model-F16.gguf",
            "ggml-model-IQ3_M.gguf",
            "ggml-model-IQ3_S.gguf",
            "ggml-model-IQ4_NL.gguf",
            "ggml-model-IQ4_XS.gguf",
            "ggml-model-Q2_K.gguf",
            "ggml-model-Q3_K.gguf",
            "ggml-model-Q3_K_L.gguf",
            "ggml-model-Q3_K_M.gguf",
            "ggml-model-Q3_K_S.gguf",
            "ggml-model-Q4_0.gguf",
            "ggml-model-Q4_1.gguf",
            "ggml-model-Q4_K.gguf",
            "ggml-model-Q4_K_M.gguf",
            "ggml-model-Q4_K_S.gguf",
            "ggml-model-Q5_0.gguf",
            "ggml-model-Q5_1.gguf",
            "ggml-model-Q5_K.gguf",
            "ggml-model-Q5_K_M.gguf",
            "ggml-model-Q5_K_S.gguf",
            "ggml-model-Q6_K.gguf",
            "ggml-model-Q8_0.gguf",
            "mmproj-model-f16.gguf",
        ]
        .iter()
        .enumerate()
        .map(|(i, p)| file(p, i as u64 + 1))
        .collect()
    }

    #[test]
    fn selects_the_default_pair_and_other_quants() {
        let l = real_listing();
        let p = select(&l, &repo(), DEFAULT_QUANT).unwrap();
        assert_eq!(p.model.path, "ggml-model-Q4_K_M.gguf");
        assert_eq!(p.mmproj.path, "mmproj-model-f16.gguf");
        // case-insensitive; the exact quant wins over a longer name containing it
        assert_eq!(
            select(&l, &repo(), "q8_0").unwrap().model.path,
            "ggml-model-Q8_0.gguf"
        );
        assert_eq!(
            select(&l, &repo(), "Q4_K").unwrap().model.path,
            "ggml-model-Q4_K.gguf"
        );
        assert_eq!(
            select(&l, &repo(), "f16").unwrap().model.path,
            "ggml-model-F16.gguf"
        );
    }

    /// MiniCPM-o 4.5's repository names its projector without "mmproj" (OpenBMB's cookbook,
    /// deployment/llama.cpp/minicpm-o4_5_llamacpp.md).
    #[test]
    fn a_projector_named_vision_is_the_projector() {
        let l = vec![
            file("MiniCPM-o-4_5-Q4_K_M.gguf", 1),
            file("MiniCPM-o-4_5-Q8_0.gguf", 2),
            file("MiniCPM-o-4_5-F16.gguf", 3),
            file("MiniCPM-o-4_5-vision-F16.gguf", 4),
        ];
        let p = select(&l, &repo(), "Q4_K_M").unwrap();
        assert_eq!(p.model.path, "MiniCPM-o-4_5-Q4_K_M.gguf");
        assert_eq!(p.mmproj.path, "MiniCPM-o-4_5-vision-F16.gguf");
        // the F16 language model is not taken for the projector, nor the projector for it
        assert_eq!(
            select(&l, &repo(), "F16").unwrap().model.path,
            "MiniCPM-o-4_5-F16.gguf"
        );
    }

    #[test]
    fn a_missing_quant_lists_the_available_ones() {
        let err = select(&real_listing(), &repo(), "Q7_Z").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, PullError::QuantNotFound { .. }), "{msg}");
        for q in ["Q7_Z", "Q4_K_M", "Q8_0", "F16", DEFAULT_REPO] {
            assert!(msg.contains(q), "{msg}");
        }
        assert!(!msg.contains("f16.gguf"), "mmproj is not a quant: {msg}");
    }

    #[test]
    fn an_ambiguous_quant_is_refused() {
        let l = vec![
            file("m-Q4_K_M.gguf", 1),
            file("m-Q4_K_S.gguf", 2),
            file("mmproj-f16.gguf", 3),
        ];
        let err = select(&l, &repo(), "Q4").unwrap_err();
        assert!(matches!(err, PullError::QuantAmbiguous { .. }), "{err}");
        assert!(err.to_string().contains("m-Q4_K_S.gguf"), "{err}");
    }

    #[test]
    fn mmproj_prefers_f16_and_is_required() {
        let l = vec![
            file("model-Q8_0.gguf", 1),
            file("mmproj-Q8_0.gguf", 2),
            file("mmproj-F16.gguf", 3),
        ];
        let p = select(&l, &repo(), "Q8_0").unwrap();
        assert_eq!(p.model.path, "model-Q8_0.gguf");
        assert_eq!(p.mmproj.path, "mmproj-F16.gguf");
        let l = vec![file("model-Q8_0.gguf", 1), file("mmproj-Q8_0.gguf", 2)];
        assert_eq!(
            select(&l, &repo(), "Q8_0").unwrap().mmproj.path,
            "mmproj-Q8_0.gguf"
        );
        let err = select(&[file("model-Q8_0.gguf", 1)], &repo(), "Q8_0").unwrap_err();
        assert!(matches!(err, PullError::NoMmproj { .. }), "{err}");
    }

    #[test]
    fn quant_of_file_names() {
        assert_eq!(quant_of("ggml-model-Q4_K_M.gguf"), "Q4_K_M");
        assert_eq!(quant_of("Model-7.6B-IQ4_XS.GGUF"), "IQ4_XS");
        assert_eq!(quant_of("model.Q8_0.gguf"), "Q8_0");
        assert_eq!(quant_of("plain"), "plain");
    }
}
