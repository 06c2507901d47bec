"""What the validator measures from the rollouts: per prompt, and summed up."""

from __future__ import annotations

import numpy as np

from ..models import adapter_of
from . import audio, rollout


def measure(ref, int4, voice, runs, tf, prompt_list) -> tuple[dict, list[dict]]:
    """Per-prompt rows and summary metrics from the rollouts and the teacher-forced pass."""
    metrics = {"teacher_forced": tf.summary()}
    wav_ref, sr = rollout.decode(ref, runs[("bf16", "greedy")].codes)
    wav_q, _ = rollout.decode(int4, runs[("int4", "greedy")].codes)
    reference_emb = adapter_of(ref).voice_embedding(voice)
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
        ratios = [r[f"duration_ratio_{mode}"] for r in per_prompt
                  if r[f"duration_ratio_{mode}"] is not None]
        metrics[mode] = {
            "runaway_bf16": runs[("bf16", mode)].runaway_rate(),
            "runaway_int4": runs[("int4", mode)].runaway_rate(),
            "int4_cut_at": runs[("int4", mode)].caps,
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
    if reference_emb is None:
        a["speaker_skip_reason"] = (f"a {adapter_of(ref).variant(ref)} model has no "
                                    f"reference voice to compare with")
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


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None
