"""The GPU acceptance script runs end to end on the CPU with the tiny model (its dry run), so
no device minute is spent on a typo, and writes the JSON and table the GPU run will."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


SCRIPT = str(ROOT / "benchmarks" / "gpu_acceptance.py")


def test_dry_run_writes_every_stage(tmp_path):
    """Every stage, in one process (a stage in its own process is tested below)."""
    out = tmp_path / "acceptance"
    run = subprocess.run([sys.executable, SCRIPT, "--out", str(out), "--device", "cpu", "--tiny",
                          "--frames", "12", "--skip", "gpu_tests", "--in-process",
                          "--work", str(tmp_path / "work")],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads((out / "gpu_acceptance.json").read_text())
    assert result["gpu_tests"] == {"skipped": "--skip"}   # on the CPU it would skip them all
    for stage in ("env", "build", "speak", "decode", "quantize", "validate"):
        assert stage in result and "error" not in result[stage], (stage, result[stage])
    assert result["env"]["device"] == "cpu" and result["env"]["backends"]
    assert set(result["speak"]) == {"bf16", *result["env"]["backends"]}
    for name, row in result["speak"].items():
        assert "error" not in row, (name, row)
        assert row["audio_s"] > 0 and row["rtf"] > 0 and row["peak_gib"] >= 0
    quantized = result["quantize"]
    assert quantized["layers"] == 2 and quantized["extrapolated_default_s"] > 0
    assert quantized["speech_estimate_s"] > 0 and quantized["rollout"]["talker_row_steps"] > 0
    assert result["validate"]["verdict"]
    decode = result["decode"]
    assert set(decode["models"]) == {"bf16", *decode["backends"]} and "dequant" not in decode[
        "backends"]
    assert all(m["talker_step"] > 0 and m["codec_frame"] > 0 for m in decode["models"].values())
    assert decode["models"]["int4pack"]["speedup"]["talker_step"] > 0
    assert decode["predictor_loop"]["generate_s"] > 0 and decode["predictor_loop"]["speedup"] > 0
    table = (out / "gpu_acceptance.md").read_text()
    assert "INT4 int4pack" in table and "Quantize (4 × 32 tokens" in table
    assert "| talker step (2 layers) |" in table and "by the plain loop" in table


def test_a_stage_runs_in_its_own_process(tmp_path):
    import argparse

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_acceptance import _child

    args = argparse.Namespace(out=tmp_path, device="cpu", cap_gib=6.0, work=tmp_path / "w",
                              frames=12, n_samples=4, max_seq_len=32, validate_tokens=24,
                              tiny=True)
    result = _child(args, "env", [], timeout=300)
    assert result["device"] == "cpu" and "int4pack" in result["backends"], result
    broken = _child(args, "validate", [], timeout=300)   # no checkpoint built: an error row
    assert "error" in broken and broken["exit_code"] != 0


def test_the_deadline_leaves_a_complete_report(tmp_path):
    import argparse

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_acceptance import orchestrate

    args = argparse.Namespace(out=tmp_path / "o", device="cpu", cap_gib=6.0, tiny=True,
                              work=tmp_path / "w", skip=[], deadline=5, in_process=True)
    result = orchestrate(args)
    assert all("out of time" in result[stage]["skipped"] for stage in
               ("env", "gpu_tests", "build", "speak", "decode", "quantize", "validate"))
    written = json.loads((tmp_path / "o" / "gpu_acceptance.json").read_text())
    assert written["deadline_s"] == 5 and "out of time" in written["validate"]["skipped"]
