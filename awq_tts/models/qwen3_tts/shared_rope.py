"""The talker's multimodal rope tables built once per forward, not once per layer.

Each of the talker's 28 attention layers calls qwen-tts's
``apply_multimodal_rotary_pos_emb(q, k, cos, sin, mrope_section, interleaved)``, which first
rearranges the step's ``cos`` and ``sin`` by the rope sections (for Qwen3-TTS's interleaved
layout: two clones, four strided copies and two concatenations) and then rotates ``q`` and
``k``. ``cos`` and ``sin`` are the same two tensors for every layer of a forward, so 27 of
the 28 rearrangements recompute what the first one made: 216 of a full-shape decode step's
launches.

:func:`install` replaces that function (a module global of qwen-tts's modeling module,
looked up at each call) with :func:`apply`, which rearranges the tables as qwen-tts does,
keeps the result with the two tensors it came from, and reuses it while it is handed the
same two tensors (compared by identity and held, so an identity is never a recycled one).
The rotation is qwen-tts's arithmetic with its ``rotate_half`` (a negation and a
concatenation per tensor) as one roll against a sine table whose first half is negated once
per forward; the results are bit-identical (tested, both layouts, bf16 and float32; on
CUDA the last product and sum are one ``addcmul``, a rounding fewer: tested within a step
of the dtype). Reading
one remembered entry at a time is safe across threads: a thread handed other tensors
recomputes. Inside a CUDA graph capture the first layer's rearrangement is captured and the
others read it, so every replay recomputes it before they do.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .patches import swap_attr

#: The last tables built: ``(cos, sin, layout, cos_table, signed_sin_table)``.
_last: tuple = ()
#: qwen-tts's own function, once :func:`install` has replaced it.
_original = None


def _modeling():
    from qwen_tts.core.models import modeling_qwen3_tts

    return modeling_qwen3_tts


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
    global _last
    layout = (tuple(mrope_section), bool(mrope_interleaved), unsqueeze_dim)
    last = _last
    if last and last[0] is cos and last[1] is sin and last[2] == layout:
        cos_t, signed = last[3], last[4]
    else:
        cos_t, sin_t = tables(cos, sin, mrope_section, mrope_interleaved, unsqueeze_dim)
        half = sin_t.shape[-1] // 2
        signed = torch.cat([-sin_t[..., :half], sin_t[..., half:]], dim=-1)
        _last = (cos, sin, layout, cos_t, signed)
    return _rotated(q, cos_t, signed), _rotated(k, cos_t, signed)


def _rotated(x: torch.Tensor, cos_t: torch.Tensor, signed: torch.Tensor) -> torch.Tensor:
    """qwen-tts's ``x * cos + rotate_half(x) * sin`` with ``rotate_half(x) * sin`` as
    ``roll(x) * signed``: ``rotate_half`` is the halves swapped with the first negated, and
    ``(−a)·b = a·(−b)`` exactly, so one roll replaces a negation and a concatenation. On
    CUDA the second product and the sum are one ``addcmul`` (:func:`fused_rotation`)."""
    rolled = x.roll(x.shape[-1] // 2, dims=-1)
    if x.is_cuda:
        return fused_rotation(x, rolled, cos_t, signed)
    return (x * cos_t) + (rolled * signed)


def fused_rotation(x: torch.Tensor, rolled: torch.Tensor, cos_t: torch.Tensor,
                   signed: torch.Tensor) -> torch.Tensor:
    """``x * cos + rolled * signed`` in two kernels instead of three: the second product is
    not rounded before the sum (one rounding fewer than qwen-tts's, at most a step of the
    dtype apart)."""
    return torch.addcmul(x * cos_t, rolled, signed)


def install() -> None:
    """Route qwen-tts's talker attention through :func:`apply` (idempotent)."""
    modeling = _modeling()
    if modeling.apply_multimodal_rotary_pos_emb is not apply:
        global _original
        _original = modeling.apply_multimodal_rotary_pos_emb
        modeling.apply_multimodal_rotary_pos_emb = apply


def installed() -> bool:
    """Whether qwen-tts's talker attention calls :func:`apply`."""
    return _modeling().apply_multimodal_rotary_pos_emb is apply


@contextmanager
def bypassed() -> Iterator[None]:
    """Within the block, qwen-tts's own function (tables rebuilt in every layer), for
    comparisons against it; afterwards :func:`apply` again if it was installed."""
    global _last
    modeling = _modeling()
    if not installed():
        yield
        return
    undo = swap_attr(modeling, "apply_multimodal_rotary_pos_emb", _original)
    try:
        yield
    finally:
        undo()
        _last = ()

