"""The GPU run's Markdown table (``benchmarks/acceptance_table.py``) and the quantize stage's
fit (``benchmarks/acceptance_quantize.py``), from results written by hand: what a GPU run
would report, checked without one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))     # the scripts' sibling modules


def test_the_decode_table_shows_the_cuda_graph_rows():
    """The rows only a CUDA run fills (the step and the frame replayed from CUDA graphs)."""
    from decode_table import table

    def model(step, frame, graphed_step, graphed_frame, **speedup):
        row = {"talker_step": step, "codec_frame": frame, "talker_step_graphs": graphed_step,
               "codec_frame_graphs": graphed_frame}
        return {**row, "speedup": speedup} if speedup else row

    result = {"machine": "GPU", "cache_tokens": 64, "repeats": 3, "backends": ["int4pack"],
              "linears_s": [], "talker_layers": 28, "models": {
                  "bf16": model(0.020, 0.060, 0.004, 0.008),
                  "int4pack": model(0.010, 0.050, 0.002, 0.005, talker_step=2.0,
                                    codec_frame=1.2, talker_step_graphs=1.9,
                                    codec_frame_graphs=1.5)},
              "predictor_loop": {"generate_s": 0.08, "plain_s": 0.06, "speedup": 1.33,
                                 "graphs_s": 0.03, "graphs_speedup": 2.0,
                                 "stock_ops_s": 0.09, "ops_speedup": 1.5,
                                 "graphs_stock_ops_s": 0.036, "graphs_ops_speedup": 1.2},
              "talker_weight_bytes": {"bf16": 2.8e9, "int4pack": 0.72e9},
              "talker_step_launches": {"bf16": 640, "int4pack": 556},
              "fusion": {"backend": "int4pack",
                         "talker_step_graphs": {"fused_s": 0.002, "apart_s": 0.0024,
                                                "speedup": 1.2}}}
    text = table(result)
    assert "| talker step, CUDA graph | 4.00 | 2.00 | 1.90× |" in text
    assert "| codec frame, CUDA graphs (talker + predictor) | 8.00 | 5.00 | 1.50× |" in text
    assert "replayed from a CUDA graph: 30.00 ms (2.00× the plain loop)" in text
    assert ("grouped attention `load` installs: 90.00 ms (awq-tts's 1.50× faster); "
            "replayed from CUDA graphs: 36.00 ms (awq-tts's 1.20× faster).") in text
    assert "graph replays the same): bf16 640, int4pack 556." in text
    assert ("bf16 2.80 GB, int4pack 0.72 GB; reading them alone takes 7.78 and 2.00 ms at an "
            "RTX 3060's 360 GB/s; 0.58 and 0.15 ms at an H200's 4.8 TB/s") in text
    assert ("against every linear apart (`fuse=False`): talker step from a CUDA graph: "
            "2.00 ms against 2.40 ms (1.20×).") in text
    for key in ("talker_step_graphs", "codec_frame_graphs"):   # a CPU run has no such rows
        del result["models"]["bf16"][key]
    assert "CUDA graph" not in table(result).split("\n\n")[1]


def test_the_speak_table_shows_cuda_graph_rtf_and_cut_stages():
    from acceptance_table import table

    row = {"load_peak_gib": 1.0, "peak_gib": 1.5, "audio_s": 30.0, "rtf": 0.5}
    results = {"device": "cuda:0", "cap_gib": 6.0, "tiny": False, "speak": {
        "bf16": {**row, "graphs": {"rtf": 0.2, "frames_cap": 375, "status": "on (1 captured)",
                                   "audio_s": 30.0, "peak_gib": 1.75}},
        "int4pack": {**row, "cut": "timed out after 60 s; this is what it had measured"},
        "dequant": {"error": "boom"}}}
    text = table(results)
    assert "| bf16 | 1.00 | 1.50 | 30.0 | 0.50 | 0.20 | 1.75 |" in text
    assert "| INT4 int4pack | 1.00 | 1.50 | 30.0 | 0.50 | – | – |" in text
    assert "| dequant | boom | | | | | |" in text
    assert "bf16, CUDA graphs (375 frames, 30.0 s of audio): on (1 captured)" in text
    assert "INT4 int4pack: timed out after 60 s" in text


def test_the_default_recipe_is_priced_by_a_fit_not_by_the_token_ratio():
    """The H200's run: the search's cost does not grow with tokens past --loss-tokens, so two
    runs fix a fixed cost and a slope per part; a part without a measurable slope is priced
    at its larger run, never below it."""
    from acceptance_quantize import token_fit

    first = {"tokens": 4096, "calibration_s": 20.0, "walk_s": 22.0}
    second = {"tokens": 8192, "calibration_s": 38.0, "walk_s": 24.0}
    fit = token_fit(first, second, tokens=65536)
    calibration, walk = fit["parts"]["calibration_s"], fit["parts"]["walk_s"]
    assert calibration["per_token_s"] == pytest.approx(18 / 4096)
    assert calibration["at_default_s"] == pytest.approx(20 + 18 * 15)
    assert walk["at_default_s"] == pytest.approx(22 + 2 * 15)
    assert fit["default_s"] == pytest.approx(290 + 52)       # against × 16: 672 s
    noisy = token_fit(first, {**second, "walk_s": 21.5}, tokens=65536)["parts"]["walk_s"]
    assert noisy == {"per_token_s": None, "at_default_s": 22.0}
    with pytest.raises(ValueError, match="cannot be fitted"):
        token_fit(first, first)


def test_a_rollout_step_drowned_in_noise_is_said_not_printed_as_a_cost():
    from acceptance_table import table

    steps = {"batch": 8, "dropping": {"step_s": 0.05}, "graphs": {"step_s": None},
             "speed_up": None}
    quantized = {"layers": 196, "wall_s": 60.0, "extrapolated_default_s": 600.0,
                 "n_samples": 8, "max_seq_len": 64, "calibration_s": 20.0, "walk_s": 40.0,
                 "peak_gib": 3.0,
                 "rollout": {"decode": "graphs"}, "rollout_steps": steps}
    text = table({"device": "cuda:0", "cap_gib": 6.0, "tiny": False, "quantize": quantized})
    assert ("Calibration rollout step at batch 8: dropping 50.0 ms, graphs below noise (–×)"
            in text)


def test_a_kernel_count_that_fails_is_reported_not_raised():
    from graph_calls import kernel_launches

    assert kernel_launches(lambda: 1 / 0).startswith("ZeroDivisionError")


@pytest.mark.gpu
def test_kernel_launches_counts_what_a_call_runs_on_cuda():
    import torch
    from graph_calls import kernel_launches

    x = torch.ones(1024, device="cuda")
    assert 2 <= kernel_launches(lambda: (x * 2) + 1) <= 4      # a multiply, an add


def test_the_speech_table_names_what_is_live_at_the_graphed_peak():
    from acceptance_table import table

    graphs = {"audio_s": 29.9, "rtf": 0.17, "frames_cap": 375, "status": "on",
              "capture_call_s": 0.4, "peak_gib": 1.9, "text_tokens": 117,
              "long_text": {"repeats": 60, "peak_gib": 2.1, "rtf": 0.17},
              "trace": {"start_gib": 1.5, "rise_gib": 0.4, "events": 9, "live": [
                  {"mib": 140.0, "count": 56, "origin": "awq_tts/x.py:62 update"}]}}
    result = {"device": "cuda:0", "cap_gib": 6.0, "tiny": False, "env": {"gpu": "GPU"},
              "speak": {"int4pack+offload": {"load_peak_gib": 1.6, "peak_gib": 1.7,
                                             "audio_s": 8.0, "rtf": 1.5, "graphs": graphs}}}
    text = table(result)
    assert "| INT4 int4pack+offload | 1.60 | 1.70 | 8.0 | 1.50 | 0.17 | 1.90 |" in text
    assert ("a text of 117 tokens (30 s of speech); with the longer text (60 × \"Hello "
            "there.\") 2.10 GiB") in text
    assert ("live at the peak of 30 s of graphed speech: 1.50 GiB before the call + 0.40 GiB "
            "rise; of the rise: 140 MiB × 56 awq_tts/x.py:62 update") in text
    graphs["trace"] = {"error": "RuntimeError: no history"}
    assert "what is live at the peak: not traced (RuntimeError: no history)" in table(result)
