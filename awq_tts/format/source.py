"""Find and check the source checkpoint before any work starts.

Every problem a user can fix (wrong folder, wrong model, missing files, shapes the group
size cannot split) is raised here as a one-line ``UsageError`` naming the problem and the
fix, before anything is computed or written. Only headers are read here: NaN/Inf weights
are found by ``require_finite`` on the model as loaded for calibration (bit tests on
tensors already in memory), so a 4 GB source is not read twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from ..errors import UsageError
from ..io import hash_tree

TOKENIZER_FILES = ("tokenizer_config.json",)
#: Group sizes AutoAWQ's GEMM kernels (and torch's int4 kernel) run.
GROUP_SIZES = (32, 64, 128)


@dataclass
class Source:
    spec: str
    path: Path
    revision: str | None
    config: dict

    def weight_files(self) -> list[Path]:
        return weight_files(self.path)

    def describe(self) -> dict:
        """Identity for provenance: an absolute path (or the hub id and revision) + hashes.

        A local source is recorded by its resolved absolute path, so a record written in
        one working folder still finds its source from any other.
        """
        local = Path(self.spec).exists()
        return {"id_or_path": str(self.path.resolve()) if local else self.spec,
                "given_as": self.spec, "revision": self.revision,
                "files": hash_tree(self.path)}


def resolve(spec: str, revision: str | None = None) -> Source:
    """A local folder as is; anything else is downloaded from the hub as a model id."""
    path = Path(spec)
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{spec} is a file; pass the checkpoint *folder*")
        if revision is not None:
            raise UsageError(f"--revision {revision} picks a hub revision, and {spec} is a "
                             f"local folder; leave --revision out")
        return Source(spec, path, None, _read_config(path))
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        raise UsageError(f"{spec}: no such folder (and not a hub id of the form owner/name)")
    from huggingface_hub import snapshot_download

    try:
        local = Path(snapshot_download(spec, revision=revision))
    except Exception as exc:
        raise UsageError(f"cannot download {spec!r} from the hub: {exc}") from exc
    return Source(spec, local, revision or local.name, _read_config(local))


def _read_config(path: Path) -> dict:
    cfg = path / "config.json"
    if not cfg.is_file():
        raise UsageError(f"{path} is not a checkpoint folder: it has no config.json")
    config = read_json(cfg)
    if not isinstance(config, dict):
        raise UsageError(f"{cfg} holds a JSON {type(config).__name__}, not an object; "
                         f"restore the checkpoint's config.json")
    return config


def read_json(path: Path):
    """Parse a JSON file, turning unreadable text or bad JSON into a one-line UsageError."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text; restore it from the original") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not valid JSON ({exc}); restore it from the "
                         f"original") from None


def weight_files(path: Path) -> list[Path]:
    """The checkpoint's safetensors files, each with a readable header (else a UsageError)."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        doc = read_json(index)
        weight_map = doc.get("weight_map") if isinstance(doc, dict) else None
        if not isinstance(weight_map, dict) or not all(
                isinstance(v, str) for v in weight_map.values()):
            raise UsageError(f"{index} has no valid weight_map; restore the index from the "
                             f"original checkpoint")
        names = sorted(set(weight_map.values()))
        missing = [n for n in names if not (path / n).is_file()]
        if missing:
            raise UsageError(f"{path}: weight shards listed in the index are missing: {missing}")
        files = [path / n for n in names]
    elif (path / "model.safetensors").is_file():
        files = [path / "model.safetensors"]
    elif any(path.glob("*.bin")) or any(path.glob("*.pt")):
        raise UsageError(f"{path} holds only PyTorch pickle weights (*.bin/*.pt); awq-tts reads "
                         f"safetensors only and never unpickles a checkpoint: convert it to "
                         f"model.safetensors first")
    else:
        raise UsageError(f"{path} has no model.safetensors (or sharded index)")
    for file in files:
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except Exception as exc:
            raise UsageError(f"{file} is not a readable safetensors file ({exc}); it may be "
                             f"truncated or damaged: copy or download it again") from None
    return files


def check(source: Source, group_size: int) -> None:
    """Raise a UsageError for anything that would make quantization fail or lie."""
    cfg, path = source.config, source.path
    from ..models import adapter_for

    adapter = adapter_for(cfg.get("model_type"), source.spec)
    if cfg.get("quantization_config"):
        raise UsageError(f"{source.spec} is already quantized (its config.json has a "
                         f"quantization_config); quantize its bf16 source instead")
    if group_size not in GROUP_SIZES:
        raise UsageError(f"--group-size {group_size}: AWQ's kernels run group sizes "
                         f"{', '.join(map(str, GROUP_SIZES))}")
    weight_files(path)
    missing = [f for f in TOKENIZER_FILES if not (path / f).is_file()]
    if not (path / "tokenizer.json").is_file() and not (path / "vocab.json").is_file():
        missing.append("tokenizer.json or vocab.json")
    if missing:
        raise UsageError(f"{path} lacks tokenizer files: {', '.join(missing)}")
    require_speech_tokenizer(path)
    decoder = adapter.decoder_config(cfg)
    for key in ("hidden_size", "intermediate_size"):
        size = int(decoder.get(key, 0))
        if size <= 0 or size % group_size:
            raise UsageError(
                f"talker {key} {size} is not divisible by --group-size {group_size}; "
                f"choose a group size that divides it"
            )


def has_speech_tokenizer(path: Path) -> bool:
    """A usable ``speech_tokenizer/``: its config and its weights (an empty folder is not)."""
    codec = path / "speech_tokenizer"
    return (codec / "config.json").is_file() and any(codec.glob("*.safetensors"))


def require_speech_tokenizer(path: Path) -> None:
    """qwen-tts cannot load a checkpoint without its codec; name the command that adds it."""
    if not has_speech_tokenizer(path):
        raise UsageError(
            f"{path} has no speech_tokenizer/ (as in the original Darwin-TTS upload); add it "
            f"with `awq-tts repair {path} --speech-tokenizer-from BASE_MODEL`"
        )


#: Exponent-field masks: a float is NaN or Inf exactly when all its exponent bits are set.
_EXPONENT = {torch.bfloat16: (torch.int16, 0x7F80), torch.float16: (torch.int16, 0x7C00),
             torch.float32: (torch.int32, 0x7F800000)}


def require_finite(model: torch.nn.Module) -> None:
    """Refuse the first parameter holding NaN or Inf, by name (integer bit test, no copy)."""
    for name, param in model.named_parameters():
        spec = _EXPONENT.get(param.dtype)
        if spec is None:
            bad = param.is_floating_point() and not bool(torch.isfinite(param).all())
        else:
            int_dtype, mask = spec
            bits = param.detach().view(int_dtype)
            bad = bool(((bits & mask) == mask).any())
        if bad:
            raise UsageError(f"tensor {name} contains NaN or Inf values; restore the "
                             f"checkpoint from its original")
