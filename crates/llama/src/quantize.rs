//! The raw side of quantization, for the minicpmv-quantize crate: llama.cpp's
//! `llama_model_quantize` and log hooks, ggml's type table, and three POSIX calls (`statvfs`,
//! `kill(pid, 0)`, `sigaction`) for its free-space check, stale temporary files and cleanup on
//! signals.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// llama.cpp's raw bindings, for their constants (ggml type ids, `llama_ftype` values). Calling
/// one of their functions needs `unsafe`, which every other crate of the workspace forbids.
pub use llama_cpp_sys_2 as sys;

// ---------------------------------------------------------------------------------------------
// ggml's type table

/// What ggml says about a tensor type id: name, elements per block, bytes per block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GgmlTypeFacts {
    pub name: &'static str,
    pub block_size: u64,
    pub type_size: u64,
}

/// ggml's facts for a type id; `None` for ids past `GGML_TYPE_COUNT` and for retired ids (ggml
/// keeps them in its table with a block size of 0).
pub fn ggml_type_facts(id: u32) -> Option<GgmlTypeFacts> {
    if id >= sys::GGML_TYPE_COUNT {
        return None;
    }
    // SAFETY: `id < GGML_TYPE_COUNT`, so these index ggml's static `type_traits` table, which
    // they only read; ggml_type_name returns a pointer into that static table (or null for an
    // entry without a name, checked below).
    let (block, size, name) = unsafe {
        (
            sys::ggml_blck_size(id),
            sys::ggml_type_size(id),
            sys::ggml_type_name(id),
        )
    };
    if block <= 0 || size == 0 || name.is_null() {
        return None;
    }
    // SAFETY: non-null, NUL-terminated string in ggml's static table, valid for the process.
    let name = unsafe { CStr::from_ptr(name) }.to_str().ok()?;
    Some(GgmlTypeFacts {
        name,
        block_size: block as u64,
        type_size: size as u64,
    })
}

// ---------------------------------------------------------------------------------------------
// llama_model_quantize with its log routed to a sink

/// Severity of a llama.cpp log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// Receives every llama.cpp log fragment while a quantization runs. Called from llama.cpp's
/// threads (the caller's, and ggml's workers for data-validation errors), hence `Send + Sync`.
pub type LogSink = Arc<dyn Fn(LogLevel, &str) + Send + Sync>;

/// The parameters of `llama_model_quantize` this crate sets; the rest keep llama.cpp's defaults
/// (no imatrix, no KV overrides, no pruning, quantize output.weight, one output file).
#[derive(Debug, Clone)]
pub struct RawParams {
    /// `<= 0`: llama.cpp uses `std::thread::hardware_concurrency()`.
    pub nthread: i32,
    /// A `llama_ftype` value.
    pub ftype: u32,
    pub allow_requantize: bool,
    /// Compute the per-tensor types and sizes and log them, write nothing.
    pub dry_run: bool,
    /// Per-tensor type overrides: (ECMAScript regex searched in the tensor name, ggml type id).
    pub tensor_types: Vec<(String, u32)>,
}

/// The active sink, read by [`log_trampoline`]. llama.cpp's logger is process-global, so only
/// one quantization may run at a time ([`QUANTIZE_LOCK`]).
static ACTIVE_SINK: Mutex<Option<LogSink>> = Mutex::new(None);
static QUANTIZE_LOCK: Mutex<()> = Mutex::new(());

/// The callback that was installed before ours (the `minicpmv` crate's, which prints with `-v`),
/// to forward every line to.
#[derive(Clone, Copy)]
struct PrevLogger {
    callback: sys::ggml_log_callback,
    user_data: *mut c_void,
}

// SAFETY: the pair is only handed back to llama.cpp (forwarded calls and `llama_log_set`), as
// llama.cpp itself does from any thread; we never dereference `user_data`.
unsafe impl Send for PrevLogger {}

static PREV_LOGGER: Mutex<Option<PrevLogger>> = Mutex::new(None);

fn backend_init() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        // SAFETY: no preconditions; idempotent in llama.cpp (it initialises ggml's time and f16
        // tables), run once here. The `minicpmv` crate may have called it already.
        unsafe { sys::llama_backend_init() };
    });
}

unsafe extern "C" fn log_trampoline(
    level: sys::ggml_log_level,
    text: *const c_char,
    _user_data: *mut c_void,
) {
    if text.is_null() {
        return;
    }
    // SAFETY: llama.cpp passes a valid NUL-terminated string that lives for this call.
    let cstr = unsafe { CStr::from_ptr(text) };
    let sink = ACTIVE_SINK.lock().ok().and_then(|g| g.clone());
    if let Some(sink) = sink {
        let text = cstr.to_string_lossy();
        let lvl = match level {
            sys::GGML_LOG_LEVEL_ERROR => LogLevel::Error,
            sys::GGML_LOG_LEVEL_WARN => LogLevel::Warn,
            sys::GGML_LOG_LEVEL_DEBUG => LogLevel::Debug,
            _ => LogLevel::Info,
        };
        // A panic must not unwind into C++.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sink(lvl, &text)));
    }
    let prev = PREV_LOGGER.lock().ok().and_then(|g| *g);
    if let Some(PrevLogger {
        callback: Some(cb),
        user_data,
    }) = prev
    {
        // SAFETY: forwarding the same arguments to the callback that was installed before ours,
        // with its own user data, exactly as llama.cpp would have called it.
        unsafe { cb(level, text, user_data) };
    }
}

/// Restores the previous llama.cpp logger and clears the sink when dropped.
struct LogGuard;

impl LogGuard {
    fn install(sink: LogSink) -> LogGuard {
        let mut prev = PrevLogger {
            callback: None,
            user_data: std::ptr::null_mut(),
        };
        // SAFETY: llama_log_get writes the current callback and user data into the two valid
        // out-pointers; llama_log_set installs our `extern "C"` trampoline (no user data; it
        // reads the sink from a static), valid for the whole process.
        unsafe {
            sys::llama_log_get(&mut prev.callback, &mut prev.user_data);
            if let Ok(mut g) = PREV_LOGGER.lock() {
                *g = Some(prev);
            }
            if let Ok(mut g) = ACTIVE_SINK.lock() {
                *g = Some(sink);
            }
            sys::llama_log_set(Some(log_trampoline), std::ptr::null_mut());
        }
        LogGuard
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let prev = PREV_LOGGER.lock().ok().and_then(|mut g| g.take());
        if let Some(p) = prev {
            // SAFETY: re-installs the callback/user-data pair llama.cpp gave us in `install`
            // (a null callback makes llama.cpp use its default logger).
            unsafe { sys::llama_log_set(p.callback, p.user_data) };
        }
        if let Ok(mut g) = ACTIVE_SINK.lock() {
            *g = None;
        }
    }
}

/// Runs `llama_model_quantize(input, output, params)` with llama.cpp's log routed to `sink`
/// (and still forwarded to the previous logger). Returns llama.cpp's result code (0 = success).
///
/// The caller must have checked `input` with a GGUF reader first: llama.cpp aborts the process
/// on some malformed files. Serialised process-wide (llama.cpp's logger is global).
pub fn model_quantize(
    input: &Path,
    output: &Path,
    params: RawParams,
    sink: LogSink,
) -> Result<u32, io::Error> {
    let c_in = path_cstring(input)?;
    let c_out = path_cstring(output)?;
    let patterns = params
        .tensor_types
        .iter()
        .map(|(p, _)| CString::new(p.as_str()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // llama.cpp reads the array up to the entry with a null pattern.
    let mut overrides: Vec<sys::llama_model_tensor_override> = patterns
        .iter()
        .zip(&params.tensor_types)
        .map(|(p, (_, ty))| sys::llama_model_tensor_override {
            pattern: p.as_ptr(),
            type_: *ty,
        })
        .collect();
    overrides.push(sys::llama_model_tensor_override {
        pattern: std::ptr::null(),
        type_: sys::GGML_TYPE_COUNT,
    });
    backend_init();
    let _serial = QUANTIZE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let _log = LogGuard::install(sink);
    // SAFETY: llama_model_quantize_default_params has no preconditions and returns a plain
    // struct whose pointer fields are null.
    let mut p = unsafe { sys::llama_model_quantize_default_params() };
    p.nthread = params.nthread;
    p.ftype = params.ftype;
    p.allow_requantize = params.allow_requantize;
    p.dry_run = params.dry_run;
    if overrides.len() > 1 {
        p.tt_overrides = overrides.as_ptr();
    }
    // SAFETY: both paths are valid NUL-terminated strings for the duration of the call; `p` is
    // a fully initialised params struct whose imatrix/KV-override/prune pointers are null
    // (llama.cpp treats null as "none") and whose `tt_overrides` is null or points to
    // `overrides`, an array terminated by a null pattern whose patterns (`patterns`) outlive
    // the call. llama.cpp catches its own exceptions and returns non-zero.
    let rc = unsafe { sys::llama_model_quantize(c_in.as_ptr(), c_out.as_ptr(), &p) };
    Ok(rc)
}

fn path_cstring(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} contains a NUL byte", p.display()),
        )
    })
}

// ---------------------------------------------------------------------------------------------
// POSIX helpers

/// Bytes available to an unprivileged user on the file system holding `dir` (`statvfs`:
/// `f_bavail * f_frsize`).
pub fn free_bytes(dir: &Path) -> io::Result<u64> {
    let c = path_cstring(dir)?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable memory of the
    // right type; statvfs fills it on success (return 0) and we read it only then.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so the struct is initialised.
    let st = unsafe { st.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Whether a process with this id exists (`kill(pid, 0)`: success or `EPERM` mean it does).
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 sends nothing; it only checks that the process exists and may be
    // signalled. `pid > 0` targets exactly one process, never a group.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

// ---------------------------------------------------------------------------------------------
// Removing the temporary output on SIGINT / SIGTERM / SIGHUP

/// The path the signal handler unlinks, and the message it prints (both leaked C strings owned
/// by the active [`SignalCleanup`]; null when none is active).
static CLEANUP_PATH: AtomicPtr<c_char> = AtomicPtr::new(std::ptr::null_mut());
static CLEANUP_MSG: AtomicPtr<c_char> = AtomicPtr::new(std::ptr::null_mut());

const CLEANUP_SIGNALS: [c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

extern "C" fn on_signal(sig: c_int) {
    // Only async-signal-safe calls here: unlink, write, signal, raise.
    let path = CLEANUP_PATH.load(Ordering::SeqCst);
    let msg = CLEANUP_MSG.load(Ordering::SeqCst);
    // SAFETY: the pointers are null or NUL-terminated strings kept alive by the active
    // SignalCleanup, which nulls them (after restoring the old handlers) before freeing them.
    unsafe {
        if !path.is_null() {
            libc::unlink(path);
        }
        if !msg.is_null() {
            libc::write(2, msg as *const c_void, libc::strlen(msg));
        }
        // Die of the same signal with the default action, so the parent sees how we ended.
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

/// While alive, SIGINT, SIGTERM and SIGHUP remove `path` (the temporary output) and then end the
/// process with the default action of the signal. Dropping it restores the previous handlers.
pub struct SignalCleanup {
    old: Vec<(c_int, libc::sigaction)>,
    path: *mut c_char,
    msg: *mut c_char,
}

impl SignalCleanup {
    pub fn install(path: &Path, message: &str) -> io::Result<SignalCleanup> {
        let path = path_cstring(path)?.into_raw();
        let msg = CString::new(message.replace('\0', " "))
            .unwrap_or_default()
            .into_raw();
        CLEANUP_PATH.store(path, Ordering::SeqCst);
        CLEANUP_MSG.store(msg, Ordering::SeqCst);
        let mut guard = SignalCleanup {
            old: Vec::new(),
            path,
            msg,
        };
        for sig in CLEANUP_SIGNALS {
            // SAFETY: `sa` is zero-initialised (a valid empty sigaction on Linux and macOS) and
            // then given our handler (an `extern "C" fn(c_int)`, valid for the process) and an
            // empty mask; `old` receives the previous action for restoration in Drop.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as extern "C" fn(c_int) as libc::sighandler_t;
                libc::sigemptyset(&mut sa.sa_mask);
                sa.sa_flags = 0;
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, &sa, &mut old) != 0 {
                    return Err(io::Error::last_os_error());
                }
                guard.old.push((sig, old));
            }
        }
        Ok(guard)
    }
}

impl Drop for SignalCleanup {
    fn drop(&mut self) {
        for (sig, old) in self.old.drain(..) {
            // SAFETY: re-installs the action sigaction returned for this signal in `install`.
            unsafe {
                libc::sigaction(sig, &old, std::ptr::null_mut());
            }
        }
        CLEANUP_PATH.store(std::ptr::null_mut(), Ordering::SeqCst);
        CLEANUP_MSG.store(std::ptr::null_mut(), Ordering::SeqCst);
        // SAFETY: both pointers came from CString::into_raw in `install` and are freed once,
        // here, after the handler can no longer see them (the old handlers are back and the
        // statics are null).
        unsafe {
            drop(CString::from_raw(self.path));
            drop(CString::from_raw(self.msg));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ggml_type_table() {
        let q4k = ggml_type_facts(sys::GGML_TYPE_Q4_K).expect("q4_K");
        assert_eq!(
            (q4k.name, q4k.block_size, q4k.type_size),
            ("q4_K", 256, 144)
        );
        let f16 = ggml_type_facts(sys::GGML_TYPE_F16).expect("f16");
        assert_eq!((f16.name, f16.block_size, f16.type_size), ("f16", 1, 2));
        assert_eq!(ggml_type_facts(4), None, "retired Q4_2");
        assert_eq!(ggml_type_facts(sys::GGML_TYPE_COUNT), None);
        assert_eq!(ggml_type_facts(u32::MAX), None);
    }

    #[test]
    fn free_space_and_pids() {
        assert!(free_bytes(Path::new("/")).is_ok());
        assert!(free_bytes(Path::new("/no/such/dir")).is_err());
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(0));
        assert!(!pid_alive(u32::MAX));
    }
}
