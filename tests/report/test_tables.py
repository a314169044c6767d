"""Aggregation over seeds and table layout, against hand-computed values."""

import math

import pytest

from qgoft_bench.report.cli import main
from qgoft_bench.report.tables import (
    aggregate,
    build_runs_table,
    build_table,
    collect,
    on_protocol,
    reported_metric,
    table_spec,
)

GLUE_BEST = {
    "glue/mnli": {"accuracy_m": 0.86, "accuracy_mm": 0.87},
    "glue/sst2": {"accuracy": 0.91},
    "glue/cola": {"matthews": 0.50},
    "glue/qqp": {"accuracy": 0.88},
    "glue/qnli": {"accuracy": 0.89},
    "glue/rte": {"accuracy": 0.70},
    "glue/mrpc": {"accuracy": 0.84},
    "glue/stsb": {"pearson": 0.86, "pearson_spearman_mean": 0.85},
}


def _row(table, source: str, method: str) -> dict:
    rows = table.frame[(table.frame["source"] == source) & (table.frame["method"] == method)]
    assert len(rows) == 1, rows
    return rows.iloc[0].to_dict()


def test_mean_std_n_over_seeds(write, tmp_path):
    for seed, accuracy in [(1, 0.80), (2, 0.83), (3, 0.89)]:
        write("glue/rte", "goft", seed, {"accuracy": accuracy})
    write("glue/rte", "lora_r2", 1, {"accuracy": 0.75}, adapter_params=331_776)
    write("glue/rte", "goft", 4, {"accuracy": 0.10}, status="failed")
    write("glue/rte", "goft", 5, {"accuracy": 0.50}, status="diverged")

    collection = collect(tmp_path / "results")
    assert collection.left_out_notes() == ["left out: glue/rte goft (minilm_l6): 1 diverged, 1 failed"]
    agg = aggregate(collection.runs).set_index(["task", "method", "model", "select", "metric"])
    goft = agg.loc[("glue/rte", "goft", "minilm_l6", "best", "accuracy")]
    # mean 0.84; deviations -0.04, -0.01, 0.05 -> sum of squares 0.0042 / (n - 1) = 0.0021
    assert goft["mean"] == pytest.approx(0.84)
    assert goft["std"] == pytest.approx(math.sqrt(0.0021))
    assert goft["n"] == 3
    assert goft["adapter_params"] == 82_872
    last = agg.loc[("glue/rte", "goft", "minilm_l6", "last", "accuracy")]
    assert last["mean"] == pytest.approx(0.79)
    one_seed = agg.loc[("glue/rte", "lora_r2", "minilm_l6", "best", "accuracy")]
    assert one_seed["n"] == 1 and math.isnan(one_seed["std"])


def test_glue_table_complete_row_with_paper_and_diff(write, tmp_path):
    for seed in (1, 2):
        for task, best in GLUE_BEST.items():
            write(task, "qgoft", seed, best, adapter_params=331_488)
    table = build_table(table_spec("glue"), collect(tmp_path / "results"))

    ours = _row(table, "ours", "qgoft")
    assert ours["model"] == "minilm_l6" and ours["params"] == 331_488 and ours["n"] == "2"
    assert ours["mnli"] == pytest.approx(87.0)  # mismatched by default (qGOFT caption)
    assert ours["cola"] == pytest.approx(50.0) and ours["stsb"] == pytest.approx(86.0)
    expected_avg = (87 + 91 + 50 + 88 + 89 + 70 + 84 + 86) / 8
    assert ours["avg"] == pytest.approx(expected_avg)
    assert not table.marks

    paper = _row(table, "paper", "qgoft")
    assert paper["model"] == "deberta_v3_base" and paper["avg"] == 89.35 and paper["params"] == 330_000
    diff = _row(table, "diff", "qgoft")
    assert diff["rte"] == pytest.approx(70.0 - 88.45)
    assert diff["avg"] == pytest.approx(expected_avg - 89.35)
    assert diff["model"] == "minilm_l6 - deberta_v3_base"
    # every paper row of Table 1 is printed by default; only matched ones on request
    assert (table.frame["source"] == "paper").sum() == 12
    matched = build_table(table_spec("glue"), collect(tmp_path / "results"), paper="matched")
    assert list(matched.frame["source"]) == ["paper", "ours", "diff"]


def test_glue_headline_choices(write, tmp_path):
    for task, best in GLUE_BEST.items():
        write(task, "goft", 1, best)
    collection = collect(tmp_path / "results")
    table = build_table(table_spec("glue", mnli="m", stsb="mean"), collection, paper="none")
    ours = _row(table, "ours", "goft")
    assert ours["mnli"] == pytest.approx(86.0) and ours["stsb"] == pytest.approx(85.0)
    # the records' best epochs were picked by accuracy_m and pearson: a column that reads another metric says so
    picked = [n.split(":")[0] for n in table.footnotes if "at the epoch the records' headline metric" in n]
    assert picked == ["stsb"]
    assert "stsb: pearson_spearman_mean at the epoch the records' headline metric (pearson) picked" in \
        " ".join(table.footnotes)
    default = build_table(table_spec("glue"), collection, paper="none")
    assert [n.split(":")[0] for n in default.footnotes if "headline metric" in n] == ["mnli"]
    last = build_table(table_spec("glue"), collection, select="last", paper="none")
    assert _row(last, "ours", "goft")["sst2"] == pytest.approx(86.0)
    assert not [n for n in last.footnotes if "headline metric" in n]  # no metric picks the last epoch


def test_incomplete_average_is_marked_and_missing_is_nan(write, tmp_path):
    write("glue/rte", "goft", 1, {"accuracy": 0.80})
    write("glue/sst2", "goft", 1, {"accuracy": 0.90})
    table = build_table(table_spec("glue"), collect(tmp_path / "results"), paper="matched")
    position = table.frame.index[table.frame["source"] == "ours"][0]
    ours = table.frame.loc[position]
    assert math.isnan(ours["cola"])  # missing, never 0
    assert ours["avg"] == pytest.approx(85.0)
    assert table.marks[(position, "avg")] == "average over 2 of 8 tasks"
    diff = table.frame.loc[table.frame.index[table.frame["source"] == "diff"][0]]
    assert math.isnan(diff["avg"])  # our 2-task average is not comparable with the paper's 8-task one
    assert diff["rte"] == pytest.approx(80.0 - 86.28)  # the paper's goft RTE


def test_vtab_group_means_and_plain_mean(write, tmp_path):
    # natural: cifar 0.6, dtd 0.8 -> 70; specialized: eurosat 0.9 -> 90; structured: kitti 0.3, dmlab 0.5 -> 40
    cells = {"cifar": 0.6, "dtd": 0.8, "eurosat": 0.9, "kitti": 0.3, "dmlab": 0.5}
    for name, accuracy in cells.items():
        write(f"vtab/{name}", "qgoft", 1, {"accuracy": accuracy}, model="tiny_vit", last={"accuracy": 0.1})
    collection = collect(tmp_path / "results")
    table = build_table(table_spec("vtab"), collection, paper="none")
    ours = _row(table, "ours", "qgoft")
    assert (ours["natural"], ours["specialized"], ours["structured"]) == pytest.approx((70, 90, 40))
    assert ours["avg"] == pytest.approx((70 + 90 + 40) / 3)
    assert ours["mean19"] == pytest.approx(62.0)
    assert table.marks[(0, "avg")] == "average over 5 of 19 tasks"
    last = build_table(table_spec("vtab"), collection, select="last", paper="none")
    assert _row(last, "ours", "qgoft")["cifar"] == pytest.approx(10.0)


def test_fu2023_avg_and_avg_std(write, tmp_path):
    tasks = {  # the protocol's test split: the official dev set (task.protocol=fu2023)
        "glue/cola": "matthews_test", "glue/stsb": "pearson_spearman_mean_test", "glue/mrpc": "accuracy_f1_mean_test",
        "glue/rte": "accuracy_test", "superglue/cb": "accuracy_macro_f1_mean_test", "superglue/copa": "accuracy_test",
        "superglue/wsc": "accuracy_test",
    }  # fmt: skip
    for i, (task, metric) in enumerate(tasks.items()):
        for seed, delta in [(1, -0.01), (2, 0.01)]:
            write(task, "sam", seed, {metric: 0.5 + 0.05 * i + delta * (i + 1)}, model="roberta_base")
    table = build_table(table_spec("fu2023"), collect(tmp_path / "results"), paper="matched")
    ours = _row(table, "ours", "sam")
    assert ours["avg"] == pytest.approx(sum(50 + 5 * i for i in range(7)) / 7)
    # two seeds at mean -+ d: sample std = d * sqrt(2); d = (i + 1) points
    assert ours["avg_std"] == pytest.approx(math.sqrt(2) * sum(range(1, 8)) / 7)
    position = table.frame.index[table.frame["source"] == "ours"][0]
    assert table.std.loc[position, "cola"] == pytest.approx(math.sqrt(2))
    assert _row(table, "paper", "sam")["avg_std"] == 1.51


def test_squad_and_llama_tables(write, tmp_path):
    write("squad/v1", "qgoft", 1, {"exact_match": 0.80, "f1": 0.88}, adapter_params=331_488)
    write("instruct/alpaca_mmlu", "qgoft", 1, {"mmlu_5shot_avg": 0.46, "mmlu_0shot_humanities": 0.31,
                                                "vicuna_eval": 5.5, "loss": 1.25, "perplexity": 3.49},
          model="tiny_llama")
    collection = collect(tmp_path / "results")
    squad = build_table(table_spec("squad"), collection, paper="matched")
    assert _row(squad, "diff", "qgoft")["em"] == pytest.approx(80.0 - 87.1)
    llama = build_table(table_spec("llama"), collection, paper="matched")
    ours = _row(llama, "ours", "qgoft")
    assert ours["mmlu5_avg"] == pytest.approx(46.0) and ours["vicuna_eval"] == pytest.approx(5.5)
    assert ours["params_ratio"] == pytest.approx(100 * 82_872 / 22_713_216)
    assert _row(llama, "paper", "qgoft")["params_ratio"] == pytest.approx(0.03)
    assert math.isnan(ours["mmlu0_stem"]) and ours["mmlu0_hum"] == pytest.approx(31.0)
    assert ours["heldout_loss"] == pytest.approx(1.25) and ours["heldout_ppl"] == pytest.approx(3.49)  # as is
    assert math.isnan(_row(llama, "paper", "qgoft")["heldout_loss"])  # the paper reports none
    # what a table does not read is named, not silently dropped: the squad record here, an MMLU-only evaluation
    write("mmlu", "full", 1, {"mmlu_5shot_avg": 0.40}, model="tiny_llama")
    write("mmlu", "full", 2, {"mmlu_5shot_avg": 0.41}, model="tiny_llama")
    llama = build_table(table_spec("llama"), collect(tmp_path / "results"), paper="matched")
    assert llama.footnotes[-1] == ("not in this table: 2 completed run(s) of mmlu, 1 completed run(s) of squad/v1 "
                                   "(another task, or not the metric its column reads; qgoft-bench-tables runs lists "
                                   "them)")
    write("glue/rte", "lora_r8", 1, {"accuracy": 0.6})  # the official protocol: no accuracy_test for Fu's table
    fu = build_table(table_spec("fu2023"), collect(tmp_path / "results"), paper="none")
    assert fu.footnotes[-1].startswith("not in this table: 1 completed run(s) of glue/rte, 1 completed run(s) of "
                                       "instruct/alpaca_mmlu, 2 completed run(s) of mmlu")


def test_a_model_evaluated_as_built_is_the_base_row(write, tmp_path):
    """eval_only without a saved adapter is the model as released, whatever method was named (method=full, whose
    counts are every parameter): the row "base" with 0 trainable, beside the paper's base row; scoring a saved
    adapter keeps the method's label."""
    best = {"mmlu_5shot_avg": 0.24}
    write("instruct/alpaca_mmlu", "full", 1, best, model="smollm2_135m", adapter_params=134_515_008,
          config={"eval_only": True, "adapter": None})
    write("instruct/alpaca_mmlu", "goft", 1, {"mmlu_5shot_avg": 0.25}, model="smollm2_135m", adapter_params=69_000,
          config={"eval_only": True, "adapter": "x.adapter.safetensors"})
    llama = build_table(table_spec("llama"), collect(tmp_path / "results"), paper="matched")
    base = _row(llama, "ours", "base")
    assert base["params"] == 0 and base["params_ratio"] == 0 and base["mmlu5_avg"] == pytest.approx(24.0)
    assert _row(llama, "paper", "base")["mmlu5_avg"] == pytest.approx(45.49)
    assert _row(llama, "ours", "goft")["params"] == 69_000
    runs = build_runs_table(tmp_path / "results").frame.set_index("method")
    assert runs.loc["base", "params"] == 0 and runs.loc["goft", "params"] == 69_000


def test_records_off_the_papers_protocol_never_sit_beside_the_paper(write, tmp_path):
    """SQuAD scored on half the dev file (dev_articles) is another task for the tables, not the paper's squad/v1."""
    write("squad/v1", "qgoft", 1, {"exact_match": 0.50, "f1": 0.60}, protocol="dev_articles")
    write("squad/v1", "lora_r2", 1, {"exact_match": 0.80, "f1": 0.88}, protocol="official")
    collection = collect(tmp_path / "results")
    squad = build_table(table_spec("squad"), collection, paper="matched")
    assert (squad.frame[squad.frame["source"] == "ours"]["method"] == "lora_r2").all()
    assert set(collection.runs["task"]) == {"squad/v1", "squad/v1 (dev_articles)"}
    assert ("left out: 1 completed squad/v1 record(s) on protocol dev_articles, not the paper's "
            "(qgoft-bench-tables runs shows them)") in squad.footnotes


def test_a_protocol_off_the_papers_gets_the_papers_layout_alone(write, tmp_path, capsys):
    """--protocol dev_articles: those records in Table 4's columns (EM, F1), the paper's rows and the official
    records left out; a protocol no record has is one error line."""
    write("squad/v1", "qgoft", 1, {"exact_match": 0.50, "f1": 0.60}, protocol="dev_articles, first 500 questions")
    write("squad/v1", "qgoft", 2, {"exact_match": 0.40, "f1": 0.50}, protocol="dev_articles, first 500 questions")
    write("squad/v1", "lora_r2", 1, {"exact_match": 0.80, "f1": 0.88}, protocol="official")
    collection, protocol = on_protocol(collect(tmp_path / "results"), "dev_articles")
    assert protocol == "dev_articles, first 500 questions"
    squad = build_table(table_spec("squad"), collection, paper="none")
    assert list(squad.frame["source"]) == ["ours"] and list(squad.frame["method"]) == ["qgoft"]
    assert squad.frame.iloc[0]["em"] == pytest.approx(45.0) and squad.frame.iloc[0]["f1"] == pytest.approx(55.0)
    assert main(["squad", "--results", str(tmp_path / "results"), "--protocol", "dev_articles"]) == 0
    out = capsys.readouterr().out
    assert "| ours | qgoft |" in out and "paper" not in out.split("###")[1].split("\n\n")[1]
    assert main(["squad", "--results", str(tmp_path / "results"), "--protocol", "vtab_val"]) == 2
    assert "--protocol 'vtab_val' matches none: give one of dev_articles" in capsys.readouterr().err


def test_unknown_table_is_an_error():
    with pytest.raises(ValueError, match="unknown table"):
        table_spec("imagenet")


def test_runs_table_groups_by_method_and_config_key_with_loss_time_memory(write, tmp_path):
    def run(seed: int, accuracy: float, lr: float, loss: float, seconds: float, status="completed"):
        write("glue/rte", "goft", seed, {"accuracy": accuracy}, status=status, run_id=f"goft{seed}{lr}",
              epochs=[{"epoch": 1, "train_loss": 0.9}, {"epoch": 2, "train_loss": loss}],
              train_time_s=seconds, peak_memory_mb=100.0 * seed, config={"trainer": {"lr": lr}})

    run(1, 0.60, 1e-3, 0.50, 10.0)
    run(2, 0.64, 1e-3, 0.70, 30.0)
    run(1, 0.55, 1e-2, 0.69, 12.0)
    run(3, 0.99, 1e-3, 0.0, 1.0, status="failed")  # never counted

    table = build_runs_table(tmp_path / "results", by=("trainer.lr",))

    assert list(table.frame["trainer.lr"]) == [1e-3, 1e-2]
    low = table.frame.iloc[0]
    assert (low["method"], low["n"], low["params"]) == ("goft", "2", 82_872)
    assert low["score"] == pytest.approx(62.0) and low["train_loss"] == pytest.approx(0.60)  # the last epoch's
    assert low["train_time_s"] == pytest.approx(20.0) and low["peak_memory_mb"] == pytest.approx(150.0)
    assert table.std.iloc[0]["score"] == pytest.approx(math.sqrt(8.0))
    assert build_runs_table(tmp_path / "results").frame["n"].tolist() == ["3"]  # without the key the two rates fall into one group of three records
    write("instruct/alpaca", "lora_r8", 1, {"loss": 1.0347}, model="tiny_llama")  # a loss is no fraction: not in %
    frame = build_runs_table(tmp_path / "results").frame
    assert frame.loc[frame["task"] == "instruct/alpaca", "score"].tolist() == [pytest.approx(1.0347)]


def test_fu2023_marks_the_differences_the_seeds_separate(write, tmp_path):
    """Fu et al. print a std over 10 seeds: a diff cell is marked when Welch's t-test on the two means, stds and seed
    counts gives p < 0.05 (scipy's ttest_ind_from_stats, recomputed here), and left alone otherwise."""
    from scipy.stats import ttest_ind_from_stats

    cola = [0.50, 0.51, 0.52]  # SAM's CoLA in the paper: 60.89 ± 0.96 (n 10): far
    copa = [0.70, 0.78, 0.74]  # 74.30 ± 2.45: close
    for seed, (c, p) in enumerate(zip(cola, copa, strict=True), start=1):
        write("glue/cola", "sam", seed, {"matthews_test": c}, model="roberta_base")
        write("superglue/copa", "sam", seed, {"accuracy_test": p}, model="roberta_base")
    table = build_table(table_spec("fu2023"), collect(tmp_path / "results"), paper="matched")
    position = int(table.frame.index[table.frame["source"] == "diff"][0])
    expected = ttest_ind_from_stats(51.0, 1.0, 3, 60.89, 0.96, 10, equal_var=False).pvalue
    assert table.marks[(position, "cola")] == f"seeds separate it (Welch p = {expected:.3f}, n = 3 vs 10)"
    assert (position, "copa") not in table.marks


def test_the_runs_table_reports_what_each_protocol_reports():
    """Fu et al.'s protocol picks the epoch on *_val and reports *_test, also for a record that did not complete (so
    that it is counted in the same row) and one from before records named their protocol; others their headline."""
    fu = {"task": {"metric": "accuracy_val", "protocol": "fu2023"}}
    drawn = {"task": {"metric": "accuracy_val", "protocol": "fu2023_draw, split_seed 0"}}
    early = {"task": {"metric": "accuracy_macro_f1_mean_val"}, "status": "interrupted"}
    official = {"task": {"metric": "accuracy", "protocol": "official"}}
    assert [reported_metric(r) for r in (fu, drawn, early, official)] == [
        "accuracy_test", "accuracy_test", "accuracy_macro_f1_mean_test", "accuracy"]


def test_fu2023_table_2_reads_the_perturbed_training_sets_each_a_replicate(write, tmp_path, capsys):
    """Table 2 keeps the seed and varies the data (task.drop_seed): three perturbed sets are n = 3 with a std there,
    never one record that replaced the others; Table 1 reads only the unperturbed record, and names the others."""
    from qgoft_bench.report.cli import main

    for drop_seed, value in ((1, 0.60), (2, 0.70), (3, 0.80)):
        write("superglue/cb", "sam", 1, {"accuracy_macro_f1_mean_test": value}, protocol="fu2023",
              run_id=f"p{drop_seed}", created_at=f"2026-12-0{drop_seed}",
              config={"seed": 1, "task": {"protocol": "fu2023", "drop_fraction": 0.1, "drop_seed": drop_seed}})
    write("superglue/cb", "sam", 1, {"accuracy_macro_f1_mean_test": 0.50}, protocol="fu2023", run_id="main",
          config={"seed": 1, "task": {"protocol": "fu2023", "drop_fraction": 0.0, "drop_seed": 0}})
    collection = collect(tmp_path / "results")
    assert collection.repeated == []  # no record of one replicate is left out for another

    perturbed = build_table(table_spec("fu2023", fu_table=2), collection, paper="none")
    row = perturbed.frame[perturbed.frame["source"] == "ours"].iloc[0]
    assert (row["n"], row["cb"]) == ("3", pytest.approx(70.0))
    assert perturbed.std.loc[row.name, "cb"] == pytest.approx(10.0)
    main_table = build_table(table_spec("fu2023"), collection, paper="none")
    row = main_table.frame[main_table.frame["source"] == "ours"].iloc[0]
    assert (row["n"], row["cb"]) == ("1", pytest.approx(50.0))
    assert any("3 completed superglue/cb record(s) on protocol fu2023_perturb, not the paper's (qgoft-bench-tables "
               "fu2023 --fu-table 2 reads them)" in note
               for note in collection.left_out_notes({"superglue/cb"}))
    assert main(["fu2023", "--fu-table", "2", "--results", str(tmp_path / "results"), "--paper", "none"]) == 0
    assert "| ours | sam |" in capsys.readouterr().out


@pytest.mark.parametrize("drawn", [False, True])
def test_table_1_and_2_split_the_perturbed_sets_also_on_a_drawn_split(drawn, write, tmp_path, capsys):
    """Found by a new user: on a drawn 90/10 split (no data.fu2023_dir), --protocol fu2023_draw put the perturbed
    records in Table 1 as ordinary rows and Table 2 showed none; and Table 2 over unperturbed records said they were
    another task. Both layouts now read the same records as on the authors' files."""
    from qgoft_bench.report.cli import main

    protocol = "fu2023_draw, split_seed 0" if drawn else "fu2023"
    for drop_seed, value in ((1, 0.60), (2, 0.80)):
        write("superglue/cb", "sam", 1, {"accuracy_macro_f1_mean_test": value}, protocol=protocol,
              run_id=f"p{drop_seed}", config={"seed": 1, "task": {"drop_fraction": 0.1, "drop_seed": drop_seed}})
    write("superglue/cb", "sam", 1, {"accuracy_macro_f1_mean_test": 0.50}, protocol=protocol, run_id="main",
          config={"seed": 1, "task": {"drop_fraction": 0.0, "drop_seed": 0}})
    args = ["fu2023", "--results", str(tmp_path / "results"), "--paper", "none"]
    args += ["--protocol", "fu2023_draw"] if drawn else []
    assert main([*args, "--fu-table", "1"]) == 0
    captured = capsys.readouterr()
    row = next(line for line in captured.out.splitlines() if line.startswith("| ours | sam |"))
    assert "| 1 |" in row and "50.00" in row and "70.00" not in row  # the whole training split only
    assert "2 completed superglue/cb record(s) on protocol fu2023_perturb" in captured.err
    assert main([*args, "--fu-table", "2"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| ours | sam |"))
    assert "| 2 |" in row and "70.00 ± 14.14" in row  # the two perturbed sets, each a replicate

    write("superglue/cb", "bitfit", 1, {"accuracy_macro_f1_mean_test": 0.5}, protocol=protocol, run_id="b",
          config={"seed": 1, "task": {"drop_fraction": 0.0, "drop_seed": 0}})
    assert main([*args, "--fu-table", "2"]) == 0
    assert ("not in this table: 2 completed run(s) of superglue/cb on the whole training split, not a perturbed one "
            "(--fu-table 1 reads them)") in capsys.readouterr().out


def test_a_newer_record_on_fu2023s_protocol_leaves_the_official_one_of_its_seed_in_the_glue_table(write, tmp_path):
    """The same task, method and seed on both protocols are two experiments, not a newer and an older record of one:
    the GLUE table keeps the official record (the Fu record reports accuracy_test), the Fu table the other."""
    write("glue/rte", "full", 1, {"accuracy": 0.60}, created_at="2026-11-01")
    write("glue/rte", "full", 1, {"accuracy_test": 0.52, "accuracy_val": 0.50}, protocol="fu2023", run_id="fu",
          created_at="2026-12-01", config={"seed": 1, "task": {"protocol": "fu2023"}})
    collection = collect(tmp_path / "results")
    assert collection.repeated == []
    glue = build_table(table_spec("glue"), collection, paper="none")
    assert _row(glue, "ours", "full")["rte"] == pytest.approx(60.0)
    fu = build_table(table_spec("fu2023"), collection, paper="none")
    assert _row(fu, "ours", "full")["rte"] == pytest.approx(52.0)


def test_a_seed_taken_over_by_another_experiment_says_so(write, tmp_path):
    """Found by a new user: the default --results (all of results/) let a 20-update benchmark's newer record of seed
    1 replace the grid's in the GLUE table; the note now names the two experiments and the fix."""
    write("glue/rte", "qgoft", 1, {"accuracy": 0.56}, created_at="2026-11-01",
          config={"seed": 1, "results_dir": "results/cpu_minilm_glue"})
    write("glue/rte", "qgoft", 1, {"accuracy": 0.53}, run_id="memory", created_at="2026-11-02",
          config={"seed": 1, "results_dir": "/elsewhere/results/cpu_minilm_glue_memory"})
    (note,) = collect(tmp_path / "results").left_out_notes()
    assert "left out: glue/rte qgoft (minilm_l6): 1 older record(s)" in note
    assert "(cpu_minilm_glue for cpu_minilm_glue_memory): point --results at one experiment's folder" in note


def test_averages_over_different_tasks_get_a_footnote(write, tmp_path):
    """Found by a new user: with RTE run for three methods only, their avg (4 tasks) sat beside the others' (3) and
    ranked them; the table now says which rows average which tasks."""
    for label in ("sam", "goft"):
        write("superglue/cb", label, 1, {"accuracy_macro_f1_mean_test": 0.6}, protocol="fu2023")
    write("glue/rte", "sam", 1, {"accuracy_test": 0.5}, protocol="fu2023")
    table = build_table(table_spec("fu2023"), collect(tmp_path / "results"), paper="none")
    assert ("our rows' averages cover different tasks (rte, cb for sam; cb for goft): compare them only between rows "
            "over the same tasks") in table.footnotes
    write("glue/rte", "goft", 1, {"accuracy_test": 0.5}, protocol="fu2023")
    table = build_table(table_spec("fu2023"), collect(tmp_path / "results"), paper="none")
    assert not [note for note in table.footnotes if "cover different tasks" in note]
