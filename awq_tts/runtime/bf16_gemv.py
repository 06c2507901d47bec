"""The bf16 linears left in the decode path, on a CPU: this project's streaming kernel.

INT4 covers the talker's decoder; every codec frame also runs the code predictor's 15
sub-steps (5 layers each) and the talker's codec head, in bf16 in every checkpoint. On a
CPU they are most of a frame (about 240 of 300 ms at the 1.7B's shapes on 2 cores), and
torch's bf16 kernel reads their weights at 11-15 GB/s at batch 1. ``csrc/gemv_bf16_avx2.c``
gives each thread a contiguous range of output rows, so it streams one stretch of the
weight front to back: 23-27 GB/s on the same machine (``benchmarks/decode.py`` has the
frame it buys).

:func:`install` sets that path on every bf16 ``nn.Linear`` of a module (its forward,
nothing else: the parameters, names and state dict stay qwen-tts's); it serves inputs of
up to :data:`MAX_ROWS` rows on the CPU and hands anything else (more rows, another dtype,
another device, autograd) to ``F.linear`` unchanged. Numerics: float32 accumulation and one
rounding to bf16, as torch's kernel; the sums' order differs, so an output may differ from
torch's by one bf16 rounding step (tested). ``AWQ_TTS_NATIVE=0``, no compiler or no AVX2:
nothing is installed and torch's kernel runs.
"""

from __future__ import annotations

import ctypes
from contextlib import AbstractContextManager

import torch
import torch.nn.functional as F
from torch import nn

from ..forwards import class_forward, give, runs
from .backends.native import kernel_function

#: The most rows one call of the kernel takes (a decode step is 1, a predictor frame's
#: first forward 2); more go to torch, whose matrix product is then the better one.
MAX_ROWS = 4
#: The C function's dtype code for bfloat16 (inputs and outputs here are bf16 only).
BF16 = 1
_ARGS = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_int64,
         ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int)


def _kernel():
    """``gemv_bf16_avx2``: ``(function, None)`` or ``(None, why it cannot run)``."""
    return kernel_function("gemv_bf16_avx2", "gemv_bf16_avx2", _ARGS, ctypes.c_int)


def unavailable() -> str | None:
    """Why the kernel cannot run on this machine, or None."""
    return _kernel()[1]


def _fits(module: nn.Module) -> bool:
    """A plain bf16 ``nn.Linear`` on the CPU (subclasses keep their own forward)."""
    return (type(module) is nn.Linear and module.weight.dtype == torch.bfloat16
            and module.weight.is_cpu
            and (module.bias is None or module.bias.dtype == torch.bfloat16))


def install(module: nn.Module) -> int:
    """Route every bf16 CPU ``nn.Linear`` in ``module`` through the kernel (idempotent);
    returns how many linears take it (0 where the kernel cannot run)."""
    if unavailable() is not None:
        return 0
    count = 0
    for linear in module.modules():
        if _fits(linear):
            if not runs(linear, _forward):
                give(linear, _forward)
            count += 1
    return count


def installed(module: nn.Module) -> int:
    """How many linears in ``module`` run through the kernel."""
    return sum(runs(m, _forward) for m in module.modules())


def bypassed(module: nn.Module) -> AbstractContextManager[None]:
    """Within the block, ``module``'s linears run ``nn.Linear.forward`` (torch's kernel), for
    comparisons against it; afterwards the kernel again."""
    return class_forward(m for m in module.modules() if runs(m, _forward))


def _forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    weight, bias = self.weight, self.bias
    rows = x.numel() // max(x.shape[-1], 1)
    if not (0 < rows <= MAX_ROWS and x.dtype == weight.dtype == torch.bfloat16 and x.is_cpu
            and weight.is_cpu and x.shape[-1] == self.in_features
            and (bias is None or (bias.dtype == torch.bfloat16 and bias.is_cpu))
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))):
        return F.linear(x, weight, bias)     # what qwen-tts would run, errors included
    x2 = x.reshape(rows, self.in_features).contiguous()
    weight = weight.contiguous()
    bias = None if bias is None else bias.contiguous()
    out = torch.empty(rows, self.out_features, dtype=torch.bfloat16)
    failed = _kernel()[0](weight.data_ptr(), x2.data_ptr(), BF16, rows, self.in_features,
                          self.out_features, None if bias is None else bias.data_ptr(),
                          out.data_ptr(), BF16, torch.get_num_threads())
    if failed:
        raise MemoryError("the bf16 decode kernel could not allocate its input buffer")
    return out.view(*x.shape[:-1], self.out_features)
