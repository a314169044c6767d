"""Shared fixtures: no test reaches the network; GLUE data are the real files when ../shared exists, else generated."""

import os
import random
import signal
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_GLUE = REPO.parent / "shared" / "data" / "glue"

# Tiny models gain nothing from a second thread, and on a busy 2-core machine OpenMP barriers over many small ops
# cost more than the ops (seen: 10x slower suites).
torch.set_num_threads(1)

# A shell that starts jobs in the background (nohup, `cmd &` in a script) makes them ignore SIGINT, and Python then
# installs no Ctrl-C handler: the tests of Ctrl-C (here and in the CLI processes they start, which inherit an
# ignored signal but not a handler) need the interactive default, whatever started pytest.
signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.delenv("GLUE_DIR", raising=False)
    monkeypatch.delenv("VTAB_DIR", raising=False)
    monkeypatch.delenv("SQUAD_DIR", raising=False)


def _write(path: Path, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def make_glue_fixture(root: Path, n_train: int = 64, n_dev: int = 32) -> Path:
    """A small classic-layout GLUE folder: RTE, CoLA (no header), STS-B, MRPC (BOM header), MNLI (two dev files).

    Texts carry stray double quotes, as the real files do, so a quoting CSV reader would merge rows. The label is
    a function of the text (a keyword), so a model can learn it."""
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "river", "stone", "light", "cloud"]

    def sentence(positive: bool) -> str:
        body = " ".join(rng.choice(words) for _ in range(6))
        return f'"{body} {"good" if positive else "bad"} "quote'

    for split, n in (("train", n_train), ("dev", n_dev)):
        labels = [i % 2 for i in range(n)]
        _write(root / "RTE" / f"{split}.tsv", ["index\tsentence1\tsentence2\tlabel"] + [
            f"{i}\t{sentence(y == 0)}\tsecond {i}\t{'entailment' if y == 0 else 'not_entailment'}"
            for i, y in enumerate(labels)])
        _write(root / "CoLA" / f"{split}.tsv", [f"src\t{y}\t{'' if y else '*'}\t{sentence(y == 1)}"
                                               for y in labels])
        _write(root / "MRPC" / f"{split}.tsv", ["\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String"] + [
            f"{y}\t{i}\t{i + 1}\t{sentence(y == 1)}\tother {i}" for i, y in enumerate(labels)])
        _write(root / "STS-B" / f"{split}.tsv",
               ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"] + [
                   f"{i}\tg\tf\t2012\t{i}\ts1\ts2\t{sentence(y == 1)}\tpair {i}\t{4.0 * y + 0.5:.3f}"
                   for i, y in enumerate(labels)])
    mnli_header = "index\tpromptID\tpairID\tgenre\tsentence1\tsentence2\tgold_label"
    names = ["entailment", "neutral", "contradiction"]
    _write(root / "MNLI" / "train.tsv", [mnli_header] + [f"{i}\tp\tq\tg\t{sentence(i % 3 == 0)}\th {i}\t{names[i % 3]}"
                                                         for i in range(n_train)])
    for stem in ("dev_matched", "dev_mismatched"):
        _write(root / "MNLI" / f"{stem}.tsv", [mnli_header] + [
            f"{i}\tp\tq\tg\t{sentence(i % 3 == 0)}\th {i}\t{names[i % 3]}" for i in range(n_dev)])
    return root


def make_vtab_task(root: Path, name: str = "dtd", labels=(0, 1, 2, 1), size: int = 12) -> Path:
    """A VTAB-layout folder with tiny random PNGs; every split file lists the same images."""
    import numpy as np
    from PIL import Image

    task_dir = root / name
    (task_dir / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for i, label in enumerate(labels):
        pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(task_dir / "images" / f"{i}.png")
        lines.append(f"images/{i}.png {label}\n")
    for split in ("train800", "val200", "train800val200", "test"):
        (task_dir / f"{split}.txt").write_text("".join(lines))
    return task_dir


def make_superglue_fixture(root: Path, n_train: int = 24, n_val: int = 12) -> Path:
    """CB, COPA, WSC, BoolQ and RTE in the official jsonl layout, labels as each task's files type them (CB/RTE
    strings, BoolQ/WSC booleans, COPA integers) and learnable from a keyword."""
    import json

    cb = ["entailment", "contradiction", "neutral"]

    def rows(n: int, make) -> list[str]:
        return [json.dumps(make(i)) for i in range(n)]

    for split, n in (("train", n_train), ("val", n_val)):
        files = {
            "CB": rows(n, lambda i: {"premise": f"the {cb[i % 3]} premise {i}", "hypothesis": f"a hypothesis {i}",
                                     "label": cb[i % 3], "idx": i}),
            "RTE": rows(n, lambda i: {"premise": f"{'yes' if i % 2 else 'no'} premise {i}", "hypothesis": "h",
                                      "label": ["entailment", "not_entailment"][i % 2], "idx": i}),
            "BoolQ": rows(n, lambda i: {"question": f"is it {i}?", "passage": f"Title -- {'yes' if i % 2 else 'no'}",
                                        "idx": i, "label": bool(i % 2)}),
            "COPA": rows(n, lambda i: {"premise": f"the glass fell {i}.", "choice1": "it broke." if i % 2 else "sun",
                                       "choice2": "sun" if i % 2 else "it broke.", "question": ["cause", "effect"][i % 2],
                                       "label": 1 - i % 2, "idx": i}),
            "WSC": rows(n, lambda i: {"text": f"Mark told Pete lies {i} . He should have known .",
                                      "target": {"span1_index": 0, "span1_text": "Mark", "span2_index": 5,
                                                 "span2_text": "He"}, "idx": i, "label": bool(i % 2)}),
        }
        for task, lines in files.items():
            _write(root / task / f"{split}.jsonl", lines)
    return root


@pytest.fixture
def glue_fixture(tmp_path) -> Path:
    return make_glue_fixture(tmp_path / "glue")


@pytest.fixture
def shared_glue() -> Path:
    if not SHARED_GLUE.is_dir():
        pytest.skip("the real GLUE files (../shared/data/glue) are not beside this checkout")
    return SHARED_GLUE


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GLUE_DIR", "VTAB_DIR")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="disabled")
    return env
