"""HF model sources: bundled architectures (random/meta), the pip MiniLM with its sha256, one-line source errors."""

import json
import math

import pytest
import torch

from qgoft_bench.config import compose_config
from qgoft_bench.errors import ConfigError, ModelSourceError
from qgoft_bench.methods.params import count_parameters
from qgoft_bench.models import build_model
from qgoft_bench.models.hf import load_tokenizer
from qgoft_bench.records import run_id
from qgoft_bench.train import run_experiment
from qgoft_bench.train.preflight import validate
from qgoft_bench.train.run import build as build_run
from qgoft_bench.train.run import train_in_float32


def build(*overrides: str, head: str = "seq_cls", num_labels: int = 2):
    cfg = compose_config(["task=glue/rte", *overrides])
    return build_model(cfg.model, head, num_labels)


def total(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,head,expected", [
    ("deberta_v3_base", "seq_cls", 184.4e6),  # the paper's "184M" (embeddings 128100 x 768 included)
    ("roberta_base", "seq_cls", 124.6e6),
    ("llama2_7b", "causal_lm", 6.738e9),
])
def test_bundled_architectures_on_meta(name, head, expected):
    bundle = build(f"model={name}", "model.init=meta", head=head)
    assert total(bundle.model) == pytest.approx(expected, rel=2e-3)
    assert next(bundle.model.parameters()).device.type == "meta"


def test_deberta_random_init_builds_real_weights():
    bundle = build("model=tiny_deberta")
    assert bundle.spec.family == "deberta" and bundle.spec.head_modules == ["pooler", "classifier"]
    assert bundle.max_positions == 512
    logits = bundle.model(input_ids=torch.randint(5, 100, (2, 7))).logits
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()


def test_minilm_from_the_pip_package():
    bundle = build("model=minilm_l6")
    assert total(bundle.model) == pytest.approx(22.7e6, rel=0.01)
    tokenizer = load_tokenizer(compose_config(["model=minilm_l6"]).model)
    assert tokenizer("hello world")["input_ids"][:2] == [101, 7592]  # [CLS] hello: the uncased WordPiece vocab


def test_minilm_on_meta_and_random_init_takes_the_pip_packages_architecture():
    """Meta (counting) and random init read the config.json beside the installed weights: the same layers and
    shapes as the pretrained model (before, MiniLM had no architecture for them)."""
    shapes = [(name, p.shape) for name, p in build("model=minilm_l6").model.named_parameters()]
    for init in ("meta", "random"):
        model = build("model=minilm_l6", f"model.init={init}").model
        assert [(name, p.shape) for name, p in model.named_parameters()] == shapes
        assert next(model.parameters()).device.type == ("meta" if init == "meta" else "cpu")
    with pytest.raises(ModelSourceError, match="no architecture for init=meta here: set model.path to a folder with"):
        build("model=minilm_l6", "model.init=meta", "model.pip_package=null")


def test_meta_and_random_init_take_the_architecture_of_a_model_path(tmp_path):
    """A model.path folder's config.json is the architecture of meta and random init, before the bundled one (the
    fix the no-architecture error names was refused by the pre-flight); a folder without one is one line."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps({
        "model_type": "bert", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 64, "vocab_size": 100}))
    path = f"model.path={tmp_path / 'model'}"
    for init in ("meta", "random"):
        model = build("model=deberta_v3_base", f"model.init={init}", path).model
        assert (model.config.model_type, model.config.hidden_size) == ("bert", 32)  # not the bundled DeBERTa
        validate(compose_config(["model=deberta_v3_base", f"model.init={init}", path, "dry_run=true"]))
    with pytest.raises(ConfigError, match="has no config.json, which model.init=meta takes the architecture from"):
        validate(compose_config(["model=deberta_v3_base", "model.init=meta", f"model.path={tmp_path}"]))


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
    bundle = build("model=llama2_7b", "model.init=meta", head="causal_lm")
    assert bundle.spec.head_modules == ["lm_head"] and not bundle.spec.train_head
    from qgoft_bench.methods import build_method

    model = build_method(compose_config(["model=llama2_7b", "method=goft"]).method).apply(bundle.model, bundle.spec)
    counts = count_parameters(model, bundle.spec.head_modules)
    assert counts["adapter_params"] == 524_160 and counts["head_params"] == 0


@pytest.mark.parametrize("head,num_labels,modules", [
    ("seq_cls", 3, ["classifier"]),
    ("multiple_choice", 2, ["classifier"]),
    ("span_cls", 2, ["span_attention", "classifier"]),
])
def test_the_task_picks_the_head(head, num_labels, modules):
    bundle = build("model=tiny_bert", head=head, num_labels=num_labels)
    assert bundle.spec.head_modules == modules
    ids = torch.randint(5, 100, (2, 3, 7)) if head == "multiple_choice" else torch.randint(5, 100, (2, 7))
    extra = {"spans": torch.tensor([[[1, 2], [4, 4]]] * 2)} if head == "span_cls" else {}
    logits = bundle.model(input_ids=ids, **extra).logits
    assert logits.shape == ((2, 3) if head == "multiple_choice" else (2, num_labels))


@pytest.mark.parametrize("model", ["tiny_bert", "tiny_deberta", "tiny_roberta"])
@pytest.mark.parametrize("method", ["lora", "qgoft"])
def test_the_qa_head_trains_as_the_task_head(model, method):
    """SQuAD's head (AutoModelForQuestionAnswering's qa_outputs: a start and an end logit per token) is the task head:
    it trains in full under an adapter method, is counted as head, and no adapter wraps it."""
    cfg = compose_config(["task=squad/v1", f"model={model}", f"method={method}"])
    model_, _, bundle = build_run(cfg)
    assert bundle.spec.head_modules == ["qa_outputs"]
    head = {name for name, param in model_.named_parameters() if "qa_outputs" in name}
    assert head and all(param.requires_grad for name, param in model_.named_parameters() if name in head)
    assert {name.split("qa_outputs.")[1] for name in head} == {"weight", "bias"}  # no adapter inside it
    counts = count_parameters(model_, bundle.spec.head_modules)
    assert counts["head_params"] == 32 * 2 + 2
    outputs = model_(input_ids=torch.randint(5, 100, (2, 7)))
    assert outputs.start_logits.shape == outputs.end_logits.shape == (2, 7)


@pytest.mark.parametrize("name", ["deberta_v3_base", "roberta_base"])
def test_the_paper_models_carry_the_qa_head(name):
    bundle = build(f"model={name}", "model.init=meta", head="qa")
    assert bundle.spec.head_modules == ["qa_outputs"] and bundle.model.qa_outputs.out_features == 2


def test_a_head_the_model_lacks_is_one_line():
    from qgoft_bench.errors import ConfigError

    with pytest.raises(ConfigError, match="tiny_llama .* has no multiple_choice head"):
        build("model=tiny_llama", head="multiple_choice")
    with pytest.raises(ConfigError, match="tiny_bert is a text model and has no image_cls head"):
        build("model=tiny_bert", head="image_cls")


def test_span_classifier_pools_only_its_span():
    """Changing a token outside both spans (and invisible to them: no attention) leaves nothing to pool from it."""
    torch.manual_seed(0)
    bundle = build("model=tiny_bert", head="span_cls")
    head = bundle.model.eval()
    hidden = torch.randn(1, 6, 32)
    spans = torch.tensor([[[1, 2], [4, 4]]])
    head.encoder.forward = lambda **_: type("Out", (), {"last_hidden_state": hidden})()
    first = head(spans=spans, input_ids=torch.zeros(1, 6, dtype=torch.long)).logits
    hidden[0, 3] += 100.0  # token 3 lies between the spans
    assert torch.equal(head(spans=spans, input_ids=torch.zeros(1, 6, dtype=torch.long)).logits, first)
    hidden[0, 4] += 1.0  # the pronoun span's only token
    assert not torch.equal(head(spans=spans, input_ids=torch.zeros(1, 6, dtype=torch.long)).logits, first)


def test_minilm_pooler_trains_as_part_of_the_head_under_an_adapter():
    """all-MiniLM-L6-v2's BERT pooler was never trained with its encoder: it is head, like DeBERTaV3's pooler,
    so it trains under every method and is counted with the head, not the adapter."""
    cfg = compose_config(["model=minilm_l6", "method=lora", "task=glue/stsb"])
    model, _, bundle = build_run(cfg)
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    assert any("pooler.dense.weight" in name for name in trainable)
    counts = count_parameters(model, bundle.spec.head_modules)
    assert counts["head_params"] == (384 * 384 + 384) + (384 + 1)  # pooler + one-output regression classifier


def test_classifier_dropout_reaches_the_head():
    """model.classifier_dropout is DeBERTa's cls_dropout (AdaLoRA's --cls_dropout); null keeps hidden_dropout_prob;
    a value outside [0, 1) is one line before any job."""
    from qgoft_bench.errors import ConfigError
    from qgoft_bench.train.preflight import validate

    model = build("model=tiny_deberta", "model.classifier_dropout=0.2").model
    assert model.dropout.p == 0.2 and model.config.cls_dropout == 0.2
    assert build("model=tiny_deberta").model.dropout.p == model.config.hidden_dropout_prob == 0.1
    with pytest.raises(ConfigError, match=r"model.classifier_dropout=1.5 must be in \[0, 1\)"):
        validate(compose_config(["model=tiny_deberta", "model.classifier_dropout=1.5"]))


@pytest.mark.parametrize("pad", [None, "[unused0]"])
def test_a_decoder_classifier_pools_the_last_real_token_whatever_the_tokenizer_pads_with(pad, monkeypatch):
    """LlamaForSequenceClassification pools the last token that is not config.pad_token_id: with the builder's pad
    id 0 and a tokenizer that pads with another id, a padded example pooled a pad token (silently other logits),
    and a tokenizer without a pad token (LLaMA's) failed at the first batch. pad None: it pads with its
    end-of-sequence token."""
    from qgoft_bench.models import hf

    def tokenizer_without_pad_0(cfg):
        tokenizer = load_tokenizer(cfg)  # MiniLM's: pad [PAD] = 0
        tokenizer.eos_token = "[SEP]"
        tokenizer.pad_token = pad
        return tokenizer

    monkeypatch.setattr(hf, "load_tokenizer", tokenizer_without_pad_0)
    bundle = build("model=tiny_llama")
    tokenizer, model = bundle.processor, bundle.model.eval()
    assert tokenizer.pad_token_id not in (None, 0) and model.config.pad_token_id == tokenizer.pad_token_id
    texts = ["a short one", "a much longer sentence that needs no padding at all here"]
    with torch.no_grad():
        batch = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
        alone = model(**tokenizer(texts[:1], return_tensors="pt")).logits
    torch.testing.assert_close(batch[0], alone[0])


@pytest.mark.parametrize(("method", "dtype"), [("lora", "bfloat16"), ("goft", "bfloat16"), ("qgoft", "bfloat16"),
                                             ("sam", "bfloat16")])
def test_model_dtype_sets_the_frozen_weights_and_what_trains_is_float32(glue_fixture, tmp_path, method, dtype):
    """``model.dtype``: the backbone's frozen weights load in it; what trains (adapters, the head, SAM's values) is
    float32, as mixed precision's master weights. Found by a new user: a float16 head under AdamW gave NaN at the
    second update, and bfloat16 LayerNorm gains under full fine-tuning never moved (updates below their step)."""
    record = run_experiment(compose_config([
        "task=glue/rte", "model=tiny_bert", f"method={method}", f"model.dtype={dtype}", "trainer.precision=bf16",
        f"data.glue_dir={glue_fixture}", f"results_dir={tmp_path}", "trainer.batch_size=8", "trainer.max_steps=4",
        "trainer.progress=false", "method.scoring_batches=2" if method == "sam" else "seed=1"]))
    assert record["status"] == "completed"
    assert record["weight_dtypes"] == {"frozen": [dtype], "trainable": ["float32"]}
    assert all(math.isfinite(epoch["train_loss"]) for epoch in record["metrics"]["epochs"])


def test_a_method_that_trains_part_of_a_frozen_half_precision_layer_is_refused(glue_fixture, tmp_path):
    """BitFit declares it (``Method.needs_float32``): refused before the run; the guard behind it
    (``train_in_float32``) refuses any model whose layer would hold float32 and half-precision weights together."""
    overrides = ["task=glue/rte", "model=tiny_bert", "method=bitfit", "model.dtype=bfloat16", "trainer.precision=bf16",
                 f"data.glue_dir={glue_fixture}", f"results_dir={tmp_path}", "trainer.max_steps=2"]
    with pytest.raises(ConfigError, match=r"method bitfit needs model.dtype=float32 \(now bfloat16\)"):
        run_experiment(compose_config(overrides))
    assert not list(tmp_path.rglob("*.json"))  # refused before any record
    model = build_run(compose_config(overrides))[0]
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    with pytest.raises(ConfigError, match=r"method bitfit trains part of the frozen layer .*use model.dtype=float32"):
        train_in_float32(model, "bitfit")


def test_model_dtype_reaches_pretrained_weights_and_null_keeps_the_checkpoints():
    assert {p.dtype for p in build("model=minilm_l6").model.parameters()} == {torch.float32}  # as the file stores
    assert {p.dtype for p in build("model=minilm_l6", "model.dtype=float16").model.parameters()} == {torch.float16}
    meta = build("model=llama2_7b", "model.init=meta", head="causal_lm").model  # the recipe's own setting
    assert {p.dtype for p in meta.parameters()} == {torch.bfloat16}


def test_model_dtype_is_checked_and_at_null_keeps_earlier_run_ids():
    with pytest.raises(ConfigError, match=r"model.dtype='fp8' is not one of float32, bfloat16, float16"):
        validate(compose_config(["task=glue/rte", "model=tiny_bert", "model.dtype=fp8"]))
    with pytest.raises(ConfigError, match=r"model.dtype=\['bfloat16'\] is not one of"):
        validate(compose_config(["task=glue/rte", "model=tiny_bert", "model.dtype=[bfloat16]"]))
    with pytest.raises(ConfigError, match=r"model.dtype=bfloat16 runs under bf16 autocast, and trainer.precision=fp32"):
        validate(compose_config(["task=glue/rte", "model=tiny_bert", "model.dtype=bfloat16", "trainer.precision=fp32"]))
    validate(compose_config(["task=glue/rte", "model=llama2_7b", "model.init=meta", "dry_run=true"]))  # counts only
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"model.dtype=float16 runs on CUDA only"):
            validate(compose_config(["task=glue/rte", "model=tiny_bert", "model.dtype=float16",
                                     "trainer.precision=bf16"]))
    config = {"model": {"name": "minilm_l6"}, "seed": 1}
    assert run_id({"model": {"name": "minilm_l6", "dtype": None}, "seed": 1}) == run_id(config)
    assert run_id({"model": {"name": "minilm_l6", "dtype": "bfloat16"}, "seed": 1}) != run_id(config)
