"""Training the three quantizers on a sample of a corpus (what ``spirit-units train-*`` runs).

Each reads a seeded random sample of the audio manifest (up to ``max_hours``), skips unusable files with a
count, and saves an output folder atomically.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import SAMPLE_RATE, AudioError, load_audio
from .corpus import AudioItem, read_manifest, sample_items
from .hubert import HubertFeaturizer
from .kmeans import KMeansMeta, KMeansQuantizer, train_kmeans
from .pitch import PitchConfig, PitchData, PitchQuantizer, f0_tracks, train_pitch_vqvae
from .style import frames_per_window, pool_windows


@dataclass(frozen=True)
class Sample:
    """A corpus sample: the files used, their audio, and how many were skipped (with one example reason)."""

    items: list[AudioItem]
    wavs: list[np.ndarray]
    skipped: int
    example_error: str = ""

    @property
    def hours(self) -> float:
        return sum(len(w) for w in self.wavs) / SAMPLE_RATE / 3600


def load_sample(manifest: str | Path, max_hours: float, seed: int = 0, min_samples: int = 1) -> Sample:
    items, wavs, skipped, example = [], [], 0, ""
    total = 0.0
    for it in sample_items(read_manifest(manifest), None, seed):
        if total >= max_hours * 3600:
            break
        try:
            wav = load_audio(it.path, min_samples, it.expected_rate, it.expected_duration)
        except AudioError as e:
            skipped += 1
            example = example or f"{it.id}: {e.reason}"
            continue
        items.append(it)
        wavs.append(wav)
        total += len(wav) / SAMPLE_RATE
    if not wavs:
        raise ValueError(f"{manifest}: no usable audio in the sample ({skipped} skipped; {example})")
    return Sample(items, wavs, skipped, example)


def _features(featurizer: HubertFeaturizer, wavs: list[np.ndarray], layer: int, batch_seconds: float | None,
              progress: bool) -> list[np.ndarray]:
    from tqdm import tqdm

    if batch_seconds is None:  # padded batches pay off on GPU; on CPU one file at a time was as fast or faster
        batch_seconds = 200.0 if featurizer.device.type == "cuda" else 0.0
    order = sorted(range(len(wavs)), key=lambda i: -len(wavs[i]))
    out: list[np.ndarray | None] = [None] * len(wavs)
    batch: list[int] = []

    def flush():
        for i, f in zip(batch, featurizer([wavs[i] for i in batch])):
            out[i] = f[layer]

    bar = tqdm(total=len(wavs), desc=f"HuBERT layer {layer}", disable=not progress, mininterval=2)
    for i in order:
        if batch and len(wavs[batch[0]]) / SAMPLE_RATE * (len(batch) + 1) > batch_seconds:
            flush()
            bar.update(len(batch))
            batch = []
        batch.append(i)
    if batch:
        flush()
        bar.update(len(batch))
    bar.close()
    return out  # type: ignore[return-value]


def train_hubert_kmeans(manifest: str | Path, model: str | Path, out: str | Path, layer: int = 11, k: int = 500,
                        max_hours: float = 10.0, max_frames: int = 1_000_000, niter: int = 50, seed: int = 0,
                        device: str = "auto", batch_seconds: float | None = None, progress: bool = True
                        ) -> tuple[KMeansQuantizer, Sample]:
    f = HubertFeaturizer(model, (layer,), device=device)
    sample = load_sample(manifest, max_hours, seed, f.geometry.receptive_field)
    feats = np.concatenate(_features(f, sample.wavs, layer, batch_seconds, progress))
    if len(feats) > max_frames:
        feats = feats[np.random.default_rng(seed).choice(len(feats), max_frames, replace=False)]
    meta = KMeansMeta(model=str(Path(model).resolve()), layer=layer, rate=f.rate)
    q = train_kmeans(feats, k, meta, niter=niter, seed=seed, verbose=progress)
    q.save(out)
    return q, sample


def import_kmeans(path: str | Path, model: str | Path, out: str | Path, layer: int = 11) -> KMeansQuantizer:
    """A public quantizer file (TWIST/textlesslib sklearn pickle or .npy) saved in our format with its metadata."""
    from transformers import HubertConfig

    cfg = HubertConfig.from_pretrained(str(model))
    q = KMeansQuantizer.load(path)
    if q.dim != cfg.hidden_size:
        raise ValueError(f"{path}: centroids of dim {q.dim} do not fit {model} (hidden size {cfg.hidden_size})")
    if not 0 <= layer <= cfg.num_hidden_layers:
        raise ValueError(f"{model}: layer {layer} out of range [0, {cfg.num_hidden_layers}]")
    rate = SAMPLE_RATE / int(np.prod(cfg.conv_stride))
    meta = KMeansMeta(model=str(Path(model).resolve()), layer=layer, rate=rate, k=q.k, dim=q.dim,
                      source=str(Path(path).resolve()))
    imported = KMeansQuantizer(q.centroids, meta)
    imported.save(out)
    return imported


def train_style(manifest: str | Path, model: str | Path, out: str | Path, layer: int = 6, k: int = 100,
                window_seconds: float = 1.0, max_hours: float = 10.0, niter: int = 50, seed: int = 0,
                device: str = "auto", batch_seconds: float | None = None, progress: bool = True
                ) -> tuple[KMeansQuantizer, Sample]:
    f = HubertFeaturizer(model, (layer,), device=device)
    sample = load_sample(manifest, max_hours, seed, f.geometry.receptive_field)
    w = frames_per_window(f.rate, window_seconds)
    pooled = np.concatenate([pool_windows(x, w) for x in _features(f, sample.wavs, layer, batch_seconds, progress)])
    meta = KMeansMeta(model=str(Path(model).resolve()), layer=layer, rate=1.0 / window_seconds,
                      window_seconds=window_seconds)
    q = train_kmeans(pooled, k, meta, niter=niter, seed=seed, verbose=progress)
    q.save(out)
    return q, sample


def train_pitch(manifest: str | Path, out: str | Path, cfg: PitchConfig, max_hours: float = 10.0,
                heldout_files: int = 10, seed: int = 0, device: str = "cpu", progress: bool = True
                ) -> tuple[PitchQuantizer, Sample]:
    """F0 of a sample, the last ``heldout_files`` of it held out for the reconstruction report."""
    sample = load_sample(manifest, max_hours, seed, cfg.hop * cfg.downsample)
    if heldout_files >= len(sample.wavs):
        raise ValueError(f"{manifest}: {len(sample.wavs)} usable files cannot hold out {heldout_files}")
    data = f0_tracks(sample.wavs, cfg, [it.speaker for it in sample.items], progress)
    cut = len(data.f0) - heldout_files
    train = PitchData(data.f0[:cut], data.voiced[:cut], data.speakers[:cut])
    held = PitchData(data.f0[cut:], data.voiced[cut:], data.speakers[cut:])
    q = train_pitch_vqvae(train, cfg, held, device=device, progress=progress)
    q.save(out)
    return q, sample
