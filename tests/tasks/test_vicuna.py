"""The Vicuna export: FastChat's answer format in the question file's order, answers equal to a direct greedy
``generate`` on the task's own prompt (alpaca and chat templates), the end token and special tokens, bad question
files as one line naming file and line, settings checked before any job, run ids untouched."""

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import set_seed

from qgoft_bench.config import compose_config
from qgoft_bench.errors import ConfigError, DataError
from qgoft_bench.models.hf import load_tokenizer
from qgoft_bench.records import read_record, record_path_for, run_id
from qgoft_bench.tasks import Batching, build_task
from qgoft_bench.tasks.vicuna import answer_id, read_questions
from qgoft_bench.train.preflight import validate
from qgoft_bench.train.run import build, run_experiment
from qgoft_bench.train.vicuna import export_answers

SHARED_VICUNA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "vicuna"
# ids out of order and of different prompt lengths: the file keeps this order, batches mix lengths
QUESTIONS = [(3, "generic", "How can I sleep better?"),
             (1, "knowledge", "What are the main differences between rivers and lakes, and why do they matter?"),
             (12, "writing", "Write a haiku about stone."),
             (7, "fermi", "How many grains of sand fit in a cup? Explain step by step.")]
ALPACA = ("Below is an instruction that describes a task. Write a response that appropriately completes the request."
          "\n\n### Instruction:\n{}\n\n### Response:")
CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")
NEW_TOKENS = 8


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv("INSTRUCT_PATH", raising=False)
    monkeypatch.delenv("VICUNA_DIR", raising=False)


def write_questions(folder: Path, lines: list[str]) -> Path:
    path = folder / "vicuna_bench" / "question.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return folder


@pytest.fixture
def vicuna_dir(tmp_path: Path) -> Path:
    return write_questions(tmp_path / "vicuna", [json.dumps({"question_id": i, "category": c, "turns": [t]})
                                                 for i, c, t in QUESTIONS])


@pytest.fixture
def alpaca_file(tmp_path: Path) -> Path:
    records = [{"instruction": f"Repeat {i}.", "input": "", "output": f"{i} {i} {i}"} for i in range(12)]
    path = tmp_path / "alpaca.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def overrides(alpaca_file: Path, vicuna_dir: Path, tmp_path: Path, *more: str) -> list[str]:
    return ["task=instruct/alpaca", "model=tiny_llama", f"data.instruct_path={alpaca_file}",
            f"data.vicuna_dir={vicuna_dir}", f"results_dir={tmp_path / 'runs'}", "eval.vicuna_answers=true",
            f"eval.vicuna_max_new_tokens={NEW_TOKENS}", "trainer.eval_batch_size=3", "trainer.max_seq_len=64", *more]


def greedy(model, tok, prompt: list[int], stop: int) -> str:
    """A direct greedy ``generate`` of one unpadded prompt: the new tokens before ``stop``, decoded without special
    tokens."""
    output = model.generate(input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt),
                                                                                     dtype=torch.long),
                            do_sample=False, max_new_tokens=NEW_TOKENS, eos_token_id=stop, pad_token_id=0)
    new = output[0, len(prompt):].tolist()
    return tok.decode(new[: new.index(stop)] if stop in new else new, skip_special_tokens=True).strip()


def read_answers(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_the_base_row_writes_fastchat_answers_equal_to_greedy_generate(alpaca_file, vicuna_dir, tmp_path):
    """eval_only (the paper's base row), the alpaca template: one FastChat answer line per question in file order,
    each answer the model's own greedy continuation of the Alpaca prompt without input."""
    cfg = compose_config(overrides(alpaca_file, vicuna_dir, tmp_path, "method=full", "eval_only=true"))
    record = run_experiment(cfg)
    path = record_path_for(OmegaConf.to_container(cfg, resolve=True)).with_suffix(".vicuna.jsonl")
    assert record["status"] == "completed" and record["vicuna"]["file"] == path.name
    assert record["vicuna"]["questions"] == 4 and record["vicuna"]["max_new_tokens"] == NEW_TOKENS
    assert record["vicuna"]["time_s"] > 0 and record["vicuna"]["cut"] == 4  # a random model never says [SEP]
    lines = read_answers(path)
    assert [line["question_id"] for line in lines] == [3, 1, 12, 7]
    for line, (qid, _, _) in zip(lines, QUESTIONS, strict=True):
        assert set(line) == {"question_id", "answer_id", "model_id", "choices", "tstamp"}
        assert line["answer_id"] == answer_id(record["run_id"], qid) and line["model_id"] == "tiny_llama-full"
        assert len(line["choices"]) == 1 and set(line["choices"][0]) == {"index", "turns"}
        assert line["choices"][0]["index"] == 0 and isinstance(line["tstamp"], float)
    assert len({line["answer_id"] for line in lines}) == 4

    set_seed(cfg.seed)  # the run's random weights, built again
    model, _, bundle = build(cfg)
    model.eval()
    tok = bundle.processor
    for line, (_, _, text) in zip(lines, QUESTIONS, strict=True):
        prompt = tok(ALPACA.format(text), add_special_tokens=False)["input_ids"]
        expected = greedy(model, tok, prompt, tok.sep_token_id)
        assert expected and line["choices"][0]["turns"] == [expected]


def test_chat_template_answers_stop_at_the_end_token(vicuna_dir, alpaca_file, tmp_path):
    """The chat template with its generation prompt; an answer stops at the tokenizer's end token, which is not in
    the text; batches of two mix prompt lengths (left padding)."""
    cfg = compose_config(overrides(alpaca_file, vicuna_dir, tmp_path, "method=full", "task.template=chat"))
    task = build_task(cfg.task, cfg.data)
    task.read()
    questions = read_questions(vicuna_dir)
    set_seed(0)
    model = build(cfg)[0]
    model.eval()
    tok = load_tokenizer(cfg.model)
    tok.chat_template = CHAT_TEMPLATE

    def chat_prompts() -> list[list[int]]:
        return [tok(tok.apply_chat_template([{"role": "user", "content": q.prompt}], tokenize=False,
                                            add_generation_prompt=True), add_special_tokens=False)["input_ids"]
                for q in questions]

    prompts = chat_prompts()
    # the end token: the second token the model would say to the first question, made the tokenizer's EOS
    first = model.generate(input_ids=torch.tensor([prompts[0]]), do_sample=False, max_new_tokens=2, pad_token_id=0)
    tok.eos_token = tok.convert_ids_to_tokens(int(first[0, -1]))
    assert chat_prompts() == prompts and tok.eos_token_id == int(first[0, -1])
    task.encode(tok, Batching(2, 2, 64))
    path = tmp_path / "answers.vicuna.jsonl"
    summary = export_answers(model, task, tok, questions, path, "tiny-chat", "abc", NEW_TOKENS, Batching(2, 2, 64),
                             torch.device("cpu"), "fp32")
    answers = [line["choices"][0]["turns"][0] for line in read_answers(path)]
    expected = [greedy(model, tok, prompt, tok.eos_token_id) for prompt in prompts]
    assert answers == expected and sum(map(bool, expected)) >= 2
    # the first answer stopped at the end token, which the text leaves out (it is no special token of this vocabulary)
    assert answers[0] == tok.decode(first[0, len(prompts[0]) : -1], skip_special_tokens=True).strip()
    assert summary["cut"] < 4


@pytest.mark.parametrize(("line", "message"), [
    ('{"question_id": 2, "category": "generic", "turns": ["Why?"]', "not a JSON object"),
    ('{"question_id": 2, "category": "generic"}', "needs question_id .*, category .* and turns"),
    ('{"question_id": "2", "category": "generic", "turns": ["Why?"]}', "needs question_id \\(an integer\\)"),
    ('{"question_id": 2, "category": "generic", "turns": []}', "turns holds 0 item"),
    ('{"question_id": 2, "category": "generic", "turns": ["Why?", "And?"]}', "turns holds 2 item"),
    ('{"question_id": 2, "category": "generic", "turns": [" "]}', "one non-empty string"),
    ('{"question_id": 1, "category": "generic", "turns": ["Again?"]}', "question_id 1 again \\(first at .*:1\\)"),
    ('{"question_id": 2, "text": "Why?", "category": "generic"}', "the March 2023 format"),
])
def test_a_bad_question_line_names_file_and_line(tmp_path, line, message):
    folder = write_questions(tmp_path, ['{"question_id": 1, "category": "generic", "turns": ["How?"]}', line])
    with pytest.raises(DataError, match=f"vicuna_bench/question.jsonl:2: .*{message}.*") as err:
        read_questions(folder)
    assert "\n" not in str(err.value)


def test_bad_questions_fail_before_the_model_is_built(alpaca_file, tmp_path):
    folder = write_questions(tmp_path / "bad", ['{"question_id": 1, "category": "generic", "turns": []}'])
    cfg = compose_config(overrides(alpaca_file, folder, tmp_path, "method=lora", "trainer.max_steps=1"))
    with pytest.raises(DataError, match="question.jsonl:1: turns holds 0 item"):
        run_experiment(cfg)
    record = read_record(record_path_for(OmegaConf.to_container(cfg, resolve=True)))
    assert record["status"] == "failed" and "batching" not in record and "question.jsonl:1" in record["error"]


def test_settings_are_checked_before_any_job(alpaca_file, vicuna_dir, tmp_path):
    task = ["task=instruct/alpaca", "model=tiny_llama", f"data.instruct_path={alpaca_file}"]
    on = [*task, "eval.vicuna_answers=true"]
    validate(compose_config([*on, f"data.vicuna_dir={vicuna_dir}"]))
    validate(compose_config([*on, f"data.vicuna_dir={vicuna_dir / 'vicuna_bench'}"]))  # the file's own folder
    with pytest.raises(ConfigError, match=r"set data.vicuna_dir=DIR .* \(now None\)"):
        validate(compose_config(on))
    with pytest.raises(ConfigError, match="holding vicuna_bench/question.jsonl"):
        validate(compose_config([*on, f"data.vicuna_dir={tmp_path}"]))
    with pytest.raises(ConfigError, match="eval.vicuna_max_new_tokens=0 must be a positive"):
        validate(compose_config([*on, f"data.vicuna_dir={vicuna_dir}", "eval.vicuna_max_new_tokens=0"]))
    with pytest.raises(ConfigError, match="eval.vicuna_answers='yes' must be true or false"):
        validate(compose_config([*task, f"data.vicuna_dir={vicuna_dir}", "eval.vicuna_answers=yes"]))
    with pytest.raises(ConfigError, match="task mmlu has none: use task=instruct/alpaca"):
        validate(compose_config(["task=mmlu", "model=tiny_llama", "eval_only=true", f"data.mmlu_dir={tmp_path}",
                                 f"data.vicuna_dir={vicuna_dir}", "eval.vicuna_answers=true"]))


def test_the_export_leaves_run_ids_alone(alpaca_file, vicuna_dir, tmp_path):
    plain = ["task=instruct/alpaca", "model=tiny_llama", f"data.instruct_path={alpaca_file}"]
    with_answers = [*plain, f"data.vicuna_dir={vicuna_dir}", "eval.vicuna_answers=true",
                    "eval.vicuna_max_new_tokens=64"]
    ids = [run_id(OmegaConf.to_container(compose_config(o), resolve=True)) for o in (plain, with_answers)]
    assert ids[0] == ids[1]


def test_a_trained_run_exports_answers(alpaca_file, vicuna_dir, tmp_path):
    """After training (LoRA: a PEFT model generates): the file beside the record, one line per question."""
    cfg = compose_config(overrides(alpaca_file, vicuna_dir, tmp_path, "method=lora", "trainer.max_steps=1",
                                   "trainer.batch_size=4"))
    record = run_experiment(cfg)
    path = record_path_for(OmegaConf.to_container(cfg, resolve=True)).with_suffix(".vicuna.jsonl")
    assert record["status"] == "completed" and "train_time_s" in record
    assert [line["question_id"] for line in read_answers(path)] == [3, 1, 12, 7]
    assert record["vicuna"]["time_per_question_s"] == pytest.approx(record["vicuna"]["time_s"] / 4)


@pytest.mark.skipif(not SHARED_VICUNA.is_dir(), reason="no shared Vicuna questions")
def test_the_shared_question_file_reads():
    questions = read_questions(SHARED_VICUNA)
    assert [q.question_id for q in questions] == list(range(1, 81))
    assert questions[0].prompt == "How can I improve my time management skills?"
    assert sum(q.category == "coding" for q in questions) == 7
