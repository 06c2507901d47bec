"""``awq_tts.load``: one call from a checkpoint folder to a working ``qwen_tts.Qwen3TTSModel``.

For an INT4 checkpoint (``quantization_config`` in config.json) the model is built with
empty (meta) parameters, every talker decoder linear that the checkpoint stores packed is
swapped for an :class:`Int4Linear`, and the safetensors are loaded straight into place,
shard by shard, on the target device: peak memory is the INT4 checkpoint, never a bf16
copy of the talker. Everything else (speech tokenizer, processor, generation defaults) is
loaded as qwen-tts loads it. A checkpoint without ``quantization_config`` is loaded by
qwen-tts unchanged, so the same call serves the bf16 reference.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from ..devices import resolve_device
from ..errors import UsageError
from ..format.source import (
    require_speech_tokenizer,
    resolve,
    weight_files,
)
from ..models import adapter_for, adapter_of
from . import bf16_gemv
from .backends import get_backend
from .host_embedding import offload
from .int4_linear import Int4Linear
from .prepare import prepare_for_inference
from .siblings import groups

#: The compute dtypes a model loads in, by torch dtype and by name.
DTYPES = {torch.bfloat16: torch.bfloat16, torch.float16: torch.float16,
          torch.float32: torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16, "float32": torch.float32,
          "fp32": torch.float32}


def resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """``dtype`` as a torch dtype, or one line naming the ones a model can compute in."""
    found = DTYPES.get(dtype.lower() if isinstance(dtype, str) else dtype)
    if found is None:
        raise UsageError(f"dtype {dtype!r}: load in torch.bfloat16, torch.float16 or "
                         f"torch.float32 (or their names)")
    return found


def load(path: str | Path, device: str = "auto", dtype: torch.dtype | str = torch.bfloat16,
         backend: str = "auto", cuda_graphs: bool = False, offload_embeddings: bool = False,
         fuse: bool = True):
    """Load a Qwen3-TTS checkpoint (INT4 or not) as a ``qwen_tts.Qwen3TTSModel``.

    ``path`` is a local folder or a hub id (downloaded with huggingface_hub). ``device``
    ``auto`` is CUDA when available, else the CPU. ``dtype`` is bf16, fp16 or fp32 (a torch
    dtype or its name). ``backend`` picks the INT4 kernel
    (``auto``, ``avx2``, ``int4pack``, ``awq-triton``, ``dequant``; see ``runtime.backends``); the
    choice is on the result as ``tts.awq_backend`` (``none`` for a bf16 checkpoint). On a
    CPU the speech tokenizer and the speaker encoder run in float32 whatever ``dtype`` says
    (their bf16 convolutions are 35–70× slower there; ``models/qwen3_tts/audio_dtype.py``);
    the speech tokenizer's dtype is ``tts.awq_codec_dtype``. INT4 linears that read one
    input (q/k/v, gate/up) run as one matmul each (``runtime/siblings.py``; the state dict
    is unchanged); ``fuse=False`` keeps them apart, for comparisons. ``cuda_graphs`` (CUDA only)
    replays each talker decode step and the code predictor's 15 sub-steps per frame from
    CUDA graphs on static KV caches (``models/qwen3_tts/talker_graphs.py``, ``graphs.py``);
    ``tts.awq_cuda_graphs`` is the setting, and ``graph_status(tts)`` says how many graphs
    are captured or why a capture failed (that part then runs eagerly).
    ``offload_embeddings`` keeps the lookup-only tables (Qwen3-TTS's text embedding, 0.58
    GiB in bf16) in host memory and sends only the looked-up rows to the device
    (``runtime/host_embedding.py``); an INT4 checkpoint never puts them on the device at
    all. ``tts.awq_host_bytes`` is what stays on the host (0 without the option).
    On a CPU the bf16 linears every codec frame runs besides the talker's decoder (the code
    predictor, the codec head) take this project's streaming kernel at decode's few rows
    (``runtime/bf16_gemv.py``); ``tts.awq_gemv_linears`` counts them (0 where it cannot run).
    """
    device = resolve_device(device)
    dtype = resolve_dtype(dtype)
    require_cuda_for_graphs(cuda_graphs, device)
    source = resolve(str(path))
    adapter = adapter_for(source.config.get("model_type"), path)
    files = weight_files(source.path)
    require_speech_tokenizer(source.path)
    if backend != "auto":
        get_backend(backend, device)
    qconfig = source.config.get("quantization_config")
    host = adapter.host_lookups if offload_embeddings else ()
    if qconfig is None:
        tts = adapter.from_pretrained(source.path, device_map=device, dtype=dtype)
        tts.awq_backend = "none"
    else:
        tts = _load_int4(adapter, source.path, files, qconfig, device, dtype, host)
        siblings = groups(adapter.decoder_layers(tts.model), adapter.mapping) if fuse else ()
        tts.awq_backend = prepare_for_inference(tts.model, backend, dtype, siblings)
    tts.awq_host_bytes = offload(tts.model, host)
    tts.awq_codec_dtype = str(adapter.place_audio(tts, device)).removeprefix("torch.")
    tts.awq_gemv_linears = sum(bf16_gemv.install(tts.model.get_submodule(name))
                               for name in adapter.bf16_decode) if device == "cpu" else 0
    adapter.use_cuda_graphs(tts, cuda_graphs)
    tts.awq_cuda_graphs = cuda_graphs
    return tts


def require_cuda_for_graphs(cuda_graphs: bool, device: str) -> None:
    """One line, before any work, when CUDA graphs are asked for off CUDA."""
    if cuda_graphs and not device.startswith("cuda"):
        raise UsageError(f"CUDA graphs need a CUDA device, and this runs on {device}; "
                         f"leave --cuda-graphs (cuda_graphs) off there")


def graph_status(tts) -> str:
    """The CUDA graphs' state of a model ``load`` returned, e.g. ``talker step on (2
    captured); code predictor on (1 captured, 1 failed: reason)``, or ``… off``."""
    return adapter_of(tts).graph_status(tts)


def _load_int4(adapter, path: Path, files: list[Path], qconfig: dict, device: str,
               dtype: torch.dtype, host: tuple[str, ...]):
    if qconfig.get("quant_method") != "awq" or qconfig.get("version") != "gemm":
        raise UsageError(f"{path}: unsupported quantization_config {qconfig}; "
                         f"awq-tts loads AWQ GEMM checkpoints")
    model = adapter.empty_model(path)
    packed = _packed_modules(files)
    _swap_int4_modules(model, packed, int(qconfig["group_size"]))
    _load_into_place(model, files, set(packed), device, dtype, host)
    return adapter.assemble(model, path, device, dtype)


def _packed_modules(files: list[Path]) -> list[str]:
    names = []
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            names += [k[: -len(".qweight")] for k in handle.keys() if k.endswith(".qweight")]
    return sorted(names)


def _swap_int4_modules(model: torch.nn.Module, packed: list[str], group_size: int) -> None:
    for name in packed:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        old = getattr(parent, child)
        if not isinstance(old, torch.nn.Linear):
            raise UsageError(f"checkpoint packs '{name}', but the model has a "
                             f"{type(old).__name__} there")
        with torch.device("meta"):
            new = Int4Linear(old.in_features, old.out_features, group_size, old.bias is not None)
        setattr(parent, child, new)


def _load_into_place(model: torch.nn.Module, files: list[Path], packed: set[str], device: str,
                     dtype: torch.dtype, host: tuple[str, ...] = ()) -> None:
    """Assign every tensor to its module; floats take ``dtype`` except INT4 buffers (fp16).
    The modules named in ``host`` keep their tensors on the CPU and become host lookups
    before the model moves, so they never reach the device."""
    expected = set(model.state_dict())
    seen: set[str] = set()
    on_host = tuple(f"{name}." for name in host)
    for file in files:
        with safe_open(str(file), framework="pt", device="cpu") as handle:
            shard = {}
            for key in handle.keys():
                tensor = handle.get_tensor(key)
                if tensor.is_floating_point() and key.rpartition(".")[0] not in packed:
                    tensor = tensor.to(dtype)
                shard[key] = tensor if key.startswith(on_host) \
                    else tensor.to(device)
            unexpected = set(shard) - expected
            if unexpected:
                raise UsageError(f"{file.name}: tensors the model does not have: "
                                 f"{sorted(unexpected)[:5]}")
            model.load_state_dict(shard, strict=False, assign=True)
            seen |= set(shard)
            del shard
    missing = expected - seen
    if missing:
        raise UsageError(f"the checkpoint lacks tensors the model needs: {sorted(missing)[:5]}")
    offload(model, host)
    model.to(device)
    leftovers = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftovers:
        raise RuntimeError(f"tensors left uninitialised after loading: {leftovers[:5]}")
