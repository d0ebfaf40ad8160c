/* minicpmv_shim.h — a thin C ABI over llama.cpp's internal clip API (tools/mtmd/clip.h).
 *
 * Why: mtmd (the public multimodal API) always re-runs its own preprocessing, hard-codes the
 * slice count and needs the language model loaded first. minicpmv preprocesses slices in Rust
 * and only needs "encode this already-normalised image into embeddings". See vendor/README.md.
 *
 * Conventions: every function is noexcept from C's point of view (C++ exceptions are caught in
 * the shim and turned into an error message); errors are written into a caller-provided buffer
 * (`err`, `err_cap` bytes, always NUL-terminated when err_cap > 0).
 */
#ifndef MINICPMV_SHIM_H
#define MINICPMV_SHIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mcv_clip mcv_clip;

typedef struct mcv_clip_info {
    int32_t image_size;       /* square input side of the vision tower, e.g. 448 */
    int32_t patch_size;       /* e.g. 14 */
    int32_t minicpmv_version; /* clip.minicpmv_version, 0 when not a MiniCPM-V projector */
    int32_t query_num;        /* tokens per slice (resampler queries) */
    int32_t n_embd;           /* width of one output embedding (must equal the LM's n_embd) */
    float image_mean[3];
    float image_std[3];
    bool is_minicpmv;         /* projector type is the MiniCPM-V resampler */
    bool has_vision;
} mcv_clip_info;

/* Load an mmproj file. Returns NULL on failure with a message in err. `warmup` runs llama.cpp's
 * warm-up encode pass at load time (allocates compute buffers up front). */
mcv_clip * mcv_clip_load(const char * path, bool warmup, char * err, size_t err_cap);

/* Hyper-parameters of a loaded projector. */
void mcv_clip_get_info(const mcv_clip * clip, mcv_clip_info * out);

/* Number of output embeddings for an input image of w x h pixels (-1 on error). */
int32_t mcv_clip_n_output_tokens(const mcv_clip * clip, int32_t w, int32_t h);

/* Encode one preprocessed image: `pixels` holds w*h*3 floats, HWC (RGB interleaved), already
 * normalised with the projector's mean/std. Writes n_output_tokens * n_embd floats into `out`,
 * which must hold exactly `out_len` floats. Returns 0 on success, non-zero on failure. */
int32_t mcv_clip_encode(mcv_clip * clip, int32_t n_threads, const float * pixels, int32_t w,
                        int32_t h, float * out, size_t out_len, char * err, size_t err_cap);

void mcv_clip_free(mcv_clip * clip);

#ifdef __cplusplus
}
#endif

#endif /* MINICPMV_SHIM_H */
