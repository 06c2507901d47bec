"""The studio's library side: the tag parser's rules, and renders that keep one voice."""

from __future__ import annotations

import json

import numpy as np
import pytest

from awq_tts.errors import UsageError
from awq_tts.runtime import load
from awq_tts.studio import DELIVERIES, Voice, from_rows, parse, render, save, to_rows
from awq_tts.synth import synthetic_reference
from awq_tts.validate.memory import model_bytes


def _cut(script: str) -> list[tuple[str | None, str]]:
    return [(s.tag, s.text) for s in parse(script).segments]


def test_tags_cut_the_script_and_map_to_deliveries():
    script = parse("Hello there. [Whispering] I have a secret.\n[Angry]  Why did you tell?")
    assert [(s.tag, s.text) for s in script.segments] == [
        (None, "Hello there."), ("Whispering", "I have a secret."),
        ("Angry", "Why did you tell?")]
    assert script.segments[1].instruct.startswith("Whisper") and script.segments[1].known
    assert script.segments[0].instruct is None and script.notes == []


def test_brackets_in_ordinary_text_are_not_tags():
    assert _cut("The list [1, 2, 3] and [] stay text.") == [
        (None, "The list [1, 2, 3] and [] stay text.")]
    assert _cut("Version [v2] is out.") == [(None, "Version [v2] is out.")]


def test_tags_do_not_nest():
    assert _cut("[Angry [Loud]] Stop it.") == [(None, "[Angry"), ("Loud", "] Stop it.")]


def test_empty_segments_are_dropped_and_reported():
    script = parse("[Happy] [Sad] Hello. [Calm] ... ")
    assert [(s.tag, s.text) for s in script.segments] == [("Sad", "Hello.")]
    assert script.notes == ["[Happy] has no text and was dropped",
                            "[Calm] has no text and was dropped"]
    assert parse("   ").segments == []


def test_cjk_tags_and_punctuation():
    script = parse("[开心]你好。【悲伤】再见！[Excited]¡Vamos!")
    assert [(s.tag, s.text) for s in script.segments] == [
        ("开心", "你好。"), ("悲伤", "再见！"), ("Excited", "¡Vamos!")]
    assert not script.segments[0].known and script.segments[0].instruct == "开心"
    assert script.segments[2].known


def test_unknown_tags_pass_through_and_are_reported():
    script = parse("[Like a pirate] Ahoy!")
    assert script.segments[0].instruct == "Like a pirate" and not script.segments[0].known
    assert "not a known delivery" in script.notes[0]


def test_edited_rows_round_trip_and_rules():
    script = parse("Intro. [Calm] Hello. [Like a pirate] Ahoy!")
    assert from_rows(to_rows(script)).segments == script.segments
    edited = from_rows([["Calm", "", "Hello."], ["Calm", "Speak slowly.", "Bye."],
                        ["", "", "  "], ["Sad", "Speak sadly, slowly and quietly.", "Oh."]])
    assert [(s.tag, s.instruct, s.known) for s in edited.segments] == [
        ("Calm", DELIVERIES["calm"], True), ("Calm", "Speak slowly.", False),
        ("Sad", DELIVERIES["sad"], True)]
    assert edited.notes == ["row 3 has no text and was dropped"]


def test_voice_design_render_joins_segments_with_pauses(tiny_voice_design, tmp_path):
    tts = load(tiny_voice_design)
    script = parse("[Whispering] Hello there. [Excited] See you soon!")
    done = []
    result = render(tts, script, Voice(description="A deep voice."), pause=0.25,
                    max_new_tokens=12, on_segment=lambda i, n: done.append((i, n)))
    assert done == [(1, 2), (2, 2)]
    spoken = sum(row["seconds"] for row in result.segments)
    assert result.seconds_audio == pytest.approx(spoken + 0.25, abs=1e-3)
    assert np.abs(result.wav).max() > 0
    assert result.segments[0]["instruct"].startswith("A deep voice. Whisper")
    wav = save(result, tmp_path / "renders", str(tiny_voice_design), "int4pack", 0)
    sidecar = json.loads(wav.with_suffix(".json").read_text())
    assert wav.is_file() and sidecar["wav"] == wav.name
    assert [s["tag"] for s in sidecar["segments"]] == ["Whispering", "Excited"]


def test_base_render_builds_the_clone_prompt_once(tiny_base, monkeypatch):
    tts = load(tiny_base)
    calls = []
    original = tts.create_voice_clone_prompt
    monkeypatch.setattr(tts, "create_voice_clone_prompt",
                        lambda **kw: calls.append(1) or original(**kw))
    result = render(tts, parse("[Sad] One. [Happy] Two. Three."),
                    Voice(ref_audio=synthetic_reference(seconds=1.0)), max_new_tokens=8)
    assert len(calls) == 1 and len(result.segments) == 2
    assert all(row["instruct"] is None for row in result.segments)


def test_render_refusals(tiny_base, tiny_custom_voice, tmp_path):
    with pytest.raises(UsageError, match="no text"):
        render(load(tiny_base), parse("[Happy]"), Voice())
    with pytest.raises(UsageError, match="reference clip"):
        render(load(tiny_base), parse("Hello."), Voice())
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio")
    with pytest.raises(UsageError, match="cannot read reference audio .*notes.wav"):
        render(load(tiny_base), parse("Hello."), Voice(ref_audio=str(bad)))
    with pytest.raises(UsageError, match="unknown speaker"):
        render(load(tiny_custom_voice), parse("Hello."), Voice(speaker="nobody"))


@pytest.fixture(scope="module")
def session(tiny_trained, tiny_trained_awq, tmp_path_factory):
    from awq_tts.studio.session import StudioSession

    return StudioSession(tiny_trained_awq, tiny_trained, device="cpu",
                         out_dir=tmp_path_factory.mktemp("renders"))


def test_session_ab_blind_and_trust(session, tiny_trained, tiny_trained_awq, tmp_path):
    from awq_tts.studio.session import StudioSession

    assert session.reference is not None and "both models resident" in session.memory_note
    voice = Voice(ref_audio=synthetic_reference(seconds=1.0))
    steps = []
    takes = session.render("[Calm] Hello there. [Excited] Bye now!", voice, seed=3,
                           max_new_tokens=40, ab=True,
                           on_progress=lambda *step: steps.append(step))
    assert steps == [("INT4", 1, 2), ("INT4", 2, 2), ("bf16", 1, 2), ("bf16", 2, 2)]
    assert [t.label for t in takes] == ["INT4", "bf16"]
    for take in takes:
        assert take.render.seconds_audio > 0.2 and np.abs(take.render.wav).max() > 1e-3
        assert take.wav_path.is_file() and take.wav_path.with_suffix(".json").is_file()
    order, labels = session.blind(takes, seed=3)
    assert sorted(labels) == ["INT4", "bf16"] and session.blind(takes, seed=3)[1] == labels
    trust = session.trust()
    assert trust["method"] == "awq" and trust["provenance_sha256"]
    assert "**Source:**" in session.trust_markdown()
    tight = StudioSession(tiny_trained_awq, tiny_trained, device="cpu",
                          out_dir=tmp_path / "r2", budget_gb=1e-6)
    assert tight.reference is None and "loaded for each A/B render" in tight.memory_note
    assert len(tight.render("Hello.", voice, max_new_tokens=10, ab=True)) == 2
    kept = StudioSession(tiny_trained_awq, tiny_trained, device="cpu", out_dir=tmp_path / "r3",
                         offload_embeddings=True)
    assert kept.reference.awq_host_bytes > 0 and kept.int4.awq_host_bytes > 0
    assert kept._resident(kept.int4) == model_bytes(session.int4)   # on a CPU, RAM all the same
    again = kept.render("[Calm] Hello there. [Excited] Bye now!", voice, seed=3,
                        max_new_tokens=40)
    assert np.array_equal(again[0].render.wav, takes[0].render.wav)


TABLE = {"headers": ["tag", "instruction", "text"], "data": []}


def test_page_renders_over_http(session, tmp_path):
    """The Gradio page served on a loopback port, driven through its HTTP API."""
    import soundfile
    from conftest import serve_studio
    from gradio_client import Client, handle_file

    with serve_studio(session) as url:
        clip = tmp_path / "me.wav"
        wav, sr = synthetic_reference(seconds=1.0)
        soundfile.write(clip, wav, sr)
        client = Client(url, verbose=False)
        a, b, figures, files = client.predict(
            "[Calm] Hello there. [Excited] Bye now!", TABLE, handle_file(str(clip)), "", None,
            "", 3, 0.3, True, False, api_name="/render")[:4]  # (the states are not sent)
        assert "INT4" in figures and "bf16" in figures
        for path in (a, b):
            audio, rate = soundfile.read(path)
            assert audio.size / rate > 0.2 and np.abs(audio).max() > 1e-3
        assert len(files) == 4
        with pytest.raises(Exception, match="give a reference clip"):  # one line, no trace
            client.predict("Hello.", TABLE, None, "", None, "", 0, 0.3, False, False,
                           api_name="/render")
