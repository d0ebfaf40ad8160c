//! scripts/bench's own unit tests (Python, standard library only, offline), run here so that CI
//! runs them: `python3 -m unittest discover -s scripts/benchlib/tests -t scripts`, with this
//! test run's binary for the test that reads its `inspect --json` and `plan --json`.

use std::path::Path;
use std::process::Command;

use crate::harness::{bin, work_dir};

#[test]
fn the_bench_scripts_unit_tests_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("python3")
        .args([
            "-m",
            "unittest",
            "discover",
            "-s",
            "scripts/benchlib/tests",
            "-t",
            "scripts",
        ])
        .current_dir(&root)
        .env("MINICPMV_BIN", bin())
        .env("MINICPMV_HOME", work_dir().join("home"))
        .env("MINICPMV_OFFLINE", "1")
        .output()
        .expect("cannot start python3 (CI installs it; see .ci/run)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the bench's unit tests failed:\n{stderr}"
    );
    // unittest prints "Ran N tests" and "OK"; a discovery that found nothing is a failure too.
    let ran: usize = stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("Ran ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    assert!(ran >= 50, "only {ran} bench tests ran:\n{stderr}");
}
