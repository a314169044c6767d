"""VTAB-1k: task table, aliases, task configs, the folder loader and its errors, and the offline digits folder."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from qgoft_bench.errors import ConfigError, DataError
from qgoft_bench.report.tables import VTAB_GROUPS
from qgoft_bench.tasks import TASKS, Batching
from qgoft_bench.tasks.prepare_vtab import main as prepare_vtab
from qgoft_bench.tasks.vtab1k import (
    IMAGENET_MEAN,
    VTAB_TASKS,
    VtabTask,
    find_task_dir,
    resolve_vtab_name,
)
from tests.conftest import make_vtab_task as make_task

CONF = Path(__file__).parents[2] / "conf"
PROCESSOR = SimpleNamespace(image_size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))

# The class counts of the papers' 19 tasks, in their column order (reference/vtab1k_vit_b16.csv).
PAPER_COUNTS = [100, 102, 47, 102, 37, 10, 397, 2, 10, 45, 5, 8, 6, 6, 4, 16, 16, 18, 9]


def run_cfg(vtab_dir, task: str = "dtd", **task_overrides):
    task_cfg = OmegaConf.load(CONF / "task" / "vtab" / f"{task}.yaml")
    task_cfg.merge_with(task_overrides)
    return OmegaConf.create(
        {
            "task": task_cfg,
            "data": {"vtab_dir": None if vtab_dir is None else str(vtab_dir)},
            "trainer": {"batch_size": 3, "eval_batch_size": 2, "num_workers": 0},  # a subset of cfg.trainer
            "seed": 1,
        }
    )


def load(cfg) -> VtabTask:
    task = VtabTask(cfg.task, cfg.data)
    task.read()
    trainer = cfg.trainer
    task.encode(PROCESSOR, Batching(trainer.batch_size, trainer.eval_batch_size, 0, trainer.num_workers))
    return task


def labels_of(loader) -> list[int]:
    return [label for batch in loader for label in batch["targets"]["labels"].tolist()]


def test_paper_class_counts_and_groups():
    assert list(VTAB_TASKS.values()) == PAPER_COUNTS
    header = (Path(__file__).parents[2] / "qgoft_bench/report/reference/vtab1k_vit_b16.csv").read_text()
    columns = next(line for line in header.splitlines() if line.startswith("method,")).split(",")
    assert columns[2:-1] == list(VTAB_TASKS)
    assert [len(VTAB_GROUPS[g]) for g in ("natural", "specialized", "structured")] == [7, 4, 8]
    assert [t for tasks in VTAB_GROUPS.values() for t in tasks] == list(VTAB_TASKS)
    assert "svhn" in VTAB_GROUPS["natural"] and "eurosat" in VTAB_GROUPS["specialized"]
    assert "kitti" in VTAB_GROUPS["structured"]


def test_task_configs_match_the_table():
    files = {p.stem for p in (CONF / "task" / "vtab").glob("*.yaml")}
    assert files == set(VTAB_TASKS) | {"digits"}
    group_of = {t: g for g, tasks in VTAB_GROUPS.items() for t in tasks}
    for task, count in VTAB_TASKS.items():
        cfg = OmegaConf.load(CONF / "task" / "vtab" / f"{task}.yaml")
        assert (cfg.name, cfg.family, cfg.dataset, cfg.num_labels) == (f"vtab/{task}", "vtab", task, count)
        assert (cfg.headline_metric, cfg.group, cfg.protocol, cfg.normalization) == (
            "accuracy",
            group_of[task],
            "final",
            "imagenet",
        )
    digits = OmegaConf.load(CONF / "task" / "vtab" / "digits.yaml")
    assert (digits.num_labels, digits.group) == (10, "none")


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("cifar100", "cifar"),
        ("CIFAR-100", "cifar"),
        ("vtab/cifar", "cifar"),
        ("oxford_pet", "oxford_iiit_pet"),
        ("oxford_iiit_pets", "oxford_iiit_pet"),
        ("flowers102", "oxford_flowers102"),
        ("pcam", "patch_camelyon"),
        ("retinopathy", "diabetic_retinopathy"),
        ("clevr_distance", "clevr_dist"),
        ("dsprites_location", "dsprites_loc"),
        ("dsprites_orientation", "dsprites_ori"),
        ("smallnorb_azimuth", "smallnorb_azi"),
        ("smallnorb_elevation", "smallnorb_ele"),
        ("sun", "sun397"),
        ("resisc", "resisc45"),
        ("caltech", "caltech101"),
        ("dtd", "dtd"),
        ("digits", "digits"),
    ],
)
def test_resolve_vtab_name(alias, canonical):
    assert resolve_vtab_name(alias) == canonical


def test_task_folder_found_under_an_alias(tmp_path):
    make_task(tmp_path, "oxford_pet", labels=(0, 36))
    assert find_task_dir(tmp_path, "oxford_iiit_pet") == tmp_path / "oxford_pet"
    make_task(tmp_path, "cifar100", labels=(5, 99))
    task = load(run_cfg(tmp_path, "cifar"))
    assert len(task.train_set) == 2


def test_loader_batches_protocols_and_metrics(tmp_path):
    make_task(tmp_path)
    assert TASKS.get("vtab") is VtabTask
    task = load(run_cfg(tmp_path))
    assert set(task.eval_loaders) == {"test"} and task.head == "image_cls"
    batch = next(iter(task.train_batches(1)))
    pixels = batch["inputs"]["pixel_values"]
    assert pixels.shape == (3, 3, 16, 16) and pixels.dtype == torch.float32
    assert batch["targets"]["labels"].dtype == torch.long
    assert labels_of(task.eval_loaders["test"]) == [0, 1, 2, 1]  # evaluation keeps file order
    search = load(run_cfg(tmp_path, protocol="search"))
    assert set(search.eval_loaders) == {"val"}
    logits = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0], [0.3, 0.7, 0.0]])
    calls = iter([logits[:2], logits[2:]])  # eval batches of 2, in file order; labels 0 1 | 2 1
    metrics = task.evaluate(lambda inputs: SimpleNamespace(logits=next(calls)))
    assert metrics == {"accuracy": 0.75}


def test_normalization_switch(tmp_path):
    task_dir = make_task(tmp_path, labels=(0,))
    Image.new("RGB", (12, 12), (255, 255, 255)).save(task_dir / "images" / "0.png")
    white = next(iter(load(run_cfg(tmp_path)).eval_loaders["test"]))["inputs"]["pixel_values"][0, :, 0, 0]
    expected = [(1 - m) / s for m, s in zip(IMAGENET_MEAN, (0.229, 0.224, 0.225), strict=True)]
    assert white.tolist() == pytest.approx(expected, abs=1e-4)
    timm = next(iter(load(run_cfg(tmp_path, normalization="timm")).eval_loaders["test"]))["inputs"]["pixel_values"]
    assert timm[0, :, 0, 0].tolist() == pytest.approx([1.0, 1.0, 1.0], abs=1e-4)
    with pytest.raises(ConfigError, match="normalization"):
        load(run_cfg(tmp_path, normalization="cifar"))


def test_missing_vtab_dir(tmp_path):
    with pytest.raises(DataError, match="set data.vtab_dir=.*VTAB_DIR.*qgoft-bench-prepare-vtab"):
        load(run_cfg(None))
    with pytest.raises(DataError, match="not a folder"):
        load(run_cfg(tmp_path / "nowhere"))


def test_missing_task_folder(tmp_path):
    with pytest.raises(DataError, match="no folder for VTAB task 'dtd'.*describable_textures"):
        load(run_cfg(tmp_path))


def test_missing_split_file(tmp_path):
    (make_task(tmp_path) / "test.txt").unlink()
    with pytest.raises(DataError, match=r"test\.txt is missing"):
        load(run_cfg(tmp_path))


def test_malformed_line(tmp_path):
    task_dir = make_task(tmp_path)
    (task_dir / "train800val200.txt").write_text("images/0.png 0\n\nimages/1.png one\n")
    with pytest.raises(DataError, match=r"train800val200\.txt:3: expected 'relative/path label'"):
        load(run_cfg(tmp_path))


def test_label_out_of_range(tmp_path):
    task_dir = make_task(tmp_path)
    (task_dir / "test.txt").write_text("images/0.png 0\nimages/1.png 47\n")
    with pytest.raises(DataError, match=r"test\.txt:2: label 47 is out of range for 47 classes"):
        load(run_cfg(tmp_path))


def test_num_labels_must_match_the_task(tmp_path):
    make_task(tmp_path)
    with pytest.raises(ConfigError, match="dtd has 47 classes"):
        load(run_cfg(tmp_path, num_labels=10))


def test_a_missing_image_is_found_when_the_split_is_read(tmp_path):
    task_dir = make_task(tmp_path)
    (task_dir / "images" / "2.png").unlink()
    with pytest.raises(DataError, match=r"train800val200\.txt:3: image .*images/2\.png does not exist"):
        load(run_cfg(tmp_path))


@pytest.mark.parametrize("workers", [0, 2])
def test_undecodable_image_names_split_line_and_path(tmp_path, workers):
    """Decoding is lazy (at the first batch); the error is the same one line from a DataLoader worker."""
    task_dir = make_task(tmp_path)
    (task_dir / "images" / "2.png").write_bytes(b"not a png")
    cfg = run_cfg(tmp_path)
    cfg.trainer.num_workers = workers
    task = load(cfg)
    with pytest.raises(DataError, match=r"^\S*test\.txt:3: cannot decode image .*images/2\.png") as err:
        list(task.eval_loaders["test"])
    assert "\n" not in str(err.value) and "Traceback" not in str(err.value)


def test_prepare_vtab_digits(tmp_path, capsys):
    assert prepare_vtab([str(tmp_path)]) == 0
    task_dir = tmp_path / "digits"
    counts = {
        s: len((task_dir / f"{s}.txt").read_text().splitlines()) for s in ("train800", "val200", "test")
    }
    assert counts == {"train800": 800, "val200": 200, "test": 797}
    both = (task_dir / "train800val200.txt").read_text().splitlines()
    assert len(both) == 1000 and len(set(both)) == 1000
    used = {line.split()[0] for s in ("train800val200", "test") for line in (task_dir / f"{s}.txt").open()}
    assert len(used) == 1797 and len(list((task_dir / "images").glob("*.png"))) == 1797
    assert [p.name for p in tmp_path.iterdir()] == ["digits"]  # no staging folder left behind

    stamp = (task_dir / "test.txt").stat().st_mtime_ns
    capsys.readouterr()
    assert prepare_vtab([str(tmp_path)]) == 0
    assert "already prepared" in capsys.readouterr().out
    assert (task_dir / "test.txt").stat().st_mtime_ns == stamp

    task = load(run_cfg(tmp_path, "digits", protocol="search"))
    batch = next(iter(task.eval_loaders["val"]))
    assert batch["inputs"]["pixel_values"].shape == (2, 3, 16, 16)
    assert set(labels_of(task.train_batches(1))) == set(range(10))


def test_prepare_vtab_refuses_an_incomplete_folder(tmp_path, capsys):
    (tmp_path / "digits").mkdir()
    assert prepare_vtab([str(tmp_path)]) == 1
    assert "remove it" in capsys.readouterr().out


@pytest.mark.slow
def test_tiny_vit_learns_digits(tmp_path):
    """End to end through the trainer: full fine-tuning of the random tiny ViT beats chance (0.1) on digits."""
    import qgoft_bench.models.timm_vit  # noqa: F401  (registers the timm_vit model kind)
    from qgoft_bench.config import compose_config
    from qgoft_bench.train import run_experiment

    assert prepare_vtab([str(tmp_path / "vtab")]) == 0
    overrides = {
        "task": "vtab/digits",
        "model": "tiny_vit",
        "method": "full",
        "data.vtab_dir": tmp_path / "vtab",
        "results_dir": tmp_path / "runs",
        "trainer.device": "cpu",
        "trainer.progress": False,
        "trainer.max_epochs": 4,
        "trainer.eval_every": 4,
        "trainer.lr": 3e-3,
        "trainer.batch_size": 16,
        "trainer.eval_batch_size": 256,
    }
    record = run_experiment(compose_config([f"{k}={v}" for k, v in overrides.items()]))
    assert record["status"] == "completed"
    assert record["metrics"]["last"]["accuracy"] > 0.2
