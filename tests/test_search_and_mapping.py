"""Scale search beats round-to-nearest where activations have outliers; the mapping resolves
against real qwen-tts decoder layers and fails loudly when it cannot."""

from __future__ import annotations

import pytest
import torch

from awq_tts.models.mapping import (
    QWEN3_TTS_TALKER,
    LayerMapping,
    MappingError,
    ScaleGroup,
    quantized_linears,
    resolve_groups,
)
from awq_tts.quantizer import numerics
from awq_tts.quantizer.search import search_clip, search_scales


def _outlier_problem(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 256, generator=gen)
    x[:, :4] *= 30.0
    lin = torch.nn.Linear(256, 128, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(128, 256, generator=gen) * 0.05)
    return x, lin


def test_awq_scales_beat_rtn_on_activation_outliers():
    x, lin = _outlier_problem()
    ref = lin(x).detach()
    original = lin.weight.detach().clone()

    def error() -> float:
        return float((lin(x) - ref).pow(2).mean())

    choice = search_scales([lin], x.abs().mean(0), error, group_size=128, n_grid=20)
    assert torch.equal(lin.weight, original), "search must restore the weights"
    assert choice.ratio is not None
    assert choice.awq_error < 0.8 * choice.rtn_error


def test_search_keeps_identity_when_nothing_helps():
    lin = torch.nn.Linear(128, 64, bias=False)
    x = torch.ones(16, 128)

    choice = search_scales([lin], x.abs().mean(0), lambda: 1.0, group_size=128, n_grid=4)
    assert choice.ratio is None and torch.all(choice.scales == 1)
    assert choice.awq_error <= choice.rtn_error


def test_clip_search_never_increases_groupwise_error():
    x, lin = _outlier_problem(1)
    w = lin.weight.detach()
    clip = search_clip(w, x[:256], group_size=128)
    assert clip.shape == (128, 2)
    org_max = w.reshape(128, 2, 128).abs().amax(-1)
    assert torch.all(clip <= org_max) and torch.all(clip >= 0.5 * org_max - 1e-6)

    def group_err(q):
        xg, qg, wg = (t.reshape(-1, 2, 128) for t in (x[:256], q, w))
        return (torch.einsum("ngk,ogk->ogn", xg, qg) - torch.einsum("ngk,ogk->ogn", xg, wg)
                ).pow(2).mean(-1)

    clipped = numerics.fake_quantize(w, 128, clip)
    assert torch.all(group_err(clipped) <= group_err(numerics.fake_quantize(w, 128)) + 1e-9)


def _talker_layer(kv_heads: int):
    from awq_tts.models.qwen3_tts.package import qwen_tts

    qwen_tts()
    from qwen_tts.core.models.configuration_qwen3_tts import Qwen3TTSTalkerConfig
    from qwen_tts.core.models.modeling_qwen3_tts import Qwen3TTSTalkerDecoderLayer

    cfg = Qwen3TTSTalkerConfig(hidden_size=256, intermediate_size=512, num_attention_heads=4,
                               num_key_value_heads=kv_heads, head_dim=64,
                               rope_scaling={"interleaved": True, "mrope_section": [12, 10, 10],
                                             "rope_type": "default"})
    return Qwen3TTSTalkerDecoderLayer(cfg, 0)


def test_gqa_skips_v_to_o_and_mha_keeps_it():
    gqa = [g.spec.prev for g in resolve_groups(_talker_layer(kv_heads=2))]
    mha = [g.spec.prev for g in resolve_groups(_talker_layer(kv_heads=4))]
    assert "self_attn.v_proj" not in gqa
    assert gqa == ["input_layernorm", "post_attention_layernorm", "mlp.up_proj"]
    assert mha == ["input_layernorm", "self_attn.v_proj", "post_attention_layernorm",
                   "mlp.up_proj"]
    assert len(quantized_linears(_talker_layer(2))) == 7


def test_missing_module_is_named():
    broken = LayerMapping(
        layers=QWEN3_TTS_TALKER.layers,
        quantized=("self_attn.q_proj",),
        groups=(ScaleGroup("input_layernorm", ("self_attn.qkv_proj",), "self_attn"),),
    )
    with pytest.raises(MappingError, match="self_attn.qkv_proj"):
        resolve_groups(_talker_layer(2), broken)
