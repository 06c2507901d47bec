"""Find and check the source checkpoint before any work starts.

Every problem a user can fix (wrong folder, wrong model, missing files, shapes the group
size cannot split, NaN/Inf weights) is raised here as a one-line ``UsageError`` naming
the problem and the fix, before anything is computed or written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from ..errors import UsageError
from ..io import hash_tree

TOKENIZER_FILES = ("tokenizer_config.json",)


@dataclass
class Source:
    spec: str
    path: Path
    revision: str | None
    config: dict

    def weight_files(self) -> list[Path]:
        return weight_files(self.path)

    def describe(self) -> dict:
        return {"id_or_path": self.spec, "revision": self.revision,
                "files": hash_tree(self.path)}


def resolve(spec: str, revision: str | None = None) -> Source:
    """A local folder as is; anything else is downloaded from the hub as a model id."""
    path = Path(spec)
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{spec} is a file; pass the checkpoint *folder*")
        return Source(spec, path, revision, _read_config(path))
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise UsageError(f"{spec}: no such folder (and not a hub id of the form owner/name)")
    from huggingface_hub import snapshot_download

    try:
        local = Path(snapshot_download(spec, revision=revision))
    except Exception as exc:
        raise UsageError(f"cannot download {spec!r} from the hub: {exc}") from exc
    return Source(spec, local, revision or local.name, _read_config(local))


def _read_config(path: Path) -> dict:
    cfg = path / "config.json"
    if not cfg.is_file():
        raise UsageError(f"{path} is not a checkpoint folder: it has no config.json")
    try:
        return json.loads(cfg.read_text())
    except json.JSONDecodeError as exc:
        raise UsageError(f"{cfg} is not valid JSON ({exc})") from exc


def weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [n for n in names if not (path / n).is_file()]
        if missing:
            raise UsageError(f"{path}: weight shards listed in the index are missing: {missing}")
        return [path / n for n in names]
    single = path / "model.safetensors"
    if single.is_file():
        return [single]
    raise UsageError(f"{path} has no model.safetensors (or sharded index); nothing to quantize")


def check(source: Source, group_size: int) -> None:
    """Raise a UsageError for anything that would make quantization fail or lie."""
    cfg, path = source.config, source.path
    if cfg.get("model_type") != "qwen3_tts":
        raise UsageError(
            f"{source.spec} is a {cfg.get('model_type')!r} checkpoint; awq-tts quantizes "
            f"Qwen3-TTS (model_type 'qwen3_tts') only"
        )
    weight_files(path)
    missing = [f for f in TOKENIZER_FILES if not (path / f).is_file()]
    if not (path / "tokenizer.json").is_file() and not (path / "vocab.json").is_file():
        missing.append("tokenizer.json or vocab.json")
    if missing:
        raise UsageError(f"{path} lacks tokenizer files: {', '.join(missing)}")
    require_speech_tokenizer(path)
    talker = cfg.get("talker_config", {})
    for key in ("hidden_size", "intermediate_size"):
        size = int(talker.get(key, 0))
        if size <= 0 or size % group_size:
            raise UsageError(
                f"talker {key} {size} is not divisible by --group-size {group_size}; "
                f"choose a group size that divides it"
            )
    _check_finite(source.weight_files())


def require_speech_tokenizer(path: Path) -> None:
    """qwen-tts cannot load a checkpoint without its codec; name the command that adds it."""
    if not (path / "speech_tokenizer" / "config.json").is_file():
        raise UsageError(
            f"{path} has no speech_tokenizer/ (as in the original Darwin-TTS upload); add it "
            f"with `awq-tts repair {path} --speech-tokenizer-from BASE_MODEL`"
        )


def _check_finite(files: list[Path]) -> None:
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():
                tensor = handle.get_tensor(name)
                if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                    raise UsageError(f"{file.name}: tensor {name} contains NaN or Inf values")
