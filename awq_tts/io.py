"""Atomic output folders and file hashing.

Every command that writes a checkpoint writes it into a hidden temporary folder next to
the target and renames it at the end, so an interrupted run never leaves a half-written
folder where a user (or a later command) would take it for a finished one.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import UsageError


@contextlib.contextmanager
def atomic_output_dir(target: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder that becomes ``target`` when the block succeeds.

    An existing ``target`` is refused unless ``force`` (then it is replaced only after
    the new folder is complete). On any exception the temporary folder is removed.
    """
    target = Path(target)
    if target.exists() and not force:
        raise UsageError(f"{target} already exists; pass --force to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(target)


def require_readable_audio(path: str | Path, message: str) -> None:
    """Raise a UsageError ``message (reason)`` unless ``path`` is an audio file we can read."""
    import soundfile

    try:
        soundfile.info(str(path))
    except Exception as exc:
        raise UsageError(f"{message} ({exc})") from exc


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def hash_tree(root: str | Path, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file below ``root``, keyed by its POSIX path relative to ``root``."""
    root = Path(root)
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel not in exclude:
            out[rel] = sha256_file(path)
    return out
