"""The Markdown table of ``decode.py``'s result (also the GPU run's ``decode`` stage): one
row per linear, step, frame and synthesis, bf16 and every backend, with paired speed-ups."""

from __future__ import annotations


def table(result: dict) -> str:
    """The table and the predictor-loop line under it, from a ``decode.py`` result."""
    names = ["bf16", *result["backends"]]
    head = "| | " + " | ".join(names) + " | " + " | ".join(
        f"{b} speed-up" for b in result["backends"]) + " |"
    lines = [f"Machine: {result['machine']}; batch 1, KV cache {result['cache_tokens']}, "
             f"{result['repeats']} interleaved rounds; median milliseconds (a linear: per call, "
             f"in bursts of {result.get('burst', 1)}), speed-up = median of the per-round "
             f"ratios.", "", head,
             "|---|" + "---:|" * (2 * len(names) - 1)]

    def row(label: str, values: dict, ups: dict) -> str:
        cells = [f"{values[n] * 1e3:.2f}" if n in values else "–" for n in names]
        ratio = [f"{ups[b]:.2f}×" if b in ups else (
            f"{values['bf16'] / values[b]:.2f}×" if b in values else "–")
            for b in result["backends"]]
        return f"| {label} | " + " | ".join(cells + ratio) + " |"

    for r in result["linears_s"]:
        lines.append(row(f"{r['linear']} {r['shape']}", r, r.get("speedup", {})))
    models = result["models"]
    layers = result.get("talker_layers", 28)
    for key, label in (("talker_step", f"talker step ({layers} layers)"),
                       ("codec_frame", "codec frame (talker + 15 sub-steps)"),
                       ("talker_step_graphs", "talker step, CUDA graph"),
                       ("codec_frame_graphs", "codec frame, CUDA graphs (talker + predictor)")):
        if not all(key in m for m in models.values()):
            continue
        lines.append(row(label, {n: m[key] for n, m in models.items()},
                         {n: m["speedup"][key] for n, m in models.items()
                          if key in m.get("speedup", {})}))
    synth = {n: m["synthesize"]["rtf"] for n, m in models.items() if "synthesize" in m}
    if synth:
        cells = [f"RTF {synth[n]:.2f}" if n in synth else "–" for n in names]
        ups = [f"{synth['bf16'] / synth[b]:.2f}×" if b in synth else "–"
               for b in result["backends"]]
        lines.append(f"| synthesize, ten words (≤{result['synth_frames_cap']} frames) | "
                     + " | ".join(cells + ups) + " |")
    loop = result.get("predictor_loop")
    if loop:
        lines += ["", f"One bf16 codec frame, code predictor by transformers' `generate`: "
                      f"{loop['generate_s'] * 1e3:.2f} ms; by the plain loop `load` installs: "
                      f"{loop['plain_s'] * 1e3:.2f} ms ({loop['speedup']:.2f}×)"
                      + (f"; replayed from a CUDA graph: {loop['graphs_s'] * 1e3:.2f} ms "
                         f"({loop['graphs_speedup']:.2f}× the plain loop)"
                         if "graphs_s" in loop else "")
                      + (f"; its predictor and codec head on torch's bf16 kernel: "
                         f"{loop['torch_linears_s'] * 1e3:.2f} ms (the streaming one "
                         f"{loop['gemv_speedup']:.2f}× faster)" if "gemv_speedup" in loop
                         else "") + "."]
        if "ops_speedup" in loop:
            lines.append(f"With qwen-tts's own RMSNorms, per-layer rope tables and attention "
                         f"instead of the fused norms, shared tables and grouped attention "
                         f"`load` installs: "
                         f"{loop['stock_ops_s'] * 1e3:.2f} ms (awq-tts's "
                         f"{loop['ops_speedup']:.2f}× faster)"
                         + (f"; replayed from CUDA graphs: "
                            f"{loop['graphs_stock_ops_s'] * 1e3:.2f} ms (awq-tts's "
                            f"{loop['graphs_ops_speedup']:.2f}× faster)"
                            if "graphs_ops_speedup" in loop else "") + ".")
    weights = result.get("talker_weight_bytes")
    int4 = next((b for b in result["backends"] if b in (weights or {})), None)
    if weights and "bf16" in weights and int4:
        reads = {card: f"{weights['bf16'] / bandwidth * 1e3:.2f} and "
                       f"{weights[int4] / bandwidth * 1e3:.2f} ms"
                 for card, bandwidth in (("an RTX 3060's 360 GB/s", 360e9),
                                         ("an H200's 4.8 TB/s", 4.8e12))}
        lines += ["", f"Weights one talker step reads (its decoder layers): bf16 "
                      f"{weights['bf16'] / 1e9:.2f} GB, {int4} {weights[int4] / 1e9:.2f} GB; "
                      f"reading them alone takes " + "; ".join(
                          f"{t} at {card}" for card, t in reads.items())
                  + " (a step is bound by its weights only where its launches cost less)."]
    launches = result.get("talker_step_launches")
    if launches:
        lines += ["", "CUDA kernels and copies one eager talker step runs (torch's profiler; a "
                      "CUDA graph replays the same): " + ", ".join(
                          f"{n} {c}" for n, c in launches.items()) + "."]
    fusion = result.get("fusion")
    if fusion:
        parts = [f"{label}: {fusion[key]['fused_s'] * 1e3:.2f} ms against "
                 f"{fusion[key]['apart_s'] * 1e3:.2f} ms ({fusion[key]['speedup']:.2f}×)"
                 for key, label in (("talker_step", "talker step"), ("codec_frame", "codec frame"),
                                    ("talker_step_graphs", "talker step from a CUDA graph"),
                                    ("codec_frame_graphs", "codec frame from CUDA graphs"))
                 if key in fusion]
        lines += ["", f"INT4 ({fusion['backend']}) with q/k/v and with gate/up as one matmul "
                      f"each, as `load` gives, against every linear apart (`fuse=False`): "
                      + "; ".join(parts) + "."]
    return "\n".join(lines)
