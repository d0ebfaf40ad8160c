"""The command line of scripts/bench, and main() as a list of named steps:

    options -> plan -> build both programs -> machine facts and bandwidth -> image and models
    -> runs -> summaries -> results.json, results.md, plots (and docs/BENCHMARKS.md's headline)
"""
import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .config import DEFAULT_PROMPT, FULL_CONFIGS, QUICK_CONFIGS, Config, parse_config
from .image import write_png
from .machine import machine_facts, measure_bandwidth
from .models import prepare_models
from .ours import ours_argv
from .plots import write_svgs
from .report import fill_headline, render_markdown
from .runs import Runner, run_ab_series, run_lowmem_series, run_slices_sweep
from .stats import ab_summary
from .summary import result_dict
from .theirs import cmake_cache_value, their_argv
from .util import ROOT, die, log, run_checked, write_json_atomic, write_text_atomic
from .weights import read_weights_per_token

OURS_BIN = ROOT / "target/release/minicpmv"
DOCS_OUT = ROOT / "docs/benchmarks"


# ---------------------------------------------------------------------------------------------
# Options


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description="Benchmark minicpmv against llama.cpp's llama-mtmd-cli (see docs/BENCHMARKS.md).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", action="store_true",
                    help="only the server section: `minicpmv serve` against llama-cpp-python's server on "
                         "the headline pair (default 2.6:Q4_K_M:F16), output docs/benchmarks/server/ "
                         "(see benchlib/server.py)")
    ap.add_argument("--video", action="store_true",
                    help="only the video section: `minicpmv run --video` on a generated 60 s 720p clip "
                         "against llama-mtmd-cli fed the same frames as images, for each of --configs; "
                         "output docs/benchmarks/video/ (see benchlib/video.py)")
    ap.add_argument("--rpc", action="store_true",
                    help="only the RPC section: the headline pair local against split 50/50 over two "
                         "`minicpmv worker` on loopback (time per token, prefill, load, traffic per "
                         "token); output docs/benchmarks/rpc/ (see benchlib/rpc.py)")
    ap.add_argument("--video-frames", type=int, default=2,
                    help="--video: frames taken from the clip (--max-frames; default 2: each 720p "
                         "chunk costs seconds on 2 cores)")
    ap.add_argument("--rounds", type=int, default=2,
                    help="--server, --video: rounds, in alternating order (default 2)")
    ap.add_argument("--quick", action="store_true",
                    help="tiny synthetic 2.6 pair, small image, -n 8, 1 pair, output to a temp folder: "
                         "checks the whole script in seconds (figures meaningless)")
    add_model_options(ap)
    add_run_options(ap)
    add_build_options(ap)
    return ap


def add_model_options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--configs", help="comma-separated VERSION:TEXT:MMPROJ, the first is the headline "
                    f"(default: {','.join(FULL_CONFIGS)}; quick: {','.join(QUICK_CONFIGS)})")
    ap.add_argument("--pair", action="append", default=[], metavar="LABEL=MODEL,MMPROJ",
                    help="use these files for configuration LABEL (e.g. 2.6:Q4_K_M:F16=/m/model-Q4_K_M.gguf,"
                         "/m/mmproj.gguf); added to --configs if missing; repeatable")
    ap.add_argument("--model-dir", action="append", default=[], metavar="[VERSION=]DIR",
                    help="folder holding (or to receive) the files of a version, named model.gguf (F16), "
                         "model-Q4_K_M.gguf, mmproj.gguf (F16), mmproj-Q8_0.gguf, ... Without VERSION=: "
                         "the headline's version. Default: BENCH_DIR/vVERSION")
    ap.add_argument("--bench-dir", type=Path, default=Path(os.environ.get("MINICPMV_BENCH_DIR") or
                                                           Path.home() / ".cache/minicpmv/bench"),
                    help="cache of models, image and logs (default: $MINICPMV_BENCH_DIR or "
                         "~/.cache/minicpmv/bench)")
    ap.add_argument("--out", type=Path, help="output folder (default: docs/benchmarks; quick: a temp folder)")


def add_run_options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--pairs", type=int,
                    help="A/B pairs of the headline configuration (default 6, an even count so "
                         "that each side runs first equally often; quick 1)")
    ap.add_argument("--secondary-pairs", type=int,
                    help="A/B pairs of the configurations after the headline (default 3; quick 1)")
    ap.add_argument("--series-runs", type=int,
                    help="runs per point of the --max-slices sweep and the --low-mem series "
                         "(default 1)")
    ap.add_argument("--threads", "-t", type=int, default=2, help="threads for both sides (default 2)")
    ap.add_argument("--n-predict", "-n", type=int, help="tokens to generate (default 32; quick 8)")
    ap.add_argument("--ctx", "-c", type=int, default=4096, help="context length (default 4096)")
    ap.add_argument("--image-size", help="WxH of the generated test image (default 1920x1080; quick 640x360)")
    ap.add_argument("--image", type=Path, help="use this image instead of the generated one")
    ap.add_argument("--prompt", default=DEFAULT_PROMPT)
    ap.add_argument("--slices", default="1,4,9",
                    help="--max-slices values of our TTFT sweep on the headline (default 1,4,9; 9 reuses the A/B runs)")
    ap.add_argument("--no-sweep", action="store_true", help="skip the --max-slices sweep")
    ap.add_argument("--no-lowmem", action="store_true", help="skip the --low-mem series")
    ap.add_argument("--llama-warmup", action="store_true",
                    help="let llama-mtmd-cli do its warm-up decode and projector warm-up (its default); "
                         "by default both sides skip warm-ups")


def add_build_options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--keep-f16", action="store_true",
                    help="keep the F16 language model after quantizing (15 GB for 2.6)")
    ap.add_argument("--their-build", choices=["stock", "same-flags"], default="stock",
                    help="llama-mtmd-cli as llama.cpp's README builds it (stock, the default) or with "
                         "our build's exact compiler flags (same-flags)")
    ap.add_argument("--no-build", action="store_true",
                    help="use the existing target/release/minicpmv and llama-mtmd-cli, build nothing")
    ap.add_argument("--ours-bin", type=Path, help="our binary (default target/release/minicpmv, built by "
                    "cargo unless --no-build)")
    ap.add_argument("--membw-mib", type=int, help="bandwidth probe buffer (default 1024 MiB; quick 256)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per run before it is killed")
    ap.add_argument("--render", action="store_true",
                    help="run nothing: rewrite results.md, the plots (and the headline section of "
                         "BENCHMARKS.md) from the results.json in the output folder")


def apply_defaults(a: argparse.Namespace) -> None:
    """The defaults that depend on --quick, our binary's path; dies on values that cannot run."""
    a.ours_bin = a.ours_bin.resolve() if a.ours_bin else OURS_BIN

    def default(value, normal, quick):  # an explicit 0 stays 0 and is refused below
        return (quick if a.quick else normal) if value is None else value
    a.pairs = default(a.pairs, 6, 1)
    a.secondary_pairs = default(a.secondary_pairs, 3, 1)
    a.series_runs = default(a.series_runs, 1, 1)
    a.n_predict = default(a.n_predict, 32, 8)
    a.membw_mib = default(a.membw_mib, 1024, 256)
    if min(a.pairs, a.secondary_pairs, a.series_runs) < 1 or a.n_predict < 2 or a.threads < 1:
        die("--pairs, --secondary-pairs, --series-runs >= 1, -n >= 2 and -t >= 1 are needed")


# ---------------------------------------------------------------------------------------------
# The plan of a bench run: configurations, folders, image size


@dataclass
class BenchPlan:
    """What the options decide before anything runs."""
    configs: list[Config]
    headline: Config
    bench_dir: Path
    folders: dict[str, Path]  # MiniCPM-V version -> folder of its model files
    out_dir: Path
    logs: Path
    img_w: int
    img_h: int
    scale: str  # `minicpmv synth --scale`: tiny (quick) or real
    slices: list[int]  # --max-slices values of the sweep


def make_plan(a: argparse.Namespace) -> BenchPlan:
    """Everything the options decide before anything runs; makes the output folder."""
    img_w, img_h = image_size(a.image_size or ("640x360" if a.quick else "1920x1080"))
    configs = [parse_config(s) for s in (a.configs.split(",") if a.configs
                                          else (QUICK_CONFIGS if a.quick else FULL_CONFIGS))]
    apply_pairs(configs, a.pair)
    bench_dir = a.bench_dir.resolve()
    out_dir = output_dir(a)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    logs = (out_dir / "logs") if a.quick else (bench_dir / "logs" / stamp)
    log(f"output: {out_dir}; logs: {logs}")
    return BenchPlan(configs=configs, headline=configs[0], bench_dir=bench_dir,
                     folders=model_folders(a, configs, bench_dir), out_dir=out_dir, logs=logs,
                     img_w=img_w, img_h=img_h, scale="tiny" if a.quick else "real",
                     slices=slice_values(a.slices))


def image_size(size: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)x(\d+)", size)
    if not m:
        die(f"bad --image-size {size!r}")
    return int(m.group(1)), int(m.group(2))


def slice_values(spec: str) -> list[int]:
    """--slices 1,4,9 -> [1, 4, 9] (sorted, no repeats)."""
    try:
        return sorted({int(s) for s in spec.split(",") if s.strip()})
    except ValueError:
        die(f"bad --slices {spec!r}: expected comma-separated numbers, e.g. 1,4,9")


def apply_pairs(configs: list[Config], specs: list[str]) -> None:
    """--pair LABEL=MODEL,MMPROJ: gives a configuration its files (adding it if missing)."""
    for spec in specs:
        label, eq, files = spec.partition("=")
        paths = files.split(",")
        if not eq or len(paths) != 2:
            die(f"bad --pair {spec!r}: expected LABEL=MODEL,MMPROJ")
        c = parse_config(label)
        match = next((x for x in configs if x.label == c.label), None)
        if match is None:
            configs.append(c)
            match = c
        match.model, match.mmproj = Path(paths[0]).resolve(), Path(paths[1]).resolve()
        for p in (match.model, match.mmproj):
            if not p.is_file():
                die(f"--pair {label}: {p} does not exist")


def model_folders(a: argparse.Namespace, configs: list[Config], bench_dir: Path) -> dict[str, Path]:
    """The folder of each version's model files: BENCH_DIR/vVERSION (quick: BENCH_DIR/quick/
    vVERSION-tiny), or --model-dir [VERSION=]DIR (no VERSION: the headline's)."""
    folders = {c.version: bench_dir / ("quick" if a.quick else "") / f"v{c.version}{'-tiny' if a.quick else ''}"
               for c in configs}
    for spec in a.model_dir:
        v, eq, d = spec.partition("=")
        if not eq:
            v, d = configs[0].version, spec
        folders[v] = Path(d).resolve()
    return folders


def output_dir(a: argparse.Namespace) -> Path:
    if a.out:
        return a.out.resolve()
    if a.quick:
        return Path(tempfile.mkdtemp(prefix="minicpmv-bench-quick-"))
    return DOCS_OUT


# ---------------------------------------------------------------------------------------------
# Steps


def build_programs(a: argparse.Namespace) -> Path:
    """Builds ours (cargo) and theirs (scripts/build-llama-mtmd-cli) unless --no-build; returns
    their binary. Dies if either binary is missing."""
    their_bin = ROOT / f"target/llama-mtmd-cli/build-{a.their_build}/bin/llama-mtmd-cli"
    if not a.no_build:
        run_checked(["cargo", "build", "--release", "--manifest-path", ROOT / "Cargo.toml"],
                    "cargo build --release")
        build_cmd = [str(ROOT / "scripts/build-llama-mtmd-cli")]
        if a.their_build == "same-flags":
            build_cmd.append("--same-flags")
        r = subprocess.run(build_cmd, capture_output=True, text=True)
        if r.returncode != 0:
            die(f"scripts/build-llama-mtmd-cli failed: {r.stderr.strip()}")
        printed = r.stdout.strip().splitlines()
        if printed:
            their_bin = Path(printed[-1])
    for b in (a.ours_bin, their_bin):
        if not os.access(b, os.X_OK):
            die(f"{b} is missing: run without --no-build")
    return their_bin


def low_mem_support(a: argparse.Namespace) -> tuple[bool, bool]:
    """(whether `minicpmv run` has --low-mem, whether the --low-mem series runs)."""
    help_text = subprocess.run([str(a.ours_bin), "run", "--help"], capture_output=True, text=True).stdout
    has_low_mem = "--low-mem" in help_text
    do_lowmem = not a.no_lowmem
    if do_lowmem and not has_low_mem:
        if a.quick:
            log("note: `minicpmv run` has no --low-mem yet: the low-mem series is skipped")
            do_lowmem = False
        else:
            die("`minicpmv run` has no --low-mem: the low-mem series cannot run (--no-lowmem skips it)")
    return has_low_mem, do_lowmem


def measure_machine(a: argparse.Namespace) -> tuple[dict, dict]:
    """Machine facts, and the memory read bandwidth."""
    facts = machine_facts()
    if facts["loadavg_at_start"][0] > 0.5:
        log(f"warning: load average {facts['loadavg_at_start'][0]:.2f}: the machine is not idle, "
            "figures will be noisy")
    return facts, measure_bandwidth(a.threads, a.membw_mib)


def input_image(a: argparse.Namespace, plan: BenchPlan) -> Path:
    """--image, or the generated test image (written once into the bench folder)."""
    if a.image:
        return a.image.resolve()
    img = plan.bench_dir / f"image-{plan.img_w}x{plan.img_h}.png"
    if not img.exists():
        log(f"writing the test image {img}")
        write_png(img, plan.img_w, plan.img_h)
    return img


def prepare_model_facts(a: argparse.Namespace, plan: BenchPlan) -> dict:
    """Finds or makes the model files; their paths, sizes and bytes read per token."""
    prepare_models(a.ours_bin, plan.configs, plan.folders, plan.scale, a.threads, a.keep_f16)
    return {c.label: {"model": str(c.model), "mmproj": str(c.mmproj),
                      "model_bytes": c.model.stat().st_size, "mmproj_bytes": c.mmproj.stat().st_size,
                      "per_token": read_weights_per_token(a.ours_bin, c.model, c.mmproj)}
            for c in plan.configs}


def run_all(a: argparse.Namespace, plan: BenchPlan, img: Path, their_bin: Path,
            do_lowmem: bool) -> list[dict]:
    """Every measured run: A/B series, then the sweep and the --low-mem series on the headline."""
    runner = Runner(plan.logs, a.timeout, a.n_predict)
    run_ab_series(runner, plan.configs, plan.headline, img, plan.bench_dir / "image-64x64.png", a,
                  their_bin)
    if not a.no_sweep:
        run_slices_sweep(runner, plan.headline, img, a, plan.slices)
    if do_lowmem:
        run_lowmem_series(runner, plan.headline, img, a)
    return runner.runs


def settings_dict(a: argparse.Namespace, plan: BenchPlan, img: Path, their_bin: Path,
                  has_low_mem: bool) -> dict:
    """How the bench ran, for results.json and the report."""
    return {"threads": a.threads, "n_predict": a.n_predict, "ctx": a.ctx, "pairs": a.pairs,
            "secondary_pairs": a.secondary_pairs, "series_runs": a.series_runs,
            "prompt": a.prompt, "image": str(img), "image_size": f"{plan.img_w}x{plan.img_h}",
            "scale": plan.scale, "quick": a.quick, "llama_warmup": a.llama_warmup,
            "their_build": a.their_build,
            "their_cxx_flags": cmake_cache_value(their_bin.parent.parent / "CMakeCache.txt",
                                                 "CMAKE_CXX_FLAGS"),
            "ours_low_mem_flag": has_low_mem, "headline": plan.headline.label,
            "ours_command": shlex.join(map(str, ours_argv(plan.headline, img, a))),
            "their_command": shlex.join(map(str, their_argv(plan.headline, img, a, their_bin))),
            "bench_command": shlex.join(["scripts/bench", *sys.argv[1:]])}


def write_outputs(out_dir: Path, result: dict, configs: list[Config], headline: Config,
                  done: str) -> str:
    """results.json, the plots and results.md (returned); the headline section of
    docs/BENCHMARKS.md too when a full run writes into docs/benchmarks."""
    write_json_atomic(out_dir / "results.json", result)
    write_svgs(out_dir, result, configs, headline)
    md = render_markdown(result, configs, headline)
    write_text_atomic(out_dir / "results.md", md)
    log(done)
    if not result["settings"]["quick"] and out_dir == DOCS_OUT.resolve():
        fill_headline(ROOT / "docs/BENCHMARKS.md", result, headline)
    return md


def render_only(out_dir: Path) -> None:
    """--render: the outputs of an earlier run, from its results.json."""
    try:
        result = json.loads((out_dir / "results.json").read_text())
    except (OSError, ValueError) as e:
        die(f"--render: cannot read {out_dir / 'results.json'}: {e}")
    labels = list(result["summaries"])
    # The summaries are recomputed from the runs, so that a newer script's statistics apply.
    result["summaries"] = {label: ab_summary(result["runs"], label) for label in labels}
    head = result["settings"]["headline"]
    configs = [parse_config(x) for x in [head] + [x for x in labels if x != head]]
    write_outputs(out_dir, result, configs, configs[0],
                  f"rewrote {out_dir}/results.md and the SVG plots from results.json")


# ---------------------------------------------------------------------------------------------
# Main


def ours_on_headline(a: argparse.Namespace, plan: BenchPlan, name: str) -> Path:
    """The setup of the sections that run only ours on the headline pair: build (unless
    --no-build), find or make the pair; returns the output folder (docs/benchmarks/NAME)."""
    if not a.no_build:
        run_checked(["cargo", "build", "--release", "--manifest-path", ROOT / "Cargo.toml"],
                    "cargo build --release")
    prepare_models(a.ours_bin, [plan.headline], plan.folders, plan.scale, a.threads, a.keep_f16)
    return a.out.resolve() if a.out else (plan.out_dir if a.quick else DOCS_OUT / name)


def print_section(out: Path) -> None:
    log(f"wrote {out}/results.md and results.json")
    print((out / "results.md").read_text())


def server_section(a: argparse.Namespace, plan: BenchPlan) -> None:
    """`--server`: ours builds unless --no-build; theirs is llama-cpp-python, installed by pip."""
    from .machine import git
    from .server import run_server_bench
    out = ours_on_headline(a, plan, "server")
    c = plan.headline
    try:
        run_server_bench(a.ours_bin, c.model, c.mmproj, out, plan.logs, a.rounds, a.threads,
                         a.ctx, a.n_predict if a.n_predict else 16, a.timeout,
                         git("rev-parse", "--short=12", "HEAD"), plan.scale)
    except RuntimeError as e:
        die(f"server bench: {e}")
    print_section(out)


def video_section(a: argparse.Namespace, plan: BenchPlan) -> None:
    """`--video`: every configuration of --configs, ours against llama-mtmd-cli."""
    from .machine import git
    from .video import make_clip, run_video_bench
    their_bin = build_programs(a)
    prepare_models(a.ours_bin, plan.configs, plan.folders, plan.scale, a.threads, a.keep_f16)
    out = a.out.resolve() if a.out else (plan.out_dir if a.quick else DOCS_OUT / "video")
    out.mkdir(parents=True, exist_ok=True)
    seconds = a.video_seconds = 4 if a.quick else 60
    clip = make_clip(plan.bench_dir / f"clip-{seconds}s-720p.mp4", seconds=seconds)
    try:
        run_video_bench(a, plan.configs, their_bin, clip, out, plan.logs,
                        git("rev-parse", "--short=12", "HEAD"))
    except (RuntimeError, OSError, ValueError) as e:
        die(f"video bench: {e}")
    print_section(out)


def rpc_section(a: argparse.Namespace, plan: BenchPlan) -> None:
    """`--rpc`: ours local against ours over two loopback workers, on the headline pair."""
    from .machine import git
    from .rpc import run_rpc_bench
    out = ours_on_headline(a, plan, "rpc")
    c = plan.headline
    img = a.image.resolve() if a.image else plan.bench_dir / "image-448x448.png"
    if not img.exists():
        write_png(img, 448, 448)
    try:
        run_rpc_bench(a.ours_bin, c.model, c.mmproj, img, out, plan.logs, a.rounds, a.threads,
                      a.ctx, a.n_predict, a.timeout, git("rev-parse", "--short=12", "HEAD"),
                      plan.scale)
    except (RuntimeError, OSError, ValueError) as e:
        die(f"rpc bench: {e}")
    print_section(out)


def main(argv: list[str] | None = None) -> None:
    a = build_parser().parse_args(argv)
    if a.render:
        render_only((a.out or DOCS_OUT).resolve())
        return
    n_predict_given = a.n_predict
    apply_defaults(a)
    plan = make_plan(a)
    if a.server:
        a.n_predict = n_predict_given
        server_section(a, plan)
        return
    if a.rpc:
        a.n_predict = n_predict_given or 16
        rpc_section(a, plan)
        return
    if a.video:
        a.n_predict = n_predict_given or 8
        video_section(a, plan)
        return
    their_bin = build_programs(a)
    has_low_mem, do_lowmem = low_mem_support(a)
    facts, bw = measure_machine(a)
    img = input_image(a, plan)
    model_facts = prepare_model_facts(a, plan)
    runs = run_all(a, plan, img, their_bin, do_lowmem)
    settings = settings_dict(a, plan, img, their_bin, has_low_mem)
    result = result_dict(facts, bw, settings, model_facts, runs, plan.configs, plan.headline,
                         plan.slices)
    md = write_outputs(plan.out_dir, result, plan.configs, plan.headline,
                       f"wrote {plan.out_dir}/results.md, results.json and the SVG plots")
    print(md)
