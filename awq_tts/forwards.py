"""Instance-level ``forward`` overrides, how awq-tts gives a module a faster forward
(``runtime/bf16_gemv.py``, ``models/qwen3_tts/fused_norms.py``), and the one way a
comparison sets them aside for a while."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import MethodType

from torch import nn


def give(module: nn.Module, forward: Callable) -> None:
    """Make ``forward`` ``module``'s own (a bound method, so a deep copy keeps its own)."""
    module.forward = MethodType(forward, module)


def runs(module: nn.Module, forward: Callable) -> bool:
    """Whether ``module`` runs ``forward`` as its own (not while :func:`class_forward` has it
    set aside)."""
    return getattr(vars(module).get("forward"), "__func__", None) is forward


@contextmanager
def class_forward(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Within the block, each of ``modules`` runs its class's ``forward`` (its instance
    override set aside); afterwards the override again."""
    patched = [m for m in modules if "forward" in vars(m)]
    saved = [m.__dict__.pop("forward") for m in patched]
    try:
        yield
    finally:
        for module, forward in zip(patched, saved, strict=True):
            module.forward = forward
