"""Calibration prompts: the built-in sets shipped in the package, and user datasets.

The built-in calibration set is 128 sentences written for this project in the ten
languages Qwen3-TTS supports; the held-out set (for the validator) shares none of them.
User sets are JSONL / CSV / Parquet files or folders, or hub dataset names, read with
``datasets``: column ``text`` is required, ``language``, ``ref_audio`` and ``ref_text``
are optional, and ``audio`` (a recording of the text) makes that row teacher-forced on the
speech tokenizer's codes of the recording instead of a rollout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import UsageError
from ..io import require_readable_audio

LANGUAGES = (
    "chinese", "english", "japanese", "korean", "german",
    "french", "russian", "portuguese", "spanish", "italian",
)
BUILTIN = {"builtin": "calibration_prompts.jsonl", "heldout": "heldout_prompts.jsonl"}
_SUFFIXES = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass(frozen=True)
class Prompt:
    text: str
    language: str = "auto"
    ref_audio: str | None = None
    ref_text: str | None = None
    #: Recorded speech of ``text``: calibrate on its codec codes instead of a rollout.
    audio: str | None = None


def prompt_set_sha256(pairs: list[tuple[str, str]]) -> str:
    """The one hash of a prompt set: its (text, language) pairs in order.

    ``awq-tts prompts`` prints it for a set, and a calibration records it for the prompts
    it used (``calibration.prompts_sha256`` in the provenance), so the two can be matched.
    """
    import hashlib

    doc = json.dumps([[text, language] for text, language in pairs], ensure_ascii=False)
    return hashlib.sha256(doc.encode()).hexdigest()


def builtin_prompts(name: str = "builtin") -> list[Prompt]:
    """The shipped prompt set ``builtin`` (128, calibration) or ``heldout`` (validation)."""
    if name not in BUILTIN:
        raise UsageError(f"unknown built-in prompt set {name!r}; choose {', '.join(BUILTIN)}")
    text = resources.files("awq_tts.data").joinpath(BUILTIN[name]).read_text(encoding="utf-8")
    return [Prompt(**json.loads(line)) for line in text.splitlines() if line.strip()]


def load_prompts(source: str | None, option: str = "--calib") -> tuple[str, list[Prompt]]:
    """Resolve ``--calib`` (or the ``option`` named in errors): None / a built-in name / a
    local file or folder / a hub dataset."""
    if source is None or source in BUILTIN:
        name = source or "builtin"
        return name, builtin_prompts(name)
    path = Path(source)
    if path.exists():
        return str(path), _rows_to_prompts(_read_local(path), str(path))
    if _names_a_file(source):   # no hub dataset is called so: no minute of hub retries
        raise UsageError(f"{option} {source}: no such file or folder")
    return source, _rows_to_prompts(_read_hub(source, option), source)


def first_prompts(prompts: list[Prompt], name: str, n_samples: int | None) -> list[Prompt]:
    """The first ``n_samples`` of the set ``name`` (all with None), or one line when it
    holds fewer."""
    if n_samples is not None and n_samples > len(prompts):
        raise UsageError(f"the calibration set {name!r} has {len(prompts)} prompts; "
                         f"--n-samples asks for {n_samples}")
    return prompts[:n_samples]


def _names_a_file(source: str) -> bool:
    """A path, not a hub id (``name`` or ``owner/name``): a file suffix, a leading ``/``,
    ``.`` or ``~``, or more than one ``/``."""
    return (Path(source).suffix.lower() in (*_SUFFIXES, ".txt", ".tsv")
            or source.startswith(("/", ".", "~")) or source.count("/") > 1)


def _read_local(path: Path) -> list[dict]:
    import datasets

    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.suffix in _SUFFIXES
    )
    if not files:
        raise UsageError(f"{path}: no .jsonl, .json, .csv or .parquet files found")
    for file in files:
        if file.stat().st_size == 0:
            raise UsageError(f"{file}: the file is empty; it holds no prompts")
        if _SUFFIXES.get(file.suffix) in ("json", "csv"):
            _require_utf8(file)
    kinds = {_SUFFIXES.get(f.suffix) for f in files}
    if None in kinds or len(kinds) != 1:
        raise UsageError(f"{path}: use one format of .jsonl/.json, .csv or .parquet, not {kinds}")
    try:
        ds = datasets.load_dataset(kinds.pop(), data_files=[str(f) for f in files], split="train")
    except Exception as exc:
        raise UsageError(f"{path}: cannot read calibration data ({exc})") from exc
    return [dict(row) for row in ds]


def _require_utf8(file: Path) -> None:
    try:
        file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{file} is not UTF-8 text (byte {exc.start}); save it as UTF-8") \
            from None


def _read_hub(name: str, option: str) -> list[dict]:
    import datasets

    try:
        ds = datasets.load_dataset(name, split="train")
    except Exception as exc:
        raise UsageError(
            f"{option} {name!r} is neither a local file/folder nor a loadable hub dataset ({exc})"
        ) from exc
    return [dict(row) for row in ds]


def _rows_to_prompts(rows: list[dict], source: str) -> list[Prompt]:
    if not rows:
        raise UsageError(f"{source}: the calibration set is empty")
    if "text" not in rows[0]:
        raise UsageError(f"{source}: missing required column 'text' (found {sorted(rows[0])})")
    prompts = []
    for index, row in enumerate(rows):
        text = row.get("text")
        if text is not None and not isinstance(text, str):
            raise UsageError(f"{source}: row {index}, column 'text' must be a string, not "
                             f"{type(text).__name__} {text!r}")
        if not text or not text.strip():
            raise UsageError(f"{source}: row {index}, column 'text' is empty")
        language = row.get("language") or "auto"
        if str(language).lower() not in (*LANGUAGES, "auto"):
            raise UsageError(
                f"{source}: row {index}, column 'language' has unsupported {language!r}"
            )
        for column in ("ref_audio", "audio"):
            if row.get(column):
                _check_audio(row[column], source, index, column)
        prompts.append(Prompt(text.strip(), str(language).lower(), row.get("ref_audio") or None,
                              row.get("ref_text") or None, row.get("audio") or None))
    return prompts


def _check_audio(value: str, source: str, index: int, column: str) -> None:
    require_readable_audio(value, f"{source}: row {index}, column '{column}' is unreadable")
