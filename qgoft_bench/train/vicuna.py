"""The Vicuna export (the qGOFT paper's Vicuna-Eval, judged elsewhere): after the final evaluation, the model's greedy
answers to the Vicuna questions, written beside the record as ``<record stem>.vicuna.jsonl`` in FastChat's
model-answer format (``tasks.vicuna``).

Each question's turn is the instruction of a record without input, prompted as the task trains
(``InstructTask.encode_prompt``: ``task.template`` alpaca or chat). Decoding is greedy (``do_sample=False``), at most
``eval.vicuna_max_new_tokens`` new tokens, stopping at the token a response is trained to end with (the tokenizer's
EOS, else its SEP; under the chat template the tokenizer's EOS must be the template's end of turn, else every answer
runs to the limit, which the record's ``cut`` shows). Prompts run in batches of ``trainer.eval_batch_size`` of
similar length, padded on the left. An answer is the new tokens before the end token, decoded without special
tokens and stripped (as FastChat's ``gen_model_answer.py`` cuts its stop string and special tokens).
"""

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from qgoft_bench.records import write_atomic
from qgoft_bench.tasks import Batching
from qgoft_bench.tasks.instruct import InstructTask, end_token_id
from qgoft_bench.tasks.vicuna import VicunaQuestion, answers_jsonl
from qgoft_bench.train.loop import autocast


def greedy_generate(model: nn.Module, prompts: list[list[int]], pad_id: int, stop_id: int | None,
                    max_new_tokens: int, batch_size: int, device: torch.device, precision: str) -> list[list[int]]:
    """The new tokens of a greedy ``generate`` for each of ``prompts`` (token ids), before the first ``stop_id``: at
    most ``max_new_tokens``, which only an answer that never stopped reaches. Batches of up to ``batch_size``
    prompts of similar length, each (B, width) padded on the left with ``pad_id`` (attention mask 0 there). Leaves
    the model in eval mode."""
    model.eval()
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(len(prompts[i]) for i in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, i in enumerate(rows):
            input_ids[row, width - len(prompts[i]) :] = torch.tensor(prompts[i])
            mask[row, width - len(prompts[i]) :] = 1
        with torch.no_grad(), autocast(device, precision):
            output = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device), do_sample=False,
                                    max_new_tokens=max_new_tokens, pad_token_id=pad_id, eos_token_id=stop_id)
        for row, i in enumerate(rows):
            new = output[row, width:].tolist()
            answers[i] = new[: new.index(stop_id)] if stop_id in new else new  # after the stop: padding
    return answers


def export_answers(model: nn.Module, task: InstructTask, tokenizer: Any, questions: list[VicunaQuestion],
                   path: Path, model_id: str, run_id: str, max_new_tokens: int, batching: Batching,
                   device: torch.device, precision: str) -> dict[str, Any]:
    """Answer ``questions`` (see the module docstring) and write them to ``path`` atomically; returns the record's
    ``vicuna`` entry: ``{"questions", "file", "time_s", "time_per_question_s", "max_new_tokens", "cut"}`` (``cut``:
    answers that reached ``max_new_tokens`` without the end token)."""
    started = time.perf_counter()
    prompts = [task.encode_prompt(tokenizer, {"instruction": q.prompt, "input": ""}) for q in questions]
    stop_id = end_token_id(tokenizer)
    outputs = greedy_generate(model, prompts, task.pad_id, stop_id, max_new_tokens, batching.eval_batch_size, device,
                              precision)
    answers = [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in outputs]
    write_atomic(path, answers_jsonl(questions, answers, model_id, run_id, time.time()))
    elapsed = time.perf_counter() - started
    return {"questions": len(questions), "file": path.name, "time_s": elapsed,
            "time_per_question_s": elapsed / len(questions), "max_new_tokens": max_new_tokens,
            "cut": sum(len(ids) == max_new_tokens for ids in outputs)}
