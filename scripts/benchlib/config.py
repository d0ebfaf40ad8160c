"""Configurations (VERSION:TEXT_TYPE:MMPROJ_TYPE) and the names of their model files."""
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .util import die

# Text type x projector type per MiniCPM-V version. The first is the headline configuration.
FULL_CONFIGS = ["2.6:Q4_K_M:F16", "2.6:Q8_0:Q8_0", "4.0:Q4_K_M:F16", "4.6:Q4_K_M:F16"]
QUICK_CONFIGS = ["2.6:Q4_K_M:F16"]
DEFAULT_PROMPT = "Describe this image in detail."


@dataclass
class Config:
    version: str  # MiniCPM-V version as `minicpmv synth --version` takes it: 2.6, 4.0, ...
    text_type: str  # F16, Q4_K_M, Q8_0, ...
    mmproj_type: str  # F16, Q8_0
    model: Path | None = None
    mmproj: Path | None = None

    @property
    def label(self) -> str:
        return f"{self.version}:{self.text_type}:{self.mmproj_type}"

    @property
    def title(self) -> str:
        return f"MiniCPM-V {self.version}, text {self.text_type} + mmproj {self.mmproj_type}"


def parse_config(s: str) -> Config:
    """`2.6:q4_k_m:f16` -> Config("2.6", "Q4_K_M", "F16"); dies on anything else."""
    parts = s.strip().split(":")
    if len(parts) != 3 or not all(parts):
        die(f"bad configuration {s!r}: expected VERSION:TEXT_TYPE:MMPROJ_TYPE, e.g. 2.6:Q4_K_M:F16")
    return Config(parts[0], parts[1].upper(), parts[2].upper())


def text_names(t: str) -> list[str]:
    """Accepted file names of a language model of type t, the first being the one we write."""
    return ["model.gguf", "model-F16.gguf", "model-f16.gguf"] if t == "F16" else [f"model-{t}.gguf"]


def mmproj_names(t: str) -> list[str]:
    """Accepted file names of a projector of type t, the first being the one we write."""
    return (["mmproj.gguf", "mmproj-F16.gguf", "mmproj-f16.gguf"] if t == "F16"
            else [f"mmproj-{t}.gguf"])


def find_in(folder: Path, names: list[str]) -> Path | None:
    for n in names:
        if (folder / n).is_file():
            return folder / n
    return None


MADE_LIST = ".made-by-bench.json"  # files this script made in a folder (only those are ever deleted)


def made_files(folder: Path) -> set[str]:
    try:
        return set(json.loads((folder / MADE_LIST).read_text()))
    except (OSError, ValueError):
        return set()


def note_made(folder: Path, name: str, made: bool) -> None:
    names = made_files(folder)
    names.add(name) if made else names.discard(name)
    tmp = folder / f".{MADE_LIST}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(sorted(names)))
    tmp.replace(folder / MADE_LIST)
