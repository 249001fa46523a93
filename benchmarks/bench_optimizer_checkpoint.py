"""Distributed-optimizer checkpoints: memory, bytes per rank and time of the range form against the former gather.

Per layout (CPU, gloo; default DP2, DP4 and TP2×DP2 of a ~106M-parameter LLaMA-shaped model: 8 layers, hidden
768, ffn 2048, vocab 32000, fp32, megatron-core's distributed optimizer after one AdamW step), three ways of
saving and loading the same optimizer state, run alternately ``--repeats`` times (best of N reported; the
machine is shared, so timings are noisy):

- ``ranges``: today's ``checkpoint.optimizer_state.sharded_state_dict`` (each DP rank saves the range it owns),
- ``gathered``: the former form (``optimizer_state._gathered_sharded_state_dict``: every parameter's state
  all-reduced to full size on every DP rank; one DP rank writes),
- ``dp_reshardable``: megatron-core's own ``DistributedOptimizer.sharded_state_dict(...,
  metadata={'distrib_optim_sharding_type': 'dp_reshardable'})`` (bucket-space; reloads at the same TP/PP only):
  the speed reference.

Each save writes only the optimizer (no model weights) with ``dist_checkpointing.save``; each load restores it
into the live optimizer. Reported per rank: ``*_save_rss`` / ``*_load_rss``: peak RSS above the RSS just
before (a thread reading /proc/self/statm every ms; glibc's mmap threshold is pinned at 64 KiB so freed tensors
go back to the OS; megatron-core's forked writer processes are not counted, they only read the parent's pages);
``*_save_alloc`` / ``*_load_alloc``: peak tensor storage allocated (megatron_spirit.testing.allocations, one
separate untimed pass); ``*_written``: bytes of the rank's files; ``state_bytes``: 12 bytes × the rank's
TP-local parameters (fp32 param + two moments) — what the former form holds extra on *every* rank.

With ``--async-save``, each repeat also saves the ranges asynchronously (``dist_checkpointing.save(...,
async_sharded_save=True)`` + megatron-core's ``AsyncCallsQueue``; the trainer does not do this yet):
``ranges_async_stall_s`` is the time until control returns (what a training step would wait), ``..._done_s``
until the files are written.

    python benchmarks/bench_optimizer_checkpoint.py --workdir /tmp/bench_optckpt [--layers 2 for a quick run]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PATHS = ("ranges", "gathered", "dp_reshardable")


class RssPeak:
    """Peak resident set size of this process above its value at start, sampled every millisecond."""

    def __init__(self):
        self.page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def __enter__(self):
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, self._rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())
        self.extra = self.peak - self.base


def _save_dict(path: str, opt, merged) -> dict:
    from megatron_spirit.checkpoint import optimizer_state

    if path == "ranges":
        return optimizer_state.sharded_state_dict(opt, merged, is_loading=False)
    if path == "gathered":
        return optimizer_state._gathered_sharded_state_dict(opt, merged, is_loading=False)
    return opt.sharded_state_dict(merged, is_loading=False, metadata={"distrib_optim_sharding_type": "dp_reshardable"})


def _load(path: str, opt, merged, folder: str) -> None:
    import torch
    from megatron.core import dist_checkpointing

    from megatron_spirit.checkpoint import optimizer_state

    if path == "dp_reshardable":
        request = opt.sharded_state_dict(merged, is_loading=True,
                                         metadata={"distrib_optim_sharding_type": "dp_reshardable"})
        loaded = dist_checkpointing.load({"optimizer": request}, folder)
        with torch.no_grad():  # megatron-core copies into the (grad-requiring) fp32 params
            opt.load_state_dict(loaded["optimizer"])
        return
    build = optimizer_state.sharded_state_dict if path == "ranges" else optimizer_state._gathered_sharded_state_dict
    request = {"optimizer": build(opt, merged, is_loading=True)}
    loaded = dist_checkpointing.load(request, folder)
    optimizer_state.load_state(opt, loaded["optimizer"], optimizer_state.common_state(opt))


def _async_stall(opt, merged, folder: Path, rank: int, queue) -> tuple[float, float]:
    """(seconds until an asynchronous save of the ranges returns control, seconds until its files are done)."""
    import torch.distributed as dist
    from megatron.core import dist_checkpointing

    from megatron_spirit.checkpoint import optimizer_state

    if rank == 0:
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    dist.barrier()
    t = time.perf_counter()
    sharded = {"optimizer": optimizer_state.sharded_state_dict(opt, merged, is_loading=False)}
    queue.schedule_async_request(dist_checkpointing.save(sharded, str(folder), async_sharded_save=True))
    stall = time.perf_counter() - t
    queue.maybe_finalize_async_calls(blocking=True)
    done = time.perf_counter() - t
    dist.barrier()
    return stall, done


def worker(workdir: str, tp: int, layers: int, hidden: int, ffn: int, vocab: int, repeats: int,
           paths: tuple = PATHS, async_save: bool = False) -> dict:
    import torch.distributed as dist
    from megatron.core import dist_checkpointing

    from megatron_spirit.testing.allocations import AllocationPeak
    from tests.checkpoint.workers import distopt_model, local_state, merged_model_sd, rank_bytes, zero_state

    model, opt = distopt_model(tp, layers=layers, hidden=hidden, ffn=ffn, heads=12, vocab=vocab)
    rank = dist.get_rank()
    merged = merged_model_sd(model)
    params = sum(p.numel() for chunk in model for p in chunk.parameters())
    expected = local_state(opt)
    out = {"params_local": params, "state_bytes": 12 * params}
    root = Path(workdir)

    def one(path: str, tag: str, measure) -> tuple[float, float, int]:
        folder = root / f"{path}_{tag}"
        if rank == 0:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        dist.barrier()
        with measure() as m:
            t = time.perf_counter()
            sharded = {"optimizer": _save_dict(path, opt, merged)}
            dist_checkpointing.save(sharded, str(folder))
            del sharded
            dist.barrier()
            save_s = time.perf_counter() - t
        save_m = m
        written = rank_bytes(folder, rank)
        zero_state(opt)
        dist.barrier()
        with measure() as m:
            t = time.perf_counter()
            _load(path, opt, merged, str(folder))
            dist.barrier()
            load_s = time.perf_counter() - t
        got = local_state(opt)
        assert all((got[k] == expected[k]).all() for k in expected), f"{path}: the load did not restore the state"
        dist.barrier()
        if rank == 0:
            shutil.rmtree(folder, ignore_errors=True)
        return save_s, load_s, written, save_m, m

    for path in paths:  # the deterministic allocation counts: one untimed pass
        _, _, _, s, l = one(path, "alloc", AllocationPeak)
        out[f"{path}_save_alloc"], out[f"{path}_load_alloc"] = s.peak_bytes, l.peak_bytes
    if async_save:
        from megatron.core.dist_checkpointing.strategies.async_utils import AsyncCallsQueue

        queue = AsyncCallsQueue()
    for r in range(repeats):
        if async_save:
            stall, done = _async_stall(opt, merged, root / "async", rank, queue)
            out.setdefault("ranges_async_stall_s", []).append(stall)
            out.setdefault("ranges_async_done_s", []).append(done)
        for path in (paths if r % 2 == 0 else paths[::-1]):
            save_s, load_s, written, s, l = one(path, "time", RssPeak)
            out.setdefault(f"{path}_save_s", []).append(save_s)
            out.setdefault(f"{path}_load_s", []).append(load_s)
            out.setdefault(f"{path}_save_rss", []).append(s.extra)
            out.setdefault(f"{path}_load_rss", []).append(l.extra)
            out[f"{path}_written"] = written
    return out


def summarise(layout: str, ranks: list[dict], paths: tuple = PATHS) -> dict:
    gb = 1e9
    s = {"layout": layout, "params_local": ranks[0]["params_local"], "state_gb_per_rank": ranks[0]["state_bytes"] / gb}
    d = len(ranks) // (2 if layout.startswith("tp2") else 1)
    for path in paths:
        # a collective's time is the slowest rank's; best of the repeats
        for op in ("save", "load"):
            times = [r[f"{path}_{op}_s"] for r in ranks]
            s[f"{path}_{op}_s"] = min(max(t[i] for t in times) for i in range(len(times[0])))
        s[f"{path}_save_rss_gb_max_rank"] = max(min(r[f"{path}_save_rss"]) for r in ranks) / gb
        s[f"{path}_load_rss_gb_max_rank"] = max(min(r[f"{path}_load_rss"]) for r in ranks) / gb
        s[f"{path}_save_alloc_gb_max_rank"] = max(r[f"{path}_save_alloc"] for r in ranks) / gb
        s[f"{path}_load_alloc_gb_max_rank"] = max(r[f"{path}_load_alloc"] for r in ranks) / gb
        written = [r[f"{path}_written"] for r in ranks]
        s[f"{path}_written_gb_per_rank"] = [round(w / gb, 4) for w in written]
        s[f"{path}_written_max_over_fair"] = max(written) / (sum(written) / len(written))
    if "ranges_async_stall_s" in ranks[0]:
        for k in ("ranges_async_stall_s", "ranges_async_done_s"):
            s[k] = min(max(r[k][i] for r in ranks) for i in range(len(ranks[0][k])))
    if "ranges" not in paths or "dp_reshardable" not in paths:
        return s
    state = ranks[0]["state_bytes"] / gb
    s["ranges_save_alloc_over_state_per_D"] = s["ranges_save_alloc_gb_max_rank"] / (state / d)
    s["ranges_save_rss_over_state_per_D"] = s["ranges_save_rss_gb_max_rank"] / (state / d)
    s["ranges_save_s_over_dp_reshardable"] = s["ranges_save_s"] / s["dp_reshardable_save_s"]
    s["ranges_load_s_over_dp_reshardable"] = s["ranges_load_s"] / s["dp_reshardable_load_s"]
    return s


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workdir", required=True, help="scratch folder for the checkpoints (each layout's subfolder is emptied first)")
    p.add_argument("--layouts", default="dp2,dp4,tp2dp2", help="comma-separated layouts: dpN or tp2dpN (N or 2×N gloo ranks)")
    p.add_argument("--layers", type=int, default=8, help="transformer layers (default: a 105.8M-parameter model)")
    p.add_argument("--hidden", type=int, default=768, help="hidden size")
    p.add_argument("--ffn", type=int, default=2048, help="SwiGLU intermediate size")
    p.add_argument("--vocab", type=int, default=32000, help="embedding rows")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds per path, run in turn (best reported)")
    p.add_argument("--paths", default=",".join(PATHS), help="which of " + ", ".join(PATHS))
    p.add_argument("--async-save", action="store_true",
                   help="also time an asynchronous save of the ranges: the stall until control returns")
    a = p.parse_args(argv)
    paths = tuple(a.paths.split(","))
    sys.path.insert(0, str(ROOT))
    from megatron_spirit.parallel.launch import run_ranks

    results = []
    for layout in a.layouts.split(","):
        tp = 2 if layout.startswith("tp2") else 1
        dp = int(layout.split("dp")[1])
        work = Path(a.workdir) / layout
        shutil.rmtree(work, ignore_errors=True)
        ranks = run_ranks("benchmarks.bench_optimizer_checkpoint:worker", tp * dp,
                          args=(str(work), tp, a.layers, a.hidden, a.ffn, a.vocab, a.repeats, paths, a.async_save),
                          timeout=3600,
                          env={"MALLOC_MMAP_THRESHOLD_": "65536", "PYTHONPATH": str(ROOT)})
        results.append(summarise(layout, ranks, paths))
        print(json.dumps(results[-1], indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
