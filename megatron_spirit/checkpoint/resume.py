"""Save and load a whole training state with megatron-core's dist_checkpointing (what a resume needs).

A checkpoint holds the model (sharded per TP/PP rank, reshardable on load: :mod:`.weights`), the optimizer state
in model space (:mod:`.optimizer_state`; with the distributed optimizer each DP rank saves and loads only the range
it owns), every rank's RNG state, and a :class:`.state.TrainingState` (step, data
position, LR scheduler, ...) as the common state saved by rank 0. Writing goes to a temp folder that becomes
``iter_NNNNNNN`` and then ``latest`` only when complete (:mod:`.folder`), with the checksums of every file
(:mod:`.checksums`; the ranks split the checksumming at save and the verification at load, which runs beside
megatron-core's reads). A load that finds a file altered or truncated raises :class:`.checksums.CorruptCheckpoint`
naming it, on every rank; a save that fails writing raises :class:`SaveFailed` naming the folder (and saying when
the disk is full), leaving the previous checkpoint and ``latest`` as they were.
"""
from __future__ import annotations

import contextlib
import errno
import random
import shutil
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing, parallel_state
from megatron.core.dist_checkpointing.mapping import ShardedObject

from . import checksums, optimizer_state
from .folder import CheckpointDir
from .state import Layout, TrainingState
from .weights import load_chunk, model_sharded_state_dict


def _merged_model_sd(model_sd: dict) -> dict:
    return {f"chunk{i}": sd for i, sd in enumerate(model_sd.values())}


def _rng_object() -> ShardedObject:
    state = {
        "random": random.getstate(),
        "np": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
    }
    pp, tp, dp = (parallel_state.get_pipeline_model_parallel_rank(), parallel_state.get_tensor_model_parallel_rank(),
                  parallel_state.get_data_parallel_rank())
    layout = Layout.current()
    return ShardedObject("rng_state", state, (layout.pp, layout.tp, layout.dp), (pp, tp, dp), replica_id=0)


def _set_rng(state: dict) -> None:
    random.setstate(state["random"])
    np.random.set_state(state["np"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _is_distributed(optimizer) -> bool:
    return any(optimizer_state.is_distributed(o) for o in optimizer_state.sub_optimizers(optimizer))


class SaveFailed(RuntimeError):
    """Writing a checkpoint failed; the previous complete checkpoint is untouched."""


#: Below this much free space a failed write is put down to a full disk (torch's zip writer reports ENOSPC as
#: ``enforce fail at inline_container.cc``, without the errno).
_FULL_DISK_BYTES = 64 * 2**20


def _disk_full(error: BaseException, folder: Path) -> bool:
    e: BaseException | None = error
    while e is not None:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        e = e.__cause__ or e.__context__
    if "No space left on device" in str(error) or f"[Errno {errno.ENOSPC}]" in str(error):
        return True
    try:
        return shutil.disk_usage(folder).free < _FULL_DISK_BYTES
    except OSError:
        return False


def _save_failed(error: BaseException, ckpt_dir: CheckpointDir, step: int) -> SaveFailed:
    tmp = ckpt_dir.temp_path(step)
    previous = ckpt_dir.latest()
    kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
    if _disk_full(error, tmp.parent if not tmp.exists() else tmp):
        return SaveFailed(f"checkpoint of step {step} not saved: no space left on device writing {tmp}; {kept} "
                          "(free space and resume from it)")
    return SaveFailed(f"checkpoint of step {step} not saved: writing {tmp} failed; {kept}. The error:\n"
                      f"{str(error).strip()[:2000]}")


@contextlib.contextmanager
def _common_failures_deferred():
    """Yield a list that collects failures of rank 0's ``common.pt`` write instead of letting them raise: raised
    there, rank 0 would leave the collective save the other ranks are in, and they would hang. (megatron-core
    takes no common strategy argument; its registry of default strategies is the way in, restored after.)"""
    from megatron.core.dist_checkpointing.strategies.base import (
        StrategyAction,
        get_default_strategy,
        register_default_strategy,
    )
    from megatron.core.dist_checkpointing.strategies.common import TorchCommonSaveStrategy

    failures: list[BaseException] = []

    class Deferring(TorchCommonSaveStrategy):
        def save_common(self, common_state_dict, checkpoint_dir):
            try:
                super().save_common(common_state_dict, checkpoint_dir)
            except Exception as e:  # noqa: BLE001 - reported by save() on every rank
                failures.append(e)

    default = get_default_strategy(StrategyAction.SAVE_COMMON, "torch", 1)
    register_default_strategy(StrategyAction.SAVE_COMMON, "torch", 1, Deferring("torch", 1))
    try:
        yield failures
    finally:
        register_default_strategy(StrategyAction.SAVE_COMMON, "torch", 1, default)


def save(ckpt_dir: CheckpointDir, state: TrainingState, model: list, optimizer, scheduler,
         keep_last: Optional[int] = None, describe: Optional[Callable[[Path], None]] = None) -> Path:
    """Collective: every rank calls it. Returns the final folder.

    ``state`` carries the step and data position; its layout, scheduler and optimizer fields are filled in here.
    ``describe(folder)``, called on rank 0 before the folder is committed, adds the files that make the
    checkpoint self-describing (:func:`.info.describe`).
    """
    from ..parallel.helpers import install

    install()  # the writer processes megatron-core starts die with this rank and survive a group SIGTERM
    step = state.step
    rank, world = dist.get_rank(), dist.get_world_size()
    rank0 = rank == 0
    error = None
    if rank0:
        try:
            tmp = ckpt_dir.begin(step)
            if describe is not None:
                describe(tmp)
        except OSError as e:
            error = e
    if checksums.agree([repr(error)] if error is not None else []):
        raise _save_failed(error or RuntimeError("rank 0 could not start the checkpoint"), ckpt_dir, step)
    model_sd = model_sharded_state_dict(model)
    sharded = dict(model_sd)
    sharded["optimizer"] = optimizer_state.sharded_state_dict(optimizer, _merged_model_sd(model_sd), is_loading=False)
    sharded["rng_state"] = _rng_object()
    full = TrainingState(
        step=step, consumed_samples=state.consumed_samples, skipped=state.skipped, padded_vocab=state.padded_vocab,
        layout=Layout.current(), distributed_optimizer=_is_distributed(optimizer),
        scheduler=scheduler.state_dict(), optimizer_common=optimizer_state.common_state(optimizer),
    )
    sharded["common"] = full.to_common()
    tmp = ckpt_dir.temp_path(step)
    with _common_failures_deferred() as failures:
        try:
            dist_checkpointing.save(sharded, str(tmp))
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as e:  # noqa: BLE001 - torch's CheckpointException (a BaseException) is raised on
            failures.append(e)  # every rank, only the coordinator's names the writers' errors: all report all
    reasons = checksums.agree([f"{type(e).__name__}: {e}" for e in failures])
    if reasons:
        raise _save_failed(RuntimeError("\n".join(reasons)), ckpt_dir, step) from (failures[0] if failures else None)
    dist.barrier()
    sums = [None] * world
    dist.all_gather_object(sums, checksums.entries(tmp, rank, world))
    final = ckpt_dir.final_path(step)
    if rank0:
        try:
            ckpt_dir.commit(step, keep_last=keep_last, checksums={k: v for part in sums for k, v in part.items()})
        except OSError as e:
            error = e
    if checksums.agree([repr(error)] if error is not None else []):
        raise _save_failed(error or RuntimeError("rank 0 could not commit the checkpoint"), ckpt_dir, step)
    return final


def read_state(path: str | Path) -> TrainingState:
    """The training state of a checkpoint folder, without loading any tensor; CorruptCheckpoint when its file
    cannot be read."""
    try:
        common = dist_checkpointing.load_common_state_dict(str(path))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: BLE001 - name the bad file when the checksums can
        problems = checksums.verify(path)
        raise checksums.CorruptCheckpoint(path, problems or [f"its common state cannot be read ({e})"]) from e
    return TrainingState.from_common(common["common"], str(path))


def load(path: str | Path, model: list, optimizer, scheduler) -> TrainingState:
    """Restore a full training state (collective) and return it.

    RNG states are restored only when the layout matches the one saved; at another TP/PP/DP the model and
    optimizer state are resharded and the RNG starts from the run's seed.
    """
    path = str(path)
    state = read_state(path)
    if state.distributed_optimizer != _is_distributed(optimizer):
        raise RuntimeError(
            f"{path} was saved with parallel.distributed_optimizer={state.distributed_optimizer}; resume with "
            "the same setting (the layout may change), or start a new run from it with checkpoint.finetune_from "
            "(weights only)"
        )
    same_layout = state.layout == Layout.current()
    model_sd = model_sharded_state_dict(model)
    request = dict(model_sd)
    request["optimizer"] = optimizer_state.sharded_state_dict(optimizer, _merged_model_sd(model_sd), is_loading=True)
    if same_layout:
        request["rng_state"] = _rng_object()
    loaded = checksums.load_verified(request, path)
    for key, m in zip(model_sd, model):
        load_chunk(m, loaded[key], path)
    optimizer_state.load_state(optimizer, loaded["optimizer"], state.optimizer_common)
    scheduler.load_state_dict(state.scheduler)
    if same_layout:
        _set_rng(loaded["rng_state"])
    return state
