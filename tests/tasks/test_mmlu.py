"""MMLU: reading the official CSV layout, the harness prompt character for character, both scorings' accuracies on
a model whose answers the test sets, cached and uncached scoring, the stratified subset, eval_only runs. The slow
test scores real questions with SmolLM2-135M-Instruct."""

import csv
import json
import math
import os
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers.modeling_outputs import CausalLMOutputWithPast

from qgoft_bench.config import compose_config
from qgoft_bench.errors import ConfigError, DataError
from qgoft_bench.models import build_model
from qgoft_bench.models.hf import load_tokenizer
from qgoft_bench.records import run_id
from qgoft_bench.tasks import Batching, build_task
from qgoft_bench.tasks.mmlu import harness_prompt, score, stratified_subset
from qgoft_bench.train.loop import predictor
from qgoft_bench.train.run import run_experiment

SHARED_MMLU = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mmlu"
TAGS = {"alpha": 0, "bravo": 1, "charlie": 2, "delta": 3}  # a question holding the tag makes the fake model answer
# One subject per category. Each test row: (tag the model follows, gold letter): stem 3/4 right, social 1/2,
# humanities 3/3, other 0/1, overall 7/10.
SUBJECTS = {
    "abstract_algebra": [("alpha", "A"), ("bravo", "B"), ("charlie", "C"), ("delta", "A")],
    "sociology": [("alpha", "A"), ("bravo", "D")],
    "high_school_us_history": [("delta", "D"), ("charlie", "C"), ("alpha", "A")],
    "virology": [("bravo", "C")],
}
EXPECTED = {"stem": 3 / 4, "social": 1 / 2, "humanities": 3 / 3, "other": 0 / 1, "avg": 7 / 10}
CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv("MMLU_DIR", raising=False)


def write_csv(path: Path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\r\n").writerows(rows)  # CRLF rows, as 44 of the official files


@pytest.fixture
def mmlu_dir(tmp_path: Path) -> Path:
    """Four subjects in the official layout: 5 dev rows each (no tag), test rows as ``SUBJECTS``."""
    for subject, rows in SUBJECTS.items():
        dev = [[f"Dev question {i} of {subject.replace('_', ' ')}?", "one", "two", "three", "four", "ABCD"[i % 4]]
               for i in range(5)]
        write_csv(tmp_path / "dev" / f"{subject}_dev.csv", dev)
        test = [[f"Test question {i}, {tag}?", "w", "x", "y", "z", gold] for i, (tag, gold) in enumerate(rows)]
        write_csv(tmp_path / "test" / f"{subject}_test.csv", test)
    return tmp_path


class FakeLM(nn.Module):
    """A causal LM whose next-token logits favour, at every position, the letter of the last tag word in the row
    (the tokens of " A" and "A" alike); no KV cache. It reads ``logits_to_keep`` as transformers' models do."""

    def __init__(self, tokenizer, vocab: int) -> None:
        super().__init__()
        self.tag_ids = {tokenizer(t, add_special_tokens=False)["input_ids"][0]: letter for t, letter in TAGS.items()}
        self.letter_ids = [{tokenizer(f"Answer: {c}", add_special_tokens=False)["input_ids"][-1],
                            tokenizer(c, add_special_tokens=False)["input_ids"][-1]} for c in "ABCD"]
        self.vocab = vocab

    def forward(self, input_ids, attention_mask=None, logits_to_keep=0, **_):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        for row, ids in enumerate(input_ids.tolist()):
            letters = [self.tag_ids[i] for i in ids if i in self.tag_ids]
            for token in self.letter_ids[letters[-1]] if letters else ():  # no tag (a shared prefix): no choice
                logits[row, :, token] = 5.0
        if isinstance(logits_to_keep, torch.Tensor):
            logits = logits[:, logits_to_keep]
        return CausalLMOutputWithPast(logits=logits)


FOUR = f"eval.mmlu_subjects=[{','.join(SUBJECTS)}]"


def mmlu_task(folder: Path, *overrides: str):
    """The read MMLU task (and its config) of ``folder``; the four generated subjects unless overrides name some."""
    subjects = [] if any(o.startswith("eval.mmlu_subjects=") for o in overrides) else [FOUR]
    cfg = compose_config(["task=mmlu", "model=tiny_llama", f"data.mmlu_dir={folder}", *subjects, *overrides])
    task = build_task(cfg.task, cfg.data)
    task.read()
    return task, cfg


def tokenizer():
    tok = load_tokenizer(compose_config(["model=tiny_llama"]).model)
    tok.chat_template = CHAT_TEMPLATE
    return tok


@pytest.mark.parametrize("scoring", ["harness", "letter_logits"])
def test_category_and_overall_accuracy_are_exact(mmlu_dir, scoring):
    task, _ = mmlu_task(mmlu_dir, f"eval.mmlu_scoring={scoring}")
    tok = tokenizer()
    task.encode(tok, Batching(4, 3, 2048))  # batches of 3: subjects span several
    metrics = task.evaluate(predictor(FakeLM(tok, len(tok)).eval(), torch.device("cpu"), "fp32"))
    for k in (0, 5):
        assert {part: metrics[f"mmlu_{k}shot_{part}"] for part in EXPECTED} == pytest.approx(EXPECTED, abs=0)
        assert metrics[f"mmlu_{k}shot_truncated"] == 0
    assert task.artifacts()["mmlu"]["5"]["abstract_algebra"] == {"correct": 3, "total": 4, "accuracy": 0.75}
    assert task.headline == "mmlu_5shot_avg" and task.protocol == f"{scoring}, 4 of 57 subjects"


def test_the_5_shot_prompt_is_the_harness_format(tmp_path):
    """Question stripped, options verbatim (``None``, ``0.50``, a newline inside a field), the subject's _ as
    spaces, exemplars in file order with " X" answers and a blank line after each."""
    dev = [
        ["  What is 1 + 1?\n", "1", "2", "None", "0.50", "B"],
        ["Which is a colony?", "Virginia", "Texas", "Ohio", "Utah", "A"],
        ["Line one\nline two?", "a\nb", "c", "d", "e", "D"],
        ["Q4", "w", "x", "y", "z", "C"],
        ["Q5", "w", "x", "y", "z", "A"],
    ]
    write_csv(tmp_path / "dev" / "high_school_us_history_dev.csv", dev)
    write_csv(tmp_path / "test" / "high_school_us_history_test.csv", [["Who wrote it? ", "p", "q", "r", "s", "C"]])
    task, _ = mmlu_task(tmp_path, "eval.mmlu_subjects=[high_school_us_history]")
    question = task.test["high_school_us_history"][0]
    expected = (
        "The following are multiple choice questions (with answers) about high school us history.\n\n"
        "What is 1 + 1?\nA. 1\nB. 2\nC. None\nD. 0.50\nAnswer: B\n\n"
        "Which is a colony?\nA. Virginia\nB. Texas\nC. Ohio\nD. Utah\nAnswer: A\n\n"
        "Line one\nline two?\nA. a\nb\nB. c\nC. d\nD. e\nAnswer: D\n\n"
        "Q4\nA. w\nB. x\nC. y\nD. z\nAnswer: C\n\n"
        "Q5\nA. w\nB. x\nC. y\nD. z\nAnswer: A\n\n"
        "Who wrote it?\nA. p\nB. q\nC. r\nD. s\nAnswer:"
    )
    assert harness_prompt(question, task.dev["high_school_us_history"][:5]) == expected
    assert harness_prompt(question, []) == expected[:expected.index("\n\n") + 2] + expected[expected.rindex("Who"):]


@pytest.mark.parametrize("method", ["lora", "qgoft"])
def test_cached_and_uncached_scoring_agree(mmlu_dir, method):
    """The tiny random LLaMA under an adapter: the shared few-shot prefix from the KV cache gives the log-likelihoods
    of the whole prompts."""
    torch.manual_seed(0)
    task, cfg = mmlu_task(mmlu_dir, f"method={method}")
    from qgoft_bench.methods import build_method

    bundle = build_model(cfg.model, "causal_lm", 0)
    model = build_method(cfg.method).apply(bundle.model, bundle.spec).eval()
    task.encode(bundle.processor, Batching(4, 3, 512))
    predict = predictor(model, torch.device("cpu"), "fp32")
    prompts = task.prompts[5]["abstract_algebra"]
    cached = score(predict, prompts, task.choice_ids, batch_size=3, cached=True)
    whole = score(predict, prompts, task.choice_ids, batch_size=1, cached=False)
    assert torch.allclose(cached, whole, atol=1e-5) and cached.std() > 0
    shared = min(len(p) for p in prompts) - 20
    assert all(p[:shared] == prompts[0][:shared] for p in prompts)  # there was a prefix to share


def test_stratified_subset_is_fixed_and_proportional():
    picked = stratified_subset({"b": 50, "a": 100, "c": 10}, 16, seed=0)
    assert {s: len(i) for s, i in picked.items()} == {"a": 10, "b": 5, "c": 1}
    assert picked == stratified_subset({"a": 100, "b": 50, "c": 10}, 16, seed=0)
    assert picked != stratified_subset({"a": 100, "b": 50, "c": 10}, 16, seed=1)
    assert all(i == sorted(i) for i in picked.values())


def test_eval_only_run_records_mmlu_without_training(mmlu_dir, tmp_path):
    cfg = compose_config(["task=mmlu", "model=tiny_llama", "method=qgoft", "eval_only=true",
                          f"data.mmlu_dir={mmlu_dir}", f"results_dir={tmp_path / 'runs'}", "eval.mmlu_shots=[1]",
                          "eval.mmlu_subset=5", "eval.mmlu_scoring=harness", "trainer.max_seq_len=64", FOUR])
    record = run_experiment(cfg)
    assert record["status"] == "completed" and "train_time_s" not in record and record["eval_time_s"] > 0
    (epoch,) = record["metrics"]["epochs"]
    assert epoch["epoch"] == 0 and "train_loss" not in epoch
    assert set(epoch["eval"]) == {f"mmlu_1shot_{p}" for p in ("stem", "social", "humanities", "other", "avg",
                                                                 "truncated")}
    assert all(0 <= v <= 1 for v in epoch["eval"].values() if not math.isnan(v))
    assert record["task"]["protocol"] == "harness, 4 of 57 subjects, stratified subset of 5 test questions (seed 0)"
    assert record["task"]["metric"] == "mmlu_1shot_avg" and record["params"]["adapter_params"] > 0
    files = list((tmp_path / "runs" / "mmlu").rglob("*.mmlu.json"))
    assert len(files) == 1 and sum(s["total"] for s in json.loads(files[0].read_text())["1"].values()) == 5


def test_mmlu_without_eval_only_and_bad_settings_are_one_line(mmlu_dir):
    from qgoft_bench.train.preflight import validate

    with pytest.raises(ConfigError, match="task mmlu is an evaluation only .*: add eval_only=true"):
        validate(compose_config(["task=mmlu", "model=tiny_llama", f"data.mmlu_dir={mmlu_dir}"]))
    with pytest.raises(ConfigError, match="data.mmlu_dir=.*nope is not a folder.*or unset it to use the hub"):
        validate(compose_config(["task=mmlu", "model=tiny_llama", "eval_only=true", f"data.mmlu_dir={mmlu_dir}/nope"]))
    for override, message in [("eval.mmlu_scoring=mc", "not one of harness, letter_logits"),
                              ("eval.mmlu_shots=[0,6]", "distinct shot counts in 0..5"),
                              ("eval.mmlu_subjects=[astrology]", "unknown \\['astrology'\\]"),
                              ("eval.mmlu_subset=0", "positive number")]:
        with pytest.raises(ConfigError, match=message):
            mmlu_task(mmlu_dir, override)
    for scoring, protocol in (("harness", "official"), ("letter_logits", "letter_logits")):  # all 57, every question
        cfg = compose_config(["task=mmlu", f"eval.mmlu_scoring={scoring}", f"data.mmlu_dir={mmlu_dir}"])
        assert build_task(cfg.task, cfg.data).protocol == protocol
    with pytest.raises(ConfigError, match="eval.mmlu_max_len=1 must be a number of tokens"):
        mmlu_task(mmlu_dir, "eval.mmlu_max_len=1")
    task, _ = mmlu_task(mmlu_dir, "eval.mmlu_scoring=letter_logits")
    tok = load_tokenizer(compose_config(["model=tiny_llama"]).model)
    with pytest.raises(ConfigError, match="chat template, and this tokenizer has none"):
        task.encode(tok, Batching(4, 4, 128))


def test_eval_only_at_its_default_keeps_earlier_run_ids():
    config = {"task": {"name": "glue/rte"}, "seed": 1}
    assert run_id({**config, "eval_only": False, "eval": {"mmlu_shots": [0]}}) == run_id(config)
    assert run_id({**config, "eval_only": True}) != run_id(config)


@pytest.mark.parametrize(("row", "message"), [
    (["q", "a", "b", "c", "d"], r"_test.csv:2: 5 fields, MMLU rows have 6"),
    (["q", "a", "b", "c", "d", "E"], r"_test.csv:2: answer 'E' is not one of A, B, C, D"),
    (["  ", "a", "b", "c", "d", "A"], r"_test.csv:2: the question is empty"),
])
def test_a_bad_row_names_file_and_line(mmlu_dir, row, message):
    write_csv(mmlu_dir / "test" / "virology_test.csv", [["fine?", "a", "b", "c", "d", "A"], row])
    with pytest.raises(DataError, match=message):
        mmlu_task(mmlu_dir)


@pytest.mark.slow
def test_smollm2_scores_real_mmlu_questions():
    """SmolLM2-135M-Instruct from its GGUF file on 8 real questions (stratified over 2 subjects): both scorings, 0
    and 5 shots, and cached against whole prompts on the real model."""
    folder = Path(os.environ.get("MMLU_DIR") or SHARED_MMLU)
    if not (folder / "test").is_dir():
        pytest.skip("no MMLU folder (set MMLU_DIR)")
    cfg = compose_config(["model=smollm2_135m", "method=lora", "task=mmlu"])
    bundle = build_model(cfg.model, "causal_lm", 0)
    assert sum(p.numel() for p in bundle.model.parameters()) == 134_515_008
    model = bundle.model.eval()
    predict = predictor(model, torch.device("cpu"), "fp32")
    for scoring in ("harness", "letter_logits"):
        task, _ = mmlu_task(folder, "eval.mmlu_subjects=[marketing,high_school_geography]", "eval.mmlu_subset=8",
                            f"eval.mmlu_scoring={scoring}")
        task.encode(bundle.processor, Batching(4, 4, 2048))
        metrics = task.evaluate(predict)
        assert all(0 <= metrics[f"mmlu_{k}shot_avg"] <= 1 for k in (0, 5))
        print(scoring, {k: round(v, 3) for k, v in metrics.items() if not math.isnan(v)})
    prompts = task.prompts[5]["marketing"]
    cached = score(predict, prompts, task.choice_ids, batch_size=4, cached=True)
    whole = score(predict, prompts, task.choice_ids, batch_size=1, cached=False)
    assert torch.allclose(cached, whole, atol=1e-3)


def test_without_a_folder_the_hub_cais_mmlu_is_read(mmlu_dir, monkeypatch):
    """No data.mmlu_dir: cais/mmlu's "all" config through ``datasets`` (monkeypatched with the rows of the generated
    folder, in file order, answers as indices): the same questions and exemplars as the folder, so the same 5-shot
    prompts; a malformed row names its index; an unreachable hub is one line."""
    import datasets

    folder, _ = mmlu_task(mmlu_dir)
    splits = {split: [{"question": q.question, "subject": q.subject, "choices": list(q.choices), "answer": q.answer}
                      for subject in SUBJECTS for q in getattr(folder, split)[subject]] for split in ("dev", "test")}
    monkeypatch.setattr(datasets, "load_dataset", lambda name, config, split: splits[split])
    cfg = compose_config(["task=mmlu", "model=tiny_llama", "eval_only=true", FOUR])
    hub = build_task(cfg.task, cfg.data)
    hub.read()
    assert hub.sources == ["hub:cais/mmlu/all/dev", "hub:cais/mmlu/all/test"]
    for split in ("dev", "test"):
        for subject in SUBJECTS:
            ours, theirs = getattr(folder, split)[subject], getattr(hub, split)[subject]
            assert [(q.question, q.choices, q.answer) for q in ours] == [(q.question, q.choices, q.answer)
                                                                         for q in theirs]
    subject = next(iter(SUBJECTS))
    assert harness_prompt(hub.test[subject][0], hub.dev[subject][:5]) == harness_prompt(folder.test[subject][0],
                                                                                        folder.dev[subject][:5])
    splits["test"][2]["answer"] = 7
    with pytest.raises(DataError, match=r"cais/mmlu test row 2: needs a question, 4 choices and an answer 0-3"):
        build_task(cfg.task, cfg.data).read()
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("down")))
    with pytest.raises(DataError, match=r"hub \(cais/mmlu\) is unreachable .*data.mmlu_dir=DIR"):
        build_task(cfg.task, cfg.data).read()
