"""Result records: stable ids, atomic writes, skip-if-done."""

import errno
import json
import os

import pytest

from qgoft_bench import records


def test_run_id_ignores_paths_and_switches():
    base = {"seed": 1, "trainer": {"lr": 1e-3, "progress": True}, "results_dir": "a", "data": {"glue_dir": "/x"}}
    moved = {"seed": 1, "trainer": {"lr": 1e-3, "progress": False}, "results_dir": "b", "data": {"glue_dir": "/y"},
             "overwrite": True}
    assert records.run_id(base) == records.run_id(moved)
    assert records.run_id(base) != records.run_id({**base, "seed": 2})
    assert records.run_id(base) != records.run_id({**base, "trainer": {"lr": 2e-3, "progress": True}})


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path):
    path = records.record_path(tmp_path, "glue/rte", "tiny_bert", "lora_r8", 1, "abc")
    records.write_record(path, {"schema_version": 1, "status": "completed", "x": 1})
    assert path == tmp_path / "glue/rte/tiny_bert/lora_r8/seed1-abc.json"
    assert json.loads(path.read_text())["x"] == 1
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_a_failed_write_keeps_the_old_record(tmp_path):
    path = tmp_path / "r.json"
    records.write_record(path, {"schema_version": 1, "status": "completed", "x": 1})
    with pytest.raises(TypeError):
        records.write_record(path, {"x": 2, "bad": {("tuple", "key"): 1}})  # fails half-way through the dump
    assert json.loads(path.read_text())["x"] == 1
    assert os.listdir(tmp_path) == ["r.json"]


def test_is_done_only_for_final_records(tmp_path):
    done, failed, broken = tmp_path / "d.json", tmp_path / "f.json", tmp_path / "b.json"
    records.write_record(done, {"schema_version": 1, "status": "completed"})
    records.write_record(failed, {"schema_version": 1, "status": "failed"})
    broken.write_text("{not json")
    assert records.is_done(done)
    assert not records.is_done(failed) and not records.is_done(broken) and not records.is_done(tmp_path / "none")


def test_scan_reports_what_should_be_a_record_and_is_not(tmp_path):
    records.write_record(tmp_path / "a" / "r.json", {**RECORD, "status": "completed"})
    (tmp_path / "perf.json").write_text(json.dumps([1, 2]))  # no record at all: passed over
    (tmp_path / "bad.json").write_text("{")
    (tmp_path / "a" / "attempts").mkdir()
    records.write_record(tmp_path / "a" / "attempts" / "r.x.failed.json", {**RECORD, "status": "failed"})
    (tmp_path / "hand.json").write_text(json.dumps({"status": "completed"}))  # a record's field, no version
    found, skipped = records.scan(tmp_path)
    assert [r["_path"] for r in found] == [str(tmp_path / "a" / "r.json")]  # attempts are not results
    assert sorted((p.name, reason.split(":")[0]) for p, reason in skipped) == [
        ("bad.json", "not JSON (truncated?)"),
        ("hand.json", "has a status but no schema_version")]


RECORD = {"schema_version": 1, "task": {"name": "glue/rte", "metric": "accuracy"}, "method": {"label": "lora"}, "seed": 1,
          "model": "m", "metrics": {"best": {"accuracy": 0.5}, "last": {"accuracy": 0.5}}}


def test_records_are_strict_json(tmp_path):
    path = tmp_path / "r.json"
    records.write_record(path, {**RECORD, "status": "completed", "metrics": {"best": {"pearson": float("nan")},
                                                                            "last": {"loss": float("inf")}}})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["metrics"]["best"]["pearson"] is None


@pytest.mark.parametrize("first,second,kept", [
    ("completed", "failed", "completed"), ("completed", "interrupted", "completed"),
    ("completed", "diverged", "completed"), ("diverged", "failed", "diverged"),
    ("completed", "completed", "completed"), ("failed", "completed", "completed"),
    ("interrupted", "failed", "failed"), ("diverged", "completed", "completed"),
])
def test_a_record_is_never_replaced_by_a_worse_one(tmp_path, first, second, kept):
    path = tmp_path / "run" / "seed1-abc.json"
    records.store_record(path, {**RECORD, "status": first, "n": 1})
    written = records.store_record(path, {**RECORD, "status": second, "n": 2})
    main = json.loads(path.read_text())
    assert main["status"] == kept
    replaced = records.RANK[second] >= records.RANK[first]
    assert main["n"] == (2 if replaced else 1)
    if not replaced:  # the worse attempt is kept beside, not lost
        assert written.parent.name == "attempts" and json.loads(written.read_text())["status"] == second


def test_is_done_needs_a_final_status_and_the_same_data(tmp_path):
    path = tmp_path / "r.json"
    records.write_record(path, {**RECORD, "status": "diverged", "data": {"fingerprint": "abc"}})
    assert records.is_done(path) and records.is_done(path, "abc")
    assert not records.is_done(path, "changed")


@pytest.mark.parametrize("make", ["readonly", "file", "proc", "full"])
def test_an_unwritable_results_folder_is_found_first(tmp_path, make, monkeypatch):
    folder = tmp_path / "results"
    if make == "full":  # a full disk fails the write of the probe file
        def no_space(fd):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "fsync", no_space)
    elif make == "readonly":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        folder = tmp_path / "ro"
        folder.mkdir(mode=0o500)
    elif make == "file":
        folder = tmp_path / "a_file"
        folder.write_text("x")
    else:
        folder = "/proc/qgoft-results"
    with pytest.raises(OSError):
        records.check_writable(folder)


def _write_claim(path, host, pid, age_s=0.0):
    file = records.claim_path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps({"host": host, "pid": pid, "since": "then"}))
    if age_s:
        stamp = file.stat().st_mtime - age_s
        os.utime(file, (stamp, stamp))


def test_a_live_claim_is_respected_and_ours_is_released(tmp_path):
    import socket
    import subprocess
    import sys

    path = tmp_path / "glue/rte/m/lora/seed1-abc.json"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_claim(path, socket.gethostname(), sleeper.pid)
        with records.claim(path) as holder:
            assert holder["pid"] == sleeper.pid  # a live worker on this host: skip
        _write_claim(path, "another-host", 1)
        with records.claim(path) as holder:
            assert holder["host"] == "another-host"  # fresh, elsewhere: skip
        _write_claim(path, socket.gethostname(), sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()
    with records.claim(path) as holder:  # the sleeper is gone: its claim is stale, taken over
        assert holder is None
        assert json.loads(records.claim_path(path).read_text())["pid"] == os.getpid()
    assert not records.claim_path(path).exists()  # released


def test_a_claim_nobody_refreshed_is_taken_over_on_any_host(tmp_path):
    path = tmp_path / "seed1-abc.json"
    _write_claim(path, "preempted-node", 1, age_s=records.CLAIM_STALE_S + 5)
    with records.claim(path) as holder:
        assert holder is None
    records.claim_path(path).write_text("not json")  # a worker died while writing it
    with records.claim(path) as holder:
        assert holder is None


def test_files_beside_a_record_are_not_records(tmp_path):
    """SQuAD's <record stem>.predictions.json sits beside the record; the tables must not read it as one."""
    folder = tmp_path / "squad/v1/m/full"
    folder.mkdir(parents=True)
    (folder / "seed1-abc.json").write_text("{}")
    (folder / "seed1-abc.predictions.json").write_text('{"q1": "Paris"}')
    (folder / "seed2-run.1.json").write_text("{}")  # a dot in a run id, with no record it sits beside: a record
    assert [p.name for p in records.iter_record_files(tmp_path)] == ["seed1-abc.json", "seed2-run.1.json"]


def test_a_requeued_slurm_job_takes_over_its_own_claim(tmp_path, monkeypatch):
    """SLURM requeues a job under its id with SLURM_RESTART_COUNT counted up: a claim that job left on another node
    (killed with no time to release it) is its own, taken over at once; another job's fresh claim is not."""
    path = tmp_path / "seed1-abc.json"
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    with records.claim(path):
        assert json.loads(records.claim_path(path).read_text())["slurm"] == ["4242", 0]
    file = records.claim_path(path)
    file.write_text(json.dumps({"host": "node-a", "pid": 1, "since": "then", "slurm": ["4242", 0]}))
    with records.claim(path) as holder:
        assert holder["host"] == "node-a"  # the same incarnation: another task of this job holds it
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    with records.claim(path) as holder:
        assert holder is None  # requeued: the claim of our previous life is stale
    file.write_text(json.dumps({"host": "node-b", "pid": 1, "since": "then", "slurm": ["4243", 0]}))
    with records.claim(path) as holder:
        assert holder["host"] == "node-b"  # another job's live claim is respected
