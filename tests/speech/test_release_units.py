"""spirit-units import-release: the release tokenizer's units dicts and strings → a units manifest → pack/build."""
import json

import numpy as np
import pytest

from megatron_spirit.cli.data import main as data_cli
from megatron_spirit.cli.units import main as units_cli
from megatron_spirit.speech.manifest import UnitsRecord
from megatron_spirit.speech.release_units import ReleaseUnitsError, import_record
from megatron_spirit.tokenizer.tokenizer import SpiritTokenizer
from megatron_spirit.tokenizer.units import units_to_string

from ..data.corpus import make_corpus, write_jsonl


def as_release_dict(rec: dict) -> dict:
    """A project record as the release's encode_units returns it: frame-level space-separated strings."""
    r = UnitsRecord.from_json(rec)
    out = {"id": r.id, "audio": f"/data/{r.id}.flac", "duration": r.duration, **r.extra}
    for name, s in r.streams.items():
        out[name] = " ".join(str(u) for u in s.frame_level().tolist())
    return out


def test_units_dict_keeps_every_frame_and_the_releases_order():
    rec = make_corpus(1, seed=3)[0]
    got = import_record(as_release_dict(rec), "in.jsonl:1")
    want = UnitsRecord.from_json(rec)
    for name in ("hubert", "pitch", "style"):
        g, w = got.streams[name], want.streams[name]
        assert (g.units.tolist(), g.starts.tolist(), g.frames, g.rate) == \
               (w.units.tolist(), w.starts.tolist(), w.frames, w.rate)
    assert (got.streams["hubert"].rate, got.streams["pitch"].rate, got.streams["style"].rate) == (25.0, 12.5, 1.0)
    assert got.extra["path"] == f"/data/{rec['id']}.flac" and got.extra["words"] == rec["words"]
    hu, pi, st = (want.streams[n].frame_level() for n in ("hubert", "pitch", "style"))
    assert got.merged("expressive").string() == units_to_string(hu, pi, st)  # the release's merge, natively
    nested = {"id": "n", "units": {k: v for k, v in as_release_dict(rec).items() if k in ("hubert", "pitch", "style")}}
    assert import_record(nested, "x").streams["pitch"].units.tolist() == want.streams["pitch"].units.tolist()
    # Without a duration or a readable audio file, it comes from the HuBERT frames.
    d = as_release_dict(rec)
    del d["duration"]
    assert import_record(d, "x").duration == pytest.approx(want.streams["hubert"].frames / 25.0)


@pytest.mark.parametrize("string", [
    "[St81][Hu78][Pi13][Hu42][Hu81][Hu159][Hu316][Pi3][Hu259]",   # the release's docstring example
    "[St7][Pi15][Hu1][Hu2][Pi20][Hu3]",
    "[Pi1][Pi2][Pi3][Hu4][St5][St6][Hu7][Pi8][Hu9]",               # several pitch/style units in a row
    "[Speech][Hu12][Hu40][Hu12]",                                  # BASE, with its marker
])
def test_unit_string_order_is_kept_exactly(string):
    rec = import_record({"id": "a", "string": string, "text": "hi"}, "x")
    flavor = "expressive" if "[Pi" in string else "base"
    assert rec.merged(flavor).string() == string.replace("[Speech]", "")
    assert rec.extra["timing"] == "order" and rec.extra["text"] == "hi"


@pytest.mark.parametrize("record, message", [
    ({"hubert": "1 2"}, "no 'id'"),
    ({"id": "a", "pitch": "1"}, "no 'hubert'"),
    ({"id": "a", "hubert": "1 x 2"}, "'x' is not a unit number"),
    ({"id": "a", "hubert": "1 600"}, "hubert unit out of range"),
    ({"id": "a", "hubert": "1", "style": "3"}, "style units without pitch"),
    ({"id": "a", "hubert": " ".join(["1"] * 100), "pitch": "2 3"}, "2 pitch units .* do not cover the 100 HuBERT"),
    ({"id": "a", "units": {"hubert": {"rate": 25, "units": [1]}}}, "not the release's units dict"),
    ({"id": "a", "string": "[Hu1][Hu1]"}, "repeats the previous hubert unit"),
    ({"id": "a", "string": "[Hu1] hello"}, "something other than unit tokens"),
    ({"id": "a", "string": "[Hu1]", "words": []}, "import the release's units dict"),
    ({"id": "a", "string": "[Hu1]", "hubert": "1"}, "not both"),
])
def test_bad_records_are_named(record, message):
    with pytest.raises(ReleaseUnitsError, match=message):
        import_record(record, "in.jsonl:3")


def test_import_then_pack_and_build(tmp_path, spirit_tokenizer_dir, capsys):
    recs = make_corpus(12, seed=8)
    release = write_jsonl(tmp_path / "release.jsonl", [as_release_dict(r) for r in recs])
    strings = write_jsonl(tmp_path / "strings.jsonl", [
        {"id": f"s{i}", "string": UnitsRecord.from_json(r).merged("expressive").string()} for i, r in enumerate(recs)])
    out = tmp_path / "units.jsonl"
    assert units_cli(["import-release", "--input", release, strings, "--out", str(out)]) == 0
    assert "24 records (12 from units dicts, 12 from unit strings)" in capsys.readouterr().out
    tok_dir = str(spirit_tokenizer_dir)
    pack = tmp_path / "u.spiritpack"
    assert data_cli(["pack", "--input", str(out), "--out", str(pack), "--no-progress"]) == 0
    assert data_cli(["build", "--kind", "speech", "--input", str(pack), "--tokenizer", tok_dir,
                     "--out", str(tmp_path / "sp"), "--no-progress"]) == 0
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    tok = SpiritTokenizer(tok_dir)
    ds = IndexedDataset(str(tmp_path / "sp"))
    docs = sorted(tok.decode(ds[i]) for i in range(len(ds)))
    want = ["[Speech]" + UnitsRecord.from_json(r).merged("expressive").string() for r in recs]
    assert docs == sorted(want * 2)  # dict and string forms give the release's sequences, byte for byte
    # Interleaving uses the dict form's real times: the same dataset as from the project's own manifest.
    own = write_jsonl(tmp_path / "own.jsonl", recs)
    dicts = tmp_path / "dicts.jsonl"
    assert units_cli(["import-release", "--input", release, "--out", str(dicts)]) == 0
    for name, src in (("a", own), ("b", str(dicts))):
        assert data_cli(["build", "--kind", "interleaved", "--input", src, "--tokenizer", tok_dir,
                         "--out", str(tmp_path / name), "--text-span", "3,5", "--speech-span", "2,3",
                         "--no-progress"]) == 0
    a, b = IndexedDataset(str(tmp_path / "a")), IndexedDataset(str(tmp_path / "b"))
    assert len(a) == len(b) == 12
    assert all(np.array_equal(a[i], b[i]) for i in range(12))
    assert any(tok.vocab.speech_id in a[i] and tok.vocab.text_id in a[i] for i in range(12))  # interleaved
    # A bad line stops the import with its file and line, and nothing is written.
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x", "hubert": "1 2"}) + "\n" + "{nope\n")
    assert units_cli(["import-release", "--input", str(bad), "--out", str(tmp_path / "none.jsonl")]) == 2
    assert "bad.jsonl:2: not JSON" in capsys.readouterr().err and not (tmp_path / "none.jsonl").exists()
