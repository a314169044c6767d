"""Data parallel through torchrun (``qgoft_bench.train.distributed``): two CPU processes with gloo train one run,
rank 0 writes one record whose metrics are the whole evaluation set's, and the update is a one-process run's."""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import set_seed

from qgoft_bench.cli import preflight
from qgoft_bench.config import compose_config
from qgoft_bench.errors import ConfigError
from qgoft_bench.methods.state import load_adapter
from qgoft_bench.records import iter_record_files, read_record
from qgoft_bench.tasks import build_task
from qgoft_bench.train import distributed, run_experiment
from qgoft_bench.train.loop import evaluate
from qgoft_bench.train.run import batching, build
from tests.conftest import REPO, cli_env, make_glue_fixture

N_TRAIN, N_DEV = 64, 33  # 33: a rank's half of the dev set (16 or 17 examples) cannot give the whole set's accuracy
# batch 9 of 64 examples: the epoch's last batch holds 1, fewer than the ranks (one rank runs a stand-in); two
# micro-batches per update, 4 updates in the epoch; dropout off, so that two processes and one draw the same
COMMON = ["task=glue/rte", "model=tiny_bert", "method=lora", "trainer.batch_size=9", "trainer.grad_accum=2",
          "trainer.max_epochs=1", "trainer.lr=1e-2", "trainer.progress=false", "trainer.device=cpu",
          "+model.config.hidden_dropout_prob=0.0", "+model.config.attention_probs_dropout_prob=0.0",
          "save_adapter=true"]


# Loaded by every process torchrun starts (a sitecustomize on the path): an audit hook notes each file or folder a
# rank creates or opens for writing, in a file of its own, so that a test sees what each rank wrote.
WRITES_HOOK = """
import os, sys
_folder, _rank = os.environ.get("QGOFT_TEST_WRITES"), os.environ.get("RANK")
if _folder and _rank is not None:
    _log = os.open(os.path.join(_folder, f"rank{_rank}-{os.getpid()}.txt"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    def _note(event, args):
        writes = (event == "open" and isinstance(args[0], str) and (any(c in (args[1] or "") for c in "wax+")
                  or (args[2] or 0) & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))) or event == "os.mkdir"
        if writes:
            os.write(_log, (os.path.abspath(args[0]) + "\\n").encode())
    sys.addaudithook(_note)
"""


def written_by(folder: Path, rank: int) -> list[str]:
    """The paths rank ``rank`` created or opened for writing (``WRITES_HOOK``'s notes)."""
    return [line for notes in folder.glob(f"rank{rank}-*.txt") for line in notes.read_text().splitlines()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(cwd: Path, writes: Path, *overrides: str, nproc: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=NPROC -m qgoft_bench.cli OVERRIDES`` in ``cwd``, one thread per process, with
    this checkout's package first on the path; what each rank writes is noted in ``writes``."""
    (writes / "sitecustomize.py").write_text(WRITES_HOOK)
    env = cli_env()
    path = [str(writes), str(REPO), env.get("PYTHONPATH")]
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(filter(None, path)), QGOFT_TEST_WRITES=str(writes))
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
               f"--master_port={free_port()}", "-m", "qgoft_bench.cli", *overrides]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess, Path]:
    """One 2-process run: (its working folder, the GLUE folder, the torchrun result, the ranks' write notes)."""
    cwd, writes = tmp_path_factory.mktemp("ddp"), tmp_path_factory.mktemp("writes")
    glue = make_glue_fixture(cwd / "glue", n_train=N_TRAIN, n_dev=N_DEV)
    result = torchrun(cwd, writes, *COMMON, f"data.glue_dir={glue}", "results_dir=res")
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd, glue, result, writes


@pytest.mark.slow
def test_two_ranks_write_one_record_with_the_whole_eval_set(two_ranks):
    cwd, glue, result, writes = two_ranks
    records = list(iter_record_files(cwd / "res"))
    assert len(records) == 1
    record = read_record(records[0])
    assert record["status"] == "completed"
    assert record["distributed"] == {"world_size": 2, "backend": "gloo"}
    # rank 0 alone wrote: the record, the adapter, the lock; no attempt by another rank, no claim left
    assert sorted(p.name for p in records[0].parent.iterdir()) == sorted(
        [records[0].name, f".{records[0].stem}.lock", f"{records[0].stem}.adapter.safetensors"])
    # rank 1 wrote nothing in the working folder (no record, no Hydra folder, no log): one Hydra output folder
    assert any(path.startswith(str(cwd / "res")) for path in written_by(writes, 0))  # the notes work
    assert [path for path in written_by(writes, 1) if path.startswith(f"{cwd}{os.sep}")] == []  # below it
    assert sorted(p.name for p in cwd.iterdir()) == ["glue", "outputs", "res"]
    assert len(list((cwd / "outputs").glob("*/*/.hydra"))) == 1
    assert result.stdout.count("epoch 1 step 4") == 1  # rank 0 speaks for the run

    # the record's metrics are those of the trained weights on the whole dev set, evaluated in one process
    cfg = compose_config([*COMMON, f"data.glue_dir={glue}", "results_dir=res"])
    set_seed(cfg.seed)  # the frozen random weights of the tiny model, as the run drew them
    model, _, bundle = build(cfg)
    load_adapter(model, records[0].with_suffix(".adapter.safetensors"))
    task = build_task(cfg.task, cfg.data)
    task.read()
    task.encode(bundle.processor, batching(cfg, bundle))
    whole = evaluate(model, task, torch.device("cpu"), "fp32")
    last = record["metrics"]["last"]
    assert last["step"] == 4
    assert last["accuracy"] == pytest.approx(whole["accuracy"], abs=1e-12)
    assert last["accuracy"] * N_DEV == pytest.approx(round(last["accuracy"] * N_DEV), abs=1e-9)


@pytest.mark.slow
def test_two_ranks_train_as_one_process_with_the_global_batch(two_ranks, tmp_path):
    cwd, glue, _, _ = two_ranks
    one = run_experiment(compose_config([*COMMON, f"data.glue_dir={glue}", f"results_dir={tmp_path}"]))
    one_path = next(iter_record_files(tmp_path))
    two_path = next(iter_record_files(cwd / "res"))
    two = read_record(two_path)
    # the same run: the same id and record path, whatever the number of processes
    assert one_path.relative_to(tmp_path) == two_path.relative_to(cwd / "res")
    assert "distributed" not in one and "distributed" not in one["config"]
    assert two["batching"] == one["batching"]
    first, second = one["metrics"]["epochs"], two["metrics"]["epochs"]
    assert [e["step"] for e in first] == [e["step"] for e in second] == [4]
    assert second[0]["train_loss"] == pytest.approx(first[0]["train_loss"], rel=1e-5)  # the whole update's loss
    assert second[0]["eval"] == pytest.approx(first[0]["eval"], abs=1e-12)
    weights_one = load_file(one_path.with_suffix(".adapter.safetensors"))
    weights_two = load_file(two_path.with_suffix(".adapter.safetensors"))
    assert weights_one.keys() == weights_two.keys()
    for name, value in weights_one.items():
        torch.testing.assert_close(weights_two[name], value, rtol=1e-4, atol=1e-5, msg=name)
    # the weights did move (a run that trained nothing would pass the comparison trivially)
    set_seed(one["seed"])
    model, _, _ = build(compose_config([*COMMON, f"data.glue_dir={glue}"]))
    start = {n: p.detach() for n, p in model.named_parameters() if n in weights_one}
    moved = sum(not torch.equal(start[n], weights_one[n]) for n in start if "lora_B" in n)
    assert moved > 0


def test_shard_splits_each_batch_by_examples_across_ranks(monkeypatch):
    batch = {"inputs": {"input_ids": torch.arange(10).view(5, 2), "mode": "x"},
             "targets": {"labels": torch.arange(5)}}
    assert distributed.shard(batch) == (batch, True)  # one process: the batch itself
    monkeypatch.setenv("WORLD_SIZE", "2")
    parts = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        part, counts = distributed.shard(batch)
        assert counts and part["inputs"]["mode"] == "x"
        parts.append(part["targets"]["labels"])
    assert torch.equal(torch.cat(parts), batch["targets"]["labels"])  # disjoint, together the whole batch
    one = {"inputs": {"input_ids": torch.ones(1, 2)}, "targets": {"labels": torch.zeros(1)}}
    owners = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        part, counts = distributed.shard(one)
        assert len(part["targets"]["labels"]) == 1  # a stand-in where the rank has no example: it must still run
        owners.append(counts)
    assert owners == [False, True]


def test_torchrun_refuses_a_sweep_and_a_batch_smaller_than_the_ranks(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "0")
    glue = make_glue_fixture(tmp_path / "glue")
    common = ["task=glue/rte", "model=tiny_bert", f"data.glue_dir={glue}", f"results_dir={tmp_path}/res"]
    with pytest.raises(ConfigError, match="torchrun runs one job"):
        preflight(["-m", *common, "method=lora,full"])
    with pytest.raises(ConfigError, match="trainer.batch_size=2 is the global batch.*at least 4"):
        preflight([*common, "trainer.batch_size=2"])
    assert preflight([*common, "trainer.batch_size=4"]) == 1


def test_json_record_names_no_rank_without_torchrun(glue_fixture, tmp_path):
    """One process: no process group, no ``distributed`` entry, the record as before."""
    record = run_experiment(compose_config(["task=glue/rte", "model=tiny_bert", f"data.glue_dir={glue_fixture}",
                                            f"results_dir={tmp_path}", "trainer.max_steps=1", "trainer.batch_size=8",
                                            "trainer.progress=false"]))
    assert record["status"] == "completed" and "distributed" not in record
    assert not torch.distributed.is_initialized()
    assert json.loads(next(iter_record_files(tmp_path)).read_text())["run_id"] == record["run_id"]
    assert math.isfinite(record["metrics"]["last"]["accuracy"])


class _Task:
    """What ``training_step`` asks of a task: the loss of a batch and how many terms it averages."""

    def count(self, targets):
        return len(targets["labels"])

    def loss(self, outputs, targets):
        return torch.nn.functional.cross_entropy(outputs, targets["labels"])


class _Method:
    """A regularizer on the weights, which must count once per update whatever the number of ranks."""

    def __init__(self, model):
        self.model = model

    def regularizer(self):
        return 0.1 * self.model.weight.square().sum()


def _update_gradient(rank: int, world: int, port: int, out: str) -> None:
    """One update of two micro-batches (5 examples, then 1: fewer than the ranks) on a linear model whose weights
    and buffer (a method's mask) each rank draws differently, as a prepare that broke a tie otherwise would; the
    weight's gradient, the update's loss and the buffer go to ``out``.rank<r>.pt."""
    from qgoft_bench.train.loop import training_step

    if world > 1:
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(port))
        torch.set_num_threads(1)
    device = distributed.init(torch.device("cpu"))
    torch.manual_seed(rank)
    model = torch.nn.Linear(4, 3)
    model.register_buffer("mask", torch.full((3,), float(rank)))
    forward = distributed.wrap(model, device)  # rank 0's weights and buffers on every rank
    data = torch.Generator().manual_seed(1)
    window = [{"inputs": {"input": torch.randn(n, 4, generator=data)},
               "targets": {"labels": torch.randint(0, 3, (n,), generator=data)}} for n in (5, 1)]
    loss = training_step(forward, _Method(model), _Task(), window, device, "fp32")
    torch.save({"grad": model.weight.grad, "loss": loss, "mask": model.mask}, f"{out}.rank{rank}.pt")
    distributed.teardown()


@pytest.mark.slow
def test_two_ranks_compute_the_one_process_gradient(tmp_path):
    """The gradient DDP leaves on every rank, and the update's loss, are one process's (the loss weighting, the
    regularizer once, a rank without an example of the last micro-batch), from rank 0's weights and buffers."""
    _update_gradient(0, 1, 0, str(tmp_path / "one"))
    one = torch.load(tmp_path / "one.rank0.pt")
    torch.multiprocessing.spawn(_update_gradient, args=(2, free_port(), str(tmp_path / "two")), nprocs=2)
    for rank in (0, 1):
        two = torch.load(tmp_path / f"two.rank{rank}.pt")
        torch.testing.assert_close(two["grad"], one["grad"], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(two["loss"], one["loss"], rtol=1e-5, atol=1e-7)
        assert torch.equal(two["mask"], one["mask"])


@pytest.mark.slow
def test_a_data_aware_method_trains_as_in_one_process(tmp_path):
    """SAM's prepare (gradient scores over the training batches, top entries kept) runs on every rank before the
    wrap: the 2-rank run selects and trains the entries a one-process run does."""
    glue = make_glue_fixture(tmp_path / "glue", n_train=N_TRAIN, n_dev=N_DEV)
    overrides = [*[o for o in COMMON if not o.startswith("method=")], "method=sam", "method.scoring_batches=4",
                 f"data.glue_dir={glue}"]
    (tmp_path / "two").mkdir()
    (tmp_path / "writes").mkdir()
    result = torchrun(tmp_path / "two", tmp_path / "writes", *overrides, "results_dir=res")
    assert result.returncode == 0, result.stderr[-3000:]
    one = run_experiment(compose_config([*overrides, f"results_dir={tmp_path / 'one'}"]))
    one_path, two_path = next(iter_record_files(tmp_path / "one")), next(iter_record_files(tmp_path / "two/res"))
    two = read_record(two_path)
    assert two["sparsity"] == one["sparsity"] and two["sparsity"]["changed"] > 0
    assert two["metrics"]["epochs"][0]["train_loss"] == pytest.approx(one["metrics"]["epochs"][0]["train_loss"],
                                                                      rel=1e-5)
    weights_one = load_file(one_path.with_suffix(".adapter.safetensors"))
    weights_two = load_file(two_path.with_suffix(".adapter.safetensors"))
    assert weights_one.keys() == weights_two.keys()
    for name, value in weights_one.items():
        torch.testing.assert_close(weights_two[name], value, rtol=1e-4, atol=1e-5, msg=name)
