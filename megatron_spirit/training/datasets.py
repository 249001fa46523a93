"""GPTDatasets from a blend config through megatron-core's BlendedMegatronDatasetBuilder: what the trainer reads.

The blend config is ``spirit-data mixture``'s output (``data.mixture``, the format's writer and reader), or
plain prefixes from the training config (:func:`data_blend`).

Two things are ours: a megatron tokenizer view of :class:`SpiritTokenizer` (megatron reads ``vocab_size`` for
the token dtype and ``eod`` for masks), and a guard against a megatron-core trap: a split that gets 0 documents
of a dataset makes ``GPTDataset._get_num_epochs`` loop forever (0 tokens per epoch), so every (dataset, split)
is checked first and an empty one is a clear error.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from megatron.core.datasets.megatron_tokenizer import MegatronLegacyTokenizer

from ..data.check import DatasetError, check_datasets
from ..data.mixture import FORMAT, Blend, load_blend
from ..tokenizer.files import TOKENIZER_MODEL
from ..tokenizer.tokenizer import SpiritTokenizer, fingerprint
from .config import DataConfig


def data_blend(cfg: DataConfig) -> Blend:
    """The blend to train on: ``data.blend`` (a ``spirit-data mixture`` file) or ``data.prefixes``.

    ``prefixes`` entries are ``"prefix"`` or ``"weight prefix"``, split by ``data.split``.
    """
    if cfg.blend is not None:
        if not Path(cfg.blend).is_file():
            raise FileNotFoundError(f"data.blend: {cfg.blend} not found")
        return load_blend(cfg.blend)
    pairs = []
    for item in cfg.prefixes:
        parts = item.split()
        pairs.append([float(parts[0]), parts[1]] if len(parts) == 2 else [1.0, parts[0]])
    return load_blend({"format": FORMAT, "blend": pairs, "split": cfg.split})


def check_training_data(cfg: DataConfig) -> list[str]:
    """What ``spirit-train`` checks before any process group: the tokenizer folder, the blend, and every dataset of
    it whole and built with this tokenizer. Raises naming the file; returns warnings (datasets that predate
    fingerprints)."""
    if not (Path(cfg.tokenizer) / TOKENIZER_MODEL).is_file() and not Path(cfg.tokenizer).is_file():
        raise FileNotFoundError(f"data.tokenizer: no {TOKENIZER_MODEL} in {cfg.tokenizer} (a folder written by "
                                f"spirit-make-tokenizer)")
    return check_blend(data_blend(cfg), fingerprint(cfg.tokenizer), cfg.tokenizer)


def check_blend(blend: Blend, fp: str, tokenizer: str) -> list[str]:
    """Every dataset of ``blend`` whole and of the tokenizer with fingerprint ``fp``; returns warnings."""
    try:
        return check_datasets(blend.prefixes(), fp, tokenizer)[1]
    except DatasetError as e:
        raise DatasetError(f"training data: {e}") from e


class SpiritMegatronTokenizer(MegatronLegacyTokenizer):
    """megatron-core's tokenizer interface over :class:`SpiritTokenizer` (for ``GPTDatasetConfig.tokenizer``)."""

    def __init__(self, tok: SpiritTokenizer | str | os.PathLike):
        if not isinstance(tok, SpiritTokenizer):
            tok = SpiritTokenizer(tok)
        super().__init__(str(tok.path), flavor=tok.vocab.flavor)
        self.spirit = tok

    def tokenize(self, text: str) -> np.ndarray:
        return np.asarray(self.spirit.encode(text), dtype=np.int64)

    def detokenize(self, ids) -> str:
        return self.spirit.decode(ids)

    @property
    def vocab(self):
        return {self.spirit.sp.id_to_piece(i): i for i in range(self.vocab_size)}

    @property
    def inv_vocab(self):
        return {i: p for p, i in self.vocab.items()}

    @property
    def vocab_size(self) -> int:
        return self.spirit.vocab_size

    @property
    def eod(self) -> int:
        return self.spirit.eod_id

    @property
    def bos(self) -> int:
        return self.spirit.bos_id

    @property
    def eos(self) -> int:
        return self.spirit.eos_id


def _documents(prefix: str) -> int:
    from megatron.core.datasets.indexed_dataset import _IndexReader

    if not os.path.isfile(prefix + ".idx") or not os.path.isfile(prefix + ".bin"):
        raise FileNotFoundError(f"dataset {prefix}: .bin/.idx not found")
    index = _IndexReader(prefix + ".idx", multimodal=False)  # keep it alive: its arrays view its mmap
    return int(index.document_indices.shape[0]) - 1


def check_nonempty_splits(blend: Blend, split_matrix, sizes: Sequence[int | None]) -> None:
    """Raise if any dataset gives 0 documents to a split megatron-core will build (it would hang)."""
    names = ("train", "valid", "test")
    if blend.blend is not None:
        for prefix in blend.blend[0]:
            n = _documents(prefix)
            for i, bookends in enumerate(split_matrix):
                if bookends is None:
                    continue
                beg, end = int(round(bookends[0] * n)), int(round(bookends[1] * n))
                if end <= beg:
                    raise ValueError(
                        f"dataset {prefix}: the {names[i]} split ({blend.split}) gets 0 of its {n} documents; "
                        f"megatron-core's GPTDataset would loop forever. Use more documents, another --split, or "
                        f"blend_per_split with separate validation data."
                    )
    else:
        for i, b in enumerate(blend.blend_per_split):
            if b is None:  # megatron builds a split that has a blend even for 0 samples (and would hang)
                continue
            for prefix in b[0]:
                if _documents(prefix) == 0:
                    raise ValueError(f"dataset {prefix} ({names[i]} split) has 0 documents: "
                                     f"megatron-core's GPTDataset would loop forever")


def build_gpt_datasets(
    blend: str | os.PathLike | dict | Blend,
    tokenizer: SpiritTokenizer | SpiritMegatronTokenizer | str | os.PathLike,
    sequence_length: int,
    samples: Sequence[int | None],
    *,
    seed: int = 1234,
    cache_dir: str | os.PathLike | None = None,
    is_built_on_rank: Callable[[], bool] | None = None,
    reset_position_ids: bool = False,
    reset_attention_mask: bool = False,
    eod_mask_loss: bool = False,
    create_attention_mask: bool = False,
    num_threads: int = 1,
    warn: Callable[[str], None] | None = None,
) -> list:
    """``[train, valid, test]`` datasets (``GPTDataset``/``BlendedDataset`` or None) for a blend config.

    ``samples``: sequences wanted per split (train = steps × global batch; None builds one pass). ``cache_dir``
    holds megatron's index caches; with it, megatron-core needs ``torch.distributed`` initialised (it asks the
    rank), as in training; without it, megatron-core writes GPTDataset caches under ``<prefix>/cache/`` beside
    each dataset. Unused splits take 0 samples (not None) when the blend has weights, as megatron requires.
    ``is_built_on_rank``: megatron's callable (default: every rank builds).
    Items are megatron's dicts: ``tokens``, ``labels``, ``loss_mask``, ``position_ids`` (and ``attention_mask``).
    """
    import torch
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    b = blend if isinstance(blend, Blend) else load_blend(blend)
    if cache_dir is not None and not torch.distributed.is_initialized():
        raise ValueError("cache_dir needs torch.distributed initialised (megatron-core's blended dataset asks the "
                         "rank); pass cache_dir=None outside training")
    if len(samples) != 3:
        raise ValueError(f"samples must give train, valid, test counts, got {samples!r}")
    mtok = tokenizer if isinstance(tokenizer, SpiritMegatronTokenizer) else SpiritMegatronTokenizer(tokenizer)
    for w in check_blend(b, mtok.spirit.fingerprint, str(mtok.spirit.path)):
        if warn is None:
            warnings.warn(w, stacklevel=2)
        else:
            warn(w)
    config = GPTDatasetConfig(
        random_seed=seed,
        sequence_length=sequence_length,
        blend=b.blend,
        blend_per_split=list(b.blend_per_split) if b.blend_per_split is not None else None,
        split=b.split,
        path_to_cache=None if cache_dir is None else str(cache_dir),
        tokenizer=mtok,
        reset_position_ids=reset_position_ids,
        reset_attention_mask=reset_attention_mask,
        eod_mask_loss=eod_mask_loss,
        create_attention_mask=create_attention_mask,
        num_dataset_builder_threads=num_threads,
        mid_level_dataset_surplus=0.005,
    )
    check_nonempty_splits(b, config.split_matrix or [], list(samples))
    return BlendedMegatronDatasetBuilder(
        GPTDataset, list(samples), is_built_on_rank or (lambda: True), config
    ).build()
