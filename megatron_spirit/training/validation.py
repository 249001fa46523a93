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
import torch.distributed as dist

from ..data.mixture import Blend, load_blend
from .batches import _FIELDS
from .config import TrainConfig
from .datasets import build_gpt_datasets, data_blend


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
    from .trainer import Trainer

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
                eod_mask_loss=cfg.data.eod_mask_loss, create_attention_mask=cfg.data.reset_attention_mask)
            if valid is not None:
                self.datasets[name] = valid

    def _batches(self, dataset, first: int):
        m = self.cfg.schedule.micro_batch_size
        for j in range(self.num_micro):
            start = first + j * m * self.dp + self.dp_rank * m
            samples = [dataset[i] for i in range(start, start + m)]
            batch = {k: torch.stack([s[k] for s in samples]) for k in _FIELDS if k in samples[0]}
            batch.setdefault("attention_mask", None)
            if torch.cuda.is_available():
                batch = {k: (v.cuda(non_blocking=True) if v is not None else None) for k, v in batch.items()}
            yield batch

    @torch.no_grad()
    def __call__(self, model: list, step: int) -> dict[str, float]:
        from megatron.core import parallel_state as ps
        from megatron.core.pipeline_parallel import get_forward_backward_func

        if self.datasets is None:
            self._build()
        s = self.cfg.schedule
        for m in model:
            m.eval()
        out = {}
        try:
            for name, dataset in self.datasets.items():
                t = torch.zeros(2, dtype=torch.float64)
                for k in range(s.eval_steps):
                    iters = [self._batches(dataset, k * s.global_batch_size) for _ in model]
                    results = get_forward_backward_func()(
                        forward_step_func=_forward_step, data_iterator=iters if len(model) > 1 else iters[0],
                        model=model if len(model) > 1 else model[0], num_microbatches=self.num_micro,
                        seq_length=self.cfg.model_config.seq_length, micro_batch_size=s.micro_batch_size,
                        forward_only=True)
                    if self.last:
                        for r in results:
                            t += r["lm loss"].double().cpu()
                if torch.cuda.is_available():
                    t = t.cuda()
                dist.all_reduce(t, group=ps.get_data_parallel_group())
                dist.all_reduce(t, op=dist.ReduceOp.MAX, group=ps.get_pipeline_model_parallel_group())
                out[name] = float(t[0] / max(float(t[1]), 1.0))
        finally:
            for m in model:
                m.train()
        return out
