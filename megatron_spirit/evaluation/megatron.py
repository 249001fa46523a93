"""The megatron-core side of the scorer: a :class:`~.scoring.LogitsFn` over GPTModel chunks at any TP/PP.

Forward only, through megatron-core's pipeline schedule (one micro-batch per call); the last stage gathers the
selected positions' logits over TP. Data parallelism is over requests (``sharding``): each data-parallel group
scores its share, and the scores are gathered from the ranks that hold logits.

Two things GPTModel does not do by itself for packed rows:

* the attention mask goes through ``attention_mask`` (``[B, 1, L, L]`` bool, True = masked, megatron's
  convention), which the local spec's SDPA core honours (the scorer's tests check it against Hugging Face); the
  Transformer Engine spec is not used here, its causal core ignores an explicit mask;
* GPTModel computes RoPE for positions ``0..L-1`` whatever ``position_ids`` says (megatron-core 0.16.1: position
  ids only feed learned absolute embeddings), so while scoring each chunk's rotary module returns the table
  gathered at the rows' own positions (``[L, B, 1, d]``, which megatron's unfused RoPE broadcasts per row).
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from ..checkpoint.weights import unwrap


class _DataParallelItems:
    """``scoring.ItemSharding`` over megatron-core's data-parallel groups."""

    def __init__(self):
        from megatron.core import parallel_state as ps

        self.rank = ps.get_data_parallel_rank()
        self.size = ps.get_data_parallel_world_size()
        self._holds = ps.is_pipeline_last_stage() and ps.get_tensor_model_parallel_rank() == 0

    def gather(self, part: list) -> list[list]:
        got = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(got, (self.rank, part) if self._holds else None)
        parts: dict[int, list] = {}
        for entry in got:
            if entry is not None:
                parts.setdefault(entry[0], entry[1])
        return [parts[r] for r in range(self.size)]


@contextlib.contextmanager
def rope_at(chunks: list, positions: torch.Tensor):
    """Make each chunk's rotary embedding return the table at ``positions`` (``[B, L]``) instead of ``0..L-1``."""
    patched = []
    for chunk in chunks:
        rope = getattr(unwrap(chunk), "rotary_pos_emb", None)
        if rope is None:
            continue
        original = rope.forward

        def at_positions(max_seq_len, *args, _original=original, **kwargs):
            table = _original(int(positions.max()) + 1, *args, **kwargs)  # [S, 1, 1, d]
            return table[positions.t(), 0, 0][:, :, None, :]  # [L, B, 1, d]

        rope.forward = at_positions
        patched.append(rope)
    try:
        yield
    finally:
        for rope in patched:
            del rope.forward  # back to the class's method


def honours_mask(chunks: list) -> bool:
    """Whether the chunks' core attention applies an explicit mask (the local specs' do; TE's causal one not)."""
    from megatron.core.transformer.dot_product_attention import DotProductAttention

    for chunk in chunks:
        for layer in unwrap(chunk).decoder.layers:
            return isinstance(layer.self_attention.core_attention, DotProductAttention)
    return True


class MegatronLogits:
    """Next-token logits of selected positions of packed rows, from this rank's GPTModel chunks.

    Collective: every rank of the job calls it with its data-parallel group's rows. Ranks without logits (not
    the last pipeline stage, or TP rank > 0) get a zero tensor of the right shape; :class:`_DataParallelItems`
    takes the scores from the ranks that have them. ``vocab_rows``: the output rows the softmax runs over (the
    tokenizer's export size, as in the exported model; Megatron's padding rows are left out).
    """

    def __init__(self, chunks: list, vocab_rows: int):
        from megatron.core import parallel_state as ps

        self.chunks = chunks
        self.vocab_rows = vocab_rows
        self.sharding = _DataParallelItems()
        self._tp = ps.get_tensor_model_parallel_world_size()
        self._sp = bool(unwrap(chunks[0]).config.sequence_parallel)

    def __call__(self, ids, positions, allowed, rows, cols):
        from megatron.core import parallel_state as ps
        from megatron.core.pipeline_parallel import get_forward_backward_func
        from megatron.core.tensor_parallel.mappings import gather_from_tensor_model_parallel_region

        if allowed is None:  # plain causal rows: GPTModel's local core still wants the mask spelt out
            w = ids.shape[1]
            allowed = torch.ones(w, w, dtype=torch.bool, device=ids.device).tril().expand(ids.shape[0], w, w)
        if self._sp and ids.shape[1] % self._tp:  # sequence parallelism splits the sequence over TP ranks
            ids, positions, allowed = _pad(ids, positions, allowed, self._tp - ids.shape[1] % self._tp)
        batch, width = ids.shape
        mask = ~allowed[:, None]

        def step(data_iterator, model):
            out = model(next(data_iterator), positions, mask)

            def pick(output, non_loss_data=False):
                return output[rows, cols].detach()

            return out, pick

        training = [m.training for m in self.chunks]
        for m in self.chunks:
            m.eval()
        try:
            with torch.no_grad(), rope_at(self.chunks, positions):
                stored = get_forward_backward_func()(
                    forward_step_func=step, data_iterator=iter([ids]), model=self.chunks, num_microbatches=1,
                    seq_length=width, micro_batch_size=batch, forward_only=True, collect_non_loss_data=True)
        finally:
            for m, was in zip(self.chunks, training):
                m.train(was)
        if not ps.is_pipeline_last_stage():
            return torch.zeros(1, 1, device=ids.device).expand(len(rows), self.vocab_rows)
        return gather_from_tensor_model_parallel_region(stored[0])[:, :self.vocab_rows].float()


def _pad(ids, positions, allowed, n):
    """``n`` more columns, each a document of its own (it attends to itself only)."""
    b, w = ids.shape
    ids = torch.cat([ids, ids.new_zeros(b, n)], 1)
    positions = torch.cat([positions, positions.new_zeros(b, n)], 1)
    grown = allowed.new_zeros(b, w + n, w + n)
    grown[:, :w, :w] = allowed
    idx = torch.arange(w, w + n)
    grown[:, idx, idx] = True
    return ids, positions, grown


def load_megatron_model(ckpt: str | Path, tp: int = 1, pp: int = 1, dtype: str = "fp32"):
    """Build GPTModel chunks for the current parallel layout and load a checkpoint's weights into them.

    Call after ``parallel.runtime.init_model_parallel``. Returns (chunks, padded vocabulary rows, the checkpoint
    folder, its info dictionary). The local spec with SDPA is forced (see the module docstring) and the fused
    RoPE kernel is off (it wants one table for the whole batch).
    """
    from ..checkpoint.folder import resolve
    from ..checkpoint.info import find_info, model_config_from_info
    from ..checkpoint.weights import load_weights
    from ..model.build import build_model
    from ..model.config import ParallelConfig
    from ..model.specs import SPEC_LOCAL_SDPA

    folder = resolve(ckpt)
    info = find_info(folder)
    if info is None:
        raise FileNotFoundError(f"{folder}: no spirit_checkpoint.json here or in its training folder (written by "
                                "spirit-train and spirit-convert): cannot tell the model's shape")
    built = build_model(model_config_from_info(info), ParallelConfig(tp=tp, pp=pp),
                        vocab_size=int(info["vocab"]["padded_size"]), pad_vocab=False, dtype=dtype,
                        spec=SPEC_LOCAL_SDPA, verbose=False, apply_rope_fusion=False)
    load_weights(built.chunks, folder)
    return built.chunks, built.vocab_size, folder, info
