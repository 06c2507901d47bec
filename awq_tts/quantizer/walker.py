"""Walk the talker's decoder layers and quantize each one with AWQ.

For each layer, in order: record the inputs of its linears on the calibration batch;
search per-channel scales for every scale group (block-output error against the
unquantized block); fold them into the preceding norm or linear; search each linear's
clip range; quantize and pack; then run the *quantized* layer to produce the next layer's
inputs, so errors propagate as they will at inference. One layer at a time is moved to
the compute device and converted to float32.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import torch
from torch import nn

from ..models import adapter_for
from ..models.mapping import QWEN3_TTS_TALKER, LayerMapping, decoder_layers
from .activations import LayerInputs, capture_first_layer, float_kwargs, map_tensors
from .layer import LayerResult, quantize_layer
from .recipe import LOSS_TOKENS, LayerReport, QuantConfig, WalkResult
from .resident import LayerLoader
from .sample import draw

__all__ = ["LOSS_TOKENS", "LayerReport", "LayerResult", "QuantConfig", "WalkResult",
           "quantize_layer", "walk"]


@torch.no_grad()
def walk(
    model: nn.Module,
    embeds: torch.Tensor,
    mask: torch.Tensor,
    config: QuantConfig,
    device: str | torch.device = "cpu",
    mapping: LayerMapping = QWEN3_TTS_TALKER,
    loader: LayerLoader | None = None,
) -> Iterator[LayerReport | WalkResult]:
    """Quantize every talker decoder layer; yields one report per layer, then the result.

    With a ``loader`` the layers start empty (``release_for_walk``): each is loaded from
    the source files when its turn comes and freed when it is done, so one decoder layer
    is resident at a time.
    """
    device = torch.device(device)
    layers = decoder_layers(model, mapping)
    decoder = model.get_submodule(mapping.layers.rpartition(".")[0])  # the layers' owner
    position_ids = adapter_for(model.config.model_type).position_ids(model, mask)
    hidden, kwargs = capture_first_layer(decoder, layers[0], embeds.to(decoder.dtype), mask,
                                         position_ids)
    batch_dims = dict(mapping.layer_kwargs)
    # The layer kwargs (mask, rope cos/sin) are the same for every layer: uploaded once.
    kwargs = map_tensors(float_kwargs(kwargs), lambda t: t.to(device))
    store = torch.device("cpu") if config.offload_activations else device
    inputs = LayerInputs(hidden, kwargs, mask.bool(), batch_dims, device, config.batch_size,
                         store, getattr(torch, config.activation_dtype))
    inputs.hidden[~inputs.valid] = 0
    sample = draw(inputs.valid, config.loss_tokens, config.seed)
    result = WalkResult({}, {}, [], sample.tokens)
    for index, layer in enumerate(layers):
        prefix = f"{mapping.layers}.{index}"
        if loader is not None:
            loader.load(index, layer)
        source_dtype = next(layer.parameters()).dtype
        started = time.perf_counter()
        layer.to(device=device, dtype=torch.float32)
        done = quantize_layer(layer, inputs, config, mapping, source_dtype, sample)
        report, next_hidden = done.report, done.output
        report.index = index
        result.packed.update({f"{prefix}.{path}": p for path, p in done.packed.items()})
        result.changed.update({f"{prefix}.{name}": t for name, t in done.changed.items()})
        if loader is not None:
            loader.release(layer)
        else:
            layer.to(device="cpu", dtype=source_dtype)
        next_hidden[~inputs.valid] = 0
        inputs.keep(next_hidden)
        report.seconds = time.perf_counter() - started
        result.layers.append(report)
        yield report
    yield result
