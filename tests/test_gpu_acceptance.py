"""The GPU acceptance script runs end to end on the CPU with the tiny model (its dry run), so
no device minute is spent on a typo, and writes the JSON and table the GPU run will."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


SCRIPT = str(ROOT / "benchmarks" / "gpu_acceptance.py")
#: Who speaks: what the GPU run's command (README, "The GPU run") asks for.
SPEAKERS = "bf16,int4pack,int4pack+offload"


def test_dry_run_writes_every_stage(tmp_path):
    """Every stage, in one process (a stage in its own process is tested below)."""
    out = tmp_path / "acceptance"
    run = subprocess.run([sys.executable, SCRIPT, "--out", str(out), "--device", "cpu", "--tiny",
                          "--frames", "12", "--skip", "gpu_tests", "--in-process",
                          "--models", SPEAKERS, "--work", str(tmp_path / "work")],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads((out / "gpu_acceptance.json").read_text())
    assert result["gpu_tests"] == {"skipped": "--skip"}   # on the CPU it would skip them all
    for stage in ("env", "build", "speak", "decode", "quantize", "validate"):
        assert stage in result and "error" not in result[stage], (stage, result[stage])
    assert result["env"]["device"] == "cpu" and result["env"]["backends"]
    assert set(result["speak"]) == set(SPEAKERS.split(","))     # those the GPU command names
    for name, row in result["speak"].items():
        assert "error" not in row, (name, row)
        assert row["audio_s"] > 0 and row["rtf"] > 0 and row["peak_gib"] >= 0
    assert result["speak"]["int4pack+offload"]["host_gib"] > 0
    assert result["speak"]["int4pack"]["host_gib"] == 0
    quantized = result["quantize"]
    assert quantized["layers"] == 2 and quantized["extrapolated_default_s"] > 0
    assert quantized["speech_estimate_s"] > 0 and quantized["rollout"]["talker_row_steps"] > 0
    assert quantized["rollout"]["decode"] == "dropping"     # graphs are CUDA's
    fit = quantized["fit"]           # the second run has twice the prompts
    assert fit["runs"][1]["tokens"] > fit["runs"][0]["tokens"] and fit["default_s"] > 0
    steps = quantized["rollout_steps"]
    for mode in ("dropping", "static"):       # a tiny model's step may drown in the noise:
        assert len(steps[mode]["walls_s"]) == 2 and min(steps[mode]["walls_s"]) > 0
        assert steps[mode]["step_s"] is None or steps[mode]["step_s"] > 0   # never a negative cost
    assert result["validate"]["verdict"]
    decode = result["decode"]
    assert set(decode["models"]) == {"bf16", *decode["backends"]} and "dequant" not in decode[
        "backends"]
    assert all(m["talker_step"] > 0 and m["codec_frame"] > 0 for m in decode["models"].values())
    assert decode["models"]["int4pack"]["speedup"]["talker_step"] > 0
    assert decode["predictor_loop"]["generate_s"] > 0 and decode["predictor_loop"]["speedup"] > 0
    assert decode["predictor_loop"]["ops_speedup"] > 0     # paired with qwen-tts's own ops
    assert decode["fusion"]["backend"] == decode["backends"][0]    # paired with siblings apart
    assert decode["fusion"]["talker_step"]["speedup"] > 0 and "fuse" in decode["table_markdown"]
    table = (out / "gpu_acceptance.md").read_text()
    assert "INT4 int4pack" in table and "Quantize (4 × 32 tokens" in table
    assert "min at 128 × 512 with every rollout at the cap" in table
    assert "rollouts dropping" in table and "Calibration rollout step at batch 4" in table
    assert "| talker step (2 layers) |" in table and "by the plain loop" in table


def test_a_stage_runs_in_its_own_process(tmp_path):
    import argparse

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_acceptance import _child

    args = argparse.Namespace(out=tmp_path, device="cpu", cap_gib=6.0, work=tmp_path / "w",
                              frames=12, speech_frames=30, n_samples=4, max_seq_len=32,
                              validate_tokens=24,
                              tiny=True)
    result = _child(args, "env", [], timeout=300)
    assert result["device"] == "cpu" and "int4pack" in result["backends"], result
    broken = _child(args, "validate", [], timeout=300)   # no checkpoint built: an error row
    assert "error" in broken and broken["exit_code"] != 0
    assert "(whole stderr: validate.stderr.txt)" in broken["error"]
    assert "Traceback" in (tmp_path / "validate.stderr.txt").read_text()


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


def test_a_stage_cut_short_keeps_its_partial_result(tmp_path, monkeypatch):
    """``speak`` prints a partial result before its CUDA-graph run; a stage killed by its
    budget, or crashing, after that keeps what it had measured and says so."""
    import argparse

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu_acceptance

    args = argparse.Namespace(out=tmp_path, device="cpu", cap_gib=6.0, work=tmp_path / "w",
                              frames=12, speech_frames=30, n_samples=4, max_seq_len=32,
                              validate_tokens=24,
                              tiny=True)
    printed = b'loading\nRESULT{"rtf": 0.5}\n'

    def killed(cmd, **kwargs):
        raise subprocess.TimeoutExpired(cmd, kwargs["timeout"], output=printed)

    monkeypatch.setattr(gpu_acceptance.subprocess, "run", killed)
    result = gpu_acceptance._child(args, "speak_one", [], timeout=7)
    assert result["rtf"] == 0.5 and result["cut"].startswith("timed out after 7 s")
    printed = b"loading\n"
    assert gpu_acceptance._child(args, "speak_one", [], 7) == {"error": "timed out after 7 s"}

    def crashed(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, -11, 'RESULT{"rtf": 0.5}\n', "Segfault\n")

    monkeypatch.setattr(gpu_acceptance.subprocess, "run", crashed)
    result = gpu_acceptance._child(args, "speak_one", [], 7)
    assert result["rtf"] == 0.5 and result["cut"] == (
        "exit code -11 after this partial result: Segfault (whole stderr: "
        "speak_one.stderr.txt)")
    assert (tmp_path / "speak_one.stderr.txt").read_text() == "Segfault\n"


def test_a_second_call_resumes_what_the_first_left(tmp_path):
    """``--resume``: completed stages are kept, the rest run; ``build`` runs again when its
    checkpoints are gone (a fresh machine), and failed tests count as not done."""
    import argparse

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from acceptance_resume import complete
    from gpu_acceptance import orchestrate

    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps({
        "env": {"device": "cpu", "backends": ["int4pack"], "marker": 1},
        "gpu_tests": {"exit_code": 1, "summary": "1 failed"},
        "build": {"seconds": 1.0}, "speak": {"skipped": "out of time"}}))
    args = argparse.Namespace(out=tmp_path / "o", device="cpu", cap_gib=6.0, tiny=True,
                              work=tmp_path / "w", deadline=600, in_process=True,
                              resume=earlier,
                              skip=["gpu_tests", "speak", "decode", "quantize", "validate"],
                              frames=12, speech_frames=30, n_samples=4, max_seq_len=32,
                              validate_tokens=24)
    result = orchestrate(args)
    assert "marker" not in result["env"]          # env always runs: it names the machine
    assert "resumed" not in result["build"] and result["build"]["bytes"] > 0   # rebuilt
    assert not complete(args, "gpu_tests", {"exit_code": 1, "summary": "1 failed"})
    assert complete(args, "gpu_tests", {"exit_code": 0, "summary": "40 passed"})
    assert complete(args, "quantize", {"wall_s": 60.0, "fit": {"default_s": 300.0},
                                        "cut": "timed out after 300 s; …"})
    assert not complete(args, "quantize", {"wall_s": 60.0, "cut": "timed out after 300 s"})
    assert not complete(args, "quantize", {"error": "timed out after 23 s"})
    assert not complete(args, "quantize", {"wall_s": 45.0, "layers": 28})   # before the fit
    assert not complete(args, "quantize", {"wall_s": 45.0, "fit": {"error": "OutOfMemory"}})
    assert not complete(args, "decode", {"predictor_loop": {"speedup": 1.1}})   # no ops line
    ops = {"predictor_loop": {"speedup": 1.1, "ops_speedup": 1.3}}
    assert not complete(args, "decode", ops)                          # no fusion line
    assert complete(args, "decode", {**ops, "fusion": {"talker_step": {"speedup": 1.1}}})
    assert result["resumed_from"] == str(earlier)
    from acceptance_resume import kept_steps

    steps = {"graphs": {"step_s": 0.02}}
    assert kept_steps({"quantize": {"rollout_steps": steps}}, "quantize") == {
        **steps, "resumed": True}                 # a quantize rerun keeps the step costs
    assert kept_steps({"quantize": {"rollout_steps": {"error": "x"}}}, "quantize") is None
    assert kept_steps({"quantize": {"rollout_steps": steps}}, "validate") is None
    earlier.write_text(json.dumps(result))
    again = orchestrate(args)                     # the checkpoints exist now: kept
    assert again["build"]["resumed"] and again["build"]["bytes"] == result["build"]["bytes"]
    from gpu_acceptance import _speak

    args.models = ["bf16", "int4pack"]             # speak, model by model: bf16 is kept
    done = {"bf16": {"load_peak_gib": 1.0, "peak_gib": 1.2, "rtf": 0.5},
            "int4pack": {"load_peak_gib": 0.5, "cut": "timed out after 60 s"}}
    spoken = _speak(args, again, done, 300)
    assert spoken["bf16"] == {**done["bf16"], "resumed": True}
    assert "resumed" not in spoken["int4pack"] and spoken["int4pack"]["audio_s"] > 0
    args.rerun = ["speak:bf16", "build"]           # --rerun: done, and run all the same
    assert not complete(args, "build", again["build"])
    assert "resumed" not in _speak(args, again, done, 300)["bf16"]
    args.rerun = []
    cuda = argparse.Namespace(device="cuda:0")      # a row from before the 30 s graphed peak
    assert not complete(cuda, "speak_one", {"rtf": 2.85, "peak_gib": 1.74}, "int4pack+offload")
    assert complete(cuda, "speak_one", {"graphs": {"peak_gib": 1.8}}, "int4pack+offload")
    assert complete(args, "speak_one", {"rtf": 2.85}, "int4pack")     # the CPU graphs nothing
    earlier.write_text(json.dumps({**again, "env": {**again["env"], "gpu": "Another GPU"}}))
    other = orchestrate(args)                     # another machine: nothing is kept
    assert "resumed" not in other["build"] and "Another GPU" in other["resume_discarded"]


def _refused(tmp_path: Path, *options: str) -> str:
    """The script's stderr for a dry run with ``options``, asserted refused as a usage
    error: exit 2, no traceback, nothing written."""
    run = subprocess.run([sys.executable, SCRIPT, "--out", str(tmp_path / "o"), "--device",
                          "cpu", "--tiny", *options],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert not (tmp_path / "o").exists()
    return run.stderr


def test_a_resume_file_that_is_not_a_run_is_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert f"--resume {bad}: not an earlier run's JSON" in _refused(tmp_path, "--resume",
                                                                      str(bad))


def test_an_unknown_rerun_is_one_line(tmp_path):
    assert "--rerun: unknown speek; choose from env, gpu_tests" in _refused(
        tmp_path, "--rerun", "gpu_tests,speek")


def test_the_eager_split_adds_up(tiny_voice_design):
    """The speak stage's breakdown of eager speech (run on CUDA only; checked here on the
    tiny model): forwards and the rest share each frame's wall time."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from acceptance_stages import eager_split

    from awq_tts.runtime import load

    split = eager_split(load(tiny_voice_design, device="cpu", dtype=torch.float32), 12)
    assert split["frames"] >= 1 and split["forward_ms_per_frame"] > 0
    assert split["outside_ms_per_frame"] >= 0
    per_frame = 1000 * split["wall_s"] / split["frames"]
    assert split["forward_ms_per_frame"] + split["outside_ms_per_frame"] <= per_frame * 1.01


def test_an_unknown_model_to_speak_is_one_line(tmp_path):
    assert "--models: unknown int4pak; choose from bf16, " in _refused(
        tmp_path, "--models", "bf16,int4pak")


def test_a_failing_graphed_rollout_falls_back_to_the_eager_one():
    """The GPU run's quantize stage still measures the walk if ``--rollout auto`` raises,
    and says why; a rollout that works is run once."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from rollout_speed import with_fallback

    calls = []

    def run(rollout):
        calls.append(rollout)
        if rollout == "auto":
            raise RuntimeError("capture broke")
        return "summary"

    result, error = with_fallback(run)
    assert result == "summary" and calls == ["auto", "dropping"]
    assert error == ("--rollout auto failed (RuntimeError: capture broke); "
                     "rolled out with dropping")
    calls.clear()
    assert with_fallback(lambda rollout: calls.append(rollout) or rollout) == ("auto", None)
    assert calls == ["auto"]


def test_a_second_call_builds_only_for_a_stage_that_runs(tmp_path):
    """A fresh machine has no checkpoints; if every later stage keeps its earlier result
    (a call that reruns only the gpu tests), nothing is built again."""
    import argparse

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from acceptance_resume import all_kept_after

    args = argparse.Namespace(skip=[], models=["bf16"], rerun=[], device="cpu",
                              work=tmp_path / "fresh")
    results = {"env": {"backends": ["int4pack"]}}
    done = {"speak": {"bf16": {"rtf": 1.0}},
            "decode": {"predictor_loop": {"ops_speedup": 1.3}, "fusion": {"x": 1}},
            "quantize": {"wall_s": 30.0, "fit": {"default_s": 98.0}},
            "validate": {"verdict": "PASS"}}
    assert all_kept_after(args, results, done)
    assert not all_kept_after(args, results, {**done, "validate": {"error": "OOM"}})
    assert not all_kept_after(args, results, {**done, "speak": {}})
    args.rerun = ["speak:bf16"]
    assert not all_kept_after(args, results, done)
    args.rerun, args.skip = [], ["speak", "decode", "quantize", "validate"]
    assert not all_kept_after(args, results, done)    # a call for build alone builds
