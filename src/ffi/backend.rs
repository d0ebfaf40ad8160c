//! Process-wide llama.cpp state: backend initialisation and log routing.

use std::ffi::{c_char, c_void, CStr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use llama_cpp_sys_2 as sys;

static VERBOSE: AtomicBool = AtomicBool::new(false);
static BACKEND: OnceLock<()> = OnceLock::new();

/// Shows llama.cpp's own log (on stderr, through the `log` crate) when `verbose` is true;
/// silences it otherwise. Takes effect immediately, also for later loads.
pub fn set_verbose(verbose: bool) {
    VERBOSE.store(verbose, Ordering::Relaxed);
    init_backend();
}

/// Initialises llama.cpp's backends once per process and installs our log callback for llama,
/// ggml, clip and mtmd. Idempotent and cheap after the first call.
pub fn init_backend() {
    BACKEND.get_or_init(|| {
        // SAFETY: llama_backend_init has no preconditions and runs once (OnceLock). The log
        // callbacks are plain `extern "C"` functions with no captured state (user data is null),
        // valid for the whole process lifetime.
        unsafe {
            sys::llama_log_set(Some(log_callback), std::ptr::null_mut());
            sys::mtmd_log_set(Some(log_callback), std::ptr::null_mut());
            sys::mtmd_helper_log_set(Some(log_callback), std::ptr::null_mut());
            sys::llama_backend_init();
        }
    });
}

unsafe extern "C" fn log_callback(level: sys::ggml_log_level, text: *const c_char, _: *mut c_void) {
    if !VERBOSE.load(Ordering::Relaxed) || text.is_null() {
        return;
    }
    // SAFETY: llama.cpp passes a valid NUL-terminated string that lives for this call.
    let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    let text = text.trim_end_matches('\n');
    if text.is_empty() {
        return;
    }
    match level {
        sys::GGML_LOG_LEVEL_ERROR => log::error!(target: "llama.cpp", "{text}"),
        sys::GGML_LOG_LEVEL_WARN => log::warn!(target: "llama.cpp", "{text}"),
        sys::GGML_LOG_LEVEL_DEBUG => log::debug!(target: "llama.cpp", "{text}"),
        _ => log::info!(target: "llama.cpp", "{text}"),
    }
}
