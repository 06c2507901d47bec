"""CUDA graphs for the code predictor's frame: ``awq_tts.load(..., cuda_graphs=True)``.

On a GPU at batch 1 the code predictor's 15 forwards per frame are launch-bound: about
1,500 small kernels, each paid for in Python and in the driver. :class:`FrameGraph`
captures one whole frame of :func:`predictor.frame_codes` (prefill, 14 steps, the token
draws) once per input shape and sampling setting, then replays it: one launch per frame.

It replays the kernels the eager :func:`predictor.frame_codes` runs, on the same buffers,
which the :class:`FrameGraph` keeps alive as long as its graph (a graph does not own the
memory it was captured on; an earlier version freed its cache after the capture, and its
replays read whatever was allocated there next). The ``gpu`` tests compare replayed logits
on fresh inputs with eager ones within bf16 round-off, which tells round-off from stale
data. Sampled draws come from the CUDA generator's graph-safe stream: the same seed gives
the same codes, not the eager draws.

Capturing costs one warm-up frame and the capture (the random generator is put back
afterwards, so a seeded first call draws what a seeded later call draws) and keeps a
small private memory pool per captured shape (at most :data:`KEEP` shapes). If a capture
fails, that shape and setting run eagerly from then on and :func:`status` says why; speech
never depends on the graph working. :func:`capture` is the one capture recipe, here and
for the talker step (``talker_graphs.py``). Weights must stay where they were at capture:
moving the model after loading needs :func:`enable` again.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from .patches import swapped
from .predictor import GRAPHS_ATTR, fixed_cache, frame_codes
from .sampling import sampling_warpers

#: Captured shapes kept per predictor (oldest dropped first).
KEEP = 8
log = logging.getLogger(__name__)


def capture(run: Callable[[], torch.Tensor],
            device: torch.device) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
    """``run`` captured as a CUDA graph, and the tensor its replays write: one warm-up call
    on a side stream first (allocations, library handles, autotuning stay outside), then
    the capture in thread-local mode, so another thread's CUDA work (the studio's) cannot
    spoil it, on a stream of its own (a failed capture never ends torch's routing of that
    stream's allocations to the graph's pool; a shared stream would carry it on). The
    device's random generator is put back as it was before the warm-up, so the first
    replay draws what a seeded later call draws. Raises what the capture raises, with the
    generator usable again (:func:`_end_stuck_capture`). No cuBLAS workspace outlives it
    outside the graph's pool (:func:`drop_cublas_workspaces`)."""
    device = torch.device(device)
    with torch.cuda.device(device):
        rng = torch.cuda.get_rng_state(device)
        try:
            side = torch.cuda.Stream(device)
            side.wait_stream(torch.cuda.current_stream(device))
            drop_cublas_workspaces()
            with torch.no_grad(), torch.cuda.stream(side):
                run()
            torch.cuda.current_stream(device).wait_stream(side)
            drop_cublas_workspaces()
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.no_grad(), torch.cuda.graph(graph, stream=torch.cuda.Stream(device),
                                                       capture_error_mode="thread_local"):
                    out = run()
            except Exception:
                _end_stuck_capture(device)
                raise
            finally:
                drop_cublas_workspaces()
        finally:
            torch.cuda.set_rng_state(rng, device)
    return graph, out


def drop_cublas_workspaces() -> None:
    """Forget torch's cuBLAS workspaces. torch keeps one (32 MiB on Hopper) for every stream
    a matmul ran on, for the life of the process, counted as allocated memory; each capture
    warms up and captures on streams of its own, so without this every capture would leave
    two behind. Dropped before and after the warm-up and the capture (as torch's inductor
    does for its graphs): the warm-up's returns to the allocator, the capture's stays in the
    graph's private pool for its replays, and the next eager matmul makes a fresh one."""
    clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear is not None:
        clear()


def _end_stuck_capture(device: torch.device) -> None:
    """torch leaves the CUDA generator in capture mode when a capture fails (only a capture
    that ends well runs its epilogue), and from then on every random draw outside a graph
    raises "Offset increment outside graph capture". A trivial capture that ends well puts
    the same generator object back, so graphs captured earlier still follow its seed."""
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=torch.cuda.Stream(device)):
            torch.zeros(1, device=device)
        del graph
    except Exception as exc:  # noqa: BLE001 (the original failure is what the caller reports)
        log.warning("could not reset the CUDA generator after a failed capture (%s)",
                    failure(exc))


def failure(exc: Exception) -> str:
    """A failed capture in one line, as :func:`describe` reports it: the first error raised
    inside the capture when ending the capture raised another on top of it."""
    root = exc.__context__ if isinstance(exc.__context__, Exception) else exc
    return f"{type(root).__name__}: {root}".splitlines()[0]


def describe(captured: int, failed: list[str]) -> str:
    """``on (N captured)``, with ``, M failed: <the last reason>`` when captures failed."""
    return f"on ({captured} captured" + (f", {len(failed)} failed: {failed[-1]}"
                                         if failed else "") + ")"


class FrameGraph:
    """One frame of ``predictor`` captured for one input shape and sampling setting.

    A CUDA graph owns only what it allocated while capturing; the buffers it reads and
    writes that were allocated before (the input embeddings, the key/value cache, the
    positions) are this object's attributes, so they live exactly as long as the graph.
    (The first GPU runs found replays reading a freed cache: codes off by whole logits,
    speech that did not repeat, and at last an illegal memory access.)"""

    def __init__(self, predictor, like: torch.Tensor, max_new_tokens: int,
                 sampling: tuple) -> None:
        sample = sampling[0]
        warp = sampling_warpers(*sampling)
        self.embeds = torch.zeros_like(like)
        self.cache = fixed_cache(predictor, like.shape[1] + max_new_tokens - 1)
        self.positions = torch.arange(like.shape[1] + max_new_tokens, device=like.device)

        def run() -> torch.Tensor:
            return frame_codes(predictor, self.embeds, self.cache, self.positions,
                               max_new_tokens, warp, sample)

        self.graph, self.codes = capture(run, like.device)

    def __call__(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        self.embeds.copy_(inputs_embeds)
        self.graph.replay()
        return self.codes.clone()


class FrameGraphs:
    """A predictor's captured frames, by input shape, dtype, length and sampling setting;
    a setting whose capture failed runs eagerly (``failed`` holds why)."""

    def __init__(self) -> None:
        self.graphs: OrderedDict[tuple, FrameGraph] = OrderedDict()
        self.failed: dict[tuple, str] = {}

    def __deepcopy__(self, memo) -> FrameGraphs:
        return FrameGraphs()      # a copy's weights live elsewhere: it captures its own

    def codes(self, predictor, inputs_embeds: torch.Tensor, max_new_tokens: int,
              sampling: tuple) -> torch.Tensor | None:
        """The frame's codes from a graph (captured on first use), or ``None`` where graphs
        do not apply (not CUDA, or this setting's capture failed): the caller runs eagerly."""
        key = (tuple(inputs_embeds.shape), inputs_embeds.dtype, str(inputs_embeds.device),
               max_new_tokens, sampling)
        if not inputs_embeds.is_cuda or key in self.failed:
            return None
        graph = self.graphs.get(key)
        if graph is None:
            try:
                graph = FrameGraph(predictor, inputs_embeds, max_new_tokens, sampling)
            except Exception as exc:  # noqa: BLE001 (any capture failure means: run eagerly)
                self.failed[key] = failure(exc)
                log.warning("CUDA graph capture of the code predictor failed (%s); it runs "
                            "eagerly", self.failed[key])
                return None
            self.graphs[key] = graph
            while len(self.graphs) > KEEP:
                self.graphs.popitem(last=False)
        else:
            self.graphs.move_to_end(key)
        return graph(inputs_embeds)


def enable(predictor) -> None:
    """Replay ``predictor``'s frames from CUDA graphs (dropping any captured before)."""
    setattr(predictor, GRAPHS_ATTR, FrameGraphs())


def disable(predictor) -> None:
    """Back to the eager plain loop."""
    if hasattr(predictor, GRAPHS_ATTR):
        delattr(predictor, GRAPHS_ATTR)


@contextmanager
def using(predictor, store: FrameGraphs | None) -> Iterator[FrameGraphs | None]:
    """Replay ``predictor``'s frames from ``store`` inside the block (``None``: eagerly),
    and restore whatever was set before (an A/B switch that keeps its captures)."""
    with swapped(predictor, GRAPHS_ATTR, store):
        yield store


def of(predictor) -> FrameGraphs | None:
    """The predictor's graph store, or ``None`` when graphs are off."""
    return getattr(predictor, GRAPHS_ATTR, None)


def status(predictor) -> str:
    """``off``, or ``on (N captured)`` followed by ``, M failed: reason`` when a capture
    failed (that setting runs eagerly)."""
    store = of(predictor)
    if store is None:
        return "off"
    return describe(len(store.graphs), list(store.failed.values()))

