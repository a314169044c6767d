"""Every option of every config group composes, and the names other parts rely on exist."""

import pytest
from omegaconf import OmegaConf

from qgoft_bench.config import GROUPS, compose_config, group_options
from qgoft_bench.errors import ConfigError
from qgoft_bench.train.preflight import validate

ALL_OPTIONS = [(group, option) for group in GROUPS for option in group_options(group)]


@pytest.mark.parametrize("group,option", ALL_OPTIONS, ids=[f"{g}={o}" for g, o in ALL_OPTIONS])
def test_every_option_composes_and_resolves(group, option):
    cfg = compose_config([f"{group}={option}"])
    resolved = OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
    assert {"task", "model", "method", "trainer"} <= set(resolved)
    if group in ("task", "model", "method"):
        assert resolved[group]["name"]  # every task, model and method names itself


# One method of each kind a recipe may meet: PEFT-backed, a rotation, a labelled preset, a sparse method, a full update.
# The whole product (14 recipes x 36 methods, about 4 minutes of Hydra composes) is the slow test below.
METHOD_KINDS = ["lora", "qgoft", "delora_lambda3", "sam", "full"]


def _resolves_or_is_refused_in_one_line(experiment: str, method: str) -> None:
    cfg = compose_config([f"experiment={experiment}", f"method={method}"])
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # noqa: BLE001 - then validation must say so in one line
        with pytest.raises(ConfigError, match="cannot resolve the config") as err:
            validate(cfg)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("experiment", group_options("experiment"))
def test_every_recipe_with_each_kind_of_method_resolves_or_is_refused_in_one_line(experiment):
    """A recipe that keys values by method (lr_by_method) cannot serve every method: that is a one-line error
    before any job, never a traceback in the middle of a sweep."""
    for method in METHOD_KINDS:
        _resolves_or_is_refused_in_one_line(experiment, method)


@pytest.mark.slow
@pytest.mark.parametrize("experiment", group_options("experiment"))
def test_every_recipe_with_every_method_resolves_or_is_refused_in_one_line(experiment):
    for method in group_options("method"):
        _resolves_or_is_refused_in_one_line(experiment, method)


def test_each_group_has_its_options():
    assert {"glue/cola", "glue/sst2", "glue/mrpc", "glue/qqp", "glue/stsb", "glue/mnli", "glue/qnli", "glue/rte",
            "glue/wnli"} <= set(group_options("task"))
    assert {"deberta_v3_base", "roberta_base", "minilm_l6", "llama2_7b", "tiny_bert", "tiny_deberta", "tiny_roberta",
            "tiny_llama"} <= set(group_options("model"))
    assert {"full", "linear", "lora"} <= set(group_options("method"))
    assert "demo" in group_options("experiment")


def test_names_other_parts_rely_on():
    cfg = compose_config(["task=glue/rte", "method=lora"])
    for key in ("seed", "results_dir", "dry_run", "overwrite", "data.glue_dir", "data.vtab_dir", "trainer.max_steps",
                "trainer.max_epochs", "trainer.lr", "trainer.batch_size", "model.init", "method.target_modules"):
        node = cfg
        for part in key.split("."):
            assert part in node, key
            node = node[part]
    assert cfg.method.target_modules == cfg.model.target_modules  # methods default to the model family's targets


def test_env_vars_fill_data_dirs(monkeypatch):
    monkeypatch.setenv("GLUE_DIR", "/some/glue")
    assert compose_config([]).data.glue_dir == "/some/glue"


def test_method_label_follows_overrides():
    assert compose_config(["method=lora", "method.r=2"]).method.label == "lora_r2"
