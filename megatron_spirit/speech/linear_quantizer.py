"""The release's HuBERT quantizer: a small MLP over layer-11 features with one class more than units (a CTC blank).

Read from the release's checkpoint (``L11_quantizer_500.pt`` beside mHuBERT-25Hz): a ``torch.save``'d dict with
``model_cfg`` (``vocab_size``, ``dim``, ``upstream_dim``) and ``model_weight``, the state dict of a sequence
linear → LeakyReLU → linear → LeakyReLU → linear whose last layer has ``vocab_size + 1`` outputs; layer shapes
are taken from the weights. A frame's unit is its highest-scoring class. The last class is the blank: a blank
frame takes the unit of the nearest non-blank frame to its left, and blanks at the start wrap around to the
utterance's last non-blank unit, as the release's fill does (it works on each piece of at most 100 s it
quantizes, so for longer files the wrap-around happens per piece there). An utterance of blanks only keeps the
blank class as its unit: ``vocab_size`` (500), the 501st HuBERT unit the vocabulary reserves (docs/spec.md §1).

The checkpoint carries no layer: the release takes layer 11, the default here (``--layer`` overrides it).
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from .kmeans import KMeansMeta, KMeansQuantizer

#: Keys of the release's checkpoint and of its MLP's state dict (three linear layers at sequence positions 0, 2, 4).
_CFG, _WEIGHTS = "model_cfg", "model_weight"
_LINEARS = ("0", "2", "4")


def fill_blanks(codes: np.ndarray, blank: int) -> np.ndarray:
    """Each blank takes the nearest non-blank code to its left, cyclically; all-blank input stays blank."""
    codes = np.asarray(codes, dtype=np.int64)
    good = np.flatnonzero(codes != blank)
    if good.size == 0 or good.size == codes.size:
        return codes.copy()
    # Index of the last non-blank at or before each position; -1 before the first one (→ the last, cyclically).
    last = np.maximum.accumulate(np.where(codes != blank, np.arange(codes.size), -1))
    last[last < 0] = good[-1]
    return codes[last]


class LinearQuantizer:
    """Units of HuBERT features by the release's MLP quantizer; quacks like :class:`KMeansQuantizer` for the
    extractor (``meta.layer``, ``k``, ``dim``, call on ``(frames, dim)`` features)."""

    def __init__(self, weights: dict[str, torch.Tensor], vocab_size: int, meta: KMeansMeta):
        self.vocab_size = int(vocab_size)
        self.meta = meta
        self.layers = [(weights[f"{i}.weight"].float(), weights[f"{i}.bias"].float()) for i in _LINEARS]
        self._on: dict[str, list] = {}

    @property
    def k(self) -> int:
        """Units it can emit: ``vocab_size`` plus the blank's, kept by an all-blank utterance."""
        return self.vocab_size + 1

    @property
    def dim(self) -> int:
        return int(self.layers[0][0].shape[1])

    @property
    def blank(self) -> int:
        return self.vocab_size

    def classes(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """Highest-scoring class per frame, blank included (no fill)."""
        xt = x.float() if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x, np.float32))
        if xt.ndim != 2 or xt.shape[1] != self.dim:
            raise ValueError(f"features of shape {tuple(xt.shape)} do not match the quantizer's input dim {self.dim}")
        key = str(xt.device)
        if key not in self._on:
            self._on[key] = [(w.to(xt.device), b.to(xt.device)) for w, b in self.layers]
        h = xt
        for n, (w, b) in enumerate(self._on[key]):
            h = torch.nn.functional.linear(h, w, b)
            if n < len(self._on[key]) - 1:
                h = torch.nn.functional.leaky_relu(h)
        return h.argmax(-1).cpu().numpy().astype(np.int64)  # log-softmax keeps the argmax: not needed

    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        return fill_blanks(self.classes(x), self.blank)

    @classmethod
    def load(cls, path: str | Path, layer: int = 11) -> "LinearQuantizer":
        path = Path(path)
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file is the same error to the user
            raise ValueError(f"{path}: not a readable torch checkpoint ({str(e).splitlines()[0][:160]})") from e
        if not isinstance(ckpt, dict) or _CFG not in ckpt or _WEIGHTS not in ckpt:
            raise ValueError(f"{path}: not the release's linear quantizer (expected a dict with "
                             f"'{_CFG}' and '{_WEIGHTS}')")
        cfg, weights = ckpt[_CFG], ckpt[_WEIGHTS]
        try:
            vocab, dim = int(cfg["vocab_size"]), int(cfg["dim"])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: {_CFG} lacks vocab_size/dim ({e})") from e
        want = [f"{i}.{p}" for i in _LINEARS for p in ("weight", "bias")]
        missing = [k for k in want if k not in weights]
        if missing or set(weights) - set(want):
            raise ValueError(f"{path}: {_WEIGHTS} has keys {sorted(weights)}, expected {want}")
        shapes = [tuple(weights[f"{i}.weight"].shape) for i in _LINEARS]
        chained = all(shapes[n][0] == shapes[n + 1][1] for n in range(2)) and all(
            tuple(weights[f"{i}.bias"].shape) == (s[0],) for i, s in zip(_LINEARS, shapes))
        if not chained or shapes[0][1] != dim or shapes[2][0] != vocab + 1:
            raise ValueError(f"{path}: layer shapes {shapes} do not chain from dim {dim} to vocab_size {vocab} + 1 "
                             "(blank)")
        meta = KMeansMeta(layer=layer, k=vocab + 1, dim=dim, source=f"release linear quantizer {path}",
                          extra={"quantizer": "linear", "vocab_size": vocab, "blank": vocab})
        return cls(weights, vocab, meta)


def is_linear_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` looks like the release's quantizer (a torch zip checkpoint), not a k-means file."""
    path = Path(path)
    return path.is_file() and (path.suffix in (".pt", ".pth") or zipfile.is_zipfile(path))


def load_hubert_quantizer(path: str | Path, layer: int | None = None):
    """The HuBERT quantizer at ``path``: the release's linear one (a .pt checkpoint) or any k-means form."""
    if is_linear_checkpoint(path):
        return LinearQuantizer.load(path, 11 if layer is None else layer)
    return KMeansQuantizer.load(path, **({"layer": layer} if layer is not None else {}))
