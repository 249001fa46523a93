"""k-means: faiss training, nearest-centroid assignment, our folder format and the public TWIST/sklearn files."""
import pickle
import sys
import types

import numpy as np
import pytest

from megatron_spirit.speech.kmeans import KMeansMeta, KMeansQuantizer, train_kmeans


def _blobs(k=5, n=60, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 10, (k, dim)).astype(np.float32)
    labels = np.repeat(np.arange(k), n)
    return centers[labels] + rng.normal(0, 0.1, (k * n, dim)).astype(np.float32), labels, centers


def test_train_recovers_clusters_and_round_trips(tmp_path):
    x, labels, _ = _blobs()
    q = train_kmeans(x, 5, KMeansMeta(model="/m", layer=11, rate=25.0), niter=20, seed=1, nredo=5)
    pred = q(x)
    # A perfect clustering up to renaming: each true cluster maps to exactly one predicted one.
    pairs = set(zip(labels.tolist(), pred.tolist()))
    assert len(pairs) == 5 and len({p for _, p in pairs}) == 5
    assert q.meta.k == 5 and q.meta.dim == 8 and q.meta.train_frames == 300
    q.save(tmp_path / "km")
    r = KMeansQuantizer.load(tmp_path / "km")
    assert r.meta == q.meta and r(x).tolist() == pred.tolist()
    assert KMeansQuantizer.load(tmp_path / "km", layer=6).meta.layer == 6


def test_too_few_points_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 10"):
        train_kmeans(np.zeros((3, 2), np.float32), 10, KMeansMeta())


def test_assignment_checks_dimension():
    q = KMeansQuantizer(np.eye(3, dtype=np.float32), KMeansMeta())
    assert q(np.array([[0, 0.9, 0.1]], np.float32)).tolist() == [1]
    with pytest.raises(ValueError, match="dim 3"):
        q(np.zeros((2, 4), np.float32))


def test_npy_centroids(tmp_path):
    c = np.eye(4, dtype=np.float32)
    np.save(tmp_path / "c.npy", c)
    q = KMeansQuantizer.load(tmp_path / "c.npy", layer=11, rate=25.0)
    assert q.k == 4 and q.meta.layer == 11 and q(c[::-1]).tolist() == [3, 2, 1, 0]


@pytest.fixture
def fake_sklearn(monkeypatch):
    """An sklearn-like KMeans class under sklearn's module path, present only while dumping."""
    mod = types.ModuleType("sklearn.cluster._kmeans")

    class KMeans:
        def __init__(self, centers):
            self.cluster_centers_ = centers
            self.n_clusters = len(centers)

    KMeans.__module__ = "sklearn.cluster._kmeans"
    KMeans.__qualname__ = "KMeans"
    mod.KMeans = KMeans
    for name in ("sklearn", "sklearn.cluster", "sklearn.cluster._kmeans"):
        monkeypatch.setitem(sys.modules, name, mod if name.endswith("_kmeans") else types.ModuleType(name))
    return KMeans


@pytest.mark.parametrize("how", ["joblib", "joblib-compressed", "pickle"])
def test_twist_style_sklearn_files_load_without_sklearn(tmp_path, fake_sklearn, monkeypatch, how):
    import joblib

    centers = np.random.default_rng(0).normal(size=(7, 5)).astype(np.float32)
    path = tmp_path / "km.bin"
    obj = fake_sklearn(centers)
    if how == "pickle":
        path.write_bytes(pickle.dumps(obj))
    else:
        joblib.dump(obj, path, compress=3 if how == "joblib-compressed" else 0)
    for name in ("sklearn", "sklearn.cluster", "sklearn.cluster._kmeans"):
        monkeypatch.delitem(sys.modules, name)
    q = KMeansQuantizer.load(path)
    np.testing.assert_array_equal(q.centroids, centers)
    assert q.meta.layer == 11 and q.meta.k == 7


def test_unreadable_kmeans_file(tmp_path):
    (tmp_path / "junk.bin").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="junk.bin: not a k-means file"):
        KMeansQuantizer.load(tmp_path / "junk.bin")
    with pytest.raises(FileNotFoundError):
        KMeansQuantizer.load(tmp_path / "absent")


def test_import_public_file_into_our_format(tmp_path, tiny_hubert_dir, fake_sklearn, monkeypatch):
    import joblib

    from megatron_spirit.cli.units import main

    centers = np.random.default_rng(1).normal(size=(9, 32)).astype(np.float32)
    joblib.dump(fake_sklearn(centers), tmp_path / "km.bin")
    for name in ("sklearn", "sklearn.cluster", "sklearn.cluster._kmeans"):
        monkeypatch.delitem(sys.modules, name)
    assert main(["train-hubert-kmeans", "--manifest", "unused.jsonl", "--model", str(tiny_hubert_dir),
                 "--layer", "2", "--from-file", str(tmp_path / "km.bin"), "--out", str(tmp_path / "q")]) == 0
    q = KMeansQuantizer.load(tmp_path / "q")
    assert q.meta.layer == 2 and q.meta.rate == 25.0 and q.meta.source.endswith("km.bin")
    np.testing.assert_array_equal(q.centroids, centers)
    np.save(tmp_path / "wrong.npy", centers[:, :5])
    assert main(["train-hubert-kmeans", "--manifest", "x", "--model", str(tiny_hubert_dir),
                 "--from-file", str(tmp_path / "wrong.npy"), "--out", str(tmp_path / "w")]) == 2
