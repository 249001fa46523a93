"""Per-rank bodies for the conversion tests (run with ``parallel.launch.run_ranks``)."""
from __future__ import annotations

import torch


def _forward_logits(chunks, tokens: torch.Tensor):
    """Full-vocabulary logits on the last pipeline stage (gathered over TP), None elsewhere."""
    from megatron.core import parallel_state
    from megatron.core.pipeline_parallel import get_forward_backward_func
    from megatron.core.tensor_parallel.mappings import gather_from_tensor_model_parallel_region

    batch, seq = tokens.shape
    positions = torch.arange(seq).unsqueeze(0).expand(batch, seq)

    def step(data_iterator, model):
        out = model(next(data_iterator), positions, None)
        return out, lambda output, non_loss_data=False: output.detach()

    stored = get_forward_backward_func()(
        forward_step_func=step, data_iterator=iter([tokens]), model=chunks, num_microbatches=1,
        seq_length=seq, micro_batch_size=batch, forward_only=True, collect_non_loss_data=True,
    )
    if not parallel_state.is_pipeline_last_stage():
        return None
    return gather_from_tensor_model_parallel_region(stored[0])


def _check_split(chunk, hf_dir, dims, tp: int, tp_rank: int, pp: int, pp_rank: int) -> None:
    """This rank's fused QKV and fc1 are exactly layout.tp_shard of the layout's global tensors."""
    from megatron_spirit.convert import layout as L
    from megatron_spirit.convert.hf_checkpoint import HFCheckpoint

    from .splits import pp_layers, tp_shard

    hf = HFCheckpoint(hf_dir)
    layers = pp_layers(dims.num_layers, pp, pp_rank)
    assert [layer.layer_number - 1 for layer in chunk.decoder.layers] == list(layers)
    for layer, global_i in zip(chunk.decoder.layers, layers):
        for key, local in ((L.QKV, layer.self_attention.linear_qkv.weight), (L.FC1, layer.mlp.linear_fc1.weight)):
            parts = [hf.get(L.hf_layer_name(global_i, p)) for p in L.HF_LAYER_PARTS[key]]
            want = tp_shard(key, L.layer_to_megatron(key, parts, dims), tp, tp_rank)
            assert torch.equal(local.detach(), want), f"{key} layer {global_i} tp rank {tp_rank}"


def _case_logits(case, tokens, tp: int, pp: int, full_state: bool):
    """Build, load the converted checkpoint, check this rank's splits, forward: (logits or None, chunks)."""
    from megatron.core import dist_checkpointing, parallel_state

    from megatron_spirit.checkpoint.info import model_config_from_info, read_info
    from megatron_spirit.checkpoint.weights import load_chunk, load_weights, model_sharded_state_dict
    from megatron_spirit.model.build import build_model
    from megatron_spirit.model.config import ParallelConfig

    ckpt, hf_dir, vocab, pad = case
    mcfg = model_config_from_info(read_info(ckpt))
    built = build_model(mcfg, ParallelConfig(tp=tp, pp=pp), vocab_size=vocab, pad_vocab=pad, dtype="fp32",
                        verbose=False)
    if full_state:  # the model's full sharded state dict (extra state too), as a resume requests it
        sharded = model_sharded_state_dict(built.chunks)
        loaded = dist_checkpointing.load(sharded, str(ckpt))
        for key, chunk in zip(sharded, built.chunks):
            load_chunk(chunk, loaded[key], ckpt)
    else:  # the trainer's weights-only start (checkpoint.finetune_from)
        load_weights(built.chunks, ckpt)
    tp_rank = parallel_state.get_tensor_model_parallel_rank()
    _check_split(built.chunks[0], hf_dir, mcfg, tp, tp_rank, pp, parallel_state.get_pipeline_model_parallel_rank())
    with torch.no_grad():
        logits = _forward_logits(built.chunks, tokens)
    return (logits if logits is not None and tp_rank == 0 else None), built.chunks


def _save(chunk, save_dir) -> None:
    import os

    from megatron.core import dist_checkpointing

    if torch.distributed.get_rank() == 0:
        os.makedirs(save_dir, exist_ok=True)
    torch.distributed.barrier()
    dist_checkpointing.save(chunk.sharded_state_dict(), save_dir)


def layouts_logits(layouts, cases, tokens, save_dir=None, save_case=None):
    """For each (tp, pp) and each case: build, load the converted checkpoint, check splits, forward.

    cases: {name: (ckpt_dir, hf_dir, vocab_size, pad_vocab)} (build_model's arguments); tokens: {name: ids}.
    Returns ``{"logits": {(tp, pp, name): (logits or None, error or None)}, "save_error": error or None}``: each
    (layout, case) is recorded, a failing one does not stop the others. With ``save_dir``, case ``save_case`` of
    the last layout is saved again by megatron-core itself (as training would).
    """
    from megatron_spirit.model.config import ParallelConfig
    from megatron_spirit.parallel.runtime import init_model_parallel
    from tests.parallel.workers import on_every_rank

    results, to_save = {}, None
    for tp, pp in layouts:
        _, layout_error = on_every_rank(lambda: init_model_parallel(ParallelConfig(tp=tp, pp=pp), seed=7))
        for name, case in cases.items():
            if layout_error is not None:
                results[(tp, pp, name)] = (None, layout_error)
                continue
            out, error = on_every_rank(lambda: _case_logits(case, tokens[name.split("-")[0]], tp, pp, name == "mha"))
            results[(tp, pp, name)] = (out[0] if out else None, error)
            if name == save_case:
                to_save = out[1][0] if out and (tp, pp) == tuple(layouts[-1]) else None
    save_error = None
    if save_dir is not None:
        if to_save is None:
            save_error = f"case {save_case!r} at the last layout {layouts[-1]} failed: nothing to save"
        else:
            _, save_error = on_every_rank(lambda: _save(to_save, save_dir))
    return {"logits": results, "save_error": save_error}
