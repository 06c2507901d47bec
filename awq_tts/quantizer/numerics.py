"""Group-wise asymmetric INT4 quantization: small pure tensor-in / tensor-out functions.

Conventions (the same as AutoAWQ's GEMM checkpoints):

* a weight ``w`` has shape ``[out, in]`` and is split along ``in`` into groups of
  ``group_size`` consecutive input channels;
* per (output row, group): ``scale = (max - min) / 15`` and
  ``zero = clamp(-round(min / scale), 0, 15)``;
* ``q = clamp(round(w / scale) + zero, 0, 15)`` and ``w ≈ (q - zero) * scale``.

Scales are rounded to fp16 *before* ``q`` is computed, because fp16 is what the checkpoint
stores: the dequantized weight of the packed layer is then exactly ``(q - zero) * scale``
with the stored scale, and the fake-quantized weight used during the search equals it.
All arithmetic is float32.
"""

from __future__ import annotations

import torch

BITS = 4
QMAX = 2**BITS - 1


def _grouped(w: torch.Tensor, group_size: int) -> torch.Tensor:
    out_features, in_features = w.shape
    if in_features % group_size:
        raise ValueError(f"in_features {in_features} is not divisible by group_size {group_size}")
    return w.reshape(out_features, in_features // group_size, group_size)


def compute_qparams(
    w: torch.Tensor, group_size: int, clip_max: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scales (fp16-representable float32) and integer zeros, both ``[out, in/group]``.

    ``clip_max`` (``[out, in/group]``) limits ``|w|`` per group before the range is taken.
    """
    g = _grouped(w.float(), group_size)
    wmax, wmin = g.amax(dim=-1), g.amin(dim=-1)
    if clip_max is not None:
        wmax = torch.minimum(wmax, clip_max)
        wmin = torch.maximum(wmin, -clip_max)
    scales = ((wmax - wmin).clamp(min=1e-5) / QMAX).half().float()
    zeros = (-torch.round(wmin / scales)).clamp(0, QMAX)
    return scales, zeros


def quantize(
    w: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int
) -> torch.Tensor:
    """Integer codes ``q`` in [0, 15] (uint8, shape of ``w``) for given scales and zeros."""
    g = _grouped(w.float(), group_size)
    q = torch.round(g / scales[..., None]) + zeros[..., None]
    return q.clamp(0, QMAX).to(torch.uint8).reshape(w.shape)


def dequantize(
    q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int
) -> torch.Tensor:
    """float32 weights ``(q - zero) * scale`` with the shape of ``q``."""
    g = _grouped(q.float(), group_size)
    return ((g - zeros[..., None]) * scales[..., None]).reshape(q.shape)


def fake_quantize(
    w: torch.Tensor, group_size: int, clip_max: torch.Tensor | None = None
) -> torch.Tensor:
    """Round ``w`` to its INT4 grid and back, in ``w``'s dtype (round-to-nearest baseline)."""
    scales, zeros = compute_qparams(w, group_size, clip_max)
    return dequantize(quantize(w, scales, zeros, group_size), scales, zeros, group_size).to(w.dtype)


def awq_candidate_scales(
    x_mean: torch.Tensor, w_mean: torch.Tensor, ratio: float
) -> torch.Tensor:
    """AWQ's per-input-channel scale family ``mean|x|^a / mean|w|^(1-a)``, normalised.

    Normalising by ``sqrt(max * min)`` keeps the scales centred on 1 so folding them into
    the previous op does not shift the activation range as a whole.
    """
    s = x_mean.float().pow(ratio) / (w_mean.float().pow(1 - ratio) + 1e-4)
    s = s.clamp(min=1e-4)
    s = s / (s.max() * s.min()).sqrt()
    s[torch.isinf(s) | torch.isnan(s)] = 1.0
    return s


def normalized_weight_mean(weights: list[torch.Tensor], group_size: int) -> torch.Tensor:
    """Per input channel, the mean over output rows of ``|w| / max|w| in its group``."""
    w = torch.cat([wt.float() for wt in weights], dim=0)
    g = _grouped(w.abs(), group_size)
    g = g / (g.amax(dim=-1, keepdim=True) + 1e-6)
    return g.reshape(w.shape).mean(dim=0)
