"""HF model sources: bundled architectures (random/meta), the pip MiniLM with its sha256, one-line source errors."""

import pytest
import torch

from qgoft_bench.config import compose_config
from qgoft_bench.errors import ModelSourceError
from qgoft_bench.methods.params import count_parameters
from qgoft_bench.models import build_model
from qgoft_bench.models.hf import load_tokenizer
from qgoft_bench.train.run import build as build_run


def build(*overrides: str):
    cfg = compose_config(["task=glue/rte", *overrides])
    return build_model(cfg.model, cfg.task)


def total(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,expected", [
    ("deberta_v3_base", 184.4e6),  # the paper's "184M" (embeddings 128100 x 768 included)
    ("roberta_base", 124.6e6),
    ("llama2_7b", 6.738e9),
])
def test_bundled_architectures_on_meta(name, expected):
    bundle = build(f"model={name}", "model.init=meta")
    assert total(bundle.model) == pytest.approx(expected, rel=2e-3)
    assert next(bundle.model.parameters()).device.type == "meta"


def test_deberta_random_init_builds_real_weights():
    bundle = build("model=tiny_deberta")
    assert bundle.spec.family == "deberta" and bundle.spec.head_modules == ["pooler", "classifier"]
    logits = bundle.model(input_ids=torch.randint(5, 100, (2, 7))).logits
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()


def test_minilm_from_the_pip_package():
    bundle = build("model=minilm_l6")
    assert total(bundle.model) == pytest.approx(22.7e6, rel=0.01)
    tokenizer = load_tokenizer(compose_config(["model=minilm_l6"]).model)
    assert tokenizer("hello world")["input_ids"][:2] == [101, 7592]  # [CLS] hello: the uncased WordPiece vocab


def test_minilm_sha256_mismatch_is_refused():
    with pytest.raises(ModelSourceError, match="does not match the expected sha256"):
        build("model=minilm_l6", "model.sha256=" + "0" * 64)


def test_missing_local_folder_is_one_line(tmp_path):
    with pytest.raises(ModelSourceError, match=r"model.path=.* is not a Hugging Face model folder") as err:
        build("model=deberta_v3_base", f"model.path={tmp_path}")
    assert "\n" not in str(err.value)


def test_unreachable_hub_says_what_to_do():
    with pytest.raises(ModelSourceError, match=r"model.path=DIR, or use model.init=random"):
        build("model=deberta_v3_base")  # HF_HUB_OFFLINE=1 in tests, and nothing in the cache


def test_causal_lm_head_stays_frozen():
    """LLaMA's pretrained lm_head is not a task head: it neither trains nor counts (the paper's 0.007% for GOFT)."""
    model, _, bundle = build_run(compose_config(["model=llama2_7b", "model.init=meta", "method=goft"]))
    counts = count_parameters(model, bundle.spec.head_modules)
    assert counts["adapter_params"] == 524_160 and counts["head_params"] == 0


def test_minilm_pooler_trains_as_part_of_the_head_under_an_adapter():
    """all-MiniLM-L6-v2's BERT pooler was never trained with its encoder: it is head, like DeBERTaV3's pooler,
    so it trains under every method and is counted with the head, not the adapter."""
    cfg = compose_config(["model=minilm_l6", "method=lora", "task=glue/stsb"])
    model, _, bundle = build_run(cfg)
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    assert any("pooler.dense.weight" in name for name in trainable)
    counts = count_parameters(model, bundle.spec.head_modules)
    assert counts["head_params"] == (384 * 384 + 384) + (384 + 1)  # pooler + one-output regression classifier
