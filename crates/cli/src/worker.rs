//! `minicpmv worker`: serve this box's CPU to `--rpc` clients over ggml's RPC protocol, as
//! llama.cpp's `rpc-server` does (same protocol: either can serve the other's clients).

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;

use minicpmv::ffi::rpc;

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Address to listen on. The default takes connections from this machine only; give this
    /// box's LAN address (or 0.0.0.0) to serve other boxes. The protocol has no
    /// authentication and no encryption: anyone who can reach the port can use this box's CPU
    /// and memory and read the layers it holds. Trusted networks only.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port to listen on.
    #[arg(long, default_value_t = rpc::DEFAULT_PORT,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// Threads for the layers computed here (default: the physical performance cores).
    #[arg(short = 't', long, value_parser = clap::value_parser!(u32).range(1..1025))]
    pub threads: Option<u32>,
    /// Memory to offer clients, in MB (their default split and `plan --rpc` count with it).
    /// Default: the memory this box has available.
    #[arg(long, value_name = "MB", value_parser = clap::value_parser!(u64).range(1..(1 << 24)))]
    pub mem: Option<u64>,
    /// Keep the tensors clients send in this folder, keyed by hash, so that the next client
    /// with the same model sends hashes instead of gigabytes (ggml's RPC cache).
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,
}

pub fn main(args: WorkerArgs) -> Result<()> {
    if !rpc::available() {
        return Err(rpc::RpcError::NotBuilt.into());
    }
    if args.host.is_ipv6() {
        anyhow::bail!(
            "--host {}: ggml's RPC server listens on IPv4 only",
            args.host
        );
    }
    if let Some(dir) = &args.cache {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--cache {}: cannot create the folder", dir.display()))?;
    }
    let threads = args
        .threads
        .map_or_else(super::common::default_threads, |t| t as i32) as u32;
    let mem_bytes = args.mem.map_or(0, |mb| mb << 20);
    let offered = match args.mem {
        Some(mb) => format!("{mb} MB (--mem)"),
        None => minicpmv::plan::system::available_memory().map_or_else(
            || "its available memory".to_string(),
            |a| format!("{} available now", super::output::human_bytes(a.bytes)),
        ),
    };
    crate::note!(
        "minicpmv worker: serving this machine's CPU ({threads} threads, {offered}) on {}:{} over ggml RPC, protocol {}.{}.{}, one client at a time.",
        args.host,
        args.port,
        rpc::PROTOCOL.0,
        rpc::PROTOCOL.1,
        rpc::PROTOCOL.2
    );
    if !args.host.is_loopback() {
        crate::note!(
            "warning: {} is reachable from the network. The RPC protocol has no authentication and no encryption: anyone who can reach this port can use this machine's CPU and memory. Use it on a trusted network only.",
            args.host
        );
    }
    let host = args.host.to_string();
    match rpc::serve(&host, args.port, threads, mem_bytes, args.cache.as_deref()) {
        Ok(never) => match never {},
        Err(e) => Err(e.into()),
    }
}
