"""Code that runs inside each rank of a launched test (imported by the child processes of ``run_ranks``).

The equivalence check: build a reference at TP1/PP1 (data-parallel over the whole world), record its full
initial weights, train it a few steps; then for each other layout load those same initial weights into its
shards (by the global offsets megatron-core's ``sharded_state_dict`` declares), run the same global batches
through ``get_forward_backward_func`` + megatron's optimizer, and compare the global loss and the gathered
full weights with the reference.
"""
from __future__ import annotations

import traceback

import torch

VOCAB = 300  # token ids drawn below this
#: Tokenizer size handed to build_model: a multiple of 128×TP for every TP tested, so the padded embedding (and
#: with it the softmax) is the same size in every layout.
TABLE = 512
SEED = 1234


# ---- full tensors from / into shards -------------------------------------------------------------------
def _pieces(chunks):
    """(key, global_shape, global_offset, local tensor) of every ShardedTensor of the chunks (views: writable)."""
    from megatron.core.dist_checkpointing.dict_utils import nested_values
    from megatron.core.dist_checkpointing.mapping import ShardedTensor, ShardedTensorFactory

    out = []

    def visit(v):
        if isinstance(v, ShardedTensorFactory):
            built = v.build()
            for b in nested_values(built) if isinstance(built, (dict, list)) else [built]:
                visit(b)
        elif isinstance(v, ShardedTensor):
            assert v.flattened_range is None
            out.append((v.key, tuple(v.global_shape), tuple(v.global_offset), v.prepend_axis_num, v.data))

    for chunk in chunks:
        module = getattr(chunk, "module", chunk)
        for v in nested_values(module.sharded_state_dict()):
            visit(v)
    return out


def _slices(offset, prepend, data):
    shape = (1,) * prepend + tuple(data.shape)
    return tuple(slice(o, o + s) for o, s in zip(offset, shape))


def gather_full(chunks) -> dict[str, torch.Tensor]:
    """Every global tensor of the model, assembled from all ranks' shards (on every rank)."""
    local = [(k, g, o, p, d.detach().clone()) for k, g, o, p, d in _pieces(chunks)]
    everyone = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(everyone, local)
    full = {}
    for pieces in everyone:
        for key, shape, offset, prepend, data in pieces:
            t = full.setdefault(key, torch.full(shape, float("nan")))
            t[_slices(offset, prepend, data)] = data.reshape((1,) * prepend + tuple(data.shape))
    for key, t in full.items():
        assert not torch.isnan(t).any(), f"{key}: some shards were never gathered"
    return full


@torch.no_grad()
def load_full(chunks, full: dict[str, torch.Tensor]) -> None:
    for key, shape, offset, prepend, data in _pieces(chunks):
        assert tuple(full[key].shape) == shape, (key, full[key].shape, shape)
        data.copy_(full[key][_slices(offset, prepend, data)].reshape(data.shape))


# ---- one outcome per layout ----------------------------------------------------------------------------------
def on_every_rank(fn):
    """``(fn(), None)``, or ``(None, tracebacks)`` on every rank when ``fn`` raised on any: a failing layout is
    recorded and the launch goes on to the next one (each layout is its own test id). A rank that fails while
    its peers wait in a collective still hangs the launch until its timeout, as before."""
    try:
        value, error = fn(), None
    except Exception:  # noqa: BLE001 - reported per layout
        value, error = None, f"rank {torch.distributed.get_rank()}: {traceback.format_exc()}"
    errors = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(errors, error)
    errors = [e for e in errors if e is not None]
    return (None, "\n".join(errors)) if errors else (value, None)


# ---- one layout --------------------------------------------------------------------------------------------
def batch(step: int, n: int, seq: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randint(0, VOCAB, (n, seq + 1), generator=g)


def run_layout(
    model_name: str, layout: dict, steps: int, global_batch: int, mbs: int, init=None, spec=None, extra=None,
    dtype: str = "fp32",
):
    """Train ``steps`` steps at ``layout``; returns (initial full weights or None, losses, final full weights)."""
    from megatron.core import parallel_state as ps
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from megatron_spirit.model.build import attach_schedule_hooks, build_model, wrap_ddp
    from megatron_spirit.model.config import ParallelConfig, get_model_config
    from megatron_spirit.parallel.runtime import init_model_parallel

    pcfg = ParallelConfig(**layout)
    mcfg = get_model_config(model_name)
    init_model_parallel(pcfg, seed=SEED)
    built = build_model(mcfg, pcfg, TABLE, dtype=dtype, spec=spec, verbose=False, **(extra or {}))
    initial = None
    if init is None:
        initial = gather_full(built.chunks)
    else:
        load_full(built.chunks, init)
    ddp = wrap_ddp(built.chunks, pcfg)
    opt = get_megatron_optimizer(
        OptimizerConfig(
            optimizer="adam", lr=1e-4, weight_decay=0.1, adam_beta1=0.9, adam_beta2=0.95, clip_grad=1.0,
            use_distributed_optimizer=pcfg.distributed_optimizer, bf16=dtype == "bf16",
            params_dtype=torch.bfloat16 if dtype == "bf16" else torch.float32,
        ),
        ddp,
    )
    attach_schedule_hooks(ddp, opt)
    dp, dp_rank = ps.get_data_parallel_world_size(), ps.get_data_parallel_rank()
    local = global_batch // dp
    seq = mcfg.seq_length
    positions = torch.arange(seq).unsqueeze(0).expand(mbs, -1)

    def forward_step(data_iterator, model):
        tokens = next(data_iterator)
        out = model(tokens[:, :-1], positions, None, labels=tokens[:, 1:])

        def loss_func(per_token):
            loss = per_token.float().mean()
            return loss, {"lm loss": loss.detach().clone()}  # the schedule divides loss in place

        return out, loss_func

    losses = []
    for step in range(steps):
        data = batch(step, global_batch, seq)[dp_rank * local : (dp_rank + 1) * local]
        micro = [data[i : i + mbs] for i in range(0, local, mbs)]
        iters = [iter(micro) for _ in ddp] if len(ddp) > 1 else iter(micro)
        for c in ddp:
            c.zero_grad_buffer()
        opt.zero_grad()
        stats = get_forward_backward_func()(
            forward_step_func=forward_step, data_iterator=iters, model=ddp if len(ddp) > 1 else ddp[0],
            num_microbatches=len(micro), seq_length=seq, micro_batch_size=mbs, forward_only=False,
        )
        ok, _, _ = opt.step()
        assert ok, "optimizer step skipped"
        last = ps.is_pipeline_last_stage() and ps.get_tensor_model_parallel_rank() == 0
        mine = float(torch.stack([s["lm loss"] for s in stats]).mean()) if last and stats else None
        everyone = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(everyone, mine)
        got = [x for x in everyone if x is not None]
        assert len(got) == dp, (got, dp)
        losses.append(sum(got) / len(got))
    final = gather_full(built.chunks)
    return initial, losses, final


def equivalence(model_name: str, layouts: list[dict], steps: int = 2, global_batch: int = 8, mbs: int = 1):
    """Reference TP1/PP1 then every layout; per layout: losses and max |Δweight| vs the reference, or the error."""
    world = torch.distributed.get_world_size()
    init, ref_losses, ref_final = run_layout(model_name, {}, steps, global_batch, mbs)
    report = {"world": world, "reference": ref_losses, "layouts": [], "stage_layers_identical": None}
    if world > 1:  # fresh PP=world initialisation: no stage may repeat another stage's layers
        from megatron_spirit.model.build import build_model
        from megatron_spirit.model.config import ParallelConfig, get_model_config
        from megatron_spirit.parallel.runtime import init_model_parallel

        pcfg = ParallelConfig(pp=world)
        init_model_parallel(pcfg, seed=SEED)
        fresh = gather_full(build_model(get_model_config(model_name), pcfg, TABLE, verbose=False).chunks)
        qkv = fresh["decoder.layers.self_attention.linear_qkv.weight"]
        per = qkv.shape[0] // world
        firsts = [qkv[i * per] for i in range(world)]
        report["stage_layers_identical"] = any(
            torch.equal(firsts[i], firsts[j]) for i in range(world) for j in range(i + 1, world)
        )
    def compare(layout):
        _, losses, final = run_layout(model_name, layout, steps, global_batch, mbs, init=init)
        assert set(final) == set(ref_final), sorted(set(final) ^ set(ref_final))
        diff = max(float((final[k] - ref_final[k]).abs().max()) for k in final)
        moved = max(float((ref_final[k] - init[k]).abs().max()) for k in final)
        return {"losses": losses, "max_weight_diff": diff, "moved": moved}

    for layout in layouts:
        result, error = on_every_rank(lambda: compare(layout))
        report["layouts"].append({"layout": layout, "error": error, **(result or {})})
    return report if torch.distributed.get_rank() == 0 else None


# ---- attention spec check ------------------------------------------------------------------------------------
def attention_specs(model_name: str):
    """Same weights through local+sdpa and local+unfused specs: logits, loss grads, and the bare cores."""
    from megatron.core.transformer.dot_product_attention import DotProductAttention
    from megatron.core.transformer.enums import AttnMaskType

    from megatron_spirit.model.build import build_model
    from megatron_spirit.model.config import ParallelConfig, get_model_config, transformer_config
    from megatron_spirit.model.specs import SDPAttention, choose_spec
    from megatron_spirit.parallel.runtime import init_model_parallel

    pcfg = ParallelConfig()
    mcfg = get_model_config(model_name)
    init_model_parallel(pcfg, seed=SEED)
    sdpa = build_model(mcfg, pcfg, VOCAB, spec="local+sdpa", verbose=False)
    unfused = build_model(mcfg, pcfg, VOCAB, spec="local+unfused", verbose=False)
    load_full(unfused.chunks, gather_full(sdpa.chunks))
    tokens = batch(0, 2, mcfg.seq_length)
    pos = torch.arange(mcfg.seq_length).unsqueeze(0).expand(2, -1)
    out = {"chosen": choose_spec(), "cores": [type(m).__name__ for m in (
        sdpa.chunks[0].decoder.layers[0].self_attention.core_attention,
        unfused.chunks[0].decoder.layers[0].self_attention.core_attention)]}
    logits, grads = [], []
    for built in (sdpa, unfused):
        m = built.chunks[0]
        y = m(tokens[:, :-1], pos, None)
        m(tokens[:, :-1], pos, None, labels=tokens[:, 1:]).mean().backward()
        logits.append(y.detach())
        grads.append({n: p.grad.clone() for n, p in m.named_parameters()})
    out["logits_diff"] = float((logits[0] - logits[1]).abs().max())
    out["logits_scale"] = float(logits[1].abs().max())
    out["grad_diff"] = max(float((grads[0][n] - grads[1][n]).abs().max()) for n in grads[0])

    # Bare cores, random q/k/v, GQA (the model's 2 groups) and MHA, causal default mask and an explicit mask.
    out["core_causal_diff"] = out["core_mask_diff"] = 0.0
    for groups in (mcfg.query_groups, mcfg.num_attention_heads):
        cfg = transformer_config(get_model_config(model_name, num_query_groups=groups), pcfg)
        g = torch.Generator().manual_seed(7)
        s, b, heads, d = 16, 2, cfg.num_attention_heads, cfg.kv_channels
        q = torch.randn(s, b, heads, d, generator=g)
        k = torch.randn(s, b, groups, d, generator=g)
        v = torch.randn(s, b, groups, d, generator=g)
        mask = torch.triu(torch.ones(s, s, dtype=torch.bool), 1) | (torch.rand(s, s, generator=g) < 0.2)
        mask.fill_diagonal_(False)
        mask = mask.expand(b, 1, s, s)
        cores = [cls(cfg, 1, AttnMaskType.causal, "self") for cls in (SDPAttention, DotProductAttention)]
        causal = float((cores[0](q, k, v, None) - cores[1](q, k, v, None)).abs().max())
        masked = float((cores[0](q, k, v, mask) - cores[1](q, k, v, mask)).abs().max())
        out["core_causal_diff"] = max(out["core_causal_diff"], causal)
        out["core_mask_diff"] = max(out["core_mask_diff"], masked)
        out["core_shape"] = tuple(cores[0](q, k, v, None).shape)
    out["core_groups_tested"] = (mcfg.query_groups, mcfg.num_attention_heads)
    return out


# ---- launcher checks ---------------------------------------------------------------------------------------
def rank_sum(scale: int):
    """All-reduce of the ranks over gloo, plus what the launcher put in the environment."""
    import os

    t = torch.tensor([float(torch.distributed.get_rank())])
    torch.distributed.all_reduce(t)
    return {
        "rank": torch.distributed.get_rank(),
        "world": torch.distributed.get_world_size(),
        "backend": torch.distributed.get_backend(),
        "sum": scale * float(t),
        "omp": os.environ.get("OMP_NUM_THREADS"),
    }


def fail_on(rank: int):
    """Rank ``rank`` raises; the others wait in a barrier that will never complete."""
    if torch.distributed.get_rank() == rank:
        raise ValueError(f"boom on rank {rank}")
    torch.distributed.barrier()
    return "passed the barrier"


def single_process(model_name: str):
    """World of one: the pure TP1/PP1/DP1 reference, the attention-spec comparison, and a bf16 run (mixed
    precision through Float16Module and megatron's fp32-master optimizer) from the same initial weights."""
    init, losses, final = run_layout(model_name, {}, 2, 8, 1)
    ref = {"world": 1, "reference": losses, "layouts": []}
    _, bf16_losses, bf16_final = run_layout(model_name, {}, 2, 8, 1, init=init, dtype="bf16")
    ref["bf16"] = {
        "losses": bf16_losses,
        "max_weight_diff": max(float((bf16_final[k] - final[k]).abs().max()) for k in final),
        "moved": max(float((final[k] - init[k]).abs().max()) for k in final),
    }
    return ref, attention_specs(model_name)
