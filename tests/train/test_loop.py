"""The training loop's contracts, each pinned by a test that failed on the loop before it was fixed: data order
from the seed alone, weight decay toward the identity for multiplicative adapters, gradient accumulation weighted
by examples, NaN metrics, max_seq_len above the model's limit, bf16 with PEFT's OFT and BOFT, and saved adapters
that carry the head."""

import logging
import math
import warnings

import pytest
import torch
from transformers import set_seed

from qgoft_bench.config import compose_config
from qgoft_bench.methods import METHODS, Method
from qgoft_bench.methods.params import in_head
from qgoft_bench.methods.state import load_adapter
from qgoft_bench.tasks import best_epoch, build_task
from qgoft_bench.train import loop, run_experiment
from qgoft_bench.train.optim import AdamW, build_optimizer
from qgoft_bench.train.run import build
from tests.conftest import make_superglue_fixture, make_vtab_task

TRAINING_STEP = loop.training_step
NO_DROPOUT = ["+model.config.hidden_dropout_prob=0.0", "+model.config.attention_probs_dropout_prob=0.0"]


def run_cfg(tmp_path, *overrides: str):
    return compose_config(["model=tiny_bert", f"results_dir={tmp_path / 'results'}", "trainer.batch_size=8",
                           "trainer.progress=false", "trainer.device=cpu", *overrides])


def record_batches(monkeypatch) -> list[torch.Tensor]:
    """The first input tensor of every micro-batch the loop trains on, in order."""
    seen: list[torch.Tensor] = []

    def recording(forward, method, task, window, device, precision):
        seen.extend(next(iter(batch["inputs"].values())).clone() for batch in window)
        return TRAINING_STEP(forward, method, task, window, device, precision)

    monkeypatch.setattr(loop, "training_step", recording)
    return seen


@pytest.mark.parametrize("family", ["glue", "superglue", "vtab"])
def test_data_order_depends_on_the_seed_not_the_method(family, glue_fixture, tmp_path, monkeypatch):
    """LoRA draws its initialisation from the global RNG and GOFT does not; the batches must still be the same."""
    if family == "glue":
        data = ["task=glue/rte", f"data.glue_dir={glue_fixture}"]
    elif family == "superglue":
        data = ["task=superglue/cb", f"data.superglue_dir={make_superglue_fixture(tmp_path / 'sg')}"]
    else:
        make_vtab_task(tmp_path / "vtab", "digits", labels=tuple(i % 10 for i in range(20)))
        data = ["task=vtab/digits", "model=tiny_vit", f"data.vtab_dir={tmp_path / 'vtab'}"]
    orders = {}
    for method in ("lora", "goft", "linear"):
        seen = record_batches(monkeypatch)
        run_experiment(run_cfg(tmp_path, f"method={method}", "trainer.max_epochs=2", *data))
        orders[method] = seen
    assert len(orders["lora"]) > 2
    for method in ("goft", "linear"):
        assert all(torch.equal(a, b) for a, b in zip(orders["lora"], orders[method], strict=True)), method
    other_seed = record_batches(monkeypatch)
    run_experiment(run_cfg(tmp_path, "method=lora", "trainer.max_epochs=2", "seed=2", *data))
    assert not all(torch.equal(a, b) for a, b in zip(orders["lora"], other_seed, strict=True))


@pytest.mark.parametrize("method,param", [("qgoft", "qgoft_blocks"), ("goft_scaled", "goft_scale"), ("ia3", "ia3_l")])
def test_weight_decay_keeps_multiplicative_adapters_at_the_identity(method, param):
    """With a zero gradient, decoupled weight decay alone moves a parameter: qGOFT's blocks (I), GOFT*'s scales and
    IA3's scales (1) must stay where they start, not shrink toward zero."""
    cfg = compose_config(["model=tiny_bert", "task=glue/rte", f"method={method}", "trainer.lr=0.1",
                          "trainer.weight_decay=0.5"])
    model, method_, bundle = build(cfg)
    head = {n for n, _ in model.named_parameters() if in_head(n, bundle.spec.head_modules)}
    optimizer = build_optimizer(model, method_, head, cfg.trainer)
    start = {n: p.detach().clone() for n, p in model.named_parameters() if param in n}
    classifier = next(n for n in head if n.endswith("classifier.weight"))
    classifier_start = model.get_parameter(classifier).detach().clone()
    assert start
    for _ in range(10):
        for p in model.parameters():
            if p.requires_grad:
                p.grad = torch.zeros_like(p)
        optimizer.step()
    for name, value in start.items():
        assert torch.equal(model.get_parameter(name), value), name
    # the head's matrix still decays toward zero: (1 - lr * wd)^10 of its start
    torch.testing.assert_close(model.get_parameter(classifier), classifier_start * 0.95**10)


def test_decay_toward_the_start_is_adamw_on_the_offset():
    """Decay toward p0 is AdamW (decoupled, toward zero) on the offset p - p0: the same trajectory, step by step."""
    torch.manual_seed(0)
    start = torch.randn(4, 3)
    ours = torch.nn.Parameter(start.clone())
    offset = torch.nn.Parameter(torch.zeros(4, 3))
    mine = AdamW([{"params": [ours], "lr": 0.05, "weight_decay": 0.0, "anchors": [start.clone()],
                   "anchor_decay": 0.3}])
    reference = torch.optim.AdamW([offset], lr=0.05, weight_decay=0.3)
    for _ in range(20):
        grad = torch.randn(4, 3)
        ours.grad, offset.grad = grad.clone(), grad.clone()
        mine.step()
        reference.step()
    torch.testing.assert_close(ours.detach(), start + offset.detach(), rtol=1e-5, atol=1e-6)


def test_the_decay_rule_is_in_the_run_config():
    assert compose_config(["method=qgoft"]).method.decay_to == "init"
    assert compose_config(["method=ia3"]).method.decay_to == "init"


class InMemory:
    """The task interface the loop needs, over fixed batches, with the loss of a real task."""

    name, headline = "synthetic", "accuracy"

    def __init__(self, batches, real_task):
        self.batches, self.loss = batches, real_task.loss

    def train_batches(self, seed):
        return self.batches

    def count(self, targets):
        return len(targets["labels"])

    def evaluate(self, predict):
        return {}

    def artifacts(self):
        return {}


def synthetic_batches(sizes: list[int]) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for n in sizes:
        ids = torch.randint(5, 100, (n, 10), generator=gen)
        out.append({"inputs": {"input_ids": ids, "attention_mask": torch.ones_like(ids)},
                    "targets": {"labels": (ids[:, 1] > 50).long()}})
    return out


def test_a_short_last_window_gets_its_whole_gradient(monkeypatch):
    """grad_accum=2 over micro-batches of 8, 8 and 4 examples: the second update sees only the last micro-batch, and
    its gradient must be that micro-batch's own mean-loss gradient, not half of it; the first update's gradient is
    the mean over its 16 examples. lr 0 keeps the weights fixed, so every gradient is at the same point."""
    cfg = compose_config(["model=tiny_bert", "task=glue/rte", "method=lora", "trainer.lr=0", "trainer.max_epochs=1",
                          "trainer.grad_accum=2", "trainer.progress=false", "trainer.clip_grad=null", *NO_DROPOUT])
    model, method, bundle = build(cfg)
    batches = synthetic_batches([8, 8, 4])
    task = InMemory(batches, build_task(cfg.task, cfg.data))
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    grads: list[dict[str, torch.Tensor]] = []
    monkeypatch.setattr(method, "after_step", lambda step, total: grads.append(
        {n: p.grad.clone() for n, p in params.items()}))
    head = {n for n in params if in_head(n, bundle.spec.head_modules)}
    loop.train(model, method, task, head, cfg.trainer, cfg.seed, torch.device("cpu"))
    assert len(grads) == 2

    def reference(chunk: list[dict]) -> dict[str, torch.Tensor]:
        model.zero_grad()
        inputs = {k: torch.cat([b["inputs"][k] for b in chunk]) for k in chunk[0]["inputs"]}
        labels = torch.cat([b["targets"]["labels"] for b in chunk])
        task.loss(model(**inputs), {"labels": labels}).backward()
        return {n: p.grad.clone() for n, p in params.items()}

    for got, expected in ((grads[0], reference(batches[:2])), (grads[1], reference(batches[2:]))):
        for name in params:
            torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-7)


def test_best_epoch_skips_nan_and_follows_the_direction():
    epochs = [{"epoch": i, "eval": {"pearson": v, "loss": l}}
              for i, (v, l) in enumerate([(math.nan, 3.0), (0.2, 1.0), (0.5, 2.0), (math.nan, 0.5)], start=1)]
    assert best_epoch(epochs, "pearson", higher_is_better=True)["epoch"] == 3
    assert best_epoch(epochs, "loss", higher_is_better=False)["epoch"] == 4
    all_nan = [{"epoch": 1, "eval": {"pearson": math.nan}}, {"epoch": 2, "eval": {"pearson": math.nan}}]
    assert best_epoch(all_nan, "pearson", higher_is_better=True)["epoch"] == 2  # the last one


class ConstantHead(Method):
    """Zeroes the classifier matrix: with lr 0 every prediction is the bias, so Pearson is undefined (NaN)."""

    def apply(self, model, spec):
        model = super().apply(model, spec)
        with torch.no_grad():
            model.classifier.weight.zero_()
        return model


def test_a_nan_headline_metric_completes_the_run(glue_fixture, tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS._entries, "constant_head", ConstantHead)
    cfg = run_cfg(tmp_path, "task=glue/stsb", f"data.glue_dir={glue_fixture}", "method=linear",
                  "method.name=constant_head", "trainer.lr=0", "trainer.max_epochs=2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy: "an input array is constant"
        record = run_experiment(cfg)
    assert record["status"] == "completed"
    assert len(record["metrics"]["epochs"]) == 2
    assert math.isnan(record["metrics"]["best"]["pearson"]) and record["metrics"]["best"]["epoch"] == 2


def test_max_seq_len_beyond_the_position_table_is_clamped(glue_fixture, tmp_path, caplog):
    """A 700-word sentence with trainer.max_seq_len=1024 on a 512-position model: the run clamps to 512 and says
    so, as the reference GLUE scripts do, instead of failing at the first long batch."""
    train = glue_fixture / "RTE" / "train.tsv"
    lines = train.read_text().splitlines()
    lines[1] = "\t".join(["0", " ".join(["word"] * 700), "short", "entailment"])
    train.write_text("\n".join(lines) + "\n")
    cfg = run_cfg(tmp_path, "task=glue/rte", f"data.glue_dir={glue_fixture}", "method=linear",
                  "trainer.max_seq_len=1024", "trainer.max_steps=8")
    with caplog.at_level("WARNING"):
        record = run_experiment(cfg)
    assert record["status"] == "completed" and record["batching"]["max_seq_len"] == 512
    assert any("trainer.max_seq_len=1024" in message and "clamped to 512" in message for message in caplog.messages)


@pytest.mark.parametrize("method", ["oft", "boft"])
def test_peft_oft_and_boft_train_deberta_under_bf16(method, glue_fixture, tmp_path):
    """bf16 autocast is the default on CUDA; PEFT's OFT/BOFT layers returned float32 there and DeBERTa's attention
    mask fill overflowed bf16. Run on CPU under bf16 autocast."""
    cfg = run_cfg(tmp_path, "task=glue/rte", "model=tiny_deberta", f"data.glue_dir={glue_fixture}",
                  f"method={method}", "method.block_size=4", "trainer.precision=bf16", "trainer.max_steps=2")
    record = run_experiment(cfg)
    assert record["status"] == "completed" and math.isfinite(record["metrics"]["epochs"][0]["train_loss"])


@pytest.mark.parametrize("method", ["qgoft", "lora", "oft"])
def test_a_saved_adapter_reproduces_the_dev_logits(method, glue_fixture, tmp_path):
    """save_adapter=true writes adapter and head; loaded into a freshly built model (the same random backbone, as a
    pretrained one would be, with an untrained adapter and head) it gives exactly the trained model's dev logits."""
    cfg = run_cfg(tmp_path, "task=glue/rte", f"data.glue_dir={glue_fixture}", f"method={method}",
                  "trainer.max_steps=4", "save_adapter=true", "trainer.lr=1e-2", *NO_DROPOUT)
    logits = {}
    evaluate = loop.evaluate

    def keep_logits(model, task, device, precision):
        logits["trained"] = dev_logits(model, task)
        return evaluate(model, task, device, precision)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "evaluate", keep_logits)
        run_experiment(cfg)
    adapter = next((tmp_path / "results").rglob("*.adapter.safetensors"))

    set_seed(cfg.seed)  # the tiny backbone is random: rebuild the same one
    model, _, _ = build(compose_config(cfg_overrides(cfg)))
    task = build_task(cfg.task, cfg.data)
    task.read()
    from qgoft_bench.models.hf import load_tokenizer
    from qgoft_bench.tasks import Batching

    task.encode(load_tokenizer(cfg.model), Batching(8, 64, 128))
    assert not torch.equal(dev_logits(model, task), logits["trained"])
    load_adapter(model, adapter)
    assert torch.equal(dev_logits(model, task), logits["trained"])


def cfg_overrides(cfg) -> list[str]:
    return [f"model={cfg.model.name}", f"task={cfg.task.name}", f"method={cfg.method.name}", *NO_DROPOUT]


def dev_logits(model, task) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(**batch["inputs"]).logits for batch in task.eval_loaders["dev"]])
    model.train()
    return out


def test_evaluation_every_n_updates_and_patience(glue_fixture, tmp_path):
    """lr 0 keeps the dev accuracy where it starts: with patience 2 the run stops at the third evaluation; with
    min_steps it goes on until then; without patience it runs to max_steps, evaluated every 3 updates and at the
    end."""
    common = ["task=glue/rte", f"data.glue_dir={glue_fixture}", "method=linear", "trainer.lr=0",
              "trainer.eval_every_steps=3", "trainer.max_steps=20"]
    steps = lambda record: [e["step"] for e in record["metrics"]["epochs"]]
    assert steps(run_experiment(run_cfg(tmp_path / "a", *common))) == [3, 6, 9, 12, 15, 18, 20]
    assert steps(run_experiment(run_cfg(tmp_path / "b", *common, "trainer.patience=2"))) == [3, 6, 9]
    assert steps(run_experiment(run_cfg(tmp_path / "c", *common, "trainer.patience=2", "trainer.min_steps=14"))) == [
        3, 6, 9, 12, 15]


def test_a_budget_shorter_than_the_evaluation_interval_is_said(glue_fixture, tmp_path, caplog):
    """Found by a new user: experiment=fu2023/main (evaluation every 500 updates, min_steps 20000) with a short
    trainer.max_steps evaluated once, at the end, without a word."""
    common = ["task=glue/rte", f"data.glue_dir={glue_fixture}", "method=linear", "trainer.lr=0", "trainer.max_steps=4"]
    with caplog.at_level(logging.WARNING, logger="qgoft_bench.train.loop"):
        record = run_experiment(run_cfg(tmp_path / "a", *common, "trainer.eval_every_steps=500"))
    assert [e["step"] for e in record["metrics"]["epochs"]] == [4]
    assert "trainer.eval_every_steps=500 is more than this run's 4 updates: it evaluates once" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="qgoft_bench.train.loop"):
        run_experiment(run_cfg(tmp_path / "b", *common, "trainer.eval_every_steps=2", "trainer.patience=1",
                               "trainer.min_steps=20000"))
    assert "trainer.min_steps=20000 is not below this run's 4 updates: early stopping never starts" in caplog.text
