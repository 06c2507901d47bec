"""The tampering battery: each planted defect makes ``validate`` exit 1 and name the check that
caught it, from the tensors alone (weights audit, untouched tensors), in seconds."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import FAST

from awq_tts import quantize
from awq_tts.cli import main
from awq_tts.testing.tamper import DEFECTS, planted
from awq_tts.validate.audit import BLOCK_FACTOR, FOLD_SPREAD, LINEAR_FACTOR, weights_audit

CAUGHT_BY = {"qzeros-swap": "weights_audit", "column-scale-x1.5": "weights_audit",
             "fold-undone": "weights_audit", "code-predictor-ulp": "untouched_identical",
             "scales-x4": "weights_audit", "scrambled-qweight": "weights_audit",
             "eos-row": "untouched_identical"}


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_tampering_battery(tiny_trained, tiny_trained_awq, tmp_path, defect):
    check = CAUGHT_BY[defect]
    bad = planted(tiny_trained_awq, tmp_path / "bad", DEFECTS[defect], source=tiny_trained)
    result = CliRunner().invoke(main, ["validate", str(bad), "--reference", str(tiny_trained),
                                       "--n-prompts", "2", "--max-new-tokens", "60"])
    assert result.exit_code == 1, result.output
    assert f"failed: {check}" in result.output or f", {check}" in result.output, result.output
    assert "Traceback" not in result.output


def test_clean_outputs_audit_well_inside_the_bounds(tiny_trained, tiny_trained_awq, tiny_base,
                                                    tiny_base_awq):
    for source, quant in ((tiny_trained, tiny_trained_awq), (tiny_base, tiny_base_awq)):
        result = weights_audit(quant, source)
        assert not result.problems, result.problems
        assert max(v[0] for v in result.ratios.values()) < LINEAR_FACTOR / 1.2
        assert max(v[1] for v in result.ratios.values()) < BLOCK_FACTOR / 2
        assert max(result.fold.values()) < FOLD_SPREAD / 1.5


def test_config_that_disagrees_with_tensors_is_a_named_failure(tiny_trained, tmp_path):
    out = tmp_path / "g64"
    quantize(tiny_trained, out, group_size=64, method="rtn", **FAST)
    config = json.loads((out / "config.json").read_text())
    config["quantization_config"]["group_size"] = 128
    (out / "config.json").write_text(json.dumps(config))
    result = CliRunner().invoke(main, ["validate", str(out), "--n-prompts", "1"])
    assert result.exit_code == 1, result.output
    assert "weights_audit" in result.output and "Traceback" not in result.output
    report = json.loads((out / "noesis_provenance.json").read_text())["validations"][-1]
    assert report["checks"]["weights_audit"] == "fail"
