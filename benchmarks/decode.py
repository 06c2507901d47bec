"""Decode speed of Qwen3-TTS 1.7B, bf16 against every INT4 backend the device has, in one run.

Works on the ``--full-shape`` random checkpoint and its RTN-packed INT4 twin (built if
missing, shared with ``benchmarks/memory.py``: AWQ changes values, not layout, so bytes
and speed equal an AWQ checkpoint's). Batch 1, a KV cache of ``--cache`` tokens. The
models are resident together and timed in ``--repeats`` interleaved rounds (each call
once per round, after one warm-up), so a change in machine load hits every column alike;
a speed-up is the median of the per-round ratios, a time the median over rounds:

(a) each of the 7 talker linear shapes alone (``F.linear`` on a bf16 weight vs each backend),
    per call in bursts of ``BURST`` calls;
(b) one talker decoder step (28 layers, one token, cache cropped back after each call);
(c) one whole codec frame as ``generate`` runs it: the talker step plus the code
    predictor's 15 sub-steps (``Qwen3TTSTalkerForConditionalGeneration.forward``);
(d) ``synthesize`` of one ten-word sentence end to end, capped at ``--frames`` frames
    (random weights never stop by themselves), as a real-time factor.

Prints a table, writes JSON (``results/decode-{cpu,cuda}.json``). ``--help`` has the options.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from types import MethodType

import torch

sys.path.insert(0, str(Path(__file__).parent))
from decode_table import table  # noqa: E402
from graph_calls import (  # noqa: E402
    graphed_calls,
    kernel_launches,
    predictor_graphed,
    stock_ops,
    torch_linears,
)
from memory import full_shape_pair  # noqa: E402
from timing import interleaved, machine, paired_speedup  # noqa: E402

from awq_tts.devices import resolve_device  # noqa: E402
from awq_tts.format.packing import pack_gemm  # noqa: E402
from awq_tts.quantizer import numerics  # noqa: E402
from awq_tts.runtime import Int4Linear, available_backends, load  # noqa: E402
from awq_tts.runtime.backends import BACKENDS  # noqa: E402
from awq_tts.validate.memory import model_bytes  # noqa: E402

LINEARS = (("q_proj", 2048, 2048), ("k_proj", 2048, 1024), ("v_proj", 2048, 1024),
           ("o_proj", 2048, 2048), ("gate_proj", 2048, 6144), ("up_proj", 2048, 6144),
           ("down_proj", 6144, 2048))
BURST = 10
SENTENCE = "The quick brown fox jumps over the lazy dog near the river."


def _burst(fn):
    """``BURST`` calls back to back, as a decode step makes them: a single call after other
    work would also time waking the thread pool (about 0.4 ms on the CPU), not the kernel."""
    def calls() -> None:
        for _ in range(BURST):
            fn()
    return calls


@torch.no_grad()
def bench_linears(device: str, backends: list[str], repeats: int) -> list[dict]:
    rows, gen = [], torch.Generator().manual_seed(0)
    for name, k, n in LINEARS:
        w = torch.randn(n, k, generator=gen) * 0.02
        scales, zeros = numerics.compute_qparams(w, 128)
        packed = pack_gemm(numerics.quantize(w, scales, zeros, 128), scales, zeros)
        x = torch.randn(1, k, generator=gen).to(device, torch.bfloat16)
        dense = w.to(device, torch.bfloat16)
        fns = {"bf16": lambda x=x, dense=dense: torch.nn.functional.linear(x, dense)}
        for backend in backends:
            layer = Int4Linear.from_packed(packed, 128).to(device)
            layer.use_backend(BACKENDS[backend], torch.bfloat16)
            fns[backend] = lambda layer=layer, x=x: layer(x)
        times = interleaved({b: _burst(fn) for b, fn in fns.items()}, device, repeats)
        rows.append({"linear": name, "shape": f"{k}→{n}",
                     **{b: t["median_s"] / BURST for b, t in times.items()},
                     "speedup": {b: paired_speedup(times["bf16"], times[b]) for b in backends}})
    return rows


def _talker_state(tts, cache_len: int):
    talker = tts.model.talker
    gen = torch.Generator().manual_seed(0)
    hidden = talker.config.hidden_size
    prompt = (torch.randn(1, cache_len, hidden, generator=gen) * 0.05).to(talker.device,
                                                                           talker.dtype)
    out = talker.model(inputs_embeds=prompt, use_cache=True)
    return talker, out.past_key_values, prompt


@torch.no_grad()
def model_calls(tts, cache_len: int) -> dict:
    """(b) one talker step and (c) one codec frame of ``tts``, each leaving its cache as
    it found it."""
    talker, cache, prompt = _talker_state(tts, cache_len)
    token = prompt[:, -1:]

    @torch.no_grad()
    def step():
        out = talker.model(inputs_embeds=token, past_key_values=cache, use_cache=True)
        cache.crop(cache_len)
        return out.last_hidden_state

    pad = talker.get_text_embeddings()(torch.tensor([[tts.model.config.tts_pad_token_id]],
                                                    device=talker.device))
    frame_kwargs = dict(
        input_ids=torch.tensor([[17]], device=talker.device), past_hidden=token,
        past_key_values=cache, use_cache=True, generation_step=0,
        trailing_text_hidden=token[:, :0], tts_pad_embed=talker.text_projection(pad),
        subtalker_dosample=False, subtalker_top_p=1.0, subtalker_top_k=1,
        subtalker_temperature=1.0)

    @torch.no_grad()
    def frame():
        out = talker(**frame_kwargs)
        cache.crop(cache_len)
        return out.past_hidden

    calls = {"talker_step": step, "codec_frame": frame}
    if talker.device.type == "cuda":
        calls.update(graphed_calls(tts, cache_len, prompt, frame_kwargs))
    return calls


MODEL_KEYS = ("talker_step", "codec_frame", "talker_step_graphs", "codec_frame_graphs")


def bench_models(models: dict, device: str, cache_len: int, repeats: int) -> dict:
    """Every model's (b) and (c), interleaved round by round; paired speed-ups over bf16."""
    calls = {name: model_calls(tts, cache_len) for name, tts in models.items()}
    out: dict = {name: {} for name in models}
    for key in MODEL_KEYS:
        if not all(key in c for c in calls.values()):
            continue
        times = interleaved({n: c[key] for n, c in calls.items()}, device, repeats)
        for name, t in times.items():
            out[name][key] = t["median_s"]
            if name != "bf16" and "bf16" in times:
                out[name].setdefault("speedup", {})[key] = paired_speedup(times["bf16"], t)
    return out


def bench_predictor_loop(tts, device: str, cache_len: int, repeats: int) -> dict:
    """One codec frame of ``tts`` with the code predictor's plain loop (what ``load`` gives,
    ``models/qwen3_tts/predictor.py``) against transformers' ``generate``, interleaved."""
    from awq_tts.models.qwen3_tts.patches import swap_attr

    frame = model_calls(tts, cache_len)["codec_frame"]
    predictor = tts.model.talker.code_predictor

    def with_generate():
        undo = swap_attr(predictor, "generate", MethodType(type(predictor).generate, predictor))
        try:
            frame()
        finally:
            undo()

    calls = {"generate": with_generate, "plain": frame}
    if device.startswith("cuda"):
        calls["graphs"] = predictor_graphed(predictor, frame)
    if tts.awq_gemv_linears:
        calls["torch_linears"] = torch_linears(tts, frame)
    calls["stock_ops"] = stock_ops(tts, frame)
    if device.startswith("cuda"):
        calls["graphs_stock_ops"] = stock_ops(tts, predictor_graphed(predictor, frame))
    times = interleaved(calls, device, repeats)
    out = {"generate_s": times["generate"]["median_s"], "plain_s": times["plain"]["median_s"],
           "speedup": paired_speedup(times["generate"], times["plain"])}
    if "torch_linears" in times:
        out.update(torch_linears_s=times["torch_linears"]["median_s"],
                   gemv_speedup=paired_speedup(times["torch_linears"], times["plain"]))
    if "graphs" in times:
        out.update(graphs_s=times["graphs"]["median_s"],
                   graphs_speedup=paired_speedup(times["plain"], times["graphs"]))
    out.update(stock_ops_s=times["stock_ops"]["median_s"],
               ops_speedup=paired_speedup(times["stock_ops"], times["plain"]))
    if "graphs_stock_ops" in times:
        out.update(graphs_stock_ops_s=times["graphs_stock_ops"]["median_s"],
                   graphs_ops_speedup=paired_speedup(times["graphs_stock_ops"],
                                                     times["graphs"]))
    return out


def bench_fusion(tts, int4_dir: Path, device: str, cache_len: int, repeats: int) -> dict:
    """(b) and (c) of ``tts`` (INT4: q/k/v and gate/up one matmul each, as ``load`` gives,
    ``runtime/siblings.py``) against its twin loaded with ``fuse=False``, interleaved."""
    apart = load(int4_dir, device=device, dtype=torch.bfloat16, backend=tts.awq_backend,
                 fuse=False)
    calls = {"fused": model_calls(tts, cache_len), "apart": model_calls(apart, cache_len)}
    out: dict = {"backend": tts.awq_backend}
    for key in MODEL_KEYS:
        if key in calls["fused"]:
            times = interleaved({n: c[key] for n, c in calls.items()}, device, repeats)
            out[key] = {"fused_s": times["fused"]["median_s"],
                        "apart_s": times["apart"]["median_s"],
                        "speedup": paired_speedup(times["apart"], times["fused"])}
    return out


def bench_synth(models: dict, device: str, frames: int, repeats: int = 3) -> dict:
    """(d) for every model, after a warm-up call each, in ``repeats`` interleaved rounds."""
    from awq_tts.synth import speak

    def call(tts):
        return lambda: speak(tts, SENTENCE, max_new_tokens=frames, do_sample=False,
                             subtalker_dosample=False)
    audio = {n: call(tts)().seconds_audio for n, tts in models.items()}
    times = interleaved({n: call(tts) for n, tts in models.items()}, device, repeats)
    return {n: {"audio_s": audio[n], "wall_s": t["median_s"], "rtf": t["median_s"] / audio[n],
                "rounds": repeats} for n, t in times.items()}


def load_models(bf16_dir: Path, int4_dir: Path, names: list[str], device: str) -> dict:
    """The models to time, resident together: ``bf16`` and the INT4 twin per backend name."""
    return {name: load(bf16_dir if name == "bf16" else int4_dir, device=device,
                       dtype=torch.bfloat16, backend="auto" if name == "bf16" else name)
            for name in names}


def measure(models: dict, device: str, backends: list[str], repeats: int, cache: int,
            int4_dir: Path | None = None) -> dict:
    """(a)–(c) with ``models`` resident: the result fields this script and the GPU run's
    ``decode`` stage share (``table`` reads them); with ``int4_dir``, the fused siblings'
    paired line for the first INT4 model."""
    fast = next((models[b] for b in backends if b in models), None)
    fusion = (bench_fusion(fast, int4_dir, device, cache, repeats)
              if int4_dir is not None and fast is not None else None)
    return {"machine": machine(device), "device": device, "repeats": repeats, "burst": BURST,
            "fusion": fusion, "cache_tokens": cache, "backends": backends, "interleaved": True,
            "linears_s": bench_linears(device, backends, repeats),
            "models": bench_models(models, device, cache, repeats),
            "predictor_loop": (bench_predictor_loop(models["bf16"], device, cache, repeats)
                               if "bf16" in models else None),
            "talker_layers": len(next(iter(models.values())).model.talker.model.layers),
            "talker_weight_bytes": {n: model_bytes(tts, "decoder") for n, tts in models.items()},
            "talker_step_launches": (
                {n: kernel_launches(model_calls(tts, cache)["talker_step"])
                 for n, tts in models.items()} if device.startswith("cuda") else None)}


def run(args) -> dict:
    device = resolve_device(args.device)
    backends = [b for b in available_backends(device) if b not in args.skip_backend]
    bf16_dir, int4_dir = full_shape_pair(args.work, args.variant)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    models = load_models(bf16_dir, int4_dir, ["bf16", *(b for b in backends if b != "dequant")],
                         device)
    result = {**measure(models, device, backends, args.repeats, args.cache, int4_dir),
              "synth_frames_cap": args.frames, "threads": torch.get_num_threads()}
    for name, synth in ({} if args.skip_synth else bench_synth(models, device,
                                                               args.frames)).items():
        result["models"][name]["synthesize"] = synth
    print(json.dumps(result["models"]), flush=True)
    del models
    if "dequant" in backends:  # ~50× slower: timed on its own, with fewer rounds
        slow = load_models(bf16_dir, int4_dir, ["dequant"], device)
        result["models"].update(bench_models(slow, device, args.cache,
                                             max(1, args.repeats // 5)))
        print(f"dequant: {result['models']['dequant']}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("benchmarks/work"))
    parser.add_argument("--variant", default="voice_design")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cache", type=int, default=64, help="KV-cache tokens before the step")
    parser.add_argument("--frames", type=int, default=12, help="frame cap for (d)")
    parser.add_argument("--skip-synth", action="store_true")
    parser.add_argument("--skip-backend", action="append", default=[],
                        help="leave a backend out (repeatable), e.g. dequant")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = run(args)
    md = table(result)
    print(md)
    path = args.json or (Path(__file__).parent / "results"
                         / f"decode-{'cuda' if result['device'] != 'cpu' else 'cpu'}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**result, "table_markdown": md}, indent=2) + "\n")


if __name__ == "__main__":
    main()
