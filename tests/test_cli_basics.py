"""CLI basics: make-tiny, synthesize, refusals with exit code 2, AutoAWQ compatibility."""

from __future__ import annotations

import soundfile
from click.testing import CliRunner

from awq_tts.cli import main


def test_autoawq_gemm_imports_through_compat():
    from awq_tts._compat import wqlinear_gemm

    cls = wqlinear_gemm()
    assert cls.__name__ == "WQLinear_GEMM"
    layer = cls(4, 128, 256, 64, False, "cpu")
    assert tuple(layer.qweight.shape) == (256, 8)


def test_make_tiny_refuses_existing_output(tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    result = CliRunner().invoke(main, ["make-tiny", str(out)])
    assert result.exit_code == 2
    assert "already exists" in result.output and "--force" in result.output


def test_synthesize_writes_wav(tiny_base, tmp_path):
    wav = tmp_path / "x.wav"
    result = CliRunner().invoke(
        main, ["synthesize", str(tiny_base), "--text", "Hi.", "--max-new-tokens", "12",
               "-o", str(wav)],
    )
    assert result.exit_code == 0, result.output
    data, sr = soundfile.read(wav)
    assert sr == 24000 and data.size > 0


def test_synthesize_empty_text_is_usage_error(tiny_base, tmp_path):
    result = CliRunner().invoke(
        main, ["synthesize", str(tiny_base), "--text", "", "-o", str(tmp_path / "x.wav")]
    )
    assert result.exit_code == 2
    assert "nothing to speak" in result.output
