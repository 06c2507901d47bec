"""Rope tables built once per forward, not once per layer (the talker's and the code
predictor's).

Each of the talker's 28 attention layers calls qwen-tts's
``apply_multimodal_rotary_pos_emb(q, k, cos, sin, mrope_section, interleaved)``, which first
rearranges the step's ``cos`` and ``sin`` by the rope sections (for Qwen3-TTS's interleaved
layout: two clones, four strided copies and two concatenations) and then rotates ``q`` and
``k``. ``cos`` and ``sin`` are the same two tensors for every layer of a forward, so 27 of
the 28 rearrangements recompute what the first one made: 216 of a full-shape decode step's
launches. The code predictor's 5 layers call the plain ``apply_rotary_pos_emb``, whose
``rotate_half`` negates and concatenates each tensor anew: 20 launches a sub-step, 300 a
frame.

:func:`install` replaces both functions (module globals of qwen-tts's modeling module,
looked up at each call) with :func:`apply` and :func:`apply_plain`, which build the tables
as qwen-tts does, keep them with the two tensors they came from, and reuse them while
handed the same two tensors (compared by identity and held, so an identity is never a
recycled one). The rotation is qwen-tts's arithmetic with its ``rotate_half`` (a negation
and a concatenation per tensor) as one roll against a sine table whose first half is
negated once per forward; the results are bit-identical (tested, both layouts and the plain
rope, bf16 and float32; on CUDA the last product and sum are one ``addcmul``, a rounding
fewer: tested within a step of the dtype). Reading one remembered entry at a time is safe
across threads: a thread handed other tensors recomputes. Inside a CUDA graph capture the
first layer's tables are captured and the others read them, so every replay recomputes
them before they do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from ... import devices
from .package import modeling
from .patches import swap_attr

#: The last tables built, by rope kind (``multimodal``: the talker's, ``plain``: the code
#: predictor's): ``(cos, sin, layout, cos_table, signed_sin_table)``.
_last: dict[str, tuple] = {}
#: qwen-tts's own functions, by name, once :func:`install` has replaced them.
_originals: dict[str, Callable] = {}


def tables(cos: torch.Tensor, sin: torch.Tensor, mrope_section, interleaved: bool = False,
           unsqueeze_dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos`` and ``sin`` rearranged by the rope sections as qwen-tts rearranges them."""
    return (_rearranged(cos, mrope_section, interleaved).unsqueeze(unsqueeze_dim),
            _rearranged(sin, mrope_section, interleaved).unsqueeze(unsqueeze_dim))


def _rearranged(table: torch.Tensor, sections, interleaved: bool) -> torch.Tensor:
    """One ``[3, batch, positions, dim]`` table as ``[batch, positions, dim]``: channel by
    channel, the temporal, height or width row its section names."""
    if not interleaved:
        parts = table.split(list(sections) * 2, dim=-1)
        return torch.cat([part[i % 3] for i, part in enumerate(parts)], dim=-1)
    half = table[..., : table.shape[-1] // 2]
    rows = len(sections)
    picked = half[0].clone()
    for row, size in enumerate(sections[1:], 1):
        picked[..., row:size * rows:rows] = half[row, ..., row:size * rows:rows]
    return torch.cat([picked, picked], dim=-1)


def apply(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
          mrope_section, mrope_interleaved: bool = False,
          unsqueeze_dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``apply_multimodal_rotary_pos_emb`` with the tables built once per ``cos``/``sin``."""
    layout = (tuple(mrope_section), bool(mrope_interleaved), unsqueeze_dim)
    cos_t, signed = _remembered("multimodal", cos, sin, layout, lambda: tables(
        cos, sin, mrope_section, mrope_interleaved, unsqueeze_dim))
    return _rotated_pair(q, k, cos_t, signed, unsqueeze_dim)


def apply_plain(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                position_ids=None, unsqueeze_dim: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``apply_rotary_pos_emb`` (the code predictor's rope) with the signed sine table
    built once per ``cos``/``sin``: its 5 layers share them in each sub-step."""
    cos_t, signed = _remembered("plain", cos, sin, unsqueeze_dim, lambda: (
        cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)))
    return _rotated_pair(q, k, cos_t, signed, unsqueeze_dim)


def _remembered(kind: str, cos: torch.Tensor, sin: torch.Tensor, layout,
                build) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``kind`` tables (cos, signed sine) for ``cos``/``sin`` and ``layout``: the last
    ones built while handed the same two tensors, else ``build()``'s, signed and kept."""
    last = _last.get(kind)
    if last and last[0] is cos and last[1] is sin and last[2] == layout:
        return last[3], last[4]
    cos_t, sin_t = build()
    signed = _signed(sin_t)
    _last[kind] = (cos, sin, layout, cos_t, signed)
    return cos_t, signed


def _signed(sin_t: torch.Tensor) -> torch.Tensor:
    """The sine table with its first half negated (what ``rotate_half`` negates)."""
    half = sin_t.shape[-1] // 2
    return torch.cat([-sin_t[..., :half], sin_t[..., half:]], dim=-1)


def _rotated_pair(q: torch.Tensor, k: torch.Tensor, cos_t: torch.Tensor, signed: torch.Tensor,
                  heads_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``q`` and ``k`` rotated as one tensor (their heads side by side, the dimension the
    tables broadcast over): one concatenation, then one set of kernels instead of two;
    elementwise, so each value is what it would be alone. The results are views of it."""
    both = _rotated(torch.cat([q, k], dim=heads_dim), cos_t, signed)
    return both.split([q.shape[heads_dim], k.shape[heads_dim]], dim=heads_dim)


def _rotated(x: torch.Tensor, cos_t: torch.Tensor, signed: torch.Tensor) -> torch.Tensor:
    """qwen-tts's ``x * cos + rotate_half(x) * sin`` with ``rotate_half(x) * sin`` as
    ``roll(x) * signed``: ``rotate_half`` is the halves swapped with the first negated, and
    ``(−a)·b = a·(−b)`` exactly, so one roll replaces a negation and a concatenation. On
    CUDA the second product and the sum are one ``addcmul`` (:func:`fused_rotation`)."""
    rolled = x.roll(x.shape[-1] // 2, dims=-1)
    if devices.cuda_kernels(x):
        return fused_rotation(x, rolled, cos_t, signed)
    return (x * cos_t) + (rolled * signed)


def fused_rotation(x: torch.Tensor, rolled: torch.Tensor, cos_t: torch.Tensor,
                   signed: torch.Tensor) -> torch.Tensor:
    """``x * cos + rolled * signed`` in two kernels instead of three: the second product is
    not rounded before the sum (one rounding fewer than qwen-tts's, at most a step of the
    dtype apart)."""
    return torch.addcmul(x * cos_t, rolled, signed)


#: qwen-tts's functions this module replaces, and what replaces each.
REPLACED = {"apply_multimodal_rotary_pos_emb": apply, "apply_rotary_pos_emb": apply_plain}


def install() -> None:
    """Route qwen-tts's talker and code-predictor attention through :func:`apply` and
    :func:`apply_plain` (idempotent)."""
    module = modeling()
    for name, ours in REPLACED.items():
        if getattr(module, name) is not ours:
            _originals[name] = getattr(module, name)
            setattr(module, name, ours)


def installed() -> bool:
    """Whether qwen-tts's attention calls this module's functions."""
    module = modeling()
    return all(getattr(module, name) is ours for name, ours in REPLACED.items())


@contextmanager
def bypassed() -> Iterator[None]:
    """Within the block, qwen-tts's own functions (tables rebuilt in every layer), for
    comparisons against them; afterwards this module's again if they were installed."""
    module = modeling()
    if not installed():
        yield
        return
    undo = [swap_attr(module, name, _originals[name]) for name in REPLACED]
    try:
        yield
    finally:
        for restore in reversed(undo):
            restore()
        _last.clear()
