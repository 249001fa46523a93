"""Build the model: megatron-core ``GPTModel`` chunks for this pipeline rank, with the best layer spec.

API::

    from megatron_spirit.model.build import build_model, wrap_ddp
    built = build_model(model_cfg, parallel_cfg, vocab_size=tokenizer.vocab.full_size, dtype="bf16")
    built.chunks      # list[GPTModel], one per virtual pipeline stage of this rank (length 1 without VPP)
    built.spec        # "transformer_engine" | "local+sdpa" | ...
    built.config      # the TransformerConfig
    built.vocab_size  # padded embedding rows
    ddp_chunks = wrap_ddp(built.chunks, parallel_cfg)   # megatron DDP, ready for get_megatron_optimizer
    attach_schedule_hooks(ddp_chunks, optimizer)        # what megatron's schedules need on the config

``parallel_state`` must be initialised first (``parallel.runtime.init_model_parallel``). ``vocab_size`` is the
tokenizer's size; it is padded here the Megatron way (``make_vocab_size_divisible_by × TP``, docs/spec.md §1).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .config import ModelConfig, ParallelConfig, padded_vocab, transformer_config
from .specs import choose_spec, layer_spec


@dataclass
class BuiltModel:
    chunks: list
    spec: str
    config: object
    vocab_size: int


def build_model(
    model_cfg: ModelConfig,
    parallel_cfg: ParallelConfig,
    vocab_size: int,
    dtype: str = "fp32",
    spec: Optional[str] = None,
    pad_vocab: bool = True,
    verbose: bool = True,
    **config_extra,
) -> BuiltModel:
    """GPTModel chunks for this rank (pre/post-processing on the first/last virtual stage).

    ``spec``: force "local+sdpa", "local+unfused" or "transformer_engine" (default: the best available).
    ``pad_vocab=False`` uses ``vocab_size`` as is (for converters that already padded). Parameters live on
    the current CUDA device, or on CPU without CUDA. ``config_extra`` goes to ``transformer_config``.
    """
    from megatron.core import parallel_state
    from megatron.core.models.gpt import GPTModel

    if not parallel_state.model_parallel_is_initialized():
        raise RuntimeError("build_model: initialise parallel_state first (parallel.runtime.init_model_parallel)")
    if parallel_state.get_tensor_model_parallel_world_size() != parallel_cfg.tp or (
        parallel_state.get_pipeline_model_parallel_world_size() != parallel_cfg.pp
    ):
        raise ValueError(
            f"build_model: parallel_state has tp={parallel_state.get_tensor_model_parallel_world_size()} "
            f"pp={parallel_state.get_pipeline_model_parallel_world_size()} but the config asks tp={parallel_cfg.tp} "
            f"pp={parallel_cfg.pp}"
        )
    config = transformer_config(model_cfg, parallel_cfg, dtype=dtype, **config_extra)
    name = choose_spec(spec)
    vocab = padded_vocab(vocab_size, model_cfg, parallel_cfg) if pad_vocab else vocab_size
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    chunks = []
    stages = parallel_cfg.vpp or 1
    for vp in range(stages):
        vp_stage = vp if parallel_cfg.vpp else None
        chunk = GPTModel(
            config=config,
            transformer_layer_spec=layer_spec(config, name, vp_stage=vp_stage).layer,
            vocab_size=vocab,
            max_sequence_length=model_cfg.seq_length,
            pre_process=parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=vp_stage),
            post_process=parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=vp_stage),
            share_embeddings_and_output_weights=False,
            position_embedding_type="rope",
            rotary_base=model_cfg.rope_base,
            vp_stage=vp_stage,
        )
        chunk.to(device)
        chunks.append(chunk)
    first_rank = not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
    if verbose and first_rank:
        print(
            f"model {model_cfg.name}: layer spec {name}; tp={parallel_cfg.tp} pp={parallel_cfg.pp} "
            f"vpp={parallel_cfg.vpp} sp={parallel_cfg.sp}; vocab {vocab} (padded from {vocab_size}); {dtype}",
            flush=True,
        )
    return BuiltModel(chunks, name, config, vocab)


def wrap_ddp(
    chunks: list,
    parallel_cfg: ParallelConfig,
    grad_reduce_in_fp32: bool = True,
    bucket_size: Optional[int] = None,
) -> list:
    """megatron-core DistributedDataParallel around each chunk (needed by its optimizer and schedules).

    Gradients are accumulated and reduced in fp32; the distributed optimizer and overlap flags come from
    ``parallel_cfg``. bf16/fp16 chunks are first wrapped in megatron's ``Float16Module`` (casts the pipeline's
    first input and last output), as megatron's own ``get_model`` does; bucketing is off for chunks after the
    first, as there.
    """
    from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig
    from megatron.core.transformer.module import Float16Module

    ddp_cfg = DistributedDataParallelConfig(
        grad_reduce_in_fp32=grad_reduce_in_fp32,
        overlap_grad_reduce=parallel_cfg.overlap_grad_reduce,
        overlap_param_gather=parallel_cfg.overlap_param_gather,
        use_distributed_optimizer=parallel_cfg.distributed_optimizer,
        bucket_size=bucket_size,
    )
    wrapped = []
    for i, chunk in enumerate(chunks):
        wrapped.append(
            DistributedDataParallel(
                config=chunk.config,
                ddp_config=ddp_cfg,
                module=Float16Module(chunk.config, chunk) if chunk.config.bf16 or chunk.config.fp16 else chunk,
                disable_bucketing=i > 0,
            )
        )
    return wrapped


def attach_schedule_hooks(ddp_chunks: list, optimizer=None) -> None:
    """Tell megatron's pipeline schedules how to sync and finalise grads of these DDP chunks.

    Sets on the shared TransformerConfig what megatron's own training loop sets: ``no_sync_func`` (no DP
    all-reduce between micro-batches), ``finalize_model_grads_func`` (DP all-reduce / reduce-scatter, sequence-
    parallel norm grads, embedding grads), ``grad_scale_func`` (the optimizer's loss scale), and with overlapped
    communication the per-chunk ``grad_sync_func`` / ``param_sync_func``.
    """
    from megatron.core.distributed import finalize_model_grads

    config = ddp_chunks[0].config
    no_sync = [c.no_sync for c in ddp_chunks]
    config.no_sync_func = no_sync[0] if len(no_sync) == 1 else no_sync
    config.finalize_model_grads_func = finalize_model_grads
    if optimizer is not None:
        config.grad_scale_func = optimizer.scale_loss
    ddp_cfg = ddp_chunks[0].ddp_config
    if ddp_cfg.overlap_grad_reduce:
        sync = [c.start_grad_sync for c in ddp_chunks]
        config.grad_sync_func = sync[0] if len(sync) == 1 else sync
    if ddp_cfg.overlap_param_gather and ddp_cfg.use_distributed_optimizer:
        sync = [c.start_param_sync for c in ddp_chunks]
        config.param_sync_func = sync[0] if len(sync) == 1 else sync
