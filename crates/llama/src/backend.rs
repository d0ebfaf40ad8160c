//! Process-wide llama.cpp state: backend initialisation, the CPU variant in use, and log
//! routing.

use std::ffi::{c_char, c_void, CStr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use llama_cpp_sys_2 as sys;
use serde::Serialize;

static VERBOSE: AtomicBool = AtomicBool::new(false);
/// The last error lines llama.cpp logged, kept whether or not the log is shown, so that a
/// failure can say what llama.cpp said (see [`ErrorCapture`]).
static RECENT_ERRORS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
/// Lines kept in [`RECENT_ERRORS`].
const KEEP_ERRORS: usize = 8;

/// The error lines llama.cpp logs from its creation on (process-wide: another thread's errors
/// can appear too). Loading functions take one before calling llama.cpp and add
/// [`ErrorCapture::said`] to their error, so "could not load" comes with llama.cpp's reason
/// (e.g. which tensor is missing) without `-v`.
pub(crate) struct ErrorCapture {
    start: usize,
}

impl ErrorCapture {
    pub(crate) fn begin() -> ErrorCapture {
        ErrorCapture {
            start: ERRORS_LOGGED.load(Ordering::Relaxed),
        }
    }

    /// `: llama.cpp says: LINE; LINE` with the error lines logged since [`ErrorCapture::begin`]
    /// (at most the last few), or an empty string when there were none.
    pub(crate) fn said(&self) -> String {
        let recent = RECENT_ERRORS.lock().unwrap_or_else(|e| e.into_inner());
        let total = ERRORS_LOGGED.load(Ordering::Relaxed);
        let new = total.saturating_sub(self.start).min(recent.len());
        if new == 0 {
            return String::new();
        }
        format!(
            ": llama.cpp says: {}",
            recent[recent.len() - new..].join("; ")
        )
    }
}

/// Error lines logged since the process started.
static ERRORS_LOGGED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn record_error(text: &str) {
    let mut recent = RECENT_ERRORS.lock().unwrap_or_else(|e| e.into_inner());
    if recent.len() == KEEP_ERRORS {
        recent.remove(0);
    }
    recent.push(text.to_string());
    ERRORS_LOGGED.fetch_add(1, Ordering::Relaxed);
}
static BACKEND: OnceLock<()> = OnceLock::new();

/// Shows llama.cpp's own log (on stderr, through the `log` crate) when `verbose` is true;
/// silences it otherwise. Takes effect immediately, also for later loads.
pub fn set_verbose(verbose: bool) {
    VERBOSE.store(verbose, Ordering::Relaxed);
    init_backend();
}

/// Initialises llama.cpp's backends once per process and installs our log callback for llama,
/// ggml, clip and mtmd. Idempotent and cheap after the first call.
///
/// In a `portable` build the CPU backend is a module chosen at start-up: ggml scores every
/// `libggml-cpu-*.so` it finds beside the executable (else in the build's own backend folder)
/// and loads the best one for this CPU.
pub fn init_backend() {
    BACKEND.get_or_init(|| {
        // SAFETY: llama_backend_init has no preconditions and runs once (OnceLock). The log
        // callbacks are plain `extern "C"` functions with no captured state (user data is null),
        // valid for the whole process lifetime.
        unsafe {
            sys::llama_log_set(Some(log_callback), std::ptr::null_mut());
            sys::mtmd_log_set(Some(log_callback), std::ptr::null_mut());
            sys::mtmd_helper_log_set(Some(log_callback), std::ptr::null_mut());
        }
        if cfg!(feature = "portable") {
            load_backend_modules();
        }
        // SAFETY: as above. In a portable build it loads ggml's default module folders only
        // when nothing is registered yet, so modules are never loaded twice.
        unsafe { sys::llama_backend_init() };
        let cpu = cpu_backend();
        log::info!(target: "minicpmv", "CPU backend: {}", cpu.describe());
    });
}

/// Loads the backend modules of a `portable` build from the executable's folder (the install
/// layout of scripts/build-portable). When none is there, `llama_backend_init` then searches
/// the folders ggml knows (the build tree, the working directory).
fn load_backend_modules() {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.to_path_buf()));
    if let Some(dir) = exe_dir {
        if let Ok(c_dir) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) {
            // SAFETY: c_dir is a NUL-terminated path that outlives the call; ggml copies it.
            unsafe { sys::ggml_backend_load_all_from_path(c_dir.as_ptr()) };
        }
    }
}

/// The registered CPU backend, if any.
fn find_cpu_reg() -> Option<sys::ggml_backend_reg_t> {
    // SAFETY: the registry calls take no pointers we own; names are static C strings.
    unsafe {
        let n = sys::ggml_backend_reg_count();
        (0..n).map(|i| sys::ggml_backend_reg_get(i)).find(|&reg| {
            !reg.is_null() && {
                let name = sys::ggml_backend_reg_name(reg);
                !name.is_null() && CStr::from_ptr(name).to_bytes() == b"CPU"
            }
        })
    }
}

/// Which build of llama.cpp's CPU backend this process runs, and the instruction-set
/// features it was compiled with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CpuBackend {
    /// `native` (built into the binary for the build machine's CPU), or the module a portable
    /// build picked (`x64`, `haswell`, `skylakex`, `zen4`, `armv8.2_1`, ...); `none` when no
    /// CPU backend could be loaded.
    pub variant: String,
    /// The features ggml reports for it (`AVX2`, `AVX512`, `AVX512_BF16`, `DOTPROD`, ...).
    pub features: Vec<String>,
}

impl CpuBackend {
    /// One line: variant and features.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.variant, self.features.join(" "))
    }
}

/// The CPU backend in use (after [`init_backend`]).
pub fn cpu_backend() -> CpuBackend {
    let Some(reg) = find_cpu_reg() else {
        return CpuBackend {
            variant: "none".into(),
            features: Vec::new(),
        };
    };
    let variant = if cfg!(feature = "portable") {
        loaded_cpu_module().unwrap_or_else(|| "unknown".into())
    } else {
        "native".into()
    };
    CpuBackend {
        variant,
        features: cpu_features(reg),
    }
}

/// The features the CPU backend reports through its `ggml_backend_get_features` entry point.
fn cpu_features(reg: sys::ggml_backend_reg_t) -> Vec<String> {
    let name = c"ggml_backend_get_features";
    // SAFETY: reg is a registered backend; the name is a NUL-terminated static string.
    let f = unsafe { sys::ggml_backend_reg_get_proc_address(reg, name.as_ptr()) };
    if f.is_null() {
        return Vec::new();
    }
    // SAFETY: ggml documents this entry point as `ggml_backend_get_features_t`.
    let get: sys::ggml_backend_get_features_t = unsafe { std::mem::transmute(f) };
    let Some(get) = get else {
        return Vec::new();
    };
    let mut out = Vec::new();
    // SAFETY: the function returns a static array terminated by an entry with a null name;
    // every name and value is a NUL-terminated static string.
    unsafe {
        let mut p = get(reg);
        while !p.is_null() && !(*p).name.is_null() {
            let name = CStr::from_ptr((*p).name).to_string_lossy();
            let value = if (*p).value.is_null() {
                String::new()
            } else {
                CStr::from_ptr((*p).value).to_string_lossy().into_owned()
            };
            if value == "1" {
                out.push(name.into_owned());
            } else if !value.is_empty() && name != "NAME" {
                out.push(format!("{name}={value}"));
            }
            p = p.add(1);
        }
    }
    out
}

/// The CPU module a portable build loaded, from the process's memory map (`libggml-cpu-zen4.so`
/// gives `zen4`). Linux only.
fn loaded_cpu_module() -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.rsplit('/').next())
        .find_map(|file| {
            file.strip_prefix("libggml-cpu-")
                .and_then(|rest| rest.split(".so").next())
                .map(str::to_string)
        })
}

unsafe extern "C" fn log_callback(level: sys::ggml_log_level, text: *const c_char, _: *mut c_void) {
    if text.is_null() {
        return;
    }
    // SAFETY: llama.cpp passes a valid NUL-terminated string that lives for this call.
    let text = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    let text = text.trim_end_matches('\n');
    if text.is_empty() {
        return;
    }
    if level == sys::GGML_LOG_LEVEL_ERROR {
        record_error(text.trim());
    }
    if !VERBOSE.load(Ordering::Relaxed) {
        return;
    }
    match level {
        sys::GGML_LOG_LEVEL_ERROR => log::error!(target: "llama.cpp", "{text}"),
        sys::GGML_LOG_LEVEL_WARN => log::warn!(target: "llama.cpp", "{text}"),
        sys::GGML_LOG_LEVEL_DEBUG => log::debug!(target: "llama.cpp", "{text}"),
        _ => log::info!(target: "llama.cpp", "{text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `.cargo/config.toml` builds llama.cpp with `-mno-amx-*` on x86-64: GCC 12 and older
    /// miscompile ggml's AMX tile config, and on an AMX CPU the first quantized matmul then
    /// segfaults (llama.cpp #20824). ggml reports AMX_INT8 exactly when its AMX kernels were
    /// compiled in, which a native build does on an AMX CPU unless the flags are in place.
    #[test]
    #[cfg(all(target_arch = "x86_64", not(feature = "portable")))]
    fn native_x86_build_has_no_amx_kernels() {
        init_backend();
        let cpu = cpu_backend();
        assert_eq!(cpu.variant, "native");
        assert!(
            !cpu.features.iter().any(|f| f.starts_with("AMX")),
            "llama.cpp was built with AMX kernels ({}): check CFLAGS/CXXFLAGS_x86_64_unknown_linux_gnu \
             in .cargo/config.toml and `cargo clean -p llama-cpp-sys-2`",
            cpu.describe()
        );
    }
}
