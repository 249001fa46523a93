"""Validation loss of each subset of the blend on its own (text, speech, interleaved), an :class:`Evaluator`.

The blend's own validation loss mixes the subsets in their sampling shares; a model can get better at one and
worse at another with that mix unchanged. Each subset's validation split is built from the blend's datasets of
that subset (``spirit-data mixture`` lists them under ``subsets.<name>.prefixes``), weighted as in the blend;
blends without that list, ``blend_per_split`` validation sets and plain ``data.prefixes`` get one entry per
dataset, named by its file. ``schedule.eval_steps`` global batches per subset, at every ``schedule.eval_interval``.
"""
from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import torch

from ..data.mixture import Blend, load_blend
from .batches import micro_batches
from .config import TrainConfig
from .datasets import build_gpt_datasets, data_blend
from .trainer import Trainer, global_loss


def validation_subsets(cfg: TrainConfig) -> dict[str, Blend]:
    """``{subset name: blend of its validation data}`` for the run's blend."""
    blend = data_blend(cfg.data)
    raw = json.loads(Path(cfg.data.blend).read_text()) if cfg.data.blend and cfg.data.blend.endswith(".json") else {}
    if blend.blend is not None:
        prefixes, weights = blend.blend
        weight = dict(zip(prefixes, weights))
        groups = {name: [p for p in sub.get("prefixes", []) if p in weight]
                  for name, sub in (raw.get("subsets") or {}).items()}
        groups = {k: v for k, v in groups.items() if v}
        covered = {p for v in groups.values() for p in v}
        groups |= {Path(p).name: [p] for p in prefixes if p not in covered}
        return {name: Blend(blend=(ps, [weight[p] for p in ps]), split=blend.split) for name, ps in groups.items()}
    valid = blend.blend_per_split[1]
    if valid is None:
        return {}
    return {Path(p).name: Blend(blend_per_split=(None, ([p], [1.0]), None)) for p in valid[0]}


def _forward_step(data_iterator, model):
    batch = next(data_iterator)
    output = model(batch["tokens"], batch["position_ids"], batch["attention_mask"], labels=batch["labels"])
    return output, partial(Trainer._loss, batch["loss_mask"])


class SubsetValidation:
    """Per-subset validation loss (built on first use: parallel_state must exist)."""

    name = "valid"

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.datasets = None

    def due(self, step: int) -> bool:
        k = self.cfg.schedule.eval_interval
        return bool(k) and step % k == 0

    def _build(self):
        from megatron.core import parallel_state as ps

        from ..tokenizer.tokenizer import SpiritTokenizer

        cfg, s = self.cfg, self.cfg.schedule
        tok = SpiritTokenizer(cfg.data.tokenizer)
        self.dp_rank, self.dp = ps.get_data_parallel_rank(), ps.get_data_parallel_world_size()
        self.num_micro = s.global_batch_size // (s.micro_batch_size * self.dp)
        self.last = ps.is_pipeline_last_stage(ignore_virtual=True)
        n = s.eval_steps * s.global_batch_size
        self.datasets = {}
        for name, blend in validation_subsets(cfg).items():
            _, valid, _ = build_gpt_datasets(
                blend, tok, cfg.model_config.seq_length, [0, n, 0], seed=cfg.data_seed, cache_dir=cfg.data.cache_dir,
                reset_position_ids=cfg.data.reset_position_ids, reset_attention_mask=cfg.data.reset_attention_mask,
                eod_mask_loss=cfg.data.eod_mask_loss, create_attention_mask=cfg.data.reset_attention_mask,
                warn=lambda _: None)  # the same datasets as training's: the trainer has logged their warnings
            if valid is not None:
                self.datasets[name] = valid

    @torch.no_grad()
    def __call__(self, model: list, step: int) -> dict[str, float]:
        from megatron.core.pipeline_parallel import get_forward_backward_func

        if self.datasets is None:
            self._build()
        s = self.cfg.schedule
        for m in model:
            m.eval()
        out = {}
        try:
            for name, dataset in self.datasets.items():
                losses = []
                for k in range(s.eval_steps):
                    batches = [micro_batches(dataset, k * s.global_batch_size, self.num_micro, s.micro_batch_size,
                                             self.dp_rank, self.dp) for _ in model]
                    results = get_forward_backward_func()(
                        forward_step_func=_forward_step, data_iterator=batches if len(model) > 1 else batches[0],
                        model=model if len(model) > 1 else model[0], num_microbatches=self.num_micro,
                        seq_length=self.cfg.model_config.seq_length, micro_batch_size=s.micro_batch_size,
                        forward_only=True)
                    losses.append(global_loss(results, self.last))
                out[name] = sum(losses) / len(losses)
        finally:
            for m in model:
                m.train()
        return out
