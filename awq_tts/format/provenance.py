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
from dataclasses import dataclass
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


@dataclass
class Provenance:
    """The record of one folder: read it, append to it, verify the folder against it.

    ``record`` is the parsed JSON. ``create`` writes a new record with the sha256 of every
    file in the folder; ``append`` adds an entry to a list section (such as
    ``"validations"``) and replaces the file atomically, leaving the file hashes alone.
    """

    folder: Path
    record: dict

    @classmethod
    def create(cls, folder: str | Path, record: dict) -> Provenance:
        """Add the sha256 of every file in ``folder`` to ``record`` and save it there."""
        folder = Path(folder)
        record = dict(record)
        record["output_files"] = hash_tree(folder, exclude=(FILENAME,))
        made = cls(folder, record)
        made._save()
        return made

    @classmethod
    def read(cls, folder: str | Path) -> Provenance:
        """The folder's record; a missing, unparsable or mistyped one is a UsageError."""
        path = Path(folder) / FILENAME
        if not path.is_file():
            raise UsageError(f"{folder} has no {FILENAME}; was it written by "
                             f"`awq-tts quantize`?")
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UsageError(f"{path} is damaged (not valid JSON: {exc}); the folder's record "
                             f"of its origin is lost, re-run `awq-tts quantize`") from None
        if not isinstance(record, dict):
            raise UsageError(f"{path} is damaged: it holds a JSON {type(record).__name__}, "
                             f"not a record")
        files = record.get("output_files")
        if not isinstance(files, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            raise UsageError(f"{path} is damaged: 'output_files' is missing or not a map of "
                             f"file name to sha256")
        return cls(Path(folder), record)

    @staticmethod
    def exists(folder: str | Path) -> bool:
        return (Path(folder) / FILENAME).is_file()

    @property
    def path(self) -> Path:
        return self.folder / FILENAME

    @property
    def sha256(self) -> str:
        """sha256 of the record file itself: one line a user can publish and check later."""
        return sha256_file(self.path)

    def section(self, name: str) -> dict:
        """A top-level section (``source``, ``quantization``, ``calibration`` …) or {}."""
        value = self.record.get(name)
        return value if isinstance(value, dict) else {}

    def append(self, section: str, entry: dict) -> None:
        """Add ``entry`` to the list ``section`` and replace the file atomically."""
        self.record.setdefault(section, []).append(entry)
        self._save()

    def verify(self, expect: str | None = None) -> list[str]:
        """Problems found (empty when every recorded file is present and unchanged).

        This detects accidental change: anyone who can edit a file can also edit its hash
        in the same folder. ``expect`` (the record's own sha256, published by whoever made
        the folder) closes that gap: a different record is a problem too.
        """
        recorded = self.record["output_files"]
        problems = []
        if expect is not None and self.sha256 != expect.strip().lower():
            problems.append(f"changed: {FILENAME} (its sha256 is not the expected {expect})")
        actual = hash_tree(self.folder, exclude=(FILENAME,))
        for name, digest in sorted(recorded.items()):
            if name not in actual:
                problems.append(f"missing: {name}")
            elif actual[name] != digest:
                problems.append(f"changed: {name}")
        problems += [f"unrecorded: {name}" for name in sorted(set(actual) - set(recorded))]
        return problems

    def _save(self) -> None:
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.record, indent=2, sort_keys=True, ensure_ascii=False)
                       + "\n")
        tmp.replace(self.path)
