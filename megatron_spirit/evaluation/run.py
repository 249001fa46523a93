"""One evaluation run: a model, tasks, benchmark folders → results.json, per-item JSONL, tables, ZeroSpeech
submission files. The model is reached only through a logits function, so a Megatron one can replace HF's."""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal, Mapping

from ..tokenizer.tokenizer import SpiritTokenizer
from ..utils.atomic import write_text
from .aggregate import METRICS, accuracy, item_outcomes, write_zerospeech_submission
from .prompts import PromptBuilder, PromptConfig
from .report import write_tables
from .scoring import LogitsFn, PackingConfig
from .tasks import BenchData, TaskResult, bench_paths, check_vocab, load_bench_data, parse_tasks, run_task


@dataclass(frozen=True)
class EvalConfig:
    prompt: PromptConfig = field(default_factory=PromptConfig)
    packing: PackingConfig = field(default_factory=PackingConfig)
    #: StoryCloze ``S``: ``whole`` stories (slamkit pairs, the whole story scored) or ``context`` (cross-modal
    #: files: the spoken context given, the spoken ending scored).
    story_speech: Literal["whole", "context"] = "whole"
    #: ZeroSpeech split read from the released folders.
    split: str = "dev"


def evaluate(tasks: str, data: Mapping[str, str | Path], logits_fn: LogitsFn, vocab_rows: int,
             tokenizer: SpiritTokenizer, out_dir: str | Path | None, cfg: EvalConfig = EvalConfig(),
             model: str = "", label: str | None = None, fingerprint: str | None = None, device="cpu",
             log=print) -> dict:
    """Score every task and write the outputs into ``out_dir`` (None: write nothing, as on all but one rank of a
    distributed run); returns the results dictionary."""
    t0 = time.perf_counter()
    parsed = parse_tasks(tasks, cfg.story_speech)
    folders = bench_paths(parsed, data)
    benches: dict[str, BenchData] = {b: load_bench_data(b, p, cfg.split, fingerprint) for b, p in folders.items()}
    flavors = {bd.flavor for t in parsed for bd in [benches[t.bench]] if t.needs_units and bd.flavor}
    if len(flavors) > 1:
        raise ValueError(f"the tasks' units mix flavors {sorted(flavors)}: extract them all with one setup")
    flavor = cfg.prompt.flavor if cfg.prompt.flavor else (flavors.pop() if flavors else tokenizer.vocab.flavor)
    if flavors and flavor not in flavors:
        raise ValueError(f"prompt flavor {flavor!r} but the units are {sorted(flavors)}")
    check_vocab(vocab_rows, tokenizer.vocab, flavor, model, str(tokenizer.path))
    prompt = replace(cfg.prompt, flavor=flavor)

    def builder_for(bd: BenchData) -> PromptBuilder:
        return PromptBuilder(tokenizer, prompt, bd.units, str(bd.units_dir or bd.bench.root))

    out = Path(out_dir) if out_dir is not None else None
    results = {"model": model, "label": label or Path(model).name, "tokenizer": str(tokenizer.path), "tasks": {},
               "config": {"prompt": asdict(prompt), "packing": asdict(cfg.packing), "story_speech": cfg.story_speech,
                          "split": cfg.split, "rule": "log-softmax over "
                          + ("the full vocabulary" if prompt.softmax == "full" else "the candidate's modality")},
               "fingerprints": {b: bd.fingerprint for b, bd in benches.items() if bd.fingerprint}}
    for task in parsed:
        t1 = time.perf_counter()
        res = run_task(task, benches[task.bench], builder_for, logits_fn, cfg.packing, device)
        bd = benches[task.bench]
        zs = bd.bench.zerospeech
        entry = {"bench": task.bench, "folder": str(bd.units_dir or bd.bench.root), "items": len(res.items),
                 "seconds": round(time.perf_counter() - t1, 3)}
        if zs:
            entry["split"] = bd.bench.split
        for metric in METRICS:
            entry[metric] = accuracy(res.items, res.scores, metric, zs)
            if zs and out is not None:
                write_zerospeech_submission(out / "zerospeech" / task.modality / metric, zs, bd.bench.split,
                                            res.items, res.scores, metric)
        if out is not None:
            _write_items(out / "items" / f"{task.task}-{task.modality}.jsonl", res)
        results["tasks"][task.name] = entry
        log(f"{task.name}: {len(res.items)} items, accuracy {100 * entry['normalised']['accuracy']:.1f} "
            f"(normalised) / {100 * entry['summed']['accuracy']:.1f} (summed) in {entry['seconds']:.1f} s")
    results["seconds"] = round(time.perf_counter() - t0, 3)
    if out is not None:
        write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
        write_tables([results], out)
    return results


def _write_items(path: Path, res: TaskResult) -> None:
    outs = {m: item_outcomes(res.items, res.scores, m) for m in METRICS}
    lines = []
    for i, (it, sc) in enumerate(zip(res.items, res.scores)):
        rec = {"id": it.id, "correct": it.correct, "names": list(it.names),
               "candidates": [{"logprob": s.logprob, "tokens": s.tokens} for s in sc],
               **{f"outcome_{m}": outs[m][i] for m in METRICS}}
        if it.meta:
            rec["meta"] = dict(it.meta)
        lines.append(json.dumps(rec, ensure_ascii=False))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, "\n".join(lines) + "\n")


def evaluate_mmlu_run(data_dir: str | Path, logits_fn: LogitsFn, vocab_rows: int, tokenizer: SpiritTokenizer,
                      out_dir: str | Path, shots: int = 5, split: str = "test", subjects: list[str] | None = None,
                      packing: PackingConfig = PackingConfig(), max_tokens: int = 4096, model: str = "",
                      label: str | None = None, device="cpu", log=print) -> dict:
    """k-shot MMLU → results.json (task ``mmlu``), items/mmlu.jsonl and the tables, like :func:`evaluate`."""
    from .mmlu import evaluate_mmlu, read_mmlu
    from .tasks import Task

    t0 = time.perf_counter()
    check_vocab(vocab_rows, tokenizer.vocab, "base", model, str(tokenizer.path))
    data = read_mmlu(data_dir, split, subjects)
    builder = PromptBuilder(tokenizer, PromptConfig(flavor="base"))
    result, items, scores = evaluate_mmlu(data, shots, builder, logits_fn, packing, max_tokens, device)
    result |= {"folder": str(data_dir), "split": split, "seconds": round(time.perf_counter() - t0, 3)}
    out = Path(out_dir)
    results = {"model": model, "label": label or Path(model).name, "tokenizer": str(tokenizer.path),
               "config": {"packing": asdict(packing), "max_tokens": max_tokens,
                          "rule": "log-softmax over the full vocabulary at the last prompt position, letters A-D"},
               "tasks": {"mmlu": result}, "seconds": result["seconds"]}
    _write_items(out / "items" / "mmlu.jsonl", TaskResult(Task("mmlu", "T", "mmlu"), items, scores))
    write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    write_tables([results], out)
    log(f"mmlu {shots}-shot: {len(items)} questions in {len(data)} subjects, accuracy "
        f"{100 * result['accuracy']:.1f} (macro {100 * result['macro_accuracy']:.1f})")
    return results
