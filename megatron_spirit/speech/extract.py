"""Corpus pass: audio manifest → units manifest, one shard at a time, batched, resumable.

Shard ``i`` of ``n`` takes a contiguous slice of the input records and writes, in ``out_dir``:
``units-IIIII-of-NNNNN.jsonl`` (records in input order), ``rejects-…jsonl`` (id, path, reason) and
``summary-…json`` (counts, reasons, audio hours, speed). Each is written atomically and the summary last, so a
shard with a summary is finished: a re-run skips it. Inside a shard, files are sorted by length and grouped into
padded batches of at most ``batch_seconds`` of (padded) audio; audio is read by a few threads ahead of the model.
"""
from __future__ import annotations

import json
import multiprocessing
import time
from collections import Counter, deque
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..tokenizer.vocab import HUBERT, PITCH, STYLE, check_flavor
from ..utils.atomic import write_text
from ..utils.sharding import Shard
from .audio import SAMPLE_RATE, AudioError, audio_duration, load_audio
from .corpus import AudioItem, BadLine, read_manifest_lines
from .hubert import HubertFeaturizer
from .kmeans import KMeansQuantizer
from .linear_quantizer import LinearQuantizer
from .manifest import StreamUnits, UnitsRecord
from .f0 import extract_f0
from .pitch import PitchQuantizer
from .style import style_units


class ExtractError(RuntimeError):
    """A rejected record under ``--strict``."""


class UnitExtractor:
    """HuBERT (+ pitch and style for the expressive flavor) units of waveforms, batched."""

    def __init__(self, hubert_model: str | Path, hubert_kmeans: KMeansQuantizer | LinearQuantizer,
                 pitch: PitchQuantizer | None = None, style: KMeansQuantizer | None = None,
                 flavor: str = "base", device: str = "auto", max_chunk_seconds: float = 100.0):
        self.flavor = check_flavor(flavor)
        if flavor == "expressive" and (pitch is None or style is None):
            raise ValueError("the expressive flavor needs a pitch quantizer and a style quantizer")
        self.km, self.pitch, self.style = hubert_kmeans, pitch, style
        layers = {hubert_kmeans.meta.layer} | ({style.meta.layer} if style is not None else set())
        self.featurizer = HubertFeaturizer(hubert_model, sorted(layers), device=device,
                                           max_chunk_seconds=max_chunk_seconds)
        if self.featurizer.rate != HUBERT.rate:
            raise ValueError(f"{hubert_model}: conv stride {self.featurizer.geometry.hop} gives "
                             f"{self.featurizer.rate:g} Hz frames; SpiRit HuBERT units are {HUBERT.rate:g} Hz "
                             "(stride 640, as mHuBERT-25Hz)")
        for name, q in (("HuBERT k-means", hubert_kmeans), ("style k-means", style)):
            if q is not None and q.dim != self.featurizer.hidden_size:
                raise ValueError(f"{name} has dim {q.dim} but {hubert_model} has hidden size "
                                 f"{self.featurizer.hidden_size}")
        if hubert_kmeans.k > HUBERT.count:
            raise ValueError(f"HuBERT quantizer has {hubert_kmeans.k} units; the vocabulary holds {HUBERT.count}")
        if style is not None and style.k > STYLE.count:
            raise ValueError(f"style k-means has {style.k} clusters; the vocabulary holds {STYLE.count}")
        if pitch is not None and pitch.cfg.codes > PITCH.count:
            raise ValueError(f"pitch codebook has {pitch.cfg.codes} codes; the vocabulary holds {PITCH.count}")

    @property
    def min_samples(self) -> int:
        """Shortest audio with one HuBERT frame."""
        return self.featurizer.geometry.receptive_field

    @property
    def f0_args(self) -> tuple | None:
        """``extract_f0``'s arguments after the waveform (None for the base flavor, which needs no F0)."""
        if self.flavor != "expressive":
            return None
        c = self.pitch.cfg
        return c.method, c.hop, c.f0_min, c.f0_max

    def f0(self, wav: np.ndarray):
        """F0 track for the pitch units (None for the base flavor): the slow CPU part, run off the model's path."""
        return None if self.f0_args is None else extract_f0(wav, *self.f0_args)

    def __call__(self, wavs: list[np.ndarray], speakers: list[str | None] | None = None,
                 f0s: list | None = None) -> list[dict[str, StreamUnits]]:
        feats = self.featurizer(wavs)
        rate = self.featurizer.rate
        out = []
        for i, (wav, f) in enumerate(zip(wavs, feats)):
            hu = self.km(f[self.km.meta.layer]) if len(f[self.km.meta.layer]) else np.zeros(0, np.int64)
            streams = {"hubert": StreamUnits.from_frames(hu, rate, HUBERT)}
            if self.flavor == "expressive":
                spk = speakers[i] if speakers else None
                f0, voiced = f0s[i] if f0s and f0s[i] is not None else self.f0(wav)
                pu = self.pitch.encode_features(self.pitch.features_from_f0(f0, voiced, spk))
                streams["pitch"] = StreamUnits.from_frames(pu, self.pitch.rate, PITCH)
                st = style_units(self.style, f[self.style.meta.layer], rate)
                streams["style"] = StreamUnits.from_frames(st, 1.0 / self.style.meta.window_seconds, STYLE)
            out.append(streams)
        return out


@dataclass(frozen=True)
class ShardPaths:
    units: Path
    rejects: Path
    summary: Path

    @classmethod
    def of(cls, out_dir: str | Path, shard: int, num_shards: int) -> "ShardPaths":
        tag = f"{shard:05d}-of-{num_shards:05d}"
        out_dir = Path(out_dir)
        return cls(out_dir / f"units-{tag}.jsonl", out_dir / f"rejects-{tag}.jsonl", out_dir / f"summary-{tag}.json")


def _reason_kind(reason: str) -> str:
    """A short category for the summary's counts ("too short: 12 samples…" → "too short")."""
    return reason.split(":")[0].split("(")[0].strip()


def _batches(items: list[tuple[AudioItem, float]], batch_seconds: float) -> Iterator[list[tuple[AudioItem, float]]]:
    """Longest first; a batch's padded size (longest × count) stays within ``batch_seconds`` (≥ 1 file)."""
    batch: list[tuple[AudioItem, float]] = []
    for it in sorted(items, key=lambda x: -x[1]):
        longest = batch[0][1] if batch else it[1]
        if batch and longest * (len(batch) + 1) > batch_seconds:
            yield batch
            batch = []
        batch.append(it)
    if batch:
        yield batch


def extract_shard(manifest: str | Path, out_dir: str | Path, extractor: UnitExtractor, shard: int = 0,
                  num_shards: int = 1, batch_seconds: float = 200.0, strict: bool = False, workers: int = 2,
                  progress: bool = True, f0_workers: int = 0,
                  on_batch: Callable[[list[tuple[AudioItem, np.ndarray]]], None] | None = None) -> dict:
    """Write one shard's units, rejects and summary; return the summary (``skipped`` if already done).

    ``on_batch`` also gets every batch's ``(record, 16 kHz waveform)`` pairs (``extract --align`` aligns them),
    so a second consumer of the audio needs no second read.

    ``workers`` threads read audio. The F0 tracker runs in those threads, or with ``f0_workers`` > 0 in that many
    processes: pYAAPT is pure Python at about 5× real time per core and holds the GIL, so threads cannot share
    it out, and on a GPU node it would otherwise be what the model waits for.
    """
    from tqdm import tqdm

    paths = ShardPaths.of(out_dir, shard, num_shards)
    if paths.summary.is_file():
        summary = json.loads(paths.summary.read_text())
        summary["skipped"] = True
        return summary
    t0 = time.perf_counter()
    all_items = read_manifest_lines(manifest)
    items = all_items[Shard(shard, num_shards).slice(len(all_items))]
    rejects: list[dict] = []

    def reject(item: AudioItem, reason: str) -> None:
        if strict:
            raise ExtractError(f"{manifest}: record {item.id!r} ({item.path}): {reason}")
        rejects.append({"id": item.id, "path": str(item.path), "reason": reason})

    seen: set[str] = set()
    sized: list[tuple[AudioItem, float]] = []
    for it in items:
        if isinstance(it, BadLine):  # the line's place is kept, so it is this shard's to report
            if strict:
                raise ExtractError(str(it))
            rejects.append({"id": None, "path": f"{it.path}:{it.line}", "reason": f"bad manifest line: {it.reason}"})
            continue
        if it.id in seen:
            reject(it, "duplicate id")
            continue
        seen.add(it.id)
        try:
            sized.append((it, audio_duration(it.path)))
        except AudioError as e:
            reject(it, e.reason)
    lines: dict[str, str] = {}
    done_hours = 0.0

    f0_pool = None
    if f0_workers > 0 and extractor.f0_args is not None:  # spawn: the parent holds threads and maybe CUDA
        f0_pool = ProcessPoolExecutor(f0_workers, mp_context=multiprocessing.get_context("spawn"))

    def load(it: AudioItem):
        try:
            wav = load_audio(it.path, extractor.min_samples, it.expected_rate, it.expected_duration)
        except AudioError as e:
            return e
        if f0_pool is not None:
            return wav, f0_pool.submit(extract_f0, wav, *extractor.f0_args).result()
        return wav, extractor.f0(wav)

    batches = list(_batches(sized, batch_seconds))
    total_hours = 0.0
    for b in batches:  # summed exactly as the bar's updates are, so it ends at 100 %
        total_hours += sum(d for _, d in b) / 3600
    bar = tqdm(total=total_hours, desc=f"shard {shard}/{num_shards}", disable=not progress, mininterval=2,
               bar_format="{l_bar}{bar}| {n:.4f}/{total:.4f} audio-h [{elapsed}<{remaining}{postfix}]")
    try:
        ahead = max(3, f0_workers + 2)  # batches in flight: enough to keep every F0 process busy
        with ThreadPoolExecutor(max(1, workers, f0_workers)) as pool:
            # Files are read (and their F0 tracked) by the pool, one file per task, a few batches ahead of the
            # model (bounded, so a shard's audio is never all in memory).
            pending: deque = deque()
            for bi, batch in enumerate(batches):
                while len(pending) < ahead and bi + len(pending) < len(batches):
                    pending.append([pool.submit(load, it) for it, _ in batches[bi + len(pending)]])
                futures = pending.popleft()
                good = []
                for (it, dur), fut in zip(batch, futures):
                    got = fut.result()
                    if isinstance(got, AudioError):
                        reject(it, got.reason)
                    else:
                        good.append((it, got))
                if good:
                    units = extractor([g[0] for _, g in good], [it.speaker for it, _ in good],
                                      [g[1] for _, g in good])
                    for (it, (wav, _)), streams in zip(good, units):
                        rec = UnitsRecord(it.id, len(wav) / SAMPLE_RATE, streams,
                                          {k: v for k, v in it.fields.items() if k != "duration"}
                                          | {"path": str(it.path)})
                        lines[it.id] = rec.to_json()
                    if on_batch is not None:
                        on_batch([(it, wav) for it, (wav, _) in good])
                hours = sum(d for _, d in batch) / 3600
                done_hours += hours
                bar.update(hours)
                speed = done_hours / max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix_str(f"{speed:.4g} audio-h/s", refresh=False)
        bar.close()
    finally:
        if f0_pool is not None:
            f0_pool.shutdown(cancel_futures=True)
    written, out = set(), []  # input order; an id seen twice keeps its first record only
    for it in items:
        if isinstance(it, AudioItem) and it.id in lines and it.id not in written:
            out.append(lines[it.id])
            written.add(it.id)
    write_text(paths.units, "".join(line + "\n" for line in out))
    write_text(paths.rejects, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejects))
    wall = time.perf_counter() - t0
    summary = {
        "shard": shard, "num_shards": num_shards, "records": len(items), "written": len(out),
        "rejected": len(rejects), "reject_reasons": dict(Counter(_reason_kind(r["reason"]) for r in rejects)),
        "audio_hours": done_hours, "seconds": wall, "audio_hours_per_second": done_hours / wall if wall else 0.0,
        "flavor": extractor.flavor, "units": str(paths.units.name), "rejects": str(paths.rejects.name),
    }
    write_text(paths.summary, json.dumps(summary, indent=2) + "\n")
    summary["skipped"] = False
    return summary
