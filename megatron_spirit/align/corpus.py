"""Alignment pass: audio manifest with transcripts → word alignments, one shard at a time, resumable.

Shard ``i`` of ``n`` (the same contiguous slice ``spirit-units extract --shard i/n`` takes) writes in ``out_dir``:
``words-IIIII-of-NNNNN.ctm`` and ``.jsonl`` (input order), optionally ``textgrid-…/<id>.TextGrid``,
``align-rejects-….jsonl`` (id, path, reason) and ``align-summary-….json`` last, each atomically: a shard with a
summary is done and a re-run skips it. The names differ from extract's, so both can share one folder.
:class:`ShardAligner` takes audio batch by batch, so ``extract --align`` feeds it the audio it already read.
"""
from __future__ import annotations

import json
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..speech.audio import SAMPLE_RATE, AudioError, audio_duration, load_audio
from ..speech.corpus import AudioItem, BadLine, read_manifest_lines
from ..utils.sharding import Shard
from ..speech.extract import _batches, _reason_kind
from ..utils.atomic import atomic_dir, write_text
from .aligner import Aligned, AlignReject, align_emissions, check_alignable
from .formats import ctm_lines, jsonl_line, textgrid
from .model import CtcModel
from .targets import Targets, make_targets


@dataclass(frozen=True)
class AlignPaths:
    ctm: Path
    jsonl: Path
    textgrid: Path
    rejects: Path
    summary: Path

    @classmethod
    def of(cls, out_dir: str | Path, shard: int, num_shards: int) -> "AlignPaths":
        tag = f"{shard:05d}-of-{num_shards:05d}"  # extract's shard naming
        names = ("words-{}.ctm", "words-{}.jsonl", "textgrid-{}", "align-rejects-{}.jsonl", "align-summary-{}.json")
        return cls(*(Path(out_dir) / n.format(tag) for n in names))


class ShardAligner:
    """One shard's alignments, given the shard's records up front and their audio in batches."""

    def __init__(self, model: CtcModel, items: list[AudioItem | BadLine], min_score: float | None = None,
                 max_trellis_bytes: int = 2 << 30):
        self.model, self.min_score, self.max_trellis_bytes = model, min_score, max_trellis_bytes
        self.rejects: list[dict] = [{"id": None, "path": f"{b.path}:{b.line}", "reason": f"bad manifest line: {b.reason}"}
                                    for b in items if isinstance(b, BadLine)]
        self.items = [it for it in items if isinstance(it, AudioItem)]
        items = self.items
        self.done: dict[str, tuple[Aligned, float]] = {}
        self.targets: dict[str, Targets] = {}
        self.audio_hours = 0.0
        self.t0 = time.perf_counter()
        self.first: dict[str, AudioItem] = {}
        for it in items:
            if it.id in self.first:
                self.reject(it, "duplicate id", keep=True)
                continue
            self.first[it.id] = it
            text = it.fields.get("text")
            tg = make_targets(text if isinstance(text, str) else "", model.alphabet)
            if not tg.words:
                self.reject(it, "empty transcript" if isinstance(text, str) else "no transcript ('text')")
            else:
                self.targets[it.id] = tg

    def wanted(self, it: AudioItem) -> bool:
        return it.id in self.targets and it.id not in self.done

    def precheck(self, it: AudioItem, duration: float) -> bool:
        """Reject from the header's duration alone (no audio read) what cannot be aligned; True if still wanted."""
        try:
            check_alignable(self.targets[it.id], self.model.num_frames(round(duration * SAMPLE_RATE)),
                            self.max_trellis_bytes)
            return True
        except AlignReject as r:
            self.reject(it, r.reason)
            return False

    def reject(self, it: AudioItem, reason: str, keep: bool = False) -> None:
        """Record a reject; ``keep``: a duplicate record, the id's first record goes on."""
        if not keep:
            self.targets.pop(it.id, None)
        self.rejects.append({"id": it.id, "path": str(it.path), "reason": reason})

    def add(self, batch: list[tuple[AudioItem, np.ndarray]]) -> None:
        batch = [(it, w) for it, w in batch if self.wanted(it)]
        if not batch:
            return
        ems = self.model([w for _, w in batch])
        got = align_emissions(ems, [self.targets[it.id] for it, _ in batch], self.model.frame_seconds,
                              self.model.alphabet.blank, self.max_trellis_bytes)
        for (it, w), a in zip(batch, got):
            self.audio_hours += len(w) / SAMPLE_RATE / 3600
            if isinstance(a, AlignReject):
                self.reject(it, a.reason)
            elif self.min_score is not None and a.score < self.min_score:
                self.reject(it, f"score below --min-score: {a.score:.3f} < {self.min_score:g}")
            else:
                self.done[it.id] = (a, len(w) / SAMPLE_RATE)

    def finish(self, paths: AlignPaths, write_textgrid: bool = False, **summary_fields) -> dict:
        """Write the shard's files (summary last) and return the summary."""
        for rid in [r for r in self.targets if r not in self.done]:
            self.reject(self.first[rid], "no audio (unreadable, missing or too short; see the extract rejects)")
        order, written = [], set()
        for it in self.items:  # input order, the first record of an id
            if it.id in self.done and it.id not in written:
                order.append(it)
                written.add(it.id)
        write_text(paths.ctm, "".join(ctm_lines(it.id, self.done[it.id][0]) for it in order))
        write_text(paths.jsonl, "".join(jsonl_line(it.id, self.done[it.id][0]) for it in order))
        if write_textgrid:
            with atomic_dir(paths.textgrid) as tmp:
                for it in order:
                    a, dur = self.done[it.id]
                    (tmp / f"{it.id}.TextGrid").write_text(textgrid(a, dur), encoding="utf-8")
        rejects = self.rejects
        write_text(paths.rejects, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejects))
        scores = np.array([a.score for a, _ in self.done.values()])
        wall = time.perf_counter() - self.t0
        summary = {
            "records": len(self.items), "aligned": len(order), "rejected": len(rejects),
            "reject_reasons": dict(Counter(_reason_kind(r["reason"]) for r in rejects)),
            "mean_score": float(scores.mean()) if len(scores) else None,
            "unknown_chars": int(sum(a.unknown for a, _ in self.done.values())),
            "audio_hours": self.audio_hours, "seconds": wall,
            "audio_hours_per_second": self.audio_hours / wall if wall else 0.0,
            "ctm": paths.ctm.name, "jsonl": paths.jsonl.name, "rejects": paths.rejects.name,
            **({"textgrid": paths.textgrid.name} if write_textgrid else {}), **summary_fields,
        }
        write_text(paths.summary, json.dumps(summary, indent=2) + "\n")
        summary["skipped"] = False
        return summary


def shard_items(manifest: str | Path, shard: int, num_shards: int) -> list[AudioItem | BadLine]:
    """The shard's manifest lines: the same slice as extract's, bad lines kept in place (they become rejects)."""
    items = read_manifest_lines(manifest)
    return items[Shard(shard, num_shards).slice(len(items))]


def align_shard(manifest: str | Path, out_dir: str | Path, model: CtcModel, shard: int = 0, num_shards: int = 1,
                batch_seconds: float = 200.0, min_score: float | None = None, textgrid: bool = False,
                workers: int = 2, progress: bool = True, max_trellis_bytes: int = 2 << 30) -> dict:
    """Align one shard; return its summary (``skipped`` when its summary already exists)."""
    from tqdm import tqdm

    paths = AlignPaths.of(out_dir, shard, num_shards)
    if paths.summary.is_file():
        return json.loads(paths.summary.read_text()) | {"skipped": True}
    sa = ShardAligner(model, shard_items(manifest, shard, num_shards), min_score, max_trellis_bytes)
    sized = []
    for it in sa.items:
        if not sa.wanted(it):
            continue
        try:
            d = audio_duration(it.path)
        except AudioError as e:
            sa.reject(it, f"no audio: {e.reason}")
            continue
        if sa.precheck(it, d):
            sized.append((it, d))

    def load(it: AudioItem):
        try:
            return load_audio(it.path, model.geometry.receptive_field, it.expected_rate, it.expected_duration)
        except AudioError as e:
            return e

    batches = list(_batches(sized, batch_seconds))
    with ThreadPoolExecutor(max(1, workers)) as pool, \
            tqdm(total=len(batches), desc=f"align {shard}/{num_shards}", disable=not progress, mininterval=2) as bar:
        pending: deque = deque()  # audio read a few batches ahead of the model, bounded
        for bi, batch in enumerate(batches):
            while len(pending) < 3 and bi + len(pending) < len(batches):
                pending.append([pool.submit(load, it) for it, _ in batches[bi + len(pending)]])
            good = []
            for (it, _), fut in zip(batch, pending.popleft()):
                got = fut.result()
                if isinstance(got, AudioError):
                    sa.reject(it, f"no audio: {got.reason}")
                else:
                    good.append((it, got))
            sa.add(good)
            bar.update(1)
    return sa.finish(paths, textgrid, shard=shard, num_shards=num_shards)
