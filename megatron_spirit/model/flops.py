"""Training FLOPs of the real architecture: one formula, used by the planner and the training logs.

Per token, forward, for a LLaMA-style decoder with hidden h, FFN f (SwiGLU: three h×f matmuls), q heads of size
d, g KV groups, sequence s, vocab V:

    attention projections  2·h·(q·d + 2·g·d) + 2·(q·d)·h
    attention scores/values 2·2·s·(q·d)            (full s×s, as Megatron counts it; no causal halving)
    MLP                     2·3·h·f
    logits                  2·h·V

Training counts forward + backward = 3× forward: these are the *model* FLOPs, the numerator of MFU (model FLOPs
utilisation, as PaLM defines it). Activation recompute does more work on the hardware without training more:
full recompute runs each layer's forward again, selective recompute the attention scores/values again. With
``recompute`` given, the result counts that too: *hardware* FLOPs (for step-time estimates and HFU). A
multiply-add is 2 FLOPs.
"""
from __future__ import annotations

from typing import Optional

from .config import ModelConfig


def flops_per_token(model: ModelConfig, seq_length: int, vocab_size: int, recompute: Optional[str] = None) -> float:
    """Training FLOPs per token: model FLOPs, plus the recomputed work when ``recompute`` is "full"/"selective"."""
    h, f, d = model.hidden_size, model.ffn_hidden_size, model.kv_channels
    g = model.query_groups
    q = model.num_attention_heads * d
    attention_core = 4 * seq_length * q
    per_layer = 2 * h * (q + 2 * g * d) + 2 * q * h + attention_core + 6 * h * f
    forward = model.num_layers * per_layer + 2 * h * vocab_size
    extra = {None: 0, "full": per_layer, "selective": attention_core}[recompute]
    return 3 * forward + model.num_layers * extra
