"""Stage units: HuBERT unit extraction speed, batched vs one file at a time, in seconds of audio per second.

A randomly initialised HuBERT-base-shaped model (12 layers, 768 wide, the 25 Hz conv stack; the dry run: the
tests' tiny one) saved and loaded by path as in production, on the GPU in bf16 as ``spirit-units extract`` runs
it. Files of random length (2–12 s) go through ``HubertFeaturizer`` up to layer 11 either one call per file or
all in one call, which sorts the chunks by length and pads them into batches of at most 200 s of audio (the
CLI's GPU default). Also: the share of frames whose k-means unit (100 centroids drawn from the features) is the
same both ways.

    python benchmarks/gpu/stage_units.py --result units.json [--dry-run]
"""
from __future__ import annotations

import time

import numpy as np

from common import stage_main

SAMPLE_RATE = 16000


def run(args) -> dict:
    import torch

    from megatron_spirit.speech.hubert import (HubertFeaturizer, base_hubert_config, save_random_hubert,
                                               tiny_hubert_config)
    from megatron_spirit.speech.kmeans import KMeansMeta, KMeansQuantizer

    cfg, layer, files, lo, hi = (tiny_hubert_config(), 2, 6, 1.0, 2.0) if args.dry_run else \
        (base_hubert_config(), 11, 96, 2.0, 12.0)
    folder = save_random_hubert(cfg, args.work / "hubert")
    f = HubertFeaturizer(folder, (layer,), device="auto", max_batch_seconds=200.0)
    rng = np.random.default_rng(0)
    wavs = [(0.1 * rng.standard_normal(int(rng.uniform(lo, hi) * SAMPLE_RATE))).astype(np.float32)
            for _ in range(files)]
    audio = sum(len(w) for w in wavs) / SAMPLE_RATE
    f(wavs[:4])  # warm-up: kernels, allocator, autotuning
    f([wavs[0]])

    def timed(fn, repeats: int):
        best, out = float("inf"), None
        for _ in range(repeats):
            if f.device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            out = fn()  # returns numpy arrays: the device work is done
            best = min(best, time.perf_counter() - t)
        return best, out

    one_s, one = timed(lambda: [f([w])[0][layer] for w in wavs], 1)
    batch_s, batched = timed(lambda: [x[layer] for x in f(wavs)], 3)
    frames = np.concatenate(one)
    km = KMeansQuantizer(frames[rng.choice(len(frames), size=min(100, len(frames)), replace=False)],
                         KMeansMeta(layer=layer))
    same = sum(int((km(a) == km(b)).sum()) for a, b in zip(one, batched))
    return {
        "device": str(f.device), "bf16": f.bf16, "model": "hubert-base shape, random weights" if not args.dry_run
        else "tiny random", "files": files, "audio_seconds": audio, "frames": int(len(frames)), "layer": layer,
        "one_by_one": {"seconds": one_s, "audio_s_per_s": audio / one_s},
        "batched": {"seconds": batch_s, "audio_s_per_s": audio / batch_s, "max_batch_seconds": 200.0},
        "speedup": one_s / batch_s, "units_same_fraction": same / len(frames),
        "max_feature_diff": max(float(np.abs(a - b).max()) for a, b in zip(one, batched)),
    }


if __name__ == "__main__":
    stage_main(run, __doc__)
