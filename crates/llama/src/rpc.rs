//! ggml's RPC backend: several boxes for one model.
//!
//! A worker ([`serve`]) offers its CPU backend over TCP with ggml's own server, as llama.cpp's
//! `rpc-server` does. A client ([`connect`]) adds workers as devices; [`Offload`] puts a share of
//! the language model's layers on them when the model loads ([`crate::LoadParams::offload`]).
//!
//! ggml's RPC client aborts the whole process when a worker cannot be reached, answers
//! something unexpected or goes away mid-run. So, before ggml ever talks to a worker, [`probe`]
//! speaks the protocol's first messages itself (HELLO, device count, memory) with timeouts, and
//! every failure becomes an [`RpcError`] naming the worker. For a worker lost mid-run, which
//! ggml cannot survive, [`connect`] installs ggml's abort hook: it names the worker that no
//! longer answers and ends the process with exit code [`LOST_WORKER_EXIT`], not an abort. The
//! sockets get TCP keep-alive, so a worker whose box vanished (no FIN, no RST) is found out in
//! about a minute instead of a read that never returns.
//!
//! The protocol has no authentication and no encryption: use it on a trusted network only.

use std::ffi::{c_char, CStr, CString};
use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::str::FromStr;
use std::sync::{Mutex, Once};
use std::time::Duration;

use super::c_buf_to_string;
use super::shim_sys as shim;

/// The protocol version this build speaks (ggml-rpc.h `RPC_PROTO_*_VERSION`). A worker must
/// have the same major and at most this minor version.
pub const PROTOCOL: (u8, u8, u8) = (7, 0, 0);
/// Default worker port (llama.cpp's `rpc-server` default).
pub const DEFAULT_PORT: u16 = 50052;
/// Most workers one client can use (ggml's `GGML_RPC_MAX_SERVERS`).
pub const MAX_WORKERS: usize = 16;
/// Exit code of a process whose worker went away mid-run.
pub const LOST_WORKER_EXIT: i32 = 3;
/// How long [`probe`] waits to connect and for each answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

// ggml-rpc.cpp's command numbers and message sizes (protocol 7).
const CMD_GET_DEVICE_MEMORY: u8 = 11;
const CMD_HELLO: u8 = 14;
const CMD_DEVICE_COUNT: u8 = 15;
/// `RPC_CONN_CAPS_SIZE` (transport.h): the HELLO's transport capabilities, all zero for TCP.
const CONN_CAPS: usize = 24;

/// A worker's address, `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkerAddr {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for WorkerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl FromStr for WorkerAddr {
    type Err = String;

    /// `host:port` (ggml's endpoint syntax: the host has no `:`, so IPv6 literals are not
    /// accepted; use a name).
    fn from_str(s: &str) -> Result<WorkerAddr, String> {
        let s = s.trim();
        let (host, port) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?} is not host:port (e.g. 192.168.1.20:50052)"))?;
        if host.is_empty() {
            return Err(format!("{s:?} has no host before the ':'"));
        }
        if port.contains(':') {
            return Err(format!(
                "{s:?}: IPv6 literals are not accepted by ggml's RPC client; use a host name"
            ));
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return Err(format!(
                "{s:?}: {host:?} is not a host name or IPv4 address"
            ));
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("{s:?}: the port must be a number from 1 to 65535"))?;
        Ok(WorkerAddr {
            host: host.to_string(),
            port,
        })
    }
}

/// Parses `host:port[,host:port...]` (the CLI's `--rpc`): at most [`MAX_WORKERS`], no repeats.
pub fn parse_workers(list: &str) -> Result<Vec<WorkerAddr>, String> {
    let mut out: Vec<WorkerAddr> = Vec::new();
    for part in list.split(',') {
        let addr: WorkerAddr = part.parse()?;
        if out.contains(&addr) {
            return Err(format!("{addr} is listed twice"));
        }
        out.push(addr);
    }
    if out.len() > MAX_WORKERS {
        return Err(format!(
            "{} workers given; ggml's RPC client takes at most {MAX_WORKERS}",
            out.len()
        ));
    }
    Ok(out)
}

/// What a failure to reach or use a worker was.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("RPC worker {addr}: cannot resolve the host name: {source}")]
    Resolve {
        addr: WorkerAddr,
        source: std::io::Error,
    },
    #[error("RPC worker {addr}: cannot connect ({source}); is `minicpmv worker --host {host} --port {port}` running there, and is the port open?", host = addr.host, port = addr.port)]
    Unreachable {
        addr: WorkerAddr,
        source: std::io::Error,
    },
    #[error("RPC worker {addr}: {why}")]
    Protocol { addr: WorkerAddr, why: String },
    #[error("RPC worker {addr} speaks protocol {}.{}.{}; this build speaks {}.{}.{} (the same llama.cpp version is needed on both sides)", got.0, got.1, got.2, PROTOCOL.0, PROTOCOL.1, PROTOCOL.2)]
    Version { addr: WorkerAddr, got: (u8, u8, u8) },
    #[error("RPC worker {addr}: {message}")]
    Connect { addr: WorkerAddr, message: String },
    #[error("this build has no RPC backend (build with the default `rpc` feature)")]
    NotBuilt,
    #[error("RPC worker: cannot listen on {endpoint}: {source}")]
    Listen {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("RPC worker: {0}")]
    Serve(String),
}

/// One device of a worker, as it reports itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DeviceMemory {
    pub free: u64,
    pub total: u64,
}

/// What [`probe`] learnt from a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    pub addr: WorkerAddr,
    /// The worker's protocol version.
    pub version: (u8, u8, u8),
    /// Its devices (a `minicpmv worker` has one: its CPU).
    pub devices: Vec<DeviceMemory>,
}

/// Whether this build has ggml's RPC backend.
pub fn available() -> bool {
    super::init_backend();
    // SAFETY: a plain function without arguments (the backends are initialised).
    unsafe { shim::mcv_rpc_available() }
}

/// Talks to the worker with our own client: connect, HELLO (version check), device count and
/// each device's memory, each step limited by `timeout`. The connection is closed at the end,
/// so the worker (which serves one client at a time) is free again.
pub fn probe(addr: &WorkerAddr, timeout: Duration) -> Result<WorkerInfo, RpcError> {
    let sock = resolve(addr)?;
    let mut stream =
        TcpStream::connect_timeout(&sock, timeout).map_err(|source| RpcError::Unreachable {
            addr: addr.clone(),
            source,
        })?;
    let proto = |why: String| RpcError::Protocol {
        addr: addr.clone(),
        why,
    };
    let io = |step: &str, e: std::io::Error| {
        let why = if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            format!(
                "no answer to the {step} within {} s: it is busy with another client (a worker serves one client at a time) or it is not a minicpmv/llama.cpp RPC worker",
                timeout.as_secs()
            )
        } else if matches!(
            e.kind(),
            std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
        ) {
            format!("it closed the connection at the {step}: it is not a compatible RPC worker (llama.cpp's rpc-server of protocol {}.x or `minicpmv worker`)", PROTOCOL.0)
        } else {
            format!("{step} failed: {e}")
        };
        RpcError::Protocol {
            addr: addr.clone(),
            why,
        }
    };
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|_| stream.set_write_timeout(Some(timeout)))
        .and_then(|_| stream.set_nodelay(true))
        .map_err(|e| io("connection setup", e))?;

    let hello = command(&mut stream, CMD_HELLO, &[0u8; CONN_CAPS], 4 + CONN_CAPS)
        .map_err(|e| io("handshake (HELLO)", e))?
        .map_err(proto)?;
    let version = (hello[0], hello[1], hello[2]);
    if version.0 != PROTOCOL.0 || version.1 > PROTOCOL.1 {
        return Err(RpcError::Version {
            addr: addr.clone(),
            got: version,
        });
    }
    let count = command(&mut stream, CMD_DEVICE_COUNT, &[], 4)
        .map_err(|e| io("device count", e))?
        .map_err(proto)?;
    let count = u32::from_le_bytes(count[..4].try_into().expect("4 bytes"));
    if count == 0 || count > 64 {
        return Err(proto(format!("it reports {count} devices")));
    }
    let mut devices = Vec::new();
    for d in 0..count {
        let mem = command(&mut stream, CMD_GET_DEVICE_MEMORY, &d.to_le_bytes(), 16)
            .map_err(|e| io("memory query", e))?
            .map_err(proto)?;
        devices.push(DeviceMemory {
            free: u64::from_le_bytes(mem[..8].try_into().expect("8 bytes")),
            total: u64::from_le_bytes(mem[8..16].try_into().expect("8 bytes")),
        });
    }
    Ok(WorkerInfo {
        addr: addr.clone(),
        version,
        devices,
    })
}

fn resolve(addr: &WorkerAddr) -> Result<SocketAddr, RpcError> {
    (addr.host.as_str(), addr.port)
        .to_socket_addrs()
        .and_then(|mut it| {
            it.find(SocketAddr::is_ipv4)
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no IPv4 address"))
        })
        .map_err(|source| RpcError::Resolve {
            addr: addr.clone(),
            source,
        })
}

/// One request and its answer: `| cmd (1) | size (8) | input |` then `| size (8) | output |`
/// (ggml-rpc.cpp `send_rpc_cmd`). The inner error is a protocol violation.
fn command(
    stream: &mut TcpStream,
    cmd: u8,
    input: &[u8],
    output_size: usize,
) -> std::io::Result<Result<Vec<u8>, String>> {
    let mut msg = Vec::with_capacity(9 + input.len());
    msg.push(cmd);
    msg.extend_from_slice(&(input.len() as u64).to_le_bytes());
    msg.extend_from_slice(input);
    stream.write_all(&msg)?;
    stream.flush()?;
    let mut size = [0u8; 8];
    stream.read_exact(&mut size)?;
    let size = u64::from_le_bytes(size);
    if size != output_size as u64 {
        return Ok(Err(format!(
            "it answered command {cmd} with {size} bytes where protocol {}.x has {output_size}: it is not a compatible RPC worker",
            PROTOCOL.0
        )));
    }
    let mut out = vec![0u8; output_size];
    stream.read_exact(&mut out)?;
    Ok(Ok(out))
}

/// A worker's device, added to this process's ggml (it stays valid for the whole process, as
/// ggml keeps its RPC devices in a static registry).
#[derive(Debug, Clone)]
pub struct RpcDevice {
    dev: DevicePtr,
    /// ggml's name for it (`RPC0`, `RPC1`, ...), as llama.cpp's logs and memory breakdown say.
    pub name: String,
    /// The worker it is on.
    pub addr: WorkerAddr,
    /// The memory the worker reports for it.
    pub memory: DeviceMemory,
}

#[derive(Debug, Clone, Copy)]
struct DevicePtr(*mut std::ffi::c_void);
// SAFETY: a ggml_backend_dev_t of the RPC backend is a process-lifetime object that ggml uses
// from any thread (its connection is behind a dispatcher with its own lock).
unsafe impl Send for DevicePtr {}
// SAFETY: see above; we only pass the pointer back to llama.cpp.
unsafe impl Sync for DevicePtr {}

/// Workers in use in this process, for the abort hook.
static WORKERS: Mutex<Vec<WorkerAddr>> = Mutex::new(Vec::new());
/// ggml's connection to each worker (its peer address and descriptor), for [`lost_workers`].
static SOCKETS: Mutex<Vec<(WorkerAddr, SocketAddr, i32)>> = Mutex::new(Vec::new());
static ABORT_HOOK: Once = Once::new();

/// Adds the workers to this process's ggml, after [`probe`] has checked each one, and returns
/// their devices in order. Installs ggml's abort hook (see the module docs); the connections
/// that hold a loaded model's layers get keep-alive once it has loaded ([`watch_connections`]).
pub fn connect(addrs: &[WorkerAddr]) -> Result<Vec<RpcDevice>, RpcError> {
    if !available() {
        return Err(RpcError::NotBuilt);
    }
    super::init_backend();
    let mut devices = Vec::new();
    for addr in addrs {
        probe(addr, PROBE_TIMEOUT)?;
        let endpoint = CString::new(addr.to_string()).expect("a parsed address has no NUL");
        let mut out = [shim::mcv_rpc_device::default(); 16];
        let mut err = [0 as c_char; 256];
        ABORT_HOOK.call_once(|| {
            // SAFETY: on_ggml_abort is a plain extern "C" function valid for the whole process.
            unsafe { shim::mcv_set_abort_callback(Some(on_ggml_abort)) }
        });
        {
            let mut workers = WORKERS.lock().unwrap_or_else(|e| e.into_inner());
            if !workers.contains(addr) {
                workers.push(addr.clone());
            }
        }
        // SAFETY: endpoint is NUL-terminated; out has room for out.len() devices and err for
        // err.len() bytes; the shim catches C++ exceptions. The worker answered the protocol
        // just now, so ggml's connect does not abort (and if it did, the hook reports it).
        let n = unsafe {
            shim::mcv_rpc_add_server(
                endpoint.as_ptr(),
                out.as_mut_ptr(),
                out.len(),
                err.as_mut_ptr(),
                err.len(),
            )
        };
        if n < 0 {
            return Err(RpcError::Connect {
                addr: addr.clone(),
                message: c_buf_to_string(&err),
            });
        }
        if n as usize > out.len() {
            return Err(RpcError::Connect {
                addr: addr.clone(),
                message: format!("it has {n} devices; at most {} are supported", out.len()),
            });
        }
        for d in out.iter().take(n as usize) {
            devices.push(RpcDevice {
                dev: DevicePtr(d.dev),
                name: c_buf_to_string(&d.name),
                addr: addr.clone(),
                memory: DeviceMemory {
                    free: d.free,
                    total: d.total,
                },
            });
        }
    }
    Ok(devices)
}

/// Where the language model's layers go: `n_gpu_layers` of llama.cpp's layer items (repeating
/// layers, then the output layer) go to `devices`, shared by `tensor_split`; the rest stay on
/// the local CPU. See minicpmv's `plan::split` for how the numbers are chosen.
#[derive(Debug)]
pub struct Offload {
    pub devices: Vec<RpcDevice>,
    pub n_gpu_layers: i32,
    pub tensor_split: Vec<f32>,
    dev_ptrs: Vec<*mut std::ffi::c_void>,
    split_full: Vec<f32>,
}

// SAFETY: the raw pointers are process-lifetime ggml devices (see DevicePtr) that we only pass
// back to llama.cpp.
unsafe impl Send for Offload {}
// SAFETY: see above; the struct is immutable once built.
unsafe impl Sync for Offload {}

/// Two offloads are the same when they are the same object (each `--rpc` connect makes one).
impl PartialEq for Offload {
    fn eq(&self, other: &Offload) -> bool {
        std::ptr::eq(self, other)
    }
}
impl Eq for Offload {}

impl Offload {
    /// An offload for [`crate::LoadParams::offload`]. It lives for the rest of the process, as
    /// the devices it names do (one per `--rpc` setting; a small leak by design).
    pub fn leak(
        devices: Vec<RpcDevice>,
        n_gpu_layers: i32,
        tensor_split: Vec<f32>,
    ) -> &'static Offload {
        let mut dev_ptrs: Vec<_> = devices.iter().map(|d| d.dev.0).collect();
        dev_ptrs.push(std::ptr::null_mut());
        // llama.cpp reads llama_max_devices() entries of tensor_split.
        // SAFETY: a plain function without arguments.
        let max = unsafe { llama_cpp_sys_2::llama_max_devices() };
        let mut split_full = tensor_split.clone();
        split_full.resize(max.max(tensor_split.len()), 0.0);
        Box::leak(Box::new(Offload {
            devices,
            n_gpu_layers,
            tensor_split,
            dev_ptrs,
            split_full,
        }))
    }

    pub(crate) fn devices_ptr(&'static self) -> *mut llama_cpp_sys_2::ggml_backend_dev_t {
        self.dev_ptrs.as_ptr() as *mut llama_cpp_sys_2::ggml_backend_dev_t
    }

    pub(crate) fn tensor_split_ptr(&'static self) -> *const f32 {
        self.split_full.as_ptr()
    }
}

/// Finds ggml's connections to the workers in use and turns on TCP keep-alive (and a send
/// timeout) on them: ggml's client reads without a timeout, so a worker whose box vanished
/// would otherwise hang the run. A slow worker is not affected: keep-alive probes are answered
/// by its kernel. The connections are also remembered for [`lost_workers`].
///
/// ggml holds a connection only while buffers or backends on that worker exist, so this runs
/// after the model has loaded ([`crate::Model::load`] with an offload).
pub(crate) fn watch_connections() {
    let workers = WORKERS.lock().map(|w| w.clone()).unwrap_or_default();
    SOCKETS.lock().unwrap_or_else(|e| e.into_inner()).clear();
    for addr in &workers {
        keep_alive(addr);
    }
}

fn keep_alive(addr: &WorkerAddr) {
    let Ok(target) = resolve(addr) else { return };
    #[cfg(target_os = "linux")]
    {
        let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
            return;
        };
        for entry in entries.flatten() {
            let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if peer_of(fd) == Some(target) {
                set_keep_alive(fd);
                SOCKETS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((addr.clone(), target, fd));
                log::info!("RPC worker {addr}: TCP keep-alive on socket {fd}");
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    log::info!("RPC worker {addr}: no keep-alive on this OS; a vanished box hangs the run");
}

#[cfg(target_os = "linux")]
fn peer_of(fd: i32) -> Option<SocketAddr> {
    // SAFETY: sockaddr_storage is plain data; zero is a valid bit pattern.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: storage and len are valid out-parameters of the right size; getpeername fails
    // harmlessly (ENOTSOCK, ENOTCONN) on descriptors that are not connected sockets.
    let rc = unsafe {
        libc::getpeername(
            fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
        )
    };
    if rc != 0 || storage.ss_family as i32 != libc::AF_INET {
        return None;
    }
    // SAFETY: the family is AF_INET, so the storage holds a sockaddr_in.
    let sin: libc::sockaddr_in =
        unsafe { std::ptr::read((&storage as *const libc::sockaddr_storage).cast()) };
    let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
    Some(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
}

/// The workers whose connection has ended (the worker closed it, or keep-alive found its box
/// gone): every use of their layers would end the process, so a server refuses requests
/// instead (see `minicpmv serve`). Read from the kernel's TCP state of ggml's sockets; sends
/// nothing. Empty without workers, or off Linux.
pub fn lost_workers() -> Vec<WorkerAddr> {
    #[cfg(target_os = "linux")]
    {
        let sockets = SOCKETS.lock().unwrap_or_else(|e| e.into_inner());
        let mut lost: Vec<WorkerAddr> = Vec::new();
        for (addr, target, fd) in sockets.iter() {
            // Lost: a TCP socket out of ESTABLISHED whose peer is the worker (FIN received), or
            // that has no peer any more (reset). A descriptor that is not a TCP socket now, or
            // leads elsewhere, was closed by ggml (its model freed) and perhaps reused.
            let Some(state) = tcp_state(*fd) else {
                continue;
            };
            let peer = peer_of(*fd);
            /// `TCP_LISTEN`: a reused descriptor, never a connection of ours.
            const TCP_LISTEN: u8 = 10;
            let ours = state != TCP_LISTEN && (peer.is_none() || peer == Some(*target));
            if ours && state != TCP_ESTABLISHED && !lost.contains(addr) {
                lost.push(addr.clone());
            }
        }
        lost
    }
    #[cfg(not(target_os = "linux"))]
    Vec::new()
}

/// `TCP_ESTABLISHED` of linux/tcp_states.h.
#[cfg(target_os = "linux")]
const TCP_ESTABLISHED: u8 = 1;

/// The kernel's TCP state of `fd` (linux/tcp_states.h), None when it is not a TCP socket.
#[cfg(target_os = "linux")]
fn tcp_state(fd: i32) -> Option<u8> {
    tcp_info(fd).map(|i| i.tcpi_state)
}

/// `TCP_INFO` of `fd`, None when it is not a TCP socket.
#[cfg(target_os = "linux")]
fn tcp_info(fd: i32) -> Option<libc::tcp_info> {
    // SAFETY: tcp_info is plain data; zero is a valid bit pattern.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: info and len are valid out-parameters of the given size; getsockopt writes at
    // most len bytes (an older kernel writes fewer, the rest stays zero) and fails harmlessly
    // on a descriptor that is not a TCP socket.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (rc == 0 && len >= 1).then_some(info)
}

/// Payload bytes on ggml's connections to the workers since they opened (the kernel's TCP
/// counters: sent and acknowledged, received).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Traffic {
    pub sent: u64,
    pub received: u64,
}

impl Traffic {
    /// Both directions.
    pub fn total(&self) -> u64 {
        self.sent + self.received
    }
}

/// [`Traffic`] now, over the connections [`watch_connections`] found (zero off Linux).
pub fn traffic() -> Traffic {
    let mut t = Traffic::default();
    #[cfg(target_os = "linux")]
    for (_, _, fd) in SOCKETS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        if let Some(i) = tcp_info(*fd) {
            t.sent += i.tcpi_bytes_acked;
            t.received += i.tcpi_bytes_received;
        }
    }
    t
}

#[cfg(target_os = "linux")]
fn set_keep_alive(fd: i32) {
    let set = |level: i32, name: i32, value: i32| {
        // SAFETY: fd is an open socket of this process; value is a c_int option of that size.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        }
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 15);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 5);
    set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 6);
    // Unacknowledged sends give up after a minute too.
    set(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, 60_000);
}

/// ggml's abort hook while workers are in use. ggml calls it just before `abort()`. When the
/// message is from the RPC client (a lost connection), it says which worker no longer answers
/// and ends the process with [`LOST_WORKER_EXIT`]; any other abort keeps ggml's behaviour.
extern "C" fn on_ggml_abort(message: *const c_char) {
    let text = if message.is_null() {
        String::new()
    } else {
        // SAFETY: ggml passes a NUL-terminated buffer that lives for the call.
        unsafe { CStr::from_ptr(message) }
            .to_string_lossy()
            .into_owned()
    };
    if !text.contains("RPC") && !text.contains("ggml-rpc") {
        eprintln!("{text}");
        return;
    }
    let workers = WORKERS.lock().map(|w| w.clone()).unwrap_or_default();
    let mut gone: Vec<String> = lost_workers().iter().map(|a| a.to_string()).collect();
    if gone.is_empty() {
        // No socket state to go by: a worker that takes no connection is the one.
        gone = workers
            .iter()
            .filter(|a| {
                resolve(a)
                    .ok()
                    .and_then(|s| TcpStream::connect_timeout(&s, Duration::from_secs(2)).ok())
                    .is_none()
            })
            .map(|a| a.to_string())
            .collect();
    }
    let who = if gone.is_empty() {
        format!(
            "one of the RPC workers ({}) dropped the connection",
            workers
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        format!("RPC worker {} no longer answers", gone.join(", "))
    };
    eprintln!("error: {who}; the run cannot go on without its layers. Restart the worker and run again. (ggml: {text})");
    // SAFETY: _exit ends the process at once without running atexit handlers or destructors,
    // which could block on the RPC threads ggml is aborting from.
    unsafe { libc::_exit(LOST_WORKER_EXIT) }
}

/// Serves this machine's CPU to RPC clients on `host:port` until the process ends (ggml's
/// server: one client at a time). `mem_bytes` > 0 advertises that much memory to clients.
/// Returns only on failure.
pub fn serve(
    host: &str,
    port: u16,
    threads: u32,
    mem_bytes: u64,
    cache_dir: Option<&std::path::Path>,
) -> Result<std::convert::Infallible, RpcError> {
    if !available() {
        return Err(RpcError::NotBuilt);
    }
    super::init_backend();
    let endpoint = format!("{host}:{port}");
    // ggml only prints "Failed to create server socket"; bind once ourselves for a clear error.
    drop(
        std::net::TcpListener::bind((host, port)).map_err(|source| RpcError::Listen {
            endpoint: endpoint.clone(),
            source,
        })?,
    );
    let c_endpoint = CString::new(endpoint.clone())
        .map_err(|_| RpcError::Serve(format!("{endpoint:?} contains a NUL byte")))?;
    let c_cache = cache_dir
        .map(|p| CString::new(p.as_os_str().as_encoded_bytes()))
        .transpose()
        .map_err(|_| RpcError::Serve("the cache path contains a NUL byte".into()))?;
    let mut err = [0 as c_char; 256];
    // SAFETY: the strings are NUL-terminated and live across the call (which does not return
    // while serving); err has err.len() bytes; the shim catches C++ exceptions.
    unsafe {
        shim::mcv_rpc_serve(
            c_endpoint.as_ptr(),
            c_cache.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
            threads,
            mem_bytes,
            err.as_mut_ptr(),
            err.len(),
        )
    };
    Err(RpcError::Serve(c_buf_to_string(&err)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_and_bad_ones_name_the_problem() {
        let a: WorkerAddr = "192.168.1.20:50052".parse().unwrap();
        assert_eq!((a.host.as_str(), a.port), ("192.168.1.20", 50052));
        assert_eq!(a.to_string(), "192.168.1.20:50052");
        let b: WorkerAddr = " pi5-b.local:6000 ".parse().unwrap();
        assert_eq!(b.host, "pi5-b.local");
        for (bad, says) in [
            ("localhost", "not host:port"),
            (":50052", "no host"),
            ("h:0", "1 to 65535"),
            ("h:70000", "1 to 65535"),
            ("h:port", "1 to 65535"),
            ("::1:50052", "no host"),
            ("fe80::1:50052", "IPv6"),
            ("a b:1", "not a host name"),
        ] {
            let e = bad.parse::<WorkerAddr>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let list = parse_workers("a:1,b:2").unwrap();
        assert_eq!(list.len(), 2);
        assert!(parse_workers("a:1,a:1").unwrap_err().contains("twice"));
        let many: Vec<String> = (1..=17).map(|p| format!("h:{p}")).collect();
        assert!(parse_workers(&many.join(","))
            .unwrap_err()
            .contains("at most 16"));
    }

    /// A listener that is not an RPC worker: the probe fails with an error naming it, in
    /// bounded time, instead of ggml's abort.
    #[test]
    fn probe_of_a_port_that_is_not_a_worker_is_a_clear_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 33];
            let _ = s.read_exact(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        });
        let addr = WorkerAddr {
            host: "127.0.0.1".into(),
            port,
        };
        let err = probe(&addr, Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&addr.to_string()), "{err}");
        assert!(err.contains("not a compatible RPC worker"), "{err}");
        server.join().unwrap();
    }

    #[test]
    fn probe_of_a_closed_port_says_connect_failed() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr = WorkerAddr {
            host: "127.0.0.1".into(),
            port,
        };
        let err = probe(&addr, Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("RPC worker 127.0.0.1:{port}: cannot connect")),
            "{err}"
        );
        assert!(err.contains("minicpmv worker"), "{err}");
    }
}
