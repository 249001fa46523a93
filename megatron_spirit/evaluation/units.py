"""Speech units of a benchmark's wavs, through the corpus extraction itself (``speech/extract.py``).

The benchmark's wavs become an audio manifest (id = the utterance id its items use), which
:func:`~megatron_spirit.speech.extract.extract_shard` turns into units shard by shard (resumable, as for a
corpus). ``eval-units.json`` records the benchmark, its folder and a fingerprint of the speech tokenizer: a hash
of the HuBERT and quantizer files and the settings, so that scoring can refuse units from another setup.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..speech.extract import UnitExtractor, extract_shard
from ..utils.atomic import write_text
from .benchmarks import Benchmark
from .tasks import UNITS_META


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file())
    raise FileNotFoundError(f"{path}: not found")


def speech_fingerprint(paths: dict[str, str | Path | None], settings: dict) -> str:
    """sha256 (first 16 hex digits) over every file of the named paths (in name order) and the settings."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for name in sorted(paths):
        if paths[name] is None:
            continue
        root = Path(paths[name])
        for f in _files(root):
            h.update(f"{name}/{f.relative_to(root) if root.is_dir() else f.name}".encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()[:16]


def extract_bench_units(bench: Benchmark, out_dir: str | Path, extractor: UnitExtractor, fingerprint: str,
                        shard: int = 0, num_shards: int = 1, batch_seconds: float = 0.0, strict: bool = False,
                        workers: int = 2, progress: bool = True) -> dict:
    """Units of one shard of the benchmark's wavs into ``out_dir``; returns extract_shard's summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"bench": bench.name, "root": str(Path(bench.root).resolve()), "split": bench.split,
            "fingerprint": fingerprint, "flavor": extractor.flavor, "utterances": len(bench.audio)}
    meta_path = out / UNITS_META
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        if old != meta:
            diff = {k: (old.get(k), v) for k, v in meta.items() if old.get(k) != v}
            raise ValueError(f"{out}: holds units of another setup or benchmark ({diff}); use a new --out")
    else:
        write_text(meta_path, json.dumps(meta, indent=2) + "\n")
    manifest = out / "manifest.jsonl"
    # Absolute: a manifest's relative paths are read relative to the manifest's folder, not to the current one.
    lines = "".join(json.dumps({"id": uid, "path": os.path.abspath(p)}) + "\n" for uid, p in bench.audio.items())
    if not manifest.is_file() or manifest.read_text() != lines:
        write_text(manifest, lines)
    return extract_shard(manifest, out, extractor, shard, num_shards, batch_seconds, strict, workers,
                         progress=progress)
