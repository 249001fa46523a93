"""The parallel runtime: launcher environment → torch.distributed → megatron-core's ``parallel_state``.

Usage (trainer, converters, tests)::

    from megatron_spirit.parallel.runtime import init_distributed, init_model_parallel, teardown
    env = init_distributed()                      # torchrun or Slurm variables; gloo on CPU, nccl on GPU
    init_model_parallel(parallel_cfg, seed=1234)  # TP/PP/VPP/DP groups + per-rank seeds
    ...
    teardown()

``init_distributed`` reads torchrun's ``RANK/WORLD_SIZE/LOCAL_RANK`` or, failing those, Slurm's
``SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID`` (``MASTER_ADDR`` defaults to the first host of
``SLURM_JOB_NODELIST`` when Slurm is the source, ``MASTER_PORT`` to a port derived from the job id); with
neither it starts a world of one. On a machine without CUDA the process entry must have switched on
``parallel.cpu`` (a clear error otherwise) so megatron-core's CUDA assumptions are bridged.
"""
from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch

from . import cpu


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job, as the launcher said."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    source: str  # "torchrun", "slurm" or "single"


def _first_slurm_host(nodelist: str) -> str:
    """First host of a Slurm nodelist like ``node[01-04,07],gpu5`` (scontrol when present, else parsed)."""
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=10, check=True
        ).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass
    m = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist)
    if not m:
        raise ValueError(f"cannot parse SLURM_JOB_NODELIST {nodelist!r}")
    prefix, ranges = m.group(1), m.group(2)
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def read_env(environ: dict | None = None) -> DistEnv:
    """The process's rank, world size, local rank and rendezvous address from torchrun or Slurm variables."""
    env = os.environ if environ is None else environ

    def need(name: str) -> int:
        try:
            return int(env[name])
        except ValueError:
            raise ValueError(f"environment variable {name}={env[name]!r} is not an integer") from None

    if "RANK" in env and "WORLD_SIZE" in env:
        rank, world, local = need("RANK"), need("WORLD_SIZE"), int(env.get("LOCAL_RANK", 0))
        addr, port, source = env.get("MASTER_ADDR", "127.0.0.1"), int(env.get("MASTER_PORT", 29500)), "torchrun"
    elif "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        rank, world, local = need("SLURM_PROCID"), need("SLURM_NTASKS"), int(env.get("SLURM_LOCALID", 0))
        addr = env.get("MASTER_ADDR") or _first_slurm_host(env.get("SLURM_JOB_NODELIST", "127.0.0.1"))
        port = int(env.get("MASTER_PORT") or 20000 + int(env.get("SLURM_JOB_ID", 0)) % 20000)
        source = "slurm"
    else:
        rank, world, local = 0, 1, 0
        addr, port, source = env.get("MASTER_ADDR", "127.0.0.1"), int(env.get("MASTER_PORT", 29500)), "single"
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside a world of {world} processes ({source} environment)")
    return DistEnv(rank, world, local, addr, port, source)


def init_distributed(environ: dict | None = None, timeout_minutes: int = 30) -> DistEnv:
    """Start torch.distributed for this process (idempotent): nccl with CUDA, gloo without."""
    env = read_env(environ)
    cpu.require("init_distributed")
    if torch.distributed.is_initialized():
        return env
    if torch.cuda.is_available():
        torch.cuda.set_device(env.local_rank % torch.cuda.device_count())
        backend = "nccl"
    else:
        backend = "gloo"
    torch.distributed.init_process_group(
        backend=backend,
        init_method=f"tcp://{env.master_addr}:{env.master_port}",
        rank=env.rank,
        world_size=env.world_size,
        timeout=timedelta(minutes=timeout_minutes),
    )
    return env


def seed_everything(seed: int) -> None:
    """Seed python, numpy, torch and megatron's per-TP-rank RNG tracker with ``seed`` (see ``stage_seed``)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    cpu.seed_model_parallel_rng(seed)


def stage_seed(seed: int, pipeline_rank: int) -> int:
    """The seed of a pipeline stage: ``seed + 100 × PP rank``, as megatron's own training does.

    Without the offset every stage would start from the same RNG state and initialise its layers exactly like
    the first stage's (layer 2 = layer 0 at PP=2). TP and DP ranks of a stage share the seed: with CPU
    initialisation each weight is drawn full-size and split (initial weights do not depend on TP); on GPU
    megatron's tracker gives each TP rank its own stream; DP replicas must start identical.
    """
    return seed + 100 * pipeline_rank


def init_model_parallel(parallel_cfg, seed: int = 1234) -> None:
    """Build megatron-core's TP/PP/(V)PP/DP groups for ``parallel_cfg`` (a ``model.config.ParallelConfig``).

    Re-initialises cleanly if groups already exist (tests run several layouts in one process).
    """
    from megatron.core import parallel_state

    if not torch.distributed.is_initialized():
        init_distributed()
    world = torch.distributed.get_world_size()
    parallel_cfg.data_parallel_size(world)  # validates divisibility with a clear message
    if parallel_state.model_parallel_is_initialized():
        destroy_model_parallel()
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=parallel_cfg.tp,
        pipeline_model_parallel_size=parallel_cfg.pp,
        virtual_pipeline_model_parallel_size=parallel_cfg.vpp,
        create_gloo_process_groups=True,
    )
    seed_everything(stage_seed(seed, parallel_state.get_pipeline_model_parallel_rank()))


def destroy_model_parallel() -> None:
    """Drop megatron's groups and per-process caches (global memory buffer) so a new layout starts clean."""
    from megatron.core import parallel_state

    parallel_state.destroy_model_parallel()
    parallel_state.destroy_global_memory_buffer()


def teardown() -> None:
    """Destroy parallel_state (if megatron-core was used) and the process group (safe to call twice)."""
    parallel_state = sys.modules.get("megatron.core.parallel_state")
    if parallel_state is not None and parallel_state.model_parallel_is_initialized():
        destroy_model_parallel()
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
