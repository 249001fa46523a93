"""Pitch units: F0 every 5 ms (hop 80 at 16 kHz) → 2 channels → VQ-VAE with a 64-code EMA codebook at 12.5 Hz.

Channels: normalised interpolated log-F0 (unvoiced frames filled linearly between voiced neighbours) and the
voiced flag. Normalisation: ``none`` (log F0), ``utterance`` (z-score over the utterance's voiced frames; the
paper's choice) or ``speaker`` (z-score with per-speaker statistics from the training files; unknown speakers
fall back to the utterance's own statistics).

F0 extractors: ``yaapt`` (pYAAPT from amfm_decompy, as in the paper: ~5× real time per CPU core on espeak
speech) and ``acf`` (a vectorised normalised-autocorrelation tracker in numpy: ~170× real time per core, i.e.
~30× faster; less robust on real speech). During extraction F0 runs in the audio-reading threads.

Timing: a file of ``n`` samples has ``n // 80`` F0 frames; pitch unit ``j`` covers F0 frames
``[16 j, 16 j + 16)``, i.e. ``manifest.frame_span(j, 12.5)``; the last unit may cover a partial window.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..utils.atomic import atomic_dir
from .audio import SAMPLE_RATE
from .f0 import METHODS, extract_f0

NORMS = ("none", "utterance", "speaker")


@dataclass(frozen=True)
class PitchConfig:
    """Everything that defines the pitch units (saved next to the checkpoint)."""

    method: str = "yaapt"
    hop: int = 80
    f0_min: float = 50.0
    f0_max: float = 500.0
    norm: str = "utterance"
    codes: int = 64
    code_dim: int = 32
    channels: int = 128
    downsample: int = 16
    commitment: float = 0.02
    ema_decay: float = 0.99
    voiced_weight: float = 1.0
    segment: int = 256
    batch_size: int = 32
    steps: int = 2000
    lr: float = 2e-3
    warmup_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"pitch method {self.method!r}: expected one of {', '.join(METHODS)}")
        if self.norm not in NORMS:
            raise ValueError(f"pitch normalisation {self.norm!r}: expected one of {', '.join(NORMS)}")
        if self.downsample < 1 or self.downsample & (self.downsample - 1):
            raise ValueError(f"downsample {self.downsample} must be a power of two")
        if self.segment % self.downsample:
            raise ValueError(f"segment {self.segment} must be a multiple of downsample {self.downsample}")
        if not 0 < self.f0_min < self.f0_max:
            raise ValueError(f"need 0 < f0_min < f0_max, got {self.f0_min}, {self.f0_max}")

    @property
    def rate(self) -> float:
        return SAMPLE_RATE / self.hop / self.downsample


def interpolate_f0(f0: np.ndarray, voiced: np.ndarray) -> np.ndarray:
    """log-F0 filled through unvoiced frames (linear between voiced neighbours, held at the ends)."""
    out = np.zeros(len(f0), np.float32)
    if not voiced.any():
        return out
    idx = np.flatnonzero(voiced)
    return np.interp(np.arange(len(f0)), idx, np.log(f0[idx])).astype(np.float32)


@dataclass(frozen=True)
class F0Stats:
    mean: float
    std: float

    @classmethod
    def of(cls, logf0: np.ndarray) -> "F0Stats":
        if len(logf0) < 2:
            return cls(float(logf0.mean()) if len(logf0) else 0.0, 1.0)
        return cls(float(logf0.mean()), float(max(logf0.std(), 1e-2)))


def pitch_features(f0: np.ndarray, voiced: np.ndarray, norm: str, stats: F0Stats | None = None) -> np.ndarray:
    """The VQ-VAE input: (2, T) float32 = normalised interpolated log-F0 and the voiced flag."""
    logf0 = interpolate_f0(f0, voiced)
    if norm != "none" and voiced.any():
        st = stats if stats is not None else F0Stats.of(np.log(f0[voiced]))
        logf0 = (logf0 - st.mean) / st.std
    return np.stack([logf0, voiced.astype(np.float32)]).astype(np.float32)


# ---------------------------------------------------------------------------------------------------- VQ-VAE


class EMACodebook(nn.Module):
    """Vector quantiser whose codes follow an exponential moving average of their assigned vectors."""

    def __init__(self, codes: int, dim: int, decay: float):
        super().__init__()
        self.decay = decay
        self.register_buffer("embed", torch.randn(codes, dim) * 0.1)
        self.register_buffer("size", torch.ones(codes))
        self.register_buffer("embed_sum", self.embed.clone())
        self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def assign(self, z: torch.Tensor) -> torch.Tensor:
        """Nearest code for each row of (N, D)."""
        d = (z * z).sum(1, keepdim=True) - 2 * z @ self.embed.T + (self.embed * self.embed).sum(1)[None]
        return d.argmin(1)

    def forward(self, z: torch.Tensor, valid: torch.Tensor | None = None, bypass: bool = False):
        if bypass:  # autoencoder warm-up: no quantisation yet
            return z, self.assign(z), torch.zeros(len(z), device=z.device)
        if self.training and not bool(self.initialised):  # start the codes on data, not at random
            with torch.no_grad():
                src = z if valid is None else z[valid]
                pick = torch.randint(0, len(src), (self.embed.shape[0],), device=z.device)
                self.embed.copy_(src[pick])
                self.embed_sum.copy_(src[pick])
                self.initialised.fill_(True)
        codes = self.assign(z)
        q = self.embed[codes]
        if self.training:
            zz, cc = (z, codes) if valid is None else (z[valid], codes[valid])
            onehot = F.one_hot(cc, self.embed.shape[0]).type(z.dtype)
            with torch.no_grad():
                # The EMA warms up (short memory at first) so codes follow the fast-moving early encoder.
                self.steps.add_(1)
                decay = min(self.decay, (1.0 + float(self.steps)) / (10.0 + float(self.steps)))
                self.size.mul_(decay).add_(onehot.sum(0), alpha=1 - decay)
                self.embed_sum.mul_(decay).add_(onehot.T @ zz.detach(), alpha=1 - decay)
                n = self.size.sum()
                size = (self.size + 1e-5) / (n + self.embed.shape[0] * 1e-5) * n
                self.embed.copy_(self.embed_sum / size[:, None])
                dead = self.size < 0.05 * self.size.mean()
                if dead.any() and len(zz):  # restart unused codes on random current vectors
                    pick = torch.randint(0, len(zz), (int(dead.sum()),), device=z.device)
                    self.embed[dead] = zz.detach()[pick]
                    self.embed_sum[dead] = zz.detach()[pick]
                    self.size[dead] = 1.0
        commit = F.mse_loss(z, q.detach(), reduction="none").mean(1)
        q = z + (q - z).detach()  # straight-through
        return q, codes, commit


class _Residual(nn.Module):
    """x + f(x): keeps the signal alive through the stack (a plain deep ReLU stack often started dead)."""

    def __init__(self, c: int):
        super().__init__()
        self.f = nn.Sequential(nn.ReLU(), nn.Conv1d(c, c, 3, padding=1), nn.ReLU(), nn.Conv1d(c, c, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.f(x)


class PitchVQVAE(nn.Module):
    """2 × T at 200 Hz → code_dim × T/16 → 64 codes → 2 × T reconstruction."""

    def __init__(self, cfg: PitchConfig):
        super().__init__()
        c, levels = cfg.channels, int(math.log2(cfg.downsample))
        enc: list[nn.Module] = [nn.Conv1d(2, c, 3, padding=1)]
        for _ in range(levels):
            enc += [nn.Conv1d(c, c, 4, stride=2, padding=1), _Residual(c)]
        enc += [nn.ReLU(), nn.Conv1d(c, cfg.code_dim, 1)]
        dec: list[nn.Module] = [nn.Conv1d(cfg.code_dim, c, 3, padding=1)]
        for _ in range(levels):
            dec += [_Residual(c), nn.ConvTranspose1d(c, c, 4, stride=2, padding=1)]
        dec += [nn.ReLU(), nn.Conv1d(c, 2, 3, padding=1)]
        self.encoder, self.decoder = nn.Sequential(*enc), nn.Sequential(*dec)
        self.codebook = EMACodebook(cfg.codes, cfg.code_dim, cfg.ema_decay)
        self.downsample = cfg.downsample

    def encode(self, x: torch.Tensor):
        z = self.encoder(x)  # (B, D, T/ds)
        b, d, t = z.shape
        return z.transpose(1, 2).reshape(b * t, d), (b, t)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None, bypass: bool = False):
        z, (b, t) = self.encode(x)
        vz = None if valid is None else valid[:, :: self.downsample][:, :t].reshape(-1)
        q, codes, commit = self.codebook(z, vz, bypass)
        y = self.decoder(q.reshape(b, t, -1).transpose(1, 2))
        return y, codes.reshape(b, t), commit.reshape(b, t)


def _pad_to(x: np.ndarray, multiple: int) -> np.ndarray:
    t = x.shape[-1]
    extra = (-t) % multiple
    return np.pad(x, ((0, 0), (0, extra)), mode="edge") if extra and t else x


class PitchQuantizer:
    """A trained pitch VQ-VAE with its config and speaker statistics: F0 → units, units → contour."""

    def __init__(self, cfg: PitchConfig, model: PitchVQVAE, speaker_stats: dict[str, F0Stats] | None = None,
                 metrics: dict | None = None):
        self.cfg = cfg
        self.model = model.eval()
        self.speaker_stats = speaker_stats or {}
        self.metrics = metrics or {}

    @property
    def rate(self) -> float:
        return self.cfg.rate

    def num_frames(self, n_samples: int) -> int:
        return -(-(n_samples // self.cfg.hop) // self.cfg.downsample)

    def features(self, wav: np.ndarray, speaker: str | None = None) -> np.ndarray:
        f0, voiced = extract_f0(wav, self.cfg.method, self.cfg.hop, self.cfg.f0_min, self.cfg.f0_max)
        return self.features_from_f0(f0, voiced, speaker)

    def features_from_f0(self, f0, voiced, speaker: str | None = None) -> np.ndarray:
        stats = self.speaker_stats.get(speaker) if self.cfg.norm == "speaker" and speaker is not None else None
        return pitch_features(f0, voiced, self.cfg.norm, stats)

    @torch.inference_mode()
    def encode_features(self, feats: np.ndarray) -> np.ndarray:
        t = feats.shape[1]
        if t == 0:
            return np.zeros(0, np.int64)
        x = torch.from_numpy(_pad_to(feats, self.cfg.downsample))[None]
        z, _ = self.model.encode(x)
        return self.model.codebook.assign(z).numpy().astype(np.int64)[: -(-t // self.cfg.downsample)]

    def __call__(self, wav: np.ndarray, speaker: str | None = None) -> np.ndarray:
        return self.encode_features(self.features(wav, speaker))

    @torch.inference_mode()
    def reconstruct(self, feats: np.ndarray) -> np.ndarray:
        t = feats.shape[1]
        y, _, _ = self.model(torch.from_numpy(_pad_to(feats, self.cfg.downsample))[None])
        return y[0, :, :t].numpy()

    def save(self, out_dir: str | Path) -> Path:
        out_dir = Path(out_dir)
        with atomic_dir(out_dir) as tmp:
            torch.save(self.model.state_dict(), tmp / "pitch_vqvae.pt")
            (tmp / "config.json").write_text(json.dumps({
                "config": asdict(self.cfg), "rate": self.rate,
                "speaker_stats": {k: asdict(v) for k, v in self.speaker_stats.items()},
                "metrics": self.metrics}, indent=2) + "\n")
        return out_dir

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> "PitchQuantizer":
        path = Path(path)
        cpath, wpath = path / "config.json", path / "pitch_vqvae.pt"
        if not cpath.is_file() or not wpath.is_file():
            raise FileNotFoundError(f"{path}: expected config.json and pitch_vqvae.pt (from spirit-units train-pitch)")
        d = json.loads(cpath.read_text())
        cfg = PitchConfig(**d["config"])
        model = PitchVQVAE(cfg)
        try:
            model.load_state_dict(torch.load(wpath, map_location=device, weights_only=True))
        except RuntimeError as e:
            raise ValueError(f"{wpath}: does not match its config.json (saved by another version?): "
                             f"{str(e).splitlines()[0]}") from e
        stats = {k: F0Stats(**v) for k, v in d.get("speaker_stats", {}).items()}
        return cls(cfg, model, stats, d.get("metrics", {}))


@dataclass
class PitchData:
    """F0 tracks of a set of files (what training needs; F0 extraction is the slow part, done once)."""

    f0: list[np.ndarray]
    voiced: list[np.ndarray]
    speakers: list[str | None] = field(default_factory=list)


def speaker_statistics(data: PitchData) -> dict[str, F0Stats]:
    by: dict[str, list[np.ndarray]] = {}
    for f0, v, spk in zip(data.f0, data.voiced, data.speakers or [None] * len(data.f0)):
        if spk is not None and v.any():
            by.setdefault(spk, []).append(np.log(f0[v]))
    return {k: F0Stats.of(np.concatenate(v)) for k, v in by.items()}


def train_pitch_vqvae(train: PitchData, cfg: PitchConfig, heldout: PitchData | None = None, device: str = "cpu",
                      progress: bool = True) -> PitchQuantizer:
    """Train on random segments of the training files; report reconstruction error on the held-out files."""
    from tqdm import tqdm

    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    spk_stats = speaker_statistics(train) if cfg.norm == "speaker" else {}
    speakers = train.speakers or [None] * len(train.f0)
    feats = [pitch_features(f, v, cfg.norm, spk_stats.get(s) if s is not None else None)
             for f, v, s in zip(train.f0, train.voiced, speakers)]
    feats = [x for x in feats if x.shape[1] >= 1 and x[1].any()]
    if not feats:
        raise ValueError("no voiced frames in the pitch training files")
    lengths = np.array([x.shape[1] for x in feats], dtype=np.float64)
    model = PitchVQVAE(cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    seg = cfg.segment
    bar = tqdm(range(cfg.steps), desc="pitch VQ-VAE", disable=not progress, mininterval=2)
    # A short plain-autoencoder warm-up gives the encoder informative outputs before the codes are placed on
    # them; quantising from step 0 often collapsed every vector onto one code.
    warmup = int(cfg.warmup_fraction * cfg.steps)
    for step in bar:
        x = np.zeros((cfg.batch_size, 2, seg), np.float32)
        m = np.zeros((cfg.batch_size, seg), bool)
        for b, fi in enumerate(rng.choice(len(feats), cfg.batch_size, p=lengths / lengths.sum())):
            f = feats[fi]
            t = f.shape[1]
            s = int(rng.integers(0, max(1, t - seg + 1)))
            piece = f[:, s: s + seg]
            x[b, :, : piece.shape[1]] = piece
            x[b, :, piece.shape[1]:] = piece[:, -1:]
            m[b, : piece.shape[1]] = True
        xt, mt = torch.from_numpy(x).to(device), torch.from_numpy(m).to(device)
        model.train()
        y, _, commit = model(xt, mt, bypass=step < warmup)
        mf = mt.float()
        rec = ((y[:, 0] - xt[:, 0]) ** 2 * mf).sum() / mf.sum()
        vuv = (F.binary_cross_entropy_with_logits(y[:, 1], xt[:, 1], reduction="none") * mf).sum() / mf.sum()
        cm = mt[:, :: cfg.downsample].float()
        loss = rec + cfg.voiced_weight * vuv + cfg.commitment * (commit * cm).sum() / cm.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(rec=f"{rec.item():.4f}", vuv=f"{vuv.item():.3f}", refresh=False)
    q = PitchQuantizer(cfg, model.cpu().eval(), spk_stats)
    if heldout is not None and heldout.f0:
        q.metrics = reconstruction_error(q, heldout)
    return q


def reconstruction_error(q: PitchQuantizer, data: PitchData) -> dict:
    """F0 RMSE on voiced frames (normalised log-F0 units) for the VQ-VAE and for a constant (mean) contour."""
    err, base, agree, n_voiced, n = 0.0, 0.0, 0, 0, 0
    for f0, v, spk in zip(data.f0, data.voiced, data.speakers or [None] * len(data.f0)):
        if not v.any():
            continue
        x = q.features_from_f0(f0, v, spk)
        y = q.reconstruct(x)
        err += float(((y[0] - x[0])[v] ** 2).sum())
        base += float(((x[0] - x[0][v].mean())[v] ** 2).sum())
        agree += int(((y[1] > 0) == v).sum())
        n_voiced += int(v.sum())
        n += len(v)
    if not n_voiced:
        return {"files": 0}
    return {"files": len(data.f0), "f0_rmse": math.sqrt(err / n_voiced),
            "constant_f0_rmse": math.sqrt(base / n_voiced), "voicing_accuracy": agree / n}


def f0_tracks(wavs: Sequence[np.ndarray], cfg: PitchConfig, speakers: Sequence[str | None] | None = None,
              progress: bool = True) -> PitchData:
    from tqdm import tqdm

    f0s, vs = [], []
    for w in tqdm(wavs, desc=f"F0 ({cfg.method})", disable=not progress, mininterval=2):
        f, v = extract_f0(w, cfg.method, cfg.hop, cfg.f0_min, cfg.f0_max)
        f0s.append(f)
        vs.append(v)
    return PitchData(f0s, vs, list(speakers) if speakers is not None else [None] * len(f0s))
