"""Calibration activations of one decoder layer: capture, chunked replay, masked error.

Activations live on the CPU in float32; the layer being quantized lives on the compute
device. ``LayerInputs.run`` moves ``batch_size`` sequences at a time to the device, so
device memory holds one layer and one chunk of activations, never the whole set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


class _Captured(Exception):
    """Raised by the layer-0 hook to stop the forward once its inputs are recorded."""


@dataclass
class LayerInputs:
    """Inputs of a decoder layer for the whole calibration batch."""

    hidden: torch.Tensor
    kwargs: dict
    valid: torch.Tensor
    batch_dims: dict[str, int]
    device: torch.device
    batch_size: int = 8

    def _slice(self, start: int, stop: int) -> dict:
        out = {}
        for key, dim in self.batch_dims.items():
            value = self.kwargs.get(key)
            out[key] = _slice_batch(value, dim, start, stop, self.hidden.shape[0], self.device)
        return out

    def run(self, fn: Callable[[torch.Tensor, dict], torch.Tensor],
            x: torch.Tensor | None = None) -> torch.Tensor:
        """Apply ``fn(chunk, kwargs)`` over the batch (default input: the layer's hidden)."""
        x = self.hidden if x is None else x
        outs = []
        for start in range(0, x.shape[0], self.batch_size):
            stop = min(start + self.batch_size, x.shape[0])
            out = fn(x[start:stop].to(self.device), self._slice(start, stop))
            outs.append(out.float().cpu())
        return torch.cat(outs, dim=0)

    def error(self, fn: Callable[[torch.Tensor, dict], torch.Tensor], x: torch.Tensor,
              ref: torch.Tensor) -> float:
        """Mean squared error of ``fn`` against ``ref`` over valid (non-padding) tokens."""
        total, count = 0.0, 0
        for start in range(0, x.shape[0], self.batch_size):
            stop = min(start + self.batch_size, x.shape[0])
            out = fn(x[start:stop].to(self.device), self._slice(start, stop)).float()
            mask = self.valid[start:stop].to(out.device)
            diff = (out - ref[start:stop].to(out.device))[mask]
            total += float(diff.pow(2).sum())
            count += diff.numel()
        return total / max(count, 1)

    def valid_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C]`` rows of ``x`` at valid positions."""
        return x[self.valid]


def _slice_batch(value, dim: int, start: int, stop: int, batch: int, device):
    if value is None:
        return None
    if isinstance(value, tuple):
        return tuple(_slice_batch(v, dim, start, stop, batch, device) for v in value)
    if not isinstance(value, torch.Tensor):
        return value
    if dim >= 0 and value.ndim > dim and value.shape[dim] == batch:
        value = value.narrow(dim, start, stop - start)
    return value.to(device)


@torch.no_grad()
def capture_first_layer(
    decoder: nn.Module,
    first_layer: nn.Module,
    embeds: torch.Tensor,
    mask: torch.Tensor,
    position_ids: torch.Tensor,
) -> tuple[torch.Tensor, dict]:
    """Run the real decoder forward until ``first_layer`` and return its inputs.

    The positional embeddings (multimodal rope), the causal mask and every other keyword
    the layer receives come from the model's own forward, not from a re-implementation.
    """
    seen: dict = {}

    def hook(_module, args, kwargs):
        seen["hidden"] = args[0] if args else kwargs["hidden_states"]
        seen["kwargs"] = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        raise _Captured

    handle = first_layer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        decoder(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids,
                use_cache=False)
    except _Captured:
        pass
    finally:
        handle.remove()
    if "hidden" not in seen:
        raise RuntimeError("the talker's first decoder layer was never called")
    return seen["hidden"].float().cpu(), seen["kwargs"]


def float_kwargs(kwargs: dict) -> dict:
    """Floating tensors (also inside tuples) converted to float32, others as they are."""
    def conv(v):
        if isinstance(v, tuple):
            return tuple(conv(x) for x in v)
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            return v.float()
        return v

    return {k: conv(v) for k, v in kwargs.items()}


@torch.no_grad()
def record_linear_inputs(
    layer: nn.Module, linears: dict[str, nn.Linear], inputs: LayerInputs
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Run the layer once; return its output and the input of every listed linear."""
    store: dict[str, list[torch.Tensor]] = {name: [] for name in linears}
    handles = []
    for name, lin in linears.items():
        def hook(_module, args, name=name):
            store[name].append(args[0].detach().float().cpu())
        handles.append(lin.register_forward_pre_hook(hook))
    try:
        out = inputs.run(lambda x, kw: layer(x, **kw)[0])
    finally:
        for handle in handles:
            handle.remove()
    return out, {name: torch.cat(chunks, dim=0) for name, chunks in store.items()}


__all__ = ["LayerInputs", "capture_first_layer", "float_kwargs", "record_linear_inputs"]
