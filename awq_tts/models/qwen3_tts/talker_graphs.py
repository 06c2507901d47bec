"""CUDA graphs for the talker's decode step: the other half of ``load(..., cuda_graphs=True)``.

qwen-tts runs the talker with transformers' ``generate``; at batch 1 each step's 28 decoder
layers are about 600 small kernels, so on a GPU the step costs its launches, not its
weights, and INT4's smaller weights cannot show. Here one ``talker.generate`` call gets a
:class:`StepCache` (transformers' static cache layers, with room for the prompt and one
window of new tokens, grown a window at a time as the call needs), and the talker's
decoder is wrapped for that call:

* the prefill runs as before, eagerly, writing the static buffers (its attention reads
  exactly the prompt's keys, as with the dynamic cache);
* each one-token step copies its inputs (embedding, rope positions, cache position) into
  fixed buffers and runs :meth:`StepCache.decode` on them, replayed from a CUDA graph.
  Attention reads a window of the cache, the first multiple of :data:`WINDOW` slots that
  holds the position, masked past the position and at the prompt's padding; so one graph
  per window size serves every step in it.

The eager twin (``graphed=False``) runs the same ``decode`` on the same buffers without a
graph: the tests check it against stock ``generate`` on the CPU, and the graph against it
on CUDA, token for token with greedy decoding. A window whose capture fails runs eagerly and
:func:`status` says why. Everything around the decoder (embeddings, the code predictor,
the codec head, sampling, stopping) is qwen-tts's and transformers' own code, unchanged.

The cache holds ``28 layers × 2 × 8 heads × 128 × 2 bytes`` = 112 KiB per token and batch
row in bf16. Allocated for all of ``max_new_tokens`` it would hold 250 MiB for
``synthesize``'s 2,048-frame budget whatever the speech's length; grown by windows it holds
what the call reached (about 70 MiB for 30 s of speech and a short prompt). Growing copies
the cache once a window (256 tokens, 20 s of speech) and drops the graphs captured on the
old buffers, so the window being entered is captured again. The cache is kept, at its
largest size, for the next call of the same batch size (:data:`KEEP`).

The talker's ``generate`` also keeps only the hidden state qwen-tts reads from each step
(:func:`last_hidden_only`), with graphs or without.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from types import MethodType

import torch
from transformers.cache_utils import Cache, StaticLayer
from transformers.modeling_outputs import BaseModelOutputWithPast

from .graphs import capture, describe, failure
from .last_hidden import last_hidden_only
from .patches import swap_attr, swapped

#: Slots per attention window; also the rounding of a call's cache length.
WINDOW = 256
#: Step caches (and their graphs) kept per talker, by batch size, dtype and device.
KEEP = 1
#: Windows of new tokens a call's cache has room for at first (256 tokens: 20 s of speech);
#: it grows a window at a time from there.
FIRST_WINDOWS = 1
ATTR = "awq_tts_talker_graphs"
log = logging.getLogger(__name__)


def slots(tokens: int) -> int:
    """``tokens`` rounded up to whole windows: a step's attention window, a call's cache."""
    return -(-tokens // WINDOW) * WINDOW


class WindowLayer(StaticLayer):
    """A static cache layer whose attention reads only its first ``window`` slots."""

    window = 0

    def update(self, key_states, value_states, cache_kwargs=None):
        keys, values = super().update(key_states, value_states, cache_kwargs)
        return keys[:, :, :self.window], values[:, :, :self.window]

    def get_mask_sizes(self, cache_position: torch.Tensor) -> tuple[int, int]:
        return self.window, 0


class StepCache(Cache):
    """The talker's KV cache for ``generate`` calls of one batch size,
    with the decode step's fixed input buffers and its graphs (one per window)."""

    def __init__(self, layers: int, capacity: int, graphed: bool) -> None:
        super().__init__(layers=[WindowLayer(capacity) for _ in range(layers)])
        self.capacity, self.graphed = capacity, graphed
        self.seen = 0
        self.valid: torch.Tensor | None = None      # [batch, capacity] bool, per call
        self.inputs: dict[str, torch.Tensor] = {}
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.failed: dict[int, str] = {}

    @property
    def is_compileable(self) -> bool:
        return False      # keeps generate from building 4D masks or compiling the forward

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.seen

    def _window(self, size: int) -> None:
        for layer in self.layers:
            layer.window = size

    def prefill(self, decoder_forward, kwargs: dict):
        """The prompt, eagerly: it starts a call (the stale slots of the last one are masked
        until overwritten)."""
        embeds, mask = kwargs["inputs_embeds"], kwargs.get("attention_mask")
        batch, length = embeds.shape[:2]
        if self.valid is None:      # filled in place from now on: the graphs read it
            self.valid = torch.ones(batch, self.capacity, dtype=torch.bool,
                                    device=embeds.device)
        self.valid.fill_(True)
        if mask is not None:
            self.valid[:, :length] = mask.bool()
        self._window(length)
        self.seen = 0
        out = decoder_forward(**kwargs)
        self.seen = length
        return out

    def step(self, decoder_forward, embeds: torch.Tensor, position_ids: torch.Tensor,
             cache_position: torch.Tensor) -> torch.Tensor:
        """One token per row: the last hidden state ``[batch, 1, hidden]``."""
        if not self.inputs:
            self.inputs = {"embeds": torch.zeros_like(embeds),
                           "positions": torch.zeros_like(position_ids),
                           "cache_position": torch.zeros_like(cache_position),
                           "slots": torch.arange(self.capacity, device=embeds.device),
                           "open": embeds.new_zeros(()),
                           "shut": embeds.new_full((), float("-inf"))}
        self.inputs["embeds"].copy_(embeds)
        self.inputs["positions"].copy_(position_ids)
        self.inputs["cache_position"].copy_(cache_position)
        self.reserve(self.seen + 1)
        window = min(self.capacity, slots(self.seen + 1))
        self._window(window)
        self.seen += 1
        if self.graphed and window not in self.failed:
            graph = self.graphs.get(window) or self._capture(decoder_forward, window)
            if graph is not None:
                graph[0].replay()
                return graph[1].clone()
        return self.decode(decoder_forward, window)

    def reserve(self, tokens: int) -> None:
        """Room for ``tokens`` positions, in whole windows: keys, values, the valid mask and
        the slot numbers move to larger buffers (contents kept), and the graphs, which
        replay the old buffers, are dropped, each window captured again when a step reaches
        it. So a call holds the cache it uses, not one for all of ``max_new_tokens``."""
        size = slots(tokens)
        if size <= self.capacity:
            return
        for layer in self.layers:
            layer.max_cache_len = size
            if layer.is_initialized:
                layer.keys, layer.values = _grown(layer.keys, size), _grown(layer.values, size)
        if self.valid is not None:
            self.valid = torch.cat([self.valid, self.valid.new_ones(
                self.valid.shape[0], size - self.capacity)], dim=1)
        if self.inputs:
            self.inputs["slots"] = torch.arange(size, device=self.inputs["slots"].device)
        self.capacity = size
        self.graphs.clear()

    def decode(self, decoder_forward, window: int) -> torch.Tensor:
        """The decoder on the fixed buffers, attending to ``window`` slots: what a graph
        captures. Nothing here reads a tensor on the host. The mask is additive (0 or
        −inf in the step's dtype), made once here instead of by SDPA in each layer."""
        i = self.inputs
        seen = self.valid[:, :window] & (i["slots"][:window] <= i["cache_position"])
        mask = torch.where(seen, i["open"], i["shut"])      # what SDPA makes of a bool mask
        out = decoder_forward(inputs_embeds=i["embeds"], attention_mask=mask[:, None, None, :],
                              position_ids=i["positions"], past_key_values=self, use_cache=True,
                              cache_position=i["cache_position"])
        return out.last_hidden_state

    def _capture(self, decoder_forward, window: int):
        # the warm-up call rewrites this step's slot with the same values: harmless
        try:
            self.graphs[window] = capture(lambda: self.decode(decoder_forward, window),
                                          self.inputs["embeds"].device)
        except Exception as exc:  # noqa: BLE001 (any capture failure means: run eagerly)
            self.failed[window] = failure(exc)
            log.warning("CUDA graph capture of the talker step failed (%s); it runs eagerly",
                        self.failed[window])
            return None
        return self.graphs[window]


def _grown(buffer: torch.Tensor, size: int) -> torch.Tensor:
    """``buffer`` ``[batch, heads, slots, dim]`` copied into one of ``size`` slots."""
    grown = buffer.new_zeros((*buffer.shape[:2], size, buffer.shape[3]))
    grown[:, :, :buffer.shape[2]].copy_(buffer)
    return grown


class TalkerGraphs:
    """A talker's step caches, by batch size, dtype and device."""

    def __init__(self, graphed: bool = True) -> None:
        self.graphed = graphed
        self.caches: OrderedDict[tuple, StepCache] = OrderedDict()

    def __deepcopy__(self, memo) -> TalkerGraphs:
        return TalkerGraphs(self.graphed)

    def cache_for(self, talker, embeds: torch.Tensor, max_new_tokens: int) -> StepCache:
        """The step cache for a call of this batch size, dtype and device, with room for
        the prompt and up to :data:`FIRST_WINDOWS` windows of new tokens (it grows by
        windows from there)."""
        tokens = embeds.shape[1] + min(max_new_tokens, FIRST_WINDOWS * WINDOW)
        key = (embeds.shape[0], embeds.dtype, str(embeds.device))
        cache = self.caches.pop(key, None) or StepCache(
            talker.config.num_hidden_layers, slots(tokens), self.graphed and embeds.is_cuda)
        cache.reserve(tokens)
        self.caches[key] = cache
        while len(self.caches) > KEEP:
            self.caches.popitem(last=False)
        return cache


def install(talker) -> None:
    """Route ``talker.generate`` through :func:`_generate` (a no-op until :func:`enable`)."""
    if not getattr(talker.generate, "_awq_tts_steps", False):
        talker.generate = MethodType(_generate, talker)


def enable(talker, graphed: bool = True) -> None:
    """Static-cache decoding for ``talker``: replayed from CUDA graphs, or (``graphed``
    false) the same steps run eagerly, the reference the graphs are checked against."""
    install(talker)
    setattr(talker, ATTR, TalkerGraphs(graphed))


def disable(talker) -> None:
    if hasattr(talker, ATTR):
        delattr(talker, ATTR)


@contextmanager
def using(talker, graphed: bool) -> Iterator[TalkerGraphs]:
    """Static-cache decoding for ``talker`` inside the block, from a fresh store (as
    :func:`enable`), and whatever was set before afterwards (calibration's rollouts)."""
    install(talker)
    with swapped(talker, ATTR, TalkerGraphs(graphed)) as store:
        yield store


def status(talker) -> str:
    """``off``, or ``on (N captured)`` with ``, M failed: reason`` when a capture failed."""
    store = getattr(talker, ATTR, None)
    if store is None:
        return "off"
    return describe(sum(len(c.graphs) for c in store.caches.values()),
                    [r for c in store.caches.values() for r in c.failed.values()])


@contextmanager
def stepping(talker, cache: StepCache) -> Iterator[StepCache]:
    """Within the block, a call of the talker's decoder that carries ``cache`` runs through
    it: the first as the prefill (eager), each later one-token call as a static step
    (replayed from a graph when ``cache.graphed``). Other calls are untouched."""
    decoder = talker.model
    original = last_hidden_only(decoder.forward)

    def forward(*args, **kwargs):
        x = kwargs.get("inputs_embeds")
        if args or kwargs.get("past_key_values") is not cache or x is None:
            return original(*args, **kwargs)
        if cache.seen == 0:
            return cache.prefill(original, kwargs)
        positions = kwargs.get("position_ids")
        if positions is None:
            positions = kwargs["cache_position"].view(1, 1, -1).expand(3, x.shape[0], -1)
        hidden = cache.step(original, x, positions, kwargs["cache_position"])
        return BaseModelOutputWithPast(
            last_hidden_state=hidden, past_key_values=cache,
            hidden_states=(hidden,) if kwargs.get("output_hidden_states") else None)

    undo = swap_attr(decoder, "forward", forward)
    try:
        yield cache
    finally:
        undo()
        cache.seen = 0


def _generate(self, *args, **kwargs):
    store = getattr(self, ATTR, None)
    embeds = kwargs.get("inputs_embeds")
    if (store is None or args or embeds is None or "past_key_values" in kwargs
            or kwargs.get("max_new_tokens") is None):
        with swapped(self.model, "forward", last_hidden_only(self.model.forward)):
            return type(self).generate(self, *args, **kwargs)
    cache = store.cache_for(self, embeds, int(kwargs["max_new_tokens"]))
    with stepping(self, cache):
        return type(self).generate(self, **kwargs, past_key_values=cache)


_generate._awq_tts_steps = True
