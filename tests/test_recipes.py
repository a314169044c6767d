"""The paper recipes against the reference recipes: experiment=paper/glue against the qGOFT paper's Table 5 and
AdaLoRA's DeBERTaV3-base settings, experiment=paper/vtab against Table 9. The oracle is
qgoft_bench/report/reference/hyperparameters.md, parsed here; never the recipe's own table
(conf/recipe/glue_deberta_v3_base.csv), which is what is tested."""

import json
import re
from importlib import resources
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from qgoft_bench.config import compose_config, recipe_table, recipe_value, sweep_jobs
from qgoft_bench.report.reference import load_reference

REFERENCE = resources.files("qgoft_bench.report.reference").joinpath("hyperparameters.md").read_text()


def markdown_tables(section: str) -> list[dict[str, dict[str, str]]]:
    """Every ``| | MNLI | ... |`` table of the section whose heading starts with ``section``, as
    {row label: {"glue/mnli": cell, ...}}."""
    body = REFERENCE.split(f"## {section}", 1)[1].split("\n## ", 1)[0]
    tables, current, tasks = [], None, []
    for line in body.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else None
        if cells is None:
            current = None
        elif current is None:  # a header row: the task columns
            tasks = ["glue/" + c.lower().replace("-", "") for c in cells[1:]]
            current = {}
            tables.append(current)
        elif not set(cells[1]) <= {"-"}:
            current[cells[0]] = dict(zip(tasks, cells[1:], strict=True))
    return tables


PAPER, ADALORA = markdown_tables("GLUE, DeBERTaV3-base (qGOFT paper, Table 5")
TASKS = list(PAPER["epochs (GOFT and qGOFT)"])
BATCH = int(re.search(r"batch size (\d+) for every task", REFERENCE).group(1))
# family recipe label -> the folder of its search's records: BOFT was searched on the CPU asking m=2 (filed as
# boft_b8_m2) while PEFT built one factor there, the recipe's boft_b8_m1
SEARCHED_AS = {"boft_b8_m1": "boft_b8_m2"}


def resolved(*overrides: str) -> dict:
    return OmegaConf.to_container(compose_config(["experiment=paper/glue", *overrides]), resolve=True)


def check_task_settings(cfg: dict, task: str) -> None:
    """AdaLoRA's per-task settings, which every method of the recipe shares."""
    warmup = ADALORA["warmup"][task]
    steps, ratio = (int(warmup.removesuffix(" steps")), 0.0) if warmup.endswith("steps") else \
        (0, float(warmup.removesuffix("%")) / 100)
    assert (cfg["trainer"]["warmup_steps"], cfg["trainer"]["warmup_ratio"]) == (steps, ratio)
    assert cfg["trainer"]["max_seq_len"] == int(ADALORA["max_seq_len"][task])
    assert cfg["trainer"]["weight_decay"] == float(ADALORA["weight decay"][task])
    assert cfg["model"]["classifier_dropout"] == float(ADALORA["classifier dropout"][task])
    assert cfg["trainer"]["batch_size"] == BATCH


def test_the_reference_tables_parse():
    assert TASKS == ["glue/mnli", "glue/sst2", "glue/cola", "glue/qqp", "glue/qnli", "glue/rte", "glue/mrpc",
                     "glue/stsb"]
    assert set(PAPER) == {"epochs (GOFT and qGOFT)", "lr GOFT", "lr qGOFT", "qGOFT lambda"}
    assert {"max_seq_len", "warmup", "weight decay", "classifier dropout", "AdaLoRA/LoRA lr",
            "AdaLoRA/LoRA epochs"} <= set(ADALORA)


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("method", ["goft", "qgoft"])
def test_goft_and_qgoft_cells_are_table_5(task, method):
    """Through Hydra, as a run gets them: epochs, lr and lambda from Table 5, the rest from AdaLoRA's scripts."""
    cfg = resolved(f"task={task}", f"method={method}")
    assert cfg["model"]["name"] == "deberta_v3_base"
    assert cfg["trainer"]["max_epochs"] == int(PAPER["epochs (GOFT and qGOFT)"][task])
    assert cfg["trainer"]["lr"] == float(PAPER[f"lr {'GOFT' if method == 'goft' else 'qGOFT'}"][task])
    if method == "qgoft":
        assert cfg["method"]["reg_lambda"] == float(PAPER["qGOFT lambda"][task])
    check_task_settings(cfg, task)


def test_baselines_take_adaloras_recipe():
    """Every other row of the paper's table: the GOFT paper gives no recipe, AdaLoRA/LoRA's lr and epochs run."""
    baselines = [m for m in load_reference("glue_deberta_v3_base").frame.index if m not in ("goft", "qgoft")]
    for task in TASKS:
        for label in baselines:
            root = OmegaConf.create({"task": {"name": task}, "method": {"label": label}})
            cell = {column: recipe_value("glue_deberta_v3_base", column, _root_=root) for column in ("lr", "epochs")}
            assert cell == {"lr": float(ADALORA["AdaLoRA/LoRA lr"][task]),
                            "epochs": int(ADALORA["AdaLoRA/LoRA epochs"][task])}, (task, label)
    check_task_settings(resolved("task=glue/mrpc", "method=full"), "glue/mrpc")  # MRPC: warm-up as a ratio


def test_the_grid_is_the_papers_table():
    """8 tasks x every row of qGOFT Table 1 x 5 seeds; each method's label is the row it fills."""
    jobs = sweep_jobs(["experiment=paper/glue"], multirun=True)
    axes = {key: sorted({o.partition("=")[2] for job in jobs for o in job if o.startswith(f"{key}=")})
            for key in ("task", "method", "seed")}
    assert axes["task"] == sorted(TASKS) and axes["seed"] == ["1", "2", "3", "4", "5"]
    labels = {compose_config(["experiment=paper/glue", f"method={m}"]).method.label for m in axes["method"]}
    assert labels == set(load_reference("glue_deberta_v3_base").frame.index)
    assert len(jobs) == 8 * len(labels) * 5


def test_a_cell_the_recipe_lacks_is_named():
    root = OmegaConf.create({"task": {"name": "glue/wnli"}, "method": {"label": "qgoft"}})
    with pytest.raises(KeyError, match="no row for task glue/wnli and method qgoft"):
        recipe_value("glue_deberta_v3_base", "lr", _root_=root)


def test_vtab_recipe_is_table_9():
    section = REFERENCE.split("## VTAB-1k", 1)[1].split("\n## ", 1)[0]

    def number(pattern: str) -> float:
        return float(re.search(pattern, section).group(1))

    cfg = OmegaConf.to_container(compose_config(["experiment=paper/vtab", "method=qgoft"]), resolve=True)
    trainer, epochs = cfg["trainer"], number(r"(\d+) epochs")
    assert trainer["lr"] == number(r"AdamW lr (\S+),")
    assert trainer["weight_decay"] == number(r"weight decay (\S+),")
    assert trainer["batch_size"] == number(r"batch (\d+),")
    assert trainer["max_epochs"] == epochs
    assert trainer["schedule"] == "cosine" and "cosine schedule" in section
    assert trainer["warmup_ratio"] == number(r"(\d+) warm-up epochs") / epochs
    assert trainer["min_lr_ratio"] == pytest.approx(number(r"min lr (\S+)\)") / trainer["lr"])
    assert cfg["model"]["drop_path_rate"] == number(r"drop_path (\S+),")
    assert cfg["model"]["timm_name"] == re.search(r"timm name (\S+);", section).group(1)
    assert cfg["method"]["reg_lambda"] == number(r"qGOFT lambda (\S+)\.")
    assert (cfg["task"]["normalization"], cfg["task"]["protocol"]) == ("imagenet", "final")  # ImageNet mean/std; test


def test_llama_recipe_is_table_7():
    """experiment=paper/llama against the reference's LLaMA-2-7B section: each method's lr (and qGOFT's lambda),
    one epoch, batch 32 with accumulation 2, 50 warm-up steps, cosine; the grid is Table 2's rows with a stated lr."""
    section = REFERENCE.split("## LLaMA-2-7B instruction tuning", 1)[1].split("\n## ", 1)[0]
    stated = dict(re.findall(r"(LoRA r=16|OFT b=16|GOFT|qGOFT) (\d\S*?)[, ]", section.split("lr:", 1)[1]))
    assert stated == {"LoRA r=16": "5e-5", "OFT b=16": "5e-5", "GOFT": "1e-4", "qGOFT": "1e-4"}
    labels = {"LoRA r=16": "lora_r16", "OFT b=16": "oft_b16", "GOFT": "goft", "qGOFT": "qgoft"}
    jobs = sweep_jobs(["experiment=paper/llama"], multirun=True)
    assert sorted(o.partition("=")[2] for job in jobs for o in job if o.startswith("method=")) == sorted(labels.values())
    for name, lr in stated.items():
        cfg = OmegaConf.to_container(compose_config(["experiment=paper/llama", f"method={labels[name]}"]), resolve=True)
        assert (cfg["method"]["label"], cfg["trainer"]["lr"]) == (labels[name], float(lr))
        assert cfg["model"]["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
        assert cfg["task"]["name"] == "instruct/alpaca_mmlu" and cfg["task"]["template"] == "alpaca"
        trainer = cfg["trainer"]
        assert f"{trainer['max_epochs']} epoch" in section and f"{trainer['warmup_steps']} warm-up steps" in section
        assert f"batch {trainer['batch_size']} with gradient accumulation {trainer['grad_accum']}" in section
        assert trainer["schedule"] == "cosine" and "cosine" in section
        if name == "qGOFT":
            assert cfg["method"]["reg_lambda"] == float(re.search(r"qGOFT \S+ with lambda (\S+)\.", section).group(1))
    base = compose_config(["experiment=paper/llama", "method=full", "eval_only=true"])
    assert base.trainer.lr == 0.0  # the base row evaluates LLaMA-2-7B as released


def test_family_rates_are_the_searchs_best():
    """experiment=cpu/minilm_family's rate per method is the best SST-2 dev accuracy of the committed search runs
    (results/cpu_minilm_glue_lr_search), the oracle here; a row for a method never searched fails."""
    search = Path(__file__).parents[1] / "results" / "cpu_minilm_glue_lr_search" / "glue" / "sst2" / "minilm_l6"
    table = recipe_table("cpu_minilm_family")
    assert table, "the family recipe has no rows"
    for (task, label), row in table.items():
        assert task == "*", f"{label}: one rate for every task"
        scores = {}
        for path in (search / SEARCHED_AS.get(label, label)).glob("*.json"):
            record = json.loads(path.read_text())
            if label in SEARCHED_AS:  # the form that ran is the recipe's label
                assert record["params"]["boft_butterfly_factor"] == 1, path
            if record["status"] == "completed":
                scores[record["config"]["trainer"]["lr"]] = record["metrics"]["best"]["accuracy"]
        assert len(scores) >= 3, f"{label}: no search behind its rate"
        assert float(row["lr"]) == max(scores, key=scores.get), (label, sorted(scores.items()))
    cfg = compose_config(["experiment=cpu/minilm_family", "task=glue/stsb", "method=hra"])
    assert cfg.trainer.lr == float(table[("*", "hra_r8")]["lr"])  # the * row serves every task
