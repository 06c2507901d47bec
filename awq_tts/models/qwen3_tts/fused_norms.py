"""The talker's RMSNorms as one ``F.rms_norm`` each, in every model awq-tts loads.

qwen-tts's ``Qwen3TTSRMSNorm`` is eight ops: cast to float32, square, mean, add epsilon,
reciprocal square root, multiply, cast back, multiply by the weight. The talker has 113 of
them per decode step (four per layer: before attention, before the MLP, and the per-head
query and key norms; and the final one) and the code predictor 21 per sub-step, 15
sub-steps a frame: counted on the full-shape model, they are 904 of the step's 1,800
kernel-launching ops (``aten``'s dispatch on the CPU). At batch 1 on a GPU a step costs its
launches, not its weights, and on CUDA ``F.rms_norm`` is one fused kernel (torch's
``_fused_rms_norm``), so the norm becomes one launch instead of eight (the weight taken
inside, :func:`weighted`), for bf16 and INT4 alike (INT4's smaller weights show once the
fixed cost shrinks).

:func:`install` gives each norm :func:`forward`: the same expression with the middle six ops
as one ``F.rms_norm`` in the input's dtype, computed in float32 inside (torch's op math for
bf16 and float16), then the weight multiplied as qwen-tts does. On the CPU ``F.rms_norm`` is
those same ops (torch has no fused CPU kernel), so it is bit-identical to the stock norm
(tested on the trained tiny model: the same wav) and no faster: a full-shape talker step
and codec frame timed within 1.5 % of the stock norms' (bf16 and ``avx2``, 7 interleaved
rounds, 2 cores, ``benchmarks/decode.py``'s paired line). On CUDA the fused kernel sums the
squares in another order and multiplies by the weight before its one rounding, so it may
differ from the stock norm by one step of the dtype (tested within it); what it saves there
is the GPU run's to measure (the same paired line).
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch
import torch.nn.functional as F
from torch import nn

from ... import devices
from ...forwards import class_forward, give, runs

#: qwen-tts's RMSNorm class and the attribute holding its epsilon.
NORM_CLASS, EPSILON = "Qwen3TTSRMSNorm", "variance_epsilon"


def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    """``Qwen3TTSRMSNorm.forward`` with its normalization as one ``F.rms_norm`` (on CUDA
    with the weight inside: :func:`weighted`)."""
    if devices.cuda_kernels(hidden_states) and hidden_states.dtype == self.weight.dtype:
        return weighted(self, hidden_states)
    return self.weight * F.rms_norm(hidden_states, (hidden_states.shape[-1],), None,
                                    getattr(self, EPSILON))


def weighted(norm: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """The norm as one ``F.rms_norm`` with its weight: one fused kernel on CUDA, the
    weight applied in float32 before the one rounding to the input's dtype (qwen-tts rounds
    the normalized value first, then the product: at most one step of that dtype apart)."""
    return F.rms_norm(hidden_states, (hidden_states.shape[-1],), norm.weight,
                      getattr(norm, EPSILON))


def install(model: nn.Module) -> int:
    """Give every ``Qwen3TTSRMSNorm`` under ``model`` :func:`forward` (``forwards.give``);
    returns how many. Installing twice is a no-op."""
    count = 0
    for module in model.modules():
        if type(module).__name__ == NORM_CLASS and hasattr(module, EPSILON):
            if not runs(module, forward):
                give(module, forward)
            count += 1
    return count


def installed(model: nn.Module) -> int:
    """How many of ``model``'s norms run :func:`forward`."""
    return sum(runs(m, forward) for m in model.modules() if type(m).__name__ == NORM_CLASS)


def bypassed(model: nn.Module) -> AbstractContextManager[None]:
    """Within the block, ``model``'s fused norms run qwen-tts's own forward (for comparisons
    against it); afterwards the fused one again."""
    return class_forward(m for m in model.modules() if runs(m, forward))
