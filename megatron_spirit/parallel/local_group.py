"""A torch.distributed world of one process for offline tools (megatron-core's checkpoint code is collective).

Uses an in-memory store, so concurrent conversions never compete for a TCP port. On a machine without CUDA the
process must have switched on ``parallel.cpu`` at its entry (the ``spirit-*`` commands do), as for every
megatron-core code path here.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def local_group() -> Iterator[None]:
    """Run the body inside a gloo world of one, unless a world of one already exists (then reuse it)."""
    from . import cpu

    cpu.require("a local process group")
    dist = torch.distributed
    if dist.is_initialized():
        if dist.get_world_size() != 1:
            raise RuntimeError(
                f"checkpoint conversion runs in one process, but torch.distributed has {dist.get_world_size()} ranks"
            )
        yield
        return
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()
