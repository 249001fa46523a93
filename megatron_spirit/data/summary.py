"""What a build reports, and what a re-run resumes from: its rejects and its summary.

Rejects are gathered in one :class:`RejectLog` (``--strict`` turns the first into an error). The summary of each
prefix (``PREFIX.summary.json``, a :class:`BuildSummary`) is written last and marks the prefix finished: a
re-run whose prefixes all have one returns it (:func:`finished`) instead of building, when the build arguments it
records match (``build_args``); it also records the tokenizer's fingerprint.
"""
from __future__ import annotations

import collections
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..utils.atomic import write_text
from .batch import Reject
from .sink import is_complete, summary_path


class DataBuildError(RuntimeError):
    """Bad input under --strict, or outputs that cannot be merged; the message names the file and record."""


class RejectLog:
    """A build's rejects, in report order, and their count per reason."""

    def __init__(self, strict: bool = False):
        self.strict = strict
        self.rejects: list[Reject] = []
        self.by_reason: collections.Counter = collections.Counter()

    def add(self, rejects: Iterable[Reject]) -> None:
        """Record ``rejects``; under ``strict`` the first is a :class:`DataBuildError` naming its file and line."""
        rejects = list(rejects)
        if self.strict and rejects:
            r = rejects[0]
            where = f"{r.file}:{r.line}" if r.line else r.file
            raise DataBuildError(f"{where}: record {r.id!r} rejected: {r.reason}: {r.detail}")
        self.rejects += rejects
        self.by_reason.update(r.reason for r in rejects)

    def __len__(self) -> int:
        return len(self.rejects)

    def write(self, path: Path) -> None:
        write_text(path, "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in self.rejects))


def _local(default=None, factory=None):
    """A field of the returned summary that is not written to the file."""
    kw = {"default_factory": factory} if factory else {"default": default}
    return field(metadata={"file": False}, **kw)


@dataclass
class BuildSummary:
    """One prefix's ``.summary.json``; readable by key too (``s["tokens"]``), as the file is.

    Counts are of variant 0 (variants differ only in where the spans fall). ``tokens_per_s`` is absent from a
    merged summary, ``merged_from`` present only there.
    """

    kind: str
    inputs: list[str]
    tokenizer: str
    flavor: str
    vocab_size: int
    dtype: str
    documents: int
    tokens: int
    text_tokens: int
    speech_tokens: int
    speech_seconds: float
    rejected: int
    rejects_by_reason: dict[str, int]
    rejects_file: str
    shard: list[int] | None
    variants: int
    seed: int
    spans: dict | None
    span_words_hist: dict[str, list[int]] | None
    workers: int
    elapsed_s: float
    tokens_per_s: float | None = None
    prefix: str = ""
    variant: int = 0
    merged_from: list[str] | None = None
    #: :func:`~megatron_spirit.tokenizer.tokenizer.fingerprint` of the tokenizer (None: built before fingerprints).
    tokenizer_fingerprint: str | None = None
    #: The arguments that shape the output (see :func:`~.build.shaping_args`): a re-run resumes only if they match.
    build_args: dict | None = None
    #: What the build wrote (every variant's prefix), and whether it found them finished and did nothing.
    prefixes: list[str] = _local(factory=list)
    skipped: bool = _local(False)
    #: What the caller should tell the user (e.g. inputs that predate tokenizer fingerprints).
    warnings: list[str] = _local(factory=list)

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def to_json(self) -> dict:
        optional = ("tokens_per_s", "merged_from", "tokenizer_fingerprint", "build_args")
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.metadata.get("file", True) and not (f.name in optional and getattr(self, f.name) is None)}

    @classmethod
    def read(cls, prefix: str) -> "BuildSummary":
        d = json.loads(summary_path(prefix).read_text())
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})

    def write(self) -> None:
        """``prefix``'s file; written last: it marks the prefix finished."""
        write_text(summary_path(self.prefix), json.dumps(self.to_json(), indent=1) + "\n")


def finished(prefixes: Sequence[str]) -> BuildSummary | None:
    """The summary of an earlier build that finished all ``prefixes`` (None when any is missing or partial): a
    re-run returns it, marked ``skipped``, instead of building again."""
    if not all(is_complete(p) for p in prefixes):
        return None
    return dataclasses.replace(BuildSummary.read(prefixes[0]), prefixes=list(prefixes), skipped=True)


COUNTS = ("documents", "tokens", "text_tokens", "speech_tokens", "speech_seconds", "rejected")


def merged(summaries: Sequence[BuildSummary], out: str, inputs: Sequence[str], rejects_file: str) -> BuildSummary:
    """The summary of ``inputs`` concatenated into ``out``: counts, reasons and histograms summed, settings of the
    first (the caller checked they share one tokenizer); no fingerprint when any input lacks one."""
    reasons: collections.Counter = collections.Counter()
    for s in summaries:
        reasons.update(s.rejects_by_reason)
    hist = summaries[0].span_words_hist
    if hist:
        hist = {k: np.sum([s.span_words_hist[k] for s in summaries], axis=0).tolist() for k in ("text", "speech")}
    return dataclasses.replace(
        summaries[0], **{k: sum(getattr(s, k) for s in summaries) for k in COUNTS},
        rejects_by_reason=dict(sorted(reasons.items())), span_words_hist=hist, prefix=out, shard=None,
        merged_from=list(inputs), rejects_file=rejects_file, elapsed_s=sum(s.elapsed_s for s in summaries),
        tokens_per_s=None, prefixes=[out], skipped=False,
        tokenizer_fingerprint=None if any(s.tokenizer_fingerprint is None for s in summaries)
        else summaries[0].tokenizer_fingerprint,
        build_args=None if summaries[0].build_args is None else {**summaries[0].build_args, "shard": None})
