"""The console scripts as a user meets them: one-line errors, the dry-run line, a run and a sweep."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import cli_env

BIN = Path(sys.executable).parent


def qgoft(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "qgoft-bench"), *args], cwd=cwd, env=cli_env(), capture_output=True, text=True,
                          timeout=300, check=False)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in errors[0]


@pytest.mark.parametrize("args,needles", [
    (["method=nope"], ["unknown method 'nope'", "valid options:", "lora", "full"]),
    (["task=glue/nope"], ["unknown task 'glue/nope'", "glue/rte"]),
    (["-m", "method=lora,nope"], ["unknown method 'nope'"]),
    (["trainer.nope=1"], ["bad override", "trainer.nope"]),
    (["trainer.lr=[oops"], ["cannot parse"]),
])
def test_bad_input_is_one_line(tmp_path, args, needles):
    assert_one_line_error(qgoft(*args, cwd=tmp_path), *needles)


def test_missing_data_folder_is_one_line(tmp_path):
    result = qgoft("task=glue/rte", "model=tiny_bert", f"data.glue_dir={tmp_path}/nope", cwd=tmp_path)
    assert_one_line_error(result, "is not a folder", "GLUE_DIR")
    assert result.returncode == 2  # found before any job


@pytest.mark.parametrize("model,needles", [
    (["model=deberta_v3_base"], ["microsoft/deberta-v3-base is not in the local cache", "model.path=DIR"]),
    (["model=minilm_l6", "model.path=nowhere"], ["model.path=nowhere is not a Hugging Face model folder"]),
    (["model=minilm_l6", "model.sha256=" + "0" * 64], ["does not match the expected sha256", "reinstall"]),
    (["model=minilm_l6", "model.path=config_only"], ["config_only holds a config.json but no weights"]),
    (["model=deberta_v3_base", "model.init=random"], ["the tokenizer of deberta_v3_base", "model.tokenizer=DIR"]),
])
def test_weights_that_cannot_be_had_stop_a_sweep_before_its_first_job(tmp_path, model, needles):
    """No network in tests (HF_HUB_OFFLINE=1): an uncached hub id is found by the pre-flight, as is a bad path, a
    folder without weights, a pinned file that fails its sha256 and a tokenizer random weights still need, instead
    of a failed record for every job of the sweep."""
    from tests.conftest import make_glue_fixture

    glue = make_glue_fixture(tmp_path / "glue")
    (tmp_path / "config_only").mkdir()
    (tmp_path / "config_only" / "config.json").write_text('{"model_type": "bert"}')
    result = qgoft("-m", "task=glue/rte", *model, "method=linear,lora", f"data.glue_dir={glue}", "results_dir=res",
                   cwd=tmp_path)
    assert_one_line_error(result, *needles)
    assert result.returncode == 2
    assert not (tmp_path / "res").exists()


@pytest.mark.parametrize("model,method,needles", [
    ("tiny_deberta", "method=road", ["method.group_size=64 does not divide the output width 32"]),
    ("tiny_bert", "method=lora_qv", ["lora_qv adapts fused q,k,v linears", "use method=lora"]),
    ("tiny_llama", "method=bitfit", ["has no bias parameters"]),
])
def test_what_only_the_architecture_shows_stops_a_sweep_before_its_first_job(tmp_path, model, method, needles):
    """The pre-flight builds each model and method on the meta device: a method the architecture refuses is one line
    and exit 2 before any job, not a failed record for every seed (the sweep's first job, lora, never starts)."""
    from tests.conftest import make_glue_fixture

    glue = make_glue_fixture(tmp_path / "glue")
    result = qgoft("-m", "task=glue/rte", f"model={model}", f"method=lora,{method.split('=')[1]}", "seed=1,2",
                   f"data.glue_dir={glue}", "results_dir=res", cwd=tmp_path)
    assert_one_line_error(result, *needles)
    assert result.returncode == 2
    assert not (tmp_path / "res").exists()


def test_a_sweep_of_dry_runs_stops_before_its_first_count_when_a_method_cannot_build(tmp_path):
    """A dry-run sweep printed LoRA's counts, then failed RoAd's job with exit 1 and pointed at records a dry run
    never writes."""
    result = qgoft("-m", "task=glue/rte", "model=tiny_deberta", "method=lora,road", "dry_run=true", cwd=tmp_path)
    assert_one_line_error(result, "method.group_size=64 does not divide the output width 32", "(job: ")
    assert result.returncode == 2
    assert "adapter_params" not in result.stdout


@pytest.mark.parametrize("args,needles", [
    (["model=tiny_bert", "model.init=meta"], ["model.init=meta builds the architecture without weights",
                                              "add dry_run=true"]),
    (["model=tiny_bert", "model.init=meta", "method=frod", "dry_run=true"], ["decomposes the frozen weights",
                                                                            "model.init=random"]),
])
def test_a_model_without_weights_is_refused_where_weights_are_needed(tmp_path, args, needles):
    """A training run on the meta device was a traceback ('Cannot copy out of meta tensor') and a failed record."""
    from tests.conftest import make_glue_fixture

    glue = make_glue_fixture(tmp_path / "glue")
    result = qgoft("task=glue/rte", *args, f"data.glue_dir={glue}", "results_dir=res", cwd=tmp_path)
    assert_one_line_error(result, *needles)
    assert result.returncode == 2
    assert not (tmp_path / "res").exists()


def test_a_key_of_the_swept_methods_that_the_default_method_lacks_says_why_it_is_refused(tmp_path):
    """Hydra composes a sweep's shared config with the group's default (LoRA, which has no block_size): the message
    said 'no key method.block_size, check its spelling' while both swept methods have it."""
    result = qgoft("-m", "task=glue/rte", "model=tiny_bert", "method=lora,oft,boft", "method.block_size=4",
                   "dry_run=true", cwd=tmp_path)
    assert_one_line_error(result, "method.block_size=4 sets a key inside method, which this command sweeps",
                          "oft, boft have it", "method=oft method.block_size=4")
    assert result.returncode == 2
    typo = qgoft("-m", "task=glue/rte", "model=tiny_bert", "method=oft,boft", "method.blok_size=4", "dry_run=true",
                 cwd=tmp_path)
    assert_one_line_error(typo, "the config has no key method.blok_size: check its spelling")


def test_a_dry_run_on_the_meta_device_needs_neither_weights_nor_tokenizer(tmp_path):
    result = qgoft("dry_run=true", "model=deberta_v3_base", "model.init=meta", "method=goft", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["adapter_params"] == 82_872  # the GOFT paper's DeBERTaV3-base count


def test_a_vtab_dry_run_counts_without_the_vtab_folder(tmp_path):
    """A dry run reads no data: the paper's VTAB counts need no VTAB-1k folder (a new user was asked for one)."""
    result = qgoft("dry_run=true", "task=vtab/cifar", "model=vit_b16_in21k", "model.init=meta", "method=lora_qv",
                   cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["adapter_params"] == 294_912  # the VTAB LoRA r=8 row: q and v of 12 blocks
    training = qgoft("task=vtab/cifar", "model=tiny_vit", "method=lora", cwd=tmp_path)
    assert_one_line_error(training, "reads a local folder: set data.vtab_dir=DIR")  # a run still needs it


def test_dry_run_prints_one_json_line(tmp_path):
    result = qgoft("dry_run=true", "model=tiny_bert", "method=lora", "method.r=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()  # one line on stdout: a script reads it whole (logs go to stderr)
    counts = json.loads(line)
    assert counts["adapter_params"] == 2 * (4 * 2 * 64 + 2 * 2 * 96)  # r=2 on 6 linears of 2 layers (width 32/64)
    assert counts["trainable_params"] == counts["adapter_params"] + counts["head_params"]
    assert counts["total_params"] > counts["trainable_params"]
    assert not list(tmp_path.rglob("*.json"))  # a dry run writes no record
    assert not (tmp_path / "results").exists()  # nor a results folder (found by a new user)


def test_run_then_sweep_skips_what_is_done(tmp_path):
    from tests.conftest import make_glue_fixture

    glue = make_glue_fixture(tmp_path / "glue")
    common = ["task=glue/rte", "model=tiny_bert", f"data.glue_dir={glue}", "results_dir=res", "trainer.max_steps=2",
              "trainer.progress=false"]
    first = qgoft(*common, "method=linear", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    sweep = qgoft("-m", *common, "method=linear,full", cwd=tmp_path)
    assert sweep.returncode == 0, sweep.stderr
    assert "skip:" in sweep.stderr  # linear was done by the single run
    records = sorted(p.parent.name for p in (tmp_path / "res").rglob("*.json"))
    assert records == ["full", "linear"]


def test_sweep_goes_on_after_a_failed_run(tmp_path):
    (tmp_path / "none").mkdir()  # folders without the task's files: each run fails when it reads them
    (tmp_path / "gone").mkdir()
    result = qgoft("-m", "task=glue/rte", "model=tiny_bert", f"data.glue_dir={tmp_path}/none,{tmp_path}/gone",
                   "results_dir=res", cwd=tmp_path)
    assert result.returncode == 1
    assert "2 run(s) of the sweep did not complete (2 failed); their records say why" in result.stderr
    # data dirs do not change a run's identity, so both jobs write the same failed record
    statuses = [json.loads(p.read_text())["status"] for p in (tmp_path / "res").rglob("*.json")]
    assert statuses == ["failed"]


def test_status_shows_each_cell_of_a_sweep_and_the_command_that_finishes_it(glue_fixture, tmp_path, capsys):
    """One job of a 2 x 2 sweep done, one claimed by a live worker, two missing: the status says so per cell."""
    import os
    import socket

    from qgoft_bench.cli import grid_status, status_main
    from qgoft_bench.config import compose_config
    from qgoft_bench.records import claim_path
    from qgoft_bench.train import run_experiment

    sweep = ["task=glue/rte", "model=tiny_bert", f"data.glue_dir={glue_fixture}", f"results_dir={tmp_path / 'res'}",
             "trainer.max_steps=2", "trainer.progress=false", "method=linear,bitfit", "seed=1,2"]
    run_experiment(compose_config([o for o in sweep if "," not in o] + ["method=linear", "seed=2"]))
    rows = {(r["method"], r["seed"]): r for r in grid_status(sweep)}
    assert rows[("linear", 2)]["state"] == "completed"  # composed once per seed-free job: the same run id
    running = Path(rows[("bitfit", 1)]["path"])
    claim_path(running).parent.mkdir(parents=True, exist_ok=True)
    claim_path(running).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": "now"}))
    assert status_main(sweep) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert "| glue/rte | linear | 1 | 0 | 1 |" in out and "| glue/rte | bitfit | 0 | 1 | 1 |" in out
    assert "1 of 4 jobs done" in out and f"qgoft-bench -m {' '.join(sweep)}" in out
    assert f"records read from {(tmp_path / 'res').resolve()}" in out
    assert "warning" not in captured.err

    # a completed record of linear seed 1 under another config (another run id): counted apart, not as done
    done = Path(rows[("linear", 2)]["path"])
    (done.parent / "seed1-0123456789ab.json").write_bytes(done.read_bytes())
    (done.parent / "seed12-0123456789ab.json").write_bytes(done.read_bytes())  # seed 12 is not seed 1
    assert status_main(sweep) == 0
    out = capsys.readouterr().out
    assert "| task | method | completed | running | missing | other config |" in out
    assert "| glue/rte | linear | 1 | 0 | 0 | 1 |" in out and "| glue/rte | bitfit | 0 | 1 | 1 | 0 |" in out
    assert "1 of 4 jobs done" in out and "other config: a completed (or diverged) record of the same task" in out
    (done.parent / "seed1-0123456789ab.json").unlink()

    # a data folder that is not there: the same view, and a warning that the finishing command would stop on it
    moved = [o.replace(str(glue_fixture), str(tmp_path / "gone")) for o in sweep]
    assert status_main(moved) == 0
    captured = capsys.readouterr()
    assert "1 of 4 jobs done" in captured.out
    assert captured.err.count("warning: that command would stop before any job: data.glue_dir=") == 1


def test_status_refuses_what_its_command_would_refuse_and_says_when_there_is_nothing_to_read(tmp_path, capsys):
    """Found by a new user: a seed of x was a traceback and -1 a finishing command the run refuses; a results_dir
    that is a file, or not there, read as 'nothing done'; --results and a pasted -m were Hydra lexer errors; a
    recipe that sweeps nothing read as a grid of one job."""
    from qgoft_bench.cli import status_main

    base = ["experiment=cpu/minilm_family", "data.glue_dir=/nonexistent", f"results_dir={tmp_path}"]
    for seed in ("x", "1.5", "-1"):
        assert status_main([*base, f"seed=1,{seed}"]) == 2
        assert "must be an integer from 0 to 2**32 - 1" in capsys.readouterr().err
    (tmp_path / "a_file").write_text("")
    assert status_main([*base, f"results_dir={tmp_path / 'a_file'}"]) == 2
    assert "is a file, not a folder of records: set results_dir=DIR" in capsys.readouterr().err
    assert status_main([*base, f"results_dir={tmp_path / 'typo'}"]) == 0
    assert f"note: {tmp_path / 'typo'} does not exist: no job of this sweep has run there" in capsys.readouterr().err
    assert status_main([*base, "--results", str(tmp_path)]) == 2
    assert "not options: --results" in capsys.readouterr().err
    assert status_main(["-m", *base]) == 0  # pasted from the sweep's command
    assert "0 of 81 jobs done" in capsys.readouterr().out
    assert status_main(["experiment=cpu/minilm_glue", f"results_dir={tmp_path}"]) == 0
    assert "note: a sweep of one job: this recipe sweeps no axes of its own" in capsys.readouterr().err


def test_status_warns_of_a_method_the_models_shapes_refuse(glue_fixture, tmp_path, capsys, monkeypatch):
    """The finishing command status prints would stop in the pre-flight's meta build: status says so beforehand,
    building each model and method once however many learning rates and seeds the sweep has (as the sweep does)."""
    from qgoft_bench.cli import status_main
    from qgoft_bench.train import preflight

    built = []
    check_build = preflight.check_build
    monkeypatch.setattr(preflight, "check_build", lambda cfg: built.append(cfg.method.name) or check_build(cfg))
    sweep = ["task=glue/rte", "model=tiny_deberta", "method=lora,road", "trainer.lr=1e-3,2e-3", "seed=1,2",
             f"data.glue_dir={glue_fixture}", f"results_dir={tmp_path}"]
    assert status_main(sweep) == 0
    err = capsys.readouterr().err
    assert "warning: that command would stop before any job: method.group_size=64 does not divide" in err
    assert sorted(built) == ["lora", "road"]


def test_a_sweep_axis_is_set_by_its_key_not_through_hydra_sweeper_params(tmp_path, capsys):
    """``hydra.sweeper.params.method=a,b`` on the command line would not replace the recipe's axis (Hydra sweeps over
    that key as well): one line naming the form that works, before any job, for the run and for its status."""
    from qgoft_bench.cli import status_main

    args = ["-m", "experiment=cpu/minilm_family", "hydra.sweeper.params.method=hra,road", f"results_dir={tmp_path}"]
    assert_one_line_error(qgoft(*args, cwd=tmp_path), "give a sweep's axis as method=...", "method=hra,road")
    assert status_main(args[1:]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "error: hydra.sweeper.params.method=hra,road: give a sweep's axis" in captured.err
    # found by a new user: a misspelt key got Hydra's advice to add it with +, which the + check then refuses
    assert status_main(["experiment=cpu/minilm_fu2023", "data.fu2023_dirr=/x", f"results_dir={tmp_path}"]) == 2
    assert capsys.readouterr().err == ("error: the config has no key data.fu2023_dirr: check its spelling "
                                       "(`qgoft-bench --cfg job` shows every key)\n")


def test_cfg_job_shows_the_recipes_values_resolved(tmp_path):
    """experiment=paper/glue looks its values up per (task, method): --cfg job shows the looked-up values."""
    result = qgoft("experiment=paper/glue", "task=glue/rte", "method=qgoft", "--cfg", "job", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for line in ("  lr: 0.002", "  max_epochs: 30", "  reg_lambda: 0.05", "  classifier_dropout: 0.2",
                 "  warmup_steps: 200", "  max_seq_len: 320"):
        assert line in result.stdout.splitlines(), line
    assert "${" not in result.stdout
    broken = qgoft("experiment=paper/glue", "task=glue/wnli", "--cfg", "job", cwd=tmp_path)  # no row for WNLI
    assert broken.returncode == 0 and "${recipe:" in broken.stdout
    assert "warning: the config does not resolve, shown unresolved" in broken.stderr
    assert "no row for task glue/wnli" in broken.stderr
    # found by a new user: with -m, Hydra's ValueError traceback ("Only one of --run, --multirun, --cfg ...")
    swept = qgoft("-m", "experiment=fu2023/perturb", "--cfg", "job", cwd=tmp_path)
    assert swept.returncode == 2 and "Traceback" not in swept.stderr
    assert swept.stderr == "error: -m and --cfg do not go together (--cfg shows one job's config): drop -m and give " \
                           "one value per key\n"


def test_a_parallel_sweeps_outcome_is_read_from_its_records(glue_fixture, tmp_path):
    """Jobs run by joblib or submitit report nothing back to the CLI: it counts the sweep's records written since it
    started that did not complete, and jobs with no record; records of earlier commands are not counted."""
    from qgoft_bench.cli import grid_status, recorded_outcomes
    from qgoft_bench.records import store_record

    args = ["-m", "task=glue/rte", "model=tiny_bert", f"data.glue_dir={glue_fixture}",
            f"results_dir={tmp_path / 'res'}", "method=linear,bitfit", "seed=1,2", "hydra/launcher=joblib"]
    rows = grid_status(args[1:-1])
    for row, status, when in zip(rows, ("completed", "failed", "diverged"), ("2026-01-02", "2026-01-02", "2026-01-01"),
                                 strict=False):
        store_record(Path(row["path"]), {"status": status, "created_at": f"{when}T00:00:00+00:00"})
    assert recorded_outcomes(args, "2026-01-02T00:00:00+00:00") == {"failed": 1, "missing": 1}


def test_methods_lists_every_config_and_the_readme_holds_that_list(capsys):
    """``qgoft-bench-tables methods``: one row per method config, presets resolved through their defaults; the README's
    copy is that output row for row (a preset added or a knob changed without the README fails here)."""
    from qgoft_bench.cli import methods_main
    from qgoft_bench.config import group_options

    assert methods_main([]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 + len(group_options("method"))
    assert "| `delora_lambda3` | delora | delora_r8_lambda3 | DeloraConfig | r=8, delora_lambda=3," in "\n".join(printed)
    assert "| `qgoft` | qgoft | qgoft | ours | reg_lambda=0.001, decay_to=init |" in printed
    readme = (Path(__file__).parents[1] / "README.md").read_text().splitlines()
    start = readme.index(printed[0])
    assert readme[start:start + len(printed)] == printed
    assert methods_main(["--nope"]) == 2
    assert "error: qgoft-bench-tables methods takes no arguments (got --nope)" in capsys.readouterr().err


def test_a_job_returns_its_selection_score_for_an_optimising_sweeper(glue_fixture, tmp_path):
    """Hydra hands a job's return value to the sweeper (Optuna's minimises or maximises it): the score that picked the
    run's best evaluation, read from the record the job wrote."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from qgoft_bench.cli import _run
    from qgoft_bench.config import compose_config

    cfg = compose_config(["task=glue/rte", "model=tiny_bert", "method=linear", f"data.glue_dir={glue_fixture}",
                          f"results_dir={tmp_path / 'res'}", "trainer.max_steps=2", "trainer.progress=false"],
                         hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # as Hydra passes the job its config
    try:
        score = _run.__wrapped__(cfg)
    finally:
        HydraConfig.instance().cfg = None  # the singleton would outlive this test
    record = json.loads(next((tmp_path / "res").rglob("*.json")).read_text())
    assert isinstance(score, float) and score == record["metrics"]["best"]["accuracy"]


def test_the_selection_score_is_the_validation_headline_of_a_completed_run():
    """On Fu et al.'s protocol the epoch is picked on the held-out validation set: a sweeper must see that score, not
    the test score the protocol reports; no score for a run that did not complete or has no number."""
    from qgoft_bench.records import selection_score

    record = {"status": "completed", "task": {"metric": "accuracy_val"},
              "metrics": {"best": {"accuracy_val": 0.7, "accuracy_test": 0.6}}}
    assert selection_score(record) == 0.7
    assert selection_score({**record, "status": "diverged"}) is None
    assert selection_score({**record, "metrics": {"best": {"accuracy_val": True}}}) is None
    assert selection_score({**record, "metrics": {"best": {"accuracy_val": None}}}) is None


def test_status_warns_when_fu2023_runs_would_draw_their_own_split(tmp_path, capsys):
    """Found by a new user: without data.fu2023_dir the documented grid counted 0 of 300 done and offered a command
    that trains every run on a split drawn here; one warning line says why and what to set."""
    from qgoft_bench.cli import status_main

    grid = ["experiment=cpu/minilm_fu2023", "task=superglue/cb", "method=sam", "seed=1", f"results_dir={tmp_path}"]
    assert status_main(grid) == 0
    assert "warning: task.protocol=fu2023 without data.fu2023_dir: these runs draw their own 90/10 split" in (
        capsys.readouterr().err)
    (tmp_path / "fu" / "cb").mkdir(parents=True)
    assert status_main([*grid, f"data.fu2023_dir={tmp_path / 'fu'}"]) == 0
    assert "without data.fu2023_dir" not in capsys.readouterr().err
