//! `portable` links llama.cpp's shared libraries, which llama-cpp-sys-2 places next to the
//! binary (the CPU-backend modules are found there too, crates/llama/src/backend.rs): the binary
//! looks for them in its own folder. A link argument applies only to the package whose build
//! script prints it, so this is the binary's build script, not minicpmv-llama's.

fn main() {
    if std::env::var_os("CARGO_FEATURE_PORTABLE").is_some() {
        let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
        if os == "macos" {
            println!("cargo:rustc-link-arg=-Wl,-rpath,@executable_path");
        } else if os != "windows" {
            println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN");
        }
    }
}
