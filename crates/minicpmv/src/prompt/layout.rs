//! Where image embeddings and their special tokens go in the language model's input: a pure
//! function of the MiniCPM-V version and the slice grid.
//!
//! Reference: llama.cpp `tools/mtmd/mtmd.cpp` (bundled in llama-cpp-sys-2 0.1.161), the
//! `PROJECTOR_TYPE_MINICPMV` set-up (`MTMD_SLICE_TMPL_MINICPMV_2_5` for `minicpmv_version` 2,
//! `MTMD_SLICE_TMPL_MINICPMV_2_6` for 3, 4, 5, 6, 100045 and for `PROJECTOR_TYPE_MINICPMV4_6`)
//! and the llava-uhd branch of `mtmd_tokenizer`
//! that emits overview first, then the slices row by row, with `\n` between rows and none after
//! the last (DESIGN.md §3).

use crate::model::family::ProjectorKind;

/// The two MiniCPM-V image layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutStyle {
    /// MiniCPM-Llama3-V 2.5: `<image>[O]</image><slice><image>[S]</image>...\n...</slice>`.
    V2_5,
    /// MiniCPM-V 2.6 and later: `<image>[O]</image><slice>[S]</slice>...\n...`.
    V2_6,
}

impl LayoutStyle {
    /// The layout of a projector: the 2.5 layout for the resampler of `clip.minicpmv_version`
    /// 2, the 2.6 layout for later resamplers and for 4.6's merger (mtmd.cpp `init_vision`).
    pub fn for_projector(p: &ProjectorKind) -> LayoutStyle {
        if p.minicpmv_version() == Some(2) {
            LayoutStyle::V2_5
        } else {
            LayoutStyle::V2_6
        }
    }
}

/// One element of an image's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutItem {
    /// A single vocabulary token, given by its text (`<image>`, `</slice>`, `\n`, ...).
    Token(&'static str),
    /// The embeddings of chunk `i`: 0 is the overview, 1.. the slices in row-major order.
    Chunk(usize),
}

/// Opens the overview's embeddings (and, in [`LayoutStyle::V2_5`], each slice's);
/// mtmd's `tok_ov_img_start`.
pub const IMAGE_START: &str = "<image>";
/// Closes what [`IMAGE_START`] opened; mtmd's `tok_ov_img_end`.
pub const IMAGE_END: &str = "</image>";
/// In [`LayoutStyle::V2_6`] opens each slice's embeddings; in [`LayoutStyle::V2_5`] opens the
/// whole grid of slices (mtmd's `tok_slices_start`).
pub const SLICE_START: &str = "<slice>";
/// Closes what [`SLICE_START`] opened.
pub const SLICE_END: &str = "</slice>";
/// Separates rows of slices (none after the last row); mtmd's `tok_row_end`.
pub const ROW_END: &str = "\n";

/// Every token text a layout can use.
pub const LAYOUT_TOKENS: [&str; 5] = [IMAGE_START, IMAGE_END, SLICE_START, SLICE_END, ROW_END];

/// The layout of one image with the overview and a `cols` x `rows` grid of slices (`None`
/// for an overview-only image).
pub fn image_layout(style: LayoutStyle, grid: Option<(u32, u32)>) -> Vec<LayoutItem> {
    use LayoutItem::{Chunk, Token};
    let mut out = vec![Token(IMAGE_START), Chunk(0), Token(IMAGE_END)];
    let Some((cols, rows)) = grid.filter(|&(c, r)| c > 0 && r > 0) else {
        return out;
    };
    let (slice_start, slice_end) = match style {
        LayoutStyle::V2_5 => {
            out.push(Token(SLICE_START));
            (IMAGE_START, IMAGE_END)
        }
        LayoutStyle::V2_6 => (SLICE_START, SLICE_END),
    };
    let mut chunk = 1;
    for row in 0..rows {
        for _ in 0..cols {
            out.extend([Token(slice_start), Chunk(chunk), Token(slice_end)]);
            chunk += 1;
        }
        if row + 1 != rows {
            out.push(Token(ROW_END));
        }
    }
    if style == LayoutStyle::V2_5 {
        out.push(Token(SLICE_END));
    }
    out
}

/// Number of layout tokens (not embeddings) of an image.
pub fn n_layout_tokens(style: LayoutStyle, grid: Option<(u32, u32)>) -> usize {
    image_layout(style, grid)
        .iter()
        .filter(|i| matches!(i, LayoutItem::Token(_)))
        .count()
}

#[cfg(test)]
mod tests {
    use super::LayoutItem::{Chunk as C, Token as T};
    use super::*;

    fn render(items: &[LayoutItem]) -> String {
        items
            .iter()
            .map(|i| match i {
                T(t) => t.to_string(),
                C(n) => format!("[{n}]"),
            })
            .collect()
    }

    #[test]
    fn overview_only_is_the_same_in_both_styles() {
        for style in [LayoutStyle::V2_5, LayoutStyle::V2_6] {
            assert_eq!(render(&image_layout(style, None)), "<image>[0]</image>");
            assert_eq!(n_layout_tokens(style, None), 2);
        }
    }

    #[test]
    fn v2_6_grid_matches_mtmd() {
        // mtmd.cpp comment: "<image> (overview) </image><slice> (slice) </slice><slice> (slice) </slice>\n ..."
        assert_eq!(
            render(&image_layout(LayoutStyle::V2_6, Some((2, 2)))),
            "<image>[0]</image><slice>[1]</slice><slice>[2]</slice>\n<slice>[3]</slice><slice>[4]</slice>"
        );
        // 1920x1080 -> grid 4x2 (DESIGN.md §3): 2 + 8*2 + 1 layout tokens.
        assert_eq!(n_layout_tokens(LayoutStyle::V2_6, Some((4, 2))), 19);
    }

    #[test]
    fn v2_5_grid_matches_mtmd() {
        // mtmd.cpp comment: "<image> (overview) </image><slice><image> (slice) </image><image> (slice) </image>\n ... </slice>"
        assert_eq!(
            render(&image_layout(LayoutStyle::V2_5, Some((2, 1)))),
            "<image>[0]</image><slice><image>[1]</image><image>[2]</image></slice>"
        );
        assert_eq!(
            render(&image_layout(LayoutStyle::V2_5, Some((1, 2)))),
            "<image>[0]</image><slice><image>[1]</image>\n<image>[2]</image></slice>"
        );
        assert_eq!(n_layout_tokens(LayoutStyle::V2_5, Some((4, 2))), 21);
    }

    #[test]
    fn chunks_are_numbered_row_major() {
        let chunks: Vec<usize> = image_layout(LayoutStyle::V2_6, Some((3, 2)))
            .into_iter()
            .filter_map(|i| match i {
                C(n) => Some(n),
                T(_) => None,
            })
            .collect();
        assert_eq!(chunks, vec![0, 1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn style_follows_the_projector_version() {
        let resampler = |minicpmv_version| ProjectorKind::Resampler {
            minicpmv_version,
            query_tokens: 64,
        };
        assert_eq!(LayoutStyle::for_projector(&resampler(2)), LayoutStyle::V2_5);
        for v in [3, 4, 5, 6, 100045] {
            assert_eq!(LayoutStyle::for_projector(&resampler(v)), LayoutStyle::V2_6);
        }
        // mtmd.cpp: PROJECTOR_TYPE_MINICPMV4_6 uses MTMD_SLICE_TMPL_MINICPMV_2_6
        for scale_factor in [2, 4] {
            let m = ProjectorKind::Merger { scale_factor };
            assert_eq!(LayoutStyle::for_projector(&m), LayoutStyle::V2_6);
        }
    }
}
