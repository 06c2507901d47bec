"""``noesis_provenance.json``: where an INT4 checkpoint came from, and proof of its bytes.

The record holds the source (id or path, revision, sha256 of every source file), tool and
library versions, the quantization and calibration settings, per-layer errors, timing,
and the sha256 of every output file. ``verify`` recomputes the output hashes; any
difference means the folder was changed after it was written.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
from pathlib import Path

from ..io import hash_tree

FILENAME = "noesis_provenance.json"
LIBRARIES = ("torch", "transformers", "qwen-tts", "autoawq", "accelerate", "safetensors")


def library_versions() -> dict[str, str]:
    out = {"awq-tts": _version("awq-tts"), "python": platform.python_version()}
    out.update({name: _version(name) for name in LIBRARIES})
    return out


def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def write(folder: str | Path, record: dict) -> Path:
    """Add the sha256 of every file in ``folder`` to ``record`` and save it there."""
    folder = Path(folder)
    record = dict(record)
    record["output_files"] = hash_tree(folder, exclude=(FILENAME,))
    path = folder / FILENAME
    path.write_text(json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return path


def load(folder: str | Path) -> dict:
    path = Path(folder) / FILENAME
    if not path.is_file():
        from ..errors import UsageError

        raise UsageError(f"{folder} has no {FILENAME}; was it written by `awq-tts quantize`?")
    return json.loads(path.read_text())


def verify(folder: str | Path) -> list[str]:
    """Problems found (empty when every recorded file is present and unchanged)."""
    recorded = load(folder).get("output_files", {})
    actual = hash_tree(folder, exclude=(FILENAME,))
    problems = []
    for name, digest in sorted(recorded.items()):
        if name not in actual:
            problems.append(f"missing: {name}")
        elif actual[name] != digest:
            problems.append(f"changed: {name}")
    problems += [f"unrecorded: {name}" for name in sorted(set(actual) - set(recorded))]
    return problems
