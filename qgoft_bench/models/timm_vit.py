"""timm Vision Transformers as image classifiers (model kind ``timm_vit``).

The timm model sits at the attribute ``vit`` of a thin wrapper, so module names read ``vit.blocks.0.attn.qkv`` and
the classifier is ``vit.head``. The wrapper's forward takes ``pixel_values`` (B, 3, H, W) and returns an object with
``.logits`` (B, num_labels), like the Hugging Face classifiers the trainer also drives.

Weights (``model.init``): ``pretrained`` loads ``model.path`` when set (.safetensors/.pth through timm's pretrained
loader, .npz through the ViT's own big_vision loader), else the hub checkpoint of ``model.timm_name`` (from the local
hub cache when offline); ``random`` builds the architecture only; ``meta`` builds it on the meta device, for counting.
"""

from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from qgoft_bench.errors import ConfigError, ModelSourceError
from qgoft_bench.models import ModelBundle, ModelSpec, register_model_kind
from qgoft_bench.models.heads import ClassifierOutput


@dataclass
class ImageProcessor:
    """How images are prepared for the model: bicubic resize to ``image_size`` squared, per-channel normalisation.

    ``mean``/``std`` are the model's own (timm ``pretrained_cfg``); the data loader may use ImageNet's instead
    (``task.normalization``).
    """

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class TimmImageClassifier(nn.Module):
    """``forward(pixel_values) -> ClassifierOutput``; the timm model is ``self.vit``."""

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        self.vit = vit

    def forward(self, pixel_values: torch.Tensor) -> ClassifierOutput:
        return ClassifierOutput(logits=self.vit(pixel_values))


def _create(model_cfg: DictConfig, num_classes: int, overlay: dict | None = None, pretrained: bool = False):
    extra = model_cfg.get("model_kwargs")
    kwargs = OmegaConf.to_container(extra, resolve=True) if extra is not None else {}
    return timm.create_model(
        model_cfg.timm_name,
        pretrained=pretrained,
        pretrained_cfg_overlay=overlay,
        num_classes=num_classes,
        img_size=model_cfg.img_size,
        drop_path_rate=model_cfg.get("drop_path_rate", 0.0),
        **kwargs,
    )


def _load_pretrained(model_cfg: DictConfig, num_classes: int) -> nn.Module:
    check_source(model_cfg)
    path = model_cfg.get("path")
    if path:
        file = Path(path).expanduser()
        if file.suffix == ".npz":
            # Google's original in21k checkpoints are .npz; timm reads them through the ViT's own loader, which
            # skips a head of a different class count and resamples the position embedding to img_size.
            vit = _create(model_cfg, num_classes)
            vit.load_pretrained(str(file))
            return vit
        # timm's pretrained loader applies the ViT checkpoint filter and drops a mismatched classifier.
        return _create(model_cfg, num_classes, overlay={"file": str(file)}, pretrained=True)
    try:
        return _create(model_cfg, num_classes, pretrained=True)
    except OSError as err:  # huggingface_hub's offline / not-in-cache / connection errors are all OSErrors
        raise ModelSourceError(
            f"pretrained weights for {model_cfg.timm_name} are not in the local hub cache and the hub is unreachable "
            f"({type(err).__name__}): download the checkpoint and set model.path=FILE, or use model.init=random"
        ) from err


def check_head(model_cfg: DictConfig, head: str) -> None:
    """Raise ``ConfigError`` unless ``head`` is ``image_cls``, the only head a ViT here carries."""
    if head != "image_cls":
        raise ConfigError(f"model {model_cfg.name} is a vision model and has no {head} head; choose a text model for "
                          "this task (e.g. model=minilm_l6)")


def check_source(model_cfg: DictConfig) -> None:
    """Raise ``ModelSourceError`` when a pretrained ``model.path`` is not a file (a checkpoint from the hub is
    looked up when the model is built)."""
    path = model_cfg.get("path")
    if model_cfg.get("init", "pretrained") == "pretrained" and path and not Path(path).expanduser().is_file():
        raise ModelSourceError(f"model.path={path} is not a file; point it at a .safetensors/.pth/.npz checkpoint")


@register_model_kind("timm_vit")
def build_timm_vit(model_cfg: DictConfig, head: str, num_labels: int) -> ModelBundle:
    """A timm ViT with a fresh ``num_labels``-way image-classification head, weights per ``model_cfg.init``."""
    check_head(model_cfg, head)
    num_classes = int(num_labels)
    init = model_cfg.get("init", "pretrained")
    if init == "pretrained":
        vit = _load_pretrained(model_cfg, num_classes)
    elif init == "random":
        vit = _create(model_cfg, num_classes)
    elif init == "meta":
        with torch.device("meta"):
            vit = _create(model_cfg, num_classes)
    else:
        raise ConfigError(f"model.init={init!r} is not one of pretrained | random | meta; set one of those")
    cfg = vit.pretrained_cfg
    processor = ImageProcessor(
        image_size=int(model_cfg.img_size),
        mean=tuple(cfg.get("mean", timm.data.IMAGENET_DEFAULT_MEAN)),
        std=tuple(cfg.get("std", timm.data.IMAGENET_DEFAULT_STD)),
    )
    spec = ModelSpec(family="vit", head_modules=list(model_cfg.get("head_modules") or ["vit.head"]))
    return ModelBundle(TimmImageClassifier(vit), spec, load_processor=lambda: processor)
