"""Finding or making the model files of the configurations: `minicpmv synth` writes an F16 pair
per version once, `minicpmv quantize` makes every other type from it."""
import os
import shutil
from pathlib import Path

from .config import Config, find_in, made_files, mmproj_names, note_made, text_names
from .util import die, log, run_checked


def synth_pair(ours_bin: Path, folder: Path, version: str, scale: str, want_model: bool,
               want_mmproj: bool) -> None:
    """Writes the F16 synthetic pair into a temp folder next to `folder`, then renames the files
    that are wanted into place (so an interrupted run leaves no half-written model.gguf)."""
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_synth_dirs(folder)
    tmp = folder / f".synth-tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    free = shutil.disk_usage(folder).free
    log(f"writing a synthetic MiniCPM-V {version} ({scale}) F16 pair into {folder} "
        f"({free / 1e9:.0f} GB free there)")
    if scale == "real" and free < 30e9:
        log("warning: the first run needs about 30 GB free for 2.6 (F16 text 15 GB while "
            "quantizing): it may run out of space")
    run_checked([ours_bin, "synth", "--version", version, "--scale", scale, "--out-dir", tmp],
                f"synth {version} {scale}")
    for name, wanted in (("model.gguf", want_model), ("mmproj.gguf", want_mmproj)):
        if wanted:
            (tmp / name).replace(folder / name)
            note_made(folder, name, True)
    shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_synth_dirs(folder: Path) -> None:
    """Removes the temp folders of synth runs whose process is gone."""
    for stale in folder.glob(".synth-tmp-*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if not (pid.isdigit() and Path(f"/proc/{pid}").exists()):
            shutil.rmtree(stale, ignore_errors=True)


def quantize(ours_bin: Path, src: Path, dst: Path, qtype: str, threads: int) -> None:
    # `minicpmv quantize` writes a temporary file in dst's folder and renames it on success.
    run_checked([ours_bin, "quantize", src, dst, "--type", qtype.lower(), "-t", str(threads)],
                f"quantize {src.name} -> {dst.name}")
    note_made(dst.parent, dst.name, True)


def prepare_models(ours_bin: Path, configs: list[Config], folders: dict[str, Path], scale: str,
                   threads: int, keep_f16: bool) -> None:
    """Finds or makes every file the configurations need; per version: synth (F16) once, every
    quantization from it, then the F16 language model is deleted if this script made it and no
    configuration runs it (it is the big one: 15 GB for 2.6), unless keep_f16. Configurations
    given their files (--pair) are left alone."""
    by_version: dict[str, list[Config]] = {}
    for c in configs:
        if c.model is None or c.mmproj is None:
            by_version.setdefault(c.version, []).append(c)
    for version, cs in by_version.items():
        prepare_version(ours_bin, cs, folders[version], version, scale, threads, keep_f16)


def prepare_version(ours_bin: Path, cs: list[Config], folder: Path, version: str, scale: str,
                    threads: int, keep_f16: bool) -> None:
    """prepare_models for the configurations of one version, whose files live in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    need_text = sorted({c.text_type for c in cs})
    need_proj = sorted({c.mmproj_type for c in cs})
    missing_text = [t for t in need_text if not find_in(folder, text_names(t))]
    missing_proj = [t for t in need_proj if not find_in(folder, mmproj_names(t))]
    want_f16_model = bool(missing_text) and not find_in(folder, text_names("F16"))
    want_f16_proj = bool(missing_proj) and not find_in(folder, mmproj_names("F16"))
    if want_f16_model or want_f16_proj:
        synth_pair(ours_bin, folder, version, scale, want_f16_model, want_f16_proj)
    f16_model = find_in(folder, text_names("F16"))
    f16_proj = find_in(folder, mmproj_names("F16"))
    for t in missing_text:
        if t != "F16":
            quantize(ours_bin, f16_model, folder / text_names(t)[0], t, threads)
    for t in missing_proj:
        if t != "F16":
            quantize(ours_bin, f16_proj, folder / mmproj_names(t)[0], t, threads)
    for c in cs:
        c.model = find_in(folder, text_names(c.text_type))
        c.mmproj = find_in(folder, mmproj_names(c.mmproj_type))
        if c.model is None or c.mmproj is None:
            die(f"{c.label}: could not find or make the files in {folder}")
    if (f16_model and "F16" not in need_text and not keep_f16
            and f16_model.name in made_files(folder)):
        log(f"deleting {f16_model} ({f16_model.stat().st_size / 1e9:.1f} GB; "
            "made by this script, no configuration runs it; --keep-f16 keeps it)")
        f16_model.unlink()
        note_made(folder, f16_model.name, False)
