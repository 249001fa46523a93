"""The checkpoint folder protocol: temp name while writing, a completion marker, ``latest``, keep-last-K.

Layout::

    ROOT/iter_0000100/      a complete megatron-core distributed checkpoint (+ checksums.json, then COMPLETE)
    ROOT/.iter_0000200.tmp/ being written; never read; removed by the next run
    ROOT/latest             "iter_0000100", replaced atomically after the rename

A save killed at any point leaves ``latest`` naming the previous complete checkpoint. The checksums of every
file (:mod:`.checksums`) are written before the marker, so a complete checkpoint always has them; a reader that
finds the newest one corrupt can fall back to an older one (:meth:`CheckpointDir.candidates`). A converted model
(``spirit-convert hf-to-megatron``) is one such checkpoint folder on its own, without a root around it;
:func:`resolve` accepts either.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from ..utils.atomic import write_text

COMPLETE = "COMPLETE"
#: megatron-core's own file in every distributed checkpoint folder.
METADATA = "metadata.json"
_ITER_RE = re.compile(r"^iter_(\d{7,})$")


class CheckpointDir:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    @staticmethod
    def name(step: int) -> str:
        return f"iter_{step:07d}"

    def final_path(self, step: int) -> Path:
        return self.root / self.name(step)

    def temp_path(self, step: int) -> Path:
        return self.root / f".{self.name(step)}.tmp"

    def begin(self, step: int) -> Path:
        """An empty temp folder to write step ``step`` into (call on one rank, then barrier)."""
        tmp = self.temp_path(step)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        return tmp

    def commit(self, step: int, keep_last: int | None = None, checksums: dict | None = None) -> Path:
        """Write the checksums (``checksums``: the ranks' :func:`.checksums.entries`, else computed here), mark
        complete, rename into place, point ``latest`` at it, prune old ones (one rank, after barrier)."""
        from .checksums import write_manifest

        tmp = self.temp_path(step)
        write_manifest(tmp, checksums)
        (tmp / COMPLETE).write_text(str(step))
        final = self.final_path(step)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        write_text(self.root / "latest", self.name(step) + "\n")
        if keep_last:
            for old in self.complete_steps()[:-keep_last]:
                shutil.rmtree(self.final_path(old), ignore_errors=True)
        return final

    def complete_steps(self) -> list[int]:
        if not self.root.is_dir():
            return []
        steps = []
        for p in self.root.iterdir():
            m = _ITER_RE.match(p.name)
            if m and (p / COMPLETE).is_file():
                steps.append(int(m.group(1)))
        return sorted(steps)

    def latest(self) -> Path | None:
        """The newest complete checkpoint: ``latest`` if it names a complete one, else the newest complete."""
        pointer = self.root / "latest"
        if pointer.is_file():
            path = self.root / pointer.read_text().strip()
            if (path / COMPLETE).is_file():
                return path
        steps = self.complete_steps()
        return self.final_path(steps[-1]) if steps else None

    def candidates(self) -> list[Path]:
        """Complete checkpoints to resume from, the one :meth:`latest` names first, then older ones, newest first
        (the fallback order when one turns out corrupt)."""
        first = self.latest()
        rest = [self.final_path(s) for s in reversed(self.complete_steps())]
        return ([first] if first is not None else []) + [p for p in rest if p != first]

    def clean_stale(self) -> list[Path]:
        """Remove temp folders of interrupted saves (one rank, before anything is written)."""
        removed = []
        if self.root.is_dir():
            for p in self.root.glob(".iter_*.tmp"):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
        return removed


def step_of(path: str | Path) -> int:
    m = _ITER_RE.match(Path(path).name)
    if not m:
        raise ValueError(f"{path} is not an iter_NNNNNNN checkpoint folder")
    return int(m.group(1))


def resolve_all(path: str | os.PathLike) -> list[Path]:
    """A checkpoint folder itself, or a training root's complete ``iter_*`` checkpoints, newest first."""
    path = Path(path)
    if (path / METADATA).is_file():
        return [path]
    if path.is_dir():
        found = CheckpointDir(path).candidates()
        if found and (found[0] / METADATA).is_file():  # the newest is not skipped for lacking it
            return [p for p in found if (p / METADATA).is_file()]
    raise FileNotFoundError(
        f"{path} is not a megatron-core distributed checkpoint (no {METADATA}) nor a training folder with a "
        f"complete iter_* checkpoint"
    )


def resolve(path: str | os.PathLike) -> Path:
    """A checkpoint folder itself, or a training root whose newest complete ``iter_*`` is taken."""
    return resolve_all(path)[0]
