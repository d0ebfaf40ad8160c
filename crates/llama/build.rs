//! Compiles our C++ shim (vendor/shim) against the llama.cpp sources that llama-cpp-sys-2
//! bundles, and generates its Rust bindings with bindgen. It never builds llama.cpp itself:
//! the shim links against the single llama.cpp build of llama-cpp-sys-2 (its static libmtmd).

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

const SHIM_DIR: &str = "vendor/shim";
const SYS_CRATE: &str = "llama-cpp-sys-2-0.1.161";

fn main() {
    println!("cargo:rerun-if-changed={SHIM_DIR}/minicpmv_shim.h");
    println!("cargo:rerun-if-changed={SHIM_DIR}/minicpmv_shim.cpp");
    println!("cargo:rerun-if-env-changed=MINICPMV_LLAMA_CPP_SRC");
    let src = match find_llama_cpp_source() {
        Ok(src) => src,
        Err(msg) => {
            eprintln!("error: {msg}");
            panic!(
                "minicpmv build: cannot find the llama.cpp sources bundled in {SYS_CRATE}: {msg}"
            );
        }
    };
    let includes = [
        src.join("include"),
        src.join("ggml/include"),
        src.join("tools/mtmd"),
        // ggml-backend-impl.h: the device struct, for `worker --mem`.
        src.join("ggml/src"),
        // llama-ext.h: llama.cpp's memory breakdown, for the memory planner.
        src.join("src"),
    ];
    for dir in &includes {
        assert!(
            dir.is_dir(),
            "minicpmv build: expected include folder {} in the bundled llama.cpp",
            dir.display()
        );
    }

    let mut build = cc::Build::new();
    println!("cargo:rerun-if-env-changed=GGML_RPC");
    if env::var_os("CARGO_FEATURE_RPC").is_some() {
        let ggml_rpc = env::var("GGML_RPC").unwrap_or_default();
        assert!(
            matches!(
                ggml_rpc.to_ascii_uppercase().as_str(),
                "ON" | "1" | "TRUE" | "YES"
            ),
            "minicpmv build: the `rpc` feature needs llama.cpp built with GGML_RPC=ON (set in \
             .cargo/config.toml; GGML_RPC is {ggml_rpc:?} here). Build without it: \
             GGML_RPC=OFF cargo build --release -p minicpmv-cli --no-default-features --features openmp"
        );
        build.define("MCV_RPC", None);
    }
    build
        .cpp(true)
        .std("c++17")
        .file(format!("{SHIM_DIR}/minicpmv_shim.cpp"))
        .include(SHIM_DIR)
        .warnings(false);
    for dir in &includes {
        build.include(dir);
    }
    build.compile("minicpmv_shim");

    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let bindings = bindgen::Builder::default()
        .header(format!("{SHIM_DIR}/minicpmv_shim.h"))
        .allowlist_function("mcv_.*")
        .allowlist_type("mcv_.*")
        .derive_default(true)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("minicpmv build: bindgen failed on vendor/shim/minicpmv_shim.h");
    bindings
        .write_to_file(out.join("shim_bindings.rs"))
        .expect("minicpmv build: cannot write shim bindings");
}

/// The bundled llama.cpp source folder, found in order:
/// 1. `MINICPMV_LLAMA_CPP_SRC` (an override for unusual setups);
/// 2. the sys crate's own CMake cache: llama-cpp-sys-2 has `links = "llama"` and prints
///    `cargo:root=<its OUT_DIR>`, so we get `DEP_LLAMA_ROOT`; its `build/CMakeCache.txt` names the
///    source folder it configured (`CMAKE_HOME_DIRECTORY`);
/// 3. the crate in Cargo's registry source folders.
fn find_llama_cpp_source() -> Result<PathBuf, String> {
    if let Ok(dir) = env::var("MINICPMV_LLAMA_CPP_SRC") {
        let dir = PathBuf::from(dir);
        return if is_llama_cpp(&dir) {
            Ok(dir)
        } else {
            Err(format!(
                "MINICPMV_LLAMA_CPP_SRC={} is not a llama.cpp source folder",
                dir.display()
            ))
        };
    }
    let mut tried = Vec::new();
    if let Ok(root) = env::var("DEP_LLAMA_ROOT") {
        let cache = Path::new(&root).join("build/CMakeCache.txt");
        println!("cargo:rerun-if-changed={}", cache.display());
        if let Ok(text) = fs::read_to_string(&cache) {
            if let Some(dir) = text
                .lines()
                .find_map(|l| l.strip_prefix("CMAKE_HOME_DIRECTORY:INTERNAL="))
            {
                let dir = PathBuf::from(dir.trim());
                if is_llama_cpp(&dir) {
                    return Ok(dir);
                }
            }
        }
        tried.push(cache.display().to_string());
    } else {
        tried.push("DEP_LLAMA_ROOT (not set)".to_string());
    }
    let cargo_home = env::var("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|_| env::var("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map_err(|_| "neither CARGO_HOME nor HOME is set".to_string())?;
    let registry = cargo_home.join("registry/src");
    if let Ok(entries) = fs::read_dir(&registry) {
        for entry in entries.flatten() {
            let dir = entry.path().join(SYS_CRATE).join("llama.cpp");
            if is_llama_cpp(&dir) {
                return Ok(dir);
            }
        }
    }
    tried.push(registry.display().to_string());
    Err(format!(
        "looked in {}; set MINICPMV_LLAMA_CPP_SRC to the llama.cpp folder of {SYS_CRATE}",
        tried.join(", ")
    ))
}

fn is_llama_cpp(dir: &Path) -> bool {
    dir.join("tools/mtmd/clip.h").is_file() && dir.join("include/llama.h").is_file()
}
