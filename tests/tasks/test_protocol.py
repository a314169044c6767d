"""Fu et al.'s 90/10 protocol: train and validation disjoint and together the official train split, the official
dev split as test, the authors' exact files, the perturbed training sets, and selection on validation."""

import json

import pytest

from qgoft_bench.config import compose_config
from qgoft_bench.errors import ConfigError
from qgoft_bench.records import run_id
from qgoft_bench.report.tables import build_runs_table, build_table, collect, table_spec
from qgoft_bench.tasks import build_task
from qgoft_bench.train import run_experiment
from tests.conftest import REPO, make_superglue_fixture

FU2023 = REPO.parent / "shared" / "data" / "fu2023"
SHARED = REPO.parent / "shared" / "data"


def read(task: str, *overrides: str):
    cfg = compose_config([f"task={task}", "task.protocol=fu2023", *overrides])
    built = build_task(cfg.task, cfg.data)
    built.read()
    return built


def texts(task) -> dict[str, list[str]]:
    """Each split's examples as one string each (GLUE's splits or SuperGLUE's examples)."""
    if hasattr(task, "splits"):
        return {name: [f"{a}|{b}" for a, b in zip(s.text_a, s.text_b or [""] * len(s), strict=True)]
                for name, s in task.splits.items()}
    return {name: [json.dumps({k: v for k, v in e.items() if k not in ("idx", "spans")}, sort_keys=True)
                   for e in examples] for name, examples in task.examples.items()}


@pytest.mark.parametrize("task", ["glue/rte", "superglue/cb", "superglue/copa"])
def test_a_drawn_split_is_disjoint_whole_and_the_same_for_every_seed(task, glue_fixture, tmp_path):
    data = [f"data.glue_dir={glue_fixture}", f"data.superglue_dir={make_superglue_fixture(tmp_path / 'sg')}"]
    official = build_task(compose_config([f"task={task}", *data]).task, compose_config(data).data)
    official.read()
    fu = read(task, *data)
    splits, whole = texts(fu), texts(official)
    assert set(splits) == {"train", "val", "test"}
    # what the record's task.protocol says: a drawn split is not the authors' (the tables keep it off the paper's rows)
    assert (fu.protocol, official.protocol) == ("fu2023_draw, split_seed 0", "official")
    assert sorted(splits["train"] + splits["val"]) == sorted(whole["train"])  # together: the official train split
    assert len(splits["val"]) == round(0.1 * len(whole["train"]))
    assert splits["test"] == whole["dev"]  # the official dev split, whole, is the test set
    assert texts(read(task, *data, "seed=7")) == splits  # the split does not move with the training seed
    assert texts(read(task, *data, "task.split_seed=1"))["val"] != splits["val"]


def test_the_authors_files_keep_train_and_val_apart_and_test_official():
    if not FU2023.is_dir():
        pytest.skip("Fu et al.'s split files (../shared/data/fu2023) are not beside this checkout")
    rte = read("glue/rte", f"data.fu2023_dir={FU2023}")
    assert {k: len(v) for k, v in rte.splits.items()} == {"train": 2241, "val": 249, "test": 277}
    train_ids = {json.loads(line)["idx"] for line in (FU2023 / "rte" / "train.jsonl").read_text().splitlines()}
    val_ids = {json.loads(line)["idx"] for line in (FU2023 / "rte" / "val.jsonl").read_text().splitlines()}
    assert not train_ids & val_ids and len(train_ids | val_ids) == 2490  # disjoint parts of the official train
    official = build_task(compose_config(["task=glue/rte", f"data.glue_dir={SHARED / 'glue'}"]).task,
                          compose_config([f"data.glue_dir={SHARED / 'glue'}"]).data)
    official.read()
    assert rte.splits["test"].labels.tolist() == official.splits["dev"].labels.tolist()
    cb = read("superglue/cb", f"data.fu2023_dir={FU2023}")
    assert {k: len(v) for k, v in cb.examples.items()} == {"train": 225, "val": 25, "test": 56}


def test_a_drawn_split_never_takes_the_place_of_the_authors_files(tmp_path):
    """Found by a new user: data paths are left out of a run's identity, so a run without data.fu2023_dir (a split
    drawn here) had the run id of the same run on the authors' files and replaced its record; the fu2023 table then
    showed the drawn split's score beside the paper's. Now each has its own record, and the table only the files'."""
    if not FU2023.is_dir():
        pytest.skip("Fu et al.'s split files (../shared/data/fu2023) are not beside this checkout")
    common = ["task=superglue/cb", "task.protocol=fu2023", "model=tiny_bert", "method=linear",
              f"data.superglue_dir={SHARED / 'superglue'}", f"results_dir={tmp_path}", "trainer.max_steps=2",
              "trainer.eval_every_steps=2", "trainer.progress=false"]
    on_files = run_experiment(compose_config([*common, f"data.fu2023_dir={FU2023}"]))
    drawn = run_experiment(compose_config([*common, "data.fu2023_dir=null"]))
    assert on_files["run_id"] != drawn["run_id"]
    assert (on_files["task"]["protocol"], drawn["task"]["protocol"]) == ("fu2023", "fu2023_draw, split_seed 0")
    assert sorted(p.name for p in (tmp_path / "superglue" / "cb" / "tiny_bert" / "linear").glob("*.json")) == \
        sorted(f"seed1-{r['run_id']}.json" for r in (on_files, drawn))
    collection = collect(tmp_path)
    assert set(collection.runs["task"]) == {"superglue/cb", "superglue/cb (fu2023_draw, split_seed 0)"}
    table = build_table(table_spec("fu2023"), collection, paper="matched")
    ours = table.frame[table.frame["source"] == "ours"]
    assert ours["cb"].tolist() == [pytest.approx(100 * on_files["metrics"]["best"]["accuracy_macro_f1_mean_test"])]
    drawn_note = ("left out: 1 completed superglue/cb record(s) on protocol fu2023_draw, split_seed 0, not the "
                  "paper's (qgoft-bench-tables fu2023 --protocol fu2023_draw reads them)")
    assert [note for note in table.footnotes if "fu2023_draw" in note] == [drawn_note]  # once, not beside the paper
    # the runs table: two rows, each with the test score the protocol reports (not the validation score that
    # picked the epoch), and no note that one cell mixes them
    runs = build_runs_table(tmp_path)
    assert runs.frame["task"].tolist() == ["superglue/cb", "superglue/cb (fu2023_draw, split_seed 0)"]
    assert runs.frame["metric"].tolist() == ["accuracy_macro_f1_mean_test"] * 2
    assert runs.frame["score"].tolist() == [pytest.approx(100 * r["metrics"]["best"]["accuracy_macro_f1_mean_test"])
                                            for r in (on_files, drawn)]
    assert not any(note.startswith("mixed") for note in runs.footnotes)


def test_records_on_the_authors_files_keep_their_run_ids():
    """The records committed under results/ were made on the authors' files: the identity of those runs is unchanged
    by the drawn split's (every record's run id is still the hash of its config)."""
    records = [json.loads(p.read_text()) for p in sorted((REPO / "results" / "cpu_minilm_fu2023").rglob("seed*.json"))]
    records = [r for r in records if isinstance(r, dict) and "config" in r]
    assert len(records) >= 70
    assert all(r["run_id"] == run_id(r["config"]) for r in records)


def test_perturbed_training_sets_drop_ten_percent_by_seed(glue_fixture):
    data = f"data.glue_dir={glue_fixture}"
    full = texts(read("glue/rte", data))
    first = texts(read("glue/rte", data, "task.drop_fraction=0.1", "task.drop_seed=1"))
    second = texts(read("glue/rte", data, "task.drop_fraction=0.1", "task.drop_seed=2"))
    assert len(first["train"]) == len(full["train"]) - round(0.1 * len(full["train"]))
    assert set(first["train"]) < set(full["train"]) and first["train"] != second["train"]
    assert first["val"] == full["val"] and first["test"] == full["test"]  # only training examples are dropped


def test_selection_on_validation_and_the_test_score_beside_it(glue_fixture, tmp_path):
    record = run_experiment(compose_config([
        "task=glue/rte", "task.protocol=fu2023", "model=tiny_bert", "method=lora", f"data.glue_dir={glue_fixture}",
        f"results_dir={tmp_path}", "trainer.batch_size=8", "trainer.eval_every_steps=2", "trainer.max_steps=8",
        "trainer.lr=1e-2", "trainer.progress=false"]))
    assert record["task"]["metric"] == "accuracy_val"
    epochs = record["metrics"]["epochs"]
    assert all({"accuracy_val", "accuracy_test"} <= set(e["eval"]) for e in epochs)
    best = max(e["eval"]["accuracy_val"] for e in epochs)
    chosen = next(e for e in epochs if e["eval"]["accuracy_val"] == best)  # the first evaluation at the best
    assert record["metrics"]["best"]["step"] == chosen["step"]
    assert record["metrics"]["best"]["accuracy_test"] == chosen["eval"]["accuracy_test"]


def test_a_task_outside_the_protocol_is_refused():
    with pytest.raises(ConfigError, match="glue/sst2 is not one of Fu et al.'s tasks"):
        build_task(compose_config(["task=glue/sst2", "task.protocol=fu2023"]).task, compose_config([]).data)
    with pytest.raises(ConfigError, match="task.protocol='fu' is not one of official, fu2023"):
        build_task(compose_config(["task=glue/rte", "task.protocol=fu"]).task, compose_config([]).data)


@pytest.mark.parametrize(("override", "message"), [
    ("task.drop_seed=-1", "task.drop_seed=-1 must be a whole number >= 0"),  # numpy's seeds: a traceback in the job
    ("task.drop_seed=1.5", "task.drop_seed=1.5 must be a whole number"),  # was truncated to 1 under its own run id
    ("task.split_seed=abc", "task.split_seed='abc' must be a whole number"),
    ("task.drop_fraction=abc", r"task.drop_fraction='abc' must be a number in \[0, 1\)"),  # a TypeError traceback
    ("task.drop_fraction=1.0", r"task.drop_fraction=1.0 must be a number in \[0, 1\)"),
])
def test_bad_draw_settings_are_one_line_before_any_job(override, message):
    """Found by a new user: the 90/10 draw's and Table 2's settings failed inside the job (numpy's traceback and a
    failed record) or were silently truncated."""
    cfg = compose_config(["task=superglue/cb", "task.protocol=fu2023", override])
    with pytest.raises(ConfigError, match=message):
        build_task(cfg.task, cfg.data)


def test_a_fu2023_folder_without_the_tasks_split_files_is_refused_before_any_job(tmp_path):
    """Found by a new user: a wrong data.fu2023_dir started every job of a sweep, each failing on its read; the
    pre-flight check names the missing files instead, and passes once they are there."""
    from qgoft_bench.train.preflight import validate

    overrides = ["task=superglue/cb", "model=tiny_bert", "task.protocol=fu2023", f"data.fu2023_dir={tmp_path}",
                 f"results_dir={tmp_path / 'res'}"]
    with pytest.raises(ConfigError, match=r"data.fu2023_dir=.* lacks .*cb/train.jsonl.*Fu et al.'s split files"):
        validate(compose_config(overrides))
    (tmp_path / "cb").mkdir()
    for split in ("train", "val", "test"):
        (tmp_path / "cb" / f"{split}.jsonl").write_text("")
    validate(compose_config(overrides))
