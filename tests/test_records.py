"""Result records: stable ids, atomic writes, skip-if-done."""

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


def test_is_done_only_for_completed_records(tmp_path):
    done, failed, broken = tmp_path / "d.json", tmp_path / "f.json", tmp_path / "b.json"
    records.write_record(done, {"schema_version": 1, "status": "completed"})
    records.write_record(failed, {"schema_version": 1, "status": "failed"})
    broken.write_text("{not json")
    assert records.is_done(done)
    assert not records.is_done(failed) and not records.is_done(broken) and not records.is_done(tmp_path / "none")


def test_iter_records_skips_non_records(tmp_path):
    records.write_record(tmp_path / "a" / "r.json", {"schema_version": 1, "status": "completed"})
    (tmp_path / "perf.json").write_text(json.dumps([1, 2]))
    (tmp_path / "bad.json").write_text("{")
    found = list(records.iter_records(tmp_path))
    assert len(found) == 1 and found[0]["_path"].endswith("a/r.json")
