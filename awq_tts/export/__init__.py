"""``awq_tts.export``: an INT4 folder in the formats other loaders read.

* ``autoawq`` — the folder as it is (it already is AutoAWQ GEMM), after a check: the
  provenance verifies, the config says AWQ GEMM, every packed linear has its three tensors.
* ``compressed-tensors`` — the same weights as compressed-tensors ``pack-quantized``
  (lossless, see ``compressed_tensors.py``), read by transformers' compressed-tensors
  integration and by vLLM-family engines. Provenance is carried over with the conversion
  recorded under ``export``.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

from ..errors import UsageError
from ..format import checkpoint, provenance
from ..format.checkpoint import CheckpointTensors
from ..format.packing import PackedLinear
from ..format.source import read_json
from ..models import adapter_for
from ..output import atomic_output_dir
from . import compressed_tensors as ct

FORMATS = ("compressed-tensors", "autoawq")


def export(int4_dir: str | Path, out: str | Path, format: str = "compressed-tensors",
           force: bool = False) -> Path:
    """Write ``int4_dir`` (an awq-tts INT4 folder) to ``out`` in ``format``; return ``out``."""
    if format not in FORMATS:
        raise UsageError(f"--format {format!r}: choose one of {', '.join(FORMATS)}")
    src, out = Path(int4_dir), Path(out)
    packed = _check_int4(src)
    if out.exists() and not force:
        raise UsageError(f"{out} already exists; pass --force to replace it")
    pack = ct.pack_to_int32() if format == "compressed-tensors" else None
    size = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    with atomic_output_dir(out, force=force, inputs=[src], expected_bytes=size) as tmp:
        if format == "autoawq":
            shutil.copytree(src, tmp, dirs_exist_ok=True)
            return out
        config = read_json(src / "config.json")
        adapter = adapter_for(config.get("model_type"), src)
        group = int(config["quantization_config"]["group_size"])
        checkpoint.copy_non_weight_files(src, tmp, skip=(provenance.FILENAME, "config.json"))
        checkpoint.write_config(config, tmp,
                                ct.quantization_config(group, ct.untouched_linears(src, adapter),
                                                       adapter.mapping))
        tensors = CheckpointTensors(src)
        checkpoint.write_tensors(_converted(tensors, packed, pack), tmp)
        origin = provenance.Provenance.read(src)
        record = dict(origin.record)
        record["export"] = {
            "format": "compressed-tensors/pack-quantized",
            "from": str(src.resolve()),
            "from_provenance_sha256": origin.sha256,
            "compressed_tensors": ct.PINNED,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        provenance.Provenance.create(tmp, record)
    return out


def _check_int4(src: Path) -> list[str]:
    """The packed linears' prefixes, after refusing anything but an intact awq-tts folder."""
    if not src.is_dir():
        raise UsageError(f"{src}: no such INT4 folder")
    if not (src / "config.json").is_file():
        raise UsageError(f"{src} is not a checkpoint folder: it has no config.json")
    quant = read_json(src / "config.json").get("quantization_config") or {}
    if quant.get("quant_method") != "awq" or quant.get("version") != "gemm":
        raise UsageError(f"{src} is not an AWQ GEMM INT4 folder (its config.json has no AWQ "
                         f"quantization_config); run `awq-tts quantize` first")
    problems = provenance.Provenance.read(src).verify()
    if problems:
        raise UsageError(f"{src} changed since it was written ({problems[0]}); export only "
                         f"a folder that `awq-tts verify` accepts")
    tensors = CheckpointTensors(src)
    prefixes = sorted(k[: -len(".qweight")] for k in tensors if k.endswith(".qweight"))
    incomplete = [p for p in prefixes
                  if f"{p}.qzeros" not in tensors or f"{p}.scales" not in tensors]
    if not prefixes or incomplete:
        raise UsageError(f"{src}: packed linears are incomplete ({incomplete[:2] or 'none'}); "
                         f"re-run `awq-tts quantize`")
    return prefixes


def _converted(tensors: CheckpointTensors, prefixes: list[str], pack):
    """Every tensor of the folder, each packed linear replaced by its converted group."""
    packed = set(prefixes)
    for key in tensors:
        prefix, _, leaf = key.rpartition(".")
        if prefix in packed:
            if leaf == "qweight":
                bias = tensors[f"{prefix}.bias"] if f"{prefix}.bias" in tensors else None
                linear = PackedLinear(tensors[key], tensors[f"{prefix}.qzeros"],
                                      tensors[f"{prefix}.scales"], bias)
                yield ct.convert_linear(prefix, linear, pack)
            continue
        yield {key: tensors[key]}


__all__ = ["FORMATS", "export"]
