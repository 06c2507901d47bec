"""``awq-tts blend``: lerp a Qwen3 LLM's FFN weights into a Qwen3-TTS talker (Darwin recipe).

For every chosen talker layer N and each of gate/up/down:
``talker.model.layers.N.mlp.X_proj.weight ← (1 − α)·tts + α·llm.model.layers.N.mlp.X_proj.weight``
in float32, stored in the TTS dtype. Every other tensor is copied unchanged. Tensors are
streamed one at a time from the safetensors shards (never both models in memory) and the
output keeps the source's shard layout. ``noesis_blend.json`` records α, both sources with
their file hashes and the blended tensors; ``quantize`` carries it into its provenance.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import UsageError
from ..format.checkpoint import copy_non_weight_files
from ..format.source import Source, resolve, weight_files
from ..models import adapter_for
from ..output import atomic_output_dir

BLEND_FILE = "noesis_blend.json"
#: The Darwin card: 1 % too subtle, 3 % emotion, 5 % max stable, 10 % breaks the stop signal.
STABLE_ALPHA = 0.05


def parse_alpha(text: str | float) -> float:
    """``0.03``, ``"0.03"`` or ``"3%"`` → 0.03; must lie in [0, 1]."""
    raw = str(text).strip()
    try:
        alpha = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise UsageError(f"--alpha {text!r} is not a number or a percentage like 3%") from None
    if not 0.0 <= alpha <= 1.0:
        raise UsageError(f"--alpha {text!r} must lie between 0 and 1 (0% and 100%)")
    return alpha


def parse_layers(text: str | None, n_layers: int) -> list[int]:
    """``"0-13,20"`` → [0..13, 20]; None → every layer."""
    if not text:
        return list(range(n_layers))
    chosen: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi or lo)
        except ValueError:
            raise UsageError(f"--layers {text!r}: use numbers and ranges like 0-13,20") from None
        if not 0 <= first <= last < n_layers:
            raise UsageError(f"--layers {text!r}: layers run from 0 to {n_layers - 1}")
        chosen.update(range(first, last + 1))
    return sorted(chosen)


def check_compatible(tts: Source, llm: Source):
    """Architecture fields must match; cross-backbone merges (e.g. Llama) are refused.

    Returns the TTS model's adapter, which names the backbone, fields and tensors."""
    adapter = adapter_for(tts.config.get("model_type"), tts.spec)
    talker = adapter.decoder_config(tts.config)
    if llm.config.get("model_type") != adapter.blend_backbone:
        raise UsageError(f"{llm.spec} is a {llm.config.get('model_type')!r} model; blend needs "
                         f"a {adapter.blend_backbone!r} causal LM (cross-backbone merges break "
                         f"the talker)")
    for key in adapter.blend_checked:
        if talker.get(key) != llm.config.get(key):
            raise UsageError(f"{key} differs: talker {talker.get(key)} vs LLM "
                             f"{llm.config.get(key)}")
    return adapter


class _LLMTensors:
    """Lazy access to the LLM's tensors by name, across its shards."""

    def __init__(self, source: Source) -> None:
        self.where: dict[str, Path] = {}
        for file in weight_files(source.path):
            with safe_open(str(file), framework="pt") as handle:
                self.where.update({k: file for k in handle.keys()})

    def get(self, key: str) -> torch.Tensor:
        with safe_open(str(self._file(key)), framework="pt") as handle:
            return handle.get_tensor(key)

    def _file(self, key: str) -> Path:
        if key not in self.where:
            raise UsageError(f"the LLM has no tensor {key}")
        return self.where[key]


def blend(tts_spec: str, llm_spec: str, alpha: float | str, out: str | Path,
          layers: str | None = None, force: bool = False) -> dict:
    """Write the blended checkpoint to ``out``; return the blend record."""
    alpha = parse_alpha(alpha)
    if alpha > STABLE_ALPHA:
        warnings.warn(f"alpha {alpha:.3f} > {STABLE_ALPHA}: the Darwin card reports that 10 % "
                      f"breaks the stop signal (the model talks for minutes)", stacklevel=2)
    tts, llm = resolve(tts_spec), resolve(llm_spec)
    adapter = check_compatible(tts, llm)
    chosen = parse_layers(layers, int(adapter.decoder_config(tts.config)["num_hidden_layers"]))
    pairs = adapter.blend_pairs(chosen)
    llm_tensors = _LLMTensors(llm)
    size = sum(f.stat().st_size for f in tts.path.rglob("*") if f.is_file())
    with atomic_output_dir(out, force=force, inputs=[tts.path, llm.path],
                           expected_bytes=size) as tmp:
        copy_non_weight_files(tts.path, tmp)
        index = tts.path / "model.safetensors.index.json"
        if index.is_file():  # same shard names and keys: the source index stays valid
            shutil.copy2(index, tmp / index.name)
        blended = _write_blended(tts, llm_tensors, pairs, alpha, tmp)
        record = {
            "alpha": alpha,
            "layers": chosen,
            "tts": tts.describe(),
            "llm": llm.describe(),
            "blended_tensors": blended,
        }
        (tmp / BLEND_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def _write_blended(tts: Source, llm: _LLMTensors, pairs: dict[str, str], alpha: float,
                   out: Path) -> list[str]:
    blended = []
    for file in weight_files(tts.path):
        tensors = {}
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                tensor = handle.get_tensor(key)
                if key in pairs:
                    other = llm.get(pairs[key])
                    if list(other.shape) != list(tensor.shape):
                        raise UsageError(f"shape mismatch: {key} {list(tensor.shape)} vs LLM "
                                         f"{pairs[key]} {list(other.shape)}")
                    mixed = (1 - alpha) * tensor.float() + alpha * other.float()
                    tensor = mixed.to(tensor.dtype)
                    blended.append(key)
                tensors[key] = tensor
        save_file(tensors, str(out / file.name), metadata={"format": "pt"})
        del tensors
    missing = sorted(set(pairs) - set(blended))
    if missing:
        raise UsageError(f"the TTS checkpoint lacks FFN tensors to blend: {missing[:3]}")
    return sorted(blended)

