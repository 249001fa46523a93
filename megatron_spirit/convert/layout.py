"""Hugging Face LLaMA ⇄ megatron-core GPTModel: the tensor mapping, in one place.

Every converter, loader and test asks this module how a tensor is named, laid out or padded. Sizes come from a
``model.config.ModelConfig``; whether a TP/PP layout can split a model is ``ParallelConfig.check_model``'s
question, and megatron-core does the splitting itself (on save and load).

Names. A megatron-core distributed checkpoint is keyed by *sharded keys*, not by module paths: the layers are
stacked on a leading axis (``decoder.layers.<name>`` has shape ``[num_layers, ...]``, layer ``i`` at offset
``i`` whatever the pipeline split) and the norms carry the names of the TE fused layers
(``linear_qkv.layer_norm_weight``, ``linear_fc1.layer_norm_weight``) — megatron-core's local spec maps its own
``input_layernorm``/``pre_mlp_layernorm`` onto those, so one checkpoint serves both specs.

Layouts (global, i.e. what the checkpoint stores; independent of TP):

- ``linear_qkv``: rows grouped per query group ``g``: ``[q heads of g (heads/groups × head_dim) ; k of g
  (head_dim) ; v of g (head_dim)]`` for g = 0..groups-1. HF stores ``q_proj``, ``k_proj``, ``v_proj``
  separately. Both use the rotate-half RoPE convention (HF's conversion script already permuted Meta's
  interleaved q/k), as does megatron-core's non-interleaved rotary embedding: no permutation here (the logits
  test checks it numerically).
- ``linear_fc1``: ``[gate ; up]`` (SwiGLU's silu branch first). Under TP each rank holds its slice of gate AND
  its slice of up (megatron's swiglu sharded factory splits the halves separately), which is why the global
  order is ``[all gate ; all up]`` and not interleaved per rank.
- ``linear_proj`` (= ``o_proj``) and ``linear_fc2`` (= ``down_proj``): row-parallel, split on columns.
- ``word_embeddings`` and ``output_layer``: split on rows (vocab); padded to Megatron's padded size
  (``tokenizer.vocab.padded_vocab_size``), trimmed to the exported size on the way back (docs/spec.md §1).
"""
from __future__ import annotations

import torch

from ..model.config import ModelConfig

# Megatron sharded keys ---------------------------------------------------------------------------------------
EMBEDDING = "embedding.word_embeddings.weight"
OUTPUT = "output_layer.weight"
FINAL_NORM = "decoder.final_layernorm.weight"
INPUT_NORM = "decoder.layers.self_attention.linear_qkv.layer_norm_weight"
QKV = "decoder.layers.self_attention.linear_qkv.weight"
PROJ = "decoder.layers.self_attention.linear_proj.weight"
MLP_NORM = "decoder.layers.mlp.linear_fc1.layer_norm_weight"
FC1 = "decoder.layers.mlp.linear_fc1.weight"
FC2 = "decoder.layers.mlp.linear_fc2.weight"
LAYER_KEYS = (INPUT_NORM, QKV, PROJ, MLP_NORM, FC1, FC2)
VOCAB_KEYS = (EMBEDDING, OUTPUT)
#: Per-layer module "extra state" objects GPTModel lists in its sharded state dict (``None`` for megatron-core's
#: local layers; FP8 metadata for Transformer Engine's, which also has core attention's). Not weights; a
#: converted checkpoint stores them as ``None`` so that loading the model's full sharded state dict works.
EXTRA_STATE_KEYS = (
    "decoder.layers.self_attention.linear_qkv._extra_state",
    "decoder.layers.self_attention.core_attention._extra_state",
    "decoder.layers.self_attention.linear_proj._extra_state",
    "decoder.layers.mlp.linear_fc1._extra_state",
    "decoder.layers.mlp.linear_fc2._extra_state",
)

# Hugging Face names ------------------------------------------------------------------------------------------
HF_EMBEDDING = "model.embed_tokens.weight"
HF_OUTPUT = "lm_head.weight"
HF_FINAL_NORM = "model.norm.weight"
#: Per-layer HF tensors (suffixes of ``model.layers.{i}.``) that make up each Megatron layer key, in order.
HF_LAYER_PARTS = {
    INPUT_NORM: ("input_layernorm.weight",),
    QKV: ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
    PROJ: ("self_attn.o_proj.weight",),
    MLP_NORM: ("post_attention_layernorm.weight",),
    FC1: ("mlp.gate_proj.weight", "mlp.up_proj.weight"),
    FC2: ("mlp.down_proj.weight",),
}
HF_GLOBAL = {EMBEDDING: HF_EMBEDDING, FINAL_NORM: HF_FINAL_NORM, OUTPUT: HF_OUTPUT}


def hf_layer_name(layer: int, part: str) -> str:
    return f"model.layers.{layer}.{part}"


def hf_shapes(d: ModelConfig, vocab_rows: int) -> dict[str, tuple[int, ...]]:
    """Every tensor of an HF LlamaForCausalLM with these sizes, by name."""
    h, f, hd = d.hidden_size, d.ffn_hidden_size, d.kv_channels
    per_layer = {
        "input_layernorm.weight": (h,),
        "self_attn.q_proj.weight": (d.num_attention_heads * hd, h),
        "self_attn.k_proj.weight": (d.query_groups * hd, h),
        "self_attn.v_proj.weight": (d.query_groups * hd, h),
        "self_attn.o_proj.weight": (h, d.num_attention_heads * hd),
        "post_attention_layernorm.weight": (h,),
        "mlp.gate_proj.weight": (f, h),
        "mlp.up_proj.weight": (f, h),
        "mlp.down_proj.weight": (h, f),
    }
    shapes = {HF_EMBEDDING: (vocab_rows, h)}
    for i in range(d.num_layers):
        shapes.update({hf_layer_name(i, k): v for k, v in per_layer.items()})
    shapes[HF_FINAL_NORM] = (h,)
    shapes[HF_OUTPUT] = (vocab_rows, h)
    return shapes


def megatron_shapes(d: ModelConfig, vocab_rows: int) -> dict[str, tuple[int, ...]]:
    """Global shapes of the checkpoint's tensors by sharded key (layer keys: shape of ONE layer)."""
    h, f, hd = d.hidden_size, d.ffn_hidden_size, d.kv_channels
    return {
        EMBEDDING: (vocab_rows, h),
        INPUT_NORM: (h,),
        QKV: ((d.num_attention_heads + 2 * d.query_groups) * hd, h),
        PROJ: (h, d.num_attention_heads * hd),
        MLP_NORM: (h,),
        FC1: (2 * f, h),
        FC2: (h, f),
        FINAL_NORM: (h,),
        OUTPUT: (vocab_rows, h),
    }


# Fused QKV and fc1 -------------------------------------------------------------------------------------------
def qkv_to_megatron(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, d: ModelConfig) -> torch.Tensor:
    """HF q/k/v projections → megatron's fused QKV, grouped per query group."""
    groups, hd, h = d.query_groups, d.kv_channels, q.shape[1]
    per_group = d.num_attention_heads // groups
    fused = torch.cat(
        [q.reshape(groups, per_group * hd, h), k.reshape(groups, hd, h), v.reshape(groups, hd, h)], dim=1
    )
    return fused.reshape(-1, h)


def qkv_from_megatron(qkv: torch.Tensor, d: ModelConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of :func:`qkv_to_megatron`."""
    groups, hd, h = d.query_groups, d.kv_channels, qkv.shape[1]
    per_group = d.num_attention_heads // groups
    q, k, v = qkv.reshape(groups, (per_group + 2) * hd, h).split([per_group * hd, hd, hd], dim=1)
    return q.reshape(-1, h).contiguous(), k.reshape(-1, h).contiguous(), v.reshape(-1, h).contiguous()


def fc1_to_megatron(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return torch.cat([gate, up], dim=0)


def fc1_from_megatron(fc1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    gate, up = fc1.chunk(2, dim=0)
    return gate.contiguous(), up.contiguous()


def layer_to_megatron(key: str, parts: list[torch.Tensor], d: ModelConfig) -> torch.Tensor:
    """One layer's Megatron tensor from its HF parts (in ``HF_LAYER_PARTS[key]`` order)."""
    if key == QKV:
        return qkv_to_megatron(*parts, d)
    if key == FC1:
        return fc1_to_megatron(*parts)
    (only,) = parts
    return only


def layer_from_megatron(key: str, tensor: torch.Tensor, d: ModelConfig) -> tuple[torch.Tensor, ...]:
    """One layer's HF parts (in ``HF_LAYER_PARTS[key]`` order) from its Megatron tensor."""
    if key == QKV:
        return qkv_from_megatron(tensor, d)
    if key == FC1:
        return fc1_from_megatron(tensor)
    return (tensor,)


# Vocabulary padding / trimming ------------------------------------------------------------------------------
#: Distinct random streams for the new rows of the embedding and of the output layer.
VOCAB_SALT = {EMBEDDING: 0, OUTPUT: 1}


def extend_rows(weight: torch.Tensor, rows: int, seed: int, salt: int, std: float) -> torch.Tensor:
    """``weight`` (original vocabulary) followed by new rows drawn from N(0, std²) with a fixed seed
    (docs/spec.md §4).

    The draw depends only on (seed, salt, new-row count, hidden size), never on TP or on the order of work.
    """
    old, hidden = weight.shape
    if rows < old:
        raise ValueError(f"cannot extend {old} rows to fewer ({rows})")
    gen = torch.Generator().manual_seed(seed * 1000 + salt)
    new = torch.randn(rows - old, hidden, generator=gen, dtype=torch.float32) * std
    return torch.cat([weight, new.to(weight.dtype)], dim=0)


def trim_rows(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """First ``rows`` rows; zero rows appended if the checkpoint has fewer (ids the tokenizer never emits)."""
    if weight.shape[0] >= rows:
        return weight[:rows].contiguous()
    pad = torch.zeros(rows - weight.shape[0], weight.shape[1], dtype=weight.dtype)
    return torch.cat([weight, pad], dim=0)
