"""Training data: megatron-core GPTDatasets (through BlendedMegatronDatasetBuilder) read by sample index.

Sample order is a pure function of the step: micro-batch ``j`` of step ``k`` on data-parallel rank ``r`` holds
samples ``k·G + j·(m·D) + r·m … + m`` (global batch G, micro-batch m, DP size D). A global batch is therefore
the same set of samples whatever the layout, and the data position in a checkpoint is just ``step × G``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Optional

import torch
import yaml

from .config import DataConfig


class MegatronTokenizerView:
    """What megatron-core's GPTDataset needs from a tokenizer: ``eod``, ``pad`` and ``vocab_size``."""

    def __init__(self, tokenizer):
        self.eod = tokenizer.eod_id
        self.pad = -1  # no pad id in LLaMA-2: sequences are packed, padding never occurs
        self.vocab_size = tokenizer.vocab_size
        # Hashed by megatron-core into the dataset cache keys.
        self.unique_identifiers = {"class": "SpiritTokenizer", "vocab_size": self.vocab_size, "eod": self.eod}


def read_blend(data: DataConfig) -> dict:
    """``{"train": [(weight, prefix), ...], "valid": [...], "test": [...]}`` or ``{"all": [...]}`` (split).

    A blend file (``spirit-data mixture`` output) holds either per-split lists or one list split by
    ``data.split``; ``data.prefixes`` entries are ``"prefix"`` or ``"weight prefix"``.
    """
    def parse(items, where):
        out = []
        for it in items:
            if isinstance(it, str):
                parts = it.split()
                it = (float(parts[0]), parts[1]) if len(parts) == 2 else (1.0, parts[0])
            elif isinstance(it, dict):
                it = (float(it["weight"]), it["prefix"])
            w, p = float(it[0]), str(it[1])
            if not (Path(p + ".bin").is_file() and Path(p + ".idx").is_file()):
                raise FileNotFoundError(f"{where}: dataset {p}(.bin/.idx) not found")
            out.append((w, p))
        if not out:
            raise ValueError(f"{where}: no datasets")
        return out

    if data.prefixes:
        return {"all": parse(data.prefixes, "data.prefixes")}
    path = Path(data.blend)
    if not path.is_file():
        raise FileNotFoundError(f"data.blend: {path} not found")
    raw = yaml.safe_load(path.read_text()) if path.suffix in (".yaml", ".yml") else json.loads(path.read_text())
    splits = raw.get("splits", raw)
    if "train" in splits:
        return {k: parse(splits[k], f"{path} {k}") for k in ("train", "valid", "test") if splits.get(k)}
    if "all" in splits:
        return {"all": parse(splits["all"], f"{path}")}
    raise ValueError(f"{path}: expected 'train'/'valid'/'test' or 'all' lists of [weight, prefix]")


#: What a model step reads from a GPTDataset sample (blended datasets add a dataset id, which is not needed).
_FIELDS = ("tokens", "labels", "loss_mask", "position_ids", "attention_mask")


class TrainData:
    """Train/validation GPTDatasets and per-step micro-batch iterators for this data-parallel rank."""

    def __init__(self, cfg: DataConfig, seq_length: int, tokenizer, global_batch: int, micro_batch: int,
                 train_steps: int, eval_steps: int = 0, eval_interval: int = 0, seed: int = 1234):
        from megatron.core import parallel_state
        from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
        from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

        self.global_batch, self.micro_batch = global_batch, micro_batch
        self.dp_rank = parallel_state.get_data_parallel_rank()
        self.dp_size = parallel_state.get_data_parallel_world_size()
        blend = read_blend(cfg)
        n_evals = (train_steps // eval_interval + 1) if eval_interval else 0
        sizes = [train_steps * global_batch, n_evals * eval_steps * global_batch, 0]

        def as_megatron(items):
            return ([p for _, p in items], [w for w, _ in items])

        kwargs = {}
        if "all" in blend:
            kwargs = dict(blend=as_megatron(blend["all"]), split=cfg.split)
        else:
            kwargs = dict(blend_per_split=[as_megatron(blend[k]) if k in blend else None
                                           for k in ("train", "valid", "test")])
        self.config = GPTDatasetConfig(
            random_seed=seed,
            sequence_length=seq_length,
            tokenizer=MegatronTokenizerView(tokenizer),
            reset_position_ids=cfg.reset_position_ids,
            reset_attention_mask=cfg.reset_attention_mask,
            eod_mask_loss=cfg.eod_mask_loss,
            create_attention_mask=cfg.reset_attention_mask,
            path_to_cache=cfg.cache_dir,
            mid_level_dataset_surplus=0.005,
            **kwargs,
        )
        _check_nonempty_splits(blend, cfg.split, sizes)
        train, valid, _ = BlendedMegatronDatasetBuilder(GPTDataset, sizes, lambda: True, self.config).build()
        if train is None:
            raise ValueError("the training split is empty: check data.split and the datasets")
        self.train, self.valid = train, valid

    def _batches(self, dataset, first_sample: int, num_micro: int) -> Iterator[dict]:
        m, d = self.micro_batch, self.dp_size
        for j in range(num_micro):
            start = first_sample + j * m * d + self.dp_rank * m
            samples = [dataset[i] for i in range(start, start + m)]
            batch = {k: torch.stack([s[k] for s in samples]) for k in _FIELDS if k in samples[0]}
            batch.setdefault("attention_mask", None)
            if torch.cuda.is_available():
                batch = {k: (v.cuda(non_blocking=True) if v is not None else None) for k, v in batch.items()}
            yield batch

    def num_micro(self) -> int:
        return self.global_batch // (self.micro_batch * self.dp_size)

    def train_iterators(self, step: int, chunks: int) -> list:
        """One iterator per model chunk over this step's micro-batches (the schedules pull from each)."""
        return [self._batches(self.train, step * self.global_batch, self.num_micro()) for _ in range(chunks)]

    def valid_iterators(self, k: int, chunks: int) -> list:
        if self.valid is None:
            raise ValueError("no validation split: set data.split (e.g. 98,2,0) or a 'valid' list in the blend")
        return [self._batches(self.valid, k * self.global_batch, self.num_micro()) for _ in range(chunks)]


def _check_nonempty_splits(blend: dict, split: str, sizes: list) -> None:
    """megatron-core loops forever on a split with 0 documents (notes): refuse it with a clear error."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    if "all" not in blend:
        return
    weights = [float(x) for x in split.replace("/", ",").split(",")]
    total = sum(weights)
    for _, prefix in blend["all"]:
        n_docs = len(IndexedDataset(prefix).document_indices) - 1
        bounds = [0]
        for w in weights:
            bounds.append(bounds[-1] + w / total)
        for name, lo, hi, want in zip(("train", "valid", "test"), bounds[:-1], bounds[1:], sizes):
            docs = int(round(hi * n_docs)) - int(round(lo * n_docs))
            if want > 0 and docs <= 0:
                raise ValueError(
                    f"dataset {prefix} has {n_docs} documents: split {split!r} gives the {name} split none, "
                    f"which megatron-core cannot sample from; use more data or change data.split"
                )
