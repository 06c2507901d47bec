"""Write the INT4 checkpoint: every source file, with the talker linears packed.

Tensors are streamed from the source safetensors one at a time: a quantized linear's
``weight`` is replaced by its packed ``qweight/qzeros/scales``; a norm that received
folded scales gets its new value; every other tensor is copied unchanged (same dtype,
same bytes). Output shards are cut at ``max_shard_bytes``; non-weight files (tokenizer,
processor, generation config, ``speech_tokenizer/``) are copied byte for byte.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .packing import PackedLinear

_WEIGHT_NAMES = ("model.safetensors", "model.safetensors.index.json")


class CheckpointTensors:
    """Which file holds each tensor, and the tensor on demand (never the whole checkpoint)."""

    def __init__(self, folder: Path) -> None:
        from .source import weight_files

        self.where: dict[str, Path] = {}
        for file in weight_files(folder):
            with safe_open(str(file), framework="pt") as handle:
                self.where.update({key: file for key in handle.keys()})

    def __contains__(self, key: str) -> bool:
        return key in self.where

    def __iter__(self):
        return iter(self.where)

    def __getitem__(self, key: str) -> torch.Tensor:
        with safe_open(str(self.where[key]), framework="pt") as handle:
            return handle.get_tensor(key)


def copy_non_weight_files(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> None:
    """Copy everything except top-level weight files (and ``skip``) from src to dst."""
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        top = rel.parts[0]
        if path.is_dir() or rel.as_posix() in skip or top.startswith("."):
            continue
        if len(rel.parts) == 1 and (top in _WEIGHT_NAMES or _is_shard(top)):
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dst / rel)


def _is_shard(name: str) -> bool:
    return name.startswith("model-") and name.endswith(".safetensors")


def write_config(src_config: dict, dst: Path, quantization_config: dict) -> None:
    config = dict(src_config)
    config["quantization_config"] = quantization_config
    (dst / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def write_weights(
    source_files: list[Path],
    dst: Path,
    packed: dict[str, PackedLinear],
    changed: dict[str, torch.Tensor],
    max_shard_bytes: int = 2 * 1024**3,
) -> list[str]:
    """Stream the source tensors into output shards; return the written file names."""
    pending = {f"{name}.weight": name for name in packed}

    def groups() -> Iterator[dict[str, torch.Tensor]]:
        for file in source_files:
            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():
                    if key in pending:
                        yield packed[pending.pop(key)].tensors(_module_of(key))
                    elif key in changed:
                        yield {key: changed[key].contiguous()}
                    else:
                        yield {key: handle.get_tensor(key)}

    names = write_tensors(groups(), dst, max_shard_bytes)
    if pending:
        raise RuntimeError(f"quantized linears missing from the source weights: {sorted(pending)}")
    return names


def write_tensors(groups: Iterable[dict[str, torch.Tensor]], dst: Path,
                  max_shard_bytes: int = 2 * 1024**3) -> list[str]:
    """Write groups of tensors (a group never splits across shards) as ``model.safetensors``
    or ``model-0000N-of-0000M.safetensors`` + index; return the written file names."""
    shard: dict[str, torch.Tensor] = {}
    size = 0
    written: list[Path] = []

    def flush() -> None:
        nonlocal shard, size
        if shard:
            tmp = dst / f"model-part{len(written):05d}.safetensors.tmp"
            save_file(shard, str(tmp), metadata={"format": "pt"})
            written.append(tmp)
            shard, size = {}, 0

    for tensors in groups:
        nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
        if shard and size + nbytes > max_shard_bytes:
            flush()
        shard.update(tensors)
        size += nbytes
    flush()
    return _finalise_names(dst, written)


def _module_of(weight_key: str) -> str:
    return weight_key[: -len(".weight")]


def _finalise_names(dst: Path, parts: list[Path]) -> list[str]:
    if len(parts) == 1:
        parts[0].rename(dst / "model.safetensors")
        return ["model.safetensors"]
    names, weight_map, total = [], {}, 0
    for i, part in enumerate(parts):
        name = f"model-{i + 1:05d}-of-{len(parts):05d}.safetensors"
        part.rename(dst / name)
        names.append(name)
        with safe_open(str(dst / name), framework="pt") as handle:
            for key in handle.keys():
                weight_map[key] = name
                t = handle.get_slice(key)
                total += _nbytes(t.get_dtype(), t.get_shape())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (dst / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return [*names, "model.safetensors.index.json"]


_DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "I32": 4, "I64": 8, "U8": 1, "I8": 1, "BOOL": 1,
                "F64": 8, "I16": 2}


def _nbytes(dtype: str, shape: list[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count * _DTYPE_BYTES[dtype]
