"""Checkpoints and resume: a run stopped by SIGTERM (or a crash) and run again ends with the record and the weights
of a run that was never stopped, whatever the moment it was stopped at (inside an update's backward, inside the
held update itself, inside an evaluation), for a shuffled loader, a length-grouped one, dropout, and methods with
state of their own (AdaLoRA) or a data-aware set-up (SAM)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from qgoft_bench.config import compose_config
from qgoft_bench.errors import Terminated, terminate
from qgoft_bench.records import read_record, record_path_for
from qgoft_bench.train import loop, run_experiment
from tests.conftest import cli_env

BIN = Path(sys.executable).parent

WORDS = ["river", "stone", "light", "cloud", "green", "quick"]


@pytest.fixture(autouse=True)
def _sigterm_raises():
    """SIGTERM raises ``Terminated`` as under the command line (``cli.main`` installs the same handler)."""
    previous = signal.signal(signal.SIGTERM, terminate)
    yield
    signal.signal(signal.SIGTERM, previous)


def glue(glue_dir: Path, *overrides: str) -> list[str]:
    """tiny_bert with dropout on RTE: 64 examples, batches of 8, 2 per update: 4 updates per epoch, 3 epochs."""
    return ["task=glue/rte", "model=tiny_bert", f"data.glue_dir={glue_dir}", "trainer.batch_size=8",
            "trainer.grad_accum=2", "trainer.max_epochs=3", *overrides]


def instruct(tmp_path: Path, *overrides: str) -> list[str]:
    """tiny_llama with attention dropout on 30 Alpaca records (27 train, length-grouped batches of 4): 7 updates
    per epoch, 2 epochs, evaluated every 3 updates."""
    records = [{"instruction": f"Say {WORDS[i % 6]} {i} times.", "input": f"about {WORDS[(i + 1) % 6]}" * (i % 2),
                "output": " ".join([WORDS[(i + 2) % 6]] * (3 + i % 5))} for i in range(30)]
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return ["task=instruct/alpaca", "model=tiny_llama", "+model.config.attention_dropout=0.2",
            f"data.instruct_path={path}", "trainer.batch_size=4", "trainer.max_epochs=2", "trainer.max_seq_len=64",
            "trainer.eval_every_steps=3", *overrides]


def config(results: Path, overrides: list[str]):
    return compose_config([*overrides, f"results_dir={results}", "trainer.progress=false", "trainer.device=cpu",
                           "save_adapter=true", "trainer.checkpoint_every=3"])


def kill_at(monkeypatch, target: str, call: int) -> None:
    """Send this process SIGTERM at the ``call``-th call of ``loop.<target>``: ``training_step`` after its
    backward (gradients accumulated, no update yet), ``rng_states`` inside the update the loop holds signals for,
    ``evaluate`` as the evaluation starts."""
    real, calls = getattr(loop, target), []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if target == "evaluate" and len(calls) == call:
            os.kill(os.getpid(), signal.SIGTERM)
        out = real(*args, **kwargs)
        if target != "evaluate" and len(calls) == call:
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(loop, target, wrapped)


def outcome(record: dict) -> tuple[list, dict]:
    """What must not depend on a stop: every evaluation (train loss included) and the trained weights."""
    adapter = record_path_for(record["config"]).with_suffix(".adapter.safetensors")
    return record["metrics"]["epochs"], {k: v.tolist() for k, v in load_file(adapter).items()}


CASES = {  # name: (overrides, where SIGTERM lands, at which call, the update the checkpoint holds)
    "lora-in-backward": (("method=lora",), "training_step", 8, 7),
    # the first update of epoch 2: its batches drawn after epoch 1's evaluation drew a loader seed
    "lora-at-an-epoch-start": (("method=lora",), "training_step", 5, 4),
    # rng_states: call 1 before the first update, then one per update and per evaluation; call 7 is update 5's
    "lora-in-held-update": (("method=lora",), "rng_states", 7, 5),
    "lora-in-evaluation": (("method=lora",), "evaluate", 2, 8),
    # ranks reallocated at every update from the allocator's importance averages, which only the method holds
    "adalora": (("method=adalora", "method.init_r=4", "method.target_r=1", "method.tinit=0", "method.tfinal=1",
                 "method.deltaT=1", "method.beta1=0.5", "method.beta2=0.5"), "training_step", 7, 6),
    "sam": (("method=sam", "method.scoring_batches=2"), "training_step", 5, 4),
}


@pytest.mark.parametrize("case", list(CASES))
def test_resume_after_sigterm_equals_an_uninterrupted_run(case, glue_fixture, tmp_path, monkeypatch):
    overrides, target, call, held = CASES[case]
    overrides = glue(glue_fixture, *overrides)
    reference = run_experiment(config(tmp_path / "reference", overrides))
    cfg = config(tmp_path / "stopped", overrides)
    path = record_path_for(reference["config"]).relative_to(tmp_path / "reference")
    path = tmp_path / "stopped" / path

    with monkeypatch.context() as patch:
        kill_at(patch, target, call)
        with pytest.raises(Terminated):
            run_experiment(cfg)
    assert read_record(path)["status"] == "interrupted"
    assert path.with_suffix(".checkpoint.pt").exists()

    resumed = run_experiment(cfg)
    assert resumed["status"] == "completed"
    assert resumed["resumed_from"] == [held]
    assert outcome(resumed) == outcome(reference)
    assert not path.with_suffix(".checkpoint.pt").exists()  # the record is final: nothing left to resume


def test_resume_with_length_grouped_batches_and_step_evaluations(tmp_path, monkeypatch):
    """The instruction loader draws its batches from a generator of its own and, at each epoch's start, a seed
    from the global one: the resumed run must draw both as the first attempt did. Stopped in the second epoch's
    first update, before its batch was drawn a second time."""
    overrides = instruct(tmp_path, "method=qgoft")
    reference = run_experiment(config(tmp_path / "reference", overrides))
    cfg = config(tmp_path / "stopped", overrides)
    with monkeypatch.context() as patch:
        kill_at(patch, "training_step", 8)
        with pytest.raises(Terminated):
            run_experiment(cfg)
    resumed = run_experiment(cfg)
    assert resumed["resumed_from"] == [7]
    assert [e["step"] for e in resumed["metrics"]["epochs"]] == [3, 6, 9, 12, 14]
    assert outcome(resumed) == outcome(reference)


def test_a_crash_resumes_from_the_last_periodic_checkpoint(glue_fixture, tmp_path, monkeypatch):
    """No signal, an error: the record says failed and the checkpoint every 3 updates is what is left."""
    overrides = glue(glue_fixture, "method=lora")
    reference = run_experiment(config(tmp_path / "reference", overrides))
    cfg = config(tmp_path / "stopped", overrides)
    real, calls = loop.training_step, []

    def crash(*args, **kwargs):
        calls.append(1)
        if len(calls) == 11:
            raise RuntimeError("out of memory")
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(loop, "training_step", crash)
        with pytest.raises(RuntimeError):
            run_experiment(cfg)
    resumed = run_experiment(cfg)
    assert resumed["resumed_from"] == [9]
    assert outcome(resumed) == outcome(reference)


def test_a_resumed_record_names_the_code_of_every_attempt(glue_fixture, tmp_path, monkeypatch):
    """A run stopped at commit A and resumed at commit B was recorded as B's alone; now ``earlier_git`` keeps A."""
    from qgoft_bench.train import provenance

    cfg = config(tmp_path, glue(glue_fixture, "method=lora"))
    commit = {"revision": "a" * 40, "dirty": False, "diff_sha256": None}
    with monkeypatch.context() as patch:
        patch.setattr(provenance, "git_revision", lambda: commit)
        kill_at(patch, "training_step", 8)
        with pytest.raises(Terminated):
            run_experiment(cfg)
    resumed = run_experiment(cfg)
    assert resumed["status"] == "completed" and resumed["resumed_from"] == [7]
    assert resumed["earlier_git"] == [commit] and resumed["git"] != commit


def test_a_checkpoint_of_other_data_is_not_resumed(glue_fixture, tmp_path, monkeypatch, caplog):
    overrides = glue(glue_fixture, "method=lora")
    cfg = config(tmp_path / "runs", overrides)
    with monkeypatch.context() as patch:
        kill_at(patch, "training_step", 5)
        with pytest.raises(Terminated):
            run_experiment(cfg)
    train = glue_fixture / "RTE" / "train.tsv"
    lines = train.read_text().splitlines()
    train.write_text("\n".join([lines[0], *reversed(lines[1:])]) + "\n")  # the same examples in another order
    record = run_experiment(cfg)
    assert record["status"] == "completed" and "resumed_from" not in record
    assert "is of another config, data, format or overwrite setting" in caplog.text


def test_overwrite_starts_over_whatever_checkpoint_is_there(glue_fixture, tmp_path, monkeypatch):
    overrides = glue(glue_fixture, "method=lora")
    reference = run_experiment(config(tmp_path / "reference", overrides))
    with monkeypatch.context() as patch:
        kill_at(patch, "training_step", 5)
        with pytest.raises(Terminated):
            run_experiment(config(tmp_path / "runs", overrides))
    record = run_experiment(compose_config([*overrides, f"results_dir={tmp_path / 'runs'}", "trainer.progress=false",
                                            "trainer.device=cpu", "save_adapter=true", "trainer.checkpoint_every=3",
                                            "overwrite=true"]))
    assert record["status"] == "completed" and "resumed_from" not in record
    assert outcome(record) == outcome(reference)
    assert not list((tmp_path / "runs").rglob("*.checkpoint.pt"))


def test_an_interrupted_overwrite_is_resumed_by_the_same_overwrite_command(glue_fixture, tmp_path, monkeypatch):
    """Found by a new user: the stop said "the same command resumes from it", and the same overwrite=true command
    started over (a requeued overwrite job never finished). It resumes now; the completed record it replaces stays
    until the new one is complete."""
    overrides = glue(glue_fixture, "method=lora")
    reference = run_experiment(config(tmp_path / "reference", overrides))
    done = run_experiment(config(tmp_path / "runs", overrides))
    with monkeypatch.context() as patch:
        kill_at(patch, "training_step", 5)
        with pytest.raises(Terminated):
            run_experiment(config(tmp_path / "runs", [*overrides, "overwrite=true"]))
    assert read_record(record_path_for(done["config"])) == done
    again = run_experiment(config(tmp_path / "runs", [*overrides, "overwrite=true"]))
    assert again["status"] == "completed" and again["resumed_from"] == [4]  # the checkpoint at update 4 (of 12)
    assert outcome(again) == outcome(reference)
    assert read_record(record_path_for(done["config"])) == again  # the resumed attempt's record replaced the first


def test_an_interrupted_overwrite_leaves_no_checkpoint_behind(glue_fixture, tmp_path, monkeypatch):
    """Found by a new user: overwrite=true on a completed run, stopped, left a checkpoint beside the completed record
    that nothing could resume (a done run is skipped, overwrite starts over): it stayed for good. The next command
    that finds the run done removes it; the completed record is untouched."""
    overrides = glue(glue_fixture, "method=lora")
    done = run_experiment(config(tmp_path, overrides))
    with monkeypatch.context() as patch:
        kill_at(patch, "training_step", 5)
        with pytest.raises(Terminated):
            run_experiment(config(tmp_path, [*overrides, "overwrite=true"]))
    path = record_path_for(done["config"])
    assert path.with_suffix(".checkpoint.pt").exists() and read_record(path) == done
    assert run_experiment(config(tmp_path, overrides)) == done  # skipped as done
    assert not path.with_suffix(".checkpoint.pt").exists()


def cut_short(data: bytes) -> bytes:  # not by us: our writes are atomic
    return data[:1000]


def flip_a_byte(data: bytes) -> bytes:  # a bad disk, a stray write: still loads as tensors, wrong ones
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


@pytest.mark.parametrize("damage", [cut_short, flip_a_byte])
def test_a_damaged_checkpoint_is_not_resumed(damage, glue_fixture, tmp_path, monkeypatch, caplog):
    """The checksum after the archive refuses a file changed in place instead of resuming from wrong weights."""
    cfg = config(tmp_path / "runs", glue(glue_fixture, "method=lora"))
    with monkeypatch.context() as patch:
        kill_at(patch, "training_step", 5)
        with pytest.raises(Terminated):
            run_experiment(cfg)
    (checkpoint,) = (tmp_path / "runs").rglob("*.checkpoint.pt")
    checkpoint.write_bytes(damage(checkpoint.read_bytes()))
    record = run_experiment(cfg)
    assert record["status"] == "completed" and "resumed_from" not in record
    assert "damaged" in caplog.text


def test_a_checkpoint_that_cannot_be_written_is_a_warning(glue_fixture, tmp_path, monkeypatch, caplog):
    """A full disk at a periodic checkpoint: the run goes on to its completed record (which is small and written
    after), the failed write leaves no partial file behind."""
    import errno

    def full_disk(payload, f):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    cfg = compose_config([*glue(glue_fixture, "method=lora"), f"results_dir={tmp_path}", "trainer.progress=false",
                          "trainer.device=cpu", "trainer.checkpoint_every=2"])
    record = run_experiment(cfg)
    assert record["status"] == "completed"
    assert "could not be written" in caplog.text and "No space left on device" in caplog.text
    assert not [p for p in tmp_path.rglob("*") if "checkpoint" in p.name]


def test_records_and_checkpoints_are_readable_as_the_umask_says(glue_fixture, tmp_path, monkeypatch):
    """Files others on a shared cluster folder must read: mode 0666 less the umask, as open() makes them (the temp
    file behind an atomic write starts at 0600)."""
    old = os.umask(0o022)
    try:
        cfg = config(tmp_path / "runs", glue(glue_fixture, "method=lora"))
        with monkeypatch.context() as patch:
            kill_at(patch, "training_step", 5)
            with pytest.raises(Terminated):
                run_experiment(cfg)
    finally:
        os.umask(old)
    (checkpoint,) = (tmp_path / "runs").rglob("*.checkpoint.pt")
    (record,) = (tmp_path / "runs").rglob("seed*.json")
    assert oct(checkpoint.stat().st_mode & 0o777) == oct(record.stat().st_mode & 0o777) == "0o644"


def test_checkpoint_every_0_writes_none(glue_fixture, tmp_path, monkeypatch):
    cfg = compose_config([*glue(glue_fixture, "method=lora"), f"results_dir={tmp_path}", "trainer.progress=false",
                          "trainer.device=cpu", "trainer.checkpoint_every=0"])
    with monkeypatch.context() as patch:
        kill_at(patch, "training_step", 5)
        with pytest.raises(Terminated):
            run_experiment(cfg)
    assert not list(tmp_path.rglob("*.checkpoint.pt"))
    record = run_experiment(cfg)
    assert record["status"] == "completed" and "resumed_from" not in record


@pytest.mark.slow  # three runs of the command: about a minute on the 2-core machine
def test_the_command_killed_by_sigterm_resumes_where_it_stopped(glue_fixture, tmp_path):
    """The real command, as a cluster stops it: SIGTERM from outside once a periodic checkpoint exists; exit 143 and
    the checkpoint stays; the same command then ends with the record of a run that was never stopped."""
    args = [*glue(glue_fixture, "method=qgoft"), "trainer.max_epochs=8", "trainer.checkpoint_every=2",
            "save_adapter=true", "trainer.progress=false"]
    env = {**cli_env(), "OMP_NUM_THREADS": "1"}

    def command(results: Path) -> subprocess.Popen:
        return subprocess.Popen([str(BIN / "qgoft-bench"), *args, f"results_dir={results}"], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    assert command(tmp_path / "reference").wait(timeout=300) == 0
    process = command(tmp_path / "stopped")
    deadline = time.monotonic() + 300
    while not list((tmp_path / "stopped").rglob("*.checkpoint.pt")) and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 143, process.stderr.read()[-2000:]
    assert list((tmp_path / "stopped").rglob("*.checkpoint.pt"))
    resumed = command(tmp_path / "stopped")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()[-2000:]
    (reference,), (record,) = (list((tmp_path / d).rglob("seed*.json")) for d in ("reference", "stopped"))
    reference, record = read_record(reference), read_record(record)
    assert record["status"] == "completed" and record["resumed_from"][0] >= 2
    assert outcome(record) == outcome(reference)
    assert not list((tmp_path / "stopped").rglob("*.checkpoint.pt"))
