"""``validate_awq_quality``: one verdict on an INT4 model against its bf16 source."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import provenance
from ..calibration.prompts import load_prompts
from ..errors import UsageError
from ..io import require_readable_audio
from ..quantize.source import resolve
from ..runtime import load
from ..synth import synthetic_reference
from . import audio, rollout, teacher
from .thresholds import Check, Thresholds, check

_ARCH_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "vocab_size", "num_code_groups")


@dataclass
class ValidationReport:
    quantized: str
    reference: str
    checks: list[Check]
    metrics: dict
    prompts: list[dict] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[str]:
        return [c.name for c in self.checks if not c.passed]

    def as_dict(self) -> dict:
        return {"verdict": "pass" if self.passed else "fail", "failed": self.failed,
                "quantized": self.quantized, "reference": self.reference,
                "checks": [c.as_dict() for c in self.checks], "metrics": self.metrics,
                "prompts": self.prompts}


def resolve_reference(quant: Path, reference: str | None) -> str:
    if reference:
        return reference
    try:
        return provenance.load(quant)["source"]["id_or_path"]
    except (UsageError, KeyError):
        raise UsageError(f"{quant} records no source model; pass --reference SRC") from None


def check_same_architecture(quant: Path, reference: str) -> None:
    q, r = resolve(str(quant)).config, resolve(reference).config
    if q.get("model_type") != r.get("model_type") or q.get("tts_model_type") != r.get(
            "tts_model_type"):
        raise UsageError(f"architectures differ: {quant} is {q.get('tts_model_type')!r}, "
                         f"{reference} is {r.get('tts_model_type')!r}")
    for key in _ARCH_FIELDS:
        a, b = q["talker_config"].get(key), r["talker_config"].get(key)
        if a != b:
            raise UsageError(f"architectures differ: talker {key} is {a} in {quant} "
                             f"but {b} in {reference}")


def validate_awq_quality(
    quantized: str | Path,
    reference: str | None = None,
    prompts: str | None = None,
    ref_audio: str | None = None,
    thresholds: Thresholds | None = None,
    device: str = "cpu",
    n_prompts: int | None = None,
    max_new_tokens: int = 1024,
    seed: int = 1729,
) -> ValidationReport:
    """Compare ``quantized`` with its bf16 ``reference`` and return the checked report.

    ``reference`` defaults to the source recorded in the INT4 folder's provenance and
    ``prompts`` to the built-in held-out set (never the calibration set).
    """
    thresholds = thresholds or Thresholds()
    quant = Path(quantized)
    if not quant.is_dir():
        raise UsageError(f"{quant}: no such checkpoint folder")
    reference = resolve_reference(quant, reference)
    check_same_architecture(quant, reference)
    _, prompt_list = load_prompts(prompts or "heldout")
    prompt_list = prompt_list[:n_prompts] if n_prompts else prompt_list
    if ref_audio is not None:
        require_readable_audio(ref_audio, f"cannot read --ref-audio {ref_audio}")
    memory = _MemoryProbe(device, thresholds.budget_gb)
    try:
        int4 = memory.track(lambda: memory.load(quant))
        memory.release_budget()
        ref = load(reference, device=device, dtype=torch.bfloat16)
        voice = rollout.voice_for(ref, ref_audio or synthetic_reference(seconds=2.0, seed=seed))
        runs = {}
        for mode in ("greedy", "sampled"):
            memory.apply_budget()
            runs[("int4", mode)] = memory.track(lambda m=mode: rollout.speak(
                int4, prompt_list, voice, m == "greedy", seed, max_new_tokens))
            memory.release_budget()
            runs[("bf16", mode)] = rollout.speak(ref, prompt_list, voice, mode == "greedy",
                                                 seed, max_new_tokens)
    except _OutOfBudget as exc:
        memory.release_budget()
        failed = Check("memory", float("inf"), thresholds.budget_gb, "<=", False, str(exc))
        return ValidationReport(str(quant), str(reference), [failed],
                                {"memory": {"error": str(exc)}})
    greedy_ref = runs[("bf16", "greedy")]
    tf = teacher.compare(ref, int4, greedy_ref.sequences, greedy_ref.codes, greedy_ref.stopped)
    metrics, per_prompt = _measure(ref, int4, voice, runs, tf, prompt_list)
    metrics["memory"] = memory.report(int4, ref)
    checks = _checks(metrics, thresholds, memory)
    return ValidationReport(str(quant), str(reference), checks, metrics, per_prompt)


def _measure(ref, int4, voice, runs, tf, prompt_list) -> tuple[dict, list[dict]]:
    metrics = {"teacher_forced": tf.summary()}
    wav_ref, sr = rollout.decode(ref, runs[("bf16", "greedy")].codes)
    wav_q, _ = rollout.decode(int4, runs[("int4", "greedy")].codes)
    reference_emb = voice["clone_prompt"][0].ref_spk_embedding if "clone_prompt" in voice else None
    per_prompt = []
    for i, prompt in enumerate(prompt_list):
        row = {"text": prompt.text, "language": prompt.language,
               "kl_mean": float(np.mean(tf.kl[i])) if tf.kl[i] else None, "top1": tf.top1[i],
               "kl_curve": [round(v, 6) for v in tf.kl[i]]}
        for mode in ("greedy", "sampled"):
            fb, fq = runs[("bf16", mode)].frames[i], runs[("int4", mode)].frames[i]
            row[f"frames_bf16_{mode}"], row[f"frames_int4_{mode}"] = fb, fq
            row[f"duration_ratio_{mode}"] = fq / fb if fb else None
        row["log_mel_distance"] = audio.log_mel_distance(wav_ref[i], wav_q[i])
        if reference_emb is not None:
            row["speaker_sim_bf16"] = audio.speaker_similarity(ref, wav_ref[i], reference_emb)
            row["speaker_sim_int4"] = audio.speaker_similarity(int4, wav_q[i], reference_emb)
        per_prompt.append(row)
    for mode in ("greedy", "sampled"):
        ratios = [r[f"duration_ratio_{mode}"] for r in per_prompt if r[f"duration_ratio_{mode}"]]
        metrics[mode] = {
            "runaway_bf16": runs[("bf16", mode)].runaway_rate(),
            "runaway_int4": runs[("int4", mode)].runaway_rate(),
            "duration_ratio_mean": float(np.mean(ratios)) if ratios else None,
            "duration_deviation_mean": float(np.mean([abs(r - 1) for r in ratios]))
            if ratios else None,
        }
    metrics["audio"] = {
        "log_mel_distance_mean": _mean(r["log_mel_distance"] for r in per_prompt),
        "speaker_sim_bf16": _mean(r.get("speaker_sim_bf16") for r in per_prompt),
        "speaker_sim_int4": _mean(r.get("speaker_sim_int4") for r in per_prompt),
    }
    a = metrics["audio"]
    a["speaker_sim_delta"] = (a["speaker_sim_int4"] - a["speaker_sim_bf16"]
                              if a["speaker_sim_int4"] is not None
                              and a["speaker_sim_bf16"] is not None else None)
    audio_s = {name: sum(len(w) for w in wavs) / sr for name, wavs in
               (("bf16", wav_ref), ("int4", wav_q))}
    metrics["real_time_factor"] = {
        name: runs[(name, "greedy")].seconds / audio_s[name] if audio_s[name] else None
        for name in ("bf16", "int4")}
    return metrics, per_prompt


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _checks(m: dict, t: Thresholds, memory: _MemoryProbe) -> list[Check]:
    tf = m["teacher_forced"]
    out = [
        check("kl_mean", tf["kl_mean"], "<=", t.kl_mean),
        check("kl_p99", tf["kl_p99"], "<=", t.kl_p99),
        check("top1", tf["top1"], ">=", t.top1),
        check("eos_prob_ratio", tf["eos_prob_ratio"], ">=", t.eos_prob_ratio,
              "INT4/bf16 end-of-speech probability where bf16 stops"),
    ]
    for mode in ("greedy", "sampled"):
        g = m[mode]
        out.append(check(f"runaway_{mode}", g["runaway_int4"], "<=",
                         g["runaway_bf16"] + t.runaway_tolerance,
                         f"bf16 runaway rate {g['runaway_bf16']:.2f}"))
    out.append(check("duration_ratio", m["greedy"]["duration_deviation_mean"], "<=",
                     t.duration_ratio, "mean |frames INT4 / frames bf16 - 1|, greedy"))
    out.append(check("speaker_similarity_delta", m["audio"]["speaker_sim_delta"], ">=",
                     t.speaker_similarity_delta))
    out.append(memory.check())
    return out


class _OutOfBudget(Exception):
    """The INT4 model ran out of GPU memory inside the budget."""


class _MemoryProbe:
    """Peak VRAM under the budget (CUDA, per-process memory fraction) or INT4 weight bytes."""

    def __init__(self, device: str, budget_gb: float) -> None:
        self.device, self.budget_gb = device, budget_gb
        self.cuda = device.startswith("cuda")
        self.peak_bytes: int | None = None
        self.error: str | None = None
        self.int4_bytes = 0

    def load(self, path: Path):
        self.apply_budget()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        model = load(path, device=self.device, dtype=torch.bfloat16)
        self.int4_bytes = _weight_bytes(model)
        return model

    def apply_budget(self) -> None:
        if self.cuda:
            total = torch.cuda.get_device_properties(self.device).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, self.budget_gb * 2**30 / total))

    def track(self, fn):
        """Run ``fn``; on CUDA, record the peak and turn out-of-memory into a failed check."""
        try:
            return fn()
        except torch.cuda.OutOfMemoryError as exc:
            raise _OutOfBudget(f"INT4 model ran out of memory within {self.budget_gb} GB") from exc
        finally:
            if self.cuda:
                self.peak_bytes = max(self.peak_bytes or 0, torch.cuda.max_memory_allocated())

    def release_budget(self) -> None:
        if self.cuda:
            torch.cuda.set_per_process_memory_fraction(1.0)

    def report(self, int4, ref) -> dict:
        import resource

        return {"int4_weight_bytes": self.int4_bytes, "bf16_weight_bytes": _weight_bytes(ref),
                "int4_peak_vram_bytes": self.peak_bytes,
                "process_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                * 1024, "budget_gb": self.budget_gb, "device": self.device}

    def check(self) -> Check:
        used = self.peak_bytes if self.cuda else self.int4_bytes
        what = "peak VRAM of INT4 load + speech" if self.cuda else "resident INT4 weights"
        return check("memory", used / 2**30, "<=", self.budget_gb, f"{what}, GiB")


def _weight_bytes(tts) -> int:
    modules = [tts.model, tts.model.speech_tokenizer.model]
    return sum(t.numel() * t.element_size() for m in modules
               for t in [*m.parameters(), *m.buffers()])
