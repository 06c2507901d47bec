"""``awq-tts validate`` / ``validate_awq_quality``: the verdict command."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .common import BACKEND_HELP, DEVICE_HELP, SEED, friendly

#: Bounds a user may set: a KL, ratio or distance is never negative; a share lies in [0, 1].
AT_LEAST_0 = click.FloatRange(min=0)
SHARE = click.FloatRange(0, 1)


@click.command("validate", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("quant", type=str)
@click.option("--reference", type=str, default=None,
              help="bf16 source (folder or hub id); default: the one in noesis_provenance.json.")
@click.option("--prompts", type=str, default=None,
              help="Prompt file/folder/dataset; default: the built-in held-out set.")
@click.option("--n-prompts", type=click.IntRange(min=1), default=None,
              help="Use only the first N prompts.")
@click.option("--ref-audio", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Reference voice for Base models; default: a built-in synthetic clip.")
@click.option("--budget-gb", type=click.FloatRange(min=0, min_open=True), default=6.0,
              show_default=True,
              help="Memory budget in GiB: peak VRAM on CUDA; on CPU the peak RSS increase "
                   "of INT4 load + one sentence, in a fresh process.")
@click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
@click.option("--reference-device", default=None,
              help="Where the bf16 reference runs (default: --device). cpu keeps it off a GPU "
                   "too small for both models: a 6 GB card holds the INT4 model, not both.")
@click.option("--backend", default="auto", show_default=True,
              help=BACKEND_HELP + " 'all': validate every backend the device has.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=1024, show_default=True,
              help="A rollout that reaches this without end-of-speech counts as runaway.")
@click.option("--seed", type=SEED, default=1729, show_default=True)
@click.option("--kl-mean", type=AT_LEAST_0, default=None, help="Bound on mean KL (default 0.05).")
@click.option("--kl-p99", type=AT_LEAST_0, default=None, help="Bound on p99 KL (default 1.0).")
@click.option("--top1", type=SHARE, default=None, help="Minimum top-1 agreement (default 0.9).")
@click.option("--eos-prob-ratio", type=AT_LEAST_0, default=None,
              help="Minimum INT4/bf16 end-of-speech probability (default 0.5).")
@click.option("--duration-ratio", type=AT_LEAST_0, default=None,
              help="Maximum mean |duration ratio - 1| (default 0.15).")
@click.option("--speaker-similarity-delta", type=click.FloatRange(-2, 2), default=None,
              help="Minimum speaker-similarity change (default -0.03).")
@click.option("--code-predictor-agreement", type=SHARE, default=None,
              help="Minimum code-predictor agreement (default 0.85).")
@click.option("--log-mel-distance", type=AT_LEAST_0, default=None,
              help="Maximum mean log-mel distance of greedy audio (default 1.5).")
@click.option("--kl-vs-rtn", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Also bound mean KL by this many times the KL of an in-memory RTN twin "
                   "of the source (off by default).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None)
@click.option("--markdown", "markdown_path", type=click.Path(path_type=Path), default=None)
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), default=None,
              help="PNG plot (default: next to --json).")
@click.option("--strict", is_flag=True,
              help="Count skipped checks (not measurable on this model) as failures.")
@click.option("--full", is_flag=True,
              help="Run the rollouts even when a static check (weights audit, untouched "
                   "tensors) already failed.")
@click.option("--no-memory-probe", is_flag=True,
              help="On a CPU, leave out the fresh-process memory probe (it loads QUANT a "
                   "second time); the memory check is then skipped, not passed.")
@click.option("--cuda-graphs", is_flag=True,
              help="CUDA only: run the INT4 model with its decode replayed from CUDA graphs, "
                   "as `synthesize --cuda-graphs` runs it (the bf16 reference stays eager).")
@click.option("--offload-embeddings", is_flag=True,
              help="Load the INT4 model with its text embedding in host memory, as "
                   "`synthesize --offload-embeddings` runs it; the memory check measures that.")
@friendly
def validate(quant, reference, prompts, n_prompts, ref_audio, budget_gb, device,
             reference_device, backend,
             max_new_tokens, seed, kl_mean, kl_p99, top1, eos_prob_ratio, duration_ratio,
             speaker_similarity_delta, code_predictor_agreement, log_mel_distance, kl_vs_rtn,
             json_path, markdown_path, plot_path, strict, full, no_memory_probe,
             cuda_graphs, offload_embeddings) -> None:
    """Compare INT4 checkpoint QUANT with its bf16 source and give one verdict.

    Each check ends as pass, fail or skipped (with its reason; --strict fails on
    skips). Exit code 0: no check failed; 1: at least one failed (each is named);
    2: bad usage. The verdict and the report's sha256 are appended to QUANT's
    noesis_provenance.json.
    """
    import dataclasses

    from ..devices import resolve_device
    from ..errors import UsageError
    from ..output import check_placement, check_writable
    from ..runtime.backends import available_backends
    from ..validate import Thresholds, validate_awq_quality
    from ..validate.report import print_table, write_outputs

    overrides = {k: v for k, v in dict(
        kl_mean=kl_mean, kl_p99=kl_p99, top1=top1, eos_prob_ratio=eos_prob_ratio,
        duration_ratio=duration_ratio, speaker_similarity_delta=speaker_similarity_delta,
        budget_gb=budget_gb, kl_vs_rtn=kl_vs_rtn, log_mel_distance=log_mel_distance,
        code_predictor_agreement=code_predictor_agreement).items() if v is not None}
    thresholds = dataclasses.replace(Thresholds(), **overrides)
    device = resolve_device(device)
    try:
        reference_device = resolve_device(reference_device) if reference_device else None
    except UsageError as exc:
        raise UsageError(f"--reference-device: {exc}") from None
    backends = available_backends(device) if backend == "all" else [backend]
    if plot_path is None and json_path is not None:
        plot_path = json_path.with_suffix(".png")
    if plot_path is not None and plot_path.suffix.lower() != ".png":
        raise UsageError(f"--plot {plot_path}: the plot is a PNG image; name it .png")
    for path in (json_path, markdown_path, plot_path):
        if path is not None:
            check_placement(path, [quant])
            check_writable(path, folder=False)
    passed = True
    for name in backends:
        report = validate_awq_quality(quant, reference=reference, prompts=prompts,
                                      ref_audio=str(ref_audio) if ref_audio else None,
                                      thresholds=thresholds, device=device, n_prompts=n_prompts,
                                      max_new_tokens=max_new_tokens, seed=seed, backend=name,
                                      strict=strict, full=full,
                                      memory_probe=not no_memory_probe,
                                      cuda_graphs=cuda_graphs,
                                      offload_embeddings=offload_embeddings,
                                      reference_device=reference_device)
        tag = f"-{name}" if len(backends) > 1 else ""
        write_outputs(report, *(_tagged(p, tag) for p in (json_path, markdown_path, plot_path)))
        print_table(report)
        if report.record_error:
            click.echo(f"warning: the verdict was not recorded in the provenance: "
                       f"{report.record_error}", err=True)
        passed &= report.passed
    sys.exit(0 if passed else 1)


def _tagged(path: Path | None, tag: str) -> Path | None:
    """``report.json`` → ``report-int4pack.json`` when several backends are validated."""
    if path is None or not tag:
        return path
    return path.with_name(f"{path.stem}{tag}{path.suffix}")
