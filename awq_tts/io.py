"""File hashing and readable-audio checks (atomic, locked outputs live in ``awq_tts.output``)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from .errors import UsageError


def require_readable_audio(path: str | Path, message: str) -> None:
    """Raise a UsageError ``message (reason)`` unless ``path`` is an audio file we can read."""
    import soundfile

    try:
        info = soundfile.info(str(path))
    except Exception as exc:
        raise UsageError(f"{message} ({exc})") from None
    if info.frames <= 0:
        raise UsageError(f"{message} (it holds no samples)")


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
