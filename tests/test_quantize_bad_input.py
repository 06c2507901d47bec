"""Every bad input is refused with a one-line message, exit code 2, and nothing written."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from awq_tts.cli import main


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _run(src, out, *extra):
    result = CliRunner().invoke(
        main, ["quantize", str(src), "-o", str(out), "--n-samples", "2", "--max-seq-len", "16",
               *extra]
    )
    return result


def _assert_refused(result, out, *needles):
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.output
    for needle in needles:
        assert needle in lines[0]
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}.*")), "no partial folder may remain"


def test_not_qwen3_tts(tiny_base, tmp_path):
    src = _copy(tiny_base, tmp_path / "src")
    cfg = json.loads((src / "config.json").read_text())
    cfg["model_type"] = "llama"
    (src / "config.json").write_text(json.dumps(cfg))
    _assert_refused(_run(src, tmp_path / "out"), tmp_path / "out", "'llama'", "qwen3_tts")


def test_not_a_checkpoint_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    _assert_refused(_run(tmp_path / "empty", tmp_path / "out"), tmp_path / "out",
                    "no config.json")


@pytest.mark.parametrize(
    "remove, needle",
    [("model.safetensors", "no model.safetensors"),
     ("tokenizer_config.json", "tokenizer files"),
     ("speech_tokenizer", "awq-tts repair")],
)
def test_missing_files(tiny_base, tmp_path, remove, needle):
    src = _copy(tiny_base, tmp_path / "src")
    target = src / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    _assert_refused(_run(src, tmp_path / "out"), tmp_path / "out", needle)


def test_group_size_must_divide(tiny_base, tmp_path):
    src = _copy(tiny_base, tmp_path / "src")
    cfg = json.loads((src / "config.json").read_text())
    cfg["talker_config"]["hidden_size"] = 200
    (src / "config.json").write_text(json.dumps(cfg))
    _assert_refused(_run(src, tmp_path / "out"), tmp_path / "out",
                    "hidden_size 200 is not divisible by --group-size 128")


def test_nan_weights(tiny_base, tmp_path):
    src = _copy(tiny_base, tmp_path / "src")
    tensors = load_file(str(src / "model.safetensors"))
    key = "talker.model.layers.0.mlp.up_proj.weight"
    tensors[key][0, 0] = torch.nan
    save_file(tensors, str(src / "model.safetensors"), metadata={"format": "pt"})
    _assert_refused(_run(src, tmp_path / "out"), tmp_path / "out", key, "NaN")


def test_existing_output(tiny_base, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    result = _run(tiny_base, out)
    assert result.exit_code == 2 and "--force" in result.output
    assert not any(out.iterdir())


def test_interrupted_run_leaves_nothing(tiny_base, tmp_path, monkeypatch):
    from awq_tts.format import checkpoint

    def boom(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "write_weights", boom)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        from awq_tts import quantize

        quantize(tiny_base, out, n_samples=2, max_seq_len=16, progress=False)
    assert not out.exists()
    assert not list(tmp_path.glob(".out.*"))
