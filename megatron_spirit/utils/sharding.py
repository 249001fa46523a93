"""Shards: ``--shard i/n`` and the one rule that splits work into ``n`` contiguous, balanced parts.

Every sharded job (audio records, JSONL bytes, pack records) splits the concatenation of its inputs the same way:
shard ``i`` of ``n`` owns positions ``[i·total/n, (i+1)·total/n)``, so shards partition the whole, in order.
"""
from __future__ import annotations

import re
from typing import NamedTuple, Sequence


class Shard(NamedTuple):
    """Shard ``index`` (0-based) of ``count``."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """``"i/n"`` → ``Shard(i, n)``; anything else, or not ``0 <= i < n``, is a ValueError naming it."""
        m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
        if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
            raise ValueError(f"--shard must be i/n (0-based: need 0 <= i < n), got {text!r}")
        return cls(int(m.group(1)), int(m.group(2)))

    def span(self, total: int) -> tuple[int, int]:
        """The positions ``[lo, hi)`` of ``range(total)`` this shard owns."""
        return total * self.index // self.count, total * (self.index + 1) // self.count

    def slice(self, total: int) -> slice:
        return slice(*self.span(total))


WHOLE = Shard(0, 1)


def parse_shard(text: str | None) -> Shard | None:
    """``--shard``'s value: None (the whole input) or a :class:`Shard`."""
    return None if text is None else Shard.parse(text)


def split(sizes: Sequence[int], shard: Shard | None) -> list[tuple[int, int, int]]:
    """``(k, lo, hi)``: the part ``[lo, hi)`` of input ``k`` (of ``sizes``, concatenated) the shard owns; inputs it
    does not touch are left out."""
    lo, hi = (shard or WHOLE).span(sum(sizes))
    out, base = [], 0
    for k, size in enumerate(sizes):
        a, b = max(lo - base, 0), min(hi - base, size)
        if a < b:
            out.append((k, a, b))
        base += size
    return out
