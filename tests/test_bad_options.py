"""Options that do not fit the model, the file or the range: one line naming the option
and the fix, exit 2, nothing written, and where the check can come first, no model loaded."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch
from click.testing import CliRunner
from conftest import refused

from awq_tts.cli import main
from awq_tts.errors import UsageError


@pytest.mark.parametrize("model, extra, needle", [
    ("tiny_base", ["--speaker", "aiden"], "--speaker does not apply to a Base model"),
    ("tiny_base", ["--instruct", "calm"], "--instruct does not apply to a Base model"),
    ("tiny_base", ["--ref-text", "Hello."], "--ref-text is the transcript of --ref-audio"),
    ("tiny_custom_voice", ["--ref-audio", "REF"], "--ref-audio does not apply to a CustomVoice"),
    ("tiny_custom_voice", ["--speaker", "nobody"], "unknown speaker 'nobody'; this model has: "),
    ("tiny_voice_design", ["--speaker", "aiden"], "--speaker does not apply to a VoiceDesign"),
], ids=["base-speaker", "base-instruct", "base-ref-text", "custom-ref-audio",
        "custom-unknown-speaker", "design-speaker"])
def test_a_voice_option_the_model_would_ignore_isrefused(request, tmp_path, model, extra,
                                                          needle):
    ref = tmp_path / "ref.wav"
    soundfile.write(ref, np.full(4800, 0.1, np.float32), 24000)
    extra = [str(ref) if a == "REF" else a for a in extra]
    out = tmp_path / "o.wav"
    refused(CliRunner().invoke(main, ["synthesize", str(request.getfixturevalue(model)),
                                       "--text", "Hi.", *extra, "-o", str(out)]), needle)
    assert not out.exists()


def test_an_audio_name_that_is_not_wav_or_flac_is_refused_before_loading(tiny_base, tmp_path,
                                                                        monkeypatch):
    import awq_tts.runtime

    monkeypatch.setattr(awq_tts.runtime, "load", lambda *a, **k: pytest.fail("loaded"))
    refused(CliRunner().invoke(main, ["synthesize", str(tiny_base), "--text", "Hi.", "-o",
                                       str(tmp_path / "o.mp3")]),
             "cannot write o.mp3: awq-tts writes .wav or .flac audio")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("args, needle", [
    (["validate", "{src}"], "{src} is not an INT4 checkpoint (no quantization_config, no "
                            "noesis_provenance.json)"),
    (["validate", "{int4}", "--reference", "{int4}"], "reference {int4} is itself quantized"),
    (["validate", "{int4}", "--prompts", "held-out.txt"],
     "--prompts held-out.txt: no such file or folder"),
    (["quantize", "{src}", "-o", "{out}", "--calib", "./mine/set.jsonl"],
     "--calib ./mine/set.jsonl: no such file or folder"),
    (["validate", "{int4}", "--plot", "{out}.jpg"], "the plot is a PNG image; name it .png"),
    (["validate", "{int4}", "--top1", "1.5"], "'--top1': 1.5 is not in the range 0<=x<=1"),
    (["validate", "{int4}", "--budget-gb", "0"], "'--budget-gb': 0.0 is not in the range x>0"),
    (["validate", "{int4}", "--kl-mean", "-1"], "'--kl-mean': -1.0 is not in the range x>=0"),
], ids=["bf16-as-int4", "int4-as-reference", "missing-prompt-file", "missing-calib-file",
        "plot-not-png", "share-above-1", "zero-budget", "negative-bound"])
def test_validate_and_quantize_name_the_wrong_folder_file_or_bound(tiny_base, tiny_base_awq,
                                                                   tmp_path, args, needle):
    names = {"src": tiny_base, "int4": tiny_base_awq, "out": tmp_path / "out"}
    refused(CliRunner().invoke(main, [a.format(**names) for a in args]),
             needle.format(**names))
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("args", [
    ["synthesize", "MODEL", "--text", "Hi.", "--seed", "-5", "-o", "x.wav"],
    ["validate", "MODEL", "--seed", "-1"],
    ["quantize", "MODEL", "-o", "q", "--seed", str(2**32)],
    ["make-tiny", "t", "--seed", "-1"],
])
def test_a_seed_numpy_cannot_take_isrefused(tiny_base_awq, args):
    args = [str(tiny_base_awq) if a == "MODEL" else a for a in args]
    refused(CliRunner().invoke(main, args), "Invalid value for '--seed'")


def test_studio_refuses_a_busy_port_an_int4_reference_and_a_bad_port(tiny_base_awq,
                                                                     monkeypatch):
    import socket

    import awq_tts.studio.session

    monkeypatch.setattr(awq_tts.studio.session, "load", lambda *a, **k: pytest.fail("loaded"))
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = str(busy.getsockname()[1])
        refused(CliRunner().invoke(main, ["studio", str(tiny_base_awq), "--port", port]),
                 f"cannot serve on 127.0.0.1:{port} (Address already in use); pass another "
                 f"--port")
    refused(CliRunner().invoke(main, ["studio", str(tiny_base_awq), "--port", "0"]),
             "'--port': 0 is not in the range 1<=x<=65535")
    refused(CliRunner().invoke(main, ["studio", str(tiny_base_awq), "--reference",
                                       str(tiny_base_awq), "--port", port]),
             "is itself quantized; A/B renders compare against the bf16 source")


def test_calib_show_refuses_more_samples_than_the_set_has():
    refused(CliRunner().invoke(main, ["calib", "show", "--n-samples", "500"]),
             "the calibration set 'builtin' has 128 prompts; --n-samples asks for 500")


@pytest.mark.parametrize("dtype, expected", [
    ("bf16", torch.bfloat16), ("Float32", torch.float32), (torch.float16, torch.float16),
])
def test_load_takes_a_dtype_or_its_name_and_names_the_ones_it_can(dtype, expected):
    from awq_tts.runtime.load import resolve_dtype

    assert resolve_dtype(dtype) is expected
    with pytest.raises(UsageError, match=r"dtype torch.int8: load in torch.bfloat16, "
                                         r"torch.float16 or torch.float32 \(or their names\)"):
        resolve_dtype(torch.int8)


def test_verify_refuses_an_expected_hash_that_is_no_sha256(tiny_base_awq):
    refused(CliRunner().invoke(main, ["verify", str(tiny_base_awq), "--expect", "abc"]),
            "--expect 'abc' is not a sha256 (64 hex digits)")


@pytest.mark.parametrize("args, needle", [
    (["--text", "Hi.", "--text-file", "{readme}", "-o", "{out}/o.wav"],
     "pass --text or --text-file, not both"),
    (["--text", "Hi.", "-o", "{out}"], "is a folder; give a file name ending in .wav or .flac"),
], ids=["text-twice", "output-is-a-folder"])
def test_synthesize_names_a_doubled_text_or_a_folder_as_output(tiny_base, tmp_path, args,
                                                               needle):
    readme = tmp_path / "text.txt"
    readme.write_text("A whole file that would be spoken instead.", encoding="utf-8")
    names = {"readme": readme, "out": tmp_path}
    refused(CliRunner().invoke(main, ["synthesize", str(tiny_base),
                                      *[a.format(**names) for a in args]]), needle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["text.txt"]


def test_an_unknown_reference_device_is_named(tiny_trained_awq):
    refused(CliRunner().invoke(main, ["validate", str(tiny_trained_awq), "--reference-device",
                                       "tpu"]), "--reference-device: unknown device 'tpu'")
