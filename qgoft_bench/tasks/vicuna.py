"""The Vicuna questions (the 80 prompts of FastChat's Vicuna evaluation: the qGOFT paper's Vicuna-Eval, Table 2) and
the answer file a judge reads elsewhere; nothing here calls a judge.

Questions (``data.vicuna_dir``, env ``VICUNA_DIR``): the folder holding ``vicuna_bench/question.jsonl`` (FastChat's
``fastchat/llm_judge/data``), or that ``vicuna_bench`` folder itself. JSON Lines, one question per line:
``question_id`` (an integer), ``category`` (a string) and ``turns`` (a list of one non-empty string, the prompt), as
``gen_model_answer.py --bench-name vicuna_bench`` reads them. The March 2023 format (``eval_table/question.jsonl``:
``text`` instead of ``turns``) and multi-turn questions (MT-bench) are refused. A bad line is one ``DataError`` naming
file and line.

Answers (``answers_jsonl``): one JSON line per question, in the question file's order, in the model-answer format of
FastChat's ``fastchat/llm_judge/gen_model_answer.py`` (what its judge reads from
``data/vicuna_bench/model_answer/<model_id>.jsonl``): ``{"question_id", "answer_id", "model_id", "choices": [{"index":
0, "turns": [answer]}], "tstamp"}``. FastChat draws ``answer_id`` at random (a shortuuid); here it is derived from the
run id and the question id (``answer_id``), so the same run always writes the same ids.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from qgoft_bench.errors import DataError
from qgoft_bench.tasks.jsonl import read_jsonl

BENCH = "vicuna_bench"
QUESTIONS = "question.jsonl"
HINT = "point data.vicuna_dir (or VICUNA_DIR) at the folder holding vicuna_bench/question.jsonl"


@dataclass(frozen=True)
class VicunaQuestion:
    """One question: ``prompt`` is its one turn; ``where`` is ``FILE:LINE``."""

    question_id: int
    category: str
    prompt: str
    where: str


def question_file(folder: str | Path) -> Path | None:
    """``folder/vicuna_bench/question.jsonl``, else ``folder/question.jsonl``; None when neither is a file."""
    root = Path(str(folder)).expanduser()
    return next((path for path in (root / BENCH / QUESTIONS, root / QUESTIONS) if path.is_file()), None)


def read_questions(folder: str | Path) -> list[VicunaQuestion]:
    """Every question under ``folder`` (see the module docstring), in file order; ``DataError`` naming file and line
    for a missing file, a line that is not a JSON object, a missing or mistyped field, a turns list that is not one
    non-empty string, or a repeated question id."""
    path = question_file(folder)
    if path is None:
        raise DataError(f"no {BENCH}/{QUESTIONS} (nor {QUESTIONS}) in {folder}: {HINT}")
    questions: list[VicunaQuestion] = []
    first: dict[int, str] = {}
    for where, row in read_jsonl(path, HINT):
        if "turns" not in row and "text" in row:
            raise DataError(f"{where}: the March 2023 format (text, no turns); use FastChat's llm_judge file "
                            f"{BENCH}/{QUESTIONS}")
        qid, category, turns = row.get("question_id"), row.get("category"), row.get("turns")
        if isinstance(qid, bool) or not isinstance(qid, int) or not isinstance(category, str) \
                or not isinstance(turns, list):
            raise DataError(f"{where}: a question needs question_id (an integer), category (a string) and turns (a "
                            "list of one string); fix the line")
        if len(turns) != 1 or not isinstance(turns[0], str) or not turns[0].strip():
            raise DataError(f"{where}: turns holds {len(turns)} item(s); a Vicuna question is one non-empty string "
                            "(multi-turn questions are not answered); fix the line")
        if qid in first:
            raise DataError(f"{where}: question_id {qid} again (first at {first[qid]}); fix the line")
        first[qid] = where
        questions.append(VicunaQuestion(qid, category, turns[0], where))
    return questions


def answer_id(run_id: str, question_id: int) -> str:
    """The answer's id: 22 hex digits (a shortuuid's length) of sha256 of ``"<run id>/<question id>"``."""
    return hashlib.sha256(f"{run_id}/{question_id}".encode()).hexdigest()[:22]


def answers_jsonl(questions: list[VicunaQuestion], answers: list[str], model_id: str, run_id: str,
                  tstamp: float) -> str:
    """The answer file's text: FastChat's model-answer line for each question and its answer, in order."""
    lines = [json.dumps({"question_id": q.question_id, "answer_id": answer_id(run_id, q.question_id),
                         "model_id": model_id, "choices": [{"index": 0, "turns": [answer]}], "tstamp": tstamp},
                        ensure_ascii=False)
             for q, answer in zip(questions, answers, strict=True)]
    return "".join(line + "\n" for line in lines)
