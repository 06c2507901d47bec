"""Command line: a thin layer over the library API (``awq_tts.*``).

Every command turns a ``UsageError`` into a one-line ``error: ...`` on stderr and exit
code 2, so scripts can tell bad input (2) from a failed check (1).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .. import __version__
from ..calibration.builder import ROLLOUTS
from ..errors import UsageError
from ..quantizer.recipe import ACTIVATION_DTYPES, LOSS_TOKENS, METHODS
from .common import BACKEND_HELP, DEVICE_HELP, SEED, friendly, stop_cleanly_on_termination
from .interop import export
from .studio import studio
from .surgery import blend, repair
from .verdict import validate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="awq-tts")
def main() -> None:
    """Shrink Qwen3-TTS talkers to AWQ INT4 and check they still speak like the original.

    \b
    Typical use:
      awq-tts quantize Qwen/Qwen3-TTS-12Hz-1.7B-Base -o qwen3-tts-awq
      awq-tts validate qwen3-tts-awq
      awq-tts synthesize qwen3-tts-awq --text "Hello." -o hello.wav
    Without network: `awq-tts make-tiny tiny-model` builds a small random checkpoint.
    """
    stop_cleanly_on_termination()


@main.command("make-tiny")
@click.argument("out", type=click.Path(path_type=Path))
@click.option(
    "--variant",
    type=click.Choice(["base", "custom_voice", "voice_design", "finetuned"]),
    default="base",
    show_default=True,
    help="Model type to mimic; 'finetuned' adds a talker layer and a speaker at codec row 3000.",
)
@click.option("--seed", type=SEED, default=0, show_default=True, help="Same seed, same bytes.")
@click.option("--full-shape", is_flag=True, help="Real 1.7B dimensions (≈4 GB, for benchmarks).")
@click.option("--trained", is_flag=True,
              help="Train the tiny Base model (≈1 min) on a structured task so it speaks and "
                   "stops at text-dependent lengths: a model the validator can judge.")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@friendly
def make_tiny(out: Path, variant: str, seed: int, full_shape: bool, trained: bool,
              force: bool) -> None:
    """Build a random-weight Qwen3-TTS checkpoint with qwen-tts's real classes in OUT."""
    from ..testing import make_tiny_checkpoint

    if trained:
        if variant != "base" or full_shape:
            raise UsageError("--trained builds the tiny Base model only (no --variant, "
                             "no --full-shape)")
        from ..testing.trained import make_trained_checkpoint

        make_trained_checkpoint(out, seed=seed, force=force)
        click.echo(f"wrote trained tiny base checkpoint to {out}")
        return
    make_tiny_checkpoint(out, variant=variant, seed=seed, full_shape=full_shape, force=force)
    click.echo(f"wrote {variant}{' (full shape)' if full_shape else ''} checkpoint to {out}")


@main.command()
@click.argument("model", type=str)
@click.option("--text", type=str, help="Text to speak.")
@click.option("--text-file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--language", default="English", show_default=True)
@click.option("--ref-audio", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Reference voice (Base models); default: a built-in synthetic clip.")
@click.option("--ref-text", type=str, help="Transcript of --ref-audio (enables ICL cloning).")
@click.option("--speaker", type=str, help="Built-in speaker (CustomVoice models).")
@click.option("--instruct", type=str, help="Voice description (VoiceDesign) or style.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=2048, show_default=True,
              help="Codec frames at most (12.5 per second of speech).")
@click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
@click.option("--backend", default="auto", show_default=True, help=BACKEND_HELP)
@click.option("--cuda-graphs", is_flag=True,
              help="CUDA only: replay each talker step and the code predictor's 15 "
                   "sub-steps per frame from CUDA graphs on static KV caches (a few launches "
                   "per frame instead of ~2,000 small kernels; a codec frame 5.8x faster on "
                   "an H200). A capture that fails is reported and that part runs eagerly.")
@click.option("--offload-embeddings", is_flag=True,
              help="Keep the 151k-row text embedding (0.58 GiB in bf16; only looked up to "
                   "build the prompt) in host memory and send the device only its rows.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Audio file to write: .wav or .flac (16-bit).")
@friendly
def synthesize(model, text, text_file, language, ref_audio, ref_text, speaker, instruct, seed,
               max_new_tokens, device, backend, cuda_graphs, offload_embeddings,
               output) -> None:
    """Speak text with MODEL (an INT4 or bf16 checkpoint folder) and write a wav.

    Long texts are split at sentence ends and the audio joined. Base models clone
    --ref-audio (any sample rate; resampled) or a built-in synthetic voice.
    """
    from ..io import require_readable_audio
    from ..output import check_placement, check_writable
    from ..runtime import graph_status, load
    from ..synth import audio_format, check_request, peak_memory_bytes, speak_long, write_wav

    if text_file is not None and text is not None:
        raise UsageError("pass --text or --text-file, not both")
    if text_file is not None:
        try:
            text = text_file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise UsageError(f"--text-file {text_file} is not UTF-8 text (byte {exc.start}); "
                             f"save it as UTF-8") from None
    if not text or not text.strip():
        raise UsageError("nothing to speak: pass --text TEXT or --text-file FILE")
    audio_format(output)
    check_placement(output, [model])
    check_writable(output, folder=False)
    if ref_audio is not None:
        require_readable_audio(ref_audio, f"cannot read reference audio {ref_audio}")
    tts = load(model, device=device, backend=backend, cuda_graphs=cuda_graphs,
               offload_embeddings=offload_embeddings)
    check_request(tts, language, ref_audio, ref_text=ref_text, speaker=speaker,
                  instruct=instruct)
    result = speak_long(
        tts, text, language=language, ref_audio=str(ref_audio) if ref_audio else None,
        ref_text=ref_text, speaker=speaker, instruct=instruct, seed=seed,
        max_new_tokens=max_new_tokens,
    )
    write_wav(output, result.wav, result.sample_rate, inputs=(model,))
    peak = peak_memory_bytes(str(tts.device)) / 2**30
    click.echo(
        f"wrote {output}: {result.seconds_audio:.2f} s of audio in {result.seconds_wall:.2f} s "
        f"(real-time factor {result.real_time_factor:.2f}, peak memory {peak:.2f} GiB, "
        f"{tts.device}, INT4 backend {tts.awq_backend}"
        + (f", CUDA graphs {graph_status(tts)}" if cuda_graphs else "") + ")"
    )
    if tts.device.type == "cuda" and not cuda_graphs:
        click.echo("tip: --cuda-graphs replays each talker step and code-predictor frame from "
                   "CUDA graphs (a codec frame 5.8x faster on an H200)")


@main.command()
@click.argument("src", type=str)
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True,
              help="Output folder (written atomically).")
@click.option("--group-size", type=int, default=128, show_default=True,
              help="Input channels per quantization group.")
@click.option("--n-samples", type=int, default=128, show_default=True,
              help="Calibration prompts to roll out.")
@click.option("--max-seq-len", type=int, default=512, show_default=True,
              help="Talker positions kept per calibration sequence.")
@click.option("--seed", type=SEED, default=1729, show_default=True)
@click.option("--device", default="auto", show_default=True,
              help="Where rollouts and per-layer search run (cuda moves one layer at a time); "
                   "auto: CUDA when available, else cpu.")
@click.option("--calib", type=str, default=None,
              help="Calibration prompts: 'builtin' (default), a JSONL/CSV/Parquet file or "
                   "folder, or a hub dataset name.")
@click.option("--revision", type=str, default=None, help="Hub revision of SRC.")
@click.option("--ref-audio", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Voice Base models clone during calibration (default: synthetic voices).")
@click.option("--batch-size", type=int, default=8, show_default=True,
              help="Sequences per forward chunk (lower it to save memory).")
@click.option("--method", type=click.Choice(list(METHODS)), default="awq", show_default=True,
              help="rtn: plain round-to-nearest, the baseline AWQ is measured against.")
@click.option("--loss-tokens", type=int, default=LOSS_TOKENS, show_default=True,
              help="Calibration tokens the scale and clip search losses replay (a seeded "
                   "sample across prompts and positions; statistics use every token). "
                   "0: all tokens (slow at the defaults).")
@click.option("--offload-activations", is_flag=True,
              help="Keep the layer activations on the CPU, not on the GPU (for GPUs under "
                   "8 GB; same result, more PCIe traffic).")
@click.option("--activation-dtype", type=click.Choice(list(ACTIVATION_DTYPES)),
              default="bfloat16", show_default=True,
              help="Dtype the layer inputs are kept in between layers: bfloat16 is what a "
                   "bf16 model's layers read at inference and half float32's memory (the "
                   "search computes in float32 either way).")
@click.option("--rollout", type=click.Choice(["auto", *ROLLOUTS]), default="auto",
              show_default=True,
              help="How calibration rollouts decode. dropping: each prompt leaves its batch "
                   "when it stops (a CPU pays per row); graphs (CUDA): the talker step and "
                   "the code predictor replayed from CUDA graphs, rows kept to the batch's "
                   "end (a GPU pays per launch); static: graphs' steps run eagerly. auto: "
                   "graphs on CUDA, else dropping.")
@click.option("--force", is_flag=True, help="Replace the output folder if it exists.")
@friendly
def quantize(src, out, group_size, n_samples, max_seq_len, seed, device, calib, revision,
             ref_audio, batch_size, method, loss_tokens, offload_activations,
             activation_dtype, rollout, force) -> None:
    """Quantize the talker of SRC (folder or hub id) to AWQ INT4 and write a checkpoint."""
    from ..quantizer import quantize as run
    from ..report import print_quantize_summary

    summary = run(src, out, group_size=group_size, n_samples=n_samples, max_seq_len=max_seq_len,
                  seed=seed, device=device, force=force, calib=calib, revision=revision,
                  batch_size=batch_size, method=method, ref_audio=ref_audio,
                  loss_tokens=loss_tokens or None, offload_activations=offload_activations,
                  activation_dtype=activation_dtype, rollout=rollout)
    print_quantize_summary(summary)


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@friendly
def inspect(folder: Path) -> None:
    """Print a readable summary of FOLDER's noesis_provenance.json."""
    from ..report import print_provenance

    print_provenance(folder)


@main.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--expect", type=str, default=None, metavar="SHA256",
              help="The provenance file's own sha256, as published by whoever made FOLDER.")
@friendly
def verify(folder: Path, expect: str | None) -> None:
    """Recompute every file hash of FOLDER; exit 1 on any difference from the record.

    This detects accidental change. Anyone who can edit a file can also edit its hash in
    the same folder: for tamper evidence, publish the printed provenance sha256 and check
    it later with --expect. (`validate` appends its verdict to the record, which changes
    that sha256: publish it after validating.)
    """
    import re

    from ..format.provenance import Provenance

    if expect is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", expect.strip()):
        raise UsageError(f"--expect {expect!r} is not a sha256 (64 hex digits); pass the "
                         f"'provenance sha256' line that verify prints")
    record = Provenance.read(folder)
    problems = record.verify(expect)
    for problem in problems:
        click.echo(problem)
    if problems:
        click.echo(f"FAILED: {len(problems)} problem(s) in {folder}", err=True)
        sys.exit(1)
    click.echo(f"OK: every file of {folder} matches its recorded sha256")
    click.echo(f"provenance sha256: {record.sha256}")


@main.group()
def calib() -> None:
    """Calibration sets."""


@calib.command("show")
@click.option("--calib", "source", type=str, default=None,
              help="'builtin' (default), 'heldout', a file/folder, or a hub dataset.")
@click.option("--n-samples", type=click.IntRange(min=1), default=None,
              help="Show only the first N prompts.")
@friendly
def calib_show(source, n_samples) -> None:
    """Print a prompt set: count per language, length statistics and hash."""
    from ..calibration.prompts import first_prompts, load_prompts
    from ..report import print_prompt_set

    name, prompts = load_prompts(source)
    print_prompt_set(name, first_prompts(prompts, name, n_samples))   # as quantize takes them


main.add_command(blend)
main.add_command(export)
main.add_command(studio)
main.add_command(repair)
main.add_command(validate)


def validate_main() -> None:
    """Entry point of ``validate_awq_quality`` (the same command as ``awq-tts validate``)."""
    validate(prog_name="validate_awq_quality")
