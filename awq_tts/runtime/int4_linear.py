"""``Int4Linear``: an AWQ GEMM-packed linear whose matmul is run by a chosen backend.

The module's state dict is AutoAWQ's ``WQLinear_GEMM`` (``qweight``, ``qzeros``, ``scales``,
optional ``bias``; see ``awq_tts.format.packing``), so checkpoints are interchangeable.
What runs the matmul is a backend (``awq_tts.runtime.backends``), prepared once by
:meth:`Int4Linear.use_backend` for the device the layer lives on: this project's AVX2
kernel, torch's int4 kernel, AutoAWQ's GEMM, or exact dequantization (the default until a
backend is chosen, and the reference). A backend that keeps its own weight layout frees
``qweight`` and restores it bit-exactly whenever a state dict is taken, so saving and
``inspect`` keep working.

:class:`Int4Kernel` is what a backend runs (the AutoAWQ tensors, the backend's ``kernel_*``
tensors, the shape); :class:`Int4Linear` is the stored layer a checkpoint holds, and
``siblings.FusedInt4Linear`` the kernel several of them share.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UsageError
from ..format.packing import PackedLinear, dequantize_gemm
from .backends import BACKENDS, Backend


class Int4Kernel(nn.Module):
    """AutoAWQ GEMM tensors and the backend that runs them; ``persistent`` false keeps every
    tensor out of state dicts."""

    def __init__(self, in_features: int, out_features: int, group_size: int = 128,
                 bias: bool = False, device: torch.device | str | None = None,
                 persistent: bool = True) -> None:
        super().__init__()
        if in_features % group_size or out_features % 8:
            raise ValueError(f"{type(self).__name__}({in_features}→{out_features}) needs "
                             f"in_features divisible by {group_size} and out_features by 8")
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        groups = in_features // group_size
        self.register_buffer("qweight", torch.zeros(in_features, out_features // 8,
                                                    dtype=torch.int32, device=device),
                             persistent)
        self.register_buffer("qzeros", torch.zeros(groups, out_features // 8,
                                                   dtype=torch.int32, device=device), persistent)
        self.register_buffer("scales", torch.zeros(groups, out_features, dtype=torch.float16,
                                                   device=device), persistent)
        if bias:
            self.register_buffer("bias", torch.zeros(out_features, dtype=torch.float16,
                                                     device=device), persistent)
        else:
            self.bias = None
        self.backend: Backend = BACKENDS["dequant"]

    def set_packed(self, packed: PackedLinear) -> None:
        """Take ``packed``'s tensors as this layer's stored ones."""
        self.qweight, self.qzeros, self.scales = packed.qweight, packed.qzeros, packed.scales
        if packed.bias is not None:
            self.bias = packed.bias

    def use_backend(self, backend: Backend, dtype: torch.dtype = torch.bfloat16) -> None:
        """Prepare ``backend``'s kernel layout from the stored tensors (once, at load time)."""
        if "qweight" not in self._buffers:
            raise RuntimeError(f"{self.backend.name} already owns this layer's weight; "
                               f"reload the checkpoint to switch backends")
        device = self.scales.device
        reason = backend.unavailable(device)
        if reason is not None:
            raise UsageError(f"backend {backend.name!r} cannot run on {device}: {reason}")
        reason = backend.unfit(self)
        if reason is not None:
            raise UsageError(f"backend {backend.name!r} cannot run a {self.in_features}→"
                             f"{self.out_features} INT4 linear: {reason}")
        backend.prepare(self, dtype)
        self.backend = backend
        if not backend.keeps_qweight:
            del self._buffers["qweight"]

    def set_kernel_tensors(self, **tensors: torch.Tensor) -> None:
        """Register a backend's prepared tensors as ``kernel_*`` (non-persistent) buffers."""
        for name, tensor in tensors.items():
            self.register_buffer(f"kernel_{name}", tensor, persistent=False)

    def awq_qweight(self) -> torch.Tensor:
        """The AutoAWQ ``qweight`` (restored from the kernel layout when the backend freed it)."""
        if "qweight" in self._buffers:
            return self._buffers["qweight"]
        return self.backend.restore_qweight(self)

    def packed(self) -> PackedLinear:
        return PackedLinear(self.awq_qweight(), self.qzeros, self.scales, self.bias)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``[out, in]`` weight in ``dtype`` (computed on demand, never stored)."""
        return dequantize_gemm(self.packed()).to(dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"group_size={self.group_size}, bits=4, bias={self.bias is not None}, "
                f"backend={self.backend.name}")


class Int4Linear(Int4Kernel):
    """A stored INT4 linear: its state dict is AutoAWQ's ``WQLinear_GEMM``."""

    #: The kernel that runs this layer's columns with its siblings' (``siblings.py``), the
    #: columns of its output there and this layer's bit among the siblings.
    fused: Int4Kernel | None = None
    columns: tuple[int, int] = (0, 0)
    bit: int = 0

    def __init__(self, in_features: int, out_features: int, group_size: int = 128,
                 bias: bool = False, device: torch.device | str | None = None) -> None:
        super().__init__(in_features, out_features, group_size, bias, device)
        self.register_state_dict_post_hook(_restore_qweight_in_state_dict)

    @classmethod
    def from_packed(cls, packed: PackedLinear, group_size: int) -> Int4Linear:
        in_features, out_packed = packed.qweight.shape
        layer = cls(in_features, out_packed * 8, group_size, packed.bias is not None)
        layer.set_packed(packed)
        return layer

    def awq_qweight(self) -> torch.Tensor:
        if self.fused is not None and "qweight" not in self._buffers:
            return self.fused.part_qweight(self)
        return super().awq_qweight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda != self._buffers["scales"].is_cuda:    # dict read: a step makes 196 calls
            raise RuntimeError(f"Int4Linear on {self.scales.device} got input on {x.device}; "
                               f"load the model on the device you run it on "
                               f"(awq_tts.load(..., device=...))")
        if self.fused is not None:
            return self.fused.part(self, x)
        return self.backend.forward(self, x)


def _restore_qweight_in_state_dict(module: Int4Linear, state_dict: dict, prefix: str,
                                   local_metadata: dict) -> None:
    key = f"{prefix}qweight"
    if key not in state_dict:
        state_dict[key] = module.awq_qweight()
