"""The release's linear HuBERT quantizer: checkpoints written in its format, blank fill, extraction through it."""
import json

import numpy as np
import pytest
import torch

from megatron_spirit.speech.linear_quantizer import LinearQuantizer, fill_blanks, load_hubert_quantizer
from megatron_spirit.speech.manifest import UnitsRecord


def release_checkpoint(path, dim=32, vocab=500, upstream_dim=32, seed=0, mlp=None):
    """A random checkpoint laid out as the release loads it: model_cfg + the MLP's state dict (keys 0/2/4)."""
    torch.manual_seed(seed)
    out = vocab + 1
    mid = upstream_dim - out
    h1, h2 = dim - mid // 4, dim - mid // 2
    if mlp is None:
        mlp = torch.nn.Sequential(torch.nn.Linear(dim, h1), torch.nn.LeakyReLU(), torch.nn.Linear(h1, h2),
                                  torch.nn.LeakyReLU(), torch.nn.Linear(h2, out))
    torch.save({"model_cfg": {"vocab_size": vocab, "dim": dim, "upstream_dim": upstream_dim},
                "model_weight": mlp.state_dict()}, path)
    return mlp


@pytest.mark.parametrize("codes, filled", [
    ([9, 3, 9, 9, 7, 9], [7, 3, 3, 3, 7, 7]),   # from the left; the leading blank wraps to the last unit
    ([9, 9, 4], [4, 4, 4]),
    ([1, 2, 3], [1, 2, 3]),
    ([9, 9, 9], [9, 9, 9]),                      # nothing to fill from: the blank class stays
    ([], []),
])
def test_fill_blanks(codes, filled):
    assert fill_blanks(np.array(codes, np.int64), 9).tolist() == filled


def test_units_are_the_mlp_argmax_with_blanks_filled(tmp_path):
    mlp = release_checkpoint(tmp_path / "L11_quantizer_500.pt")
    x = torch.randn(200, 32) * 3
    with torch.no_grad():  # lift the blank's bias until about half the frames are blank: the fill is exercised
        logits = mlp(x)
        gap = logits[:, :500].max(-1).values - logits[:, 500]
        mlp[4].bias[500] += gap.median()
        ref = mlp(x).argmax(-1).numpy()
    release_checkpoint(tmp_path / "L11_quantizer_500.pt", mlp=mlp)
    q = load_hubert_quantizer(tmp_path / "L11_quantizer_500.pt")
    assert isinstance(q, LinearQuantizer) and (q.k, q.dim, q.meta.layer, q.blank) == (501, 32, 11, 500)
    assert (ref == 500).sum() > 10 and (ref != 500).sum() > 10
    assert q.classes(x).tolist() == ref.tolist()
    units = q(x.numpy())
    assert 500 not in units.tolist()
    for i in range(len(ref)):  # each blank took its left neighbour's filled unit
        if ref[i] == 500:
            assert units[i] == units[i - 1]
        else:
            assert units[i] == ref[i]
    assert load_hubert_quantizer(tmp_path / "L11_quantizer_500.pt", layer=6).meta.layer == 6


def test_bad_checkpoints_are_named(tmp_path):
    torch.save({"cluster_centers": torch.zeros(3, 4)}, tmp_path / "a.pt")
    with pytest.raises(ValueError, match="a.pt.*not the release's linear quantizer"):
        LinearQuantizer.load(tmp_path / "a.pt")
    mlp = release_checkpoint(tmp_path / "b.pt")
    sd = mlp.state_dict()
    sd["4.weight"] = sd["4.weight"][:-1]
    sd["4.bias"] = sd["4.bias"][:-1]
    torch.save({"model_cfg": {"vocab_size": 500, "dim": 32, "upstream_dim": 32}, "model_weight": sd}, tmp_path / "b.pt")
    with pytest.raises(ValueError, match="b.pt.*do not chain"):
        LinearQuantizer.load(tmp_path / "b.pt")
    (tmp_path / "c.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="c.pt: not a readable torch checkpoint"):
        LinearQuantizer.load(tmp_path / "c.pt")


def test_extract_with_the_release_quantizer(tmp_path, espeak_corpus, tiny_hubert_dir):
    from megatron_spirit.cli.units import main

    ckpt = tmp_path / "L11_quantizer_500.pt"
    release_checkpoint(ckpt, seed=3)
    assert main(["extract", "--manifest", str(espeak_corpus), "--out", str(tmp_path / "u"), "--hubert-model",
                 str(tiny_hubert_dir), "--quantizer", str(ckpt), "--layer", "2", "--device", "cpu"]) == 0
    recs = [UnitsRecord.from_json(x) for x in (tmp_path / "u" / "units-00000-of-00001.jsonl").read_text().splitlines()]
    assert len(recs) == 8
    q = LinearQuantizer.load(ckpt, layer=2)
    from megatron_spirit.speech.audio import load_audio
    from megatron_spirit.speech.hubert import HubertFeaturizer

    feats = HubertFeaturizer(tiny_hubert_dir, [2], device="cpu")
    path = json.loads(espeak_corpus.read_text().splitlines()[0])["path"]
    wav = load_audio(espeak_corpus.parent / path if not path.startswith("/") else path, 720)
    want = q(feats([wav])[0][2])
    assert recs[0].streams["hubert"].frame_level().tolist() == want.tolist()
    # A quantizer with more units for the vocabulary is refused, naming the count.
    big = tmp_path / "big.pt"
    release_checkpoint(big, vocab=501)
    assert main(["extract", "--manifest", str(espeak_corpus), "--out", str(tmp_path / "v"), "--hubert-model",
                 str(tiny_hubert_dir), "--quantizer", str(big), "--layer", "2", "--device", "cpu"]) == 2
