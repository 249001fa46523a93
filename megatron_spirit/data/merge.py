"""Merging finished datasets (the shards of a build) into one, with megatron-core's ``add_index``.

The merged prefix is written like a build's (:mod:`.sink`: temporary files renamed, then the summary), with the
inputs' summaries summed and their rejects files concatenated.
"""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from ..utils.atomic import write_text
from .check import DatasetError, check_datasets
from .sink import SHARD_RE, DatasetSink, disk_errors, is_complete, rejects_path
from .summary import BuildSummary, DataBuildError, merged


def find_shards(out: str) -> dict[str, list[str]]:
    """Shard prefixes under ``out`` (``out-shard…``, ``out_vK-shard…``), grouped by the prefix they merge into.

    Raises when a group lacks a shard or a shard is unfinished, naming them.
    """
    parent = Path(out).parent
    name = Path(out).name
    groups: dict[str, dict[int, str]] = {}
    counts: dict[str, int] = {}
    for f in parent.glob(f"{name}*-shard?????of?????.idx"):
        prefix = str(f)[: -len(".idx")]
        m = SHARD_RE.match(prefix)
        base = m.group("base")
        if base != out and not re.fullmatch(re.escape(out) + r"_v\d+", base):
            continue
        groups.setdefault(base, {})[int(m.group("i"))] = prefix
        n = int(m.group("n"))
        if counts.setdefault(base, n) != n:
            raise DataBuildError(f"{base}: shards of different counts ({counts[base]} and {n})")
    if not groups:
        raise DataBuildError(f"no shard datasets found for {out} (expected {out}-shard00000of000NN.idx)")
    out_groups = {}
    for base, shards in sorted(groups.items()):
        missing = [i for i in range(counts[base]) if i not in shards]
        unfinished = [p for p in shards.values() if not is_complete(p)]
        if missing or unfinished:
            raise DataBuildError(f"{base}: cannot merge, missing shards {missing}, unfinished {unfinished}")
        out_groups[base] = [shards[i] for i in range(counts[base])]
    return out_groups


def merge_datasets(out: str, inputs: Sequence[str], overwrite: bool = False) -> BuildSummary:
    """Concatenate finished datasets into ``out``; return its summary (``skipped`` when it was finished)."""
    from megatron.core.datasets.indexed_dataset import _IndexReader

    if not inputs:
        raise DataBuildError(f"nothing to merge into {out}")
    if not overwrite and is_complete(out):
        return replace(BuildSummary.read(out), prefixes=[out], skipped=True)
    for p in inputs:
        if not is_complete(p):
            raise DataBuildError(f"{p}: not a finished dataset (no .bin/.idx/.summary.json)")
    try:
        _, warnings = check_datasets(inputs)  # whole files, one tokenizer
    except DatasetError as e:
        raise DataBuildError(f"cannot merge into {out}: {e}") from e
    summaries = [BuildSummary.read(p) for p in inputs]
    dtypes = {_IndexReader(p + ".idx", multimodal=False).dtype for p in inputs}
    if len(dtypes) != 1:
        raise DataBuildError(f"cannot merge datasets of different token dtypes {sorted(map(str, dtypes))}")
    with disk_errors(Path(out).parent):
        summary = _write(out, inputs, summaries, dtypes.pop())
    return replace(summary, warnings=warnings)


def _write(out: str, inputs: Sequence[str], summaries: list[BuildSummary], dtype) -> BuildSummary:
    sink = DatasetSink([out], dtype)
    try:
        for p in inputs:
            sink.add_index(p)
        sink.finalize()
    except BaseException:
        sink.abort()
        raise
    files: list[str] = []  # each once
    for s in summaries:
        if Path(s.rejects_file or "").is_file() and s.rejects_file not in files:
            files.append(s.rejects_file)
    rejects_out = rejects_path(out)
    write_text(rejects_out, "".join(Path(f).read_text(encoding="utf-8") for f in files))
    summary = merged(summaries, out, inputs, str(rejects_out))
    sink.commit()
    summary.write()
    return summary
