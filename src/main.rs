//! The `minicpmv` command line. Thin: argument parsing, printing, exit codes; the work is in
//! the library.

use std::process::ExitCode;

mod cli;

fn main() -> ExitCode {
    cli::main()
}
