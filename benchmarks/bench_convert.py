"""Peak memory and time of spirit-convert on a ~1B-parameter random LLaMA (CPU).

Builds (streaming, never the whole model in memory) a random HF LLaMA folder with TinyLlama-1.1B's shapes
(22 layers, hidden 2048, ffn 5632, 32 heads, 4 key/value heads, 32000 vocab) in bf16 and a SpiRit tokenizer
over a 32000-piece sentencepiece model, then runs ``hf-to-megatron`` and ``megatron-to-hf`` each in a fresh
process that samples its own memory. Reported per step: wall time, peak anonymous memory (what the process
really allocated; sampled every 20 ms), peak RSS (VmHWM; also counts clean pages of memory-mapped input files,
which the kernel can drop), and the anonymous memory right after imports. The model's size is printed beside
them, and the memory of merely loading every HF tensor at once (``whole_model_in_memory``: the floor of any
converter that materialises the model, e.g. via ``from_pretrained``; the alternative this design avoids).

    python benchmarks/bench_convert.py --workdir /tmp/bench_convert   [--layers 4 for a quick run]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class MemorySampler:
    """Peak RssAnon of this process, sampled in a background thread."""

    def __init__(self, every: float = 0.02):
        self.every, self.peak_anon, self._stop = every, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak_anon = max(self.peak_anon, _status_kib("RssAnon"))
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak_anon = max(self.peak_anon, _status_kib("RssAnon"))


def child(argv: list[str]) -> None:
    """Run one spirit-convert command here and print its measurements as JSON (last line)."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch  # noqa: F401  (imports count in the baseline, not in the conversion)

    import megatron.core.dist_checkpointing  # noqa: F401
    import transformers  # noqa: F401

    from megatron_spirit.cli.convert import main

    after_imports = _status_kib("RssAnon")
    start = time.perf_counter()
    with MemorySampler() as mem:
        rc = main(argv)
    wall = time.perf_counter() - start
    if rc:
        raise SystemExit(rc)
    print(json.dumps({"wall_s": wall, "peak_anon_mib": mem.peak_anon / 1024, "peak_rss_mib": _status_kib("VmHWM") / 1024,
                      "anon_after_imports_mib": after_imports / 1024}))


def child_whole_load(folder: str) -> None:
    """The alternative's floor: hold every HF tensor in memory at once (what a whole-model converter needs)."""
    import torch  # noqa: F401
    from safetensors import safe_open

    after_imports = _status_kib("RssAnon")
    start = time.perf_counter()
    with MemorySampler() as mem:
        tensors = {}
        for shard in sorted(Path(folder).glob("*.safetensors")):
            with safe_open(str(shard), framework="pt") as f:  # copies: tensors outlive the file map
                tensors.update({name: f.get_tensor(name).clone() for name in f.keys()})
    wall = time.perf_counter() - start
    print(json.dumps({"wall_s": wall, "peak_anon_mib": mem.peak_anon / 1024, "peak_rss_mib": _status_kib("VmHWM") / 1024,
                      "anon_after_imports_mib": after_imports / 1024}))


def make_random_hf(folder: Path, layers: int, hidden: int, ffn: int, heads: int, kv_heads: int, vocab: int,
                   seed: int = 0) -> int:
    """A random HF LLaMA folder written tensor by tensor; returns the parameter count."""
    import torch

    from megatron_spirit.convert import layout as L
    from megatron_spirit.convert.hf_writer import ShardedSafetensorsWriter
    from megatron_spirit.convert.megatron_to_hf import hf_config_dict
    from megatron_spirit.model.config import ModelConfig

    cfg = ModelConfig(layers, hidden, ffn, heads, None if kv_heads == heads else kv_heads, seq_length=2048,
                      name="bench-1b")
    folder.mkdir(parents=True, exist_ok=True)
    shapes = L.hf_shapes(cfg, vocab)
    writer = ShardedSafetensorsWriter(folder, [(n, s, torch.bfloat16) for n, s in shapes.items()], 1 << 30)
    gen = torch.Generator().manual_seed(seed)
    count = 0
    for name, shape in shapes.items():
        t = (torch.randn(shape, generator=gen) * 0.02).to(torch.bfloat16)
        if name.endswith("norm.weight"):
            t = torch.ones(shape, dtype=torch.bfloat16)
        writer.add(name, t)
        count += t.numel()
    writer.close()
    (folder / "config.json").write_text(json.dumps(hf_config_dict(cfg, vocab, torch.bfloat16, 1, 2), indent=2))
    return count


def run_child(argv: list[str], mode: str = "--child") -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, __file__, mode, *argv], env=env, check=True, capture_output=True,
                         text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        child(sys.argv[2:])
        return
    if sys.argv[1:2] == ["--child-whole-load"]:
        child_whole_load(sys.argv[2])
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="/tmp/bench_convert")
    p.add_argument("--layers", type=int, default=22)
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--ffn", type=int, default=5632)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--tp", type=int, default=2)
    p.add_argument("--keep", action="store_true", help="keep the folders")
    args = p.parse_args()

    from megatron_spirit.synth.text import sentences
    from megatron_spirit.tokenizer.build import build_tokenizer
    from megatron_spirit.tokenizer.sentencepiece_bpe import train_sentencepiece

    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    spm = train_sentencepiece(sentences(3000, seed=2), work / "base.model", vocab_size=600, pad_to=32000)
    tok = build_tokenizer(spm, work / "tokenizer", "base")
    t = time.perf_counter()
    params = make_random_hf(work / "hf", args.layers, args.hidden, args.ffn, args.heads, args.kv_heads, 32000)
    print(f"random HF model: {params / 1e9:.3f} B parameters, {params * 2 / 2**20:.0f} MiB in bf16 "
          f"(written in {time.perf_counter() - t:.0f} s)", flush=True)

    results = {"parameters": params, "bf16_mib": params * 2 / 2**20}
    results["hf_to_megatron"] = run_child(["hf-to-megatron", "--hf", str(work / "hf"), "--tokenizer", str(tok),
                                           "--out", str(work / "megatron"), "--tp", str(args.tp), "--no-progress"])
    results["megatron_to_hf"] = run_child(["megatron-to-hf", "--ckpt", str(work / "megatron"), "--out",
                                           str(work / "hf_back"), "--max-shard-size", "1GB", "--no-progress"])
    results["whole_model_in_memory"] = run_child([str(work / "hf")], mode="--child-whole-load")
    print(f"{'step':22} {'wall s':>8} {'peak anon MiB':>14} {'peak RSS MiB':>13} {'anon after imports':>19}")
    for step in ("hf_to_megatron", "megatron_to_hf", "whole_model_in_memory"):
        r = results[step]
        print(f"{step:22} {r['wall_s']:8.1f} {r['peak_anon_mib']:14.0f} {r['peak_rss_mib']:13.0f} "
              f"{r['anon_after_imports_mib']:19.0f}")
    print(f"model size (bf16): {results['bf16_mib']:.0f} MiB")
    (work / "results.json").write_text(json.dumps(results, indent=2))
    if not args.keep:
        for sub in ("hf", "megatron", "hf_back"):
            shutil.rmtree(work / sub, ignore_errors=True)


if __name__ == "__main__":
    main()
