"""Helper processes die with the rank that started them, and survive the launcher's SIGTERM to the group.

megatron-core's checkpoint save forks one writer process per file and keeps a ``multiprocessing`` Manager
(spawned, holding the writers' result queue) for the rank's lifetime. After ``kill -9`` of the rank both used to
live on as orphans (a writer finished its shard into the ``.tmp`` folder, then slept forever). And ``torchrun``,
on SIGTERM, sends SIGTERM to each worker's whole process group: the Manager died of it, so the save the signal
asked for failed with ``BrokenPipeError``.

:func:`install` (idempotent, Linux) makes every process this rank forks ask the kernel for SIGKILL when its
parent dies (``prctl(PR_SET_PDEATHSIG)``), and starts the dist-checkpointing Manager itself, with an initializer
that does the same and ignores SIGTERM/SIGINT (the rank decides when to stop; the Manager ends with it).
The kernel ties the request to the forking *thread*: a rank forks from its main thread (megatron-core's writers
do), since a child forked from a thread that ends before it would be killed with that thread.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1
_installed = False


def die_with_parent(parent: int | None = None) -> None:
    """SIGKILL this process when its parent dies (Linux; a no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - no prctl
        return
    if parent is not None and os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _after_fork_in_child() -> None:
    die_with_parent()


def _manager_init(parent: int) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_parent(parent)


def install() -> None:
    """Call in a rank before its first checkpoint save."""
    global _installed
    if _installed:
        return
    _installed = True
    os.register_at_fork(after_in_child=_after_fork_in_child)
    _start_checkpoint_manager()


def _start_checkpoint_manager() -> None:
    import multiprocessing as mp
    from multiprocessing.managers import SyncManager

    from megatron.core.dist_checkpointing.strategies import filesystem_async

    if getattr(filesystem_async, "_results_queue", None) is not None:
        return
    manager = SyncManager(ctx=mp.get_context("spawn"))  # the context megatron-core uses for it
    manager.start(initializer=_manager_init, initargs=(os.getpid(),))
    filesystem_async._results_queue = manager.Queue()
    filesystem_async._spirit_manager = manager  # keep it referenced: its finalizer stops it at exit
