"""``map`` over worker processes with results in input order and a bounded number of items in flight.

Shared by dataset builds and packing. Workers are forked, so state a function needs (a tokenizer, a parser,
memory-mapped packs) is set in a module global before the call and inherited, never pickled. The bound keeps
memory flat on inputs of any size (``Pool.imap`` would read its whole input ahead).
"""
from __future__ import annotations

import collections
import multiprocessing as mp
import sys
from typing import Callable, Iterable, Iterator


def ordered_map(fn: Callable, items: Iterable, workers: int) -> Iterator:
    """``fn(item)`` for each item, in order; in ``workers`` processes when ``workers`` > 1."""
    if workers <= 1:
        yield from map(fn, items)
        return
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else None)
    with ctx.Pool(workers) as pool:
        pending: collections.deque = collections.deque()
        for item in items:
            pending.append(pool.apply_async(fn, (item,)))
            if len(pending) >= 2 * workers + 2:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
