"""Stage env: versions, the GPU, whether Transformer Engine imports, and the measured bf16 matmul rate.

The peak is what MFU is taken against: the best of three means of ten timed 8192³ bf16 products (CUDA events,
after three warm-ups) on random data. The dry run times a small fp32 product on CPU instead.

    python benchmarks/gpu/stage_env.py --result env.json [--dry-run]
"""
from __future__ import annotations

import importlib.metadata as md
import importlib.util
import platform
import subprocess
import time

from common import stage_main


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _nccl_version() -> str:
    import torch

    v = torch.cuda.nccl.version()  # a tuple in recent torch, an int in older ones
    return ".".join(map(str, v)) if isinstance(v, tuple) else str(v)


def matmul_tflops(n: int, dtype, device: str, warmup: int = 3, timed: int = 10, repeats: int = 3) -> dict:
    import torch

    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    rates = []
    for _ in range(repeats):
        for _ in range(warmup):
            a @ b
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            for _ in range(timed):
                a @ b
            end.record()
            torch.cuda.synchronize()
            seconds = start.elapsed_time(end) / 1000
        else:
            t = time.perf_counter()
            for _ in range(timed):
                a @ b
            seconds = time.perf_counter() - t
        rates.append(2 * n**3 * timed / seconds / 1e12)
    return {"n": n, "dtype": str(dtype).replace("torch.", ""), "device": device, "tflops_each": rates,
            "tflops": max(rates)}


def run(args) -> dict:
    import torch

    cuda = torch.cuda.is_available()
    out = {
        "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "nccl": _nccl_version() if cuda else None,
        "packages": {d: _version(d) for d in ("megatron-core", "transformers", "tokenizers", "sentencepiece",
                                              "safetensors", "transformer-engine", "transformer_engine",
                                              "flash-attn", "apex", "numpy", "faiss-cpu", "soundfile")},
        "transformer_engine_importable": importlib.util.find_spec("transformer_engine") is not None,
        "cpu_count": __import__("os").cpu_count(),
    }
    if cuda:
        p = torch.cuda.get_device_properties(0)
        out["gpu"] = {"name": p.name, "memory_gib": p.total_memory / 2**30, "sms": p.multi_processor_count,
                      "capability": f"{p.major}.{p.minor}", "count": torch.cuda.device_count()}
        try:
            out["gpu"]["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out["gpu"]["driver"] = None
        out["peak"] = matmul_tflops(8192, torch.bfloat16, "cuda")
    else:
        out["gpu"] = None
        out["peak"] = matmul_tflops(256, torch.float32, "cpu", warmup=1, timed=3, repeats=1)
    out["peak_tflops"] = out["peak"]["tflops"]
    return out


if __name__ == "__main__":
    stage_main(run, __doc__)
