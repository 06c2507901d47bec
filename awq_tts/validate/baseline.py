"""An in-memory round-to-nearest twin of the reference: the baseline a KL can be judged by.

``--kl-vs-rtn F`` bounds INT4's teacher-forced KL by ``F`` × the KL of this twin (every
talker decoder linear of the bf16 reference rounded to the INT4 grid with plain RTN, the
same group size, nothing written to disk). A bound relative to RTN adapts to models whose
absolute KL scale differs from the tiny test models the default bounds were set on.
"""

from __future__ import annotations

import torch

from ..models import adapter_of
from ..models.mapping import decoder_layers as mapping_layers
from ..quantizer import numerics
from ..runtime import load
from . import teacher


@torch.no_grad()
def rtn_twin(reference: str, device: str, group_size: int):
    """The reference model, loaded again, with its talker decoder linears fake-quantized."""
    twin = load(reference, device=device, dtype=torch.bfloat16)
    mapping = adapter_of(twin).mapping
    for layer in mapping_layers(twin.model, mapping):
        for name in mapping.quantized:
            linear = layer.get_submodule(name)
            linear.weight.copy_(numerics.fake_quantize(linear.weight.float(), group_size)
                                .to(linear.weight.dtype))
    return twin


def rtn_kl(ref, reference: str, device: str, group_size: int, rollout) -> float:
    """Teacher-forced mean KL of the RTN twin on the bf16 greedy ``rollout``."""
    twin = rtn_twin(reference, device, group_size)
    metrics = teacher.compare(ref, twin, rollout.sequences, rollout.codes, rollout.stopped)
    del twin
    return metrics.summary()["kl_mean"]
