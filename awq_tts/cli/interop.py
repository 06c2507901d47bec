"""``awq-tts export``: an INT4 folder in the formats other loaders read."""

from __future__ import annotations

from pathlib import Path

import click

from .common import friendly


@click.command()
@click.argument("int4_dir", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["compressed-tensors", "autoawq"]),
              default="compressed-tensors", show_default=True,
              help="compressed-tensors: pack-quantized, read by transformers' compressed-"
                   "tensors integration and vLLM-family engines (lossless; needs "
                   "`pip install 'awq-tts[export]'`). autoawq: the folder as is, checked.")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True,
              help="Output folder (written atomically).")
@click.option("--force", is_flag=True, help="Replace the output folder if it exists.")
@friendly
def export(int4_dir: Path, fmt: str, out: Path, force: bool) -> None:
    """Write the awq-tts INT4 folder INT4_DIR in another loader's format.

    The folder must verify (`awq-tts verify`). The weights are the same numbers either way:
    the compressed-tensors export decompresses to exactly the INT4 model's weights, and its
    noesis_provenance.json records where it came from.
    """
    from ..export import export as run

    run(int4_dir, out, fmt, force=force)
    click.echo(f"wrote {out} ({fmt})")
