"""``validate_awq_quality``: one verdict on an INT4 model against its bf16 source."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..calibration.prompts import load_prompts
from ..devices import resolve_device
from ..errors import UsageError
from ..format import provenance
from ..format.source import resolve
from ..io import require_readable_audio
from ..models import adapter_for
from ..runtime import graph_status, load
from ..runtime.backends import get_backend
from ..runtime.load import require_cuda_for_graphs
from ..synth import synthetic_reference
from . import rollout, teacher
from .audit import audit_check, weights_audit
from .baseline import rtn_kl
from .checks import quality_checks, skipped_checks, untouched_check
from .memory import MemoryProbe, OutOfBudget
from .metrics import measure
from .thresholds import FAIL, Check, Thresholds, check, verdict_line
from .untouched import untouched_differences

_ARCH_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "vocab_size", "num_code_groups")


@dataclass
class ValidationReport:
    quantized: str
    reference: str
    checks: list[Check]
    metrics: dict
    prompts: list[dict] = field(default_factory=list)
    strict: bool = False
    #: Why the verdict could not be written into the INT4 folder's provenance, if it could not.
    record_error: str | None = None

    @property
    def passed(self) -> bool:
        return not self.failed

    @property
    def failed(self) -> list[str]:
        return [c.name for c in self.checks if c.failed or (self.strict and c.skipped)]

    @property
    def skipped(self) -> dict[str, str]:
        return {c.name: c.detail for c in self.checks if c.skipped}

    @property
    def verdict(self) -> str:
        return verdict_line(self.checks, self.strict)

    def as_dict(self) -> dict:
        return {"verdict": "pass" if self.passed else "fail", "verdict_line": self.verdict,
                "failed": self.failed, "skipped": self.skipped, "strict": self.strict,
                "quantized": self.quantized, "reference": self.reference,
                "checks": [c.as_dict() for c in self.checks], "metrics": self.metrics,
                "prompts": self.prompts}


def resolve_reference(quant: Path, reference: str | None) -> str:
    if reference:
        return reference
    if not provenance.Provenance.exists(quant):
        raise UsageError(f"{quant} records no source model; pass --reference SRC")
    source = provenance.Provenance.read(quant).record.get("source")
    spec = source.get("id_or_path") if isinstance(source, dict) else None
    if not isinstance(spec, str):
        raise UsageError(f"{quant}/{provenance.FILENAME} names no source model; pass "
                         f"--reference SRC")
    return spec


def check_same_architecture(quant: Path, reference: str, q: dict, r: dict) -> None:
    """One line when the two checkpoints' configs (``q``, ``r``) name other architectures."""
    if q.get("model_type") != r.get("model_type") or q.get("tts_model_type") != r.get(
            "tts_model_type"):
        raise UsageError(f"architectures differ: {quant} is {q.get('tts_model_type')!r}, "
                         f"{reference} is {r.get('tts_model_type')!r}")
    for key in _ARCH_FIELDS:
        a, b = q["talker_config"].get(key), r["talker_config"].get(key)
        if a != b:
            raise UsageError(f"architectures differ: talker {key} is {a} in {quant} "
                             f"but {b} in {reference}")


def validate_awq_quality(
    quantized: str | Path,
    reference: str | None = None,
    prompts: str | None = None,
    ref_audio: str | None = None,
    thresholds: Thresholds | None = None,
    device: str = "auto",
    n_prompts: int | None = None,
    max_new_tokens: int = 1024,
    seed: int = 1729,
    backend: str = "auto",
    strict: bool = False,
    record: bool = True,
    progress: bool = True,
    full: bool = False,
    memory_probe: bool = True,
    cuda_graphs: bool = False,
    offload_embeddings: bool = False,
    reference_device: str | None = None,
) -> ValidationReport:
    """Compare ``quantized`` with its bf16 ``reference`` and return the checked report.

    ``reference`` defaults to the source recorded in the INT4 folder's provenance and
    ``prompts`` to the built-in held-out set (never the calibration set). The INT4 model
    is loaded exactly as users run it: ``awq_tts.load`` on ``device`` with ``backend``
    (both ``auto`` by default); the report names the backend that ran. ``strict`` turns
    skipped checks into failures. With ``record`` the verdict is appended to the INT4
    folder's ``noesis_provenance.json`` (see ``report.append_to_provenance``).

    The static checks (``weights_audit``, ``untouched_identical``) run first and need no
    rollouts; when one fails the verdict is FAIL at once and the rollout checks are
    skipped, unless ``full``. bf16 rollouts are cached in-process (same reference,
    prompts, voice, seed and limits), so validating several INT4 variants or backends of
    one source generates the reference speech once.

    On a CPU the ``memory`` check loads QUANT a second time, in a fresh process, and speaks
    one sentence; ``memory_probe=False`` leaves that out (the check is then skipped with
    that reason, never passed). On CUDA the check reads the INT4 model's own peak VRAM in
    this run: its resident bytes plus each run's working memory, the bf16 reference on the
    same device left out (``memory.MemoryProbe``).
    ``cuda_graphs`` (CUDA only) loads the INT4 model with its decode replayed from CUDA
    graphs, as a deployment with ``load(..., cuda_graphs=True)`` runs it; the bf16
    reference stays eager, and the report names the graphs' state. ``offload_embeddings``
    loads it with its text embedding kept in host memory (``load``'s option), so the
    memory check measures that deployment. ``reference_device`` is where the bf16 reference
    runs (default ``device``): ``cpu`` keeps it off a GPU too small for both models (a 6 GB
    card holds the INT4 model, not both); its rollouts are then the CPU's to pay.
    """
    thresholds = thresholds or Thresholds()
    device = resolve_device(device)
    ref_device = resolve_device(reference_device) if reference_device else device
    require_cuda_for_graphs(cuda_graphs, device)
    if backend != "auto":
        get_backend(backend, device)
    quant = Path(quantized)
    if not quant.is_dir():
        raise UsageError(f"{quant}: no such checkpoint folder")
    quant_config = resolve(str(quant)).config
    if reference is None and not (quant_config.get("quantization_config")
                                  or provenance.Provenance.exists(quant)):
        # with a --reference, a bf16 QUANT gets its verdict: weights_audit fails
        raise UsageError(f"{quant} is not an INT4 checkpoint (no quantization_config, no "
                         f"{provenance.FILENAME}); validate the folder `awq-tts quantize` wrote")
    reference = resolve_reference(quant, reference)
    ref_source = resolve(reference)      # once: a hub id would ask the hub again each time
    if ref_source.config.get("quantization_config"):
        raise UsageError(f"reference {reference} is itself quantized (quantization_config in "
                         f"its config.json); pass the bf16 source as --reference")
    check_same_architecture(quant, reference, quant_config, ref_source.config)
    _, prompt_list = load_prompts(prompts or "heldout", "--prompts")
    prompt_list = prompt_list[:n_prompts] if n_prompts else prompt_list
    if ref_audio is not None:
        require_readable_audio(ref_audio, f"cannot read --ref-audio {ref_audio}")
    ref_path = ref_source.path
    mapping = adapter_for(ref_source.config.get("model_type"), reference).mapping
    audit = weights_audit(quant, ref_path, mapping)
    static = [audit_check(audit)]
    if not audit.unloadable:
        static.append(untouched_check(untouched_differences(quant, ref_path, mapping)))
    if any(c.failed for c in static) and (audit.unloadable or not full):
        why = ("the config and the tensors disagree, so the model cannot be loaded"
               if audit.unloadable else "the static checks failed (pass full=True / --full "
                                        "to run the rollouts anyway)")
        report = ValidationReport(str(quant), str(reference), static + skipped_checks(why),
                                  {"weights_audit": audit.summary()}, strict=strict)
        return _recorded(report, quant, record)
    memory = MemoryProbe(device, thresholds.budget_gb, backend, cuda_graphs, offload_embeddings)
    try:
        int4 = memory.load(quant)
        ref = load(reference, device=ref_device, dtype=torch.bfloat16)
        voice = rollout.voice_for(ref, ref_audio or synthetic_reference(seconds=2.0, seed=seed))
        key = (str(ref_path.resolve()), _mtime(ref_path), ref_device, seed, max_new_tokens,
               str(ref_audio) if ref_audio else f"synthetic:{seed}",
               tuple((p.text, p.language) for p in prompt_list))
        runs = _rollouts(int4, ref, prompt_list, voice, seed, max_new_tokens, memory, progress,
                         key)
    except OutOfBudget as exc:
        failed = Check("memory", None, thresholds.budget_gb, "<=", FAIL, str(exc))
        report = ValidationReport(str(quant), str(reference), [failed],
                                  {"memory": {"error": str(exc)}}, strict=strict)
        return _recorded(report, quant, record)
    greedy_ref = runs[("bf16", "greedy")]
    tf = teacher.compare(ref, int4, greedy_ref.sequences, greedy_ref.codes, greedy_ref.stopped)
    metrics, per_prompt = measure(ref, int4, voice, runs, tf, prompt_list)
    memory.measure_cpu(quant, int4.awq_backend if int4.awq_backend != "none" else "auto",
                       max_new_tokens, run=memory_probe)
    metrics["memory"] = memory.report(int4, ref)
    metrics["runtime"] = {"device": device, "reference_device": ref_device,
                          "backend": int4.awq_backend,
                          "cuda_graphs": graph_status(int4) if cuda_graphs else "off",
                          "offload_embeddings": offload_embeddings}
    metrics["weights_audit"] = audit.summary()
    checks = quality_checks(metrics, thresholds)
    if thresholds.kl_vs_rtn is not None:
        group = int(quant_config["quantization_config"]["group_size"])
        kl_rtn = rtn_kl(ref, reference, device, group, greedy_ref)
        metrics["teacher_forced"]["kl_mean_rtn_twin"] = kl_rtn
        ratio = metrics["teacher_forced"]["kl_mean"] / kl_rtn if kl_rtn > 0 else None
        checks.append(check("kl_vs_rtn", ratio, "<=", thresholds.kl_vs_rtn,
                            f"INT4 KL / RTN-twin KL ({kl_rtn:.3g})", "the RTN twin's KL is 0"))
    checks = static + checks
    checks += memory.checks(metrics["memory"], is_int4=int4.awq_backend != "none")
    report = ValidationReport(str(quant), str(reference), checks, metrics, per_prompt, strict)
    return _recorded(report, quant, record)


_BF16_ROLLOUTS: dict[tuple, rollout.Rollout] = {}


def _mtime(folder: Path) -> int:
    return max(p.stat().st_mtime_ns for p in folder.glob("*.safetensors"))


def _rollouts(int4, ref, prompt_list, voice, seed, max_new_tokens, memory, progress,
              key: tuple) -> dict:
    """bf16 first (cached), then INT4 capped per prompt at bf16's length + margin."""
    runs = {}
    with tqdm(total=4 * len(prompt_list), desc="validating (prompt × mode × model)",
              unit="rollout", disable=not progress) as bar:
        for mode in ("greedy", "sampled"):
            greedy = mode == "greedy"
            if (*key, mode) not in _BF16_ROLLOUTS:
                if len(_BF16_ROLLOUTS) >= 4:
                    _BF16_ROLLOUTS.pop(next(iter(_BF16_ROLLOUTS)))
                _BF16_ROLLOUTS[(*key, mode)] = rollout.speak(ref, prompt_list, voice, greedy,
                                                             seed, max_new_tokens)
            runs[("bf16", mode)] = _BF16_ROLLOUTS[(*key, mode)]
            bar.update(len(prompt_list))
            caps = [rollout.runaway_cap(n, max_new_tokens) for n in runs[("bf16", mode)].frames]
            runs[("int4", mode)] = memory.track(lambda g=greedy, c=caps: rollout.speak(
                int4, prompt_list, voice, g, seed, max_new_tokens, caps=c, progress=bar))
    return runs


def _recorded(report: ValidationReport, quant: Path, record: bool) -> ValidationReport:
    if record:
        import hashlib

        from .report import append_to_provenance, to_json

        try:
            append_to_provenance(quant, report, hashlib.sha256(to_json(report)).hexdigest())
        except OSError as exc:
            report.record_error = f"{exc.strerror or exc} ({quant})"
        except UsageError as exc:
            report.record_error = str(exc)
    return report
