"""One decoder layer in memory at a time during the walk.

Calibration needs the whole source model; the walk needs one talker decoder layer at a
time plus the talker's rotary embedding. ``release_for_walk`` frees everything else (its
parameters become ``meta`` tensors: the module tree stays, the memory goes), and
``LayerLoader`` brings one layer's tensors back from the memory-mapped safetensors files
when the walk reaches it and frees them when the layer is done.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..format.checkpoint import CheckpointTensors
from ..models.mapping import QWEN3_TTS_TALKER, LayerMapping, get_module


def release_for_walk(model: nn.Module, mapping: LayerMapping = QWEN3_TTS_TALKER) -> int:
    """Free every parameter and buffer of ``model`` outside ``mapping.keep_for_walk``;
    return the bytes freed."""
    keep = mapping.keep_for_walk
    kept = {id(t) for path in keep
            for t in [*get_module(model, path).parameters(), *get_module(model, path).buffers()]}
    freed = 0
    for module in [model, *_speech_tokenizer_modules(model)]:
        for sub in module.modules():
            for name, tensor in [*sub.named_parameters(recurse=False),
                                 *sub.named_buffers(recurse=False)]:
                if id(tensor) in kept or tensor.is_meta:
                    continue
                freed += tensor.numel() * tensor.element_size()
                _set(sub, name, tensor.to("meta"))
    return freed


def _speech_tokenizer_modules(model: nn.Module) -> list[nn.Module]:
    codec = getattr(model, "speech_tokenizer", None)
    inner = getattr(codec, "model", None)
    return [inner] if isinstance(inner, nn.Module) else []


def _set(module: nn.Module, name: str, meta: torch.Tensor) -> None:
    if name in module._parameters:
        module._parameters[name] = nn.Parameter(meta, requires_grad=False)
    else:
        module._buffers[name] = meta


class LayerLoader:
    """Loads decoder layer ``i``'s tensors from the source files, and frees them again."""

    def __init__(self, folder: Path, mapping: LayerMapping = QWEN3_TTS_TALKER) -> None:
        self.prefix = mapping.layers + "."
        self.tensors = CheckpointTensors(folder)

    def load(self, index: int, layer: nn.Module) -> nn.Module:
        """Materialize ``layer`` (on the CPU, in the source dtype) from the checkpoint."""
        head = f"{self.prefix}{index}."
        state = {name[len(head):]: self.tensors[name]
                 for name in self.tensors if name.startswith(head)}
        layer.to_empty(device="cpu")
        missing, unexpected = layer.load_state_dict(state, strict=False)
        params = {n for n, _ in layer.named_parameters()}
        if params & set(missing) or unexpected:
            raise RuntimeError(f"decoder layer {index}: checkpoint tensors do not match the "
                               f"module (missing {sorted(params & set(missing))[:3]}, "
                               f"unexpected {unexpected[:3]})")
        return layer

    @staticmethod
    def release(layer: nn.Module) -> None:
        """Free the layer's tensors (they are written to the output already)."""
        layer.to("meta")
