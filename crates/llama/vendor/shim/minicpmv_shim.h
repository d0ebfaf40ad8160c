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
    bool is_minicpmv4_6;      /* projector type is MiniCPM-V 4.6's merger */
    int32_t n_merge;          /* patches merged per side (4.6: clip.vision.projector.scale_factor) */
    bool has_vision;
} mcv_clip_info;

/* Load an mmproj file. Returns NULL on failure with a message in err. `warmup` runs llama.cpp's
 * warm-up graph reservation at load time (allocates compute buffers up front). `flash_attn`:
 * 1 = flash attention in the vision tower, 0 = plain attention, -1 = llama.cpp's "auto" (which
 * resolves to flash attention only during a warm-up; without one it stays plain). */
mcv_clip * mcv_clip_load(const char * path, bool warmup, int32_t flash_attn, char * err,
                         size_t err_cap);

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

/* ---- llama.cpp's own MiniCPM-V preprocessing, exposed as a reference (oracle) -------------
 *
 * These run llama.cpp's `mtmd_image_preprocessor_llava_uhd` (tools/mtmd/mtmd-image.cpp) — the
 * class mtmd instantiates for PROJECTOR_TYPE_MINICPMV — over the projector's clip_hparams. They
 * exist so that tests (and a `slice-plan` cross-check) can compare our pure-Rust slicing and
 * preprocessing with llama.cpp's. They fail (non-zero / NULL) unless the projector is a
 * MiniCPM-V resampler; sizes must be in 1..=46000 (llama.cpp's clip_image_size limit). */

typedef struct mcv_slice_rect {
    int32_t x;
    int32_t y;
    int32_t w;
    int32_t h;
} mcv_slice_rect;

typedef struct mcv_slice_plan {
    int32_t overview_w; /* size of the downscaled overview image */
    int32_t overview_h;
    int32_t refined_w;  /* size of the image right before slicing; 0 when there are no slices */
    int32_t refined_h;
    int32_t grid_w;     /* columns; 0 when there are no slices */
    int32_t grid_h;     /* rows */
    int32_t n_slices;   /* total number of slices (may exceed the caller's capacity) */
} mcv_slice_plan;

/* llama.cpp's slice instructions (get_slice_instructions) for a w x h image. Writes the plan to
 * `out` and up to `slices_cap` rectangles (row-major) to `slices` (may be NULL when the cap is 0).
 * Returns 0 on success, 1 on invalid arguments, 2 when more than slices_cap slices exist
 * (out->n_slices tells how many), 3 on a C++ exception or a non-MiniCPM-V projector. */
int32_t mcv_llama_slice_plan(const mcv_clip * clip, int32_t w, int32_t h, mcv_slice_plan * out,
                             mcv_slice_rect * slices, size_t slices_cap, char * err, size_t err_cap);

/* The result of llama.cpp's full preprocess(): image 0 is the overview, then the slices in
 * row-major order; each image is normalised float HWC (3 floats per pixel). */
typedef struct mcv_preproc mcv_preproc;

/* Runs llama.cpp's preprocess() on a w x h RGB u8 image (`rgb` holds rgb_len = w*h*3 bytes,
 * row-major RGB). Returns NULL on failure with a message in err. Free with mcv_preproc_free. */
mcv_preproc * mcv_llama_preprocess(const mcv_clip * clip, const uint8_t * rgb, size_t rgb_len,
                                   int32_t w, int32_t h, char * err, size_t err_cap);

/* Number of images held (1 + number of slices). */
int32_t mcv_preproc_count(const mcv_preproc * pp);

/* Size of image i; returns 0 on success, non-zero when i is out of range. */
int32_t mcv_preproc_size(const mcv_preproc * pp, int32_t i, int32_t * w, int32_t * h);

/* Copies image i (w*h*3 floats) into out, which must hold exactly out_len = w*h*3 floats.
 * Returns 0 on success, non-zero on a bad index or length (nothing is written then). */
int32_t mcv_preproc_copy(const mcv_preproc * pp, int32_t i, float * out, size_t out_len);

void mcv_preproc_free(mcv_preproc * pp);


/* ---- Memory estimates, from llama.cpp's own allocation planning (no weights are read) ------
 *
 * Both load the file's metadata with `no_alloc` (llama.cpp then only simulates allocations)
 * and report the bytes it would allocate. Return 0 on success, non-zero with a message in err. */

typedef struct mcv_llama_mem {
    uint64_t model_repack; /* weights in CPU repack buffers (anonymous memory) */
    uint64_t model_other;  /* other weights (mapped from the file, or read when not mapped) */
    uint64_t context;      /* KV cache */
    uint64_t compute;      /* compute buffers */
} mcv_llama_mem;

/* Language model + a context of n_ctx tokens, ubatch n_batch. type_kv is a ggml_type
 * (F16 = 1, Q4_0 = 2, Q8_0 = 8); a quantized type turns flash attention on. */
int32_t mcv_llama_memory_estimate(const char * path, uint32_t n_ctx, uint32_t n_batch,
                                  int32_t type_kv, bool repack, int32_t n_threads,
                                  mcv_llama_mem * out, char * err, size_t err_cap);

/* Projector: weights and the compute buffers of one slice encode. */
int32_t mcv_clip_memory_estimate(const char * path, int32_t flash_attn, uint64_t * weights,
                                 uint64_t * compute, char * err, size_t err_cap);


/* ---- Where a live context's memory is, per device (llama.cpp's memory breakdown) ---------- */

typedef struct mcv_device_mem {
    char name[64];     /* ggml device name: "CPU", "RPC0", ... */
    char desc[128];    /* its description (an RPC device's is the worker's host:port) */
    uint64_t model;    /* weights */
    uint64_t context;  /* KV cache */
    uint64_t compute;  /* compute buffers */
} mcv_device_mem;

/* ctx is a llama_context *. Writes up to cap devices into out (in first-seen order) and
 * returns how many there are. */
int32_t mcv_llama_device_memory(const void * ctx, mcv_device_mem * out, size_t cap);

/* mcv_llama_memory_estimate with the layers split over devices (llama_model_params devices,
 * n_gpu_layers, tensor_split; devices is NULL-terminated): writes up to cap devices' bytes into
 * out and returns how many there are, or -1 with a message in err. */
int32_t mcv_llama_memory_estimate_devices(const char * path, uint32_t n_ctx, uint32_t n_batch,
                                          int32_t type_kv, bool repack, int32_t n_threads,
                                          void ** devices, int32_t n_gpu_layers,
                                          const float * tensor_split, mcv_device_mem * out,
                                          size_t cap, char * err, size_t err_cap);

/* ---- ggml's RPC backend (compiled when the crate feature `rpc` is on: MCV_RPC) ------------ */

typedef struct mcv_rpc_device {
    void * dev;        /* ggml_backend_dev_t, valid for the whole process */
    char name[64];     /* "RPC0", "RPC1", ... */
    uint64_t free;     /* memory the worker reports */
    uint64_t total;
} mcv_rpc_device;

/* Whether this build has the RPC backend. */
bool mcv_rpc_available(void);

/* Connects to the worker at endpoint ("host:port"; the caller has checked that it answers the
 * protocol's HELLO, since ggml aborts the process when it does not) and writes up to cap of its
 * devices into out. Returns the count, or -1 with a message in err. */
int32_t mcv_rpc_add_server(const char * endpoint, mcv_rpc_device * out, size_t cap, char * err,
                           size_t err_cap);

/* Serves this machine's CPU backend over ggml RPC with ggml's own server, one client at a time,
 * until the process ends. mem_bytes > 0 advertises that much memory (free and total) to
 * clients; 0 advertises what the CPU device reports. cache_dir may be NULL. Returns only on
 * failure, with a message in err. */
int32_t mcv_rpc_serve(const char * endpoint, const char * cache_dir, uint32_t n_threads,
                      uint64_t mem_bytes, char * err, size_t err_cap);

/* ggml's abort hook (ggml_set_abort_callback): called with ggml's message before the process
 * aborts. NULL restores ggml's default (message and backtrace). */
typedef void (*mcv_abort_fn)(const char * message);
void mcv_set_abort_callback(mcv_abort_fn f);

#ifdef __cplusplus
}
#endif

#endif /* MINICPMV_SHIM_H */
