#!/usr/bin/env python
"""HuBERT feature speed on CPU: padded batches vs one utterance at a time, frames/s (issue #3's figure).

A randomly initialised HuBERT-base-shaped model (12 layers, 768 wide, 512-channel conv stack with the 25 Hz
stride 640) is saved to a temp folder and loaded by path as in production. Utterances of random length
(``--min-seconds`` … ``--max-seconds``) go through :class:`HubertFeaturizer` up to layer 11 either one by one or
sorted by length in padded batches of at most ``--batch-seconds`` of padded audio, as ``spirit-units extract``
does. Also checks that both give the same k-means units (a 50-centroid quantizer fitted on the features).

    OMP_NUM_THREADS=2 python benchmarks/bench_units_hubert.py --files 16 --batch-seconds 60
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--max-seconds", type=float, default=8.0)
    ap.add_argument("--batch-seconds", type=float, default=60.0)
    ap.add_argument("--layer", type=int, default=11)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=1, help="timed passes of each mode (the best is reported)")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    from megatron_spirit.speech.hubert import HubertFeaturizer, base_hubert_config, save_random_hubert
    from megatron_spirit.speech.kmeans import KMeansMeta, train_kmeans

    rng = np.random.default_rng(0)
    wavs = [(0.1 * rng.standard_normal(int(rng.uniform(args.min_seconds, args.max_seconds) * 16000)))
            .astype(np.float32) for _ in range(args.files)]
    seconds = sum(len(w) for w in wavs) / 16000
    with tempfile.TemporaryDirectory() as d:
        f = HubertFeaturizer(save_random_hubert(base_hubert_config(), Path(d) / "hubert-base-25hz"),
                             (args.layer,), device=args.device)
    frames = sum(f.num_frames(len(w)) for w in wavs)

    def one_by_one():
        return [f([w])[0][args.layer] for w in wavs]

    def batched():
        order = sorted(range(len(wavs)), key=lambda i: -len(wavs[i]))
        out, batch = [None] * len(wavs), []

        def flush():
            for i, feats in zip(batch, f([wavs[i] for i in batch])):
                out[i] = feats[args.layer]

        for i in order:
            if batch and len(wavs[batch[0]]) / 16000 * (len(batch) + 1) > args.batch_seconds:
                flush()
                batch = []
            batch.append(i)
        flush()
        return out

    f([wavs[0][:16000]])  # warm-up
    results, feats = {}, {}
    for name, fn in (("one_by_one", one_by_one), ("batched", batched)):
        best, best_cpu = float("inf"), float("inf")
        for _ in range(args.repeats):
            t, c = time.perf_counter(), time.process_time()
            feats[name] = fn()
            best, best_cpu = min(best, time.perf_counter() - t), min(best_cpu, time.process_time() - c)
        # CPU time too: on a shared machine wall time mostly measures the neighbours.
        results[name] = {"seconds": best, "frames_per_s": frames / best, "audio_s_per_s": seconds / best,
                         "cpu_seconds": best_cpu, "frames_per_cpu_s": frames / best_cpu}
    km = train_kmeans(np.concatenate(feats["one_by_one"]), 50, KMeansMeta(layer=args.layer), niter=5)
    same = all(np.array_equal(km(a), km(b)) for a, b in zip(feats["one_by_one"], feats["batched"]))
    maxdiff = max(float(np.abs(a - b).max()) for a, b in zip(feats["one_by_one"], feats["batched"]))
    report = {"device": str(f.device), "threads": torch.get_num_threads(), "files": args.files,
              "audio_seconds": round(seconds, 2), "frames": frames, "batch_seconds": args.batch_seconds,
              "layer": args.layer, **results,
              "speedup": results["one_by_one"]["seconds"] / results["batched"]["seconds"],
              "cpu_speedup": results["one_by_one"]["cpu_seconds"] / results["batched"]["cpu_seconds"],
              "units_identical": same, "max_feature_diff": maxdiff}
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
