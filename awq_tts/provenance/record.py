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

from ..errors import UsageError
from ..io import hash_tree, sha256_file

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
    """The record as a dict; a missing, unparsable or mistyped record is a UsageError."""
    path = Path(folder) / FILENAME
    if not path.is_file():
        raise UsageError(f"{folder} has no {FILENAME}; was it written by `awq-tts quantize`?")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path} is damaged (not valid JSON: {exc}); the folder's record of "
                         f"its origin is lost, re-run `awq-tts quantize`") from None
    if not isinstance(record, dict):
        raise UsageError(f"{path} is damaged: it holds a JSON {type(record).__name__}, not a "
                         f"record")
    files = record.get("output_files")
    if not isinstance(files, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise UsageError(f"{path} is damaged: 'output_files' is missing or not a map of file "
                         f"name to sha256")
    return record


def record_sha256(folder: str | Path) -> str:
    """sha256 of the provenance file itself: one line a user can publish and check later."""
    return sha256_file(Path(folder) / FILENAME)


def verify(folder: str | Path, expect: str | None = None) -> list[str]:
    """Problems found (empty when every recorded file is present and unchanged).

    ``verify`` detects accidental change: anyone who can edit a file can also edit its
    hash in the same folder. ``expect`` (the provenance's own sha256, published by whoever
    made the folder) closes that gap: a different record is a problem too.
    """
    recorded = load(folder)["output_files"]
    problems = []
    if expect is not None and record_sha256(folder) != expect.strip().lower():
        problems.append(f"changed: {FILENAME} (its sha256 is not the expected {expect})")
    actual = hash_tree(folder, exclude=(FILENAME,))
    for name, digest in sorted(recorded.items()):
        if name not in actual:
            problems.append(f"missing: {name}")
        elif actual[name] != digest:
            problems.append(f"changed: {name}")
    problems += [f"unrecorded: {name}" for name in sorted(set(actual) - set(recorded))]
    return problems
