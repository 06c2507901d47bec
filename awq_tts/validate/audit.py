"""``weights_audit``: catch what a quantizer (or a later edit) could have written wrong, from
the tensors alone — no rollouts.

For every packed talker linear:

1. Dequantize it and undo the folded AWQ scale ``s`` (per input channel). ``s`` is
   recovered from the source: for a group whose ``prev`` is a norm, as
   ``norm_source / norm_int4``; whose ``prev`` is a linear (``v_proj → o_proj``,
   ``up_proj → down_proj``), per row of ``prev`` by least squares,
   ``|w_src|² / ⟨w_src, w_int4⟩`` (which also undoes the division of ``prev``'s rows);
   where the shapes do not chain (GQA's v → o, skipped by the quantizer) ``s = 1``.
2. Compare with the source weight, against the round-to-nearest error of that same
   source weight computed here:
   - per linear: ``‖Ŵ − W‖ / ‖RTN(W) − W‖ ≤ LINEAR_FACTOR``;
   - per block (one output row × one group): squared error over RTN's, at most
     ``BLOCK_FACTOR``, with RTN's error floored at its median so that a block RTN happens
     to hit exactly does not divide by zero.

AWQ trades a little weight error for a lower output error, and its clip search widens the
error of clipped groups. The factors were set on clean outputs of this project's test
models (AWQ per-linear ratio 0.9–1.25, worst block 2–6×) against planted defects (a
zero-point swap, one column's scale × 1.5, a norm's fold undone: per-linear ≥ 1.6 or
block ≥ 30×), with room on both sides: see ``tests/test_validate_audit.py``.

3. **Fold consistency.** The scale the group's linears carry, fitted per input column by
   least squares against the source, must equal the scale recovered from ``prev``:
   the std over channels of their ratio − 1 is at most ``FOLD_SPREAD`` (clean AWQ on the
   tiny models: 0.003–0.006, shrinking with the square root of the rows; a norm restored to
   the source: 0.04). A fold undone by accident moves the weights by only ``|s − 1|``,
   often inside RTN's error, so step 2 alone cannot see it.

A config that disagrees with the tensors (bits, group size, shapes) is a named failure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..format.checkpoint import CheckpointTensors
from ..format.packing import PackedLinear, dequantize_gemm
from ..models.mapping import QWEN3_TTS_TALKER, LayerMapping
from ..quantizer import numerics
from .thresholds import FAIL, PASS, Check

LINEAR_FACTOR = 1.5
BLOCK_FACTOR = 16.0
FOLD_SPREAD = 0.02


@dataclass
class AuditResult:
    problems: list[str] = field(default_factory=list)
    #: linear name → (per-linear error ratio, worst block ratio)
    ratios: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: folded module → spread between the scale folded into it and the scale its linears carry
    fold: dict[str, float] = field(default_factory=dict)
    #: The config and the tensors disagree: the model cannot even be loaded.
    unloadable: bool = False

    def summary(self) -> dict:
        return {"problems": self.problems,
                "linear_ratio_max": max((v[0] for v in self.ratios.values()), default=None),
                "block_ratio_max": max((v[1] for v in self.ratios.values()), default=None),
                "fold_spread_max": max(self.fold.values(), default=None),
                "worst": self.worst()}

    def worst(self, n: int = 3) -> list[tuple[str, float, float]]:
        rows = sorted(self.ratios.items(), key=lambda kv: -max(kv[1][0] / LINEAR_FACTOR,
                                                                kv[1][1] / BLOCK_FACTOR))
        return [(name, lin, blk) for name, (lin, blk) in rows[:n]]


def _ls_row_scale(src: torch.Tensor, int4: torch.Tensor) -> torch.Tensor:
    """Per-row ``s`` with ``int4 ≈ src / s`` (least squares over each row)."""
    return (src * src).sum(-1) / (src * int4).sum(-1).clamp(min=1e-12)


def _block_errors(diff: torch.Tensor, group_size: int) -> torch.Tensor:
    out_features, in_features = diff.shape
    return diff.reshape(out_features, in_features // group_size, group_size).pow(2).sum(-1)


def audit_linear(w_src: torch.Tensor, unscaled: torch.Tensor,
                 group_size: int) -> tuple[float, float]:
    """(per-linear error ratio, worst block ratio) of an unscaled INT4 weight against RTN."""
    w = w_src.float()
    rtn = numerics.fake_quantize(w, group_size)
    e_q = _block_errors(unscaled - w, group_size)
    e_r = _block_errors(rtn - w, group_size)
    linear = float((e_q.sum() / e_r.sum().clamp(min=1e-30)).sqrt())
    floor = e_r.median().clamp(min=1e-30)
    block = float((e_q / torch.maximum(e_r, floor)).max())
    return linear, block


def weights_audit(quant: Path, reference: Path,
                  mapping: LayerMapping = QWEN3_TTS_TALKER) -> AuditResult:
    """Audit every packed linear of ``quant`` against the source ``reference``."""
    result = AuditResult()
    config = json.loads((quant / "config.json").read_text()).get("quantization_config")
    if not config:
        result.problems.append("QUANT has no quantization_config: not an INT4 checkpoint")
        return result
    bits, group_size = config.get("bits", config.get("w_bit")), config.get("group_size")
    if bits != 4 or not isinstance(group_size, int) or group_size <= 0:
        result.problems.append(f"quantization_config says bits={bits}, group_size={group_size}; "
                               f"awq-tts writes 4-bit with a positive group size")
        result.unloadable = True
        return result
    q, r = CheckpointTensors(quant), CheckpointTensors(reference)
    layers = sorted({int(k.split(".")[len(mapping.layers.split("."))]) for k in q.where
                     if k.startswith(mapping.layers + ".") and k.endswith(".qweight")})
    for index in layers:
        prefix = f"{mapping.layers}.{index}"
        dequantized: dict[str, torch.Tensor] = {}
        for name in mapping.quantized:
            key = f"{prefix}.{name}"
            problem = _shape_problem(q, r, key, group_size)
            if problem:
                result.problems.append(problem)
                result.unloadable = True
                continue
            packed = PackedLinear(q[key + ".qweight"], q[key + ".qzeros"], q[key + ".scales"])
            dequantized[name] = dequantize_gemm(packed)
        _audit_layer(prefix, q, r, dequantized, mapping, group_size, result)
    for name, (lin, blk) in result.ratios.items():
        if lin > LINEAR_FACTOR or blk > BLOCK_FACTOR:
            result.problems.append(f"{name}: error {lin:.2f}× RTN's (≤ {LINEAR_FACTOR}), "
                                   f"worst block {blk:.1f}× (≤ {BLOCK_FACTOR})")
    return result


def _audit_layer(prefix: str, q: CheckpointTensors, r: CheckpointTensors,
                 dequantized: dict[str, torch.Tensor], mapping: LayerMapping, group_size: int,
                 result: AuditResult) -> None:
    """Undo each group's folded scale in mapping order, then compare with the source."""
    row_scale: dict[str, torch.Tensor] = {}
    feeds = {g.prev for g in mapping.groups if g.prev in mapping.quantized}
    for group in mapping.groups:
        s = _input_scale(group.prev, prefix, q, r, row_scale)
        plain = [n for n in group.linears if n in dequantized and n not in feeds]
        if s is not None and plain and s.shape[0] == dequantized[plain[0]].shape[1]:
            spread = _fold_spread(s, [r[f"{prefix}.{n}.weight"].float() for n in plain],
                                  [dequantized[n] for n in plain])
            result.fold[f"{prefix}.{group.prev}"] = spread
            if spread > FOLD_SPREAD:
                result.problems.append(
                    f"{prefix}.{group.prev}: the weights of {', '.join(plain)} carry a "
                    f"different AWQ scale than the one folded into {group.prev} (spread "
                    f"{spread:.3f} > {FOLD_SPREAD}): a fold undone or applied twice?")
        for name in group.linears:
            if name not in dequantized:
                continue
            w = dequantized[name]
            if s is not None and s.shape[0] == w.shape[1]:
                w = w / s[None, :]
            src = r[f"{prefix}.{name}.weight"].float()
            if name in feeds:
                # its rows were divided by the next group's scale: recover it per row
                row_scale[name] = _ls_row_scale(src, w)
                w = w * row_scale[name][:, None]
            result.ratios[f"{prefix}.{name}"] = audit_linear(src, w, group_size)


def _fold_spread(s: torch.Tensor, sources: list[torch.Tensor],
                 dequantized: list[torch.Tensor]) -> float:
    """Std over input channels of (scale the weights carry / scale folded into ``prev``) − 1.

    The scale the weights carry is fitted per input column by least squares,
    ``⟨w_int4, w_src⟩ / |w_src|²``, over every row of the group's linears.
    """
    w, wq = torch.cat(sources), torch.cat(dequantized)
    carried = (wq * w).sum(0) / (w * w).sum(0).clamp(min=1e-30)
    return float((carried / s - 1).std())


def _input_scale(prev: str, prefix: str, q: CheckpointTensors, r: CheckpointTensors,
                 row_scale: dict[str, torch.Tensor]) -> torch.Tensor | None:
    if prev in row_scale:
        return row_scale[prev]
    key = f"{prefix}.{prev}.weight"
    if key not in q or key not in r:
        return None
    return r[key].float() / q[key].float()


def _shape_problem(q: CheckpointTensors, r: CheckpointTensors, key: str,
                   group_size: int) -> str | None:
    fields = [key + f for f in (".qweight", ".qzeros", ".scales")]
    if not all(f in q for f in fields):
        return f"{key}: not packed (missing {', '.join(f for f in fields if f not in q)})"
    if key + ".weight" not in r:
        return f"{key}: the reference has no {key}.weight"
    out_features, in_features = r[key + ".weight"].shape
    shapes = {".qweight": (in_features, out_features // 8),
              ".qzeros": (in_features // group_size, out_features // 8),
              ".scales": (in_features // group_size, out_features)}
    for suffix, want in shapes.items():
        got = tuple(q[key + suffix].shape)
        if got != want:
            return (f"{key}{suffix} is {list(got)}, but a {in_features}→{out_features} linear "
                    f"at group size {group_size} needs {list(want)}: config and tensors disagree")
    return None


def audit_check(result: AuditResult) -> Check:
    """``weights_audit``: pass, or fail naming the first problems and the worst linears."""
    worst = "; ".join(f"{n} {lin:.2f}×/{blk:.1f}×" for n, lin, blk in result.worst())
    if result.problems:
        shown = "; ".join(result.problems[:3])
        more = f" (+{len(result.problems) - 3} more)" if len(result.problems) > 3 else ""
        return Check("weights_audit", float(len(result.problems)), 0, "<=", FAIL, shown + more)
    return Check("weights_audit", 0.0, 0, "<=", PASS,
                 f"{len(result.ratios)} linears within bounds; worst: {worst}")
