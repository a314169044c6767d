"""Instruction tuning on Alpaca-format data: the prompts, a label mask that covers exactly the prompt tokens,
truncation counted, length-grouped batches from the seed alone, the response-token loss, and a run end to end."""

import json
import math
from pathlib import Path

import pytest
import torch

from qgoft_bench.config import compose_config
from qgoft_bench.errors import ConfigError, DataError
from qgoft_bench.models.hf import load_tokenizer
from qgoft_bench.tasks import Batching, build_task
from qgoft_bench.tasks.instruct import IGNORE, LengthGroupedBatches, alpaca_prompt, response_loss
from qgoft_bench.train.preflight import validate
from qgoft_bench.train.run import run_experiment

CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv("INSTRUCT_PATH", raising=False)


@pytest.fixture
def alpaca_file(tmp_path: Path) -> Path:
    words = ["river", "stone", "light", "cloud", "green", "quick"]
    records = [{"instruction": f"Say {words[i % 6]} {i} times.", "input": f"about {words[(i + 1) % 6]}" * (i % 2),
                "output": " ".join([words[(i + 2) % 6]] * (3 + i % 5))} for i in range(30)]
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def instruct_task(path: Path, *overrides: str):
    cfg = compose_config(["task=instruct/alpaca", "model=tiny_llama", f"data.instruct_path={path}", *overrides])
    task = build_task(cfg.task, cfg.data)
    task.read()
    return task


def tokenizer():
    tok = load_tokenizer(compose_config(["model=tiny_llama"]).model)
    tok.chat_template = CHAT_TEMPLATE
    return tok


def test_alpaca_prompts_with_and_without_input():
    assert alpaca_prompt({"instruction": "Add 2 and 3.", "input": "", "output": "5"}) == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request."
        "\n\n### Instruction:\nAdd 2 and 3.\n\n### Response:")
    assert alpaca_prompt({"instruction": "Translate.", "input": "Hallo", "output": "Hello"}) == (
        "Below is an instruction that describes a task, paired with an input that provides further context. Write a "
        "response that appropriately completes the request.\n\n### Instruction:\nTranslate.\n\n### Input:\nHallo\n\n"
        "### Response:")


@pytest.mark.parametrize("template", ["alpaca", "chat"])
def test_the_mask_covers_exactly_the_prompt_tokens(alpaca_file, template):
    task = instruct_task(alpaca_file, f"task.template={template}")
    tok = tokenizer()
    task.encode(tok, Batching(4, 4, 512))
    for record, (ids, labels) in zip(task.splits["train"], task.encoded["train"], strict=True):
        prompt, response = task.encode_pair(tok, record)
        assert ids == prompt + response and len(response) > 0
        assert labels == [IGNORE] * len(prompt) + response
    if template == "alpaca":  # the prompt is the template's text, the response the output and the end token
        record = task.splits["train"][0]
        prompt, response = task.encode_pair(tok, record)
        assert tok.decode(prompt) == tok.decode(tok(alpaca_prompt(record), add_special_tokens=False)["input_ids"])
        assert response[-1] == tok.sep_token_id and tok.decode(response[:-1]) == record["output"]
    assert task.encoding_report()["train"] == {"examples": 27, "truncated": 0, "dropped": 0}


def test_truncation_and_drops_are_counted(alpaca_file):
    task = instruct_task(alpaca_file)
    tok = tokenizer()
    prompts = [len(task.encode_pair(tok, r)[0]) for r in task.splits["train"]]
    wholes = [sum(map(len, task.encode_pair(tok, r))) for r in task.splits["train"]]
    limit = sorted(prompts)[len(prompts) // 2]  # half the prompts fill the window
    task.encode(tok, Batching(4, 4, limit))
    dropped = sum(p >= limit for p in prompts)
    truncated = sum(p < limit < w for p, w in zip(prompts, wholes, strict=True))
    assert task.encoding_report()["train"] == {"examples": len(prompts) - dropped, "truncated": truncated,
                                              "dropped": dropped}
    assert all(len(ids) <= limit for ids, _ in task.encoded["train"]) and dropped > 0


def test_length_grouped_batches_depend_on_the_seed_alone():
    lengths = [(i * 37) % 101 for i in range(230)]
    epochs = list(LengthGroupedBatches(lengths, 8, seed=3))
    again = list(LengthGroupedBatches(lengths, 8, seed=3))
    assert epochs == again and epochs != list(LengthGroupedBatches(lengths, 8, seed=4))
    assert sorted(i for batch in epochs for i in batch) == list(range(230)) and len(epochs) == 29
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in epochs) / len(epochs)
    assert spread < 10  # a random batch of 8 spans about 80
    sampler = LengthGroupedBatches(lengths, 8, seed=3)
    assert list(sampler) != list(sampler)  # a new order each epoch


def test_the_loss_is_the_mean_over_response_tokens():
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[IGNORE, IGNORE, 3, 4, IGNORE], [IGNORE, 1, 2, 6, 0]])
    terms = [(0, 1, 3), (0, 2, 4), (1, 0, 1), (1, 1, 2), (1, 2, 6), (1, 3, 0)]  # (row, position, next token)
    manual = sum(-torch.log_softmax(logits[r, t], -1)[y] for r, t, y in terms) / len(terms)
    assert torch.allclose(response_loss(logits, labels), manual)


def test_a_short_run_records_loss_perplexity_and_the_encoding(alpaca_file, tmp_path):
    cfg = compose_config(["task=instruct/alpaca", "model=tiny_llama", "method=qgoft", f"data.instruct_path={alpaca_file}",
                          f"results_dir={tmp_path / 'runs'}", "trainer.max_steps=3", "trainer.batch_size=4",
                          "trainer.max_seq_len=40", "trainer.lr=1e-2"])
    record = run_experiment(cfg)
    assert record["status"] == "completed" and record["task"]["metric"] == "loss"
    best = record["metrics"]["best"]
    assert math.isclose(best["perplexity"], math.exp(best["loss"]), rel_tol=1e-9)
    assert record["data"]["encoding"]["max_seq_len"] == 40
    assert record["data"]["encoding"]["eval"]["examples"] + record["data"]["encoding"]["eval"]["dropped"] == 3
    assert record["metrics"]["epochs"][-1]["train_loss"] > 0


def test_bad_data_and_settings_are_one_line(alpaca_file, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": "a", "input": "", "output": "b"}, {"instruction": "a", "output": 1}]))
    with pytest.raises(DataError, match=r"bad.json: record \[1\] needs the string fields"):
        instruct_task(bad)
    bad.write_text('[\n  {"instruction": "a", "input": "", "output": "b"},\n  {"instruction": "a",}\n]')
    with pytest.raises(DataError, match=r"bad.json:3: not valid JSON \(Expecting property name enclosed in double "
                                        r"quotes, column 23\)"):
        instruct_task(bad)
    bad.write_bytes(b'[{"instruction": "caf\xe9"}]')  # Latin-1
    with pytest.raises(DataError, match=r"bad.json: not UTF-8 text \(invalid continuation byte at byte offset 21\)"):
        instruct_task(bad)
    with pytest.raises(ConfigError, match="is not a file"):
        validate(compose_config(["task=instruct/alpaca", "model=tiny_llama", f"data.instruct_path={tmp_path}"]))
    with pytest.raises(ConfigError, match="task.template='plain' is not one of alpaca, chat"):
        instruct_task(alpaca_file, "task.template=plain")
    task = instruct_task(alpaca_file, "task.template=chat")
    with pytest.raises(ConfigError, match="needs a tokenizer with a chat template"):
        task.encode(load_tokenizer(compose_config(["model=tiny_llama"]).model), Batching(4, 4, 64))


def test_alpaca_mmlu_trains_then_scores_mmlu(alpaca_file, tmp_path):
    """The paper's Table 2 protocol in small: a few updates, then the held-out loss and MMLU from one evaluation;
    MMLU's prompts keep their own window (eval.mmlu_max_len) while training uses a short one."""
    mmlu = tmp_path / "mmlu"
    for split, n in (("dev", 5), ("test", 6)):
        (mmlu / split).mkdir(parents=True)
        rows = [f'"{split} question {i} about viruses?",a,b,c,d,{"ABCD"[i % 4]}' for i in range(n)]
        (mmlu / split / f"virology_{split}.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    overrides = ["task=instruct/alpaca_mmlu", "model=tiny_llama", "method=lora", f"data.instruct_path={alpaca_file}"]
    with pytest.raises(ConfigError, match="also scores MMLU: data.mmlu_dir=.*nope is not a folder"):
        validate(compose_config([*overrides, f"data.mmlu_dir={tmp_path / 'nope'}"]))
    cfg = compose_config([*overrides, f"data.mmlu_dir={mmlu}", f"results_dir={tmp_path / 'runs'}",
                          "trainer.max_steps=2", "trainer.batch_size=4", "trainer.max_seq_len=40",
                          "eval.mmlu_subjects=[virology]", "eval.mmlu_shots=[0,2]", "eval.mmlu_max_len=256"])
    record = run_experiment(cfg)
    assert record["status"] == "completed" and record["task"]["metric"] == "mmlu_2shot_avg"
    assert record["task"]["protocol"] == "harness, 1 of 57 subjects"
    best = record["metrics"]["best"]
    assert best["loss"] > 0 and best["mmlu_2shot_truncated"] == 0 and 0 <= best["mmlu_2shot_other"] <= 1
    assert math.isnan(best["mmlu_0shot_stem"] if best["mmlu_0shot_stem"] is not None else math.nan)
    assert len(list((tmp_path / "runs").rglob("*.mmlu.json"))) == 1


def test_without_a_file_the_hub_alpaca_cleaned_is_read(monkeypatch, caplog):
    """No data.instruct_path: the paper's yahma/alpaca-cleaned through ``datasets`` (monkeypatched: tests never
    reach the hub); rows with an empty output are left out with a warning; an unreachable hub is one line."""
    import datasets

    rows = [{"instruction": f"Say {i}.", "input": "", "output": "ok" if i != 3 else ""} for i in range(20)]
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or rows)
    cfg = compose_config(["task=instruct/alpaca", "model=tiny_llama"])
    validate(cfg)  # no file needed
    task = build_task(cfg.task, cfg.data)
    task.read()
    assert calls == [(("yahma/alpaca-cleaned",), {"split": "train"})]
    assert task.sources == ["hub:yahma/alpaca-cleaned/train"]
    assert len(task.splits["train"]) + len(task.splits["eval"]) == 19 and "1 of 20 rows" in caplog.text
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("down")))
    with pytest.raises(DataError, match=r"hub \(yahma/alpaca-cleaned\) is unreachable .*data.instruct_path=FILE"):
        build_task(cfg.task, cfg.data).read()
