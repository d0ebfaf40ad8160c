// minicpmv_shim.cpp — implementation of minicpmv_shim.h over llama.cpp's clip API.
// Compiled by build.rs against the llama.cpp sources bundled in llama-cpp-sys-2 and linked
// with that crate's libmtmd.a. Keep it thin: no policy here, only translation and checks.

#include "minicpmv_shim.h"

#include "clip.h"
#include "clip-impl.h"
#include "clip-model.h"
#include "mtmd-image.h"

#include "ggml-backend.h"
#include "ggml-backend-impl.h"
#include "llama.h"
#include "llama-ext.h"

#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <string>
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

static clip_flash_attn_type clip_fa(int32_t flash_attn) {
    return flash_attn > 0 ? CLIP_FLASH_ATTN_TYPE_ENABLED
         : flash_attn == 0 ? CLIP_FLASH_ATTN_TYPE_DISABLED
                           : CLIP_FLASH_ATTN_TYPE_AUTO;
}

extern "C" mcv_clip * mcv_clip_load(const char * path, bool warmup, int32_t flash_attn, char * err,
                                    size_t err_cap) {
    try {
        clip_context_params params{};
        params.use_gpu = true;
        params.device = nullptr;
        params.flash_attn_type = clip_fa(flash_attn);
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
            set_err(err, err_cap, "clip_init failed");
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
    const projector_type type = clip_get_projector_type(clip->ctx);
    out->is_minicpmv = type == PROJECTOR_TYPE_MINICPMV;
    out->is_minicpmv4_6 = type == PROJECTOR_TYPE_MINICPMV4_6;
    out->n_merge = hp->n_merge;
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

// ---- llama.cpp's own MiniCPM-V preprocessing (reference / oracle) ---------------------------
//
// mtmd (tools/mtmd/mtmd.cpp, init_vision) uses mtmd_image_preprocessor_llava_uhd for
// PROJECTOR_TYPE_MINICPMV and mtmd_image_preprocessor_minicpmv (its slicing with 4.6's n_merge
// rules) for PROJECTOR_TYPE_MINICPMV4_6; we instantiate the same classes over the same
// clip_hparams.

static const int32_t MCV_MAX_SIDE = 46000; // clip_image_size::area() GGML_ASSERTs sides <= 46000

static bool mcv_check_minicpmv(const mcv_clip * clip, char * err, size_t err_cap) {
    if (clip == nullptr || clip->ctx == nullptr) {
        set_err(err, err_cap, "null projector");
        return false;
    }
    const projector_type type = clip_get_projector_type(clip->ctx);
    if (type != PROJECTOR_TYPE_MINICPMV && type != PROJECTOR_TYPE_MINICPMV4_6) {
        set_err(err, err_cap, "the projector is not a MiniCPM-V resampler or merger (llama.cpp uses another preprocessor)");
        return false;
    }
    return true;
}

// The preprocessor mtmd's init_vision picks for the projector (checked by mcv_check_minicpmv).
static std::unique_ptr<mtmd_image_preprocessor_llava_uhd> mcv_preprocessor(const mcv_clip * clip) {
    if (clip_get_projector_type(clip->ctx) == PROJECTOR_TYPE_MINICPMV4_6) {
        return std::make_unique<mtmd_image_preprocessor_minicpmv>(clip->ctx);
    }
    return std::make_unique<mtmd_image_preprocessor_llava_uhd>(clip->ctx);
}

static bool mcv_check_size(int32_t w, int32_t h, char * err, size_t err_cap) {
    if (w < 1 || h < 1 || w > MCV_MAX_SIDE || h > MCV_MAX_SIDE) {
        char msg[160];
        std::snprintf(msg, sizeof(msg), "image size %dx%d is outside 1..=%d per side", w, h, MCV_MAX_SIDE);
        set_err(err, err_cap, msg);
        return false;
    }
    return true;
}

extern "C" int32_t mcv_llama_slice_plan(const mcv_clip * clip, int32_t w, int32_t h, mcv_slice_plan * out,
                                        mcv_slice_rect * slices, size_t slices_cap, char * err, size_t err_cap) {
    try {
        if (out == nullptr || (slices == nullptr && slices_cap > 0)) {
            set_err(err, err_cap, "null output buffer");
            return 1;
        }
        std::memset(out, 0, sizeof(*out));
        if (!mcv_check_size(w, h, err, err_cap)) {
            return 1;
        }
        if (!mcv_check_minicpmv(clip, err, err_cap)) {
            return 3;
        }
        const auto pre = mcv_preprocessor(clip);
        const auto inst = pre->get_slice_instructions(clip_image_size{w, h});
        out->overview_w = inst.overview_size.width;
        out->overview_h = inst.overview_size.height;
        out->refined_w = inst.refined_size.width;
        out->refined_h = inst.refined_size.height;
        out->grid_w = inst.grid_size.width;
        out->grid_h = inst.grid_size.height;
        out->n_slices = (int32_t) inst.slices.size();
        for (size_t i = 0; i < inst.slices.size() && i < slices_cap; i++) {
            const auto & s = inst.slices[i];
            slices[i] = mcv_slice_rect{s.x, s.y, s.size.width, s.size.height};
        }
        if (inst.slices.size() > slices_cap) {
            char msg[128];
            std::snprintf(msg, sizeof(msg), "%zu slices do not fit in a buffer of %zu", inst.slices.size(), slices_cap);
            set_err(err, err_cap, msg);
            return 2;
        }
        return 0;
    } catch (const std::exception & e) {
        set_err(err, err_cap, e.what());
    } catch (...) {
        set_err(err, err_cap, "unknown C++ exception while planning slices");
    }
    return 3;
}

struct mcv_preproc {
    std::vector<int32_t> widths;
    std::vector<int32_t> heights;
    std::vector<std::vector<float>> bufs;

    void push(const clip_image_f32 & img) {
        widths.push_back(img.nx());
        heights.push_back(img.ny());
        bufs.push_back(img.get_ro_buf()); // throws for a placeholder image
    }
};

extern "C" mcv_preproc * mcv_llama_preprocess(const mcv_clip * clip, const uint8_t * rgb, size_t rgb_len,
                                              int32_t w, int32_t h, char * err, size_t err_cap) {
    try {
        if (rgb == nullptr) {
            set_err(err, err_cap, "null pixel buffer");
            return nullptr;
        }
        if (!mcv_check_size(w, h, err, err_cap)) {
            return nullptr;
        }
        const size_t need = (size_t) w * (size_t) h * 3;
        if (rgb_len != need) {
            char msg[160];
            std::snprintf(msg, sizeof(msg), "pixel buffer holds %zu bytes, a %dx%d RGB image needs %zu", rgb_len, w, h, need);
            set_err(err, err_cap, msg);
            return nullptr;
        }
        if (!mcv_check_minicpmv(clip, err, err_cap)) {
            return nullptr;
        }
        clip_image_u8 img;
        img.set_size(clip_image_size{w, h}, false);
        img.cpy_buf(std::vector<uint8_t>(rgb, rgb + need));
        const auto pre = mcv_preprocessor(clip);
        mtmd_image_preproc_out res = pre->preprocess(img);
        auto pp = std::make_unique<mcv_preproc>();
        pp->push(res.overview);
        for (const auto & e : res.entries) {
            pp->push(e);
        }
        return pp.release();
    } catch (const std::exception & e) {
        set_err(err, err_cap, e.what());
    } catch (...) {
        set_err(err, err_cap, "unknown C++ exception while preprocessing");
    }
    return nullptr;
}

extern "C" int32_t mcv_preproc_count(const mcv_preproc * pp) {
    return pp == nullptr ? 0 : (int32_t) pp->bufs.size();
}

extern "C" int32_t mcv_preproc_size(const mcv_preproc * pp, int32_t i, int32_t * w, int32_t * h) {
    if (pp == nullptr || w == nullptr || h == nullptr || i < 0 || (size_t) i >= pp->bufs.size()) {
        return 1;
    }
    *w = pp->widths[(size_t) i];
    *h = pp->heights[(size_t) i];
    return 0;
}

extern "C" int32_t mcv_preproc_copy(const mcv_preproc * pp, int32_t i, float * out, size_t out_len) {
    if (pp == nullptr || out == nullptr || i < 0 || (size_t) i >= pp->bufs.size()) {
        return 1;
    }
    const auto & buf = pp->bufs[(size_t) i];
    if (buf.size() != out_len) {
        return 2;
    }
    std::memcpy(out, buf.data(), out_len * sizeof(float));
    return 0;
}

extern "C" void mcv_preproc_free(mcv_preproc * pp) {
    delete pp;
}

// ---- Memory estimates ------------------------------------------------------------------------

// A language model and context planned with `no_alloc`, as llama.cpp's own fit logic does
// (common/fit.cpp): metadata only, simulated buffers. `devices` (NULL-terminated, may be NULL)
// with `n_gpu_layers` and `tensor_split` place layers on other devices. Calls `use` with the
// context, then frees both. Returns false with a message in err.
static bool with_planned_context(const char * path, uint32_t n_ctx, uint32_t n_batch, int32_t type_kv,
                                 bool repack, int32_t n_threads, ggml_backend_dev_t * devices,
                                 int32_t n_gpu_layers, const float * tensor_split,
                                 const std::function<void(const llama_context *)> & use, char * err,
                                 size_t err_cap) {
    llama_model_params mp = llama_model_default_params();
    mp.no_alloc = true;
    mp.load_mode = LLAMA_LOAD_MODE_NONE;
    mp.use_extra_bufts = repack;
    mp.n_gpu_layers = n_gpu_layers;
    if (devices != nullptr) {
        mp.devices = devices;
        mp.tensor_split = tensor_split;
        mp.split_mode = LLAMA_SPLIT_MODE_LAYER;
    }
    llama_model * model = llama_model_load_from_file(path, mp);
    if (model == nullptr) {
        set_err(err, err_cap, "llama.cpp could not read the language model's metadata (run with -v for its log)");
        return false;
    }
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_ctx;
    cp.n_batch = n_batch;
    cp.n_ubatch = n_batch;
    cp.n_threads = n_threads;
    cp.n_threads_batch = n_threads;
    cp.type_k = (ggml_type) type_kv;
    cp.type_v = (ggml_type) type_kv;
    if (type_kv != GGML_TYPE_F16) {
        cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_ENABLED;
    }
    llama_context * ctx = llama_init_from_model(model, cp);
    if (ctx == nullptr) {
        llama_model_free(model);
        set_err(err, err_cap, "llama.cpp could not plan a context of this size (run with -v for its log)");
        return false;
    }
    use(ctx);
    llama_free(ctx);
    llama_model_free(model);
    return true;
}

extern "C" int32_t mcv_llama_memory_estimate(const char * path, uint32_t n_ctx, uint32_t n_batch,
                                             int32_t type_kv, bool repack, int32_t n_threads,
                                             mcv_llama_mem * out, char * err, size_t err_cap) {
    std::memset(out, 0, sizeof(*out));
    try {
        auto sum = [&](const llama_context * ctx) {
            for (const auto & [buft, mb] : llama_get_memory_breakdown(ctx)) {
                const std::string name = ggml_backend_buft_name(buft);
                if (name.find("REPACK") != std::string::npos) {
                    out->model_repack += mb.model;
                } else {
                    out->model_other += mb.model;
                }
                out->context += mb.context;
                out->compute += mb.compute;
            }
        };
        bool ok = with_planned_context(path, n_ctx, n_batch, type_kv, repack, n_threads, nullptr, 0,
                                       nullptr, sum, err, err_cap);
        return ok ? 0 : 1;
    } catch (const std::exception & e) {
        set_err(err, err_cap, e.what());
    } catch (...) {
        set_err(err, err_cap, "unknown C++ exception while estimating memory");
    }
    return 1;
}

static clip_ctx * clip_load_no_alloc(const char * path, bool warmup, int32_t flash_attn) {
    clip_context_params params{};
    params.use_gpu = true;
    params.device = nullptr;
    params.flash_attn_type = clip_fa(flash_attn);
    params.image_min_tokens = -1;
    params.image_max_tokens = -1;
    params.warmup = warmup;
    params.no_alloc = true;
    clip_init_result res = clip_init(path, params);
    if (res.ctx_a != nullptr) {
        clip_free(res.ctx_a);
    }
    if (res.ctx_gen_a != nullptr) {
        clip_free(res.ctx_gen_a);
    }
    return res.ctx_v;
}

static uint64_t clip_mem_total(const clip_ctx * ctx) {
    uint64_t total = 0;
    for (const auto & [dev, size] : clip_get_mem_usage(ctx)) {
        total += size;
    }
    return total;
}

extern "C" int32_t mcv_clip_memory_estimate(const char * path, int32_t flash_attn, uint64_t * weights,
                                            uint64_t * compute, char * err, size_t err_cap) {
    *weights = 0;
    *compute = 0;
    try {
        // Without warm-up only the weights are counted; with it, also the compute buffers that
        // the warm-up graph (one slice) reserves.
        clip_ctx * cold = clip_load_no_alloc(path, false, flash_attn);
        clip_ctx * warm = cold ? clip_load_no_alloc(path, true, flash_attn) : nullptr;
        if (cold == nullptr || warm == nullptr) {
            if (cold) {
                clip_free(cold);
            }
            set_err(err, err_cap, "llama.cpp could not read the projector's metadata (run with -v for its log)");
            return 1;
        }
        *weights = clip_mem_total(cold);
        const uint64_t total = clip_mem_total(warm);
        *compute = total > *weights ? total - *weights : 0;
        clip_free(cold);
        clip_free(warm);
        return 0;
    } catch (const std::exception & e) {
        set_err(err, err_cap, e.what());
    } catch (...) {
        set_err(err, err_cap, "unknown C++ exception while estimating memory");
    }
    return 1;
}

static int32_t device_memory(const llama_context * ctx, mcv_device_mem * out, size_t cap);

extern "C" int32_t mcv_llama_memory_estimate_devices(const char * path, uint32_t n_ctx, uint32_t n_batch,
                                                     int32_t type_kv, bool repack, int32_t n_threads,
                                                     void ** devices, int32_t n_gpu_layers,
                                                     const float * tensor_split, mcv_device_mem * out,
                                                     size_t cap, char * err, size_t err_cap) {
    try {
        int32_t n = -1;
        auto per_device = [&](const llama_context * ctx) { n = device_memory(ctx, out, cap); };
        bool ok = with_planned_context(path, n_ctx, n_batch, type_kv, repack, n_threads,
                                       (ggml_backend_dev_t *) devices, n_gpu_layers, tensor_split,
                                       per_device, err, err_cap);
        return ok ? n : -1;
    } catch (const std::exception & e) {
        set_err(err, err_cap, e.what());
    } catch (...) {
        set_err(err, err_cap, "unknown C++ exception while estimating memory");
    }
    return -1;
}

extern "C" int32_t mcv_llama_device_memory(const void * ctx, mcv_device_mem * out, size_t cap) {
    return device_memory((const llama_context *) ctx, out, cap);
}

static int32_t device_memory(const llama_context * ctx, mcv_device_mem * out, size_t cap) {
    std::vector<mcv_device_mem> devs;
    try {
        auto breakdown = llama_get_memory_breakdown(ctx);
        for (const auto & [buft, mb] : breakdown) {
            ggml_backend_dev_t dev = ggml_backend_buft_get_device(buft);
            const char * name = dev ? ggml_backend_dev_name(dev) : "CPU";
            const char * desc = dev ? ggml_backend_dev_description(dev) : "";
            mcv_device_mem * slot = nullptr;
            for (auto & d : devs) {
                if (std::strcmp(d.name, name) == 0) {
                    slot = &d;
                }
            }
            if (slot == nullptr) {
                devs.push_back(mcv_device_mem{});
                slot = &devs.back();
                std::snprintf(slot->name, sizeof(slot->name), "%s", name);
                std::snprintf(slot->desc, sizeof(slot->desc), "%s", desc);
            }
            slot->model += mb.model;
            slot->context += mb.context;
            slot->compute += mb.compute;
        }
    } catch (...) {
        return 0;
    }
    for (size_t i = 0; i < devs.size() && i < cap; i++) {
        out[i] = devs[i];
    }
    return (int32_t) devs.size();
}

extern "C" void mcv_set_abort_callback(mcv_abort_fn f) {
    ggml_set_abort_callback(f);
}

#ifdef MCV_RPC

// ggml's RPC entry points, through the backend registry as llama.cpp's common code does: the
// same code works when the backend is linked in and when it is a loadable module (a `portable`
// build, GGML_BACKEND_DL).
typedef ggml_backend_reg_t (*rpc_add_server_fn)(const char * endpoint);
typedef void (*rpc_start_server_fn)(const char * endpoint, const char * cache_dir, size_t n_threads,
                                    size_t n_devices, ggml_backend_dev_t * devices);

static void * rpc_proc(const char * name) {
    ggml_backend_reg_t reg = ggml_backend_reg_by_name("RPC");
    return reg ? ggml_backend_reg_get_proc_address(reg, name) : nullptr;
}

extern "C" bool mcv_rpc_available(void) {
    return rpc_proc("ggml_backend_rpc_add_server") != nullptr &&
           rpc_proc("ggml_backend_rpc_start_server") != nullptr;
}

extern "C" int32_t mcv_rpc_add_server(const char * endpoint, mcv_rpc_device * out, size_t cap,
                                      char * err, size_t err_cap) {
    try {
        auto add_server = (rpc_add_server_fn) rpc_proc("ggml_backend_rpc_add_server");
        if (add_server == nullptr) {
            set_err(err, err_cap, "ggml's RPC backend is not loaded");
            return -1;
        }
        ggml_backend_reg_t reg = add_server(endpoint);
        if (reg == nullptr) {
            set_err(err, err_cap, "the worker reports no devices");
            return -1;
        }
        size_t n = ggml_backend_reg_dev_count(reg);
        for (size_t i = 0; i < n && i < cap; i++) {
            ggml_backend_dev_t dev = ggml_backend_reg_dev_get(reg, i);
            out[i].dev = dev;
            std::snprintf(out[i].name, sizeof(out[i].name), "%s", ggml_backend_dev_name(dev));
            size_t free = 0, total = 0;
            ggml_backend_dev_memory(dev, &free, &total);
            out[i].free = free;
            out[i].total = total;
        }
        return (int32_t) n;
    } catch (const std::exception & e) {
        set_err(err, err_cap, e.what());
    } catch (...) {
        set_err(err, err_cap, "unknown C++ exception while connecting to the worker");
    }
    return -1;
}

// A worker's CPU device that advertises a set amount of memory (`minicpmv worker --mem`), as
// llama.cpp's rpc-server `--mem` does: a copy of the CPU device whose get_memory answers the set
// amount, and whose backends name it as their device (the RPC server asks the backend's device).
static ggml_backend_device g_worker_dev;
static uint64_t g_worker_mem = 0;

static void worker_dev_memory(ggml_backend_dev_t, size_t * free, size_t * total) {
    *free = (size_t) g_worker_mem;
    *total = (size_t) g_worker_mem;
}

static ggml_backend_t (*g_cpu_init_backend)(ggml_backend_dev_t, const char *) = nullptr;

static ggml_backend_t worker_dev_init(ggml_backend_dev_t dev, const char * params) {
    ggml_backend_t backend = g_cpu_init_backend(dev, params);
    if (backend != nullptr) {
        backend->device = &g_worker_dev;
    }
    return backend;
}

extern "C" int32_t mcv_rpc_serve(const char * endpoint, const char * cache_dir, uint32_t n_threads,
                                 uint64_t mem_bytes, char * err, size_t err_cap) {
    try {
        ggml_backend_dev_t cpu = ggml_backend_dev_by_type(GGML_BACKEND_DEVICE_TYPE_CPU);
        if (cpu == nullptr) {
            set_err(err, err_cap, "no CPU backend in this build");
            return 1;
        }
        ggml_backend_dev_t dev = cpu;
        if (mem_bytes > 0) {
            g_worker_dev = *cpu;
            g_worker_mem = mem_bytes;
            g_cpu_init_backend = cpu->iface.init_backend;
            g_worker_dev.iface.get_memory = worker_dev_memory;
            g_worker_dev.iface.init_backend = worker_dev_init;
            dev = &g_worker_dev;
        }
        auto start_server = (rpc_start_server_fn) rpc_proc("ggml_backend_rpc_start_server");
        if (start_server == nullptr) {
            set_err(err, err_cap, "ggml's RPC backend is not loaded");
            return 1;
        }
        start_server(endpoint, cache_dir, n_threads, 1, &dev);
        set_err(err, err_cap, "ggml's RPC server stopped (its message is above)");
    } catch (const std::exception & e) {
        set_err(err, err_cap, e.what());
    } catch (...) {
        set_err(err, err_cap, "unknown C++ exception in the RPC server");
    }
    return 1;
}

#else

extern "C" bool mcv_rpc_available(void) {
    return false;
}

extern "C" int32_t mcv_rpc_add_server(const char *, mcv_rpc_device *, size_t, char * err,
                                      size_t err_cap) {
    set_err(err, err_cap, "this build has no RPC backend (build with the `rpc` feature)");
    return -1;
}

extern "C" int32_t mcv_rpc_serve(const char *, const char *, uint32_t, uint64_t, char * err,
                                 size_t err_cap) {
    set_err(err, err_cap, "this build has no RPC backend (build with the `rpc` feature)");
    return 1;
}

#endif
