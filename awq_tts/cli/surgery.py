"""``awq-tts blend`` and ``awq-tts repair``: checkpoint surgery before quantizing."""

from __future__ import annotations

from pathlib import Path

import click

from .common import friendly


@click.command()
@click.argument("tts", type=str)
@click.argument("llm", type=str)
@click.option("--alpha", type=str, default="0.03", show_default=True,
              help="LLM share: 0.03 or 3%. The Darwin card: 1% subtle, 3% emotion, "
                   "5% max stable, 10% breaks the stop signal.")
@click.option("--layers", type=str, default=None, help="Talker layers to blend, e.g. 0-13,20.")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True)
@click.option("--force", is_flag=True, help="Replace the output folder if it exists.")
@friendly
def blend(tts, llm, alpha, layers, out, force) -> None:
    """Lerp the FFN weights of Qwen3 LLM into the talker of Qwen3-TTS checkpoint TTS."""
    import warnings

    from ..ckpt import blend as run

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = run(tts, llm, alpha, out, layers=layers, force=force)
    for warning in caught:
        click.echo(f"warning: {warning.message}", err=True)
    click.echo(f"blended {len(record['blended_tensors'])} tensors at alpha {record['alpha']:.4f} "
               f"into {out}")


@click.command()
@click.argument("ckpt", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--speech-tokenizer-from", "base", type=str, required=True,
              help="Base Qwen3-TTS checkpoint (folder or hub id) to take speech_tokenizer/ from.")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), default=None,
              help="Write a repaired copy here instead of repairing CKPT in place.")
@click.option("--force", is_flag=True, help="Replace the output folder if it exists.")
@friendly
def repair(ckpt, base, out, force) -> None:
    """Add a missing speech_tokenizer/ (and processor files) to CKPT from a base model."""
    from ..ckpt import repair as run

    added = run(ckpt, base, out=out, force=force)
    where = out or ckpt
    if not added:
        click.echo(f"{where}: nothing to repair")
    else:
        click.echo(f"{where}: added {len(added)} file(s): {', '.join(added)}")
