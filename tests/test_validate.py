"""validate_awq_quality on a tiny model that really speaks and stops: AWQ passes, AWQ beats
RTN, each planted defect fails the check that should catch it, bad usage exits 2."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch
from click.testing import CliRunner
from conftest import FAST, GREEDY
from safetensors.torch import load_file, save_file

from awq_tts import quantize
from awq_tts.calibration.capture import record_talker
from awq_tts.calibration.prompts import builtin_prompts
from awq_tts.cli import main
from awq_tts.runtime import load
from awq_tts.synth import synthetic_reference
from awq_tts.testing.trained import expected_frames
from awq_tts.validate import Thresholds, validate_awq_quality

QUICK = dict(n_prompts=4, max_new_tokens=100)


def test_trained_bf16_model_stops_at_intended_lengths(tiny_trained):
    tts = load(tiny_trained)
    ref = synthetic_reference(seconds=1.5, seed=7)
    for prompt in builtin_prompts("heldout")[::8]:
        n_text = len(tts.processor(text=prompt.text)["input_ids"][0])
        with record_talker(tts) as record:
            tts.generate_voice_clone(text=prompt.text, language="English", ref_audio=ref,
                                     x_vector_only_mode=True, max_new_tokens=150, **GREEDY)
        assert record.codes[0].shape[0] == expected_frames(n_text), prompt.text


def test_awq_passes_and_records_its_verdict(tiny_trained_awq, tmp_path):
    quant = tmp_path / "awq"
    shutil.copytree(tiny_trained_awq, quant)
    out = tmp_path / "report"
    result = CliRunner().invoke(main, [
        "validate", str(quant), "--n-prompts", "4", "--max-new-tokens", "100",
        "--json", str(out / "r.json"), "--markdown", str(out / "r.md")])
    assert result.exit_code == 0, result.output
    assert "verdict: PASS" in result.output
    report = json.loads((out / "r.json").read_text())
    assert report["verdict"] == "pass" and not report["failed"]
    assert (out / "r.md").read_text().startswith("# AWQ quality report: PASS")
    assert (out / "r.png").read_bytes()[:4] == b"\x89PNG"
    record = json.loads((quant / "noesis_provenance.json").read_text())
    entry = record["validations"][-1]
    assert entry["verdict"] == "pass"
    assert entry["report_sha256"] == hashlib.sha256((out / "r.json").read_bytes()).hexdigest()
    assert CliRunner().invoke(main, ["verify", str(quant)]).exit_code == 0


def test_awq_kl_not_worse_than_rtn(tiny_trained, tiny_trained_awq, tmp_path):
    rtn = tmp_path / "rtn"
    quantize(tiny_trained, rtn, method="rtn", **FAST)
    kl_awq = validate_awq_quality(tiny_trained_awq, **QUICK).metrics["teacher_forced"]["kl_mean"]
    kl_rtn = validate_awq_quality(rtn, **QUICK).metrics["teacher_forced"]["kl_mean"]
    assert kl_awq <= kl_rtn


def _planted(src, dst, damage):
    shutil.copytree(src, dst)
    tensors = load_file(str(dst / "model.safetensors"))
    damage(tensors)
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def _scales_times_4(t):
    for key in [k for k in t if k.startswith("talker.model.layers.0.") and k.endswith(".scales")]:
        t[key] = t[key] * 4


def _scrambled_qweight(t):
    key = "talker.model.layers.1.mlp.down_proj.qweight"
    t[key] = t[key][torch.randperm(t[key].shape[0], generator=torch.Generator().manual_seed(0))]


def _eos_row_damaged(t):
    t["talker.codec_head.weight"][358] = 0


STOP_CHECKS = {"runaway_greedy", "runaway_sampled", "duration_ratio"}


@pytest.mark.parametrize("damage, must_fail, one_of", [
    (_scales_times_4, {"kl_mean", "top1"}, None),
    (_scrambled_qweight, {"kl_mean"}, None),
    (_eos_row_damaged, {"eos_prob_ratio"}, STOP_CHECKS),
], ids=["scales-x4", "scrambled-qweight", "eos-row"])
def test_planted_defects_fail_the_right_check(tiny_trained, tiny_trained_awq, tmp_path, damage,
                                              must_fail, one_of):
    bad = _planted(tiny_trained_awq, tmp_path / "bad", damage)
    report = validate_awq_quality(bad, reference=str(tiny_trained), **QUICK)
    assert not report.passed
    assert must_fail <= set(report.failed), report.failed
    if one_of:
        assert one_of & set(report.failed), f"no stop-behaviour check failed: {report.failed}"


def test_budget_exceeded_fails_memory_check(tiny_trained_awq):
    report = validate_awq_quality(tiny_trained_awq, thresholds=Thresholds(budget_gb=0.001),
                                  **QUICK)
    assert report.failed == ["memory"]


def test_cli_exit_1_names_failed_checks(tiny_trained_awq, tmp_path):
    quant = tmp_path / "q"
    shutil.copytree(tiny_trained_awq, quant)
    result = CliRunner().invoke(main, ["validate", str(quant), "--n-prompts", "2",
                                       "--max-new-tokens", "100", "--budget-gb", "0.001"])
    assert result.exit_code == 1
    assert "FAIL" in result.output and "memory" in result.output


def test_bad_usage_exits_2(tiny_trained_awq, tiny_finetuned, tmp_path):
    runner = CliRunner()
    orphan = tmp_path / "orphan"
    shutil.copytree(tiny_trained_awq, orphan)
    (orphan / "noesis_provenance.json").unlink()
    result = runner.invoke(main, ["validate", str(orphan)])
    assert result.exit_code == 2 and "--reference" in result.output
    result = runner.invoke(main, ["validate", str(tiny_trained_awq), "--reference",
                                  str(tiny_finetuned)])
    assert result.exit_code == 2 and "architectures differ" in result.output
    bad = tmp_path / "prompts.jsonl"
    bad.write_text('{"language": "english"}\n')
    result = runner.invoke(main, ["validate", str(tiny_trained_awq), "--prompts", str(bad)])
    assert result.exit_code == 2 and "text" in result.output
