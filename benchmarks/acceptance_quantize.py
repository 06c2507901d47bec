"""``gpu_acceptance.py``'s ``quantize`` stage: ``awq_tts.quantize`` on the device at a
reduced but real calibration, twice, and the default recipe's time from a fit of the two.

Scaling one run's time by the token ratio to 128 × 512 (× 16 from 16 × 256) overstates the
walk: the AWQ search replays a seeded sample of at most ``--loss-tokens`` tokens (2,048 by
default) whatever the calibration holds, and only the statistics and the layer forwards see
every token. So the stage quantizes again with twice the prompts, and prices calibration and
walk each as a fixed cost plus a per-token slope fitted to the two runs (random weights never
stop, so both hold exactly ``n × len`` tokens). The ×16 figure stays beside it as an upper
bound, and the speech-length estimate prices rollouts that stop as real speech does.
"""

from __future__ import annotations

import json

#: The default recipe's calibration tokens (128 prompts × 512).
DEFAULT_TOKENS = 128 * 512


def stage_quantize(args) -> dict:
    from acceptance_stages import Peak, _paths, apply_cap
    from quantize_full import time_talker
    from rollout_speed import step_costs, with_fallback

    from awq_tts import quantize

    bf16, int4 = _paths(args)
    apply_cap(args.device, args.cap_gib)
    peak = Peak(args.device)

    def run(rollout: str, n_samples: int = args.n_samples):
        peak.reset()
        with time_talker() as timing:
            return quantize(bf16, int4, device=args.device, n_samples=n_samples,
                            max_seq_len=args.max_seq_len, batch_size=8, force=True,
                            progress=False, rollout=rollout), timing

    (summary, timing), fallback = with_fallback(run)
    per_layer = [r.seconds for r in summary.layer_reports]
    factor = DEFAULT_TOKENS / (args.n_samples * args.max_seq_len)
    result = {"n_samples": args.n_samples, "max_seq_len": args.max_seq_len,
              "wall_s": summary.seconds, "calibration_s": summary.calibration_seconds,
              "walk_s": summary.walk_seconds, "layer_s": per_layer, "peak_gib": peak.gib(),
              "layers": len(per_layer), "rollout": summary.calibration.get("rollout"),
              "extrapolated_default_s": factor * (summary.calibration_seconds
                                                  + summary.walk_seconds),
              "extrapolation": f"calibration and walk × {factor:g} (token ratio to 128 × 512; an "
                               f"upper bound: the search replays at most --loss-tokens tokens)",
              **speech_estimate(timing, summary),
              **({"rollout_fallback": fallback} if fallback else {})}
    print("RESULT" + json.dumps(result), flush=True)   # kept if what follows runs out of time
    rollout = (summary.calibration.get("rollout") or {}).get("decode") or "dropping"
    try:
        twice, _ = run(rollout, 2 * args.n_samples)
        result["fit"] = token_fit(_point(summary), _point(twice))
        result["peak_gib"] = max(result["peak_gib"], peak.gib())
    except Exception as exc:  # noqa: BLE001 (the first run's figures stand)
        result["fit"] = {"error": f"{type(exc).__name__}: {exc}"}
    print("RESULT" + json.dumps(result), flush=True)
    if getattr(args, "no_rollout_steps", False):
        return result       # the earlier call's step costs are kept (gpu_acceptance.py)
    try:
        result["rollout_steps"] = step_costs(bf16, args.device, *((4, 8, 4) if args.tiny
                                                                  else (8, 24, 8)))
    except Exception as exc:  # noqa: BLE001 (the quantize figures above stand)
        result["rollout_steps"] = {"error": f"{type(exc).__name__}: {exc}"}
    return result


def _point(summary) -> dict:
    return {"tokens": summary.calibration["tokens"], "calibration_s":
            summary.calibration_seconds, "walk_s": summary.walk_seconds}


def token_fit(first: dict, second: dict, tokens: int = DEFAULT_TOKENS) -> dict:
    """Calibration and walk seconds each as ``fixed + slope × tokens`` through two runs'
    points, and their sum at ``tokens``; a part whose slope the timer's noise swamps (not
    above zero) is priced at its larger run's cost, never below what was measured."""
    span = second["tokens"] - first["tokens"]
    if span <= 0:
        raise ValueError(f"two runs with {first['tokens']} and {second['tokens']} tokens "
                         f"cannot be fitted")
    parts = {}
    for part in ("calibration_s", "walk_s"):
        slope = (second[part] - first[part]) / span
        parts[part] = {"per_token_s": slope if slope > 0 else None,
                       "at_default_s": (second[part] + slope * (tokens - second["tokens"]))
                       if slope > 0 else max(first[part], second[part])}
    return {"runs": [first, second], "parts": parts, "tokens": tokens,
            "default_s": sum(p["at_default_s"] for p in parts.values())}


def speech_estimate(timing: dict, summary) -> dict:
    """The defaults at speech-length rollouts (``quantize_full.py``'s assumption), from the
    run's own prefill, decode and walk costs: decode priced per row-step and per batch
    step, whichever is dearer (a CPU pays per row, a GPU per step); the walk scaled by
    tokens."""
    from quantize_full import calibration_cost, speech_frames

    if not timing["prefill_s"] or not timing["decode_steps"]:
        return {}
    cost = calibration_cost(timing, speech_frames())
    decode = max(cost["decode_row_s"], cost["decode_step_s"])
    walk = summary.walk_seconds * max(1.0, cost["tokens"] / max(summary.calibration["tokens"], 1))
    return {"speech_estimate_s": cost["prefill_s"] + decode + walk,
            "speech_estimate": {"prefill_s": cost["prefill_s"], "decode_s": decode,
                                "walk_s": walk, "tokens": round(cost["tokens"]),
                                "frames": sum(cost["frames"])}}
