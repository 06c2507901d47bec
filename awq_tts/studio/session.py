"""What the studio page holds and does, without the page: models, renders, the trust panel.

``StudioSession`` loads the INT4 model (and, with a reference, its bf16 source) once and
keeps them. When both would not fit ``budget_gb`` together (bytes on the device, as
loaded), the reference is loaded for each A/B render and released after, and
``memory_note`` says so. ``offload_embeddings`` keeps both models' text embeddings in host
memory (``load``'s option): 1.16 GiB less on the device for the 1.7B pair. Every
method is a plain Python call; ``app.py`` only wires them to widgets.
"""

from __future__ import annotations

import gc
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UsageError
from ..format import provenance
from ..format.source import resolve
from ..runtime import load
from ..validate.memory import model_bytes
from .render import Render, Voice, render, save
from .script import Script, parse


@dataclass
class Take:
    """One rendered take: which model, the audio, its file and its figures."""

    label: str
    render: Render
    wav_path: Path
    peak_gib: float | None

    @property
    def summary(self) -> str:
        r = self.render
        rtf = r.seconds_wall / max(r.seconds_audio, 1e-9)
        peak = "n/a" if self.peak_gib is None else f"{self.peak_gib:.2f} GiB"
        return (f"{r.seconds_audio:.2f} s of audio in {r.seconds_wall:.2f} s (RTF {rtf:.2f}), "
                f"peak memory {peak}")


class StudioSession:
    def __init__(self, model: str | Path, reference: str | Path | None = None,
                 device: str = "auto", out_dir: str | Path = "studio-renders",
                 budget_gb: float = 6.0, offload_embeddings: bool = False) -> None:
        self.model_path, self.reference_path = Path(model), reference
        self.out_dir, self.device, self.budget_gb = Path(out_dir), device, budget_gb
        self.offload_embeddings = offload_embeddings
        if reference is not None and resolve(str(reference)).config.get("quantization_config"):
            raise UsageError(f"--reference {reference} is itself quantized; A/B renders "
                             f"compare against the bf16 source: pass that folder")
        self.int4 = self._load(self.model_path)
        self.kind = self.int4.model.tts_model_type
        self.reference = None
        self.memory_note = ""
        if reference is not None:
            ref = self._load(reference)
            total = (self._resident(self.int4) + self._resident(ref)) / 2**30
            if total <= budget_gb:
                self.reference = ref
                self.memory_note = f"both models resident ({total:.2f} GiB of {budget_gb} GiB)"
            else:
                del ref
                gc.collect()
                self.memory_note = (f"both models need {total:.2f} GiB, over the "
                                    f"{budget_gb} GiB budget: the bf16 reference is loaded "
                                    f"for each A/B render and released after")

    def _load(self, path):
        return load(path, device=self.device, offload_embeddings=self.offload_embeddings)

    def _resident(self, tts) -> int:
        """The model's bytes where the budget counts them: on an accelerator, without the
        tables kept in host memory."""
        on_host = tts.awq_host_bytes if tts.device.type != "cpu" else 0
        return model_bytes(tts) - on_host

    def speakers(self) -> list[str]:
        return sorted(self.int4.model.get_supported_speakers() or [])

    def preview(self, text: str) -> Script:
        return parse(text)

    def render(self, text: str | Script, voice: Voice, seed: int = 0, pause: float = 0.3,
               max_new_tokens: int = 2048, ab: bool = False,
               on_progress: Callable[[str, int, int], None] | None = None) -> list[Take]:
        """INT4 take (and, with ``ab`` and a reference, the bf16 take) of the same script
        (tagged text, or a ``Script`` such as the page's edited segment table).

        ``on_progress(label, i, n)`` is called after segment i of n of each take.
        """
        script = parse(text) if isinstance(text, str) else text
        common = (script, voice, seed, pause, max_new_tokens, on_progress)
        takes = [self._take("INT4", self.int4, *common)]
        if ab and self.reference_path is not None:
            ref = self.reference or self._load(self.reference_path)
            takes.append(self._take("bf16", ref, *common))
            if self.reference is None:
                del ref
                gc.collect()
        return takes

    @staticmethod
    def blind(takes: list[Take], seed: int) -> tuple[list[Take], list[str]]:
        """The takes in a seeded random order, and the labels to reveal afterwards."""
        order = list(takes)
        random.Random(seed).shuffle(order)
        return order, [t.label for t in order]

    def _take(self, label, tts, script, voice, seed, pause, max_new_tokens,
              on_progress) -> Take:
        cuda = str(tts.device).startswith("cuda")
        if cuda:
            torch.cuda.reset_peak_memory_stats(tts.device)
        step = None if on_progress is None else (lambda i, n: on_progress(label, i, n))
        result = render(tts, script, voice, seed=seed, pause=pause,
                        max_new_tokens=max_new_tokens, on_segment=step)
        peak = torch.cuda.max_memory_allocated(tts.device) / 2**30 if cuda else None
        backend = getattr(tts, "awq_backend", "none")
        path = save(result, self.out_dir, str(self.model_path if label == "INT4"
                                                 else self.reference_path), backend, seed,
                    name=f"{label.lower()}-{time.strftime('%H%M%S')}")
        return Take(label, result, path, peak)

    def trust(self) -> dict:
        """Provenance summary and the last recorded validation verdict, if any."""
        try:
            held = provenance.Provenance.read(self.model_path)
            record = held.record
        except Exception as exc:  # a folder without a record still renders
            return {"error": str(exc)}
        quant = record.get("quantization", {})
        calibration = record.get("calibration", {})
        validations = record.get("validations") or []
        return {
            "source": record.get("source", {}).get("id_or_path"),
            "source_files_hashed": len(record.get("source", {}).get("files", {})),
            "method": quant.get("method"), "group_size": quant.get("group_size"),
            "loss_tokens": quant.get("loss_tokens"),
            "calibration": {k: calibration.get(k) for k in ("name", "count", "tokens",
                                                              "sha256")},
            "blend": record.get("blend"),
            "provenance_sha256": held.sha256,
            "last_validation": validations[-1] if validations else None,
        }

    def trust_markdown(self, info: dict | None = None) -> str:
        """The trust panel as Markdown (``info``: a ``trust()`` already read)."""
        info = info or self.trust()
        if "error" in info:
            return f"**No provenance:** {info['error']}"
        lines = [f"**Source:** `{info['source']}` ({info['source_files_hashed']} files hashed)",
                 f"**Method:** {info['method']}, group {info['group_size']}, "
                 f"loss tokens {info['loss_tokens']}",
                 f"**Calibration:** {json.dumps(info['calibration'])}",
                 f"**Blend:** {json.dumps(info['blend'])}",
                 f"**Provenance sha256:** `{info['provenance_sha256']}`"]
        last = info["last_validation"]
        if last is None:
            lines.append("**Validation:** none recorded (run `awq-tts validate`)")
        else:
            checks = ", ".join(f"{k}: {v}" for k, v in sorted(last.get("checks", {}).items()))
            lines.append(f"**Last validation: {str(last.get('verdict', '?')).upper()}** "
                         f"(backend {last.get('backend')}) — {checks}")
        return "\n\n".join(lines)

    def verdict_table(self, info: dict | None = None) -> list[list[str]]:
        """The last verdict's check table (check, value, bound, result); empty if none."""
        last = (info or self.trust()).get("last_validation") or {}
        return [list(map(str, row)) for row in last.get("table", [])]

    def verdict_figure(self, info: dict | None = None):
        """The last verdict's hidden-state cosine per talker layer (matplotlib), or None."""
        cosine = ((info or self.trust()).get("last_validation") or {}).get("layer_cosine")
        if not cosine:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator

        fig, ax = plt.subplots(figsize=(6, 2.6))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.plot(range(len(cosine)), cosine, marker="o")
        ax.set(title="INT4 vs bf16: hidden-state cosine per talker layer",
               xlabel="talker layer", ylabel="cosine")
        fig.tight_layout()
        return fig
