"""The tampering battery: each planted defect makes ``validate`` exit 1 and name the check that
caught it, from the tensors alone (weights audit, untouched tensors), in seconds."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner
from conftest import FAST
from safetensors.torch import load_file, save_file

from awq_tts import quantize
from awq_tts.cli import main
from awq_tts.validate.audit import BLOCK_FACTOR, FOLD_SPREAD, LINEAR_FACTOR, weights_audit


def planted(src, dst, damage):
    """A copy of checkpoint ``src`` whose tensors ``damage`` edited in place."""
    shutil.copytree(src, dst)
    tensors = load_file(str(dst / "model.safetensors"))
    damage(tensors)
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def _swap_zero_groups(t, source):
    """Swap the two groups of one linear whose packed zero points differ the most."""
    best = None
    for key in (k for k in t if k.endswith(".qzeros")):
        z = t[key]
        for a in range(z.shape[0]):
            for b in range(a + 1, z.shape[0]):
                n = int((z[a] != z[b]).sum())
                if best is None or n > best[0]:
                    best = (n, key, a, b)
    _, key, a, b = best
    z = t[key].clone()
    z[[a, b]] = z[[b, a]]
    t[key] = z


def _column_scale(t, source):
    key = "talker.model.layers.1.mlp.gate_proj.scales"
    t[key] = t[key].clone()
    t[key][:, 5] *= 1.5


def _fold_undone(t, source):
    """Restore the folded norm whose AWQ scale is farthest from 1 to its source value."""
    norms = [k for k in t if k.endswith("layernorm.weight") and ".layers." in k]
    key = max(norms, key=lambda k: float((source[k].float() / t[k].float() - 1).abs().max()))
    assert not torch.equal(t[key], source[key]), "AWQ folded nothing: no defect to plant"
    t[key] = source[key].clone()


def _code_predictor_ulp(t, source):
    key = "talker.code_predictor.model.layers.0.mlp.down_proj.weight"
    bits = t[key].clone().view(torch.int16)
    bits.view(-1)[0] += 1
    t[key] = bits.view(t[key].dtype)


def _scales_times_4(t, source):
    for key in [k for k in t if k.startswith("talker.model.layers.0.") and k.endswith(".scales")]:
        t[key] = t[key] * 4


def _scrambled_qweight(t, source):
    key = "talker.model.layers.1.mlp.down_proj.qweight"
    t[key] = t[key][torch.randperm(t[key].shape[0], generator=torch.Generator().manual_seed(0))]


def _eos_row(t, source):
    t["talker.codec_head.weight"][358] = 0


@pytest.mark.parametrize("damage, check", [
    (_swap_zero_groups, "weights_audit"),
    (_column_scale, "weights_audit"),
    (_fold_undone, "weights_audit"),
    (_code_predictor_ulp, "untouched_identical"),
    (_scales_times_4, "weights_audit"),
    (_scrambled_qweight, "weights_audit"),
    (_eos_row, "untouched_identical"),
], ids=["qzeros-swap", "column-scale-x1.5", "fold-undone", "code-predictor-ulp", "scales-x4",
        "scrambled-qweight", "eos-row"])
def test_tampering_battery(tiny_trained, tiny_trained_awq, tmp_path, damage, check):
    source = load_file(str(tiny_trained / "model.safetensors"))
    bad = planted(tiny_trained_awq, tmp_path / "bad", lambda t: damage(t, source))
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
