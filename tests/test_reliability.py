"""Nothing lost, nothing silently wrong: the guarantees the README lists, each held here.

Records are never replaced by a worse one; a diverged run is recorded as such; the results folder is checked before
anything is built; SIGTERM and Ctrl-C leave an interrupted record and one line; a record that cannot be written is
printed; every job of a sweep is validated before the first starts; the data read is part of a run's identity; and
runs killed at random moments (SIGINT, SIGTERM, SIGKILL) never cost a completed record.
"""

import errno
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from qgoft_bench.cli import preflight
from qgoft_bench.config import compose_config
from qgoft_bench.errors import ConfigError, DivergedError, RecordWriteError, Terminated
from qgoft_bench.methods import METHODS, Method
from qgoft_bench.records import (
    ATTEMPTS,
    PROBE_PREFIX,
    PROBE_STALE_S,
    RANK,
    read_record,
    record_path_for,
    scan,
)
from qgoft_bench.train import run as run_module
from qgoft_bench.train import run_experiment, signals
from tests.conftest import cli_env, make_glue_fixture

BIN = Path(sys.executable).parent


def cfg(glue, results, *extra):
    return compose_config(["task=glue/rte", "model=tiny_bert", f"data.glue_dir={glue}", f"results_dir={results}",
                           "trainer.batch_size=8", "trainer.progress=false", "trainer.max_steps=2", *extra])


def main_record(results: Path) -> dict:
    records, skipped = scan(results)
    assert len(records) == 1 and not skipped
    return records[0]


# 1. A completed record is never destroyed.

class Interrupting(Method):
    def regularizer(self):
        raise KeyboardInterrupt


class Failing(Method):
    def regularizer(self):
        raise RuntimeError("boom")


@pytest.mark.parametrize("method,error", [(Interrupting, KeyboardInterrupt), (Failing, RuntimeError)])
def test_overwrite_that_fails_keeps_the_completed_record(glue_fixture, tmp_path, monkeypatch, method, error):
    first = run_experiment(cfg(glue_fixture, tmp_path, "method=linear"))
    monkeypatch.setitem(METHODS._entries, "linear", method)
    with pytest.raises(error):
        run_experiment(cfg(glue_fixture, tmp_path, "method=linear", "overwrite=true"))
    kept = main_record(tmp_path)
    assert kept["status"] == "completed" and kept["created_at"] == first["created_at"]
    attempts = list(tmp_path.rglob("attempts/*.json"))
    assert len(attempts) == 1 and read_record(attempts[0])["status"] in ("interrupted", "failed")


class Preempted(Method):
    def regularizer(self):
        raise SystemExit(-1)  # what submitit's USR2 handler does once it has requeued the job


def test_a_preempted_submitit_job_is_interrupted_and_its_requeue_trains_it(glue_fixture, tmp_path, monkeypatch):
    """SLURM's signal makes submitit requeue the job and exit: the record says interrupted (not final), the claim
    is released, and the requeued job trains the run."""
    linear = METHODS._entries["linear"]
    monkeypatch.setitem(METHODS._entries, "linear", Preempted)
    with pytest.raises(SystemExit):
        run_experiment(cfg(glue_fixture, tmp_path, "method=linear"))
    record = main_record(tmp_path)
    assert (record["status"], record["error"]) == ("interrupted", "interrupted (exit -1: preempted or out of time)")
    assert not list(tmp_path.rglob(".*.claim"))
    monkeypatch.setitem(METHODS._entries, "linear", linear)  # the job again, as SLURM requeued it
    assert run_experiment(cfg(glue_fixture, tmp_path, "method=linear"))["status"] == "completed"
    assert main_record(tmp_path)["status"] == "completed"


# 2. A wrong run is recorded as what it is.

def test_a_huge_learning_rate_is_a_diverged_record(glue_fixture, tmp_path):
    with pytest.raises(DivergedError, match="training loss is (nan|inf)"):
        run_experiment(cfg(glue_fixture, tmp_path, "method=full", "trainer.lr=1e6", "trainer.max_steps=20",
                           "trainer.clip_grad=null"))
    record = main_record(tmp_path)
    assert record["status"] == "diverged" and "lower trainer.lr" in record["error"]
    text = next(tmp_path.rglob("seed1-*.json")).read_text()
    assert "NaN" not in text and "Infinity" not in text  # strict JSON
    again = run_experiment(cfg(glue_fixture, tmp_path, "method=full", "trainer.lr=1e6", "trainer.max_steps=20",
                               "trainer.clip_grad=null"))
    assert again["created_at"] == record["created_at"]  # an outcome of the config: not run again


# 3. Work is not lost after the fact.

def test_an_unwritable_results_folder_stops_before_anything_is_built(glue_fixture, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=r"results_dir=.*not_a_folder is not writable"):
        run_experiment(cfg(glue_fixture, blocker, "method=linear"))


def test_the_next_run_removes_the_temp_files_a_killed_write_left(glue_fixture, tmp_path):
    """A SIGKILL between a temp file's creation and its rename leaves a hidden ``.tmp`` (a checkpoint's can be GBs):
    the run's next attempt, holding its claim, removes its own; another run's temp files stay."""
    config = cfg(glue_fixture, tmp_path, "method=linear")
    folder = record_path_for(OmegaConf.to_container(config, resolve=True)).parent
    stem = record_path_for(OmegaConf.to_container(config, resolve=True)).stem
    folder.mkdir(parents=True)
    (folder / ATTEMPTS).mkdir()
    ours = [folder / f".{stem}.json.a1b2.tmp", folder / f".{stem}.checkpoint.pt.c3d4.tmp",
            folder / f"..{stem}.claim.e5f6.tmp", folder / ATTEMPTS / f".{stem}.20261202T000000Z.failed.json.g7.tmp"]
    theirs = folder / f".{stem}0.json.h8.tmp"  # another run's (a stem this one's is a prefix of)
    old_probe, new_probe = folder / f"{PROBE_PREFIX}i9.tmp", folder / f"{PROBE_PREFIX}j0.tmp"  # check_writable's
    for file in [*ours, theirs, old_probe, new_probe]:
        file.write_text("half a write")
    an_hour_ago = time.time() - PROBE_STALE_S - 1
    os.utime(old_probe, (an_hour_ago, an_hour_ago))
    assert run_experiment(config)["status"] == "completed"
    assert not any(file.exists() for file in [*ours, old_probe])
    assert theirs.exists() and new_probe.exists()  # a probe this young may be another worker's, in its check now


def test_a_file_where_the_record_folder_should_be_stops_before_training(glue_fixture, tmp_path):
    (tmp_path / "res" / "glue").mkdir(parents=True)
    (tmp_path / "res" / "glue" / "rte").write_text("a file, not a folder")
    with pytest.raises(ConfigError, match=r"the record folder .*glue/rte/tiny_bert/linear under results_dir=.* is not "
                                          r"writable \(Not a directory\)"):
        run_experiment(cfg(glue_fixture, tmp_path / "res", "method=linear"))


def test_a_tracker_that_is_not_installed_is_found_first(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"tracker=wandb needs wandb: pip install 'qgoft-bench\[wandb\]'"):
        preflight(["results_dir=/tmp/qgoft-preflight", "tracker=wandb"])


def test_signals_wait_while_a_record_is_written():
    """A second Ctrl-C while the record is being stored is held until the write is done, then delivered."""
    import os

    delivered = []
    with pytest.raises(KeyboardInterrupt), signals.deferred_signals():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        delivered.append("write finished")  # still here: the signal waited
    assert delivered == ["write finished"]


def test_a_second_sigterm_while_the_run_is_recorded_keeps_the_interrupted_record(glue_fixture, tmp_path,
                                                                                  monkeypatch):
    """A cluster that sends SIGTERM twice: the second lands while the first's record is being put together (here,
    while the git revision is read); it must wait until the record is stored, not cut the write off."""
    from qgoft_bench.errors import Terminated, terminate
    from qgoft_bench.train import loop

    def first(*args, **kwargs):
        raise Terminated()

    real = run_module.provenance.git_revision

    def second() -> dict:
        os.kill(os.getpid(), signal.SIGTERM)
        return real()

    monkeypatch.setattr(loop, "training_step", first)
    monkeypatch.setattr(run_module.provenance, "git_revision", second)
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        with pytest.raises(Terminated):
            run_experiment(cfg(glue_fixture, tmp_path, "method=linear"))
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert main_record(tmp_path)["status"] == "interrupted"


def test_a_record_that_cannot_be_written_goes_to_stderr(glue_fixture, tmp_path, monkeypatch, capsys):
    def full_disk(path, record):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_module, "store_record", full_disk)
    with pytest.raises(RecordWriteError, match="could not be written .*No space left on device"):
        run_experiment(cfg(glue_fixture, tmp_path, "method=linear"))
    err = capsys.readouterr().err
    assert not [line for line in err.splitlines() if line.startswith("error:")]  # the CLI prints the one line
    printed = json.loads(err[err.index("{"):])
    assert printed["status"] == "completed" and printed["metrics"]["last"]["step"] == 2


# 4. Bad configuration is found before the first job, one line.

@pytest.mark.parametrize("args,needle", [
    (["trainer.lr=abc"], "trainer.lr=abc: Value 'abc' of type 'str' could not be converted to Float"),
    (["trainer.lr=-1"], "trainer.lr=-1.0 must be a finite number >= 0"),
    (["trainer.batch_size=-1"], "trainer.batch_size=-1 must be at least 1"),
    (["trainer.grad_accum=0"], "trainer.grad_accum=0 must be at least 1"),
    (["trainer.eval_every=0"], "trainer.eval_every=0 must be at least 1"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 must be at least 1"),
    (["seed=abc"], "seed='abc' must be an integer from 0 to 2**32 - 1"),
    (["method=lora", "method.r=0"], "method.r=0 must be an integer >= 1"),
    # found by a new user: a method knob of the wrong type was a TypeError traceback, or taken (true as a ratio of 1)
    (["method=sam", "method.ratio=abc"], "method.ratio='abc' must be a number"),
    (["method=sam", "method.ratio=true"], "method.ratio=true must be a number"),
    (["method=sam", "method.ratio=null"], "method.ratio=null must be a number"),
    (["method=sam", "method.scoring_batches=2.5"], "method.scoring_batches=2.5 must be an integer"),
    (["method=childpruning", "method.fisher_batches=x"], "method.fisher_batches='x' must be an integer or null"),
    (["method=magpruning", "method.burn_in_steps=0"], "method.burn_in_steps=0 must be >= 1"),
    (["method=magpruning", "method.burn_in_lr=0"], "method.burn_in_lr=0 must be > 0"),
    (["method=houlsby_adapter", "method.placement=[1]"], "method.placement=[1] must be a list, each a string"),
    (["trainer.device=cuda"], "no CUDA device is available"),
    (["task=vtab/cifar"], "task vtab/cifar: model minilm_l6 is a text model and has no image_cls head"),
    (["trainer.schedule=bogus"], "trainer.schedule='bogus' is not one of linear, cosine, constant"),
    (["trainer.precision=fp8"], "trainer.precision='fp8' is not one of auto, bf16, fp32"),
    (["model=tiny_bert", "model.path=/somewhere"], "model.path=/somewhere is ignored with model.init=random"),
    (["+trainer.lrr=1e-3"], "Key 'lrr' not in 'TrainerConfig'"),
    # found by a new user: Hydra's advice for a misspelt key is to add it with +, and then nothing read it
    (["task.doc_strid=10"], "the config has no key task.doc_strid: check its spelling"),
    (["+task.doc_strid=10"], ("+task.doc_strid=10: + adds keys only under model.config., trainer., method., "
                             "sparse_budget., hydra")),
    # found by a new user: a sweep over sam and random_mask had no way to cap SAM's scoring, and the errors went round
    (["-m", "method=sam,random_mask", "method.scoring_batches=2"],
     "in a sweep over methods some of which lack it, cap it for those that read it with +sparse_budget.scoring_batches"),
    (["+sparse_budget.scoring_batchs=2"], ("sparse_budget.scoring_batchs is read by no method: the keys are "
                                          "scoring_batches, fisher_batches, burn_in_steps")),
    (["task=superglue/cb", "task.protocol=fu2023", "task.drop_seed=-1"], "task.drop_seed=-1 must be a whole number"),
    (["+dryrun=true"], "set a key the config has without it (dryrun=...), and check its spelling"),
    (["model=tiny_vit", "model.dtype=bfloat16"], "model.dtype: check its spelling (a model's keys depend on its kind"),
    (["+model.dtype=bfloat16"], "(model.dtype=...), and check its spelling (a model's keys depend on its kind"),
    (["trainer.lr=inf"], "trainer.lr=inf must be a finite number >= 0"),
    (["task=instruct/alpaca", "model=minilm_l6"], "model minilm_l6 (bert) is an encoder, not a causal LM"),
    (["experiment=cpu/minilm_glue", "method=ia3"], "cannot resolve the config"),
    (["-m", "trainer.lr=1e-3,abc"], "trainer.lr=abc"),
    (["-m", "seed=1,abc"], "seed='abc' must be an integer from 0 to 2**32 - 1"),
    (["seed=-3"], "seed=-3 must be an integer from 0 to 2**32 - 1"),
    (["seed=4294967296"], "seed=4294967296 must be an integer from 0 to 2**32 - 1"),
    (["-m", "seed=1,-1"], "seed=-1 must be an integer from 0 to 2**32 - 1"),
    (["results_dir=null"], "results_dir=None must name a folder"),
    (["results_dir="], "results_dir='' must name a folder"),
    (["task=superglue/copa", "model=tiny_llama"], "model tiny_llama (llama) has no multiple_choice head"),
    (["data.glue_dir=/nonexistent/glue"], "data.glue_dir=/nonexistent/glue is not a folder"),
    (["task=vtab/digits", "model=tiny_vit"], "task vtab/digits reads a local folder: set data.vtab_dir=DIR"),
    # found by a new user: these were refused only when their job came, after the sweep's earlier jobs had run
    (["model.dtype=bfloat16", "trainer.precision=bf16", "method=bitfit"],
     "method bitfit needs model.dtype=float32 (now bfloat16): it trains the biases of frozen layers"),
    (["model.dtype=bfloat16", "trainer.precision=bf16", "method=magpruning"],
     "method magpruning needs model.dtype=float32 (now bfloat16): its burn-in fine-tunes the whole encoder"),
    (["task.train_samples=-5"], "task.train_samples=-5 must be an integer >= 1, or null for the whole training split"),
    (["task.train_samples=0"], "task.train_samples=0 must be an integer >= 1"),
    (["task.train_samples=abc"], "task.train_samples='abc' must be an integer >= 1"),
    (["task.headline_metric=acc"], "task.headline_metric='acc' is not one of the task's metrics: accuracy"),
    (["task.metrics=[acc]"], "task.metrics: unknown ['acc']"),
    # found by a new user: PEFT took these and trained (a string as true, a negative scale) or failed in the model
    (["method=hra", "method.apply_GS=maybe"], "method.apply_GS='maybe' must be true or false"),
    (["method=delora", "method.delora_lambda=-1"], "method.delora_lambda=-1 must be a number > 0"),
    (["method=lora_r2", "method.lora_alpha=-3"], "method.lora_alpha=-3 must be a number > 0"),
    (["method=psoft", "method.psoft_alpha=-1"], "method.psoft_alpha=-1 must be a number > 0"),
    (["method=delora", "method.module_dropout=1.5"], "method.module_dropout=1.5 must be a probability in [0, 1)"),
    (["method=osf", "method.effective_rank=-5"], "method.effective_rank=-5 must be an integer >= 1"),
    (["method=boft", "method.boft_n_butterfly_factor=0"], "method.boft_n_butterfly_factor=0 must be an integer >= 1"),
    # found by a new user: tracebacks (null ranks, a string rate), PEFT's wording, a knob taken and ignored
    (["method=hra", "method.r=null"], "method.r=None must be an integer >= 1"),
    (["method=lora", "method.r=null"], "method.r=None must be an integer >= 1"),
    (["method=oft_b8", "method.block_size=null"], "method.block_size=None must be an integer >= 1"),
    (["method=road", "method.group_size=null"], "method.group_size=None must be an integer >= 1"),
    (["method=frod", "method.regularization_alpha=abc"], "method.regularization_alpha='abc' must be a number"),
    (["method=frod", "method.regularization_alpha=-1"], "method.regularization_alpha=-1 must be a number > 0"),
    (["method=frod", "method.sparse_rate=true"], "method.sparse_rate=True must be a number"),
    (["method=frod", "method.sparse_rate=1.5"], "method.sparse_rate=1.5 must be a number in [0, 1]"),
    (["method=road", "method.decay_to=foo"], "method.decay_to='foo'; choose one of zero, init, none"),
    (["method=hra", "+method.x=1"], "unknown key(s) for method 'hra': x (not fields of peft.HRAConfig)"),
    (["method=oft", "+method.block_sise=4"], "unknown key(s) for method 'oft': block_sise"),
    (["method=osf_k2", "method.effective_rank=3"], "method.trainable_rank=2 and method.effective_rank=3 both fix"),
])
def test_bad_configuration_is_one_line_before_any_job(args, needle, monkeypatch):
    if "cuda" in " ".join(args):
        pytest.importorskip("torch").cuda.is_available() and pytest.skip("a GPU is here")
    monkeypatch.delenv("VTAB_DIR", raising=False)
    results = [] if any(a.startswith("results_dir=") for a in args) else ["results_dir=/tmp/qgoft-preflight"]
    with pytest.raises(ConfigError) as err:
        preflight([*results, *args])
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_sparse_budget_caps_the_sparse_methods_of_a_sweep_over_methods():
    """+sparse_budget.KEY=N is the one setting a sweep over SAM and methods without its knob can take (a new user
    found no way): SAM reads it, the sweep passes the pre-flight, and the recipe's own value is the default."""
    assert compose_config(["method=sam", "+sparse_budget.scoring_batches=2"]).method.scoring_batches == 2
    assert compose_config(["method=magpruning", "+sparse_budget.burn_in_steps=7"]).method.burn_in_steps == 7
    assert compose_config(["method=sam"]).method.scoring_batches == 600  # the paper's N
    assert preflight(["-m", "results_dir=/tmp/qgoft-preflight", "model=tiny_bert", "method=sam,random_mask",
                      "+sparse_budget.scoring_batches=2"]) == 2


def test_a_sweep_with_one_bad_value_starts_no_job(tmp_path):
    """Before: job 0 ran and wrote its record, job 1 ended in a traceback. Now nothing starts: exit 2, one line."""
    glue = make_glue_fixture(tmp_path / "glue")
    result = subprocess.run([str(BIN / "qgoft-bench"), "-m", "task=glue/rte", "model=tiny_bert", f"data.glue_dir={glue}",
                             "results_dir=res", "trainer.max_steps=2", "trainer.lr=1e-3,abc"], cwd=tmp_path,
                            env=cli_env(), capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.strip()][-1].startswith("error: bad override")
    assert not (tmp_path / "res").exists()


# 7. The identity of a run.

def test_workers_do_not_change_a_run_but_the_data_does(glue_fixture, tmp_path):
    first = run_experiment(cfg(glue_fixture, tmp_path, "method=linear"))
    same = run_experiment(cfg(glue_fixture, tmp_path, "method=linear", "trainer.num_workers=2"))
    assert same["created_at"] == first["created_at"] and same["run_id"] == first["run_id"]  # skipped
    train = glue_fixture / "RTE" / "train.tsv"
    train.write_text(train.read_text() + "99\tnew words\tmore\tentailment\n")
    changed = run_experiment(cfg(glue_fixture, tmp_path, "method=linear"))
    assert changed["data"]["fingerprint"] != first["data"]["fingerprint"]
    assert main_record(tmp_path)["data"]["fingerprint"] == changed["data"]["fingerprint"]


# 3 and 8. Signals: one line, an honest record; and random kills never cost a completed record.

def start(tmp_path: Path, *args: str) -> subprocess.Popen:
    log = open(tmp_path / "stderr.log", "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([str(BIN / "qgoft-bench"), *args], cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL,
                            stderr=log, start_new_session=True)


def wait_for(path: Path, needle: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while needle not in path.read_text():
        assert time.monotonic() < deadline, path.read_text()[-2000:]
        time.sleep(0.2)


@pytest.mark.parametrize("sig,name,code", [(signal.SIGTERM, "SIGTERM", 143), (signal.SIGINT, "Ctrl-C", 130)])
def test_a_signal_during_training_leaves_an_interrupted_record_and_one_line(tmp_path, sig, name, code):
    glue = make_glue_fixture(tmp_path / "glue")
    process = start(tmp_path, "task=glue/rte", "model=tiny_bert", f"data.glue_dir={glue}", "results_dir=res",
                    "trainer.max_steps=100000", "trainer.progress=true")
    wait_for(tmp_path / "stderr.log", "it/s]")  # the progress bar moves: training
    process.send_signal(sig)
    assert process.wait(timeout=60) == code  # 128 + the signal's number
    err = (tmp_path / "stderr.log").read_text()
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"interrupted ({name})")
    record = main_record(tmp_path / "res")
    assert (record["status"], record["error"]) == ("interrupted", f"interrupted ({name})")


def test_ctrl_c_while_starting_is_one_line(tmp_path):
    glue = make_glue_fixture(tmp_path / "glue")
    process = start(tmp_path, "task=glue/rte", "model=tiny_bert", f"data.glue_dir={glue}", "results_dir=res")
    time.sleep(4)  # importing torch, transformers and PEFT for the pre-flight checks
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130
    err = (tmp_path / "stderr.log").read_text()
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted (Ctrl-C)")


def test_an_interrupt_during_the_pre_flight_checks_claims_no_record(monkeypatch, capsys):
    """SIGTERM or Ctrl-C while every job is being checked: nothing ran, so the line says so (it once said that a
    run in progress had its record say so)."""
    from qgoft_bench import cli

    def interrupted(args):
        raise Terminated()

    monkeypatch.setattr(cli, "preflight", interrupted)
    monkeypatch.setattr(sys, "argv", ["qgoft-bench", "task=glue/rte", "model=tiny_bert"])
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit) as exit_:
            cli.main()
    finally:  # main() takes SIGTERM and, on the way out, ignores both: give pytest its own back
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert exit_.value.code == 143
    assert capsys.readouterr().err.strip() == "interrupted (SIGTERM): while starting, before any run"


@pytest.mark.parametrize("entry", ["main", "tables_main"])
def test_a_finished_command_ignores_signals_while_python_shuts_down(entry, monkeypatch):
    """Found by a new-user trial: a Ctrl-C after a run completed, while the interpreter shut down, turned exit code 0
    into -2 (the record was intact). Once the command has returned, the console script ignores both signals."""
    from qgoft_bench import cli, console

    monkeypatch.setattr(cli, entry, lambda: None)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        getattr(console, entry)()
        assert {signal.getsignal(sig) for sig in handlers} == {signal.SIG_IGN}
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def handles_sigterm(pid: int) -> bool:
    """Whether the process has a SIGTERM handler (Linux: bit 15 of SigCgt), which the console script installs
    before it imports anything heavy."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught >> (signal.SIGTERM - 1) & 1)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads a process's signal handlers from /proc")
def test_ctrl_c_while_importing_is_one_line(tmp_path):
    """Found under load in a full test run: a Ctrl-C that lands while the command still imports torch, transformers
    and Hydra (a second or more) ended in a traceback from whichever import it hit. The signal is sent the moment the
    console script has taken SIGTERM, that is inside those imports, whatever the machine's load."""
    process = start(tmp_path, "task=glue/rte", "model=tiny_bert", "dry_run=true")
    deadline = time.monotonic() + 30
    while not handles_sigterm(process.pid):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.001)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130
    err = (tmp_path / "stderr.log").read_text()
    assert err.strip().splitlines() == ["interrupted (Ctrl-C): while starting, before any run"], err[-2000:]


def test_two_sweeps_over_one_folder_train_each_job_once(tmp_path):
    """Workers sharing a results folder claim runs: run side by side, two copies of one sweep train every job once
    between them (each completed record written by exactly one of them) and both exit cleanly."""
    glue = make_glue_fixture(tmp_path / "glue")
    sweep = ["-m", "task=glue/rte", "model=tiny_bert", f"data.glue_dir={glue}", "results_dir=res",
             "trainer.max_steps=20", "trainer.progress=false", "method=linear,qgoft", "seed=1,2"]
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    logs = [tmp_path / name / "stderr.log" for name in ("a", "b")]
    processes = [subprocess.Popen([str(BIN / "qgoft-bench"), *sweep, f"results_dir={tmp_path / 'res'}"],
                                  cwd=log.parent, env=cli_env(), stdout=subprocess.DEVNULL, stderr=open(log, "w"))  # noqa: SIM115
                 for log in logs]
    assert [p.wait(timeout=600) for p in processes] == [0, 0], [log.read_text()[-2000:] for log in logs]
    written = [line for log in logs for line in log.read_text().splitlines() if "completed: " in line]
    records, _ = scan(tmp_path / "res")
    assert len(records) == 4 and all(r["status"] == "completed" for r in records)
    assert len(written) == 4, written  # trained once each: no record written twice
    assert not list((tmp_path / "res").rglob(".*.claim"))  # every claim released


def test_random_kills_never_cost_a_completed_record(tmp_path):
    """Sweeps over one results folder killed at random moments with SIGINT, SIGTERM or SIGKILL: after every kill
    each record is readable, strict JSON and no completed record is gone or replaced; a last, undisturbed run of
    the sweep completes the rest."""
    glue = make_glue_fixture(tmp_path / "glue")
    sweep = ["-m", "task=glue/rte", "model=tiny_bert", f"data.glue_dir={glue}", "results_dir=res",
             "trainer.max_steps=3", "trainer.progress=false", "method=linear,qgoft", "seed=1,2"]
    rng = random.Random(0)
    completed: dict[str, str] = {}  # record path -> created_at of its completed record
    for _ in range(3):
        process = start(tmp_path, *sweep)
        time.sleep(rng.uniform(4, 25))  # start-up takes ~8 s: some kills land before, some during the runs
        process.send_signal(rng.choice([signal.SIGINT, signal.SIGTERM, signal.SIGKILL]))
        process.wait(timeout=60)
        records, skipped = scan(tmp_path / "res") if (tmp_path / "res").exists() else ([], [])
        assert not skipped, skipped
        for record in records:
            assert record["status"] in RANK
            if record["_path"] in completed:  # once completed, always that same completed record
                assert (record["status"], record["created_at"]) == ("completed", completed[record["_path"]])
            elif record["status"] == "completed":
                completed[record["_path"]] = record["created_at"]
        for path in (tmp_path / "res").rglob("*.json") if (tmp_path / "res").exists() else []:
            assert "NaN" not in path.read_text()
    final = subprocess.run([str(BIN / "qgoft-bench"), *sweep], cwd=tmp_path, env=cli_env(), capture_output=True,
                           text=True, timeout=600, check=False)
    assert final.returncode == 0, final.stderr[-2000:]
    records, _ = scan(tmp_path / "res")
    assert len(records) == 4 and all(r["status"] == "completed" for r in records)
    for record in records:
        if record["_path"] in completed:
            assert record["created_at"] == completed[record["_path"]]  # done before: skipped, not run again
    assert all(math.isfinite(r["metrics"]["last"]["accuracy"]) for r in records)
