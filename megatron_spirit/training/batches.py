"""Per-step micro-batches for this data-parallel rank, read by sample index from the run's GPTDatasets.

Sample order is a pure function of the step: micro-batch ``j`` of step ``k`` on data-parallel rank ``r`` holds
samples ``k·G + j·(m·D) + r·m … + m`` (global batch G, micro-batch m, DP size D). A global batch is therefore
the same set of samples whatever the layout, and the data position in a checkpoint is just ``step × G``.
"""
from __future__ import annotations

from typing import Iterator

import torch

from .config import DataConfig


#: What a model step reads from a GPTDataset sample (blended datasets add a dataset id, which is not needed).
_FIELDS = ("tokens", "labels", "loss_mask", "position_ids", "attention_mask")


def micro_batches(dataset, first_sample: int, num_micro: int, micro_batch: int, dp_rank: int,
                  dp_size: int) -> Iterator[dict]:
    """This data-parallel rank's ``num_micro`` micro-batches of the global batch starting at ``first_sample``."""
    m, d = micro_batch, dp_size
    for j in range(num_micro):
        start = first_sample + j * m * d + dp_rank * m
        samples = [dataset[i] for i in range(start, start + m)]
        batch = {k: torch.stack([s[k] for s in samples]) for k in _FIELDS if k in samples[0]}
        batch.setdefault("attention_mask", None)
        if torch.cuda.is_available():
            batch = {k: (v.cuda(non_blocking=True) if v is not None else None) for k, v in batch.items()}
        yield batch


class TrainData:
    """Train/validation GPTDatasets and per-step micro-batch iterators for this data-parallel rank."""

    def __init__(self, cfg: DataConfig, seq_length: int, tokenizer, global_batch: int, micro_batch: int,
                 num_micro: int, train_steps: int, eval_steps: int = 0, eval_interval: int = 0, seed: int = 1234,
                 warn=None):
        """``num_micro``: micro-batches per step on each rank (``TrainConfig.batch_layout``); ``warn``: where the
        data checks' warnings go (default :func:`warnings.warn`; the trainer logs them once, on rank 0)."""
        from megatron.core import parallel_state

        from .datasets import build_gpt_datasets, data_blend

        self.global_batch, self.micro_batch, self.num_micro = global_batch, micro_batch, num_micro
        self.dp_rank = parallel_state.get_data_parallel_rank()
        self.dp_size = parallel_state.get_data_parallel_world_size()
        n_evals = (train_steps // eval_interval + 1) if eval_interval else 0
        sizes = [train_steps * global_batch, n_evals * eval_steps * global_batch, 0]
        train, valid, _ = build_gpt_datasets(
            data_blend(cfg), tokenizer, seq_length, sizes, seed=seed, cache_dir=cfg.cache_dir,
            reset_position_ids=cfg.reset_position_ids, reset_attention_mask=cfg.reset_attention_mask,
            eod_mask_loss=cfg.eod_mask_loss, create_attention_mask=cfg.reset_attention_mask, warn=warn,
        )
        if train is None:
            raise ValueError("the training split is empty: check data.split and the datasets")
        self.train, self.valid = train, valid

    def _batches(self, dataset, first_sample: int, num_micro: int) -> Iterator[dict]:
        return micro_batches(dataset, first_sample, num_micro, self.micro_batch, self.dp_rank, self.dp_size)

    def train_iterators(self, step: int, chunks: int) -> list:
        """One iterator per model chunk over this step's micro-batches (the schedules pull from each)."""
        return [self._batches(self.train, step * self.global_batch, self.num_micro) for _ in range(chunks)]

    def valid_iterators(self, k: int, chunks: int) -> list:
        if self.valid is None:
            raise ValueError("no validation split: set data.split (e.g. 98,2,0) or a 'valid' list in the blend")
        return [self._batches(self.valid, k * self.global_batch, self.num_micro) for _ in range(chunks)]
