"""``qgoft-bench-prepare-vtab OUT_DIR``: an offline VTAB-1k-layout task from scikit-learn's bundled digits.

Writes ``OUT_DIR/digits/`` with ``images/NNNN.png`` (the 1797 real 8x8 digit scans, upscaled, grayscale) and the
four split files of the VTAB-1k layout: a seeded permutation gives 800 train, 200 val and the remaining 797 test
images. Train with ``data.vtab_dir=OUT_DIR task=vtab/digits``. The folder is written under a temporary name and
renamed when complete, so an existing ``digits`` folder is a complete one and a re-run leaves it alone.
"""

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

TASK = "digits"
SPLIT_FILES = ("train800.txt", "val200.txt", "train800val200.txt", "test.txt")
NUM_TRAIN, NUM_VAL = 800, 200


def write_digits(task_dir: Path, size: int, seed: int) -> dict[str, int]:
    """Write images and split files into the (new, empty) ``task_dir``; return the number of lines per split."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no network

    digits = load_digits()
    # 0..16 ink levels -> 0..255 grey, bilinear upscale so the images look like small photos, not blocks.
    pixels = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    (task_dir / "images").mkdir(parents=True)
    lines = []
    for index, (image, label) in enumerate(zip(pixels, digits.target, strict=True)):
        name = f"images/{index:04d}.png"
        Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR).save(task_dir / name)
        lines.append(f"{name} {int(label)}\n")
    order = np.random.default_rng(seed).permutation(len(lines))
    train, val, test = np.split(order, [NUM_TRAIN, NUM_TRAIN + NUM_VAL])
    splits = {"train800": train, "val200": val, "train800val200": np.concatenate([train, val]), "test": test}
    for split, indices in splits.items():
        (task_dir / f"{split}.txt").write_text("".join(lines[i] for i in indices))
    return {split: len(indices) for split, indices in splits.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="qgoft-bench-prepare-vtab",
        description="Write OUT_DIR/digits/, scikit-learn's digits in the VTAB-1k folder layout (no network).",
    )
    parser.add_argument("out_dir", type=Path, help="the VTAB-1k folder to write into (data.vtab_dir)")
    parser.add_argument("--size", type=int, default=32, help="side of the upscaled square PNGs (default 32)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/val/test split (default 0)")
    args = parser.parse_args(argv)

    task_dir = args.out_dir / TASK
    hint = f"use data.vtab_dir={args.out_dir} task=vtab/{TASK}"
    if task_dir.exists():
        missing = [name for name in SPLIT_FILES if not (task_dir / name).is_file()]
        if missing:
            print(f"error: {task_dir} exists but lacks {', '.join(missing)}; remove it and run again")
            return 1
        print(f"{task_dir} is already prepared; {hint}")
        return 0
    args.out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{TASK}-", dir=args.out_dir))
    try:
        counts = write_digits(staging / TASK, args.size, args.seed)
        (staging / TASK).rename(task_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"wrote {task_dir} ({', '.join(f'{k} {v}' for k, v in counts.items())}); {hint}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
