"""Planted defects for INT4 checkpoints: what the validator must catch.

Each function edits a checkpoint's tensors in place (``tensors``: the INT4 model's,
``source``: its bf16 source's, both name → tensor). :func:`planted` applies one to a copy.
Used by the tampering-battery tests and by ``benchmarks/validator_bounds.py``, which sets
the validator's default bounds from how clean outputs and these defects score.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

Damage = Callable[[dict, dict], None]


def planted(src: Path, dst: Path, damage: Damage, source: Path | None = None) -> Path:
    """A copy of checkpoint ``src`` at ``dst`` with ``damage`` applied to its tensors."""
    shutil.copytree(src, dst)
    tensors = load_file(str(dst / "model.safetensors"))
    reference = load_file(str(source / "model.safetensors")) if source else {}
    damage(tensors, reference)
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def swap_zero_groups(t: dict, source: dict) -> None:
    """Swap the two groups of one linear whose packed zero points differ the most."""
    best = None
    for key in (k for k in t if k.endswith(".qzeros")):
        z = t[key]
        for a in range(z.shape[0]):
            for b in range(a + 1, z.shape[0]):
                n = int((z[a] != z[b]).sum())
                if best is None or n > best[0]:
                    best = (n, key, a, b)
    _, key, a, b = best
    z = t[key].clone()
    z[[a, b]] = z[[b, a]]
    t[key] = z


def column_scale(t: dict, source: dict) -> None:
    """One output column's scale × 1.5 in one linear."""
    key = "talker.model.layers.1.mlp.gate_proj.scales"
    t[key] = t[key].clone()
    t[key][:, 5] *= 1.5


def fold_undone(t: dict, source: dict) -> None:
    """Restore the folded norm whose AWQ scale is farthest from 1 to its source value."""
    norms = [k for k in t if k.endswith("layernorm.weight") and ".layers." in k
             and k.startswith("talker.model.")]
    key = max(norms, key=lambda k: float((source[k].float() / t[k].float() - 1).abs().max()))
    if torch.equal(t[key], source[key]):
        raise ValueError("AWQ folded nothing into any norm: no defect to plant")
    t[key] = source[key].clone()


def code_predictor_ulp(t: dict, source: dict) -> None:
    """One code-predictor weight moved by one unit in the last place."""
    key = "talker.code_predictor.model.layers.0.mlp.down_proj.weight"
    bits = t[key].clone().view(torch.int16)
    bits.view(-1)[0] += 1
    t[key] = bits.view(t[key].dtype)


def scales_times_4(t: dict, source: dict) -> None:
    for key in [k for k in t if k.startswith("talker.model.layers.0.") and k.endswith(".scales")]:
        t[key] = t[key] * 4


def scrambled_qweight(t: dict, source: dict) -> None:
    key = "talker.model.layers.1.mlp.down_proj.qweight"
    t[key] = t[key][torch.randperm(t[key].shape[0], generator=torch.Generator().manual_seed(0))]


def zeroed_eos_row(t: dict, source: dict, eos_id: int = 358) -> None:
    """The codec head's end-of-speech row zeroed (the tiny models' EOS id is 358)."""
    t["talker.codec_head.weight"][eos_id] = 0


DEFECTS: dict[str, Damage] = {
    "qzeros-swap": swap_zero_groups,
    "column-scale-x1.5": column_scale,
    "fold-undone": fold_undone,
    "code-predictor-ulp": code_predictor_ulp,
    "scales-x4": scales_times_4,
    "scrambled-qweight": scrambled_qweight,
    "eos-row": zeroed_eos_row,
}
