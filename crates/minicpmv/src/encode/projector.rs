//! The projector stage of the native pipeline: slices planned and preprocessed in Rust
//! ([`crate::vision`]), then one projector call per slice through our shim.

use std::time::Instant;

use crate::ffi::{ClipProjector, DecodeError};
use crate::vision::{preprocess, ImageFormat, LoadedImage, PreprocessError, SliceError, SlicePlan};

/// Why the native pipeline failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NativeError {
    /// No slice grid could be planned for the image and the projector's sizes.
    #[error(transparent)]
    Slice(#[from] SliceError),
    /// Resizing or normalising the overview or a slice failed.
    #[error(transparent)]
    Preprocess(#[from] PreprocessError),
    /// The projector (llama.cpp's clip, through our shim) failed to load or to encode a slice.
    #[error(transparent)]
    Clip(#[from] crate::ffi::ClipError),
    /// llama.cpp failed to decode a batch of tokens or embeddings into the KV cache.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A text of the image layout (`<image>`, `</slice>`, `\n`, ...) is not a single token of
    /// the vocabulary; found by [`crate::prompt::sequence::LayoutTokens::lookup`].
    #[error("the vocabulary has no single token for {0:?}, which MiniCPM-V's image layout needs")]
    MissingLayoutToken(String),
    /// A projector call produced NaN or infinite values (corrupt projector weights).
    #[error("the projector produced a non-finite value ({value}) for chunk {chunk} of an image: its weights are corrupt (NaN or infinite)")]
    NonFiniteEmbedding {
        /// The chunk (0: overview).
        chunk: usize,
        /// The first such value.
        value: f32,
    },
    /// A projector call returned another number of floats than the image format gives for
    /// the chunk (embeddings per chunk times the width): the projector file and the format
    /// it was read as disagree.
    #[error("the projector produced {got} floats for chunk {chunk}, {expected} were expected")]
    EmbeddingSize {
        /// The chunk (0: overview).
        chunk: usize,
        /// Floats returned.
        got: usize,
        /// Floats expected: the chunk's embeddings times the projector's width.
        expected: usize,
    },
}

/// The embeddings of one image: overview first, then the slices in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageEmbeddings {
    /// The slice plan the chunks follow: `chunks.len()` is 1 plus its number of slices.
    pub plan: SlicePlan,
    /// One `n_tokens * n_embd` row-major buffer per chunk.
    pub chunks: Vec<Vec<f32>>,
    /// Width of one embedding.
    pub n_embd: usize,
    /// Seconds per projector call, in chunk order.
    pub encode_secs: Vec<f64>,
}

impl ImageEmbeddings {
    /// Embeddings (positions) this image feeds the model.
    pub fn n_tokens(&self) -> usize {
        self.chunks
            .iter()
            .map(|c| c.len() / self.n_embd.max(1))
            .sum()
    }
}

/// Plans, preprocesses and encodes one image in `format` (the projector's, from
/// [`ImageFormat::of_projector`]). `on_chunk(done, total)` is called after each projector
/// call (for progress display).
pub fn encode_image(
    projector: &mut ClipProjector,
    image: &LoadedImage,
    format: &ImageFormat,
    n_threads: i32,
    on_chunk: &mut dyn FnMut(usize, usize),
) -> Result<ImageEmbeddings, NativeError> {
    let plan = format.plan(image.width, image.height)?;
    plan.check_resizable()?;
    let info = *projector.info();
    let pre = preprocess(image, &plan, info.image_mean, info.image_std)?;
    let total = 1 + pre.slices.len();
    let mut chunks = Vec::with_capacity(total);
    let mut encode_secs = Vec::with_capacity(total);
    for (i, img) in std::iter::once(&pre.overview)
        .chain(&pre.slices)
        .enumerate()
    {
        let t0 = Instant::now();
        let emb = projector.encode(&img.data, img.width, img.height, n_threads)?;
        encode_secs.push(t0.elapsed().as_secs_f64());
        let expected = format.chunk_tokens(&plan, i) * info.n_embd;
        if emb.len() != expected {
            return Err(NativeError::EmbeddingSize {
                chunk: i,
                got: emb.len(),
                expected,
            });
        }
        if let Some(at) = emb.iter().position(|x| !x.is_finite()) {
            // NaN or infinite weights (or an overflow) in the projector: the language model
            // would compute on garbage, and samplers misbehave on NaN.
            return Err(NativeError::NonFiniteEmbedding {
                chunk: i,
                value: emb[at],
            });
        }
        chunks.push(emb);
        on_chunk(i + 1, total);
    }
    Ok(ImageEmbeddings {
        plan,
        chunks,
        n_embd: info.n_embd,
        encode_secs,
    })
}

#[cfg(test)]
mod tests {
    use crate::ffi::{ClipProjector, ProjectorAttention};
    use crate::model::family::Version;
    use crate::tools::synth::tiny_pair;

    /// The attention choice reaches llama.cpp: both kernels give the same embeddings up to
    /// rounding (flash attention casts K and V to f16), and not bit-identical ones.
    #[test]
    fn attention_kernel_reaches_llama_cpp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = tiny_pair(Version::V2_6, dir.path());
        let (w, h) = (448u32, 448u32);
        let pixels: Vec<f32> = (0..(w * h * 3) as usize)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let encode = |attention| {
            let mut p = ClipProjector::load(&out.mmproj, false, attention)
                .unwrap_or_else(|e| panic!("{e}"));
            p.encode(&pixels, w, h, 2).unwrap_or_else(|e| panic!("{e}"))
        };
        let flash = encode(ProjectorAttention::Flash);
        let plain = encode(ProjectorAttention::Plain);
        assert_eq!(flash.len(), plain.len());
        assert!(flash.iter().chain(&plain).all(|x| x.is_finite()));
        let dot: f64 = flash.iter().zip(&plain).map(|(a, b)| (a * b) as f64).sum();
        let norm = |v: &[f32]| v.iter().map(|x| (x * x) as f64).sum::<f64>().sqrt();
        let cosine = dot / (norm(&flash) * norm(&plain));
        assert!(cosine > 0.999, "cosine {cosine}");
        assert_ne!(flash, plain, "both settings ran the same kernel");
    }
}
