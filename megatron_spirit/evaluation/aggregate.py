"""From candidate scores to accuracies, as the benchmarks' own scorers count them.

A two-way item scores 1 when the correct candidate's score is higher, 0.5 on a tie, 0 otherwise. ZeroSpeech
(the official ``zerospeech2021`` evaluation) then averages over voices for each pair id — lexical: per ``id``;
syntactic: per ``(type, subtype, id)`` — and over those; it also reports lexical scores by frequency band
(``oov`` = 0, 1-5 = [1, 5), 6-20 = [5, 20), 21-100 = [20, 100), >100 = [100, ∞), as its bands are cut) and by
length, and syntactic scores by (type, subtype). StoryCloze accuracy is the mean over items.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Sequence

from ..utils.atomic import write_text
from .prompts import Item
from .scoring import CandidateScore

METRICS = ("normalised", "summed")
FREQUENCY_BANDS = ((0, 1, "oov"), (1, 5, "1-5"), (5, 20, "6-20"), (20, 100, "21-100"), (100, float("inf"), ">100"))


def outcome(scores: Sequence[float], correct: int) -> float:
    """1 when the correct candidate is strictly best, 1/k when it ties k-way for best, else 0."""
    best = max(scores)
    if scores[correct] < best:
        return 0.0
    return 1.0 / sum(1 for s in scores if s == best)


def _value(s: CandidateScore, metric: str) -> float:
    if metric == "normalised":
        return s.normalised
    if metric == "summed":
        return s.logprob
    raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")


def item_outcomes(items: Sequence[Item], scores: Sequence[Sequence[CandidateScore]], metric: str) -> list[float]:
    return [outcome([_value(s, metric) for s in sc], it.correct) for it, sc in zip(items, scores)]


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


def _by_group(items: Sequence[Item], outs: Sequence[float], keys) -> dict:
    groups: dict = defaultdict(list)
    for it, o in zip(items, outs):
        groups[keys(it)].append(o)
    return {k: _mean(v) for k, v in groups.items()}


def zerospeech_accuracy(items: Sequence[Item], scores, metric: str, kind: str) -> dict:
    """Overall score (mean over voices, then over pair ids) and the official breakdowns."""
    outs = item_outcomes(items, scores, metric)
    if kind == "lexical":
        per_id = _by_group(items, outs, lambda it: it.meta["id"])
        first = {}
        for it in items:
            first.setdefault(it.meta["id"], it.meta)
        bands: dict[str, list[float]] = defaultdict(list)
        lengths: dict[str, list[float]] = defaultdict(list)
        for pid, score in per_id.items():
            f = first[pid]["frequency"]
            band = next(name for lo, hi, name in FREQUENCY_BANDS if lo <= f < hi)
            bands[band].append(score)
            lengths[str(first[pid]["length"])].append(score)
        return {"accuracy": _mean(per_id.values()), "pairs": len(per_id), "items": len(items),
                "by_frequency": {name: {"n": len(bands[name]), "accuracy": _mean(bands[name])}
                                 for _, _, name in FREQUENCY_BANDS if bands[name]},
                "by_length": {k: {"n": len(v), "accuracy": _mean(v)} for k, v in sorted(lengths.items())}}
    if kind == "syntactic":
        per_id = _by_group(items, outs, lambda it: (it.meta["type"], it.meta["subtype"], it.meta["id"]))
        types: dict[str, list[float]] = defaultdict(list)
        for (t, st, _), score in per_id.items():
            types[f"{t}/{st}"].append(score)
        return {"accuracy": _mean(per_id.values()), "pairs": len(per_id), "items": len(items),
                "by_type": {k: {"n": len(v), "accuracy": _mean(v)} for k, v in sorted(types.items())}}
    raise ValueError(f"ZeroSpeech kind must be lexical or syntactic, got {kind!r}")


def accuracy(items: Sequence[Item], scores, metric: str, zerospeech: str | None = None) -> dict:
    if zerospeech:
        return zerospeech_accuracy(items, scores, metric, zerospeech)
    outs = item_outcomes(items, scores, metric)
    return {"accuracy": _mean(outs), "items": len(items)}


def write_zerospeech_submission(out_dir: str | Path, kind: str, split: str, items: Sequence[Item], scores,
                                metric: str) -> Path:
    """``<out_dir>/<kind>/<split>.txt``: one ``filename score`` line per wav, the official submission format
    (``filename`` is the wav's stem as in ``gold.csv``; a higher score means more likely)."""
    lines = []
    for it, sc in zip(items, scores):
        if len(it.names) != len(sc):
            raise ValueError(f"item {it.id!r}: {len(it.names)} file names for {len(sc)} scores")
        lines += [f"{name} {_value(s, metric)!r}" for name, s in zip(it.names, sc)]
    path = Path(out_dir) / kind / f"{split}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, "\n".join(lines) + "\n")
    return path
