"""The Markdown table ``gpu_acceptance.py`` writes beside its JSON (``DIR/gpu_acceptance.md``),
from the results so far: a run cut short still gets a table of what it measured."""

from __future__ import annotations


def _f(value, fmt: str = "{:.2f}") -> str:
    return "–" if value is None else fmt.format(value)


def _ms(seconds) -> str:
    """A step cost in milliseconds, or a note where the timer's noise swamped it."""
    return "below noise" if seconds is None else f"{seconds * 1e3:.1f} ms"


def _trace(label: str, trace: dict) -> str:
    """What was live at the graphed speech's peak, largest first."""
    if "error" in trace:
        return f"{label}, what is live at the peak: not traced ({trace['error']})"
    live = "; ".join(f"{g['mib']:.0f} MiB × {g['count']} {g['origin']}" for g in trace["live"][:6])
    return (f"{label}, live at the peak of 30 s of graphed speech: {trace['start_gib']:.2f} GiB "
            f"before the call + {trace['rise_gib']:.2f} GiB rise; of the rise: {live}")


def table(results: dict) -> str:
    env = results.get("env", {})
    lines = [f"Device: {env.get('gpu', results['device'])} (torch {env.get('torch')}), "
             f"memory cap {results['cap_gib']} GiB{'; tiny dry run' if results['tiny'] else ''}",
             "", "| model | load peak GiB | speech peak GiB | audio s | RTF | RTF, CUDA graphs "
                 "| speech peak GiB, CUDA graphs |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    speak = results.get("speak") or {}
    if "skipped" in speak:
        speak = {"all models": speak}
    notes = []
    for name, r in speak.items():
        if not isinstance(r, dict) or "error" in r or "skipped" in r:
            lines.append(f"| {name} | {r.get('error', r.get('skipped', '?'))} | | | | | |")
            continue
        label = name if name == "bf16" else f"INT4 {name}"
        graphed = r.get("graphs") or {}
        lines.append(f"| {label} | {_f(r.get('load_peak_gib'))} | {_f(r.get('peak_gib'))} | "
                     f"{_f(r.get('audio_s'), '{:.1f}')} | {_f(r.get('rtf'))} | "
                     f"{_f(graphed.get('rtf'))} | {_f(graphed.get('peak_gib'))} |")
        notes += [f"{label}: {r['cut']}"] if "cut" in r else []
        notes += [f"{label}, CUDA graphs ({graphed['frames_cap']} frames"
                  + (f", {graphed['audio_s']:.1f} s of audio" if "audio_s" in graphed else "")
                  + f"): {graphed['status']}"
                  + (f"; the capturing first call took {graphed['capture_call_s']:.1f} s"
                     if "capture_call_s" in graphed else "")
                  + (f"; a text of {graphed['text_tokens']} tokens (30 s of speech)"
                     if "text_tokens" in graphed else "")
                  + (f"; with the longer text ({graphed['long_text']['repeats']} × \"Hello "
                     f"there.\") {graphed['long_text']['peak_gib']:.2f} GiB"
                     if "long_text" in graphed else "")] if graphed else []
        notes += [_trace(label, graphed["trace"])] if "trace" in graphed else []
        notes += [f"{label}: the first call of the process (8 frames) took "
                  f"{r['first_call_s']:.1f} s; RTF is measured after it"
                  ] if "first_call_s" in r else []
        split = r.get("eager_split")
        notes += [f"{label}, eager, per frame ({split['frames']} frames): talker forwards with "
                  f"their code-predictor frames {split['forward_ms_per_frame']:.1f} ms, "
                  f"everything around them {split['outside_ms_per_frame']:.1f} ms"
                  ] if split else []
    lines += ["", *notes] if notes else []
    q = results.get("quantize") or {}
    if "wall_s" in q:
        lines += ["", f"Quantize ({q['n_samples']} × {q['max_seq_len']} tokens, "
                      f"{q['layers']} layers): {q['wall_s']:.0f} s (calibration "
                      f"{q['calibration_s']:.0f} s, walk {q['walk_s']:.0f} s, "
                      f"{q['walk_s'] / max(q['layers'], 1):.1f} s per layer), peak "
                      f"{q['peak_gib']:.2f} GiB; extrapolated to 128 × 512: "
                      f"{q['extrapolated_default_s'] / 60:.1f} min"
                      + (f" (every rollout at the cap), "
                         f"{q['speech_estimate_s'] / 60:.1f} min at speech-length rollouts"
                         if "speech_estimate_s" in q else "")
                      + (f"; rollouts {(q.get('rollout') or {}).get('decode', '?')}")]
        fit = q.get("fit") or {}
        if "default_s" in fit:
            runs = " and ".join(f"{r['tokens']:,}" for r in fit["runs"])
            lines.append(f"Fitted to the runs at {runs} tokens (fixed + per-token cost, "
                         f"calibration and walk apart): {fit['default_s'] / 60:.1f} min at "
                         f"128 × 512 with every rollout at the cap")
        elif fit:
            lines.append(f"Second quantize for the fit: {fit.get('error')}")
        if q.get("rollout_fallback"):
            lines.append(q["rollout_fallback"])
        steps = q.get("rollout_steps") or {}
        fast = "graphs" if "graphs" in steps else "static"
        if fast in steps:
            lines.append(f"Calibration rollout step at batch {steps['batch']}: dropping "
                         f"{_ms(steps['dropping']['step_s'])}, {fast} "
                         f"{_ms(steps[fast]['step_s'])} ({_f(steps['speed_up'])}×)")
    elif q:
        lines += ["", f"Quantize: {q}"]
    d = results.get("decode") or {}
    if "table_markdown" in d:
        lines += ["", "Decode (batch 1, KV cache 64; milliseconds, speed-up over bf16):", "",
                  *d["table_markdown"].split("\n")[2:]]
    elif d:
        lines += ["", f"Decode: {d.get('error') or d.get('skipped')}"]
    for key in ("gpu_tests", "validate"):
        r = results.get(key) or {}
        text = r.get("summary") or r.get("verdict") or r.get("error") or r.get("skipped")
        lines.append(f"\n{key}: {text}")
    return "\n".join(lines)
