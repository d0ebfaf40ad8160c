//! How one projector sees images: the slice geometry, the embeddings each chunk becomes and
//! where they go in the prompt. One value of [`ImageFormat`] answers all three for a pair, so
//! the rest of the pipeline never asks which kind of projector it has.

use crate::model::family::{ModelSpec, ProjectorKind};
use crate::model::inputs::ProjectorFacts;
use crate::prompt::layout::LayoutStyle;

use super::slice::{plan_slices, SliceError, SliceParams, SlicePlan};

/// The image format of a projector: [`SliceParams`] (with the merge the projector implies) and
/// the projector kind, which gives the embeddings per chunk and the layout style.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ImageFormat {
    /// Slicing: input size, patch size, merge and slice cap.
    pub slicing: SliceParams,
    /// The projector: a resampler (fixed embeddings per chunk) or 4.6's merger (one embedding
    /// per `merge x merge` patches).
    pub projector: ProjectorKind,
}

impl ImageFormat {
    /// The format of a projector the checks read (`crate::model::inputs::check_projector`),
    /// with `max_slices` slices at most (1..=9).
    pub fn of_projector(facts: &ProjectorFacts, max_slices: u32) -> ImageFormat {
        ImageFormat::new(
            facts.kind,
            facts.image_size as u32,
            facts.patch_size as u32,
            max_slices,
        )
    }

    /// The format of a version's official projector (`models/*.toml`), for planning without
    /// a file; `projector` overrides the version's (e.g. 4.6 at another scale factor).
    pub fn of_spec(spec: &ModelSpec, projector: Option<ProjectorKind>, max_slices: u32) -> Self {
        ImageFormat::new(
            projector.unwrap_or(spec.projector),
            spec.slicing.image_size,
            spec.slicing.patch_size,
            max_slices,
        )
    }

    fn new(projector: ProjectorKind, image_size: u32, patch_size: u32, max_slices: u32) -> Self {
        ImageFormat {
            slicing: SliceParams {
                image_size,
                patch_size,
                max_slices,
                merge: projector.merge(),
            },
            projector,
        }
    }

    /// The slice plan of a `width` x `height` image ([`plan_slices`]).
    pub fn plan(&self, width: u32, height: u32) -> Result<SlicePlan, SliceError> {
        plan_slices(width, height, &self.slicing)
    }

    /// Embeddings of chunk `i` (0: overview, 1..: slices) of `plan`.
    pub fn chunk_tokens(&self, plan: &SlicePlan, i: usize) -> usize {
        self.projector
            .chunk_tokens(self.slicing.patch_size, plan.chunk_size(i))
    }

    /// Embeddings of every chunk of `plan`, overview first.
    pub fn plan_tokens(&self, plan: &SlicePlan) -> Vec<usize> {
        (0..plan.n_chunks())
            .map(|i| self.chunk_tokens(plan, i))
            .collect()
    }

    /// Where the embeddings go among the special tokens: the 2.5 layout for a resampler of
    /// `clip.minicpmv_version` 2, the 2.6 layout for every later version and for 4.6 (mtmd.cpp
    /// `init_vision`: `MTMD_SLICE_TMPL_MINICPMV_2_6` for `PROJECTOR_TYPE_MINICPMV4_6`).
    pub fn style(&self) -> LayoutStyle {
        LayoutStyle::for_projector(&self.projector)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::family::{spec, Version};

    #[test]
    fn resampler_chunks_have_the_query_count() {
        let f = ImageFormat::of_spec(spec(Version::V2_5), None, 9);
        let plan = f.plan(1920, 1080).unwrap();
        assert_eq!(f.plan_tokens(&plan), vec![96; 9]);
        assert_eq!(f.style(), LayoutStyle::V2_5);
        assert_eq!(f.slicing.merge, 1);
        let f = ImageFormat::of_spec(spec(Version::V4_5), None, 9);
        assert_eq!(f.style(), LayoutStyle::V2_6);
    }

    #[test]
    fn merger_chunks_follow_their_pixels() {
        // bundled clip.cpp: n_patches / n_merge^2 per chunk, so overview and slices differ
        let f = ImageFormat::of_spec(spec(Version::V4_6), None, 9);
        assert_eq!((f.slicing.merge, f.slicing.align()), (4, 56));
        assert_eq!(f.style(), LayoutStyle::V2_6);
        let plan = f.plan(1920, 1080).unwrap();
        let tokens = f.plan_tokens(&plan);
        let (ow, oh) = plan.overview;
        assert_eq!(tokens[0], (ow / 56 * (oh / 56)) as usize);
        let (sw, sh) = plan.slice.unwrap();
        assert!(tokens[1..]
            .iter()
            .all(|&t| t == (sw / 56 * (sh / 56)) as usize));
        let four = ImageFormat::of_spec(
            spec(Version::V4_6),
            Some(ProjectorKind::Merger { scale_factor: 2 }),
            9,
        );
        assert_eq!(four.slicing.align(), 28);
        let small = four.plan(300, 200).unwrap();
        assert_eq!(small.n_chunks(), 1, "4x keeps small images whole");
        assert_eq!(
            four.chunk_tokens(&small, 0),
            (small.overview.0 / 28 * (small.overview.1 / 28)) as usize
        );
    }
}
