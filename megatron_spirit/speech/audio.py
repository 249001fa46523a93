"""Audio in: read with soundfile, average channels, resample to 16 kHz with soxr, check, cut into chunks.

Every failure is an :class:`AudioError` with a short reason, so a corpus pass can reject one file and go on.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
#: Longest piece of audio given to a model at once (docs/spec.md §2).
MAX_CHUNK_SECONDS = 100.0


class AudioError(ValueError):
    """A file that cannot be used; ``reason`` is what goes in the rejects file."""

    def __init__(self, reason: str, path: str | Path = ""):
        super().__init__(f"{path}: {reason}" if path else reason)
        self.reason = reason
        self.path = str(path)


def audio_duration(path: str | Path) -> float:
    """Duration in seconds from the header only (cheap: used to sort a shard by length)."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError("missing file", path)
    try:
        info = sf.info(str(path))
    except Exception as e:  # soundfile raises its own error types and RuntimeError
        raise AudioError(f"unreadable ({str(e).splitlines()[0][:120]})", path) from e
    if info.samplerate <= 0:
        raise AudioError(f"bad sample rate {info.samplerate}", path)
    return info.frames / info.samplerate


def load_audio(path: str | Path, min_samples: int = 1, expected_rate: int | None = None,
               expected_duration: float | None = None, duration_tolerance: float = 0.1) -> np.ndarray:
    """16 kHz mono float32 samples of a file.

    ``min_samples`` (at 16 kHz) rejects files too short for one frame; ``expected_rate`` rejects a file whose
    native rate differs (a manifest can declare it); ``expected_duration`` catches truncated files, which
    soundfile reads without complaint.
    """
    import soundfile as sf
    import soxr

    path = Path(path)
    if not path.is_file():
        raise AudioError("missing file", path)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioError(f"unreadable ({str(e).splitlines()[0][:120]})", path) from e
    if expected_rate is not None and rate != expected_rate:
        raise AudioError(f"wrong sample rate {rate} Hz (expected {expected_rate})", path)
    if data.shape[0] == 0:
        raise AudioError("zero-length audio", path)
    if not np.all(np.isfinite(data)):
        raise AudioError("NaN or infinite samples", path)
    wav = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if expected_duration is not None and abs(len(wav) / rate - expected_duration) > duration_tolerance:
        raise AudioError(f"duration {len(wav) / rate:.3f} s but the manifest says {expected_duration:.3f} s "
                         "(truncated?)", path)
    if rate != SAMPLE_RATE:
        wav = soxr.resample(wav, rate, SAMPLE_RATE, quality="HQ")
    wav = np.ascontiguousarray(wav, dtype=np.float32)
    if len(wav) < min_samples:
        raise AudioError(f"too short: {len(wav)} samples at 16 kHz, one frame needs {min_samples}", path)
    return wav


def chunk_bounds(n_samples: int, chunk_samples: int, overlap: int = 0, min_piece: int = 1) -> list[tuple[int, int]]:
    """Cut ``n_samples`` into pieces starting every ``chunk_samples`` (a multiple of the model's hop).

    Each piece reaches ``overlap`` samples into the next (receptive field minus hop) so that it yields exactly
    ``chunk_samples / hop`` frames and frame ``i`` of the whole file still starts at sample ``i * hop``.
    A tail shorter than ``min_piece`` (one receptive field) is left out: it holds no whole frame.
    """
    if chunk_samples <= 0:
        raise ValueError("chunk length must be positive")
    out = []
    for start in range(0, max(n_samples, 1), chunk_samples):
        if start and n_samples - start < min_piece:
            break
        out.append((start, min(n_samples, start + chunk_samples + overlap)))
    return out
