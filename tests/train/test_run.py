"""One run end to end in-process: records, skip/overwrite, failed records, method hooks, learning on a fixture."""

import json
import logging
import math

import pytest
import torch
from omegaconf import OmegaConf

from qgoft_bench.config import compose_config
from qgoft_bench.errors import ConfigError, DataError, DivergedError
from qgoft_bench.files import sha256_file
from qgoft_bench.methods import METHODS, Method
from qgoft_bench.methods.state import check_origin, read_provenance
from qgoft_bench.records import is_done
from qgoft_bench.train import run_experiment
from qgoft_bench.train.optim import build_schedule


def tiny_cfg(glue_dir, results, *extra, task="task=glue/rte"):
    return compose_config([task, "model=tiny_bert", f"data.glue_dir={glue_dir}", f"results_dir={results}",
                           "trainer.batch_size=8", "trainer.progress=false", *extra])


class ProbeMethod(Method):
    """Records the hook calls: ``prepare`` scores one batch's loss and freezes the classifier bias, as a sparse method
    that decides from data what trains; the trainer must build its optimizer after that."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.calls: list[str] = []
        self.prepare_loss = None

    def prepare(self, model, batches, loss_fn):
        self.calls.append("prepare")
        self.prepare_loss = loss_fn(next(iter(batches))).item()
        model.classifier.bias.requires_grad_(False)

    def counts(self, model, spec):
        self.calls.append("counts")
        return super().counts(model, spec)

    def regularizer(self):
        self.calls.append("regularizer")
        return torch.zeros(())

    def after_step(self, step, total_steps):
        self.calls.append("after_step")


def test_record_skip_and_overwrite(glue_fixture, tmp_path):
    cfg = tiny_cfg(glue_fixture, tmp_path, "method=lora", "trainer.max_steps=3")
    record = run_experiment(cfg)
    assert record["status"] == "completed" and record["error"] is None
    assert record["params"]["adapter_params"] == 2 * (4 * 8 * (32 + 32) + 2 * 8 * (32 + 64))  # LoRA r=8, 6 linears
    assert record["params"]["head_params"] == 32 * 2 + 2
    assert record["weight_dtypes"] == {"frozen": ["float32"], "trainable": ["float32"]}
    assert record["metrics"]["last"]["step"] == 3 and "accuracy" in record["metrics"]["best"]
    for key in ("versions", "git", "hardware", "config", "wall_time_s", "train_time_s", "peak_memory_mb"):
        assert record[key] is not None, key
    path = next(tmp_path.rglob("seed1-*.json"))
    assert path.parent.relative_to(tmp_path).as_posix() == "glue/rte/tiny_bert/lora_r8"

    again = run_experiment(cfg)  # done: skipped, the same record comes back
    assert again["created_at"] == record["created_at"]
    rerun = run_experiment(tiny_cfg(glue_fixture, tmp_path, "method=lora", "trainer.max_steps=3", "overwrite=true"))
    assert rerun["run_id"] == record["run_id"] and len(list(tmp_path.rglob("*.json"))) == 1


def test_failed_run_leaves_a_failed_record(tmp_path):
    (tmp_path / "empty_glue").mkdir()  # a folder without the task's files: found when the data are read
    cfg = tiny_cfg(tmp_path / "empty_glue", tmp_path / "results", "method=linear")
    with pytest.raises(DataError):
        run_experiment(cfg)
    path = next((tmp_path / "results").rglob("*.json"))
    assert not is_done(path)
    assert json.loads(path.read_text())["status"] == "failed" and "RTE/train.tsv is missing" in path.read_text()


def test_trainer_calls_method_hooks(glue_fixture, tmp_path, monkeypatch):
    probes = []

    def build_probe(cfg):
        probes.append(ProbeMethod(cfg))
        return probes[-1]

    monkeypatch.setitem(METHODS._entries, "probe", build_probe)
    cfg = tiny_cfg(glue_fixture, tmp_path, "method=linear", "method.name=probe", "trainer.max_steps=4",
                   "trainer.grad_accum=2")
    record = run_experiment(cfg)
    probe = probes[-1]  # the one that trained (validation builds one too, to check its config)
    assert probe.calls[:2] == ["prepare", "counts"]  # data-aware set-up first, counted once the trainable set is final
    assert probe.calls[2:].count("regularizer") == 8 and probe.calls[2:].count("after_step") == 4  # per micro-batch
    assert record["params"]["head_params"] == 32 * 2  # the bias prepare froze is not counted
    assert probe.prepare_loss == pytest.approx(math.log(2), abs=0.1)  # the untrained classifier's loss on a batch


def test_schedule_warmup_then_decay():
    param = torch.nn.Parameter(torch.zeros(1))
    cfg = compose_config(["trainer.warmup_steps=10", "trainer.schedule=cosine", "trainer.min_lr_ratio=0.1"]).trainer
    optimizer = torch.optim.SGD([param], lr=1.0)
    schedule = build_schedule(optimizer, 110, cfg)
    lrs = []
    for _ in range(110):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[0] < lrs[5] < lrs[9] < 1.0  # linear warm-up
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert min(lrs[10:]) >= 0.1 - 1e-9  # never below the floor


def test_a_warmup_as_long_as_the_run_is_a_warning(caplog):
    """A recipe's warm-up (the paper's 1000 updates) on a short run: the rate never reaches trainer.lr, said once."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    with caplog.at_level(logging.WARNING, logger="qgoft_bench.train.optim"):
        build_schedule(optimizer, 1000, compose_config(["trainer.warmup_steps=999"]).trainer)
        assert not caplog.records
        schedule = build_schedule(optimizer, 10, compose_config(["trainer.warmup_steps=1000"]).trainer)
    assert "trainer.warmup_steps=1000 is not below the run's 10 updates" in caplog.text
    for _ in range(9):
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(10 / 1001)  # the last update's rate: what it says


def test_full_fine_tuning_learns_the_fixture_rule(glue_fixture, tmp_path):
    """The fixture's label is a keyword in the text: a tiny BERT trained in full must beat chance clearly."""
    cfg = tiny_cfg(glue_fixture, tmp_path, "method=full", "trainer.max_epochs=12", "trainer.lr=3e-3",
                   "trainer.warmup_ratio=0.1")
    record = run_experiment(cfg)
    losses = [e["train_loss"] for e in record["metrics"]["epochs"]]
    assert losses[-1] < losses[0]
    assert record["metrics"]["best"]["accuracy"] >= 0.75


def test_ctrl_c_leaves_an_interrupted_record_that_reruns(glue_fixture, tmp_path, monkeypatch):
    class Interrupting(Method):
        def regularizer(self):
            raise KeyboardInterrupt

    monkeypatch.setitem(METHODS._entries, "interrupting", Interrupting)
    cfg = tiny_cfg(glue_fixture, tmp_path, "method=linear", "method.name=interrupting", "trainer.max_steps=2")
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg)
    path = next(tmp_path.rglob("*.json"))
    record = json.loads(path.read_text())
    assert (record["status"], record["error"]) == ("interrupted", "interrupted (Ctrl-C)") and not is_done(path)
    monkeypatch.setitem(METHODS._entries, "interrupting", Method)  # the same run again, not interrupted this time
    assert run_experiment(cfg)["status"] == "completed"
    assert json.loads(path.read_text())["status"] == "completed"


@pytest.mark.parametrize(("stop", "status"), [(KeyboardInterrupt, "interrupted"),
                                              (lambda: DivergedError("the training loss is nan"), "diverged")])
def test_a_run_that_stops_in_training_keeps_its_evaluations_in_the_record(stop, status, glue_fixture, tmp_path,
                                                                         monkeypatch):
    """Before, an interrupted or diverged record held no metrics at all (a diverged run's checkpoint is deleted, so
    how far it got was lost): it holds the evaluations made before the stop."""
    calls = []

    class StopsAtTheFourthUpdate(Method):
        def regularizer(self):
            calls.append(1)
            if len(calls) == 4:
                raise stop()

    monkeypatch.setitem(METHODS._entries, "stopping", StopsAtTheFourthUpdate)
    cfg = tiny_cfg(glue_fixture, tmp_path, "method=linear", "method.name=stopping", "trainer.max_steps=6",
                   "trainer.eval_every_steps=1")
    with pytest.raises((KeyboardInterrupt, DivergedError)):
        run_experiment(cfg)
    record = json.loads(next(tmp_path.rglob("seed*.json")).read_text())
    assert record["status"] == status
    assert [e["step"] for e in record["metrics"]["epochs"]] == [1, 2, 3]
    assert "accuracy" in record["metrics"]["epochs"][0]["eval"]


def test_peak_memory_restarts_for_each_run():
    """In a sweep every run shares one process: each must report its own peak, not the largest so far."""
    import mmap

    from qgoft_bench.train import provenance

    cpu = torch.device("cpu")
    # 256 MiB mapped and touched page by page, then unmapped: the OS gets it back whatever the allocators hold (a
    # torch tensor's memory may come from, and return to, a heap that keeps it resident)
    big = mmap.mmap(-1, 256 * 2**20)
    for offset in range(0, len(big), mmap.PAGESIZE):
        big[offset] = 1
    during = provenance.peak_memory_mb(cpu)
    big.close()
    provenance.reset_peak_memory(cpu)
    assert provenance.peak_memory_mb(cpu) < during - 200


def test_the_record_tells_a_dirty_tree_and_which_edit(tmp_path):
    """git.dirty and git.diff_sha256: None when clean; the same edit gives the same hash, another edit another."""
    import subprocess

    from qgoft_bench.train.provenance import git_revision

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                       capture_output=True)

    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("commit", "-qm", "one")
    clean = git_revision(tmp_path)
    assert len(clean["revision"]) == 40 and clean["dirty"] is False and clean["diff_sha256"] is None
    (tmp_path / "a.py").write_text("x = 2\n")
    first = git_revision(tmp_path)
    assert first["dirty"] is True and len(first["diff_sha256"]) == 64
    assert git_revision(tmp_path)["diff_sha256"] == first["diff_sha256"]
    (tmp_path / "a.py").write_text("x = 3\n")
    assert git_revision(tmp_path)["diff_sha256"] != first["diff_sha256"]
    assert git_revision(tmp_path / "nowhere") == {"revision": None, "dirty": None, "diff_sha256": None}


def test_tensorboard_logs_what_the_record_holds_beside_it(glue_fixture, tmp_path):
    """tracker=tensorboard: event files in <record stem>.tensorboard/, every evaluation's metrics at its update."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    record = run_experiment(tiny_cfg(glue_fixture, tmp_path, "method=lora", "trainer.max_steps=20",
                                     "trainer.eval_every_steps=10", "tracker=tensorboard"))
    path = next(tmp_path.rglob("seed1-*.json"))
    events = EventAccumulator(str(path.with_suffix(".tensorboard"))).Reload()
    logged = {(e.step, round(e.value, 6)) for e in events.Scalars("eval/accuracy")}
    assert logged == {(epoch["step"], round(epoch["eval"]["accuracy"], 6)) for epoch in record["metrics"]["epochs"]}
    assert [e.step for e in events.Scalars("train/loss")] == [10, 20]


@pytest.mark.parametrize("method", ["qgoft", "random_mask"])
def test_a_saved_adapter_scored_with_eval_only_gives_the_trained_runs_metrics(method, glue_fixture, tmp_path):
    """adapter=FILE eval_only=true scores a trained adapter without training again (the second MMLU scoring of a
    tuned model): its evaluation equals the training run's best one exactly, the one the record reports (the file
    holds the best evaluation's weights, not the last update's). random_mask fills a mask its set-up draws, so the
    set-up must be redone before the values are loaded; the file's hash and path are in the record, and a changed
    file is another run, not a skip."""
    results = tmp_path / "results"
    # a rate so high that the best of the four evaluations is not the last
    common = [f"method={method}", "trainer.lr=3", "trainer.max_steps=8", "trainer.eval_every_steps=2",
              "+model.config.hidden_dropout_prob=0.0",
              "task=glue/stsb"]  # Pearson and Spearman: continuous, so any change to the model shows
    trained = run_experiment(tiny_cfg(glue_fixture, results, *common, "save_adapter=true"))
    best, last = trained["metrics"]["best"], trained["metrics"]["last"]
    assert best["step"] != last["step"] and best["pearson"] > last["pearson"]  # else no test
    assert trained["saved_adapter"]["step"] == best["step"]
    adapter = next(results.rglob("*.adapter.safetensors"))
    scored = run_experiment(tiny_cfg(glue_fixture, results, *common, "eval_only=true", f"adapter={adapter}",
                                     "save_adapter=true"))  # an evaluation trains nothing: no second file
    assert list(results.rglob("*.adapter.safetensors")) == [adapter] and "saved_adapter" not in scored
    base = run_experiment(tiny_cfg(glue_fixture, results, *common, "eval_only=true"))
    assert scored["metrics"]["best"] == {**best, "epoch": 0, "step": 0}
    assert base["metrics"]["best"] != scored["metrics"]["best"]  # the adapter did something to load
    assert scored["adapter"]["path"] == str(adapter) and len(scored["adapter"]["sha256"]) == 64

    from safetensors.torch import load_file, save_file

    tensors = load_file(str(adapter))
    save_file({k: v + 1 for k, v in tensors.items()}, str(adapter))
    again = run_experiment(tiny_cfg(glue_fixture, results, *common, "eval_only=true", f"adapter={adapter}"))
    assert again["adapter"]["sha256"] != scored["adapter"]["sha256"]  # run again, not skipped as done
    assert again["run_id"] != scored["run_id"]  # the file's contents are in the run id


def test_bad_adapter_settings_are_one_line(glue_fixture, tmp_path):
    """Found by a new user: a file of another method, seed or sparse mask loaded and was scored (completed, wrong);
    a damaged file gave a traceback or a NaN score; a folder was "no such file". Each is one line before any job."""
    results = tmp_path / "results"
    with pytest.raises(ConfigError, match="adapter=.* add eval_only=true"):
        run_experiment(tiny_cfg(glue_fixture, results, f"adapter={tmp_path}"))
    with pytest.raises(ConfigError, match="adapter=.*nope.safetensors: no such file"):
        run_experiment(tiny_cfg(glue_fixture, results, "eval_only=true", f"adapter={tmp_path / 'nope.safetensors'}"))
    with pytest.raises(ConfigError, match="is a folder"):
        run_experiment(tiny_cfg(glue_fixture, results, "eval_only=true", f"adapter={tmp_path}"))
    trained = run_experiment(tiny_cfg(glue_fixture, results, "method=random_mask", "trainer.max_steps=1",
                                      "save_adapter=true"))
    (masked,) = results.rglob("*.adapter.safetensors")
    assert trained["saved_adapter"]["sha256"] == sha256_file(masked)
    for other, what in (("method=sam", "method"), ("seed=2", "seed"), ("task=glue/mrpc", "task")):
        with pytest.raises(ConfigError, match=f"was trained by another {what} .*method=random seed=1"):
            run_experiment(tiny_cfg(glue_fixture, results, "method=random_mask", other, "eval_only=true",
                                    f"adapter={masked}"))
    with pytest.raises(ConfigError, match=r"was trained by another model \(dtype\) .*method=random seed=1"):
        run_experiment(tiny_cfg(glue_fixture, results, "method=random_mask", "model.dtype=bfloat16",
                                "trainer.precision=bf16", "eval_only=true", f"adapter={masked}"))
    assert len(list(results.rglob("seed*.json"))) == 1  # refused before anything was built or recorded
    origin = read_provenance(masked)  # a file written before model.dtype existed still scores under dtype null
    del origin["model"]["dtype"]
    check_origin(origin, OmegaConf.to_container(tiny_cfg(glue_fixture, results, "method=random_mask"), resolve=True),
                 masked)

    data = bytearray(masked.read_bytes())
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(bytes(data[:-4] + bytes(4)))  # the last tensor's last bytes
    with pytest.raises(ConfigError, match="is damaged: its tensors do not match the checksum"):
        run_experiment(tiny_cfg(glue_fixture, results, "method=random_mask", "eval_only=true", f"adapter={damaged}"))
    damaged.write_bytes(bytes(data[:1000]))
    with pytest.raises(ConfigError, match="cannot be read .*damaged"):
        run_experiment(tiny_cfg(glue_fixture, results, "method=random_mask", "eval_only=true", f"adapter={damaged}"))


def test_an_adapter_counts_by_its_contents_not_its_path(glue_fixture, tmp_path, monkeypatch, caplog):
    """The same file reached by another path is the same run (skipped); a file without provenance (written before
    files carried it) is scored with a warning."""
    from safetensors.torch import load_file, save_file

    results = tmp_path / "results"
    run_experiment(tiny_cfg(glue_fixture, results, "method=lora", "trainer.max_steps=1", "save_adapter=true"))
    (adapter,) = results.rglob("*.adapter.safetensors")
    scored = run_experiment(tiny_cfg(glue_fixture, results, "method=lora", "eval_only=true", f"adapter={adapter}"))
    monkeypatch.chdir(adapter.parent)
    again = run_experiment(tiny_cfg(glue_fixture, results, "method=lora", "eval_only=true",
                                    f"adapter=./{adapter.name}"))
    assert again["run_id"] == scored["run_id"] and again["created_at"] == scored["created_at"]  # skipped: the same
    assert scored["adapter"]["path"] == str(adapter.resolve())
    plain = tmp_path / "plain.safetensors"
    save_file(load_file(str(adapter)), str(plain))
    unchecked = run_experiment(tiny_cfg(glue_fixture, results, "method=lora", "eval_only=true", f"adapter={plain}"))
    assert unchecked["metrics"]["best"] == scored["metrics"]["best"] and unchecked["adapter"]["run_id"] is None
    assert "names no run" in caplog.text


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("method", ["lora", "goft", "qgoft"])
def test_on_the_gpu_a_run_follows_the_cpu_run_and_trains_under_bf16(glue_fixture, tmp_path, method):
    """The same run (no dropout, so no device RNG) on the CPU and on CUDA in float32 takes the same training losses;
    under bf16 autocast (trainer.precision auto on CUDA) it completes near them. The Givens methods take the CPU
    kernel here and the compiled Triton kernel there."""
    runs = {}
    for device, precision in (("cpu", "fp32"), ("cuda", "fp32"), ("cuda", "auto")):
        runs[device, precision] = run_experiment(tiny_cfg(
            glue_fixture, tmp_path / f"{device}-{precision}", f"method={method}", f"trainer.device={device}",
            f"trainer.precision={precision}", "trainer.max_steps=6", "trainer.eval_every_steps=2", "trainer.lr=1e-2",
            "+model.config.hidden_dropout_prob=0", "+model.config.attention_probs_dropout_prob=0"))
    cpu, gpu, bf16 = runs.values()
    assert (gpu["hardware"]["device"], bf16["hardware"]["device"]) == ("cuda", "cuda") and gpu["hardware"]["gpu"]

    def losses(record: dict) -> list[float]:
        return [epoch["train_loss"] for epoch in record["metrics"]["epochs"]]

    assert losses(gpu) == pytest.approx(losses(cpu), rel=1e-4)
    assert bf16["status"] == "completed" and losses(bf16) == pytest.approx(losses(cpu), rel=5e-2)


@pytest.mark.slow  # torch.compile (inductor) builds C++ for the graph: about a minute on the 2-core machine
def test_a_compiled_run_trains_as_the_eager_one(glue_fixture, tmp_path):
    """``trainer.compile=true`` through the whole loop (qGOFT: the rotation is a custom op dynamo traces): the same
    training losses and evaluations as the eager run (dropout off), to float32 tolerance."""
    # no dropout: compiled code draws its masks from another generator than eager code
    common = ("method=qgoft", "trainer.max_steps=4", "trainer.lr=1e-2", "+model.config.hidden_dropout_prob=0.0",
              "+model.config.attention_probs_dropout_prob=0.0")
    from torch._dynamo.utils import counters

    eager = run_experiment(tiny_cfg(glue_fixture, tmp_path / "eager", *common))
    counters.clear()
    compiled = run_experiment(tiny_cfg(glue_fixture, tmp_path / "compiled", *common, "trainer.compile=true"))
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo did compile the model's forward
    assert eager["status"] == compiled["status"] == "completed"
    for e, c in zip(eager["metrics"]["epochs"], compiled["metrics"]["epochs"], strict=True):
        assert c["train_loss"] == pytest.approx(e["train_loss"], rel=1e-4)
        assert c["eval"] == pytest.approx(e["eval"], rel=1e-4, abs=1e-6)
