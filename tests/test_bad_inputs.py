"""A user's mistakes end in one line naming the input and the fix, exit 2, nothing written.

One table per command family; each row builds its bad input in a fresh folder."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner
from conftest import refused

from awq_tts.cli import main


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _truncate(folder):
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


def _random_bytes(folder):
    (folder / "model.safetensors").write_bytes(np.random.default_rng(0).bytes(4096))


def _config_list(folder):
    (folder / "config.json").write_text("[1, 2]")


def _bad_index(folder):
    (folder / "model.safetensors.index.json").write_text("{not json")


def _index_without_map(folder):
    (folder / "model.safetensors.index.json").write_text('{"metadata": {}}')


def _only_pickle(folder):
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")


def _empty_codec(folder):
    shutil.rmtree(folder / "speech_tokenizer")
    (folder / "speech_tokenizer").mkdir()


def _plain_llm(folder):
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = "qwen3"
    (folder / "config.json").write_text(json.dumps(cfg))


CHECKPOINT_DAMAGE = [
    (_truncate, "not a readable safetensors file"),
    (_random_bytes, "not a readable safetensors file"),
    (_config_list, "holds a JSON list"),
    (_bad_index, "is not valid JSON"),
    (_index_without_map, "no valid weight_map"),
    (_only_pickle, "safetensors only"),
    (_plain_llm, "model_type 'qwen3' is not supported; awq-tts knows qwen3_tts"),
]


@pytest.mark.parametrize("damage, needle", CHECKPOINT_DAMAGE,
                         ids=[d.__name__.strip("_") for d, _ in CHECKPOINT_DAMAGE])
@pytest.mark.parametrize("command", ["quantize", "synthesize"])
def test_damaged_checkpoint(tiny_base, tmp_path, damage, needle, command):
    src = _copy(tiny_base, tmp_path / "src")
    damage(src)
    out = tmp_path / ("out" if command == "quantize" else "out.wav")
    args = {"quantize": ["quantize", str(src), "-o", str(out), "--n-samples", "2"],
            "synthesize": ["synthesize", str(src), "--text", "Hi.", "-o", str(out)]}[command]
    refused(CliRunner().invoke(main, args), needle)
    assert not out.exists()


def test_empty_speech_tokenizer_gets_consistent_advice(tiny_base, tmp_path):
    src = _copy(tiny_base, tmp_path / "src")
    _empty_codec(src)
    refused(CliRunner().invoke(main, ["synthesize", str(src), "--text", "Hi.", "-o",
                                       str(tmp_path / "x.wav")]), "awq-tts repair")
    result = CliRunner().invoke(main, ["repair", str(src), "--speech-tokenizer-from",
                                       str(tiny_base)])
    assert result.exit_code == 0 and "added" in result.output, result.output
    assert (src / "speech_tokenizer" / "config.json").is_file()


@pytest.mark.parametrize("extra, needle", [
    (["--group-size", "0"], "--group-size 0"),
    (["--group-size", "-128"], "--group-size -128"),
    (["--group-size", "96"], "--group-size 96"),
    (["--batch-size", "0"], "--batch-size 0"),
    (["--loss-tokens", "-5"], "--loss-tokens -5: give a whole number of at least 1"),
    (["--device", "bogus"], "unknown device 'bogus'"),
    (["--max-seq-len", "4"], "--max-seq-len 4: give a whole number of at least 8"),
    (["--revision", "main"], "--revision main picks a hub revision, and "),
])
def test_bad_quantize_options(tiny_base, tmp_path, extra, needle):
    out = tmp_path / "out"
    refused(CliRunner().invoke(main, ["quantize", str(tiny_base), "-o", str(out), *extra]),
             needle)
    assert not out.exists()


def test_already_quantized_source(tiny_base_awq, tmp_path):
    refused(CliRunner().invoke(main, ["quantize", str(tiny_base_awq), "-o",
                                       str(tmp_path / "out")]), "already quantized")


def _bad_wavs(tmp_path):
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, dtype=np.float32), 24000)
    whole = tmp_path / "whole.wav"
    soundfile.write(whole, np.zeros(2400, dtype=np.float32), 24000)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[:20])
    noise = tmp_path / "noise.wav"
    noise.write_bytes(np.random.default_rng(1).bytes(3000))
    return {"empty": (empty, "no samples"), "truncated header": (cut, "cannot read"),
            "random bytes": (noise, "cannot read")}


@pytest.mark.parametrize("which", ["empty", "truncated header", "random bytes"])
def test_bad_reference_audio_is_refused_before_loading(tiny_base, tmp_path, which,
                                                       monkeypatch):
    import awq_tts.runtime

    def no_load(*_a, **_k):
        raise AssertionError("the model was loaded before the audio was checked")

    monkeypatch.setattr(awq_tts.runtime, "load", no_load)
    wav, needle = _bad_wavs(tmp_path)[which]
    refused(CliRunner().invoke(main, ["synthesize", str(tiny_base), "--text", "Hi.",
                                       "--ref-audio", str(wav), "-o", str(tmp_path / "o.wav")]),
             needle)
    out = tmp_path / "q"
    refused(CliRunner().invoke(main, ["quantize", str(tiny_base), "-o", str(out),
                                       "--ref-audio", str(wav)]), needle)


def test_text_and_calibration_files_must_be_utf8(tiny_base, tmp_path):
    latin = tmp_path / "t.txt"
    latin.write_bytes("Caf\xe9 cr\xe8me.".encode("latin-1"))
    refused(CliRunner().invoke(main, ["synthesize", str(tiny_base), "--text-file", str(latin),
                                       "-o", str(tmp_path / "o.wav")]), "not UTF-8")
    calib = tmp_path / "c.jsonl"
    calib.write_bytes('{"text": "Caf\xe9"}\n'.encode("latin-1"))
    refused(CliRunner().invoke(main, ["calib", "show", "--calib", str(calib)]), "not UTF-8")


@pytest.mark.parametrize("content, needle", [
    ('{"text": 123}\n', "must be a string, not int"),
    ("", "holds no prompts"),
])
def test_calibration_rows(tmp_path, content, needle):
    calib = tmp_path / "c.jsonl"
    calib.write_text(content)
    refused(CliRunner().invoke(main, ["calib", "show", "--calib", str(calib)]), needle)


@pytest.mark.parametrize("args", [
    ["calib", "show", "--n-samples", "-1"],
    ["synthesize", "MODEL", "--text", "Hi.", "--max-new-tokens", "0", "-o", "x.wav"],
    ["validate", "MODEL", "--max-new-tokens", "0"],
])
def test_counts_must_be_positive(tiny_base_awq, args):
    args = [str(tiny_base_awq) if a == "MODEL" else a for a in args]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output


@pytest.mark.parametrize("content, needle", [
    ("{broken", "not valid JSON"),
    ("[]", "holds a JSON list"),
    ("{}", "'output_files' is missing"),
    ('{"output_files": {"a": 1}}', "'output_files' is missing or not a map"),
])
@pytest.mark.parametrize("command", ["verify", "inspect", "validate"])
def test_damaged_provenance(tiny_base_awq, tmp_path, content, needle, command):
    folder = _copy(tiny_base_awq, tmp_path / "q")
    (folder / "noesis_provenance.json").write_text(content)
    refused(CliRunner().invoke(main, [command, str(folder)]), "damaged", needle)


def test_inspect_names_a_missing_field(tiny_base_awq, tmp_path):
    folder = _copy(tiny_base_awq, tmp_path / "q")
    record = json.loads((folder / "noesis_provenance.json").read_text())
    del record["calibration"]
    (folder / "noesis_provenance.json").write_text(json.dumps(record))
    refused(CliRunner().invoke(main, ["inspect", str(folder)]), "'calibration'")


def test_repair_with_a_broken_base_codec_config(tiny_base, tmp_path):
    base = _copy(tiny_base, tmp_path / "base")
    (base / "speech_tokenizer" / "config.json").write_text("{oops")
    ckpt = _copy(tiny_base, tmp_path / "ckpt")
    shutil.rmtree(ckpt / "speech_tokenizer")
    refused(CliRunner().invoke(main, ["repair", str(ckpt), "--speech-tokenizer-from",
                                       str(base)]), "not valid JSON")
