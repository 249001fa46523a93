"""k-means quantizers: train with faiss, assign nearest centroid, save/load with their metadata.

Saved form (ours): a folder with ``centroids.npy`` (k × dim float32) and ``kmeans.json`` (what produced the
features: model folder, layer, rate, window, k, dim, training frames, objective).

Also loaded, for the public TWIST/textlesslib HuBERT quantizers:
- a joblib/pickle dump of an sklearn ``KMeans``/``MiniBatchKMeans`` (``cluster_centers_`` is read; sklearn
  is *not* needed: its classes are replaced by a plain record while unpickling; needs ``joblib`` for joblib
  dumps),
- a bare ``.npy`` array of centroids (k × dim).
Files carry no layer/rate: give them to the extractor with ``--layer`` (default 11, 25 Hz).
"""
from __future__ import annotations

import json
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..utils.atomic import atomic_dir


@dataclass(frozen=True)
class KMeansMeta:
    """Where the features came from; the extractor rebuilds the same features from it."""

    model: str = ""
    layer: int = 11
    rate: float = 25.0
    #: Seconds of frames mean-pooled into one vector (style); 0 = frame level (HuBERT units).
    window_seconds: float = 0.0
    k: int = 0
    dim: int = 0
    train_frames: int = 0
    objective: float = float("nan")
    source: str = "megatron_spirit"
    extra: dict[str, Any] = field(default_factory=dict)


class KMeansQuantizer:
    """Nearest-centroid assignment (squared L2), in torch so it runs where the features are."""

    def __init__(self, centroids: np.ndarray, meta: KMeansMeta):
        c = np.asarray(centroids, dtype=np.float32)
        if c.ndim != 2 or c.shape[0] < 1:
            raise ValueError(f"centroids must be a (k, dim) array, got shape {c.shape}")
        self.centroids = c
        self.meta = meta
        self._t: dict[str, torch.Tensor] = {}

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        xt = x.float() if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x, np.float32))
        if xt.ndim != 2 or xt.shape[1] != self.dim:
            raise ValueError(f"features of shape {tuple(xt.shape)} do not match centroids of dim {self.dim}")
        key = str(xt.device)
        if key not in self._t:
            self._t[key] = torch.from_numpy(self.centroids).to(xt.device)
        c = self._t[key]
        d = (c * c).sum(1)[None, :] - 2.0 * xt @ c.T  # ‖x‖² is the same for every centroid
        return d.argmin(1).cpu().numpy().astype(np.int64)

    def save(self, out_dir: str | Path) -> Path:
        out_dir = Path(out_dir)
        with atomic_dir(out_dir) as tmp:
            np.save(tmp / "centroids.npy", self.centroids)
            (tmp / "kmeans.json").write_text(json.dumps(asdict(self.meta), indent=2) + "\n")
        return out_dir

    @classmethod
    def load(cls, path: str | Path, **meta_overrides) -> "KMeansQuantizer":
        path = Path(path)
        if path.is_dir():
            cpath, mpath = path / "centroids.npy", path / "kmeans.json"
            if not cpath.is_file() or not mpath.is_file():
                raise FileNotFoundError(f"{path}: expected centroids.npy and kmeans.json")
            try:
                meta = KMeansMeta(**json.loads(mpath.read_text()))
            except (json.JSONDecodeError, TypeError) as e:
                raise ValueError(f"{mpath}: bad k-means metadata ({e})") from e
            centroids = np.load(cpath)
        elif path.is_file():
            if path.suffix == ".npy":
                centroids = np.load(path)
            else:
                centroids = _load_sklearn_centers(path)
            meta = KMeansMeta(k=int(centroids.shape[0]), dim=int(centroids.shape[-1]), source=str(path))
        else:
            raise FileNotFoundError(f"{path}: no such k-means folder or file")
        if meta_overrides:
            meta = KMeansMeta(**{**asdict(meta), **meta_overrides})
        return cls(centroids, meta)


def train_kmeans(features: np.ndarray, k: int, meta: KMeansMeta, niter: int = 50, seed: int = 0,
                 max_points_per_centroid: int = 256, verbose: bool = False, nredo: int = 1) -> KMeansQuantizer:
    """faiss k-means on (n, dim) float32 features (``nredo`` restarts keep the best objective)."""
    import faiss

    x = np.ascontiguousarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"features must be (n, dim), got {x.shape}")
    if x.shape[0] < k:
        raise ValueError(f"k-means with k={k} needs at least {k} feature vectors, got {x.shape[0]}")
    km = faiss.Kmeans(x.shape[1], k, niter=niter, seed=seed, verbose=verbose,
                      max_points_per_centroid=max_points_per_centroid, nredo=nredo)
    km.train(x)
    obj = float(km.obj[-1]) if len(km.obj) else float("nan")
    meta = KMeansMeta(**{**asdict(meta), "k": k, "dim": int(x.shape[1]), "train_frames": int(x.shape[0]),
                         "objective": obj / x.shape[0]})
    return KMeansQuantizer(km.centroids.copy(), meta)


class _Record:
    """Stands in for any sklearn class while unpickling: keeps the pickled state as attributes."""

    def __init__(self, *a, **k):
        pass

    def __setstate__(self, state):
        if isinstance(state, dict):
            self.__dict__.update(state)


def _find_class(module: str, name: str, default):
    if module.split(".")[0] == "sklearn":
        return _Record
    return default(module, name)


def _load_sklearn_centers(path: Path) -> np.ndarray:
    """``cluster_centers_`` of a joblib or plain pickle of an sklearn k-means, without importing sklearn."""
    with open(path, "rb") as f:
        head = f.read(2)
    obj = None
    errors = []
    try:
        import joblib.numpy_pickle as jnp

        class _JoblibUnpickler(jnp.NumpyUnpickler):
            def find_class(self, module, name):
                return _find_class(module, name, super().find_class)

        with open(path, "rb") as f, jnp._validate_fileobject_and_memmap(f, str(path), None) as (fobj, _):
            obj = _JoblibUnpickler(str(path), fobj, True).load()  # handles joblib's compressed dumps too
    except ImportError:
        errors.append("joblib is not installed")
    except Exception as e:  # noqa: BLE001 - fall back to plain pickle below, report both
        errors.append(f"joblib: {e}")
    if obj is None and head[:1] == b"\x80":
        try:
            class _Unpickler(pickle.Unpickler):
                def find_class(self, module, name):
                    return _find_class(module, name, super().find_class)

            with open(path, "rb") as f:
                obj = _Unpickler(f).load()
        except Exception as e:  # noqa: BLE001
            errors.append(f"pickle: {e}")
    if obj is None:
        raise ValueError(f"{path}: not a k-means file we can read ({'; '.join(errors) or 'unknown format'}); "
                         "supported: our k-means folder, a .npy of centroids, a joblib/pickle sklearn KMeans")
    centers = getattr(obj, "cluster_centers_", None)
    if centers is None and isinstance(obj, dict):
        centers = obj.get("cluster_centers_")
    if centers is None:
        raise ValueError(f"{path}: unpickled {type(obj).__name__} has no cluster_centers_")
    return np.asarray(centers, dtype=np.float32)
