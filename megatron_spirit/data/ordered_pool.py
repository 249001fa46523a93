"""``map`` over worker processes with results in input order and a bounded number of items in flight.

Shared by dataset builds and packing. The worker is an object holding what it needs (a tokenizer, a parser,
memory-mapped packs); it reaches the pool's processes through the pool's initializer, so with fork (Linux) it is
inherited, never pickled, and only the items travel. The bound keeps memory flat on inputs of any size
(``Pool.imap`` would read its whole input ahead).
"""
from __future__ import annotations

import collections
import multiprocessing as mp
import sys
from typing import Callable, Iterable, Iterator

_worker: Callable | None = None  # in a pool process: the worker its initializer received


def _init(worker: Callable) -> None:
    global _worker
    _worker = worker


def _call(item):
    return _worker(item)


def ordered_map(worker: Callable, items: Iterable, workers: int) -> Iterator:
    """``worker(item)`` for each item, in order; in ``workers`` processes when ``workers`` > 1."""
    if workers <= 1:
        yield from map(worker, items)
        return
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else None)
    with ctx.Pool(workers, initializer=_init, initargs=(worker,)) as pool:
        pending: collections.deque = collections.deque()
        for item in items:
            pending.append(pool.apply_async(_call, (item,)))
            if len(pending) >= 2 * workers + 2:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
