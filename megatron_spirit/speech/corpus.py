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


def read_manifest(path: str | Path) -> list[AudioItem]:
    """All records; a malformed line is an error naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such manifest")
    items = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not JSON ({e.msg})") from e
            if not isinstance(d, dict) or "id" not in d or "path" not in d:
                raise ValueError(f"{path}:{n}: a record needs 'id' and 'path'")
            p = Path(str(d.pop("path")))
            rid = str(d.pop("id"))
            d.pop("units", None)
            items.append(AudioItem(rid, p if p.is_absolute() else path.parent / p, d))
    return items


def sample_items(items: list[AudioItem], max_files: int | None, seed: int = 0) -> list[AudioItem]:
    """A seeded random subset (all of them when ``max_files`` is None)."""
    items = list(items)
    random.Random(seed).shuffle(items)
    return items if max_files is None else items[:max_files]
