"""MMLU, k-shot (docs/spec.md §5: 5-shot), from local files in the published csv layout.

Layout: ``DIR/dev/<subject>_dev.csv`` (the shots) and ``DIR/<split>/<subject>_<split>.csv``, no header, columns
question, A, B, C, D, answer. The prompt is the original benchmark's: "The following are multiple choice
questions (with answers) about <subject>.", the shots each followed by "Answer: X", then the question and
"Answer:"; shots are dropped from the end while the prompt is longer than ``max_tokens``. It is scored in text
form (``<s>[Text]prompt``) by the next-token log-probabilities of the four letters at the last position: one
forward per question (the letters are candidates sharing the prompt), packed like any request. LLaMA's
tokenizer has each letter as one piece (``▁A``), so the score is the letter's next-token log-probability; a
tokenizer that splits a letter gets its pieces' summed log-probability.
"""
from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from .aggregate import outcome
from .benchmarks import BenchmarkError
from .prompts import Item, PromptBuilder, Segment
from .scoring import LogitsFn, PackingConfig, score_requests

LETTERS = ("A", "B", "C", "D")


@dataclass(frozen=True)
class Question:
    subject: str
    question: str
    choices: tuple[str, str, str, str]
    answer: int


def _read_csv(path: Path, subject: str) -> list[Question]:
    out = []
    with open(path, newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.reader(f), start=1):
            if len(row) != 6:
                raise BenchmarkError(f"{path}:{n}: expected 6 columns (question, A, B, C, D, answer), got {len(row)}")
            if row[5].strip() not in LETTERS:
                raise BenchmarkError(f"{path}:{n}: answer must be one of A B C D, got {row[5]!r}")
            out.append(Question(subject, row[0], tuple(row[1:5]), LETTERS.index(row[5].strip())))  # type: ignore
    return out


def read_mmlu(root: str | Path, split: str = "test", subjects: list[str] | None = None):
    """``{subject: (dev questions, split questions)}``."""
    root = Path(root)
    files = sorted((root / split).glob(f"*_{split}.csv"))
    if not files:
        raise BenchmarkError(f"{root / split}: no *_{split}.csv files (published MMLU layout)")
    out = {}
    for f in files:
        subject = f.name[: -len(f"_{split}.csv")]
        if subjects and subject not in subjects:
            continue
        dev = root / "dev" / f"{subject}_dev.csv"
        if not dev.is_file():
            raise BenchmarkError(f"{dev}: the shots for {subject} are missing")
        out[subject] = (_read_csv(dev, subject), _read_csv(f, subject))
    if subjects and set(subjects) - set(out):
        raise BenchmarkError(f"{root / split}: no files for subjects {sorted(set(subjects) - set(out))}")
    return out


def _format(q: Question, with_answer: bool) -> str:
    s = q.question + "".join(f"\n{letter}. {c}" for letter, c in zip(LETTERS, q.choices)) + "\nAnswer:"
    return s + (f" {LETTERS[q.answer]}\n\n" if with_answer else "")


def prompt_text(subject: str, shots: list[Question], q: Question) -> str:
    head = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
    return head + "".join(_format(s, True) for s in shots) + _format(q, False)


def mmlu_items(data: dict, shots: int, builder: PromptBuilder, max_tokens: int) -> list[Item]:
    items = []
    for subject, (dev, questions) in data.items():
        for i, q in enumerate(questions):
            k = min(shots, len(dev))
            while True:
                text = prompt_text(subject, dev[:k], q)
                item = Item(f"{subject}/{i}", (Segment("text", text),),
                            tuple((Segment("text", letter),) for letter in LETTERS), q.answer, (),
                            {"subject": subject})
                if k == 0 or len(builder.request(item).context) + 1 <= max_tokens:
                    break
                k -= 1
            items.append(item)
    return items


def evaluate_mmlu(data: dict, shots: int, builder: PromptBuilder, logits_fn: LogitsFn,
                  packing: PackingConfig = PackingConfig(), max_tokens: int = 4096, device="cpu"):
    """Accuracy over all questions (the original benchmark's average), per subject and its macro average."""
    items = mmlu_items(data, shots, builder, max_tokens)
    scores = score_requests([builder.request(it) for it in items], logits_fn, packing, device)
    outs = [outcome([s.logprob for s in sc], it.correct) for it, sc in zip(items, scores)]
    by_subject: dict[str, list[float]] = defaultdict(list)
    for it, o in zip(items, outs):
        by_subject[str(it.meta["subject"])].append(o)
    subj = {k: {"n": len(v), "accuracy": sum(v) / len(v)} for k, v in sorted(by_subject.items())}
    result = {"items": len(items), "shots": shots, "accuracy": sum(outs) / len(outs),
              "macro_accuracy": sum(v["accuracy"] for v in subj.values()) / len(subj), "by_subject": subj}
    return result, items, scores
