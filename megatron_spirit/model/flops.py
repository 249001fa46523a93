"""Training FLOPs of the real architecture: one formula, used by the planner and the training logs.

Per token, forward, for a LLaMA-style decoder with hidden h, FFN f (SwiGLU: three h×f matmuls), q heads of size
d, g KV groups, sequence s, vocab V:

    attention projections  2·h·(q·d + 2·g·d) + 2·(q·d)·h
    attention scores/values 2·2·s·(q·d)            (full s×s, as Megatron counts it; no causal halving)
    MLP                     2·3·h·f
    logits                  2·h·V

Training counts forward + backward = 3× forward, plus one more forward per recomputed layer under full
activation recompute. A multiply-add is 2 FLOPs.
"""
from __future__ import annotations


def flops_per_token(
    num_layers: int,
    hidden_size: int,
    ffn_hidden_size: int,
    num_attention_heads: int,
    num_query_groups: int | None,
    seq_length: int,
    vocab_size: int,
    kv_channels: int | None = None,
    recompute_layers: int = 0,
) -> float:
    """Training FLOPs per token (forward + backward, + recompute), see the module docstring."""
    d = kv_channels or hidden_size // num_attention_heads
    g = num_query_groups or num_attention_heads
    q = num_attention_heads * d
    per_layer = 2 * hidden_size * (q + 2 * g * d) + 2 * q * hidden_size + 4 * seq_length * q
    per_layer += 6 * hidden_size * ffn_hidden_size
    forward = num_layers * per_layer + 2 * hidden_size * vocab_size
    return 3 * forward + recompute_layers * per_layer
