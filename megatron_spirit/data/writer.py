"""Write sequences to megatron-core indexed datasets: sharded, ordered-parallel, atomic, resumable; and merge.

One build reads JSONL inputs (its shard's byte range), turns chunks of lines into sequences in ``workers``
processes (results written in input order) and writes them through megatron-core's ``IndexedDatasetBuilder``,
one document per sequence, ``uint16`` when the vocabulary fits. Outputs per prefix: ``.bin``, ``.idx`` and a
``.summary.json`` (counts; written last: the mark of a finished build), plus one ``.rejects.jsonl`` per build.

Atomicity: ``.bin``/``.idx`` are written as ``<name>.tmp`` and renamed only after both are complete; an old
summary is deleted before a rebuild starts. So a killed build never leaves a prefix that looks complete, and a
re-run (which skips prefixes whose summary exists) finishes the job.
"""
from __future__ import annotations

import collections
import json
import os
import re
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..utils.atomic import write_text
from .batch import Reject
from .ordered_pool import ordered_map
from .pack import Pack, is_pack
from .sequences import HIST_BINS, ChunkResult, SequenceBuilder, SequenceConfig

SHARD_RE = re.compile(r"^(?P<base>.*)-shard(?P<i>\d{5})of(?P<n>\d{5})$")
#: Test hook: SIGKILL this process after writing that many chunks (a well-defined point for the kill test).
KILL_ENV = "SPIRIT_DATA_KILL_AFTER_CHUNKS"


class DataBuildError(RuntimeError):
    """Bad input under --strict, or outputs that cannot be merged; the message names the file and record."""


# Names ------------------------------------------------------------------------------------------------------
def shard_suffix(shard: tuple[int, int] | None) -> str:
    return "" if shard is None else f"-shard{shard[0]:05d}of{shard[1]:05d}"


def output_prefixes(out: str, variants: int, shard: tuple[int, int] | None = None) -> list[str]:
    """Prefixes one build writes: ``out`` or ``out_v0 … out_v{N-1}``; with a shard suffix under ``--shard``."""
    bases = [out] if variants == 1 else [f"{out}_v{k}" for k in range(variants)]
    return [b + shard_suffix(shard) for b in bases]


def summary_path(prefix: str) -> Path:
    return Path(prefix + ".summary.json")


def is_complete(prefix: str) -> bool:
    return summary_path(prefix).is_file() and Path(prefix + ".bin").is_file() and Path(prefix + ".idx").is_file()


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` → ``(i, n)``, 0-based ``i``."""
    if text is None:
        return None
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise ValueError(f"--shard must be i/n with 0 <= i < n, got {text!r}")
    return int(m.group(1)), int(m.group(2))


# Reading ----------------------------------------------------------------------------------------------------
def shard_byte_ranges(files: Sequence[str], shard: tuple[int, int] | None) -> list[tuple[str, int, int]]:
    """``(file, lo, hi)``: a line belongs to the shard whose byte range holds its first byte (files concatenated)."""
    sizes = [os.path.getsize(f) for f in files]
    total = sum(sizes)
    i, n = shard or (0, 1)
    lo, hi = total * i // n, total * (i + 1) // n
    out, g0 = [], 0
    for f, size in zip(files, sizes):
        a, b = max(lo - g0, 0), min(hi - g0, size)
        if a < b:
            out.append((str(f), a, b))
        g0 += size
    return out


def read_chunks(
    files: Sequence[str], shard: tuple[int, int] | None, chunk_bytes: int = 1 << 20, chunk_lines: int = 8192
) -> Iterator[tuple[str, int, list[bytes], int]]:
    """``(file, first line number, raw lines, bytes)`` chunks of the shard's lines, in order."""
    for path, lo, hi in shard_byte_ranges(files, shard):
        with open(path, "rb") as f:
            line_no = 1
            pos = 0
            if lo > 0:
                # Count lines before our range (cheap: bytes.count), then skip the line holding byte lo-1.
                while pos < lo - 1:
                    block = f.read(min(1 << 24, lo - 1 - pos))
                    line_no += block.count(b"\n")
                    pos += len(block)
                tail = f.readline()
                if tail.endswith(b"\n"):
                    line_no += 1
                pos += len(tail)
            lines: list[bytes] = []
            size, first = 0, line_no
            while pos < hi:
                raw = f.readline()
                if not raw:
                    break
                if pos == 0 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark opens the file
                    raw = raw[3:]
                    pos += 3
                pos += len(raw)
                lines.append(raw.rstrip(b"\r\n"))
                size += len(raw)
                line_no += 1
                if size >= chunk_bytes or len(lines) >= chunk_lines:
                    yield path, first, lines, size
                    lines, size, first = [], 0, line_no
            if lines:
                yield path, first, lines, size


# Workers ----------------------------------------------------------------------------------------------------
_BUILDER: SequenceBuilder | None = None
_PACKS: list = []


def _work(item) -> tuple[int, ChunkResult]:
    """One chunk and its size: ``("lines", file, first line, lines)`` of JSONL, or ``("pack", pack index, a, b)``
    records."""
    task, size = item
    if task[0] == "pack":
        _, k, a, b = task
        return size, _BUILDER.process_batch(_PACKS[k].batch().slice(a, b))
    _, path, first, lines = task
    return size, _BUILDER.process(lines, path, first)


def pack_chunks(packs, shard: tuple[int, int] | None, chunk_units: int = 1 << 19) -> Iterator[tuple[tuple, int]]:
    """``(task, records)``: the shard's records of the packs (an even split of all their records, in order), in
    chunks of about ``chunk_units`` HuBERT runs."""
    total = sum(p.records for p in packs)
    i, n = shard or (0, 1)
    lo, hi = total * i // n, total * (i + 1) // n
    base = 0
    for k, pack in enumerate(packs):
        a, b = max(lo - base, 0), min(hi - base, pack.records)
        base += pack.records
        offsets = pack.batch().streams["hubert"].units.offsets
        while a < b:
            end = int(np.searchsorted(offsets, offsets[a] + chunk_units, side="right")) - 1
            end = min(max(end, a + 1), b)
            yield ("pack", k, a, end), end - a
            a = end


# Building ---------------------------------------------------------------------------------------------------
def add_documents(builder, ids: np.ndarray, lengths: np.ndarray) -> None:
    """``builder.add_document(seq, [len(seq)])`` for each sequence of a chunk, in one write (what that call does,
    without a Python call and a copy per document)."""
    builder.data_file.write(np.ascontiguousarray(ids, dtype=builder.dtype).tobytes(order="C"))
    first = len(builder.sequence_lengths)
    builder.sequence_lengths.extend(np.asarray(lengths).tolist())
    builder.document_indices.extend(range(first + 1, first + len(lengths) + 1))


def token_dtype(vocab_size: int):
    """megatron-core's choice: uint16 when the ids fit, else int32."""
    from megatron.core.datasets.indexed_dataset import DType

    return DType.optimal_dtype(vocab_size)


def _remove(*paths: Path) -> None:
    for p in paths:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def build_dataset(
    inputs: Sequence[str],
    out: str,
    tokenizer_dir: str,
    cfg: SequenceConfig,
    *,
    flavor: str | None = None,
    alignments: str | None = None,
    workers: int = 1,
    shard: tuple[int, int] | None = None,
    strict: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    chunk_bytes: int = 1 << 20,
) -> dict:
    """Build the dataset(s) of ``inputs`` under ``out``; return the summary (``skipped`` when already done)."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    global _PACKS, _BUILDER
    inputs = [str(p) for p in inputs]
    packed = [is_pack(p) for p in inputs]
    for p, is_packed in zip(inputs, packed):
        if not is_packed and not os.path.isfile(p):
            raise FileNotFoundError(f"input {p} not found")
    if any(packed) and not all(packed):
        raise ValueError("inputs must be all JSONL files or all packs (spirit-data pack), not a mix")
    if any(packed) and cfg.kind == "text":
        raise ValueError("--kind text reads JSONL text corpora; packs hold units manifests")
    if any(packed) and alignments is not None:
        raise ValueError("packs carry the alignments given to `spirit-data pack`; --alignments is for JSONL inputs")
    prefixes = output_prefixes(out, cfg.variants, shard)
    rejects_file = Path(out + shard_suffix(shard) + ".rejects.jsonl")
    if not overwrite and all(is_complete(p) for p in prefixes):
        summary = json.loads(summary_path(prefixes[0]).read_text())
        return dict(summary, skipped=True)
    for p in prefixes:  # nothing of an older build may look complete while this one runs
        _remove(summary_path(p), Path(p + ".idx"), Path(p + ".bin"), Path(p + ".bin.tmp"), Path(p + ".idx.tmp"))
        Path(p).parent.mkdir(parents=True, exist_ok=True)

    builder = SequenceBuilder(tokenizer_dir, cfg, flavor, alignments)
    dtype = token_dtype(builder.tok.vocab_size)
    builder.out_dtype = dtype
    writers = [IndexedDatasetBuilder(p + ".bin.tmp", dtype=dtype) for p in prefixes]
    kill_after = int(os.environ.get(KILL_ENV, "0") or 0)

    totals: dict[str, float] = collections.Counter()
    by_reason: dict[str, int] = collections.Counter()
    hist = np.zeros((2, HIST_BINS), dtype=np.int64)
    rejects: list[Reject] = []
    seen: set[str] = set()
    if any(packed):
        _PACKS = [Pack(p) for p in inputs]
        if shard is None or shard[0] == 0:  # lines that were no record at all, reported once
            rejects += [r for pk in _PACKS for r in pk.rejects()
                        if cfg.kind == "interleaved" or r.reason != "missing_units_record"]
            by_reason.update(r.reason for r in rejects)
        chunk_units = max(1, chunk_bytes // 2)  # ~ as many tokens as a JSONL chunk of chunk_bytes holds, or more
        tasks = list(pack_chunks(_PACKS, shard, chunk_units))
        total, unit = sum(n for _, n in tasks), "rec"
    else:
        tasks = ((("lines", path, first, lines), size)
                 for path, first, lines, size in read_chunks(inputs, shard, chunk_bytes=chunk_bytes))
        total, unit = sum(b - a for _, a, b in shard_byte_ranges(inputs, shard)), "B"
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit=unit, unit_scale=True, desc=f"{cfg.kind} {Path(out).name}",
                   mininterval=1.0, file=sys.stderr)
    try:
        if strict and rejects:  # a pack's lines that were no record at all
            r = rejects[0]
            raise DataBuildError(f"{r.file}:{r.line}: record {r.id!r} rejected: {r.reason}: {r.detail}")
        _BUILDER = builder  # inherited by forked workers: no pickling of the tokenizer, alignments or packs
        for n_chunk, (size, res) in enumerate(ordered_map(_work, tasks, workers), 1):
            if strict and res.rejects:
                r = res.rejects[0]
                raise DataBuildError(f"{r.file}:{r.line}: record {r.id!r} rejected: {r.reason}: {r.detail}")
            rejects += res.rejects
            for r in res.rejects:
                by_reason[r.reason] += 1
            for w, ids, lengths in zip(writers, res.ids, res.lengths):
                add_documents(w, ids, lengths)
            totals.update(res.counts)
            if res.span_hist is not None:
                hist += res.span_hist
            seen.update(res.seen_ids)
            if bar is not None:
                bar.update(size)
                bar.set_postfix_str(f"{totals['tokens'] / max(time.perf_counter() - t0, 1e-9) / 1e6:.2f}M tok/s",
                                    refresh=False)
            if kill_after and n_chunk >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
        if cfg.kind == "interleaved" and builder.alignments is not None and shard is None:
            known = builder.alignments.ids()
            for rid in sorted((known or set()) - seen):
                r = Reject(rid, str(builder.alignments.path), 0, "missing_units_record",
                           "an alignment exists but the units manifest has no record with this id")
                if strict:
                    raise DataBuildError(f"{r.file}: record {rid!r} rejected: {r.reason}: {r.detail}")
                rejects.append(r)
                by_reason[r.reason] += 1
        for w, p in zip(writers, prefixes):
            w.finalize(p + ".idx.tmp")
    except BaseException:
        for w, p in zip(writers, prefixes):
            if not w.data_file.closed:
                w.data_file.close()
            _remove(Path(p + ".bin.tmp"), Path(p + ".idx.tmp"))
        raise
    finally:
        _PACKS, _BUILDER = [], None
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - t0

    write_text(rejects_file, "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in rejects))
    summary = {
        "kind": cfg.kind,
        "inputs": inputs,
        "tokenizer": str(tokenizer_dir),
        "flavor": builder.vocab.flavor,
        "vocab_size": builder.tok.vocab_size,
        "dtype": np.dtype(dtype).name,
        "documents": int(totals["documents"]),
        "tokens": int(totals["tokens"]),
        "text_tokens": int(totals["text_tokens"]),
        "speech_tokens": int(totals["speech_tokens"]),
        "speech_seconds": float(totals.get("speech_seconds", 0.0)),
        "rejected": len(rejects),
        "rejects_by_reason": dict(sorted(by_reason.items())),
        "rejects_file": str(rejects_file),
        "shard": None if shard is None else list(shard),
        "variants": cfg.variants,
        "seed": cfg.seed,
        "spans": asdict(cfg.spans) if cfg.kind == "interleaved" else None,
        "span_words_hist": ({"text": hist[0].tolist(), "speech": hist[1].tolist()} if cfg.kind == "interleaved"
                            else None),
        "workers": workers,
        "elapsed_s": round(elapsed, 3),
        "tokens_per_s": round(totals["tokens"] / max(elapsed, 1e-9), 1),
    }
    for p in prefixes:
        os.replace(p + ".bin.tmp", p + ".bin")
        os.replace(p + ".idx.tmp", p + ".idx")
    for k, p in enumerate(prefixes):  # the summary last: it marks the prefix complete
        write_text(summary_path(p), json.dumps(dict(summary, prefix=p, variant=k), indent=1) + "\n")
    return dict(summary, prefix=prefixes[0], variant=0, prefixes=prefixes, skipped=False)


# Merging ----------------------------------------------------------------------------------------------------
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


def merge_datasets(out: str, inputs: Sequence[str], overwrite: bool = False) -> dict:
    """Concatenate finished datasets into ``out`` with megatron-core's ``add_index``; summaries summed."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder, _IndexReader

    if not inputs:
        raise DataBuildError(f"nothing to merge into {out}")
    if not overwrite and is_complete(out):
        return dict(json.loads(summary_path(out).read_text()), skipped=True)
    for p in inputs:
        if not is_complete(p):
            raise DataBuildError(f"{p}: not a finished dataset (no .bin/.idx/.summary.json)")
    summaries = [json.loads(summary_path(p).read_text()) for p in inputs]
    dtypes = {_IndexReader(p + ".idx", multimodal=False).dtype for p in inputs}
    if len(dtypes) != 1:
        raise DataBuildError(f"cannot merge datasets of different token dtypes {sorted(map(str, dtypes))}")
    _remove(summary_path(out), Path(out + ".idx"), Path(out + ".bin"))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    w = IndexedDatasetBuilder(out + ".bin.tmp", dtype=dtypes.pop())
    try:
        for p in inputs:
            w.add_index(p)
        w.finalize(out + ".idx.tmp")
    except BaseException:
        w.data_file.close()
        _remove(Path(out + ".bin.tmp"), Path(out + ".idx.tmp"))
        raise
    rejects_lines = []
    for s in summaries:
        rf = Path(s.get("rejects_file") or "")
        if rf.is_file() and str(rf) not in rejects_lines:
            rejects_lines.append(str(rf))
    rejects_out = Path(out + ".rejects.jsonl")
    write_text(rejects_out, "".join(Path(f).read_text(encoding="utf-8") for f in rejects_lines))
    merged = dict(summaries[0])
    for key in ("documents", "tokens", "text_tokens", "speech_tokens", "speech_seconds", "rejected"):
        merged[key] = sum(s.get(key, 0) for s in summaries)
    reasons: collections.Counter = collections.Counter()
    for s in summaries:
        reasons.update(s.get("rejects_by_reason", {}))
    merged["rejects_by_reason"] = dict(sorted(reasons.items()))
    if merged.get("span_words_hist"):
        merged["span_words_hist"] = {
            k: np.sum([s["span_words_hist"][k] for s in summaries], axis=0).tolist() for k in ("text", "speech")
        }
    merged.update(prefix=out, shard=None, merged_from=list(inputs), rejects_file=str(rejects_out),
                  elapsed_s=sum(s.get("elapsed_s", 0) for s in summaries))
    merged.pop("tokens_per_s", None)
    os.replace(out + ".bin.tmp", out + ".bin")
    os.replace(out + ".idx.tmp", out + ".idx")
    write_text(summary_path(out), json.dumps(merged, indent=1) + "\n")
    return dict(merged, skipped=False)
