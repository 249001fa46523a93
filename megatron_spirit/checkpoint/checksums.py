"""Checksums of every file of a checkpoint: written at save, verified at load and export.

A flipped byte inside a shard keeps its size and zip structure, so megatron-core loads it without complaint and
one weight is silently wrong; a truncated shard fails deep inside torch with no file named. ``checksums.json``
(the size and digest of each file) is written as part of the folder protocol, before the ``COMPLETE`` marker,
and checked on load: a mismatch is a :class:`CorruptCheckpoint` naming the files.

The digest is xxHash's XXH3-128 (the ``xxhash`` package) because verification must stay a small part of a
load: it runs at ~7 GB/s per core here, against ~2.5 GB/s for ``zlib.crc32`` (the fallback when ``xxhash`` is
missing; a manifest names its algorithm and either is verified), ~0.8 GB/s for sha1 and ~0.4 GB/s for blake2b.
Both catch accidents (bad disks, truncated or half-copied files), not tampering. Files are read in 16 MiB
blocks into one reused buffer; a load verifies in a background thread while megatron-core reads the tensors
(:func:`verified`), each rank its share of the files; ``benchmarks/bench_checkpoint_verify.py`` measures it.
"""
from __future__ import annotations

import contextlib
import json
import os
import threading
import zlib
from pathlib import Path
from typing import Callable, Optional

MANIFEST = "checksums.json"
_BLOCK = 16 * 2**20
try:
    import xxhash

    ALGORITHM = "xxh3_128"
except ImportError:  # pragma: no cover - a core dependency; crc32 keeps checkpoints verifiable without it
    xxhash = None
    ALGORITHM = "crc32"
#: Not covered: the marker is written after the manifest (its presence is what the protocol checks).
_SKIP = {MANIFEST, "COMPLETE"}


class CorruptCheckpoint(RuntimeError):
    """A checkpoint file is missing, truncated or altered; the message names the files."""

    def __init__(self, folder, problems: list[str]):
        self.folder = Path(folder)
        self.problems = list(problems)
        shown = "; ".join(self.problems[:5]) + (f"; … ({len(self.problems)} in all)" if len(self.problems) > 5 else "")
        super().__init__(f"checkpoint {folder} is corrupt: {shown}")


class _Crc32:
    def __init__(self):
        self.value = 0

    def update(self, data) -> None:
        self.value = zlib.crc32(data, self.value)

    def hexdigest(self) -> str:
        return f"{self.value:08x}"


def file_digest(path: str | os.PathLike, algorithm: str) -> str:
    if algorithm == "xxh3_128" and xxhash is not None:
        h = xxhash.xxh3_128()
    elif algorithm == "crc32":
        h = _Crc32()
    else:
        raise ValueError(f"checksum algorithm {algorithm!r} is not available (pip install xxhash)")
    buf = bytearray(_BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name not in _SKIP)


def entries(folder: str | os.PathLike, part: int = 0, parts: int = 1) -> dict:
    """``{file: {size, crc32}}`` for files ``part::parts`` of ``folder`` (ranks split a save's checksumming)."""
    folder = Path(folder)
    return {rel: {"size": (folder / rel).stat().st_size, ALGORITHM: file_digest(folder / rel, ALGORITHM)}
            for rel in _files(folder)[part::parts]}


def write_manifest(folder: str | os.PathLike, files: Optional[dict] = None) -> Path:
    """Write ``checksums.json`` atomically (call when every file is written): ``files`` from :func:`entries`,
    or every file now in ``folder``."""
    from ..utils.atomic import write_text

    folder = Path(folder)
    files = entries(folder) if files is None else files
    path = folder / MANIFEST
    write_text(path, json.dumps({"algorithm": ALGORITHM, "files": files}, indent=1) + "\n")
    return path


def read_manifest(folder: str | os.PathLike) -> Optional[tuple[str, dict]]:
    """(algorithm, ``{file: {size, <algorithm>}}``), or None for a checkpoint saved before checksums existed."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        if data.get("algorithm") not in ("xxh3_128", "crc32") or not isinstance(data.get("files"), dict):
            raise ValueError(f"algorithm {data.get('algorithm')!r}")
        return data["algorithm"], data["files"]
    except (ValueError, AttributeError) as e:
        raise CorruptCheckpoint(folder, [f"{MANIFEST} is unreadable ({e})"]) from None


def verify(folder: str | os.PathLike, part: int = 0, parts: int = 1) -> list[str]:
    """Problems found in files ``part::parts`` of the manifest (split the work across ranks); [] when intact.
    A folder without a manifest has nothing to verify (see :func:`check_manifest`)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        return []
    algorithm, files = manifest
    problems = []
    for rel in sorted(files)[part::parts]:
        want = files[rel]
        path = folder / rel
        if not path.is_file():
            problems.append(f"{path} is missing")
            continue
        size = path.stat().st_size
        if size != want["size"]:
            problems.append(f"{path} has {size} bytes, {want['size']} when saved (truncated or replaced)")
        elif file_digest(path, algorithm) != want.get(algorithm):
            problems.append(f"{path} does not match its checksum (altered since it was saved)")
    return problems


def check_manifest(folder: str | os.PathLike, warn: Callable[[str], None] = print) -> bool:
    """False (after a warning) for a checkpoint without checksums; raises when the manifest is unreadable."""
    if read_manifest(folder) is None:
        warn(f"warning: {folder} has no {MANIFEST} (saved before checksums were written): its files are not "
             "verified")
        return False
    return True


def verify_or_raise(folder: str | os.PathLike) -> None:
    problems = verify(folder)
    if problems:
        raise CorruptCheckpoint(folder, problems)


class verify_async:
    """``with verify_async(folder, part, parts) as v: load(...)``; then ``v.problems`` (the thread is joined on
    exit, even when the load raised)."""

    def __init__(self, folder, part: int = 0, parts: int = 1):
        self.problems: list[str] = []
        self._error: Optional[BaseException] = None

        def run():
            try:
                self.problems = verify(folder, part, parts)
            except BaseException as e:  # noqa: BLE001 - re-raised by the caller's thread
                self._error = e

        self._thread = threading.Thread(target=run, name="checkpoint-verify", daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._thread.join()
        if self._error is not None and exc[0] is None:
            raise self._error
        return False


def agree(problems: list[str]) -> list[str]:
    """Every rank's problems, on every rank (a collective)."""
    import torch.distributed as dist

    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, problems)
    return [p for part in gathered for p in part]


@contextlib.contextmanager
def verified(folder: str | os.PathLike, part: int = 0, parts: int = 1, gather=None):
    """Run the block (reads of ``folder``) while a thread verifies files ``part::parts``; ``gather`` joins the
    ranks' findings (:func:`agree`) when the ranks split the work. Raises CorruptCheckpoint naming the bad files,
    also when the block failed on a damaged file."""
    error = None
    with verify_async(folder, part, parts) as check:
        try:
            yield
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # noqa: BLE001 - torch's CheckpointException is a BaseException
            error = e
    problems = gather(check.problems) if gather is not None else check.problems
    if problems:
        raise CorruptCheckpoint(folder, problems) from error
    if error is not None:
        if "PytorchStreamReader" in str(error) or "corrupt" in str(error).lower():
            raise CorruptCheckpoint(folder, [f"a file cannot be read ({str(error).strip()[:300]})"]) from error
        raise error


def load_verified(request: dict, path: str | Path) -> dict:
    """``dist_checkpointing.load`` while this rank verifies its share of the files (collective)."""
    import torch.distributed as dist
    from megatron.core import dist_checkpointing

    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if rank == 0:
        check_manifest(path)  # an old checkpoint: warn that nothing is verified
    with verified(path, rank, world, agree if world > 1 else None):
        loaded = dist_checkpointing.load(request, str(path))
    return loaded


def fallback_warning(error: Exception, older: Path) -> str:
    return (f"WARNING: {error}\nWARNING: falling back to the previous complete checkpoint {older} (later steps "
            "are lost; set checkpoint.fallback=false / --no-fallback to stop instead)")
