"""The input audio manifest (JSONL: id, path, optional speaker/text/alignment/…): reading and sampling.

Relative paths are resolved against the manifest's folder. Optional checks a record can declare:
``sample_rate`` (the file's native rate must match) and ``duration`` (seconds; catches truncated files).
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class AudioItem:
    id: str
    path: Path
    fields: dict[str, Any]  # everything else in the record, passed through to the units manifest

    @property
    def speaker(self) -> str | None:
        s = self.fields.get("speaker")
        return None if s is None else str(s)

    @property
    def expected_rate(self) -> int | None:
        r = self.fields.get("sample_rate")
        return None if r is None else int(r)

    @property
    def expected_duration(self) -> float | None:
        d = self.fields.get("duration")
        return None if d is None else float(d)


@dataclass(frozen=True)
class BadLine:
    """A manifest line that is no usable record; it keeps its place so sharding does not depend on it."""

    path: Path
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


def read_manifest_lines(path: str | Path) -> list[AudioItem | BadLine]:
    """Every non-empty line, as a record or as the reason it is none (not UTF-8, not JSON, no id/path)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such manifest")
    out: list[AudioItem | BadLine] = []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                d = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                out.append(BadLine(path, n, f"not UTF-8 (byte {e.start} of the line: {e.reason})"))
                continue
            except json.JSONDecodeError as e:
                out.append(BadLine(path, n, f"not JSON ({e.msg})"))
                continue
            if not isinstance(d, dict) or "id" not in d or "path" not in d:
                out.append(BadLine(path, n, "a record needs 'id' and 'path'"))
                continue
            p = Path(str(d.pop("path")))
            rid = str(d.pop("id"))
            d.pop("units", None)
            out.append(AudioItem(rid, p if p.is_absolute() else path.parent / p, d))
    return out


def read_manifest(path: str | Path) -> list[AudioItem]:
    """All records; a malformed line is an error naming the file and line."""
    items = read_manifest_lines(path)
    bad = next((it for it in items if isinstance(it, BadLine)), None)
    if bad is not None:
        raise ValueError(str(bad))
    return items


def sample_items(items: list[AudioItem], max_files: int | None, seed: int = 0) -> list[AudioItem]:
    """A seeded random subset (all of them when ``max_files`` is None)."""
    items = list(items)
    random.Random(seed).shuffle(items)
    return items if max_files is None else items[:max_files]
