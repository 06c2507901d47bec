"""Calibration activations of one decoder layer: capture, chunked replay, masked error.

The layer being quantized lives on the compute ``device``; the layer's inputs and outputs
(float32) live on ``store``: the compute device itself by default (no transfers), or the
CPU when offloaded (``QuantConfig.offload_activations``, for GPUs under 8 GB). Then
``LayerInputs.run`` moves ``batch_size`` sequences at a time to the device, so device
memory holds one layer and one chunk of activations, never the whole set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .sample import LossSample


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
    #: Where ``hidden``, ``valid`` and every ``run`` output live (None: ``device``).
    store: torch.device | None = None
    #: The dtype ``hidden`` is kept in (bfloat16 halves it; chunks compute in float32).
    store_dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        self.store = torch.device(self.device if self.store is None else self.store)
        self.hidden = self.hidden.to(self.store, self.store_dtype)
        self.valid = self.valid.to(self.store)

    def keep(self, hidden: torch.Tensor) -> None:
        """Make ``hidden`` (the next layer's input) the stored input, in the store dtype."""
        self.hidden = hidden.to(self.store, self.store_dtype)

    def _chunk(self, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        return x[start:stop].to(self.device, torch.float32)

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
            out = fn(self._chunk(x, start, stop), self._slice(start, stop))
            outs.append(out.float().to(self.store))
        return torch.cat(outs, dim=0)

    def error(self, fn: Callable[[torch.Tensor, dict], torch.Tensor], x: torch.Tensor,
              ref: torch.Tensor) -> float:
        """Mean squared error of ``fn`` against ``ref`` over valid (non-padding) tokens.

        The sum stays on the device until the end: one host sync per call.
        """
        total = None
        for start in range(0, x.shape[0], self.batch_size):
            stop = min(start + self.batch_size, x.shape[0])
            out = fn(self._chunk(x, start, stop), self._slice(start, stop)).float()
            mask = self.valid[start:stop].to(out.device)
            part = (out - ref[start:stop].to(out.device))[mask].pow(2).sum()
            total = part if total is None else total + part
        count = int(self.valid.sum()) * (ref.shape[-1] if ref.ndim else 1)
        return float(total) / max(count, 1)

    def subset(self, sequences: torch.Tensor) -> LayerInputs:
        """The same inputs restricted to ``sequences`` (indices along the batch)."""
        batch = self.hidden.shape[0]
        kwargs = {key: _select_batch(self.kwargs.get(key), dim, sequences, batch)
                  for key, dim in self.batch_dims.items()}
        kwargs = {**self.kwargs, **kwargs}
        index = sequences.to(self.store)
        return LayerInputs(self.hidden[index], kwargs, self.valid[index],
                           self.batch_dims, self.device, self.batch_size, self.store,
                           self.store_dtype)

    def valid_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C]`` rows of ``x`` at valid positions."""
        return x[self.valid.to(x.device)]


def _select_batch(value, dim: int, index: torch.Tensor, batch: int):
    if isinstance(value, tuple):
        return tuple(_select_batch(v, dim, index, batch) for v in value)
    if isinstance(value, torch.Tensor) and dim >= 0 and value.ndim > dim \
            and value.shape[dim] == batch:
        return value.index_select(dim, index.to(value.device))
    return value


@dataclass
class TokenRows:
    """Token-wise blocks replayed on a ``[N, C]`` sample of rows, in chunks of ``rows``."""

    device: torch.device
    rows: int = 4096

    def run(self, fn: Callable[[torch.Tensor, dict], torch.Tensor],
            x: torch.Tensor) -> torch.Tensor:
        return torch.cat([fn(x[i:i + self.rows].to(self.device), {}).float()
                          for i in range(0, x.shape[0], self.rows)], dim=0)

    def error(self, fn: Callable[[torch.Tensor, dict], torch.Tensor], x: torch.Tensor,
              ref: torch.Tensor) -> float:
        """Mean squared error of ``fn`` against ``ref`` over all rows (one host sync)."""
        total = sum((fn(x[i:i + self.rows].to(self.device), {}).float()
                     - ref[i:i + self.rows].to(self.device)).pow(2).sum()
                    for i in range(0, x.shape[0], self.rows))
        return float(total) / max(ref.numel(), 1)


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


def map_tensors(kwargs: dict, fn: Callable[[torch.Tensor], torch.Tensor]) -> dict:
    """``fn`` applied to every tensor of ``kwargs`` (also inside tuples), others as they are."""
    def conv(v):
        if isinstance(v, tuple):
            return tuple(conv(x) for x in v)
        return fn(v) if isinstance(v, torch.Tensor) else v

    return {k: conv(v) for k, v in kwargs.items()}


def float_kwargs(kwargs: dict) -> dict:
    """Floating tensors (also inside tuples) converted to float32, others as they are."""
    return map_tensors(kwargs, lambda t: t.float() if t.is_floating_point() else t)


@dataclass
class Captured:
    """What the search needs of one linear's input: statistics of all valid tokens and
    the sampled rows the losses replay."""

    #: ``mean|x|`` per input channel over every valid token.
    x_mean: torch.Tensor
    #: ``[S, T, C]`` whole sampled sequences (attention) or ``[N, C]`` sampled tokens.
    rows: torch.Tensor


@torch.no_grad()
def record_linear_inputs(
    layer: nn.Module,
    linears: dict[str, nn.Linear],
    inputs: LayerInputs,
    sample: LossSample,
    whole_sequences: frozenset[str] = frozenset(),
) -> tuple[torch.Tensor, dict[str, Captured]]:
    """Run the layer once over every token; return its output and each listed linear's
    input statistics and sampled rows.

    Nothing of full calibration size is kept: the hooks reduce every chunk to a running
    ``sum|x|`` and gather the sampled rows by index (whole sequences for the linears in
    ``whole_sequences``, sampled token positions for the others).
    """
    sums = {name: None for name in linears}
    kept: dict[str, list[torch.Tensor]] = {name: [] for name in linears}
    where = {"seq": 0, "token": 0}
    positions, sequences = sample.positions, sample.sequences

    def hook_for(name):
        def hook(_module, args):
            x = args[0].detach()
            start = where["seq"]
            stop = start + x.shape[0]
            mask = inputs.valid[start:stop].to(x.device)
            tokens = x[mask].float()
            part = tokens.abs().sum(dim=0, dtype=torch.float64)
            sums[name] = part if sums[name] is None else sums[name] + part
            if name in whole_sequences:
                chosen = sequences[(sequences >= start) & (sequences < stop)] - start
                kept[name].append(x[chosen.to(x.device)].float())
            else:
                first = where["token"]
                local = positions[(positions >= first) & (positions < first + tokens.shape[0])]
                kept[name].append(tokens[(local - first).to(x.device)])
        return hook

    def advance(_module, _args, _output):
        start = where["seq"]
        stop = min(start + inputs.batch_size, inputs.valid.shape[0])
        where["token"] += int(inputs.valid[start:stop].sum())
        where["seq"] = stop

    handles = [lin.register_forward_pre_hook(hook_for(name)) for name, lin in linears.items()]
    handles.append(layer.register_forward_hook(advance))
    try:
        out = inputs.run(lambda x, kw: layer(x, **kw)[0])
    finally:
        for handle in handles:
            handle.remove()
    count = max(int(inputs.valid.sum()), 1)
    return out, {name: Captured((sums[name] / count).float(), torch.cat(kept[name], dim=0))
                 for name in linears}


__all__ = ["Captured", "LayerInputs", "TokenRows", "capture_first_layer", "float_kwargs",
           "map_tensors", "record_linear_inputs"]
