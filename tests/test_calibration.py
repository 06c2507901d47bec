"""Calibration looks like real decoding: built-in sets, codec positions, determinism,
custom sets with and without audio, and clear errors for bad rows."""

from __future__ import annotations

import json

import pytest
import soundfile
import torch
from click.testing import CliRunner

from awq_tts.calibration import build_calibration, builtin_prompts, load_prompts
from awq_tts.calibration.prompts import LANGUAGES
from awq_tts.cli import main
from awq_tts.errors import UsageError
from awq_tts.runtime import load
from awq_tts.synth import synthetic_reference


def test_builtin_sets():
    calib, held = builtin_prompts("builtin"), builtin_prompts("heldout")
    assert len(calib) == 128
    assert {p.language for p in calib} == set(LANGUAGES)
    assert len(held) >= 32 and {p.language for p in held} == set(LANGUAGES)
    assert not {p.text for p in calib} & {p.text for p in held}
    assert len({p.text for p in calib}) == 128


@pytest.fixture(scope="module")
def base_tts(tiny_base):
    return load(tiny_base, dtype=torch.float32)


def _build(tts, prompts, seed=1729, n=4, max_seq_len=40):
    return build_calibration(tts, prompts, n_samples=n, max_seq_len=max_seq_len, seed=seed,
                             batch_size=4, progress=False)


def test_sequences_hold_codec_steps_and_respect_max_len(base_tts):
    cal = _build(base_tts, builtin_prompts())
    shown = CliRunner().invoke(main, ["calib", "show", "--n-samples", "4"]).output
    assert cal.describe()["prompts_sha256"] in shown.replace("\n", "")  # one prompt-set hash
    hidden = base_tts.model.talker.config.hidden_size
    assert len(cal.sequences) == 4
    for seq, record in zip(cal.sequences, cal.records, strict=True):
        assert seq.shape[1] == hidden and seq.shape[0] <= 40
        assert record["codes"], "a rollout must contribute codec steps"
        assert record["codes_from"] == "rollout"
    embeds, mask = cal.padded()
    assert embeds.shape[:2] == mask.shape and int(mask.sum()) == sum(s.shape[0] for s in
                                                                      cal.sequences)


def test_same_seed_same_sequences_other_seed_differs(base_tts):
    a, b = _build(base_tts, builtin_prompts()), _build(base_tts, builtin_prompts())
    c = _build(base_tts, builtin_prompts(), seed=7)
    assert a.sha256() == b.sha256()
    assert all(torch.equal(x, y) for x, y in zip(a.sequences, b.sequences, strict=True))
    assert c.sha256() != a.sha256()


def _wav(path, seconds=1.0, seed=0):
    wav, sr = synthetic_reference(seconds=seconds, seed=seed)
    soundfile.write(path, wav, sr)
    return str(path)


def test_local_jsonl_with_and_without_audio(base_tts, tmp_path):
    audio = _wav(tmp_path / "speech.wav", seconds=1.2)
    rows = [{"text": "A recorded line.", "language": "english", "audio": audio},
            {"text": "Ein Satz ohne Aufnahme.", "language": "german"}]
    path = tmp_path / "set.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    name, prompts = load_prompts(str(path))
    assert name == str(path) and prompts[0].audio == audio and prompts[1].audio is None
    cal = build_calibration(base_tts, prompts, n_samples=2, max_seq_len=64, batch_size=2,
                            progress=False)
    forced, rolled = cal.records
    assert forced["codes_from"] == "audio" and rolled["codes_from"] == "rollout"
    frames = round(1.2 * 12.5)
    assert abs(len(forced["codes"]) - frames) <= 1
    assert cal.sequences[0].shape[0] > len(forced["codes"]), "prompt prefix + one step a frame"


@pytest.mark.parametrize("content, needle", [
    ('{"language": "english"}\n', "missing required column 'text'"),
    ('{"text": "  ", "language": "english"}\n', "row 0, column 'text' is empty"),
    ('{"text": "ok", "language": "klingon"}\n', "row 0, column 'language'"),
    ('{"text": "ok", "audio": "/no/such.wav"}\n', "row 0, column 'audio' is unreadable"),
    ('{"text": "ok", "ref_audio": "/no/such.wav"}\n', "row 0, column 'ref_audio'"),
])
def test_bad_rows_are_named(tmp_path, content, needle):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(UsageError, match=needle):
        load_prompts(str(path))


def test_csv_and_unknown_source(tmp_path):
    path = tmp_path / "set.csv"
    path.write_text("text,language\nHello there.,english\n")
    assert load_prompts(str(path))[1][0].text == "Hello there."
    with pytest.raises(UsageError, match="neither a local file"):
        load_prompts("no-such-owner/no-such-dataset")


def test_calib_show_cli(tmp_path):
    result = CliRunner().invoke(main, ["calib", "show"])
    assert result.exit_code == 0 and "128 prompts" in result.output
    result = CliRunner().invoke(main, ["calib", "show", "--calib", "heldout"])
    assert result.exit_code == 0 and "sha256" in result.output
