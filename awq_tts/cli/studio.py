"""``awq-tts studio``: the web studio over the library (Gradio)."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import UsageError
from .common import DEVICE_HELP, friendly


@click.command()
@click.argument("model", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--reference", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, help="The bf16 source, for A/B renders (same script and seed).")
@click.option("--device", default="auto", show_default=True, help=DEVICE_HELP)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("studio-renders"),
              show_default=True, help="Folder for every render (timestamped wav + JSON).")
@click.option("--budget-gb", type=click.FloatRange(min=0, min_open=True), default=6.0,
              show_default=True,
              help="Memory both models may take together; above it the reference is loaded "
                   "per A/B render.")
@click.option("--offload-embeddings", is_flag=True,
              help="Keep both models' text embeddings (0.58 GiB each in bf16) in host memory: "
                   "1.16 GiB less on the device, often the difference between both models "
                   "staying resident and a reload per A/B render.")
@friendly
def studio(model: Path, reference: Path | None, device: str, host: str, port: int,
           out_dir: Path, budget_gb: float, offload_embeddings: bool) -> None:
    """Speak tagged scripts ([Whispering] … [Angry] …) with the INT4 MODEL in a web page:
    one fixed voice, A/B and blind A/B against --reference, the provenance and last verdict."""
    from ..studio.app import build_app
    from ..studio.session import StudioSession

    _require_free_port(host, port)
    session = StudioSession(model, reference, device=device, out_dir=out_dir,
                            budget_gb=budget_gb, offload_embeddings=offload_embeddings)
    click.echo(f"studio: {model} ({session.kind}); {session.memory_note or 'INT4 only'}")
    build_app(session).launch(server_name=host, server_port=port)


def _require_free_port(host: str, port: int) -> None:
    """One line, before minutes of model loading, when the page cannot be served there."""
    import socket

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        reason = (exc.strerror or str(exc)).split(" (while attempting")[0]
        raise UsageError(f"cannot serve on {host}:{port} ({reason}); pass another --port "
                         f"(or --host)") from None
