// minicpmv_shim.cpp — implementation of minicpmv_shim.h over llama.cpp's clip API.
// Compiled by build.rs against the llama.cpp sources bundled in llama-cpp-sys-2 and linked
// with that crate's libmtmd.a. Keep it thin: no policy here, only translation and checks.

#include "minicpmv_shim.h"

#include "clip.h"
#include "clip-impl.h"
#include "clip-model.h"

#include <cstdio>
#include <cstring>
#include <exception>
#include <vector>

struct mcv_clip {
    clip_ctx * ctx;
};

static void set_err(char * err, size_t cap, const char * msg) {
    if (err == nullptr || cap == 0) {
        return;
    }
    std::snprintf(err, cap, "%s", msg);
}

extern "C" mcv_clip * mcv_clip_load(const char * path, bool warmup, char * err, size_t err_cap) {
    try {
        clip_context_params params{};
        params.use_gpu = true;
        params.device = nullptr;
        params.flash_attn_type = CLIP_FLASH_ATTN_TYPE_AUTO;
        params.image_min_tokens = -1;
        params.image_max_tokens = -1;
        params.warmup = warmup;
        params.cb_eval = nullptr;
        params.cb_eval_user_data = nullptr;
        params.no_alloc = false;
        params.progress_callback = nullptr;
        params.progress_callback_user_data = nullptr;
        clip_init_result res = clip_init(path, params);
        if (res.ctx_a != nullptr) {
            clip_free(res.ctx_a);
        }
        if (res.ctx_gen_a != nullptr) {
            clip_free(res.ctx_gen_a);
        }
        if (res.ctx_v == nullptr) {
            set_err(err, err_cap, "llama.cpp could not load the projector (clip_init failed; run with -v for its log)");
            return nullptr;
        }
        return new mcv_clip{res.ctx_v};
    } catch (const std::exception & e) {
        set_err(err, err_cap, e.what());
    } catch (...) {
        set_err(err, err_cap, "unknown C++ exception while loading the projector");
    }
    return nullptr;
}

extern "C" void mcv_clip_get_info(const mcv_clip * clip, mcv_clip_info * out) {
    std::memset(out, 0, sizeof(*out));
    const clip_hparams * hp = clip_get_hparams(clip->ctx);
    out->image_size = hp->image_size;
    out->patch_size = hp->patch_size;
    out->minicpmv_version = hp->minicpmv_version;
    out->query_num = hp->minicpmv_query_num;
    out->n_embd = clip_n_mmproj_embd(clip->ctx);
    for (int i = 0; i < 3; i++) {
        out->image_mean[i] = hp->image_mean[i];
        out->image_std[i] = hp->image_std[i];
    }
    out->is_minicpmv = clip_get_projector_type(clip->ctx) == PROJECTOR_TYPE_MINICPMV;
    out->has_vision = clip_has_vision_encoder(clip->ctx);
}

extern "C" int32_t mcv_clip_n_output_tokens(const mcv_clip * clip, int32_t w, int32_t h) {
    try {
        clip_image_f32 img;
        img.set_size({w, h}, /*is_placeholder=*/true, /*is_audio=*/false);
        return clip_n_output_tokens(clip->ctx, &img);
    } catch (...) {
        return -1;
    }
}

extern "C" int32_t mcv_clip_encode(mcv_clip * clip, int32_t n_threads, const float * pixels, int32_t w,
                                   int32_t h, float * out, size_t out_len, char * err, size_t err_cap) {
    try {
        if (w <= 0 || h <= 0 || pixels == nullptr || out == nullptr) {
            set_err(err, err_cap, "invalid image size or null buffer");
            return 1;
        }
        clip_image_f32 img;
        img.set_size({w, h}, false, false);
        std::vector<float> buf(pixels, pixels + (size_t) w * (size_t) h * 3);
        img.cpy_buf(buf);
        const int n_tok = clip_n_output_tokens(clip->ctx, &img);
        const int n_embd = clip_n_mmproj_embd(clip->ctx);
        const size_t need = (size_t) n_tok * (size_t) n_embd;
        if (n_tok <= 0 || need != out_len) {
            char msg[160];
            std::snprintf(msg, sizeof(msg), "output buffer holds %zu floats but the projector produces %d x %d",
                          out_len, n_tok, n_embd);
            set_err(err, err_cap, msg);
            return 2;
        }
        // clip_image_encode writes nothing unless the vector is pre-sized (DESIGN.md §2).
        std::vector<float> result(need);
        if (!clip_image_encode(clip->ctx, n_threads, &img, result)) {
            set_err(err, err_cap, "clip_image_encode failed (run with -v for llama.cpp's log)");
            return 3;
        }
        std::memcpy(out, result.data(), need * sizeof(float));
        return 0;
    } catch (const std::exception & e) {
        set_err(err, err_cap, e.what());
    } catch (...) {
        set_err(err, err_cap, "unknown C++ exception while encoding");
    }
    return 4;
}

extern "C" void mcv_clip_free(mcv_clip * clip) {
    if (clip != nullptr) {
        clip_free(clip->ctx);
        delete clip;
    }
}
