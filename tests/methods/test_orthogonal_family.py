"""The orthogonal family beside GOFT and qGOFT: PEFT's HRA, RoAd, PSOFT, FRoD, DeLoRA and OSF, our FacT-TT/TK and
LoRA on q and v inside a fused qkv. Each trains on the tiny models (loss goes down), merges exactly where it claims
to (and the merge is no no-op: adapters gone, frozen weights changed), and counts what the closed form of its
definition says, on the real architectures built on the meta device (no download)."""

import json
import os
import statistics
import warnings

import pytest
import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from qgoft_bench.config import compose_config
from qgoft_bench.errors import ConfigError
from qgoft_bench.methods import build_method
from qgoft_bench.methods.fact import VTAB_RANK_SCALE, FacTLayer
from qgoft_bench.methods.lora_qv import FusedLoRALayer
from qgoft_bench.methods.params import in_head
from qgoft_bench.tasks import build_task
from qgoft_bench.train.loop import training_step
from qgoft_bench.train.run import build, dry_run
from tests.methods.tiny import build_run, synthetic_batch, task_for

TINY_TEXT = ["tiny_deberta", "tiny_roberta", "tiny_bert"]
FAMILY = {  # id -> overrides for the tiny models (width 32, FFN 64)
    "hra": ["method=hra"],
    "road": ["method=road", "method.group_size=32"],
    "psoft": ["method=psoft", "method.r=8"],
    "frod": ["method=frod"],
    "delora": ["method=delora"],
    "osf_k2": ["method=osf_k2"],
    "fact_tt": ["method=fact_tt", "method.r=4", "method.dropout=0"],
    "fact_tk": ["method=fact_tk", "method.r=4", "method.dropout=0"],
}
ADAPTER_LAYERS = (BaseTunerLayer, FacTLayer, FusedLoRALayer)


def frozen_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The frozen weight of every adapted layer, by the layer's name without PEFT's wrapper prefix."""
    return {name.removeprefix("base_model.model."): module.base_layer.weight.detach().clone()
            for name, module in model.named_modules() if isinstance(module, ADAPTER_LAYERS)}


GRID = [pytest.param(m, f, id=f"{m}-{f}") for m in [*TINY_TEXT, "tiny_vit"] for f in FAMILY]
GRID.append(pytest.param("tiny_vit", "lora_qv", id="tiny_vit-lora_qv"))


@pytest.mark.parametrize(("model_name", "method_id"), GRID)
def test_trains_and_merges_for_real(model_name: str, method_id: str) -> None:
    torch.manual_seed(0)
    overrides = ["method=lora_qv"] if method_id == "lora_qv" else FAMILY[method_id]
    model, method, bundle = build_run(model_name, overrides)
    inputs, labels = synthetic_batch(model_name)
    head = bundle.spec.head_modules
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad and not in_head(n, head)}
    assert before

    model.eval()  # no dropout: the loss on the fixed batch is a function of the weights
    cfg = compose_config([f"model={model_name}", task_for(model_name)])
    task = build_task(cfg.task, cfg.data)
    batch = {"inputs": inputs, "targets": {"labels": labels}}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    losses = []
    for step in range(6):  # the trainer's own step and hook order
        losses.append(training_step(model, method, task, [batch], torch.device("cpu"), "fp32").item())
        optimizer.step()
        method.after_step(step, 6)
        optimizer.zero_grad(set_to_none=True)
    final = task.loss(model(**inputs), {"labels": labels}).item()
    assert final < losses[0]
    moved = [n for n, p in model.named_parameters() if n in before and not torch.equal(before[n], p)]
    assert moved

    frozen = frozen_weights(model)
    assert frozen
    with torch.no_grad():
        unmerged = model(**inputs).logits
        merged_model = method.merge(model)
        merged = merged_model(**inputs).logits
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-4)
    # a merge that returned the model unchanged fails here: no adapter layer or parameter is left, and the folded
    # weights differ from the frozen ones
    assert not any(isinstance(m, ADAPTER_LAYERS) for m in merged_model.modules())
    assert not any(n in before for n, _ in merged_model.named_parameters())
    changed = [name for name, weight in frozen.items()
               if not torch.equal(merged_model.get_submodule(name).weight, weight)]
    assert changed


# DeBERTaV3-base, all six linears of each of the 12 blocks: four 768 x 768, intermediate 768 -> 3072, output
# 3072 -> 768. Closed forms from each method's definition, never from the code under test.
SHAPES = 12 * [(768, 768)] * 4 + 12 * [(768, 3072), (3072, 768)]  # (in, out)
IN, OUT = sum(i for i, _ in SHAPES), sum(o for _, o in SHAPES)  # 82,944 each
assert len(SHAPES) == 72 and IN == OUT == 82_944
DEBERTA_COUNTS = {
    "hra_r8": (["method=hra"], 8 * IN),  # r Householder vectors of in_features per layer: 663,552
    "hra_r4": (["method=hra", "method.r=4"], 4 * IN),  # 331,776: qGOFT's budget (331,488)
    "road_1": (["method=road"], OUT),  # one angle and one scale per output pair: 82,944, GOFT's (82,872)
    "road_4": (["method=road", "method.variant=road_4"], 4 * OUT),
    "psoft_r32": (["method=psoft"], 72 * (32 * 31 // 2 + 2 * 32)),  # skew-symmetric r x r + two vectors: 40,320
    "psoft_r46": (["method=psoft", "method.r=46"], 72 * (46 * 45 // 2 + 2 * 46)),  # 81,144
    "delora_r8": (["method=delora"], sum(8 * (i + o) + 1 for i, o in SHAPES)),  # LoRA's + one lambda per layer
    "delora_r2": (["method=delora", "method.r=2"], sum(2 * (i + o) + 1 for i, o in SHAPES)),  # 331,848
    "osf": (["method=osf"], sum((min(i, o) - min(i, o) // 2) * (i + o + 1) for i, o in SHAPES)),  # half trains
    "osf_k2": (["method=osf_k2"], sum(2 * (i + o + 1) for i, o in SHAPES)),  # 331,920
    # PEFT's fractional effective_rank: int(0.25 min(out, in)) = 192 of 768 directions frozen, 576 train
    "osf_e0.25": (["method=osf", "method.effective_rank=0.25"], sum(576 * (i + o + 1) for i, o in SHAPES)),
    # FacT: 144 slices of 768 x 768; the qGOFT paper's GLUE rows FacT-TT r=16 0.06M and FacT-TK r=32 0.05M
    "fact_tt_r16": (["method=fact_tt"], 2 * 768 * 16 + 144 * 16**2),  # 61,440 = 0.06M
    "fact_tk_r32": (["method=fact_tk"], 2 * 768 * 32 + 32**3 + 144 * 32),  # 86,528 (the paper lists 0.05M)
}


@pytest.mark.parametrize("label", list(DEBERTA_COUNTS))
def test_deberta_v3_base_counts_are_the_closed_forms(label: str, capsys) -> None:
    overrides, expected = DEBERTA_COUNTS[label]
    cfg = compose_config(["model=deberta_v3_base", "model.init=meta", "task=glue/rte", "dry_run=true", *overrides])
    assert cfg.method.label == label
    counts = dry_run(cfg)["params"]
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert counts["adapter_params"] == printed["adapter_params"] == expected


def test_fact_glue_budgets_as_the_paper_prints_them() -> None:
    tt = DEBERTA_COUNTS["fact_tt_r16"][1]
    tk = DEBERTA_COUNTS["fact_tk_r32"][1]
    assert round(tt / 1e6, 2) == 0.06
    # The qGOFT paper's 0.05M for FacT-TK r=32 is the factors without the r^3 core: U, V and P are 53,760.
    assert round((tk - 32**3) / 1e6, 2) == 0.05


def vit_count(method: str, r: int) -> int:
    cfg = compose_config(["model=vit_b16_in21k", "model.init=meta", "task=vtab/digits", f"method={method}",
                          f"method.r={r}"])
    model, method_obj, bundle = build(cfg)
    counts = method_obj.counts(model, bundle.spec)
    assert counts["fact_slices"] == 144  # q, k, v, o, fc1 (4 slices), fc2 (4 slices) in 12 blocks
    return counts["adapter_params"]


def test_fact_vtab_budgets_are_the_mean_over_the_released_ranks() -> None:
    """ViT-B/16: FacT's VTAB counts are the mean over the 19 tasks at the authors' per-task ranks."""
    tt = {r: vit_count("fact_tt", r) for r in {r for r, _ in VTAB_RANK_SCALE["tt"].values()}}
    tk = {r: vit_count("fact_tk", r) for r in {r for r, _ in VTAB_RANK_SCALE["tk"].values()}}
    assert tt == {r: 2 * 768 * r + 144 * r * r for r in tt}
    assert tk == {r: 2 * 768 * r + r**3 + 144 * r for r in tk}
    mean_tk = statistics.mean(tk[r] for r, _ in VTAB_RANK_SCALE["tk"].values())
    mean_tt = statistics.mean(tt[r] for r, _ in VTAB_RANK_SCALE["tt"].values())
    assert round(mean_tk / 1e6, 3) == 0.069  # the papers' 0.069M
    # The released TT ranks (4-16) average 0.040M, which the FacT paper prints; the qGOFT table lists 0.037M.
    assert round(mean_tt / 1e6, 3) == 0.040


def test_lora_qv_is_the_vtab_lora_row() -> None:
    cfg = compose_config(["model=vit_b16_in21k", "model.init=meta", "task=vtab/digits", "method=lora_qv"])
    model, method, bundle = build(cfg)
    assert cfg.method.label == "lora_qv_r8"  # never lora_r8, the label of LoRA on every linear
    assert method.counts(model, bundle.spec)["adapter_params"] == 12 * 2 * 8 * (768 + 768) == 294_912


def test_lora_qv_leaves_k_alone() -> None:
    torch.manual_seed(0)
    model, method, _ = build_run("tiny_vit", ["method=lora_qv"])
    layer = next(m for m in model.modules() if isinstance(m, FusedLoRALayer))
    original = layer.base_layer.weight.detach().clone()
    with torch.no_grad():
        for b in layer.lora_B:
            b.normal_()
    method.merge(model)
    changed = (layer.base_layer.weight != original).any(dim=1).reshape(3, -1).all(dim=1)
    assert changed.tolist() == [True, False, True]  # q and v rows moved, k rows kept


@pytest.mark.parametrize("form", ["tt", "tk"])
def test_fact_forward_is_the_slice_by_slice_definition(form: str) -> None:
    """y = x (W + dW)^T + b, with dW built slice by slice from U, V and the cores (Tucker: C and P) by loops."""
    torch.manual_seed(0)
    model, _, _ = build_run("tiny_deberta", [f"method=fact_{form}", "method.r=3", "method.dropout=0",
                                              "method.scale=0.7"])
    factors = model.fact_factors
    with torch.no_grad():
        factors.V.normal_()
    for layer in [m for m in model.modules() if isinstance(m, FacTLayer)]:
        d, (b, a) = factors.width, (layer.blocks_out, layer.blocks_in)
        delta = torch.zeros(b * d, a * d)
        for i in range(b):
            for j in range(a):
                if form == "tt":
                    core = layer.fact_core[i, j]
                else:
                    n = layer.first + i * a + j
                    core = sum(factors.C[:, :, k] * factors.P[k, n] for k in range(factors.rank))
                delta[i * d:(i + 1) * d, j * d:(j + 1) * d] = factors.V @ core.T @ factors.U
        x = torch.randn(5, a * d)
        base = layer.base_layer
        expected = x @ (base.weight + 0.7 * delta).T + base.bias
        torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


def test_frod_needs_real_weights() -> None:
    with pytest.raises(ConfigError, match="meta"):
        build(compose_config(["model=deberta_v3_base", "model.init=meta", "task=glue/rte", "method=frod"]))


def test_frod_count_on_a_tiny_model() -> None:
    """Per layer: a diagonal of in_features and floor(sparse_rate in^2) off-diagonal entries (PEFT's definition)."""
    model, method, bundle = build_run("tiny_deberta", ["method=frod"])
    per_block = 5 * (32 + int(32 * 32 * 0.01)) + (64 + int(64 * 64 * 0.01))
    assert method.counts(model, bundle.spec)["adapter_params"] == 2 * per_block == 628


@pytest.mark.parametrize("r", [1, 3])
def test_hra_odd_r_is_refused_before_a_model_is_built(r: int) -> None:
    """PEFT only warns for an odd r and starts from random reflections (not the pre-trained model); even r and
    init_weights=false (a random start asked for) pass."""
    with pytest.raises(ConfigError, match=f"method.r={r} is odd.*use an even r such as {r + 1}"):
        build_method(compose_config(["method=hra", f"method.r={r}"]).method)
    assert build_method(compose_config(["method=hra", "method.r=2"]).method).peft_config().r == 2
    assert not build_method(compose_config(["method=hra", "method.r=3", "+method.init_weights=false"]).method
                            ).peft_config().init_weights


def test_osf_label_names_the_split_that_ran() -> None:
    """A trainable rank on method=osf was labelled osf, beside the full-spectrum runs, at their searched rate."""
    labels = {o: compose_config(["method=osf", *o.split()]).method.label
              for o in ["", "method.trainable_rank=2", "method.effective_rank=0.25"]}
    assert labels == {"": "osf", "method.trainable_rank=2": "osf_k2", "method.effective_rank=0.25": "osf_e0.25"}
    assert compose_config(["method=osf_k2", "method.trainable_rank=1"]).method.label == "osf_k1"


def test_osf_effective_rank_that_leaves_nothing_to_train_is_refused() -> None:
    with pytest.raises(ConfigError, match="method.effective_rank=1000 freezes every singular direction"):
        build_run("tiny_bert", ["method=osf", "method.effective_rank=1000"])


@pytest.mark.parametrize("target", ["attn.qkv", "query"])
def test_lora_qv_on_separate_projections_says_what_it_needs(target: str) -> None:
    """No fused qkv (BERT): one line that names lora_qv's need and method=lora, not a ValueError from the layer."""
    with pytest.raises(ConfigError, match="lora_qv adapts fused q,k,v linears.*use method=lora"):
        build_run("tiny_bert", ["method=lora_qv", f"method.target_modules=[{target}]"])


def test_oft_block_count_is_refused_for_the_block_size() -> None:
    """PEFT takes r (block count) or oft_block_size, not both, and block_size must be >= 1: method.r could never
    be used, and PEFT's message sent the user to a block size of 0."""
    with pytest.raises(ConfigError, match="method.r=4 is PEFT's OFT block count.*set method.block_size"):
        build_method(compose_config(["method=oft", "method.r=4"]).method)


@pytest.mark.parametrize("value", ["1.5", "0", "-0.25"])
def test_osf_effective_rank_is_a_rank_or_a_fraction(value: str) -> None:
    with pytest.raises(ConfigError, match=rf"method.effective_rank={value} must be an integer >= 1 or a fraction"):
        build_run("tiny_bert", ["method=osf", f"method.effective_rank={value}"])


def test_osf_trainable_rank_must_fit() -> None:
    with pytest.raises(ConfigError, match="trainable_rank"):
        build_run("tiny_bert", ["method=osf_k2", "method.trainable_rank=33"])


def test_boft_records_the_form_that_ran_and_refuses_another(capsys) -> None:
    """PEFT's BOFT falls back to one butterfly factor without its CUDA extension: the dry run's line, the counts and
    the record (report) say which form ran; a config asking for another form is refused in one line (found by a new
    user: a CPU run asking m=2 was filed under boft_b4_m2, the run id of a true m=2 run)."""
    cfg = compose_config(["model=tiny_deberta", "task=glue/rte", "method=boft", "method.block_size=4", "dry_run=true"])
    assert cfg.method.label == "boft_b4_m1"  # PEFT's default: one factor, what every CPU run builds
    dry_run(cfg)
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    model, method, _ = build(cfg)
    built = max(m.boft_R["default"].shape[0] for m in model.modules() if hasattr(m, "boft_R") and m.boft_R)
    assert printed["boft_butterfly_factor"] == method.report(model)["boft_butterfly_factor"] == built == 1
    two = compose_config(["model=tiny_deberta", "task=glue/rte", "method=boft", "method.block_size=4",
                          "method.boft_n_butterfly_factor=2"])
    if torch.cuda.is_available():
        pytest.skip("with CUDA PEFT's extension may build two factors")
    with pytest.raises(ConfigError, match=r"BOFT: PEFT built 1 butterfly factor\(s\), not the configured "
                                          r"method.boft_n_butterfly_factor=2 .* filed as boft_b4_m2: set "
                                          r"method.boft_n_butterfly_factor=1"):
        build(two)


def test_boft_leaves_the_compiler_environment_as_it_found_it(monkeypatch) -> None:
    """PEFT's BOFT sets CC and CXX to gcc around its CUDA extension's build and, when that build fails (any CPU
    machine), never restores them: the rotation kernel's next build in the process would see another compiler and
    rebuild. The harness restores both, unset or set."""
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("CXX", "c++")
    build(compose_config(["model=tiny_deberta", "task=glue/rte", "method=boft", "method.block_size=4"]))
    assert "CC" not in os.environ and os.environ["CXX"] == "c++"


def test_new_layers_follow_autocast() -> None:
    """Under bf16 autocast an adapted layer returns bf16, as a plain nn.Linear does (DeBERTa fails otherwise)."""
    for overrides in (["method=hra"], ["method=delora"], ["method=osf_k2"], ["method=frod"]):
        model, _, _ = build_run("tiny_bert", overrides)
        layer = next(m for m in model.modules() if isinstance(m, BaseTunerLayer))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert layer(torch.randn(2, 3, layer.in_features)).dtype == torch.bfloat16, overrides


def test_delora_lambda3_reaches_every_layer() -> None:
    """The family grid's DeLoRA preset: PEFT's DeLoRA with boundary 3 (PEFT's default 15 does not train on MiniLM),
    a label of its own so its records never mix with the default's."""
    model, method, _ = build_run("tiny_bert", ["method=delora_lambda3"])
    assert method.cfg.label == "delora_r8_lambda3"
    lambdas = [p.item() for n, p in model.named_parameters() if "delora_lambda" in n]
    assert len(lambdas) == sum(isinstance(m, BaseTunerLayer) for m in model.modules()) > 0
    assert set(lambdas) == {3.0}


def test_a_peft_method_is_built_without_transformers_deprecation_noise() -> None:
    """PeftModel reads ``is_gradient_checkpointing``, which transformers deprecated: a FutureWarning on every run of
    every PEFT method that no user can act on (found by a new user); it is silenced there, and only there."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_run("tiny_bert", ["method=lora"])
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
