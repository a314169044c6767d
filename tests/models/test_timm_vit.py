"""The timm ViT model kind: tiny random model, ViT-B/16 counts on the meta device, offline errors, local files."""

import csv
from pathlib import Path

import pytest
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from safetensors.torch import save_file
from torch import nn

from qgoft_bench.config import compose_config
from qgoft_bench.errors import ConfigError, ModelSourceError
from qgoft_bench.methods.targets import find_targets
from qgoft_bench.models import MODEL_BUILDERS
from qgoft_bench.models.timm_vit import ImageProcessor, TimmImageClassifier, build_timm_vit
from qgoft_bench.tasks.vtab1k import VTAB_TASKS

ROOT = Path(__file__).parents[2]
CLASSES = 47  # VTAB dtd


def model_cfg(name: str, **overrides):
    cfg = OmegaConf.load(ROOT / "conf" / "model" / f"{name}.yaml")
    cfg.merge_with(overrides)
    return cfg


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    # No test may wait on the network or find a checkpoint in the user's hub cache. huggingface_hub read the
    # environment when timm imported it, so its constants are patched too.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))


def test_tiny_vit_builds_and_classifies():
    assert MODEL_BUILDERS.get("timm_vit") is build_timm_vit
    bundle = build_timm_vit(model_cfg("tiny_vit"), "image_cls", CLASSES)
    assert isinstance(bundle.model, TimmImageClassifier)
    assert bundle.spec.family == "vit" and bundle.spec.head_modules == ["vit.head"]
    head = bundle.model.get_submodule("vit.head")
    assert (head.in_features, head.out_features) == (32, 47)
    names = dict(bundle.model.named_modules())
    for block in range(2):
        for target in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"):
            assert f"vit.blocks.{block}.{target}" in names
    assert bundle.processor == ImageProcessor(image_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    logits = bundle.model(pixel_values=torch.randn(2, 3, 32, 32)).logits
    assert logits.shape == (2, 47)


def test_vit_b16_on_meta_matches_the_papers_full_count():
    bundle = build_timm_vit(model_cfg("vit_b16_in21k", init="meta"), "image_cls", CLASSES)
    params = list(bundle.model.named_parameters())
    assert all(p.is_meta for _, p in params)
    backbone = sum(p.numel() for n, p in params if not n.startswith("vit.head."))
    with (ROOT / "qgoft_bench/report/reference/vtab1k_vit_b16.csv").open() as f:
        rows = {r["method"]: r for r in csv.DictReader(line for line in f if not line.startswith("#"))}
    assert abs(backbone / 1e6 - float(rows["full"]["params_m"])) < 0.1
    assert backbone == 85_798_656
    # The default targets: two in_features-768 layers per block, so GOFT has 12 * 2 * 767 = 18,408 parameters.
    targets = model_cfg("vit_b16_in21k").target_modules
    widths = [m.in_features for _, m in find_targets(bundle.model, targets, (nn.Linear,))]
    assert len(widths) == 24 and set(widths) == {768}
    assert sum(w - 1 for w in widths) == 18_408
    assert bundle.processor.image_size == 224 and bundle.processor.mean == (0.5, 0.5, 0.5)


@pytest.mark.parametrize("name", ["tiny_vit", "vit_b16_in21k"])
def test_pretrained_without_hub_or_path_is_a_one_line_error(name):
    with pytest.raises(
        ModelSourceError, match="hub is unreachable.*model.path=FILE.*model.init=random"
    ) as err:
        build_timm_vit(model_cfg(name, init="pretrained"), "image_cls", CLASSES)
    assert "\n" not in str(err.value)


def test_pretrained_from_a_local_file(tmp_path):
    source = build_timm_vit(model_cfg("tiny_vit"), "image_cls", 5).model.vit
    file = tmp_path / "tiny.safetensors"
    save_file(source.state_dict(), str(file))
    loaded = build_timm_vit(model_cfg("tiny_vit", init="pretrained", path=str(file)), "image_cls", CLASSES).model.vit
    assert torch.equal(loaded.blocks[1].mlp.fc1.weight, source.blocks[1].mlp.fc1.weight)
    assert loaded.head.out_features == 47  # the 5-way head of the checkpoint is dropped
    with pytest.raises(ModelSourceError, match="is not a file"):
        build_timm_vit(model_cfg("tiny_vit", init="pretrained", path=str(tmp_path / "none.pth")), "image_cls", CLASSES)


def test_unknown_init():
    with pytest.raises(ConfigError, match="model.init='hub'"):
        build_timm_vit(model_cfg("tiny_vit", init="hub"), "image_cls", CLASSES)


def test_paper_recipe_composes():
    cfg = compose_config(["experiment=paper/vtab", "method=full"])
    assert (cfg.model.name, cfg.task.name, cfg.task.protocol) == ("vit_b16_in21k", "vtab/cifar", "final")
    trainer = cfg.trainer
    assert (trainer.lr, trainer.weight_decay, trainer.batch_size, trainer.max_epochs) == (1e-3, 1e-4, 64, 100)
    assert (trainer.schedule, trainer.warmup_ratio, trainer.lr * trainer.min_lr_ratio) == (
        "cosine",
        0.1,
        1e-5,
    )
    assert cfg.model.drop_path_rate == 0.1
    recipe = OmegaConf.load(ROOT / "conf" / "experiment" / "paper" / "vtab.yaml")
    sweep = OverridesParser.create().parse_overrides([f"task={recipe.hydra.sweeper.params.task}"])[0]
    assert list(sweep.sweep_iterator()) == [f"vtab/{t}" for t in VTAB_TASKS]
