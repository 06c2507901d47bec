"""CLI basics: make-tiny, synthesize, refusals with exit code 2, AutoAWQ compatibility."""

from __future__ import annotations

import pytest
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


@pytest.mark.parametrize("suffix, container", [(".wav", "WAV"), (".FLAC", "FLAC")])
def test_synthesize_writes_the_container_its_name_says(tiny_base, tmp_path, suffix, container):
    out = tmp_path / f"x{suffix}"
    result = CliRunner().invoke(
        main, ["synthesize", str(tiny_base), "--text", "Hi.", "--max-new-tokens", "12",
               "-o", str(out)],
    )
    assert result.exit_code == 0, result.output
    info = soundfile.info(out)
    assert (info.format, info.subtype, info.samplerate) == (container, "PCM_16", 24000)
    assert info.frames > 0


def test_synthesize_empty_text_is_usage_error(tiny_base, tmp_path):
    result = CliRunner().invoke(
        main, ["synthesize", str(tiny_base), "--text", "", "-o", str(tmp_path / "x.wav")]
    )
    assert result.exit_code == 2
    assert "nothing to speak" in result.output
