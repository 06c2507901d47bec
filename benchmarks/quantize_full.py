"""The whole quantize job on the full-shape 1.7B: measured at a small recipe, extrapolated
to the defaults (128 prompts × 512 tokens) with measured slopes.

1. ``run``: ``awq_tts.quantize`` of a ``--full-shape`` random checkpoint (VoiceDesign, built
   if missing) at a small recipe, in a fresh process: wall time split into calibration and
   walk, seconds per layer, peak RSS (CPU) or peak VRAM (CUDA).
2. ``layer``: one real-shape decoder layer quantized at the default token budget with two
   calibration sizes (``--layer-seqs`` sequences and twice that, 512 tokens each): the
   per-token slope of the passes that still see every token.
3. ``defaults``: calibration = 16 batches × the measured prefill of one batch + row-steps ×
   the measured seconds per talker row-step (talker and code predictor, at batch 8);
   walk = 28 × (layer time at T₁ + slope × (T − T₁)); peak memory = the measured peak +
   the walk's full-size activation tensors.

Random weights never stop speaking, so every rollout runs to ``--max-seq-len``. Two
extrapolations follow: ``worst`` (every prompt speaks 512 frames, T = 65,536 tokens) and
``speech`` (each prompt speaks as long as its text takes to read at 15 letters per second
(a CJK character counts as 3 letters) at the codec's 12.5 frames per second: an
assumption, since no real checkpoint can be downloaded here; prefix lengths are the
measured ones). Writes a table and ``benchmarks/results/quantize_full-<device>.json``.

Usage: python benchmarks/quantize_full.py [--device auto] [--n-samples 8] [--max-seq-len 24]
           [--layer-seqs 8] [--work benchmarks/work]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import json
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).parent
DEFAULT_PROMPTS, DEFAULT_LEN, DEFAULT_BATCH = 128, 512, 8
SOURCE = "full-voice_design"


def child(args) -> dict:
    """The quantize run, in this (fresh) process, with the talker's forwards timed."""
    import torch

    from awq_tts import quantize
    from awq_tts.validate.memory import reset_peak_rss, rss_kib

    cuda = args.device.startswith("cuda")
    base = rss_kib("VmRSS")
    reset_peak_rss()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with time_talker() as timing:
        summary = quantize(args.work / SOURCE, args.work / "quantize_full-int4",
                           device=args.device, n_samples=args.n_samples,
                           max_seq_len=args.max_seq_len, batch_size=DEFAULT_BATCH, force=True,
                           progress=False)
    return {"n_samples": args.n_samples, "max_seq_len": args.max_seq_len,
            "tokens": summary.calibration["tokens"], "wall_s": summary.seconds,
            "calibration_s": summary.calibration_seconds, "walk_s": summary.walk_seconds,
            "layer_s": [round(r.seconds, 2) for r in summary.layer_reports],
            "rollout": summary.calibration.get("rollout"), **timing,
            "peak_rss_gib": rss_kib("VmHWM") / 2**20, "rss_before_gib": base / 2**20,
            "peak_vram_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}


@contextlib.contextmanager
def time_talker() -> Iterator[dict]:
    """Within the block, time every talker forward of this process: prefills (with their
    prompt lengths) and decode steps (with their rows). The yielded dict fills as it runs."""
    import torch

    from awq_tts.models.qwen3_tts.package import qwen_tts

    qwen_tts()
    from qwen_tts.core.models import modeling_qwen3_tts as m

    cls = m.Qwen3TTSTalkerForConditionalGeneration
    original = cls.forward
    out = {"prefill_s": [], "prefix_tokens": [], "decode_s": 0.0, "decode_steps": 0,
           "decode_row_steps": 0}

    @functools.wraps(original)      # generate checks its kwargs against this signature
    def forward(self, *args, **kwargs):
        embeds, ids = kwargs.get("inputs_embeds"), kwargs.get("input_ids")
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = original(self, *args, **kwargs)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        if embeds is not None and embeds.shape[1] > 1:
            out["prefill_s"].append(seconds)
            out["prefix_tokens"] += kwargs["attention_mask"].sum(-1).tolist()
        elif ids is not None:
            out["decode_s"] += seconds
            out["decode_steps"] += 1
            out["decode_row_steps"] += int(ids.shape[0])
        return result

    cls.forward = forward
    try:
        yield out
    finally:
        cls.forward = original


def layer_slope(device: str, seqs: int) -> dict:
    """One real-shape layer at the default budget, ``seqs`` and ``2 × seqs`` sequences."""
    import torch

    sys.path.insert(0, str(HERE))
    from quantize_layer import build_layer, layer_inputs

    from awq_tts.models.mapping import QWEN3_TTS_TALKER
    from awq_tts.quantizer.activations import LayerInputs
    from awq_tts.quantizer.recipe import QuantConfig
    from awq_tts.quantizer.walker import quantize_layer

    layer, rotary, cfg = build_layer(0)
    rows = []
    for n in (seqs, 2 * seqs):
        x, kwargs = layer_inputs(rotary, cfg.hidden_size, n, DEFAULT_LEN, 0)
        kwargs = {k: tuple(t.to(device) for t in v) if isinstance(v, tuple) else v.to(device)
                  for k, v in kwargs.items()}
        inputs = LayerInputs(x, kwargs, torch.ones(x.shape[:2], dtype=torch.bool),
                             dict(QWEN3_TTS_TALKER.layer_kwargs), torch.device(device),
                             DEFAULT_BATCH)
        work = copy.deepcopy(layer).to(device)
        start = time.perf_counter()
        quantize_layer(work, inputs, QuantConfig(), QWEN3_TTS_TALKER, torch.bfloat16)
        rows.append({"tokens": n * DEFAULT_LEN, "seconds": time.perf_counter() - start})
    slope = (rows[1]["seconds"] - rows[0]["seconds"]) / (rows[1]["tokens"] - rows[0]["tokens"])
    return {"runs": rows, "seconds_per_token": slope}


#: The ``speech`` assumption: letters read per second, codec frames per second.
LETTERS_PER_S, FRAMES_PER_S = 15.0, 12.5


def speech_frames() -> list[int]:
    """Frames each of the first 128 built-in prompts takes at the assumed speech rate."""
    from awq_tts.calibration.builder import expected_length
    from awq_tts.calibration.prompts import builtin_prompts

    return [round(expected_length(p) / LETTERS_PER_S * FRAMES_PER_S)
            for p in builtin_prompts()[:DEFAULT_PROMPTS]]


def batch_steps(frames: list[int]) -> int:
    """Decode steps of batches of 8 in calibration's order (longest first): each batch
    steps until its longest sample stops (what a GPU pays, where a step's cost hardly
    depends on its rows)."""
    ordered = sorted(frames, reverse=True)
    return sum(ordered[k] for k in range(0, len(ordered), DEFAULT_BATCH))


def calibration_cost(timing: dict, frames: list[int]) -> dict:
    """Calibration of 128 prompts speaking ``frames`` frames each (cut at 512), priced with
    the timed prefill and decode costs: decode per row-step (what a CPU pays) and, where
    the steps were counted, per batch step (what a GPU pays)."""
    frames = [min(f, DEFAULT_LEN) for f in frames]
    prefix = sum(timing["prefix_tokens"]) / len(timing["prefix_tokens"])
    per_batch = sum(timing["prefill_s"]) / len(timing["prefill_s"])
    per_row_step = timing["decode_s"] / timing["decode_row_steps"]
    steps = timing.get("decode_steps")
    return {"frames": frames, "prefix": prefix,
            "tokens": sum(min(prefix + f, DEFAULT_LEN) for f in frames),
            "per_batch": per_batch, "prefill_s": per_batch * (DEFAULT_PROMPTS // DEFAULT_BATCH),
            "per_row_step": per_row_step, "decode_row_s": per_row_step * sum(frames),
            "decode_step_s": timing["decode_s"] / steps * batch_steps(frames) if steps else None}


def defaults(run: dict, layer: dict, frames: list[int], hidden: int = 2048,
             layers: int = 28) -> dict:
    """Wall time and peak memory at 128 prompts of ``frames`` frames each (cut at 512)."""
    cost = calibration_cost(run, frames)
    tokens, prefix = cost["tokens"], cost["prefix"]
    calibration = cost["prefill_s"] + cost["decode_row_s"]
    t1 = layer["runs"][0]
    per_layer = t1["seconds"] + layer["seconds_per_token"] * (tokens - t1["tokens"])
    longest = max(min(prefix + f, DEFAULT_LEN) for f in cost["frames"])
    full = DEFAULT_PROMPTS * longest * hidden
    return {"frames": sum(cost["frames"]), "tokens": round(tokens), "calibration_s": calibration,
            "walk_s": per_layer * layers, "wall_s": calibration + per_layer * layers,
            "per_layer_s": per_layer, "prefill_s_per_batch": cost["per_batch"],
            "seconds_per_row_step": cost["per_row_step"],
            # the padded batch: hidden (bf16), the layer's output and its float output (f32)
            "peak_rss_gib": run["peak_rss_gib"] + (2 + 4 + 4) * full / 2**30}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--n-samples", type=int, default=8)
    parser.add_argument("--max-seq-len", type=int, default=24)
    parser.add_argument("--layer-seqs", type=int, default=8)
    parser.add_argument("--work", type=Path, default=HERE / "work")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    from awq_tts.devices import resolve_device

    args.device = resolve_device(args.device)
    if args.child:
        print("RESULT" + json.dumps(child(args)))
        return
    from awq_tts.testing import make_tiny_checkpoint

    if not (args.work / SOURCE / "config.json").is_file():  # shared with memory.py
        make_tiny_checkpoint(args.work / SOURCE, variant="voice_design", full_shape=True,
                             force=True)
    proc = subprocess.run([sys.executable, __file__, "--child", "--device", args.device,
                           "--n-samples", str(args.n_samples), "--max-seq-len",
                           str(args.max_seq_len), "--work", str(args.work)],
                          capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    if proc.returncode or not lines:
        raise SystemExit(f"the quantize run failed:\n{proc.stderr[-3000:]}")
    import torch

    run = json.loads(lines[0][len("RESULT"):])
    layer = layer_slope(args.device, args.layer_seqs)
    result = {"machine": f"{platform.processor() or platform.machine()}, "
                         f"{torch.get_num_threads()} threads, torch {torch.__version__}",
              "device": args.device, "run": run, "layer": layer,
              "defaults": {"worst": defaults(run, layer, [DEFAULT_LEN] * DEFAULT_PROMPTS),
                           "speech": defaults(run, layer, speech_frames())},
              "speech_assumption": {"letters_per_s": LETTERS_PER_S,
                                    "frames_per_s": FRAMES_PER_S}}
    print(f"small recipe ({run['n_samples']} × {run['max_seq_len']}, {run['tokens']} tokens): "
          f"calibration {run['calibration_s']:.0f} s (prefill "
          f"{sum(run['prefill_s']):.0f} s), walk {run['walk_s']:.0f} s "
          f"({run['walk_s'] / len(run['layer_s']):.1f} s/layer), peak RSS "
          f"{run['peak_rss_gib']:.2f} GiB")
    for name, d in result["defaults"].items():
        print(f"defaults, {name} ({d['frames']} frames, {d['tokens']} tokens): calibration "
              f"{d['calibration_s'] / 3600:.2f} h, walk {d['walk_s'] / 3600:.2f} h "
              f"({d['per_layer_s']:.0f} s/layer), total {d['wall_s'] / 3600:.2f} h, "
              f"peak RSS ≈ {d['peak_rss_gib']:.1f} GiB")
    out = args.json or HERE / "results" / f"quantize_full-{args.device.split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
