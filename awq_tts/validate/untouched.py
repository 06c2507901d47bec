"""``untouched_identical``: everything the product promises not to change, proven unchanged.

Re-reads both folders. Every tensor outside the packed talker linears and the norms AWQ
folds its scales into (both named by the layer mapping) must have the reference's dtype,
shape and bytes; the speech tokenizer's files must hash the same. Catches a nudged
code-predictor weight, a touched embedding, a re-saved speech tokenizer.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from ..format.checkpoint import CheckpointTensors
from ..io import sha256_file
from ..models.mapping import QWEN3_TTS_TALKER, LayerMapping

_PACKED_FIELDS = (".qweight", ".qzeros", ".scales")


def _exempt(mapping: LayerMapping, packed: set[str]) -> re.Pattern:
    norms = [g.prev for g in mapping.groups if g.prev not in mapping.quantized]
    names = "|".join(re.escape(n) for n in norms)
    layers = re.escape(mapping.layers)
    linear = "|".join(re.escape(p) for p in sorted(packed)) or "(?!)"
    return re.compile(rf"^(?:{layers}\.\d+\.(?:{names})\.weight|(?:{linear})\.\w+)$")


def untouched_differences(quant: Path, reference: Path,
                          mapping: LayerMapping = QWEN3_TTS_TALKER) -> list[str]:
    """Names of what differs outside the quantized scope (empty when all is identical)."""
    q, r = CheckpointTensors(quant), CheckpointTensors(reference)
    packed = {k[: -len(".qweight")] for k in q if k.endswith(".qweight")}
    exempt = _exempt(mapping, packed)
    problems = [f"{k}: missing from QUANT" for k in sorted(r) if k not in q
                and not exempt.match(k)]
    problems += [f"{k}: not in the reference" for k in sorted(q) if k not in r
                 and not (exempt.match(k) or k.endswith(_PACKED_FIELDS))]
    for key in sorted(set(q.where) & set(r.where)):
        if exempt.match(key):
            continue
        a, b = q[key], r[key]
        if a.dtype != b.dtype or a.shape != b.shape:
            problems.append(f"{key}: {a.dtype}{list(a.shape)} vs reference "
                            f"{b.dtype}{list(b.shape)}")
        elif _bytes(a) != _bytes(b):
            problems.append(f"{key}: values differ")
    problems += _speech_tokenizer_differences(quant, reference)
    return problems


def _bytes(tensor: torch.Tensor) -> bytes:
    return tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def _speech_tokenizer_differences(quant: Path, reference: Path) -> list[str]:
    ref_dir, q_dir = reference / "speech_tokenizer", quant / "speech_tokenizer"
    if not ref_dir.is_dir():
        return []
    out = []
    for path in sorted(p for p in ref_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(reference)
        other = quant / rel
        if not other.is_file():
            out.append(f"{rel.as_posix()}: missing from QUANT")
        elif sha256_file(other) != sha256_file(path):
            out.append(f"{rel.as_posix()}: bytes differ")
    if not q_dir.is_dir() and not out:
        out.append("speech_tokenizer/: missing from QUANT")
    return out
