"""Session fixtures: each tiny checkpoint variant is built once per test session."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from awq_tts.models.qwen3_tts.package import qwen_tts
from awq_tts.runtime.backends import get_backend
from awq_tts.testing import make_tiny_checkpoint
from awq_tts.testing.configs import TINY

#: Two cores: under ``pytest -n 2`` (``make test``) each worker takes one, and so does every
#: process a test starts (the GPU script's dry run, the memory probe, CLI subprocesses):
#: a second thread there would only contend with the other worker for the same two cores.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
#: No machine here reaches a model hub: fail hub lookups at once instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

#: The INT4 kernel ``auto`` picks on this CPU: the project's AVX2 kernel wherever it builds
#: (built once per machine, about a second), else torch's.
CPU_BACKEND = get_backend("auto", "cpu").name

#: Greedy decoding needs both switches (the sub-talker samples on its own otherwise).
GREEDY = dict(do_sample=False, subtalker_dosample=False)
#: A small calibration run: enough for real statistics, seconds on two CPU cores.
FAST = dict(n_samples=8, max_seq_len=48, progress=False)
#: Training steps of the session's trained tiny model (the demo trains 200).
TRAINED_STEPS = 80


@contextlib.contextmanager
def serve_studio(session) -> Iterator[str]:
    """The studio page of ``session`` on a free loopback port; yields its URL."""
    from awq_tts.studio.app import build_app

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = build_app(session)
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
               quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()


def pytest_collection_modifyitems(config, items):
    _trained_builds_while_the_other_worker_works(items)
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


#: Files needing the trained model that took 25 s or more on one worker under ``make test``,
#: longest first (63, 77, 30, 25, 25, 25 s): the run starts them in this order before the
#: short ones, so it does not end on one of them.
LONG_TRAINED_FILES = ("test_quantize_engine.py", "test_validate.py", "test_studio_browser.py",
                      "test_ckpt.py", "test_studio.py", "test_output_safety.py")


def _trained_builds_while_the_other_worker_works(items) -> None:
    """Files in this order: the first that needs the trained model, then every file that
    does not, then the long files that do, then the rest. Under ``make test`` (``-n 2
    --dist loadfile --no-loadscope-reorder``) one worker then builds the model (about 70 s
    on its one thread) while the other runs the files that do not need it, instead of
    waiting on the build's lock (42 s in alphabetical order), and the two workers end
    within a short file of each other. A stable sort by file: each file's tests stay
    together and in their order."""
    needs: dict[str, bool] = {}
    for item in items:
        path = str(item.path)
        needs[path] = needs.get(path, False) or "tiny_trained" in getattr(item, "fixturenames",
                                                                          ())
    first = next((path for path, trained in needs.items() if trained), None)

    def rank(path: str) -> tuple[int, int]:
        name = Path(path).name
        if not needs[path]:
            return 1, 0
        if path == first:
            return 0, 0
        return (2, LONG_TRAINED_FILES.index(name)) if name in LONG_TRAINED_FILES else (3, 0)

    ranks = {path: rank(path) for path in needs}
    items.sort(key=lambda item: ranks[str(item.path)])


def _build(factory, variant: str) -> Path:
    return make_tiny_checkpoint(factory.mktemp(variant) / "ckpt", variant=variant, seed=0)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    return _build(tmp_path_factory, "base")


@pytest.fixture(scope="session")
def tiny_custom_voice(tmp_path_factory) -> Path:
    return _build(tmp_path_factory, "custom_voice")


@pytest.fixture(scope="session")
def tiny_voice_design(tmp_path_factory) -> Path:
    return _build(tmp_path_factory, "voice_design")


@pytest.fixture(scope="session")
def tiny_finetuned(tmp_path_factory) -> Path:
    return _build(tmp_path_factory, "finetuned")


@pytest.fixture(scope="session")
def qwen():
    return qwen_tts()


@pytest.fixture(scope="session")
def ref_clip() -> tuple[np.ndarray, int]:
    from awq_tts.synth import synthetic_reference

    return synthetic_reference(seconds=1.0)


def _quantized(factory, source: Path, name: str) -> Path:
    from awq_tts import quantize

    out = factory.mktemp("awq") / name
    quantize(source, out, **FAST)
    return out


@pytest.fixture(scope="session")
def tiny_base_awq(tiny_base, tmp_path_factory) -> Path:
    return _quantized(tmp_path_factory, tiny_base, "tiny-base-awq")


@pytest.fixture(scope="session")
def tiny_custom_voice_awq(tiny_custom_voice, tmp_path_factory) -> Path:
    return _quantized(tmp_path_factory, tiny_custom_voice, "tiny-cv-awq")


@pytest.fixture(scope="session")
def tiny_voice_design_awq(tiny_voice_design, tmp_path_factory) -> Path:
    return _quantized(tmp_path_factory, tiny_voice_design, "tiny-vd-awq")


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory) -> Path:
    """The tiny Base model trained to speak and stop, built once for the whole run.

    80 steps instead of the demo's 200 halve the build and it still stops where it should:
    the stop tests assert that on this very fixture. Under ``pytest -n 2`` the workers
    share one build (a file lock). The builder trains on its own one thread: with a second
    one it contends with the other worker (the first test to need it waited 102 s, not 76 s).
    """
    from filelock import FileLock

    from awq_tts.testing.trained import make_trained_checkpoint

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the directory every worker's base temp lives in
    path = root / "shared-trained"
    with FileLock(str(root / "shared-trained.lock")):
        if not (path / "config.json").is_file():
            make_trained_checkpoint(path, seed=0, steps=TRAINED_STEPS, force=True)
    return path


@pytest.fixture(scope="session")
def tiny_trained_awq(tiny_trained, tmp_path_factory) -> Path:
    return _quantized(tmp_path_factory, tiny_trained, "tiny-trained-awq")


def qwen3_llm(path, hidden=TINY.hidden, layers=TINY.layers, seed=0):
    """A tiny Qwen3 LLM whose FFN matches the tiny talker's (for blend)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    config = Qwen3Config(vocab_size=512, hidden_size=hidden, intermediate_size=TINY.intermediate,
                         num_hidden_layers=layers, num_attention_heads=TINY.heads,
                         num_key_value_heads=TINY.kv_heads, head_dim=TINY.head_dim,
                         tie_word_embeddings=True)
    model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory):
    return qwen3_llm(tmp_path_factory.mktemp("llm") / "qwen3")


def refused(result, *needles) -> None:
    """A CLI run ended as a user's mistake should: exit 2, one error line holding every
    needle, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith(("error:", "Error:"))]
    assert len(errors) == 1, result.output
    for needle in needles:
        assert needle in result.output, result.output
