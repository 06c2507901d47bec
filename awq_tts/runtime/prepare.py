"""``prepare_for_inference``: repack every INT4 linear of a loaded model for one backend."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import nn

from ..errors import UsageError
from .backends import BACKENDS, available_backends, get_backend
from .int4_linear import Int4Linear
from .siblings import fuse

log = logging.getLogger("awq_tts")


def prepare_for_inference(model: torch.nn.Module, backend: str = "auto",
                          dtype: torch.dtype = torch.bfloat16,
                          siblings: Iterable[tuple[nn.Module, list[str]]] = ()) -> str:
    """Give every ``Int4Linear`` of ``model`` the kernel layout of ``backend``; return its name.

    ``auto`` takes the first backend (in ``backends.BACKENDS`` order) that the layers'
    device can run and whose shape and group-size limits every layer meets. A named
    backend that cannot run is a ``UsageError`` naming those that can. Each of
    ``siblings`` (a parent and the names of its children that read one input) becomes one
    fused matmul where its members allow (``siblings.py``).
    """
    layers = [m for m in model.modules() if isinstance(m, Int4Linear)]
    if not layers:
        return "none"
    device = layers[0].scales.device
    if backend == "auto":
        chosen = next(BACKENDS[n] for n in available_backends(device)
                      if all(BACKENDS[n].unfit(layer) is None for layer in layers))
    else:
        chosen = get_backend(backend, device)
    fused = sum(fuse(parent, names, chosen, dtype) for parent, names in siblings)
    for layer in layers:
        if layer.fused is None:
            layer.use_backend(chosen, dtype)
    log.info("awq-tts: %d INT4 linears on %s run with backend %s (%d sibling groups fused)",
             len(layers), device, chosen.name, fused)
    return chosen.name


def backend_of(model: torch.nn.Module) -> str:
    """The backend name the model's INT4 linears use (``none`` for a model without them)."""
    names = {m.backend.name for m in model.modules() if isinstance(m, Int4Linear)}
    if len(names) > 1:
        raise UsageError(f"INT4 linears use mixed backends: {sorted(names)}")
    return names.pop() if names else "none"
