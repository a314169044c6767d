"""A UTF-8 byte-order mark (what Windows editors and Excel write) is read as no mark by every data reader, as the
GLUE reader does (test_glue.py): the same records, and no mark inside the first field or a JSON error at line 1."""

import json
from pathlib import Path

import pytest

from qgoft_bench.tasks.instruct import read_alpaca
from qgoft_bench.tasks.jsonl import read_jsonl
from qgoft_bench.tasks.mmlu import read_subject_csv
from qgoft_bench.tasks.squad import read_squad_file

BOM = b"\xef\xbb\xbf"
ALPACA = json.dumps([{"instruction": "Name a colour.", "input": "", "output": "Red."}])
JSONL = '{"premise": "p", "hypothesis": "h", "label": "entailment"}\n{"premise": "q", "hypothesis": "i", "label": 0}\n'
MMLU = "What is 1 + 1?,1,2,3,4,B\nWhat is 2 + 2?,4,5,6,7,A\n"
SQUAD = json.dumps({"version": "1.1", "data": [{"title": "T", "paragraphs": [{
    "context": "The box is red.", "qas": [{"id": "q1", "question": "What colour is the box?",
                                           "answers": [{"text": "red", "answer_start": 11}]}]}]}]})

READERS = {
    "alpaca": (ALPACA, read_alpaca),
    "jsonl": (JSONL, lambda path: [record for _, record in read_jsonl(path)]),
    "mmlu": (MMLU, lambda path: [(q.question, q.choices, q.answer) for q in read_subject_csv(path, "math")]),
    "squad": (SQUAD, lambda path: [(q.context, q.question, q.answers) for q in read_squad_file(path, "")]),
}


@pytest.mark.parametrize("kind", READERS)
def test_a_byte_order_mark_reads_as_none(kind: str, tmp_path: Path):
    text, read = READERS[kind]
    plain, marked = tmp_path / "plain", tmp_path / "marked"
    plain.write_bytes(text.encode("utf-8"))
    marked.write_bytes(BOM + text.encode("utf-8"))
    records = read(marked)
    assert records == read(plain) and len(records) >= 1
    assert "\ufeff" not in repr(records)
