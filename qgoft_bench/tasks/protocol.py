"""Which examples train, select and report: the official splits, or Fu et al.'s 90/10 protocol (AAAI 2023).

``task.protocol``:

- ``official``: train on the train split, evaluate on the dev split(s), select the best epoch on them (GLUE's usual).
- ``fu2023``: train on 90% of the official train split, evaluate on the held-out 10% (``val``) to select and stop
  early, and report the official dev split as ``test`` (metrics get the suffixes ``_val`` and ``_test``; the best
  epoch is chosen by ``<headline>_val``, and its ``_test`` values are the reported ones). The authors' exact split
  files are read from ``data.fu2023_dir`` (env ``FU2023_DIR``: ``<task>/{train,val,test}.jsonl``, jiant's format);
  without them the split is drawn from the official files with ``task.split_seed``, the same for every run. A drawn
  split is not the authors': records name its protocol ``fu2023_draw, split_seed N`` (so the tables keep it apart
  from the paper's rows), and its runs have run ids of their own (``records.run_id``; the condition is
  ``records.drawn_split``).

``task.drop_fraction`` (Fu et al.'s Table 2: 0.1) removes that fraction of the training examples at random, drawn
with ``task.drop_seed``: ten drop seeds give the ten perturbed training sets.
"""

from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from qgoft_bench.errors import ConfigError, DataError
from qgoft_bench.records import drawn_split

PROTOCOLS = ("official", "fu2023")
HELD_OUT = 0.1  # Fu et al.: 10% of the official train split
DRAWN = "fu2023_draw"  # the protocol of a 90/10 split drawn here, not read from the authors' files


def protocol_of(task: DictConfig, data: DictConfig) -> str:
    """``task.protocol``, checked, as a record names it: ``official``; ``fu2023`` with the authors' split files
    (``data.fu2023_dir``); ``fu2023_draw, split_seed N`` with a seeded draw instead."""
    protocol = task.get("protocol", "official")
    if protocol not in PROTOCOLS:
        raise ConfigError(f"task.protocol={protocol!r} is not one of {', '.join(PROTOCOLS)}")
    if protocol == "fu2023" and not task.get("fu2023_name"):
        raise ConfigError(f"task {task.name} is not one of Fu et al.'s tasks (no task.fu2023_name); use "
                          "task.protocol=official")
    fraction = task.get("drop_fraction", 0.0)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction < 1:
        raise ConfigError(f"task.drop_fraction={fraction!r} must be a number in [0, 1) (Fu et al.'s Table 2: 0.1)")
    for key in ("split_seed", "drop_seed"):  # numpy's seeds; 1.5 would be truncated to 1, another run id, one draw
        value = task.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"task.{key}={value!r} must be a whole number >= 0")
    if drawn_split(task, data):
        return f"{DRAWN}, split_seed {task.split_seed}"
    return protocol


def is_fu2023(protocol: str) -> bool:
    """Whether ``protocol`` (``protocol_of``'s) is Fu et al.'s 90/10, from their files or drawn."""
    return protocol == "fu2023" or protocol.startswith(DRAWN)


def fu2023_files(task: DictConfig, data: DictConfig) -> dict[str, Path] | None:
    """The authors' split files of ``task`` ({"train", "val", "test"} -> path) when ``data.fu2023_dir`` is set."""
    root = data.get("fu2023_dir")
    if not root:
        return None
    folder = Path(root).expanduser() / task.fu2023_name
    return {split: folder / f"{split}.jsonl" for split in ("train", "val", "test")}


def held_out_split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, val indices) of a seeded 90/10 draw over ``n`` examples, each in ascending order."""
    if n < 2:
        raise DataError(f"{n} training example(s) cannot be split 90/10")
    order = np.random.default_rng(seed).permutation(n)
    k = max(1, round(HELD_OUT * n))
    return np.sort(order[k:]), np.sort(order[:k])


def kept_after_drop(n: int, fraction: float, seed: int) -> np.ndarray:
    """Indices (ascending) of the training examples kept when ``fraction`` of ``n`` are dropped at random."""
    if fraction == 0:
        return np.arange(n)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[round(fraction * n):])
