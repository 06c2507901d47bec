"""What a runtime backend is: a kernel layout prepared once from the stored AWQ tensors.

The stored format never changes (AutoAWQ GEMM: ``qweight``/``qzeros``/``scales``, see
``awq_tts.format.packing``). A backend turns one :class:`~awq_tts.runtime.Int4Linear`'s
tensors into whatever its kernel reads, once, at load time, and then runs the layer's
forward from that layout. A backend that reorders ``qweight`` into its own layout frees
the original and must give it back bit-exactly (:meth:`Backend.restore_qweight`), so a
loaded model still saves and inspects as an AutoAWQ checkpoint.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ..int4_linear import Int4Linear


class Backend(ABC):
    """One INT4 matmul implementation; stateless, the prepared tensors live on the layer."""

    name: str = ""
    #: True when the stored ``qweight`` is itself the kernel's input (nothing to free).
    keeps_qweight: bool = True
    #: Group sizes the kernel accepts.
    group_sizes: tuple[int, ...] = (32, 64, 128, 256)

    @abstractmethod
    def unavailable(self, device: torch.device) -> str | None:
        """Why this backend cannot run on ``device`` (``None`` when it can)."""

    def unfit(self, layer: Int4Linear) -> str | None:
        """Why this backend cannot run ``layer``'s shape or group size (``None`` when it can)."""
        if layer.group_size not in self.group_sizes:
            return (f"group size {layer.group_size} (it supports "
                    f"{', '.join(map(str, self.group_sizes))})")
        return None

    def prepare(self, layer: Int4Linear, dtype: torch.dtype) -> None:
        """Build the kernel's tensors on ``layer`` for activations of ``dtype`` (default: none)."""
        return None

    @abstractmethod
    def forward(self, layer: Int4Linear, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T (+ bias)`` for ``x`` of shape ``[..., in_features]``, in ``x``'s dtype."""

    def restore_qweight(self, layer: Int4Linear) -> torch.Tensor:
        """The AutoAWQ ``qweight`` of ``layer`` (only for backends that free it)."""
        return layer.qweight


def flatten(x: torch.Tensor, features: int) -> torch.Tensor:
    """``x`` as a contiguous 2-D ``[tokens, features]`` view (a copy only when needed)."""
    return x.reshape(-1, features).contiguous()
