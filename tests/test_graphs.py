"""CUDA graphs of the code predictor's frame (``models/qwen3_tts/graphs.py``).

On the CPU: the frame the graph captures (:func:`predictor.frame_codes` on buffers reused
frame after frame) draws the codes ``generate`` draws, so nothing stale survives from one
frame to the next; the option is refused off CUDA in one line; a deep copy captures its own;
the captured frame reads nothing on the host and owns every buffer it uses. On CUDA:
``test_graphs_cuda.py``.
"""

from __future__ import annotations

import copy
import gc
import weakref

import pytest
import torch
from click.testing import CliRunner
from torch.utils._python_dispatch import TorchDispatchMode

from awq_tts.cli import main
from awq_tts.models.qwen3_tts import graphs, predictor
from awq_tts.runtime import graph_status, load

GREEDY = (False, 0.9, 50, 1.0)          # (do_sample, temperature, top_k, top_p)
SAMPLED = (True, 0.9, 50, 1.0)


def _embeds(tts, seed: int, batch: int = 3, device: str = "cpu") -> torch.Tensor:
    hidden = tts.model.talker.config.hidden_size
    x = torch.randn(batch, 2, hidden, generator=torch.Generator().manual_seed(seed)) * 0.5
    return x.to(device, tts.model.talker.dtype)


def _generate(cp, embeds, sampling) -> torch.Tensor:
    sample, temperature, top_k, top_p = sampling
    return type(cp).generate(cp, inputs_embeds=embeds, max_new_tokens=15, do_sample=sample,
                             temperature=temperature, top_k=top_k, top_p=top_p,
                             return_dict_in_generate=True).sequences


@pytest.fixture(scope="module")
def bf16(tiny_trained):
    return load(tiny_trained, device="cpu", dtype=torch.bfloat16)


@pytest.mark.parametrize("sampling", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_a_frame_on_reused_buffers_draws_what_generate_draws(bf16, sampling):
    cp = bf16.model.talker.code_predictor
    cache = predictor.fixed_cache(cp, 16)
    positions = torch.arange(17)
    warp = predictor.sampling_warpers(*sampling)
    for seed in (0, 1, 0, 2):       # the same buffers, frame after frame
        embeds = _embeds(bf16, seed)
        torch.manual_seed(seed)
        expected = _generate(cp, embeds, sampling)
        torch.manual_seed(seed)
        codes = predictor.frame_codes(cp, embeds, cache, positions, 15, warp, sampling[0])
        assert torch.equal(codes, expected), seed
    assert cache.layers[0].key_buffer.shape[2] == 16 and cache.layers[0].length == 16


def test_a_fixed_layer_refuses_more_tokens_than_it_holds():
    layer = predictor.FixedLayer(3)
    layer.update(torch.zeros(1, 2, 2, 4), torch.zeros(1, 2, 2, 4))
    with pytest.raises(RuntimeError, match="holds 3 tokens, asked for 4"):
        layer.update(torch.zeros(1, 2, 2, 4), torch.zeros(1, 2, 2, 4))


def test_cuda_graphs_off_cuda_is_a_one_line_error(tiny_base, tmp_path):
    from awq_tts.errors import UsageError

    with pytest.raises(UsageError, match="CUDA graphs need a CUDA device"):
        load(tiny_base, device="cpu", cuda_graphs=True)
    out = tmp_path / "o.wav"
    result = CliRunner().invoke(main, ["synthesize", str(tiny_base), "--text", "Hi.",
                                       "--device", "cpu", "--cuda-graphs", "-o", str(out)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "CUDA graphs need a CUDA device" in result.output and not out.exists()
    result = CliRunner().invoke(main, ["validate", str(tiny_base), "--device", "cpu",
                                       "--cuda-graphs"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "CUDA graphs need a CUDA device" in result.output


def test_the_verdict_names_the_graphs_state():
    from types import SimpleNamespace

    from awq_tts.validate.report import _runtime_line

    def line(**runtime):
        return _runtime_line(SimpleNamespace(metrics={"runtime": runtime}))

    assert line(device="cpu", backend="int4pack") == "INT4 ran on cpu with backend int4pack"
    assert line(device="cuda:0", backend="int4pack", cuda_graphs="off").endswith("int4pack")
    on = "talker step on (2 captured); code predictor on (1 captured)"
    assert line(device="cuda:0", backend="int4pack", cuda_graphs=on).endswith(
        f"int4pack, CUDA graphs: {on}")


def test_graph_state_is_per_model_and_cpu_frames_stay_eager(bf16):
    cp = bf16.model.talker.code_predictor
    assert graph_status(bf16) == "talker step off; code predictor off"
    assert not bf16.awq_cuda_graphs
    graphs.enable(cp)
    try:
        assert graphs.status(cp) == "on (0 captured)"
        twin = copy.deepcopy(cp)     # its weights live elsewhere: it must capture its own
        assert graphs.of(twin) is not graphs.of(cp) and not graphs.of(twin).graphs
        embeds = _embeds(bf16, 4)
        assert graphs.of(cp).codes(cp, embeds, 15, GREEDY) is None    # CPU: not graphed
        out = cp.generate(inputs_embeds=embeds, max_new_tokens=15, do_sample=False,
                          return_dict_in_generate=True, output_hidden_states=True)
        assert torch.equal(out.sequences, _generate(cp, embeds, GREEDY))
        assert graphs.status(cp) == "on (0 captured)"
        mine, theirs = graphs.FrameGraphs(), graphs.of(cp)
        with graphs.using(cp, mine):             # an A/B switch restores what was set
            assert graphs.of(cp) is mine
        assert graphs.of(cp) is theirs
    finally:
        graphs.disable(cp)
    assert graphs.status(cp) == "off"
    with graphs.using(cp, graphs.FrameGraphs()):
        assert graphs.status(cp) == "on (0 captured)"
    assert graphs.status(cp) == "off"


class _HostReads(TorchDispatchMode):
    """Every op that reads a tensor's value on the host (a device sync on CUDA, illegal
    while capturing) or lifts host data into a tensor bigger than a scalar."""

    SYNCS = {"_local_scalar_dense", "is_nonzero", "equal", "item", "nonzero"}

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name in self.SYNCS or (name == "lift_fresh" and out.dim() > 0):
            self.found.append(name)
        return out


@pytest.mark.parametrize("sampling", [GREEDY, (True, 0.7, 20, 0.8)], ids=["greedy", "nucleus"])
def test_the_captured_frame_never_reads_a_tensor_on_the_host(bf16, sampling):
    """What CUDA graph capture forbids, checked on the CPU: qwen-tts's and transformers'
    forward, the cache and the token draw never bring a value to Python."""
    cp = bf16.model.talker.code_predictor
    cache, warp = predictor.fixed_cache(cp, 16), predictor.sampling_warpers(*sampling)
    args = (_embeds(bf16, 6), cache, torch.arange(17), 15, warp, sampling[0])
    predictor.frame_codes(cp, *args)        # first use allocates, as the warm-up does
    with _HostReads() as reads:
        predictor.frame_codes(cp, *args)
    assert reads.found == []
    with _HostReads() as reads:              # the check itself sees a host read
        predictor.frame_codes(cp, *args).sum().item()
    assert reads.found == ["_local_scalar_dense"]


def test_a_captured_frame_keeps_alive_every_buffer_its_graph_uses(bf16, monkeypatch):
    """A CUDA graph owns only what it allocated while capturing; the embeddings, cache and
    positions it was captured on must live as long as the :class:`FrameGraph`. Checked on
    the CPU with a capture that, like torch's, keeps nothing the run used (the first GPU
    runs' replays read a freed cache: wrong codes, then an illegal memory access)."""
    used: list[weakref.ref] = []
    real = graphs.frame_codes

    def recording(predictor_, embeds, cache, positions, *rest):
        used.extend(weakref.ref(x) for x in (embeds, cache, positions))
        return real(predictor_, embeds, cache, positions, *rest)

    monkeypatch.setattr(graphs, "frame_codes", recording)
    monkeypatch.setattr(graphs, "capture", lambda run, device: (object(), run()))
    frame = graphs.FrameGraph(bf16.model.talker.code_predictor, _embeds(bf16, 0), 15, GREEDY)
    gc.collect()
    assert len(used) == 3 and all(ref() is not None for ref in used)
    assert used[1]().layers[0].key_buffer is not None
    del frame
    gc.collect()
    assert all(ref() is None for ref in used)       # and no longer than the graph
