"""What verifying checkpoint checksums costs a load (CPU, one process, a ~200M-parameter model + Adam state).

Saves one training checkpoint (``checkpoint.resume.save``: model, optimizer, RNG, checksums.json) of a random
LLaMA-shaped GPTModel (default 12 layers, hidden 1024, ffn 2816, vocab 32000: ~200M parameters, fp32, ~2.4 GB
with Adam's two moments), then times, alternately, ``--repeats`` times each:

- ``load_cold`` / ``load_hot``: ``resume.load`` with the checksums verified (the path a resume takes), the
  checkpoint's pages first dropped from the page cache (``cold``: a restarted job reading from disk) or not,
- ``load_*_unverified``: the same with verification switched off,
- ``verify_alone``: verifying all files serially (what it would cost not overlapped with the reads),
- ``save_checksums``: computing the checksums at save (``checksums.entries``, one rank).

A hot load is the case where verification is the largest share: nothing to overlap its reads with, so on a
machine without a free core it costs its full serial time. Prints medians and
``overhead_* = load_* / load_*_unverified - 1``.

    python benchmarks/bench_checkpoint_verify.py --workdir /tmp/bench_verify   [--layers 2 for a quick run]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def measure(workdir: str, layers: int, hidden: int, ffn: int, vocab: int, repeats: int) -> dict:
    import torch
    from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    from megatron_spirit.checkpoint import checksums, resume
    from megatron_spirit.checkpoint.folder import CheckpointDir
    from megatron_spirit.checkpoint.state import TrainingState
    from megatron_spirit.model.build import build_model, wrap_ddp
    from megatron_spirit.model.config import ParallelConfig, get_model_config
    from megatron_spirit.parallel.runtime import init_model_parallel

    pcfg = ParallelConfig()
    init_model_parallel(pcfg, seed=1)
    mcfg = get_model_config("tiny", num_layers=layers, hidden_size=hidden, ffn_hidden_size=ffn,
                            num_attention_heads=16, seq_length=256)
    built = build_model(mcfg, pcfg, vocab, dtype="fp32", verbose=False)
    params = sum(p.numel() for c in built.chunks for p in c.parameters())
    model = wrap_ddp(built.chunks, pcfg)
    opt = get_megatron_optimizer(OptimizerConfig(optimizer="adam", lr=1e-4, bf16=False,
                                                 params_dtype=torch.float32), model)
    for group in opt.param_groups:  # materialise Adam's moments (they are created at the first step)
        for p in group["params"]:
            p.grad = torch.zeros_like(p)
            p.main_grad = p.grad
    opt.step()
    sched = OptimizerParamScheduler(opt, init_lr=0.0, max_lr=1e-4, min_lr=1e-5, lr_warmup_steps=1,
                                    lr_decay_steps=10, lr_decay_style="linear", start_wd=0.0, end_wd=0.0,
                                    wd_incr_steps=10, wd_incr_style="constant")
    ckpt_dir = CheckpointDir(Path(workdir) / "ckpt")
    t = time.perf_counter()
    folder = resume.save(ckpt_dir, TrainingState(step=1, consumed_samples=1, padded_vocab=vocab), model, opt, sched)
    save_s = time.perf_counter() - t
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())

    real = checksums.verify
    times = {k: [] for k in ("load_cold", "load_cold_unverified", "load_hot", "load_hot_unverified",
                             "verify_alone", "save_checksums")}
    for r in range(repeats):
        for cache in ("cold", "hot"):
            for verified in ((True, False) if r % 2 == 0 else (False, True)):  # alternate which goes first
                if cache == "cold":
                    _evict(folder)
                if not verified:
                    checksums.verify = lambda *a, **k: []  # the same load, nothing verified
                try:
                    t = time.perf_counter()
                    resume.load(folder, model, opt, sched)
                    times[f"load_{cache}" + ("" if verified else "_unverified")].append(time.perf_counter() - t)
                finally:
                    checksums.verify = real
        t = time.perf_counter()
        assert checksums.verify(folder) == []
        times["verify_alone"].append(time.perf_counter() - t)
        t = time.perf_counter()
        checksums.entries(folder)
        times["save_checksums"].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"parameters": params, "checkpoint_bytes": size, "save_s": round(save_s, 2),
            **{f"{k}_s": round(v, 3) for k, v in med.items()},
            "hash_GBps": round(size / med["verify_alone"] / 1e9, 2),
            "overhead_cold": round(med["load_cold"] / med["load_cold_unverified"] - 1, 4),
            "overhead_hot": round(med["load_hot"] / med["load_hot_unverified"] - 1, 4),
            "serial_share_hot": round(med["verify_alone"] / med["load_hot_unverified"], 4)}


def _evict(folder: Path) -> None:
    """Drop the checkpoint's pages from the page cache (POSIX_FADV_DONTNEED; the files are fsynced)."""
    import os

    for p in folder.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--ffn", type=int, default=2816)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from megatron_spirit.parallel.launch import run_ranks

    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    result = run_ranks("bench_checkpoint_verify:measure", 1, args=(args.workdir, args.layers, args.hidden,
                       args.ffn, args.vocab, args.repeats), timeout=1800)[0]
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
