"""Layer specs: Transformer Engine's when it imports and a GPU is present, else megatron-core's local spec
with attention through ``torch.nn.functional.scaled_dot_product_attention``.

megatron-core's own local core attention (``DotProductAttention``) materialises the full ``b×h×s×s`` score
matrix: far too slow and memory-hungry at sequence 4096. ``SDPAttention`` keeps everything of it (constructor,
checks, TP head split, sharded state dict) and only replaces the score/softmax/context computation with
torch's SDPA, which dispatches to flash / memory-efficient / cuDNN kernels on GPU.

apex: megatron's optimizer factory takes apex's (or Transformer Engine's) fused Adam by itself when importable;
apex's ``FusedLayerNorm`` in megatron supports LayerNorm only, so the local spec's RMSNorm is torch's (which
has its own fused CUDA kernel).

``SequenceParallelRMSNorm`` lets the local spec run with sequence parallelism (megatron's ``WrappedTorchNorm``
refuses it): torch's RMSNorm with its weight marked ``sequence_parallel`` so that megatron's
``finalize_model_grads`` all-reduces its gradient over the TP group.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from megatron.core.transformer.dot_product_attention import DotProductAttention
from megatron.core.transformer.enums import AttnMaskType

SPEC_TE = "transformer_engine"
SPEC_LOCAL_SDPA = "local+sdpa"
SPEC_LOCAL_UNFUSED = "local+unfused"  # megatron's own DotProductAttention; for comparison tests only
SPECS = (SPEC_TE, SPEC_LOCAL_SDPA, SPEC_LOCAL_UNFUSED)


class SDPAttention(DotProductAttention):
    """megatron-core's DotProductAttention with the core computed by torch's scaled_dot_product_attention.

    Inputs/outputs as the parent: query ``[sq, b, np, hn]``, key/value ``[sk, b, ng, hn]`` → ``[sq, b, np·hn]``.
    ``attention_mask`` follows megatron's convention (True = masked out); None with a causal layer = causal.
    """

    def forward(
        self,
        query,
        key,
        value,
        attention_mask,
        attn_mask_type: Optional[AttnMaskType] = None,
        attention_bias=None,
        packed_seq_params=None,
    ):
        if packed_seq_params is not None or attention_bias is not None:
            raise NotImplementedError("SDPAttention supports neither packed sequences nor attention bias")
        if self.config.softmax_type != "vanilla" or self.config.window_size is not None:
            raise NotImplementedError("SDPAttention supports only vanilla softmax without sliding windows")
        mask_type = attn_mask_type if attn_mask_type is not None else self.attn_mask_type
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))  # [b, heads, s, hn]
        causal, mask = False, None
        if attention_mask is not None:
            mask = ~attention_mask.bool()  # SDPA: True = attend
        elif mask_type == AttnMaskType.causal and q.size(2) > 1:
            causal = True
        dropout = self.attention_dropout.p if self.training else 0.0
        gqa = q.size(1) != k.size(1)

        def attend():
            return F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal, scale=self.softmax_scale, enable_gqa=gqa
            )

        if dropout > 0.0 and not self.config.sequence_parallel:
            from megatron.core import tensor_parallel

            with tensor_parallel.get_cuda_rng_tracker().fork():
                context = attend()
        else:
            context = attend()
        sq, b = context.size(2), context.size(0)
        return context.permute(2, 0, 1, 3).reshape(sq, b, self.hidden_size_per_partition)


class SequenceParallelRMSNorm(torch.nn.RMSNorm):
    """torch RMSNorm taking megatron's norm constructor; weight marked for sequence-parallel grad all-reduce."""

    def __init__(self, config, hidden_size: int, eps: float = 1e-5, **_ignored):
        super().__init__(hidden_size, eps=eps, dtype=config.params_dtype)
        setattr(self.weight, "sequence_parallel", bool(config.sequence_parallel))


def transformer_engine_usable() -> bool:
    """Transformer Engine's spec needs both the package and a GPU."""
    if not torch.cuda.is_available() or importlib.util.find_spec("transformer_engine") is None:
        return False
    try:
        import transformer_engine.pytorch  # noqa: F401
    except Exception:  # a broken TE install falls back to the local spec
        return False
    return True


def choose_spec(prefer: Optional[str] = None) -> str:
    """The best spec this machine offers, or ``prefer`` if given (checked)."""
    if prefer is not None:
        if prefer not in SPECS:
            raise ValueError(f"unknown layer spec {prefer!r}: expected one of {', '.join(SPECS)}")
        if prefer == SPEC_TE and not transformer_engine_usable():
            raise ValueError("layer spec 'transformer_engine' needs transformer_engine importable and a GPU")
        return prefer
    return SPEC_TE if transformer_engine_usable() else SPEC_LOCAL_SDPA


@dataclass(frozen=True)
class ChosenSpec:
    name: str
    layer: object  # ModuleSpec or TransformerBlockSubmodules, as GPTModel's transformer_layer_spec accepts


def layer_spec(config, name: str, vp_stage: Optional[int] = None) -> ChosenSpec:
    """The GPTModel ``transformer_layer_spec`` for spec ``name`` and this pipeline (virtual) stage."""
    from megatron.core.models.gpt import gpt_layer_specs as specs
    from megatron.core.transformer.transformer_block import TransformerBlockSubmodules, get_num_layers_to_build

    if name == SPEC_TE:
        return ChosenSpec(name, specs.get_gpt_layer_with_transformer_engine_spec())
    if name not in (SPEC_LOCAL_SDPA, SPEC_LOCAL_UNFUSED):
        raise ValueError(f"unknown layer spec {name!r}")
    base = specs.get_gpt_layer_local_spec(normalization="RMSNorm")
    sub = base.submodules
    attn = sub.self_attention
    core = SDPAttention if name == SPEC_LOCAL_SDPA else DotProductAttention
    attn = dataclasses.replace(attn, submodules=dataclasses.replace(attn.submodules, core_attention=core))
    layer = dataclasses.replace(
        base,
        submodules=dataclasses.replace(
            sub,
            input_layernorm=SequenceParallelRMSNorm,
            pre_mlp_layernorm=SequenceParallelRMSNorm,
            self_attention=attn,
        ),
    )
    n = get_num_layers_to_build(config, vp_stage=vp_stage)
    return ChosenSpec(name, TransformerBlockSubmodules(layer_specs=[layer] * n, layer_norm=SequenceParallelRMSNorm))
