"""Name → tensor access over a checkpoint's safetensors files, read lazily one tensor at a time."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from ..quantize.source import weight_files


class CheckpointTensors:
    """Which file holds each tensor, and the tensor on demand (never the whole checkpoint)."""

    def __init__(self, folder: Path) -> None:
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
