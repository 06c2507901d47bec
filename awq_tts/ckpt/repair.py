"""``awq-tts repair``: add a missing ``speech_tokenizer/`` (and processor files) from a base model.

The original Darwin-TTS upload ships without ``speech_tokenizer/``, so qwen-tts cannot load
it. The codec is shared by every Qwen3-TTS 12 Hz model of a size, so it can be taken from
the base checkpoint — after checking that it fits: same tokenizer type, and a codebook
and quantizer count that match the talker's codec vocabulary and code groups.
``noesis_repair.json`` records what was added and from where.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..errors import UsageError
from ..format.source import has_speech_tokenizer, read_json, resolve
from ..io import hash_tree, sha256_file
from ..output import atomic_output_dir, check_writable, output_lock, remove_debris

REPAIR_FILE = "noesis_repair.json"
PROCESSOR_FILES = (
    "tokenizer_config.json", "tokenizer.json", "vocab.json", "merges.txt",
    "special_tokens_map.json", "added_tokens.json", "preprocessor_config.json",
    "generation_config.json",
)


def check_codec_fits(ckpt_config: dict, codec_config: dict, base_config: dict) -> None:
    """Refuse a speech tokenizer whose codes the talker could not have produced."""
    if ckpt_config.get("tokenizer_type") != base_config.get("tokenizer_type"):
        raise UsageError(f"tokenizer_type differs: checkpoint {ckpt_config.get('tokenizer_type')!r}"
                         f" vs base {base_config.get('tokenizer_type')!r}")
    talker = ckpt_config.get("talker_config", {})
    decoder = codec_config.get("decoder_config", {})
    codebook = int(talker.get("vocab_size", 0)) - 1024
    if decoder.get("codebook_size") != codebook:
        raise UsageError(f"codec codebook {decoder.get('codebook_size')} does not match the "
                         f"talker's codec vocabulary ({codebook} codes + 1024 special ids)")
    if decoder.get("num_quantizers") != talker.get("num_code_groups"):
        raise UsageError(f"codec has {decoder.get('num_quantizers')} quantizers but the talker "
                         f"predicts {talker.get('num_code_groups')} code groups")


def repair(ckpt: str | Path, base_spec: str, out: str | Path | None = None,
           force: bool = False) -> list[str]:
    """Add what ``ckpt`` lacks from ``base_spec``; return the files added.

    In place (each addition renamed into the folder when complete) unless ``out`` is
    given, in which case a repaired copy is written there atomically.
    """
    ckpt = Path(ckpt)
    if not (ckpt / "config.json").is_file():
        raise UsageError(f"{ckpt} is not a checkpoint folder: it has no config.json")
    base = resolve(base_spec)
    codec_dir = base.path / "speech_tokenizer"
    if not (codec_dir / "config.json").is_file():
        raise UsageError(f"the base {base_spec} has no speech_tokenizer/ to take")
    ckpt_config = read_json(ckpt / "config.json")
    if not isinstance(ckpt_config, dict):
        raise UsageError(f"{ckpt}/config.json is not a JSON object; restore it")
    codec_config = read_json(codec_dir / "config.json")
    if not isinstance(codec_config, dict):
        raise UsageError(f"{codec_dir}/config.json is not a JSON object; the base's "
                         f"speech_tokenizer/ is damaged")
    check_codec_fits(ckpt_config, codec_config, base.config)
    needed = [] if has_speech_tokenizer(ckpt) else ["speech_tokenizer"]
    needed += [f for f in PROCESSOR_FILES if not (ckpt / f).exists() and (base.path / f).exists()]
    if not needed:
        return []
    if out is None:
        check_writable(ckpt / REPAIR_FILE, _size(base.path / "speech_tokenizer"), folder=False)
        with output_lock(ckpt / "repair"):
            staging = ckpt / f".repair.{os.getpid()}.partial"
            remove_debris(ckpt / "repair")
            staging.mkdir()
            try:
                added = _stage(base, base_spec, needed, staging)
                for name in [*needed, REPAIR_FILE]:
                    if (ckpt / name).is_dir():  # an empty or incomplete speech_tokenizer/
                        shutil.rmtree(ckpt / name)
                    (staging / name).replace(ckpt / name)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return added
    with atomic_output_dir(out, force=force, inputs=[ckpt, base.path],
                           expected_bytes=_size(ckpt) + _size(codec_dir)) as tmp:
        shutil.copytree(ckpt, tmp, dirs_exist_ok=True)
        if "speech_tokenizer" in needed and (tmp / "speech_tokenizer").is_dir():
            shutil.rmtree(tmp / "speech_tokenizer")
        return _stage(base, base_spec, needed, tmp)


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _stage(base, base_spec: str, needed: list[str], dst: Path) -> list[str]:
    """Copy ``needed`` from the base into ``dst`` and write the repair record there."""
    added: dict[str, str] = {}
    for name in needed:
        source = base.path / name
        if source.is_dir():
            shutil.copytree(source, dst / name)
            added.update({f"{name}/{rel}": h for rel, h in hash_tree(source).items()})
        else:
            shutil.copy2(source, dst / name)
            added[name] = sha256_file(source)
    record = {"base": {"id_or_path": base_spec, "revision": base.revision}, "added": added}
    (dst / REPAIR_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return sorted(added)
