"""Rank functions for the checkpoint tests (run with megatron_spirit.parallel.launch.run_ranks)."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist


def distopt_model(tp: int, layers: int, hidden: int, ffn: int, heads: int, vocab: int, seed: int = 7):
    """A random LLaMA-shaped model at TP ``tp`` (DP = the rest of the world) with megatron-core's distributed
    optimizer after one AdamW step on random gradients (so Adam's moments exist and differ from zero)."""
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

    from megatron_spirit.model.build import build_model, wrap_ddp
    from megatron_spirit.model.config import ParallelConfig, get_model_config
    from megatron_spirit.parallel.runtime import init_model_parallel

    pcfg = ParallelConfig(tp=tp, distributed_optimizer=True)
    init_model_parallel(pcfg, seed=seed)
    mcfg = get_model_config("tiny", num_layers=layers, hidden_size=hidden, ffn_hidden_size=ffn,
                            num_attention_heads=heads, seq_length=64)
    built = build_model(mcfg, pcfg, vocab, dtype="fp32", verbose=False)
    model = wrap_ddp(built.chunks, pcfg)
    opt = get_megatron_optimizer(OptimizerConfig(optimizer="adam", lr=1e-3, bf16=False, params_dtype=torch.float32,
                                                 use_distributed_optimizer=True), model)
    from megatron.core import parallel_state

    # Seeded by the DP rank: TP ranks then agree on the gradients (so the moments) of the parameters they
    # replicate (layer norms), as in training, where only one TP rank's copy is saved.
    g = torch.Generator().manual_seed(seed + parallel_state.get_data_parallel_rank())
    for chunk in model:
        for buffer in chunk.buffers:
            buffer.grad_data.copy_(torch.randn(buffer.grad_data.shape, generator=g) * 1e-2)
    ok, _, _ = opt.step()
    assert ok
    return model, opt


def merged_model_sd(model) -> dict:
    from megatron_spirit.checkpoint.weights import model_sharded_state_dict

    return {f"chunk{i}": sd for i, sd in enumerate(model_sharded_state_dict(model).values())}


def local_state(opt) -> dict:
    """{(param index, state key): a copy of this rank's flat range}: what a load must give back."""
    from megatron_spirit.checkpoint import optimizer_state as os_

    out = {}
    for i, sub in enumerate(os_.sub_optimizers(opt)):
        for index, (p, start, end) in enumerate(os_._dist_opt_params(sub)):
            if end > start:
                for k, t in os_._local_flats(sub, p).items():
                    out[(i, index, k)] = t.clone()
    return out


def zero_state(opt) -> None:
    from megatron_spirit.checkpoint import optimizer_state as os_

    for sub in os_.sub_optimizers(opt):
        for p, start, end in os_._dist_opt_params(sub):
            if end > start:
                for t in os_._local_flats(sub, p).values():
                    t.zero_()


def rank_bytes(folder: Path, rank: int) -> int:
    """Bytes of the tensor files this rank wrote (torch DCP names them ``__<rank>_<n>.distcp``)."""
    return sum(f.stat().st_size for f in folder.glob(f"__{rank}_*.distcp"))


def save_allocations(workdir: str, tp: int = 1) -> dict:
    """Save the optimizer state with today's ranges and with the former gather; per rank: the state of its TP
    shard (bytes), the peak storage each save allocated, the bytes each wrote, and whether each loads back exactly
    (into zeroed state, through the range load)."""
    from megatron.core import dist_checkpointing

    from megatron_spirit.checkpoint import optimizer_state
    from megatron_spirit.testing.allocations import AllocationPeak

    model, opt = distopt_model(tp, layers=4, hidden=256, ffn=688, heads=4, vocab=1000)
    rank = dist.get_rank()
    merged = merged_model_sd(model)
    shard_numel = sum(p.numel() for chunk in model for p in chunk.parameters())
    expected = local_state(opt)
    out = {"state_bytes": 12 * shard_numel, "owned_bytes": sum(t.numel() * 4 for t in expected.values())}
    paths = {"ranges": optimizer_state.sharded_state_dict, "gathered": optimizer_state._gathered_sharded_state_dict}
    for name, build in paths.items():
        folder = Path(workdir) / name
        if rank == 0:
            folder.mkdir(parents=True)
        dist.barrier()
        with AllocationPeak() as peak:
            sharded = {"optimizer": build(opt, merged, is_loading=False)}
            dist_checkpointing.save(sharded, str(folder))
            del sharded
        dist.barrier()
        out[f"{name}_peak"] = peak.peak_bytes
        out[f"{name}_written"] = rank_bytes(folder, rank)
    for name in paths:
        zero_state(opt)
        with AllocationPeak() as peak:
            request = {"optimizer": optimizer_state.sharded_state_dict(opt, merged, is_loading=True)}
            loaded = dist_checkpointing.load(request, str(Path(workdir) / name))
            optimizer_state.load_state(opt, loaded["optimizer"], optimizer_state.common_state(opt))
            del request, loaded
        got = local_state(opt)
        out[f"{name}_loads_exactly"] = got.keys() == expected.keys() and all(
            torch.equal(got[k], expected[k]) for k in expected)
        out[f"{name}_load_peak"] = peak.peak_bytes
    return out


TINY = dict(layers=2, hidden=64, ffn=176, heads=4, vocab=1000)


def save_both_forms(workdir: str, tp: int) -> None:
    """Save the optimizer state at TP ``tp`` (DP = the rest) by range to ``ranges/`` and gathered to ``gathered/``."""
    from megatron.core import dist_checkpointing

    from megatron_spirit.checkpoint import optimizer_state

    model, opt = distopt_model(tp, **TINY)
    merged = merged_model_sd(model)
    for name, build in (("ranges", optimizer_state.sharded_state_dict),
                        ("gathered", optimizer_state._gathered_sharded_state_dict)):
        folder = Path(workdir) / name
        if dist.get_rank() == 0:
            folder.mkdir(parents=True)
        dist.barrier()
        dist_checkpointing.save({"optimizer": build(opt, merged, is_loading=False)}, str(folder))


def load_both_forms(workdir: str, tp: int) -> dict:
    """At TP ``tp``: the state loaded by range from ``ranges/`` against the state loaded, the former way (whole
    TP-local tensors, sliced), from ``gathered/``."""
    from megatron.core import dist_checkpointing

    from megatron_spirit.checkpoint import optimizer_state

    model, opt = distopt_model(tp, seed=99, **TINY)  # other weights and moments: all must come from the files
    merged = merged_model_sd(model)
    common = optimizer_state.common_state(opt)
    out = {}
    for name, build in (("gathered", optimizer_state._gathered_sharded_state_dict),
                        ("ranges", optimizer_state.sharded_state_dict)):
        zero_state(opt)
        loaded = dist_checkpointing.load({"optimizer": build(opt, merged, is_loading=True)}, str(Path(workdir) / name))
        optimizer_state.load_state(opt, loaded["optimizer"], common)
        out[name] = local_state(opt)
    ref, got = out["gathered"], out["ranges"]
    return {"values": sum(t.numel() for t in ref.values()),
            "nonzero": all(bool(t.abs().sum() > 0) for t in ref.values()),
            "equal": ref.keys() == got.keys() and all(torch.equal(ref[k], got[k]) for k in ref)}
