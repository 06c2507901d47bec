"""Turn measured metrics into checks: each one pass, fail or skipped with its reason."""

from __future__ import annotations

from .thresholds import FAIL, PASS, SKIP, Check, Thresholds, check

#: Checks that need rollouts or a loaded model, in report order.
DYNAMIC_CHECKS = ("kl_mean", "kl_p99", "top1", "eos_prob_ratio", "runaway_greedy",
                  "runaway_sampled", "duration_ratio", "speaker_similarity_delta",
                  "code_predictor_agreement", "log_mel_distance", "memory",
                  "weight_bytes_ratio")


def quality_checks(m: dict, t: Thresholds) -> list[Check]:
    """Teacher-forced, stop-behaviour, duration and speaker checks of one report."""
    tf = m["teacher_forced"]
    positions = f"{tf['frame_positions']} frame positions"
    eos_skip = ("bf16 never stopped on these prompts" if not tf["eos_prompts"]
                else "bf16 gave end-of-speech zero probability")
    out = [
        check("kl_mean", tf["kl_mean"], "<=", t.kl_mean, positions),
        check("kl_p99", tf["kl_p99"], "<=", t.kl_p99, positions),
        check("top1", tf["top1"], ">=", t.top1, positions),
        check("eos_prob_ratio", tf["eos_prob_ratio"], ">=", t.eos_prob_ratio,
              f"INT4/bf16 end-of-speech probability, {tf['eos_prompts']} prompts", eos_skip),
    ]
    for mode in ("greedy", "sampled"):
        g = m[mode]
        out.append(check(f"runaway_{mode}", g["runaway_int4"], "<=",
                         g["runaway_bf16"] + t.runaway_tolerance,
                         f"bf16 runaway rate {g['runaway_bf16']:.2f}; INT4 cut at "
                         f"2 × bf16 frames + 25"))
    out.append(check("duration_ratio", m["greedy"]["duration_deviation_mean"], "<=",
                     t.duration_ratio, "mean |frames INT4 / frames bf16 - 1|, greedy",
                     "bf16 spoke no frame on any prompt"))
    a = m["audio"]
    out.append(check("speaker_similarity_delta", a["speaker_sim_delta"], ">=",
                     t.speaker_similarity_delta, "INT4 - bf16 similarity to the reference voice",
                     a.get("speaker_skip_reason") or "not measured"))
    out.append(check("code_predictor_agreement", tf["code_predictor_agreement"], ">=",
                     t.code_predictor_agreement, "argmax codes on INT4's talker hidden states",
                     "bf16 spoke no frame to predict codes for"))
    out.append(check("log_mel_distance", a["log_mel_distance_mean"], "<=", t.log_mel_distance,
                     "mean |log-mel difference| of greedy audio, nats",
                     "no prompt gave two clips of at least 1024 samples"))
    return out


def untouched_check(differences: list[str]) -> Check:
    """``untouched_identical``: fail naming the first differing tensors, else pass."""
    if differences:
        shown = "; ".join(differences[:3])
        more = f" (+{len(differences) - 3} more)" if len(differences) > 3 else ""
        return Check("untouched_identical", float(len(differences)), 0, "<=", FAIL,
                     shown + more)
    return Check("untouched_identical", 0.0, 0, "<=", PASS,
                 "every tensor outside the packed linears and folded norms is identical")


def skipped_checks(reason: str) -> list[Check]:
    """Every rollout check, skipped for ``reason``."""
    return [Check(name, None, 0.0, "", SKIP, reason) for name in DYNAMIC_CHECKS]
