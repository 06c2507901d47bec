"""Write a random-weight checkpoint at the real 1.7B shapes, one shard at a time.

The model is built on the meta device (no memory), its state-dict keys and shapes are
planned into shards of at most ``max_shard_bytes``, and each shard's tensors are drawn,
saved and dropped before the next — peak memory is one shard, never the whole model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..models.qwen3_tts.package import qwen_tts

_DTYPE = torch.bfloat16


def write_random_weights(
    out: Path, cfg: dict, seed: int, max_shard_bytes: int = 2 * 1024**3
) -> None:
    """Write ``config.json``, sharded safetensors and their index for ``cfg``."""
    qwen_tts()
    from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration

    from .tiny import write_config

    config = Qwen3TTSConfig(**cfg)
    with torch.device("meta"):
        model = Qwen3TTSForConditionalGeneration(config)
    specs = [(name, tuple(t.shape)) for name, t in model.state_dict().items()]
    del model
    shards = _plan(specs, max_shard_bytes)
    weight_map: dict[str, str] = {}
    total = 0
    for index, shard in enumerate(shards):
        fname = f"model-{index + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {name: _random_tensor(name, shape, seed, i) for i, (name, shape) in shard}
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        save_file(tensors, str(out / fname), metadata={"format": "pt"})
        weight_map.update({name: fname for name in tensors})
        del tensors
    index_doc = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index_doc, indent=2) + "\n")
    write_config(out, config.to_dict())


def _plan(specs: list[tuple[str, tuple[int, ...]]], limit: int) -> list[list]:
    shards: list[list] = [[]]
    size = 0
    item = torch.tensor([], dtype=_DTYPE).element_size()
    for i, (name, shape) in enumerate(specs):
        nbytes = item * int(torch.Size(shape).numel())
        if shards[-1] and size + nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append((i, (name, shape)))
        size += nbytes
    return shards


def _random_tensor(name: str, shape: tuple[int, ...], seed: int, index: int) -> torch.Tensor:
    """Norm weights 1, biases 0, everything else N(0, 0.02): like a freshly initialised model."""
    if name.endswith("bias"):
        return torch.zeros(shape, dtype=_DTYPE)
    if len(shape) == 1 and "norm" in name:
        return torch.ones(shape, dtype=_DTYPE)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
    return (torch.randn(shape, generator=generator) * 0.02).to(_DTYPE)
