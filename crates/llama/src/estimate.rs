//! llama.cpp's own memory estimates for a language model and a projector: it loads the
//! metadata with `no_alloc` and reports the buffers it would allocate (see the shim).

use std::ffi::CString;
use std::path::Path;

use super::shim_sys as shim;
use super::{c_buf_to_string, KvType};

/// Bytes llama.cpp would allocate for a language model and one context.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LlamaMemEstimate {
    /// Weights copied into CPU repack buffers (anonymous memory).
    pub model_repack: u64,
    /// Other weights: mapped from the file (or read into RAM without mmap).
    pub model_other: u64,
    /// KV cache.
    pub context: u64,
    /// Compute buffers.
    pub compute: u64,
}

/// Bytes of a projector: weights, and the compute buffers of one slice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClipMemEstimate {
    pub weights: u64,
    pub compute: u64,
}

const ERR_CAP: usize = 512;

fn c_path(path: &Path) -> Result<CString, String> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| format!("{}: the path contains a NUL byte", path.display()))
}

/// llama.cpp's estimate for the language model at `path` (already checked by
/// minicpmv::model::inputs) with a context of `n_ctx` tokens and batches of `n_batch`.
pub fn llama_memory_estimate(
    path: &Path,
    n_ctx: u32,
    n_batch: u32,
    kv_type: KvType,
    repack: bool,
    n_threads: i32,
) -> Result<LlamaMemEstimate, String> {
    super::init_backend();
    let p = c_path(path)?;
    let mut out = shim::mcv_llama_mem::default();
    let mut err = [0 as std::os::raw::c_char; ERR_CAP];
    // SAFETY: p is NUL-terminated; out is a valid out-parameter; err has ERR_CAP bytes and the
    // shim writes at most that many. The shim catches every C++ exception.
    let rc = unsafe {
        shim::mcv_llama_memory_estimate(
            p.as_ptr(),
            n_ctx,
            n_batch,
            kv_type.ggml_type() as i32,
            repack,
            n_threads,
            &mut out,
            err.as_mut_ptr(),
            ERR_CAP,
        )
    };
    if rc != 0 {
        return Err(format!("{}: {}", path.display(), c_buf_to_string(&err)));
    }
    Ok(LlamaMemEstimate {
        model_repack: out.model_repack,
        model_other: out.model_other,
        context: out.context,
        compute: out.compute,
    })
}

/// llama.cpp's estimate for the projector at `path` (already checked by minicpmv::model::inputs).
pub fn clip_memory_estimate(
    path: &Path,
    attention: super::ProjectorAttention,
) -> Result<ClipMemEstimate, String> {
    super::init_backend();
    let p = c_path(path)?;
    let (mut weights, mut compute) = (0u64, 0u64);
    let mut err = [0 as std::os::raw::c_char; ERR_CAP];
    // SAFETY: as above; weights and compute are valid out-parameters.
    let rc = unsafe {
        shim::mcv_clip_memory_estimate(
            p.as_ptr(),
            attention.shim_value(),
            &mut weights,
            &mut compute,
            err.as_mut_ptr(),
            ERR_CAP,
        )
    };
    if rc != 0 {
        return Err(format!("{}: {}", path.display(), c_buf_to_string(&err)));
    }
    Ok(ClipMemEstimate { weights, compute })
}

/// [`llama_memory_estimate`] with the model's layers placed by `offload` (RPC workers): the
/// bytes llama.cpp would allocate on each device (`CPU`, `RPC0`, ...). Asks the workers for
/// their buffer alignment and sizes; sends no weights.
pub fn llama_memory_estimate_devices(
    path: &Path,
    n_ctx: u32,
    n_batch: u32,
    kv_type: KvType,
    repack: bool,
    n_threads: i32,
    offload: &'static crate::rpc::Offload,
) -> Result<Vec<crate::DeviceUse>, String> {
    super::init_backend();
    let p = c_path(path)?;
    let mut out = [shim::mcv_device_mem::default(); 32];
    let mut err = [0 as std::os::raw::c_char; ERR_CAP];
    // SAFETY: p is NUL-terminated; the device list is NULL-terminated and tensor_split has
    // llama_max_devices() entries, both living for the process (Offload is 'static); out has
    // room for out.len() entries and err for ERR_CAP bytes. The shim catches C++ exceptions.
    let n = unsafe {
        shim::mcv_llama_memory_estimate_devices(
            p.as_ptr(),
            n_ctx,
            n_batch,
            kv_type.ggml_type() as i32,
            repack,
            n_threads,
            offload.devices_ptr().cast(),
            offload.n_gpu_layers,
            offload.tensor_split_ptr(),
            out.as_mut_ptr(),
            out.len(),
            err.as_mut_ptr(),
            ERR_CAP,
        )
    };
    if n < 0 {
        return Err(format!("{}: {}", path.display(), c_buf_to_string(&err)));
    }
    Ok(out
        .iter()
        .take((n as usize).min(out.len()))
        .map(crate::context::DeviceUse::from_shim)
        .collect())
}
