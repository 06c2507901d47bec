"""``awq_tts.quantize``: source checkpoint in, complete INT4 checkpoint folder out."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..calibration.builder import (
    DEFAULT_SEED,
    MIN_SEQ_LEN,
    ROLLOUTS,
    CalibrationSet,
    build_calibration,
)
from ..calibration.prompts import load_prompts
from ..devices import resolve_device
from ..errors import UsageError
from ..format import checkpoint, provenance, source
from ..io import require_readable_audio
from ..models import adapter_for
from ..models.mapping import LayerMapping, decoder_layers, float_linears
from ..output import atomic_output_dir
from .recipe import ACTIVATION_DTYPES, METHODS, ActivationDtype, Method
from .resident import LayerLoader, release_for_walk
from .walker import LOSS_TOKENS, LayerReport, QuantConfig, WalkResult, walk


@dataclass
class QuantizeSummary:
    output: Path
    layers: int
    linears: int
    bytes_before: int
    bytes_after: int
    linear_bytes_before: int
    linear_bytes_after: int
    seconds: float
    calibration: dict
    layer_reports: list[LayerReport] = field(default_factory=list)
    calibration_seconds: float = 0.0
    walk_seconds: float = 0.0


def quantize(
    src: str | Path,
    out: str | Path,
    group_size: int = 128,
    n_samples: int = 128,
    max_seq_len: int = 512,
    seed: int = DEFAULT_SEED,
    device: str = "auto",
    force: bool = False,
    calib: str | None = None,
    revision: str | None = None,
    batch_size: int = 8,
    method: Method = "awq",
    ref_audio: str | None = None,
    progress: bool = True,
    loss_tokens: int | None = LOSS_TOKENS,
    offload_activations: bool = False,
    activation_dtype: ActivationDtype = "bfloat16",
    rollout: str = "auto",
) -> QuantizeSummary:
    """Quantize the talker decoder linears of ``src`` to AWQ INT4 and write ``out``.

    ``src`` is a local Qwen3-TTS folder or a hub id. Only the 7 linears of every
    ``talker.model.layers.N`` change; every other tensor and file is copied as is.
    ``out`` is written atomically (a temporary sibling renamed at the end) and holds
    ``noesis_provenance.json``. ``loss_tokens`` is the search's token budget (``None``:
    every calibration token). ``offload_activations`` keeps the layer activations on the
    CPU while a GPU quantizes (same result, for cards under 8 GB); ``activation_dtype``
    is the dtype the layer inputs are kept in between layers (bf16: half of float32's
    memory, and what a bf16 model's layers read at inference). ``rollout`` is how the
    calibration rollouts decode (``calibration.builder.ROLLOUTS``); ``auto``: ``graphs`` on
    CUDA, where a small batch costs its kernel launches, ``dropping`` elsewhere.
    """
    start = time.perf_counter()
    out = Path(out)
    if out.exists() and not force:
        raise UsageError(f"{out} already exists; pass --force to replace it")
    device = resolve_device(device)
    src_info = source.resolve(str(src), revision)
    source.check(src_info, group_size)
    calib_name, prompts = load_prompts(calib)
    if ref_audio is not None:
        require_readable_audio(ref_audio, f"cannot read --ref-audio {ref_audio}")
    for name, value, least in (("--batch-size", batch_size, 1), ("--n-samples", n_samples, 1),
                               ("--max-seq-len", max_seq_len, MIN_SEQ_LEN)):
        if not isinstance(value, int) or value < least:
            raise UsageError(f"{name} {value}: give a whole number of at least {least}")
    if loss_tokens is not None and (not isinstance(loss_tokens, int) or loss_tokens < 1):
        raise UsageError(f"--loss-tokens {loss_tokens}: give a whole number of at least 1 "
                         f"(0 on the command line, None in Python: every token)")
    if activation_dtype not in ACTIVATION_DTYPES:
        raise UsageError(f"--activation-dtype {activation_dtype!r}: choose "
                         f"{' or '.join(map(repr, ACTIVATION_DTYPES))}")
    rollout = _rollout(rollout, device)
    if method not in METHODS:
        raise UsageError(f"--method {method!r}: choose {' or '.join(map(repr, METHODS))}")
    config = QuantConfig(group_size=group_size, seed=seed, batch_size=batch_size, method=method,
                         loss_tokens=loss_tokens, offload_activations=offload_activations,
                         activation_dtype=activation_dtype)

    inputs = [src_info.path, *(p for p in (calib, ref_audio) if p and Path(p).exists())]
    with atomic_output_dir(out, force=force, inputs=inputs,
                           expected_bytes=_expected_bytes(src_info)) as tmp:
        adapter = adapter_for(src_info.config.get("model_type"), src)
        tts = adapter.from_pretrained(src_info.path, dtype="auto")
        source.require_finite(tts.model)
        started = time.perf_counter()
        calibration = _calibrate(tts, prompts, calib_name, n_samples, max_seq_len, seed, device,
                                 batch_size, progress, ref_audio, rollout)
        calibrated = time.perf_counter()
        result = _walk(tts.model, adapter.mapping, calibration, config, device, progress,
                       src_info.path)
        walked = time.perf_counter()
        checkpoint.copy_non_weight_files(src_info.path, tmp,
                                         skip=(provenance.FILENAME, "config.json"))
        untouched = _not_converted(tts.model, adapter.mapping)
        checkpoint.write_config(src_info.config, tmp, config.as_quantization_config(untouched))
        checkpoint.write_weights(src_info.weight_files(), tmp, result.packed, result.changed)
        summary = _summary(out, src_info, tmp, result, calibration, time.perf_counter() - start)
        summary.calibration_seconds = calibrated - started
        summary.walk_seconds = walked - calibrated
        record = _record(src_info, config, calibration, device, result, summary)
        provenance.Provenance.create(tmp, record)
    return summary


def _expected_bytes(src_info) -> int:
    """About what the output will take: every source file, weights at half their size."""
    weights = {p.resolve() for p in src_info.weight_files()}
    files = [p for p in src_info.path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size // (2 if p.resolve() in weights else 1) for p in files)


def _rollout(rollout: str, device: str) -> str:
    """``auto`` resolved for ``device``; a rollout the device cannot run is one line."""
    if rollout == "auto":
        return "graphs" if device.startswith("cuda") else "dropping"
    if rollout not in ROLLOUTS:
        raise UsageError(f"--rollout {rollout!r}: choose auto or "
                         f"{' or '.join(map(repr, ROLLOUTS))}")
    if rollout == "graphs" and not device.startswith("cuda"):
        raise UsageError(f"--rollout graphs replays CUDA graphs; --device {device} has none: "
                         f"use --rollout auto or dropping")
    return rollout


def _calibrate(tts, prompts, name, n_samples, max_seq_len, seed, device, batch_size,
               progress, ref_audio, rollout) -> CalibrationSet:
    """Roll the source model out on the device, then return it to the CPU for the walk."""
    if device != "cpu":
        tts.model.to(device)
        tts.device = torch.device(device)
    try:
        return build_calibration(tts, prompts, name=name, n_samples=n_samples,
                                 max_seq_len=max_seq_len, seed=seed, batch_size=batch_size,
                                 progress=progress, ref_audio=ref_audio, rollout=rollout)
    finally:
        tts.model.to("cpu")
        tts.device = torch.device("cpu")
        if device.startswith("cuda"):
            torch.cuda.empty_cache()


def _walk(model, mapping: LayerMapping, calibration: CalibrationSet, config: QuantConfig,
          device: str, progress: bool, folder: Path) -> WalkResult:
    """Free the source model, then walk its layers one at a time from ``folder``."""
    loader = LayerLoader(folder, mapping)
    release_for_walk(model, mapping)
    embeds, mask = calibration.padded()
    n_layers = len(decoder_layers(model, mapping))
    bar = tqdm(total=n_layers, desc="quantizing talker layers", unit="layer",
               disable=not progress)
    result = None
    for item in walk(model, embeds, mask, config, device, mapping, loader):
        if isinstance(item, WalkResult):
            result = item
        else:
            bar.set_postfix(awq=f"{item.awq_error:.2e}", rtn=f"{item.rtn_error:.2e}")
            bar.update(1)
    bar.close()
    assert result is not None
    return result


def _not_converted(model, mapping: LayerMapping) -> list[str]:
    """Top-level modules holding linears that stay in the source dtype."""
    names = {".".join(name.split(".")[:2]) for name in float_linears(model, mapping)}
    names |= {name for name in mapping.not_converted
              if getattr(model, name, None) is not None}
    return sorted(names)


def _summary(out, src_info, tmp, result, calibration, seconds) -> QuantizeSummary:
    before = sum(f.stat().st_size for f in src_info.weight_files())
    after = sum(f.stat().st_size for f in tmp.glob("model*.safetensors"))
    linear_after = sum(
        sum(t.numel() * t.element_size() for t in p.tensors("x").values())
        for p in result.packed.values()
    )
    linear_before = sum(
        p.qweight.shape[0] * p.qweight.shape[1] * 8 * 2 for p in result.packed.values()
    )
    return QuantizeSummary(out, len(result.layers), len(result.packed), before, after,
                           linear_before, linear_after, seconds, calibration.describe(),
                           result.layers)


def _record(src_info, config, calibration, device, result, summary) -> dict:
    from ..ckpt.blend import BLEND_FILE

    blend_file = src_info.path / BLEND_FILE
    blend = json.loads(blend_file.read_text()) if blend_file.is_file() else None
    return {
        "blend": blend,
        "format": "noesis-provenance/1",
        "source": src_info.describe(),
        "versions": provenance.library_versions(),
        "quantization": config.as_quantization_config([]) | {
            "method": config.method, "n_grid": config.n_grid, "max_shrink": config.max_shrink,
            "clip_tokens": config.clip_tokens, "loss_tokens": config.loss_tokens,
            "loss_tokens_drawn": result.loss_tokens,
            "activations": "cpu" if config.offload_activations else "device",
            "activation_dtype": config.activation_dtype,
            "quantized_linears": sorted(result.packed),
        },
        "calibration": calibration.describe(),
        "seed": config.seed,
        "device": device,
        "wall_seconds": round(summary.seconds, 3),
        "layers": [
            {"index": r.index, "awq_error": r.awq_error, "rtn_error": r.rtn_error,
             "output_error": r.output_error, "seconds": round(r.seconds, 3),
             "fallback_to_rtn": r.fallback_to_rtn, "linears": r.linears}
            for r in result.layers
        ],
        "bytes": {"weights_before": summary.bytes_before, "weights_after": summary.bytes_after},
    }
