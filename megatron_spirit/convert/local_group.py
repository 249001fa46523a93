"""A torch.distributed world of one process for the converters (megatron-core's checkpoint code is collective).

Uses an in-memory store, so concurrent conversions never compete for a TCP port. On a machine without CUDA the
project's CPU compatibility module (``parallel.cpu``) is enabled, as for every megatron-core code path here.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


@contextlib.contextmanager
def local_group() -> Iterator[None]:
    """Run the body inside a gloo world of one, unless a world of one already exists (then reuse it)."""
    from ..parallel import cpu

    switched_on = cpu.cuda_absent() and not cpu.enabled()
    if switched_on:
        cpu.enable()
    dist = torch.distributed
    try:
        if dist.is_initialized():
            if dist.get_world_size() != 1:
                raise RuntimeError(
                    f"checkpoint conversion runs in one process, but torch.distributed has "
                    f"{dist.get_world_size()} ranks"
                )
            yield
            return
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        try:
            yield
        finally:
            dist.destroy_process_group()
    finally:
        if switched_on:  # leave the caller's process as it was
            cpu.disable()
