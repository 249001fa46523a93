"""Tasks (``swuggy:T``, ``tsc:T2S``, …): which benchmark files, which modality version, scored how.

A task name is ``TASK:MODALITY``. ``swuggy``/``sblimp`` take ``S`` or ``T``; ``tsc`` (topic-StoryCloze) and
``sc`` (spoken StoryCloze) take ``S``, ``T``, ``T2S``, ``S2T``. ``S`` of a StoryCloze task reads the slamkit pairs
(``tsc``/``ssc`` benchmark: whole stories, all of it scored), the others the cross-modal release (``cm-tsc`` /
``cm-ssc``: context given, the ending scored); ``story_speech="context"`` scores ``S`` on the cross-modal files
instead.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping, Sequence

from ..speech.manifest import UnitsRecord
from .benchmarks import Benchmark, read_benchmark
from .prompts import Item, PromptBuilder
from .scoring import CandidateScore, LogitsFn, PackingConfig, Request, score_requests

#: Task → modality → the benchmark whose files it reads.
TASKS: dict[str, dict[str, str]] = {
    "swuggy": {"T": "swuggy", "S": "swuggy"},
    "sblimp": {"T": "sblimp", "S": "sblimp"},
    "tsc": {"T": "cm-tsc", "S": "tsc", "T2S": "cm-tsc", "S2T": "cm-tsc"},
    "sc": {"T": "cm-ssc", "S": "ssc", "T2S": "cm-ssc", "S2T": "cm-ssc"},
}
UNITS_META = "eval-units.json"


@dataclass(frozen=True)
class Task:
    task: str
    modality: str
    bench: str

    @property
    def name(self) -> str:
        return f"{self.task}:{self.modality}"

    @property
    def needs_units(self) -> bool:
        return "S" in self.modality


def parse_tasks(spec: str | Sequence[str], story_speech: Literal["whole", "context"] = "whole") -> list[Task]:
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    out = []
    for raw in names:
        name = raw.strip()
        task, _, mod = name.partition(":")
        if task not in TASKS or mod not in TASKS[task]:
            known = ", ".join(f"{t}:{m}" for t, ms in TASKS.items() for m in ms)
            raise ValueError(f"unknown task {name!r}: expected one of {known}")
        bench = TASKS[task][mod]
        if mod == "S" and task in ("tsc", "sc") and story_speech == "context":
            bench = TASKS[task]["T"]
        out.append(Task(task, mod, bench))
    return out


@dataclass
class BenchData:
    """A benchmark's items and, when its folder is a ``spirit-eval units`` output, its units and fingerprint."""

    bench: Benchmark
    units: dict[str, UnitsRecord] | None = None
    units_dir: Path | None = None
    fingerprint: str | None = None
    flavor: str | None = None


def load_units_dir(path: str | Path) -> tuple[dict, dict[str, UnitsRecord]]:
    """The metadata and utterance records of a ``spirit-eval units`` output folder."""
    path = Path(path)
    meta = json.loads((path / UNITS_META).read_text())
    units: dict[str, UnitsRecord] = {}
    files = sorted(path.glob("units-*.jsonl"))
    if not files:
        raise FileNotFoundError(f"{path}: no units-*.jsonl (spirit-eval units did not finish)")
    for f in files:
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                rec = UnitsRecord.from_json(line, f"{f}:{n}")
                units[rec.id] = rec
    return meta, units


def load_bench_data(name: str, path: str | Path, split: str = "dev", fingerprint: str | None = None) -> BenchData:
    """``path`` is either the benchmark's released folder (text versions only) or a units output folder."""
    path = Path(path)
    if (path / UNITS_META).is_file():
        meta, units = load_units_dir(path)
        if meta["bench"] != name:
            raise ValueError(f"{path}: units of benchmark {meta['bench']!r}, given for {name!r}")
        if fingerprint is not None and meta["fingerprint"] != fingerprint:
            raise ValueError(f"{path}: speech tokenizer fingerprint {meta['fingerprint']} differs from the "
                             f"expected {fingerprint}: these units come from another HuBERT/quantizer setup")
        bench = read_benchmark(name, meta["root"], meta.get("split") or split)
        missing = [u for u in bench.audio if u not in units]
        if missing:
            raise ValueError(f"{path}: {len(missing)} of the benchmark's utterances have no units (e.g. "
                             f"{missing[0]!r}); see its rejects-*.jsonl")
        return BenchData(bench, units, path, meta["fingerprint"], meta["flavor"])
    return BenchData(read_benchmark(name, path, split))


@dataclass
class TaskResult:
    task: Task
    items: list[Item]
    scores: list[list[CandidateScore]]


def score_items(items: Sequence[Item], builder: PromptBuilder, logits_fn: LogitsFn,
                packing: PackingConfig = PackingConfig(), device="cpu") -> list[list[CandidateScore]]:
    """Scores of each item's candidates; identical prompts (a text version's voices) are computed once."""
    requests = [builder.request(it) for it in items]
    unique: dict[Request, int] = {}
    for r in requests:
        unique.setdefault(r, len(unique))
    scored = score_requests(list(unique), logits_fn, packing, device)
    return [scored[unique[r]] for r in requests]


def check_vocab(model_rows: int, vocab, flavor: str, model: str, tokenizer: str) -> None:
    """A model whose embedding does not fit the tokenizer would score garbage (or index out of range)."""
    from ..tokenizer.vocab import SpiritVocab

    need = SpiritVocab(vocab.base_size, flavor).size
    most = SpiritVocab(vocab.base_size, "expressive").export_size
    if not need <= model_rows <= most:
        raise ValueError(f"model {model} has {model_rows} output rows but tokenizer {tokenizer} (base "
                         f"{vocab.base_size} pieces) needs {need} for {flavor} units and exports at most {most}: "
                         "the model and tokenizer do not belong together")


def run_task(task: Task, data: BenchData, builder_for, logits_fn: LogitsFn, packing: PackingConfig,
             device="cpu") -> TaskResult:
    if task.needs_units and data.units is None:
        raise ValueError(f"task {task.name} needs speech units: give the output folder of "
                         f"'spirit-eval units --bench {task.bench}' for {task.bench}")
    if task.modality not in data.bench.items:
        raise ValueError(f"benchmark {task.bench} at {data.bench.root} has no {task.modality} version")
    items = data.bench.items[task.modality]
    builder: PromptBuilder = builder_for(data)
    return TaskResult(task, items, score_items(items, builder, logits_fn, packing, device))


def bench_paths(tasks: Sequence[Task], data: Mapping[str, str | Path]) -> dict[str, Path]:
    """The folder of every benchmark the tasks read (``data`` maps benchmark names to folders)."""
    out = {}
    for t in tasks:
        if t.bench not in data:
            raise ValueError(f"task {t.name} reads benchmark {t.bench!r}: give --data {t.bench}=DIR")
        out[t.bench] = Path(data[t.bench])
    return out
