"""Sibling INT4 linears (one input, several weights) run as one matmul.

Each talker decoder layer reads two inputs several times over: ``q_proj``, ``k_proj`` and
``v_proj`` read the same normed hidden states, ``gate_proj`` and ``up_proj`` the same
post-attention norm's output. These are the model mapping's scale groups of more than one
linear (AWQ groups them because they read one input; ``models/mapping.py``). At batch 1 a
decode step's cost is its kernel launches more than its weights (196 INT4 matmuls a talker
step on the full 1.7B), so :func:`fuse` makes each group one matmul: 112 a step.

Per group, ``prepare_for_inference`` builds one :class:`FusedInt4Linear` whose output
columns are the members' side by side (AutoAWQ's ``qweight``, ``qzeros`` and ``scales``
concatenated along their column axis, then prepared for the backend as any layer is). It is
registered beside its members as ``awq_fused_<first member>`` with non-persistent tensors
only, so the model's state dict keeps AutoAWQ's names and shapes: each member keeps its
``qzeros`` and ``scales``, and its ``qweight`` is restored bit-exactly from the fused kernel's
columns when a state dict is taken. The fused weight replaces the members' (same bytes;
a backend that reads the stored tensors themselves, ``dequant`` or ``awq-triton``, also
keeps a copy of the group's ``qzeros`` and ``scales``, 4 % of its weight at group 128).

A member's call runs the fused matmul and returns its columns (a view); a sibling called
next with the very same input tensor (same object, same version, same thread) takes its
columns from that result, which is released once every member has had its part. Any other
call runs the fused matmul again: never a wrong answer, at worst the work of an unfused
call times the group's width. Each output column is computed exactly as before, so on the
CPU a fused model speaks bit-identically (tested, ``int4pack`` and ``avx2``); on CUDA
tinygemm is tested against the members apart within bf16 rounding.

Measured on the full-shape 1.7B (2-core AMD EPYC, ``benchmarks/decode.py``'s paired line,
7 interleaved rounds, ``avx2``): a talker step 1.04–1.08× faster than apart, a codec frame
0.99–1.11× (three runs). On CUDA, where a step's cost is mostly its launches, the GPU run's
same line measures it.
"""

from __future__ import annotations

import threading

import torch
from torch import nn

from ..format.packing import PackedLinear
from ..models.mapping import LayerMapping, get_module
from .backends import Backend
from .int4_linear import Int4Kernel, Int4Linear

PREFIX = "awq_fused_"


class FusedInt4Linear(Int4Kernel):
    """The columns of sibling INT4 linears side by side; in no state dict (see module doc)."""

    def __init__(self, members: list[Int4Linear], backend: Backend, dtype: torch.dtype) -> None:
        first = members[0]
        super().__init__(first.in_features, sum(m.out_features for m in members),
                         first.group_size, first.bias is not None, device="meta",
                         persistent=False)
        parts = [m.packed() for m in members]
        self.set_packed(PackedLinear(*(torch.cat([getattr(p, name) for p in parts], dim=1)
                                       for name in ("qweight", "qzeros", "scales")),
                                     None if first.bias is None
                                     else torch.cat([p.bias for p in parts])))
        self.use_backend(backend, dtype)
        if not backend.keeps_qweight:       # its kernel reads only kernel_* (and bias)
            del self._buffers["qzeros"], self._buffers["scales"]
        self.full = (1 << len(members)) - 1
        self._last: tuple | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's columns for ``x``, side by side."""
        return self.backend.forward(self, x)

    def part(self, member: Int4Linear, x: torch.Tensor) -> torch.Tensor:
        """``member``'s output columns for ``x``, from the last fused result when a sibling
        has just been called with the same tensor."""
        key = (threading.get_ident(), -1 if x.is_inference() else x._version)
        last = self._last
        if last is not None and last[0] is x and last[1] == key and last[3] & member.bit:
            out, left = last[2], last[3] & ~member.bit
        else:
            out, left = self.backend.forward(self, x), self.full & ~member.bit
        self._last = (x, key, out, left) if left else None
        start, stop = member.columns
        return out[..., start:stop]

    def part_qweight(self, member: Int4Linear) -> torch.Tensor:
        """``member``'s AutoAWQ ``qweight``, restored from the fused kernel's columns."""
        start, stop = member.columns
        return self.awq_qweight()[:, start // 8:stop // 8].contiguous()


def groups(layers: nn.ModuleList, mapping: LayerMapping) -> list[tuple[nn.Module, list[str]]]:
    """``(parent, child names)`` per mapping scale group of ≥ 2 linears sharing one parent,
    in every layer (a parent the layer lacks is the mapping's ``MappingError``)."""
    out = []
    for layer in layers:
        for group in mapping.groups:
            parents = {name.rpartition(".")[0] for name in group.linears}
            if len(group.linears) > 1 and len(parents) == 1:
                out.append((get_module(layer, parents.pop()),
                            [name.rpartition(".")[2] for name in group.linears]))
    return out


def fusable(members: list[nn.Module]) -> bool:
    """Whether ``members`` are INT4 linears one matmul can run: same input width, group
    size, device, bias or none, still holding their stored ``qweight``."""
    if not all(type(m) is Int4Linear and "qweight" in m._buffers for m in members):
        return False
    first = members[0]
    return all((m.in_features, m.group_size, m.scales.device, m.bias is None)
               == (first.in_features, first.group_size, first.scales.device,
                   first.bias is None) for m in members)


def fuse(parent: nn.Module, names: list[str], backend: Backend, dtype: torch.dtype) -> bool:
    """Run ``parent``'s children ``names`` as one fused INT4 matmul (see module doc);
    ``False`` (nothing changed) when they cannot be."""
    members = [getattr(parent, name, None) for name in names]
    if not fusable(members):
        return False
    fused = FusedInt4Linear(members, backend, dtype)
    start = 0
    for index, member in enumerate(members):
        member.__dict__["fused"] = fused        # a plain reference: registered once, below
        member.bit, member.columns = 1 << index, (start, start + member.out_features)
        member.backend = backend
        del member._buffers["qweight"]
        start += member.out_features
    parent.add_module(PREFIX + names[0], fused)
    return True
