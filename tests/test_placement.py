"""Parallel launchers: every joblib worker holds a slot of its own for its life and takes its share of cores and a
GPU by it; a joblib sweep and a submitit job write the same records as the basic launcher, and skip what is done."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from qgoft_bench import placement
from qgoft_bench.config import compose_config
from qgoft_bench.errors import ConfigError
from qgoft_bench.records import scan
from qgoft_bench.train import run_experiment
from tests.conftest import cli_env, make_glue_fixture

BIN = Path(sys.executable).parent
HOLD_SLOT = "import sys, time; from pathlib import Path; from qgoft_bench.placement import claim_slot; " \
            "print(claim_slot(Path(sys.argv[1]), 2), flush=True); time.sleep(60)"


def joblib_hydra(sweep_dir: Path, n_jobs: int) -> OmegaConf:
    return OmegaConf.create({"launcher": {"_target_": placement.JOBLIB, "n_jobs": n_jobs},
                             "sweep": {"dir": str(sweep_dir)}})


def test_a_worker_holds_its_slot_for_life_and_a_dead_ones_is_free_again(tmp_path):
    other = subprocess.Popen([sys.executable, "-c", HOLD_SLOT, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "0"  # the other worker came first
        assert placement.claim_slot(tmp_path, 2) == 1
        with pytest.raises(RuntimeError, match="all 2 worker slots"):
            placement.claim_slot(tmp_path, 2, wait_s=0)  # both held: this process's slot 1 stays held too
    finally:
        other.kill()
        other.wait()
    assert placement.claim_slot(tmp_path, 2, wait_s=5) == 0  # the OS released the dead worker's lock


def test_a_joblib_job_takes_its_share_of_cores_and_its_slots_gpu(tmp_path, monkeypatch):
    for name in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # restored after the test
        monkeypatch.setenv(name, "7,5" if name == "CUDA_VISIBLE_DEVICES" else "1")
    monkeypatch.setattr(placement, "cores", lambda: 8)
    threads = torch.get_num_threads()
    try:
        first = placement.place_job(joblib_hydra(tmp_path, 2))
        assert first == placement.Placement(slot=0, threads=4, gpu="7")
        assert torch.get_num_threads() == 4 and os.environ["CUDA_VISIBLE_DEVICES"] == "7"
        assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "4"
        assert placement.place_job(joblib_hydra(tmp_path, 2)) == first  # the worker's next job: the same share
    finally:
        torch.set_num_threads(threads)


def test_more_concurrent_jobs_than_gpus_is_refused(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    launcher = joblib_hydra(Path("."), 3).launcher
    with pytest.raises(ConfigError, match="runs 3 jobs at once but 2 GPU"):
        placement.check_gpus(launcher, "auto")
    placement.check_gpus(launcher, "cpu")  # CPU jobs need no GPU
    placement.check_gpus(joblib_hydra(Path("."), 2).launcher, "cuda")


def test_a_slurm_job_takes_the_cores_slurm_gave_it(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    hydra = OmegaConf.create({"launcher": {"_target_": placement.SUBMITIT + "SlurmLauncher", "cpus_per_task": 8}})
    threads = torch.get_num_threads()
    try:
        assert placement.place_job(hydra) == placement.Placement(slot=None, threads=3, gpu=None)
    finally:
        torch.set_num_threads(threads)
    assert placement.place_job(OmegaConf.create({"launcher": {"_target_": "hydra.BasicLauncher"}})) is None


def sweep_args(glue: Path, results: Path) -> list[str]:
    return ["task=glue/rte", "model=tiny_bert", f"data.glue_dir={glue}", f"results_dir={results}",
            "trainer.max_steps=2", "trainer.progress=false"]


@pytest.mark.slow  # 112 s on the busy 2-core machine (process start-ups: the CLI's and two workers' imports)
def test_a_joblib_sweep_trains_what_is_missing_in_parallel_workers(tmp_path):
    """2 methods x 2 seeds under hydra/launcher=joblib with 2 workers, one job already done (as after an earlier
    launch): the three missing runs are trained, each with its worker's share of the cores, the done one skipped."""
    glue = make_glue_fixture(tmp_path / "glue")
    common = sweep_args(glue, tmp_path / "res")
    done = run_experiment(compose_config([*common, "method=linear", "seed=1"]))
    result = subprocess.run([str(BIN / "qgoft-bench"), "-m", *common, "method=linear,qgoft", "seed=1,2",
                             "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={tmp_path / 'mr'}"],
                            cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    records, skipped = scan(tmp_path / "res")
    assert len(records) == 4 and not skipped and all(r["status"] == "completed" for r in records)
    assert result.stderr.count("completed: ") == 3 and result.stderr.count("is done") == 1
    assert result.stderr.count("placement: Placement(slot=") == 4  # every job pinned by its worker's slot
    by_id = {r["run_id"]: r for r in records}
    assert by_id.pop(done["run_id"])["created_at"] == done["created_at"]  # skipped, not trained again
    assert [r["hardware"]["cpu_threads"] for r in by_id.values()] == [max(1, placement.cores() // 2)] * 3
    assert {p.name for p in (tmp_path / "mr" / ".slots").iterdir()} <= {"0.lock", "1.lock"}


@pytest.mark.slow  # 72 s on the busy 2-core machine
def test_a_submitit_local_job_writes_its_record(tmp_path):
    """hydra/launcher=submitit_local: the job runs in a process of submitit's and writes the record the basic
    launcher would (same run id)."""
    glue = make_glue_fixture(tmp_path / "glue")
    common = sweep_args(glue, tmp_path / "res")
    result = subprocess.run([str(BIN / "qgoft-bench"), "-m", *common, "method=linear", "hydra/launcher=submitit_local",
                             "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={tmp_path / 'mr'}"],
                            cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    records, _ = scan(tmp_path / "res")
    assert [r["status"] for r in records] == ["completed"]
    config = OmegaConf.to_container(compose_config([*common, "method=linear"]), resolve=True)
    assert records[0]["config"] == json.loads(json.dumps(config))
