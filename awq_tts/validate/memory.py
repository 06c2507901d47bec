"""Memory checks that mean something: what the INT4 model costs where it runs.

* CUDA: the INT4 model's own peak VRAM over its load and both rollout modes (the bf16
  reference on the same device not counted), under the budget enforced with the
  per-process memory fraction (an out-of-memory inside the budget is a failed check).
* CPU: in a *fresh* process, the peak resident-set increase over the baseline after
  imports, of loading the INT4 model with the chosen backend and speaking one sentence.
  Measured in-process it would include the bf16 reference and whatever ran before.
* ``weight_bytes_ratio``: resident bytes of the talker's decoder layers (the scope awq-tts
  quantizes, kernel buffers included) as loaded, INT4 over bf16: 0.27 at every shape for
  group 128, 1.0 for bf16. A runtime that kept a dequantized or duplicate copy would show
  here. The whole-model ratio (speech tokenizer excluded) is reported too: 0.46 at the
  real 1.7B shapes, but about 0.78 for the tiny test model, whose embeddings dominate, so
  no single bound on it could both mean something and pass on every shape.

A model without INT4 linears given as QUANT fails both checks, whatever it weighs.
"""

from __future__ import annotations

import gc
import json
import re
import subprocess
import sys
from pathlib import Path

import torch

from ..devices import resolve_device
from ..models import adapter_of
from ..runtime import load
from .thresholds import FAIL, Check, check

#: Bound on INT4 / bf16 resident bytes of the talker decoder layers (measured: 0.27).
WEIGHT_BYTES_RATIO = 0.35

def rss_kib(field: str = "VmRSS") -> int:
    """This process's resident memory in KiB: ``VmRSS`` now, or ``VmHWM`` its high-water mark."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+)", text).group(1))


def reset_peak_rss() -> None:
    """Reset the high-water mark (Linux ≥ 4.0), so ``VmHWM`` counts from now on."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


_PROBE = """
import json, sys
import torch
from awq_tts.runtime import load
from awq_tts.synth import speak
from awq_tts.validate.memory import reset_peak_rss, rss_kib

path, backend, tokens = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.set_num_threads(int(sys.argv[4]))
from awq_tts.models.qwen3_tts.package import qwen_tts  # imports count as baseline, not as the model
qwen_tts()
from qwen_tts.inference.qwen3_tts_tokenizer import Qwen3TTSTokenizer  # noqa
from transformers import AutoProcessor  # noqa
reset_peak_rss()  # so the imports' transient peak does not count
base = rss_kib("VmRSS")
tts = load(path, device="cpu", backend=backend)
loaded = rss_kib("VmHWM")
with torch.no_grad():
    speak(tts, "A short sentence to measure memory.", max_new_tokens=tokens,
          do_sample=False, subtalker_dosample=False)
peak = rss_kib("VmHWM")
print("RESULT" + json.dumps({"load_kib": loaded - base, "peak_kib": peak - base}))
"""


def own_peak(start: int, resident: int, device_peak: int) -> int:
    """A run's peak device bytes that are the model's own: what the model held when the run
    began (``resident``) plus what the run allocated above the device's ``start``. Others'
    tensors, resident throughout, cancel out."""
    return resident + max(device_peak - start, 0)


class OutOfBudget(Exception):
    """The INT4 model ran out of GPU memory inside the budget."""


class MemoryProbe:
    """Loads the INT4 model and keeps the numbers the memory checks need.

    On CUDA the validator holds the bf16 reference on the same device while the INT4 model
    speaks, so the device-wide peak is not the INT4 model's. :meth:`track` counts only what
    the INT4 model holds: its resident bytes (measured at its load, which comes first) plus
    the working memory a run allocates above what was allocated when it began, and it lets
    the budget grow by what others hold at that moment. (The first GPU run counted the
    reference too: 6.3 GiB against the 2.5 GiB the INT4 model uses alone.)"""

    def __init__(self, device: str, budget_gb: float, backend: str = "auto",
                 cuda_graphs: bool = False, offload_embeddings: bool = False) -> None:
        self.device, self.budget_gb, self.backend = resolve_device(device), budget_gb, backend
        self.cuda_graphs, self.offload_embeddings = cuda_graphs, offload_embeddings
        self.cuda = self.device.startswith("cuda")
        self.peak_bytes: int | None = None
        self.resident_bytes = 0           # the INT4 model's, on the device
        self._others = 0                  # other tensors' bytes on the device at a run's start
        self.cpu_probe: dict | None = None
        self.int4_bytes: dict[str, int] = {}

    def load(self, path: Path):
        model = self.track(lambda: load(path, device=self.device, dtype=torch.bfloat16,
                                        backend=self.backend, cuda_graphs=self.cuda_graphs,
                                        offload_embeddings=self.offload_embeddings))
        if self.cuda:
            self.resident_bytes = torch.cuda.memory_allocated(self.device) - self._others
        self.int4_bytes = {scope: model_bytes(model, scope) for scope in ("model", "decoder")}
        return model

    def measure_cpu(self, path: Path, backend: str, max_new_tokens: int,
                    run: bool = True) -> None:
        """Peak RSS increase of INT4 load + one sentence, in a fresh process (CPU only);
        ``run=False`` records that it was left out, so the check skips with that reason."""
        if self.cuda:
            return
        if not run:
            self.cpu_probe = {"skipped": "the fresh-process memory probe was not run "
                                         "(memory_probe=False / --no-memory-probe)"}
            return
        run = subprocess.run([sys.executable, "-c", _PROBE, str(path), backend,
                              str(min(max_new_tokens, 64)), str(torch.get_num_threads())],
                             capture_output=True, text=True)
        line = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULT")]
        if run.returncode or not line:
            tail = (run.stderr or run.stdout).strip().splitlines()[-1:]
            self.cpu_probe = {"error": tail[0] if tail else f"exit {run.returncode}"}
            return
        self.cpu_probe = json.loads(line[0][len("RESULT"):])

    def track(self, fn):
        """Run ``fn`` (the INT4 model's load or speech); on CUDA, under the budget plus what
        others hold now, recording the INT4 model's own peak (:func:`own_peak`), and with
        out-of-memory turned into a failed check."""
        if not self.cuda:
            return fn()
        # Garbage freed mid-run (a dropped model's cycles) would look like the INT4 model
        # shrinking; and the memory fraction bounds only new segments, never blocks the
        # allocator already caches, so an earlier run's cache would let the model past it.
        gc.collect()
        torch.cuda.empty_cache()
        start = torch.cuda.memory_allocated(self.device)
        self._others = start - self.resident_bytes
        # the fraction bounds reserved bytes: others' segments count with their slack
        held = torch.cuda.memory_reserved(self.device) - self.resident_bytes
        total = torch.cuda.get_device_properties(self.device).total_memory
        torch.cuda.set_per_process_memory_fraction(
            min(1.0, (self.budget_gb * 2**30 + held) / total), self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        try:
            return fn()
        except torch.cuda.OutOfMemoryError as exc:
            beside = (f" (other tensors held {self._others / 2**30:.2f} GiB beside it, such as "
                      f"the bf16 reference)" if self._others > 2**20 else "")
            raise OutOfBudget(f"INT4 model ran out of memory within {self.budget_gb} GB"
                              f"{beside}") from exc
        finally:
            peak = own_peak(start, self.resident_bytes,
                            torch.cuda.max_memory_allocated(self.device))
            self.peak_bytes = max(self.peak_bytes or 0, peak)
            torch.cuda.set_per_process_memory_fraction(1.0, self.device)

    def report(self, int4, ref) -> dict:
        ref_bytes = {scope: model_bytes(ref, scope) for scope in ("model", "decoder")}
        return {"int4_model_bytes": self.int4_bytes["model"],
                "bf16_model_bytes": ref_bytes["model"],
                "model_bytes_ratio": self.int4_bytes["model"] / max(ref_bytes["model"], 1),
                "int4_decoder_bytes": self.int4_bytes["decoder"],
                "bf16_decoder_bytes": ref_bytes["decoder"],
                "int4_peak_vram_bytes": self.peak_bytes, "cpu_fresh_process": self.cpu_probe,
                "budget_gb": self.budget_gb, "device": self.device}

    def checks(self, report: dict, is_int4: bool) -> list[Check]:
        ratio = report["int4_decoder_bytes"] / max(report["bf16_decoder_bytes"], 1)
        if self.cuda:
            used, what = self.peak_bytes, "peak VRAM of INT4 load + speech, GiB"
            reason = "not measured"
        else:
            probe = self.cpu_probe or {}
            used = probe["peak_kib"] * 1024 if "peak_kib" in probe else None
            what = "peak RSS increase of INT4 load + one sentence (fresh process), GiB"
            reason = probe.get("skipped") or (
                f"the fresh-process probe failed: {probe.get('error', 'not run')}")
        out = [check("memory", None if used is None else used / 2**30, "<=", self.budget_gb,
                     what, reason),
               check("weight_bytes_ratio", ratio, "<=", WEIGHT_BYTES_RATIO,
                     "resident INT4 / bf16 bytes of the talker decoder layers")]
        if not is_int4:
            for c in out:
                c.status, c.detail = FAIL, "QUANT holds no INT4 linears (a bf16 checkpoint?)"
        return out


def model_bytes(tts, scope: str = "model") -> int:
    """Resident bytes of the model (speech tokenizer excluded; tables kept on the host by
    ``offload_embeddings`` included) or of its talker decoder layers."""
    model = tts.model if scope == "model" else adapter_of(tts).decoder_layers(tts.model)
    skip = {id(t) for m in [getattr(tts.model, "speech_tokenizer", None)] if m is not None
            for t in [*m.model.parameters(), *m.model.buffers()]}
    host = getattr(tts, "awq_host_bytes", 0) if scope == "model" else 0
    return host + sum(t.numel() * t.element_size()
                      for t in [*model.parameters(), *model.buffers()] if id(t) not in skip)
