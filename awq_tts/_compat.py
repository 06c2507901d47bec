"""The only module that knows about AutoAWQ, and how it is broken.

AutoAWQ 0.2.9 is archived (last tested with torch 2.6 and transformers 4.51). Under the
transformers 4.57.3 that qwen-tts pins, ``import awq`` fails:
``awq/quantize/scale.py`` imports ``PytorchGELUTanh`` from ``transformers.activations``,
a class transformers removed (its replacement is ``GELUTanh``, the same function).
``awq/__init__`` imports every model wrapper, which imports that file, so *any*
``from awq... import`` fails, even of the untouched GEMM module.

What still holds, and what we use:

* ``WQLinear_GEMM`` — the packed GEMM layout every AWQ loader understands, and its
  CUDA (``awq_ext``) / Triton kernels;
* ``WQLinearMMFunction``, the function behind ``WQLinear_GEMM.forward``, which picks
  ``awq_ext`` or the Triton kernels (CUDA tensors only).

What we do not use: ``AwqQuantizer`` (its layer-0 catcher lacks attributes current
decoder layers read, so it crashes) and the model registry (no ``qwen3_tts``).

The fix is a feature check, not a version compare: when ``transformers.activations``
lacks ``PytorchGELUTanh`` we alias it to ``GELUTanh`` before importing ``awq``.
"""

from __future__ import annotations

import functools
import warnings
from types import ModuleType

import torch


def patch_transformers_for_autoawq() -> None:
    """Make ``import awq`` work (also for transformers' own AWQ integration), cheaply.

    Called when ``awq_tts`` is imported, so that ``Qwen3TTSModel.from_pretrained`` of an
    INT4 folder can reach AutoAWQ through transformers on a CUDA machine.
    """
    import transformers.activations as activations

    if not hasattr(activations, "PytorchGELUTanh"):
        activations.PytorchGELUTanh = activations.GELUTanh


@functools.cache
def awq_module() -> ModuleType:
    """Import and return the ``awq`` package, patched to import under new transformers."""
    patch_transformers_for_autoawq()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import awq
    return awq


def wqlinear_gemm() -> type:
    """AutoAWQ's ``WQLinear_GEMM`` class (packed INT4 linear with CUDA/Triton kernels)."""
    awq_module()
    from awq.modules.linear.gemm import WQLinear_GEMM

    return WQLinear_GEMM


def awq_gemm_function() -> type:
    """AutoAWQ's autograd function behind ``WQLinear_GEMM.forward`` (CUDA/Triton GEMM).

    Call it with CUDA tensors only: on CPU tensors it picks its Triton kernel whenever
    triton is installed, and crashes.
    """
    awq_module()
    from awq.modules.linear.gemm import WQLinearMMFunction

    return WQLinearMMFunction


def awq_quantizer() -> type:
    """AutoAWQ's own ``AwqQuantizer`` — only for side-by-side benchmarks."""
    awq_module()
    from awq.quantize.quantizer import AwqQuantizer

    return AwqQuantizer


def awq_version() -> str:
    return str(getattr(awq_module(), "__version__", "unknown"))


def dequantize_wqlinear(module) -> torch.Tensor:
    """``[out, in]`` float32 weight of a ``WQLinear_GEMM``, by AutoAWQ's own ``dequantize_gemm``.

    The scales are widened to float32 first so the product is exact, as in ``Int4Linear``.
    """
    awq_module()
    from awq.utils.packing_utils import dequantize_gemm

    weight = dequantize_gemm(module.qweight, module.qzeros, module.scales.float(), module.w_bit,
                             module.group_size)
    return weight.t().float()
