"""Sparse fine-tuning (Fu et al., AAAI 2023): budgets per tensor, exact sparsity under AdamW with weight decay,
SAM's selection against a brute-force computation, Hutchinson's estimator against an exact Hessian diagonal."""

import logging
import math

import numpy as np
import pytest
import torch
from torch import nn

from qgoft_bench.config import compose_config
from qgoft_bench.errors import ConfigError
from qgoft_bench.methods.sam import hutchinson_diagonal
from qgoft_bench.methods.sparse import SparseValues, budget, top_entries
from qgoft_bench.tasks import build_task
from qgoft_bench.train import run_experiment
from qgoft_bench.train.loop import task_loss
from qgoft_bench.train.optim import build_optimizer
from qgoft_bench.train.run import build

SPARSE = ["sam", "random_mask", "childpruning", "magpruning", "diffpruning"]
SMALL = {  # method -> overrides that keep the data-aware set-up to a few batches
    "sam": ["method.scoring_batches=2"], "random_mask": [], "childpruning": ["method.fisher_batches=2"],
    "magpruning": ["method.burn_in_steps=2", "method.burn_in_lr=1e-3"],
    "diffpruning": ["method.burn_in_steps=2", "method.burn_in_lr=1e-3"],
}
NO_DROPOUT = ["+model.config.hidden_dropout_prob=0.0", "+model.config.attention_probs_dropout_prob=0.0"]


def tiny(method: str, *extra: str):
    cfg = compose_config(["model=tiny_bert", "task=glue/rte", f"method={method}", *extra])
    model, method_, bundle = build(cfg)
    return cfg, model, method_, bundle


def batches_for(n: int, size: int = 8, seed: int = 0) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(5, 200, (size, 12), generator=gen)
        out.append({"inputs": {"input_ids": ids, "attention_mask": torch.ones_like(ids)},
                    "targets": {"labels": (ids[:, 1] > 100).long()}})
    return out


def loss_fn_for(model, cfg):
    task = build_task(cfg.task, cfg.data)
    return lambda batch: task_loss(model, task, batch, torch.device("cpu"), "fp32")


@pytest.mark.parametrize("method", SPARSE)
@pytest.mark.parametrize("topk", ["tensor", "global"])
def test_the_budget_is_exact(method, topk):
    cfg, model, method_, bundle = tiny(method, f"method.topk={topk}", "method.ratio=0.01", *SMALL[method])
    candidates = dict(method_.candidates)
    expected = {name: budget(p.numel(), 0.01) for name, p in candidates.items()}
    dry = method_.counts(model, bundle.spec)["adapter_params"]
    method_.prepare(model, batches_for(2), loss_fn_for(model, cfg))
    layers = [m for m in model.modules() if isinstance(m, SparseValues)]
    sizes = [len(layer.idx) for layer in layers]
    assert sum(sizes) == sum(expected.values()) == dry == method_.counts(model, bundle.spec)["adapter_params"]
    if topk == "tensor":
        assert len(layers) == len(candidates) and sorted(sizes) == sorted(expected.values())
    assert all(len(set(layer.idx.tolist())) == len(layer.idx) for layer in layers)  # no entry twice
    assert not any("classifier" in name for name in candidates)  # the head is not a candidate: it trains in full


@pytest.mark.parametrize("method", SPARSE)
def test_only_selected_entries_change_bit_for_bit(method):
    """AdamW with weight decay 0.1 at lr 1e-2 (the harness's optimizer): every encoder entry outside the mask keeps
    its pre-trained value exactly, and ``changed`` counts exactly the entries that moved."""
    cfg, model, method_, _ = tiny(method, "trainer.lr=1e-2", "trainer.weight_decay=0.1", *SMALL[method])
    pretrained = {name: p.detach().clone() for name, p in method_.candidates.items()}
    batches = batches_for(3)
    loss_fn = loss_fn_for(model, cfg)
    method_.prepare(model, batches, loss_fn)
    head = {n for n, _ in model.named_parameters() if "classifier" in n}
    optimizer = build_optimizer(model, method_, head, cfg.trainer)
    for batch in batches * 3:
        loss_fn(batch).backward()
        optimizer.step()
        optimizer.zero_grad()
    moved = 0
    for name, before in pretrained.items():
        module_name, _, attribute = name.rpartition(".")
        after = getattr(model.get_submodule(module_name), attribute).detach()  # the weight the model computes with
        layer = model.get_submodule(module_name).parametrizations[attribute][0]
        outside = torch.ones(before.numel(), dtype=torch.bool)
        outside[layer.idx] = False
        assert torch.equal(after.flatten()[outside], before.flatten()[outside]), name
        moved += int((after != before).sum())
    report = method_.report(model)["sparsity"]
    assert 0 < moved == report["changed"] <= report["budget"]


def test_a_run_records_its_sparsity(glue_fixture, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="qgoft_bench")
    record = run_experiment(compose_config([
        "model=tiny_bert", "task=glue/rte", "method=sam", "method.scoring_batches=2", f"data.glue_dir={glue_fixture}",
        f"results_dir={tmp_path}", "trainer.max_steps=3", "trainer.batch_size=8", "trainer.progress=false"]))
    # SAM's scoring can take minutes before the first update: said before it starts, and timed apart from training
    assert "method sam: data-aware set-up before the first update" in caplog.text
    assert 0 < record["prepare_time_s"] < record["wall_time_s"]
    sparsity = record["sparsity"]
    assert 0 < sparsity["changed"] <= sparsity["budget"] == record["params"]["adapter_params"]
    assert record["params"]["total_params"] == sum(  # the value vectors are not counted twice
        p.numel() for n, p in build(compose_config(["model=tiny_bert", "task=glue/rte", "method=linear"]))[0]
        .named_parameters())


@pytest.mark.parametrize(("method", "knobs", "squared"), [
    ("sam", ["method.scoring_batches=3", "method.score=grad_abs"], False),  # |sum of g|: the released code
    ("sam", ["method.scoring_batches=3", "method.score=grad_sq"], True),  # sum of g^2
    ("childpruning", ["method.fisher_batches=3"], True),  # the empirical Fisher diagonal: sum of g^2
])
def test_gradient_selection_equals_brute_force(method, knobs, squared):
    """SAM's |sum over batches of the gradient| or sum of squared per-batch gradients, and ChildPruning's Fisher
    diagonal (the same sum of squares), per entry, computed by hand with autograd on each batch in float64: the
    method keeps exactly ceil(p n) entries of each tensor, every entry scoring above the cut and none below it
    (entries tied at the cut, such as the zero gradients of unseen tokens' embeddings, may go either way)."""
    cfg, model, sam, _ = tiny(method, *knobs, "method.ratio=0.02", *NO_DROPOUT)  # the same gradients in both
    batches = batches_for(3)
    loss_fn = loss_fn_for(model, cfg)
    names = list(sam.candidates)
    params = [sam.candidates[n] for n in names]
    total = [np.zeros(p.shape, dtype=np.float64) for p in params]
    for p in params:
        p.requires_grad_(True)
    for batch in batches:
        grads = torch.autograd.grad(loss_fn(batch), params, allow_unused=True)
        for t, g in zip(total, grads, strict=True):
            if g is not None:
                t += g.double().square().numpy() if squared else g.double().numpy()
    for p in params:
        p.requires_grad_(False)
    sam.prepare(model, batches, loss_fn)
    selected = {}
    for name, module in model.named_modules():
        for attribute, plist in getattr(module, "parametrizations", {}).items():
            selected[f"{name}.{attribute}"] = plist[0].idx.numpy()
    assert selected.keys() == set(names)
    strict_cuts = 0
    for name, t in zip(names, total, strict=True):
        score = np.abs(t).ravel()
        k = budget(score.size, 0.02)
        cut = np.sort(score)[::-1][k - 1]
        chosen = selected[name]
        assert len(chosen) == k and len(set(chosen.tolist())) == k
        # float32 sums against float64: a relative tolerance at the cut
        assert (score[chosen] >= cut * (1 - 1e-5)).all(), name
        above = np.flatnonzero(score > cut * (1 + 1e-5))
        assert set(above.tolist()) <= set(chosen.tolist()), name
        strict_cuts += cut > 0
    assert strict_cuts > len(names) // 2  # most tensors had a real ranking to get right


def test_hutchinson_converges_to_the_hessian_diagonal():
    """f(x) = 1/2 x^T A x has Hessian A: the estimator's mean over many Rademacher probes approaches diag(A)."""
    torch.manual_seed(0)
    root = torch.randn(6, 6, dtype=torch.float64)
    hessian = root @ root.T + 6 * torch.eye(6, dtype=torch.float64)
    model = nn.Module()
    model.x = nn.Parameter(torch.randn(6, dtype=torch.float64))
    loss_fn = lambda batch: 0.5 * model.x @ hessian @ model.x
    estimate = hutchinson_diagonal(model, {"x": model.x}, [None] * 4000, loss_fn)["x"].double()
    torch.testing.assert_close(estimate, torch.diagonal(hessian), rtol=0.1, atol=0.1)
    off_diagonal = hessian.abs().sum() - torch.diagonal(hessian).abs().sum()
    assert off_diagonal > 10  # the probes really had cross terms to average away


@pytest.mark.parametrize("method", [*SPARSE, "mixout"])
def test_sparse_methods_learn_and_merge(method):
    torch.manual_seed(0)
    knobs = ["method.p=0.5"] if method == "mixout" else ["method.ratio=0.05", *SMALL[method]]
    cfg, model, method_, _ = tiny(method, *knobs)
    model.eval()
    batches = batches_for(2)
    loss_fn = loss_fn_for(model, cfg)
    method_.prepare(model, batches, loss_fn)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    before = loss_fn(batches[0]).item()
    for _ in range(8):
        loss_fn(batches[0]).backward()
        optimizer.step()
        optimizer.zero_grad()
    after = loss_fn(batches[0]).item()
    assert after < before
    with torch.no_grad():
        unmerged = model(**batches[0]["inputs"]).logits
        merged = method_.merge(model)(**batches[0]["inputs"]).logits
    assert not any(isinstance(m, SparseValues) for m in model.modules())
    torch.testing.assert_close(merged, unmerged)


@pytest.mark.parametrize("method", ["magpruning", "diffpruning"])
def test_a_burn_in_refuses_half_precision_weights(method):
    """The burn-in fine-tunes the encoder itself: at bfloat16 AdamW's updates at its rate would round away, so a
    model loaded in half precision (``model.dtype``) is refused with the fix, before anything trains."""
    cfg, model, method_, _ = tiny(method, *SMALL[method])
    model.to(torch.bfloat16)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(ConfigError, match=f"method {method}'s burn-in fine-tunes the whole encoder, whose weights "
                                          r"here are torch.bfloat16: use model.dtype=float32"):
        method_.prepare(model, batches_for(2), loss_fn_for(model, cfg))
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_top_entries_global_keeps_the_total():
    scores = {"a": torch.tensor([0.1, 0.9, 0.8, 0.0]), "b": torch.tensor([0.7, 0.6])}
    per_tensor = top_entries(scores, 0.5)
    assert {k: sorted(v.tolist()) for k, v in per_tensor.items()} == {"a": [1, 2], "b": [0]}
    overall = top_entries(scores, 0.5, per_tensor=False)  # 3 entries in all: 0.9, 0.8, 0.7
    assert {k: sorted(v.tolist()) for k, v in overall.items()} == {"a": [1, 2], "b": [0]}
    assert math.ceil(0.5 * 2) == 1
