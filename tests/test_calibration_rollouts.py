"""Calibration rollouts on a static cache (``rollout="static"``, the eager twin of the CUDA
graphs a GPU quantize rolls out with) against the CPU's dropping loop."""

from __future__ import annotations

import pytest
import torch

from awq_tts.calibration import build_calibration, builtin_prompts
from awq_tts.errors import UsageError
from awq_tts.report import _rollout_line


def _graph_attrs(tts) -> dict:
    from awq_tts.models.qwen3_tts import graphs, talker_graphs

    talker = tts.model.talker
    return {"talker": talker.__dict__.get(talker_graphs.ATTR),
            "predictor": graphs.of(talker.code_predictor)}


def test_static_rollouts_speak_what_the_dropping_loop_speaks(tiny_trained):
    """Greedy, the static-cache rollout keeps stopped rows to the batch's end but records
    the same codes and the same talker inputs for every sample, and leaves the model as it
    was."""
    from awq_tts.runtime import load

    tts = load(tiny_trained, dtype=torch.float32)
    before = _graph_attrs(tts)
    common = dict(n_samples=3, max_seq_len=200, progress=False, greedy=True, batch_size=3)
    dropping = build_calibration(tts, builtin_prompts()[:3], **common)
    static = build_calibration(tts, builtin_prompts()[:3], rollout="static", **common)

    assert [r["codes"] for r in static.records] == [r["codes"] for r in dropping.records]
    assert static.sha256() == dropping.sha256()
    for a, b in zip(static.sequences, dropping.sequences, strict=True):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-5)
    frames = [len(r["codes"]) for r in static.records]
    assert len(set(frames)) > 1, "the prompts stop at different frames"
    work = static.rollout
    assert work["decode"] == "static" and dropping.rollout["decode"] == "dropping"
    assert work["batch_row_steps"] == 3 * max(frames)
    assert work["stopped_row_steps"] == sum(max(frames) - f for f in frames) > 0
    assert _graph_attrs(tts) == before
    assert _rollout_line(static.describe()).startswith(
        f"static rollouts: {sum(frames) + work['stopped_row_steps']} talker row-steps")


def test_an_unknown_rollout_is_one_line(tiny_trained):
    from awq_tts.quantizer.api import _rollout

    with pytest.raises(UsageError, match="rollout 'fast': choose"):
        build_calibration(None, [], rollout="fast")
    with pytest.raises(UsageError, match="--rollout graphs replays CUDA graphs; --device cpu"):
        _rollout("graphs", "cpu")
    assert _rollout("auto", "cpu") == "dropping" and _rollout("auto", "cuda:0") == "graphs"


@pytest.mark.gpu
def test_graphed_rollouts_are_reproducible_and_start_as_the_eager_twin(tiny_trained):
    """On CUDA: sampled graph rollouts give the same bytes for a seed and batch size, every
    capture succeeds, and greedy ones open with the eager twin's first frame (later frames
    may part at a bf16 near-tie)."""
    from awq_tts.runtime import load

    tts = load(tiny_trained, device="cuda")
    prompts = builtin_prompts()[:4]
    common = dict(n_samples=4, max_seq_len=64, progress=False, batch_size=4)
    first, again = (build_calibration(tts, prompts, rollout="graphs", **common)
                    for _ in range(2))
    assert first.sha256() == again.sha256()
    assert "failed" not in first.rollout["graphs"] and "captured" in first.rollout["graphs"]
    assert all(torch.isfinite(s).all() for s in first.sequences)
    graphed, eager = (build_calibration(tts, prompts, rollout=r, greedy=True, **common)
                      for r in ("graphs", "static"))
    assert [r["codes"][0] for r in graphed.records] == [r["codes"][0] for r in eager.records]
