"""Rank functions for run_ranks (each runs in its own process, torch.distributed initialised)."""
from __future__ import annotations

import errno


def save_on_a_full_disk(config: str, overrides: list[str]):
    """Save step 0, then steps 1 and 2 failing as on a full disk (OSError ENOSPC): rank 0's common state, then
    every shard (in the forked writer processes). Returns (the two error messages, the folder ``latest`` then
    names, its problems)."""
    import torch
    from megatron.core.dist_checkpointing.strategies import common, filesystem_async

    from megatron_spirit.checkpoint.checksums import verify
    from megatron_spirit.checkpoint.resume import SaveFailed, read_state
    from megatron_spirit.training.config import load_train_config
    from megatron_spirit.training.trainer import Trainer

    trainer = Trainer(load_train_config(config, overrides))
    trainer.setup()
    trainer.save()

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    def fails(step):
        trainer.step = step
        try:
            trainer.save()
        except SaveFailed as e:
            return str(e)
        raise AssertionError("the save on a full disk did not fail")

    # rank 0's common.pt alone (torch.save's "enforce fail at inline_container.cc" on a full disk): the other
    # ranks are in the collective save meanwhile and must not hang
    real = common.TorchCommonSaveStrategy.save_common
    if torch.distributed.get_rank() == 0:
        common.TorchCommonSaveStrategy.save_common = no_space
    messages = [fails(1)]
    common.TorchCommonSaveStrategy.save_common = real
    filesystem_async._write_item = no_space  # every shard, in the forked writer processes
    messages.append(fails(2))
    latest = trainer.ckpt.latest()
    assert read_state(latest).step == 0
    return messages, str(latest), verify(latest)
