"""GOFT, GOFT* and qGOFT layers and methods: identity init, forward convention, merge/unmerge, penalty, save/load,
and the paper's parameter counts."""

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from transformers import DebertaV2Config, DebertaV2ForSequenceClassification, LlamaConfig, LlamaForCausalLM
from transformers.pytorch_utils import Conv1D

from qgoft_bench.errors import ConfigError
from qgoft_bench.methods import build_method
from qgoft_bench.methods.givens import GivensConfig, GivensLayer, GOFTLayer
from qgoft_bench.methods.givens.model import LAYERS
from qgoft_bench.methods.state import load_adapter, save_adapter
from qgoft_bench.models import ModelSpec
from qgoft_bench.rotation import givens_matrix

CONF = Path(__file__).resolve().parents[2] / "conf" / "method"
DEBERTA_TARGETS = [
    "query_proj",
    "key_proj",
    "value_proj",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
]
DEBERTA_SPEC = ModelSpec(family="deberta", head_modules=["pooler", "classifier"])
KINDS = ["goft", "goft_scaled", "qgoft"]


def make_layer(kind: str, base: nn.Module, parametrization: str = "tanh") -> GivensLayer:
    """The layer the method ``kind`` wraps ``base`` in (the method's own table)."""
    return LAYERS[kind](base, SimpleNamespace(parametrization=parametrization))


def randomize(layer: GivensLayer, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in layer.parameters(recurse=False):  # the adapter's own parameters, not the base layer's
            param.add_(0.3 * torch.randn(param.shape, generator=gen))


def method_cfg(kind: str, targets: list[str], **extra):
    return OmegaConf.create({"name": kind, "label": kind, "target_modules": targets, **extra})


def tiny_deberta(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    config = DebertaV2Config(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=2,
        pooler_hidden_size=32,
    )
    return DebertaV2ForSequenceClassification(config).eval()


def adapter_params(model: nn.Module, head: tuple[str, ...]) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and not n.startswith(head))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("base_kind", ["linear", "conv1d"])
def test_identity_init_is_a_no_op(kind: str, base_kind: str) -> None:
    base = nn.Linear(24, 10) if base_kind == "linear" else Conv1D(10, 24)
    x = torch.randn(3, 5, 24)
    expected = base(x)
    torch.testing.assert_close(make_layer(kind, base)(x), expected)


@pytest.mark.parametrize("kind", KINDS)
def test_forward_convention(kind: str) -> None:
    """Rows: Y = (X R) W^T + b (GOFT*: ((X R) * s) W^T + b); Conv1D gives the same as the Linear it equals."""
    linear = nn.Linear(24, 10)
    conv = Conv1D(10, 24)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.t())
        conv.bias.copy_(linear.bias)
    a, b = make_layer(kind, linear), make_layer(kind, conv)
    randomize(a)
    randomize(b)
    x = torch.randn(7, 24)
    rotated = x @ givens_matrix(a.blocks().detach(), 24)
    if kind == "goft_scaled":
        rotated = rotated * a.goft_scale.detach()
    torch.testing.assert_close(a(x), rotated @ linear.weight.t() + linear.bias)
    torch.testing.assert_close(b(x), a(x))


def test_parametrizations() -> None:
    layer = GOFTLayer(nn.Linear(4, 2), "tanh")
    with torch.no_grad():
        layer.goft_p.fill_(0.5)
    torch.testing.assert_close(layer.angles(), torch.full((3,), math.pi * math.tanh(0.5)))
    layer.parametrization = "angle"
    torch.testing.assert_close(layer.angles(), torch.full((3,), 0.5))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("base_kind", ["linear", "conv1d"])
def test_merge_and_unmerge(kind: str, base_kind: str) -> None:
    base = nn.Linear(40, 12) if base_kind == "linear" else Conv1D(12, 40)
    layer = make_layer(kind, base)
    randomize(layer, seed=1)
    original = base.weight.detach().clone()
    x = torch.randn(6, 40)
    expected = layer(x)
    plain = layer.to_linear()
    assert type(plain) is nn.Linear
    torch.testing.assert_close(plain(x), expected, rtol=1e-5, atol=1e-5)
    layer.merge()
    assert layer.merged
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.to_linear()(x), expected, rtol=1e-5, atol=1e-5)
    layer.unmerge()
    assert not layer.merged
    torch.testing.assert_close(base.weight.detach(), original, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["qgoft", "goft_scaled"])
def test_unmerging_a_singular_adapter_refuses_and_keeps_the_merged_weight(kind: str) -> None:
    layer = make_layer(kind, nn.Linear(8, 3))
    with torch.no_grad():
        if kind == "qgoft":
            layer.qgoft_blocks[2] = torch.tensor([[1.0, 2.0], [0.5, 1.0]])  # determinant 0
        else:
            layer.goft_scale[5] = 0.0
    layer.merge()
    merged = layer.base_layer.weight.detach().clone()
    with pytest.raises(ValueError, match="cannot unmerge: the adapter is singular"):
        layer.unmerge()
    assert layer.merged and torch.equal(layer.base_layer.weight, merged)


@pytest.mark.parametrize("kind", KINDS)
def test_method_on_tiny_deberta(kind: str) -> None:
    model = tiny_deberta()
    method = build_method(method_cfg(kind, DEBERTA_TARGETS))
    model = method.apply(model, DEBERTA_SPEC)
    assert len(method.layers) == 2 * 6
    ids = torch.randint(0, 100, (2, 9))
    before = model(input_ids=ids).logits
    for layer in method.layers:
        randomize(layer, seed=2)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".goft_" in n or ".qgoft_" in n for n in trainable)
    logits = model(input_ids=ids).logits
    assert not torch.allclose(logits, before)
    loss = logits.square().sum()
    reg = method.regularizer()
    if kind == "qgoft":
        loss = loss + reg
    else:
        assert reg is None
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n in trainable)
    merged = method.merge(model)
    assert not any(isinstance(m, GivensLayer) for m in merged.modules())
    torch.testing.assert_close(merged(input_ids=ids).logits, logits.detach(), rtol=1e-4, atol=1e-4)


def test_qgoft_penalty_by_hand() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(2, 2))
    method = build_method(method_cfg("qgoft", ["0", "1"], reg_lambda=0.1))
    method.apply(model, ModelSpec(family="test"))
    blocks = [
        torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.5, -1.0], [2.0, 1.0]]]),
        torch.tensor([[[2.0, 1.0], [1.0, -3.0]]]),
    ]
    with torch.no_grad():
        for layer, value in zip(method.layers, blocks, strict=True):
            layer.qgoft_blocks.copy_(value)
    # (M00 M01 + M10 M11)^2 per block: (2 + 12)^2, (-0.5 + 2)^2, (2 - 3)^2
    expected = 0.1 * ((1 * 2 + 3 * 4) ** 2 + (0.5 * -1 + 2 * 1) ** 2 + (2 * 1 + 1 * -3) ** 2)
    reg = method.regularizer()
    assert reg.requires_grad and reg.dim() == 0
    assert reg.item() == pytest.approx(expected)


def test_safetensors_round_trip(tmp_path: Path) -> None:
    model = tiny_deberta()
    method = build_method(method_cfg("goft_scaled", DEBERTA_TARGETS))
    model = method.apply(model, DEBERTA_SPEC)
    for layer in method.layers:
        randomize(layer, seed=3)
    ids = torch.randint(0, 100, (2, 9))
    expected = model(input_ids=ids).logits
    origin = {"run_id": "test", "task": "glue/rte", "model": {}, "method": {}, "seed": 3}
    save_adapter(model, tmp_path / "adapter.safetensors", origin)

    fresh = build_method(method_cfg("goft_scaled", DEBERTA_TARGETS)).apply(tiny_deberta(), DEBERTA_SPEC)
    assert load_adapter(fresh, tmp_path / "adapter.safetensors")["run_id"] == "test"
    torch.testing.assert_close(fresh(input_ids=ids).logits, expected)

    other = build_method(method_cfg("qgoft", DEBERTA_TARGETS)).apply(tiny_deberta(), DEBERTA_SPEC)
    with pytest.raises(ConfigError, match="does not fit"):
        load_adapter(other, tmp_path / "adapter.safetensors")


@pytest.mark.parametrize(
    ("kind", "count"),
    [("goft", 82_872), ("qgoft", 331_488), ("goft_scaled", 82_872 + 12 * 5 * 768 + 12 * 3072)],
)
def test_deberta_v3_base_counts(kind: str, count: int) -> None:
    config = DebertaV2Config(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        vocab_size=128100,
        relative_attention=True,
        pos_att_type=["p2c", "c2p"],
        position_buckets=256,
        max_relative_positions=-1,
        norm_rel_ebd="layer_norm",
        share_att_key=True,
        position_biased_input=False,
        type_vocab_size=0,
    )
    with torch.device("meta"):
        model = DebertaV2ForSequenceClassification(config)
        build_method(method_cfg(kind, DEBERTA_TARGETS)).apply(model, DEBERTA_SPEC)
    assert adapter_params(model, ("pooler", "classifier")) == count


@pytest.mark.parametrize(("kind", "count"), [("goft", 524_160), ("qgoft", 2_096_640)])
def test_llama2_7b_counts(kind: str, count: int) -> None:
    config = LlamaConfig(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        vocab_size=32000,
    )
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
        method = build_method(method_cfg(kind, ["q_proj", "k_proj", "v_proj", "o_proj"]))
        method.apply(model, ModelSpec(family="llama", head_modules=["lm_head"]))
    assert len(method.layers) == 4 * 32
    assert adapter_params(model, ("lm_head",)) == count


@pytest.mark.parametrize("kind", KINDS)
def test_method_yaml_files(kind: str) -> None:
    cfg = OmegaConf.create({"model": {"target_modules": ["q_proj", "v_proj"]}})
    cfg.method = OmegaConf.load(CONF / f"{kind}.yaml")
    config = GivensConfig.from_cfg(cfg.method)
    assert config.name == kind and config.label == kind and config.target_modules == ["q_proj", "v_proj"]
    assert config.parametrization == "tanh"
    if kind == "qgoft":
        assert config.reg_lambda == 1.0e-3


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="parametrization"):
        GivensConfig(parametrization="cayley")
    with pytest.raises(ConfigError, match="unknown key"):
        GivensConfig.from_cfg({"name": "goft", "rank": 4})
    with pytest.raises(ConfigError, match="matches no"):
        build_method(method_cfg("goft", ["nothing_here"])).apply(
            nn.Sequential(nn.Linear(2, 2)), ModelSpec("test")
        )


@pytest.mark.parametrize("kind", KINDS)
def test_merging_into_a_bfloat16_base_computes_in_float32_and_rounds_once(kind: str) -> None:
    """A half-precision base (model.dtype=bf16): W' = W R^T is formed in float32 and cast to bfloat16 once, both by
    ``to_linear`` and by an in-place ``merge``; W R^T in bfloat16 arithmetic would round at every level."""
    torch.manual_seed(0)
    base = nn.Linear(64, 16).to(torch.bfloat16)
    layer = make_layer(kind, base)
    randomize(layer, seed=4)
    blocks = layer.blocks().detach().double()
    weight = base.weight.detach().double()
    if kind == "goft_scaled":
        weight = weight * layer.goft_scale.detach().double()
    exact = weight @ givens_matrix(blocks, 64).t()  # float64, independent of the layer's merge
    plain = layer.to_linear()
    assert plain.weight.dtype == torch.bfloat16
    torch.testing.assert_close(plain.weight.double(), exact.to(torch.bfloat16).double(), rtol=2**-8, atol=1e-6)
    layer.merge()
    assert base.weight.dtype == torch.bfloat16 and torch.equal(base.weight, plain.weight)
