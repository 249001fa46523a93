"""Rank functions for run_ranks (each runs in its own process, torch.distributed initialised)."""
from __future__ import annotations

import errno


def save_on_a_full_disk(config: str, overrides: list[str]):
    """Save step 0, then save step 1 with every file write failing as on a full disk (OSError ENOSPC in the
    forked writer processes). Returns (the error message, the folder ``latest`` then names, its problems)."""
    from megatron.core.dist_checkpointing.strategies import filesystem_async

    from megatron_spirit.checkpoint.checksums import verify
    from megatron_spirit.checkpoint.resume import SaveFailed, read_state
    from megatron_spirit.training.config import load_train_config
    from megatron_spirit.training.trainer import Trainer

    trainer = Trainer(load_train_config(config, overrides))
    trainer.setup()
    trainer.save()

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    filesystem_async._write_item = no_space
    trainer.step = 1
    try:
        trainer.save()
    except SaveFailed as e:
        message = str(e)
    else:
        raise AssertionError("the save on a full disk did not fail")
    latest = trainer.ckpt.latest()
    assert read_state(latest).step == 0
    return message, str(latest), verify(latest)
