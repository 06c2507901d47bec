"""The studio in a real browser: Debian's chromium, headless, driven by Playwright.

The page is served on a free loopback port over the tiny trained INT4 model (validated, so the
trust panel has a verdict) and its bf16 source. The test uploads a clip, types a two-tag
script, edits one segment in the cut, renders A/B and reads back what a user would hear and
download. Skipped, with the
reason, where Playwright or chromium is missing (``make test`` installs both where it can).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

from awq_tts.synth import synthetic_reference

CHROMIUM = os.environ.get("AWQ_TTS_CHROMIUM") or shutil.which("chromium")
# The flags Debian's chromium needs as root on a machine without a network or a screen.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCRIPT = "[Calm] Hello there. [Excited] Bye now!"
SHOT = Path(os.environ.get("AWQ_TTS_SCREENSHOT", "")) if os.environ.get(
    "AWQ_TTS_SCREENSHOT") else None

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine "
                                "(apt-get install chromium, or set AWQ_TTS_CHROMIUM)")


@pytest.fixture(scope="module")
def studio_url(tiny_trained, tiny_trained_awq, tmp_path_factory):
    """The studio on a free port, over a validated copy of the INT4 model."""
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                        "(pip install -e '.[dev]')")
    from conftest import serve_studio

    from awq_tts.studio.session import StudioSession
    from awq_tts.validate import validate_awq_quality

    root = tmp_path_factory.mktemp("browser")
    quant = root / "awq"
    shutil.copytree(tiny_trained_awq, quant)
    validate_awq_quality(quant, n_prompts=1, max_new_tokens=60, progress=False,
                         memory_probe=False)   # the trust panel needs a verdict, not RAM
    session = StudioSession(quant, tiny_trained, device="cpu", out_dir=root / "renders")
    with serve_studio(session) as url:
        yield url, root


def test_two_tag_script_renders_in_chromium(studio_url, tmp_path):
    from playwright.sync_api import sync_playwright

    url, root = studio_url
    clip = tmp_path / "me.wav"
    soundfile.write(clip, *synthetic_reference(seconds=1.0))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.goto(url)
            page.locator("#ref-audio input[type=file]").set_input_files(str(clip))
            page.wait_for_selector("#ref-audio a[download][href*='me.wav']", timeout=30_000)
            page.fill("#script textarea", SCRIPT)
            cell = page.locator("#segments [data-testid=cell-1-2]")  # row 2, text column
            cell.filter(has_text="Bye now!").wait_for(timeout=30_000)
            cell.dblclick()  # edit one segment in the cut: the render must follow the table
            editor = cell.locator("textarea, input").first    # open before keys reach it
            editor.wait_for(timeout=30_000)
            page.keyboard.press("Control+A")
            page.keyboard.type("See you later!")
            page.keyboard.press("Enter")
            cell.filter(has_text="See you later!", has_not_text="Bye now!").wait_for(
                timeout=30_000)                       # replaced, not appended to
            page.click("#render")
            takes = []
            for player in ("#take-a", "#take-b"):
                link = page.wait_for_selector(f"{player} a[download]", timeout=180_000)
                body = page.request.get(link.get_attribute("href")).body()
                (tmp_path / "take.wav").write_bytes(body)
                takes.append(soundfile.read(tmp_path / "take.wav"))
            figures = page.locator("#figures").inner_text()
            exports = page.locator("#exports").inner_text()
            trust = page.locator("#trust").inner_text()
            table = page.locator("#verdict-table").inner_text()
            plotted = page.locator("#verdict-plot img, #verdict-plot svg").count()
            shot = SHOT or tmp_path / "studio.png"  # AWQ_TTS_SCREENSHOT keeps it
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    for audio, rate in takes:  # two segments of a few frames each, plus the pause
        assert 0.5 < audio.size / rate < 20 and np.abs(audio).max() > 1e-3
    assert "INT4:" in figures and "bf16:" in figures and "RTF" in figures
    wavs = sorted((root / "renders").glob("*.wav"))
    assert len(wavs) == 2 and all(w.with_suffix(".json").is_file() for w in wavs)
    assert all(w.name in exports.replace("\n", "") for w in wavs)
    sidecar = json.loads(wavs[0].with_suffix(".json").read_text())
    assert [(s["tag"], s["text"]) for s in sidecar["segments"]] == [
        ("Calm", "Hello there."), ("Excited", "See you later!")]
    assert "Last validation: PASS" in trust
    assert "kl_mean" in table and "eos_prob_ratio" in table and plotted > 0
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
