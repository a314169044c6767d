"""VTAB-1k: the 19 tasks, their folder names and class counts, and the task family ``vtab`` (image classification).

Folder layout (as distributed with NOAH/FacT): ``<vtab_dir>/<task>/{train800,val200,train800val200,test}.txt``,
one ``relative/path label`` per line, paths relative to the task folder. Split files are read and checked when the
task loads; images are decoded lazily, bicubic-resized to the model's square size without crop, normalised, with
no augmentation (FacT's recipe).
"""

from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig
from PIL import Image
from torch.utils.data import Dataset, default_collate
from torchvision import transforms

from qgoft_bench.errors import ConfigError, DataError
from qgoft_bench.tasks.base import Batching, register_task_family
from qgoft_bench.tasks.classification import ClassificationTask, TargetSplitter

# folder name -> number of classes, in the papers' column order (Natural 7, Specialized 4, Structured 8).
VTAB_TASKS: dict[str, int] = {
    "cifar": 100,
    "caltech101": 102,
    "dtd": 47,
    "oxford_flowers102": 102,
    "oxford_iiit_pet": 37,
    "svhn": 10,
    "sun397": 397,
    "patch_camelyon": 2,
    "eurosat": 10,
    "resisc45": 45,
    "diabetic_retinopathy": 5,
    "clevr_count": 8,
    "clevr_dist": 6,
    "dmlab": 6,
    "kitti": 4,
    "dsprites_loc": 16,
    "dsprites_ori": 16,
    "smallnorb_azi": 18,
    "smallnorb_ele": 9,
}

# Other names the same tasks go by (TFDS names, VTAB task names, other papers' folders), already normalised.
VTAB_ALIASES: dict[str, list[str]] = {
    "cifar": ["cifar100", "cifar_100"],
    "caltech101": ["caltech", "caltech_101"],
    "dtd": ["describable_textures"],
    "oxford_flowers102": ["flowers102", "flowers_102", "flowers", "oxford_flowers", "oxford_flowers_102"],
    "oxford_iiit_pet": ["oxford_iiit_pets", "oxford_pet", "oxford_pets", "pets", "pet"],
    "svhn": ["svhn_cropped"],
    "sun397": ["sun", "sun_397"],
    "patch_camelyon": ["pcam", "camelyon"],
    "eurosat": ["euro_sat"],
    "resisc45": ["resisc", "resisc_45"],
    "diabetic_retinopathy": ["retinopathy", "diabetic_retinopathy_detection"],
    "clevr_count": ["clevr_count_all"],
    "clevr_dist": ["clevr_distance", "clevr_closest_object_distance"],
    "dmlab": ["dmlab_distance"],
    "kitti": ["kitti_distance", "kitti_closest_vehicle_distance"],
    "dsprites_loc": ["dsprites_location", "dsprites_label_x_position", "dsprites_xpos"],
    "dsprites_ori": ["dsprites_orientation", "dsprites_label_orientation"],
    "smallnorb_azi": ["smallnorb_azimuth", "smallnorb_label_azimuth"],
    "smallnorb_ele": ["smallnorb_elevation", "smallnorb_label_elevation"],
}
_CANONICAL = {alias: task for task, aliases in VTAB_ALIASES.items() for alias in [task, *aliases]}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# protocol -> (training split, {eval name: split}); "final" is the papers' protocol, "search" is for tuning.
PROTOCOLS: dict[str, tuple[str, dict[str, str]]] = {
    "final": ("train800val200", {"test": "test"}),
    "search": ("train800", {"val": "val200"}),
}


def _normalise(name: str) -> str:
    name = name.strip().lower().removeprefix("vtab/").removeprefix("vtab-")
    return name.replace("-", "_").replace(" ", "_")


def resolve_vtab_name(name: str) -> str:
    """The canonical VTAB-1k folder name (a key of ``VTAB_TASKS``) for ``name`` or any alias of it.

    Names that are no VTAB task (e.g. ``digits`` or a custom data set in the same layout) come back normalised.
    """
    key = _normalise(name)
    return _CANONICAL.get(key, key)


def find_task_dir(vtab_dir: Path, name: str) -> Path:
    """The folder of task ``name`` under ``vtab_dir``, found by its canonical name or any alias."""
    canonical = resolve_vtab_name(name)
    candidates = dict.fromkeys([canonical, *VTAB_ALIASES.get(canonical, []), name, _normalise(name)])
    for candidate in candidates:
        if (vtab_dir / candidate).is_dir():
            return vtab_dir / candidate
    raise DataError(
        f"no folder for VTAB task {name!r} in {vtab_dir} (looked for {', '.join(candidates)}); "
        "put the task's VTAB-1k folder there or fix data.vtab_dir"
    )


def read_split(task_dir: Path, split: str, num_classes: int) -> list[tuple[Path, int, int]]:
    """(image path, label, line number) of every non-blank line of ``<task_dir>/<split>.txt``, checked."""
    file = task_dir / f"{split}.txt"
    if not file.is_file():
        raise DataError(f"split file {file} is missing; a VTAB-1k task folder needs {split}.txt")
    items = []
    for lineno, line in enumerate(file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)  # paths may contain spaces; the label is the last field
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DataError(
                f"{file}:{lineno}: expected 'relative/path label', got {line.strip()!r}; fix the line"
            )
        label = int(parts[1])
        if not 0 <= label < num_classes:
            raise DataError(
                f"{file}:{lineno}: label {label} is out of range for {num_classes} classes; "
                "fix the label or task.num_labels"
            )
        image = task_dir / parts[0]
        if not image.is_file():
            raise DataError(f"{file}:{lineno}: image {image} does not exist; restore the file or drop the line")
        items.append((image, label, lineno))
    if not items:
        raise DataError(f"split file {file} has no examples; regenerate the task folder")
    return items


class VtabImages(Dataset):
    """Images of one split, decoded on access: ``{"pixel_values": (3, S, S) float, "labels": long}``."""

    def __init__(self, split_file: Path, items: Sequence[tuple[Path, int, int]], transform) -> None:
        self.split_file = split_file
        self.items = items
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        path, label, lineno = self.items[index]
        try:
            with Image.open(path) as image:
                pixels = self.transform(image.convert("RGB"))
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            raise DataError(
                f"{self.split_file}:{lineno}: cannot decode image {path} ({err}); replace the file or drop the line"
            ) from err
        return {"pixel_values": pixels, "labels": torch.tensor(label, dtype=torch.long)}


def image_transform(processor, normalization: str) -> transforms.Compose:
    """Bicubic resize to the model's square size (no crop), to tensor, normalise (``imagenet`` or ``timm``)."""
    if normalization == "imagenet":
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    elif normalization == "timm":
        mean, std = processor.mean, processor.std
    else:
        raise ConfigError(
            f"task.normalization={normalization!r} is not one of imagenet | timm; set one of those"
        )
    size = int(processor.image_size)
    return transforms.Compose(
        [
            transforms.Resize((size, size), interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )


def _vtab_dir(data: DictConfig) -> Path:
    value = data.get("vtab_dir")
    if not value:
        raise DataError(
            "no VTAB-1k folder: set data.vtab_dir=DIR or VTAB_DIR, "
            "or run qgoft-bench-prepare-vtab DIR for the offline digits set (task=vtab/digits)"
        )
    path = Path(value).expanduser()
    if not path.is_dir():
        raise DataError(
            f"data.vtab_dir={value} is not a folder: set data.vtab_dir=DIR or VTAB_DIR to a VTAB-1k folder, "
            "or run qgoft-bench-prepare-vtab DIR for the offline digits set (task=vtab/digits)"
        )
    return path


@register_task_family("vtab")
class VtabTask(ClassificationTask):
    """A VTAB-1k task per ``task.protocol``: final trains on train800val200 and evaluates on ``test``; search trains
    on train800 and evaluates on ``val`` (val200). The model's processor gives ``image_size`` and its
    ``mean``/``std``."""

    head = "image_cls"
    data_dir_key = "vtab_dir"
    from_hub = False

    def __init__(self, cfg: DictConfig, data: DictConfig) -> None:
        protocol = cfg.get("protocol", "final")
        if protocol not in PROTOCOLS:
            raise ConfigError(f"task.protocol={protocol!r} is not one of {' | '.join(PROTOCOLS)}; set one of those")
        self.train_split, self.eval_splits = PROTOCOLS[protocol]
        self.eval_split_names = tuple(self.eval_splits)
        super().__init__(cfg, data)
        canonical = resolve_vtab_name(cfg.dataset)
        if canonical in VTAB_TASKS and VTAB_TASKS[canonical] != self.num_labels:
            raise ConfigError(
                f"task.num_labels={self.num_labels} but VTAB {canonical} has {VTAB_TASKS[canonical]} classes; "
                "fix num_labels"
            )
        self.items: dict[str, tuple[Path, list[tuple[Path, int, int]]]] = {}

    def read(self) -> None:
        task_dir = find_task_dir(_vtab_dir(self.data), self.cfg.dataset)
        for split in (self.train_split, *self.eval_splits.values()):
            items = read_split(task_dir, split, self.num_labels)
            self.items[split] = (task_dir / f"{split}.txt", items)
            # the split file's contents, and each image by name and size (hashing every image would cost seconds)
            self.sources.append(task_dir / f"{split}.txt")
            self.sources += [f"{path.relative_to(task_dir)}:{path.stat().st_size}" for path, _, _ in items]

    def encode(self, processor, batching: Batching) -> None:
        transform = image_transform(processor, self.cfg.get("normalization", "imagenet"))
        images = {split: VtabImages(file, items, transform) for split, (file, items) in self.items.items()}
        evals = {name: images[split] for name, split in self.eval_splits.items()}
        self.set_batches(batching, TargetSplitter(default_collate), images[self.train_split], evals)
