"""Evaluators: what the trainer runs on the live model beside its loss, without knowing what they measure.

The trainer takes a list of objects of this protocol and, after each step, calls those that are due with its
model chunks (megatron DDP-wrapped GPTModels, this rank's) and the step; each returns ``{name: value}``. The
protocol lives here so that the dependency points the right way: ``cli/train.py`` builds evaluators from the
config (benchmark scoring from :mod:`megatron_spirit.evaluation`, which training must not import) and hands them
in. Every rank calls every due evaluator (they run collectives); rank 0 logs the values.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol, Sequence


class Evaluator(Protocol):
    #: Prefix of the logged names (``valid/text``, ``eval/swuggy:T``).
    name: str

    def due(self, step: int) -> bool: ...

    def __call__(self, model: list, step: int) -> dict[str, float]: ...


def run_evaluators(evaluators: Sequence[Evaluator], model: list, step: int, metrics=None, log=print) -> dict:
    """Call the due evaluators; on the rank with ``metrics`` (a ``MetricsLog``), write one ``eval.jsonl`` record
    per step beside ``metrics.jsonl`` (which holds training steps only) and TensorBoard scalars."""
    values: dict[str, float] = {}
    for ev in evaluators:
        if not ev.due(step):
            continue
        got = {f"{ev.name}/{k}": float(v) for k, v in ev(model, step).items()}
        values |= got
        if metrics is not None:
            log(f"step {step}: {ev.name}: " + ", ".join(f"{k.split('/', 1)[1]} {v:.4f}" for k, v in got.items()),
                flush=True)
    if values and metrics is not None:
        with open(Path(metrics.folder) / "eval.jsonl", "a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        if metrics.tb is not None:
            for k, v in values.items():
                metrics.tb.add_scalar(k, v, step)
    return values
