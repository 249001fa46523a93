"""A pack is the manifest parsed once: every build from it equals the build from the JSONL, byte for byte, with the
same rejects; packing is atomic; sharded and parallel pack builds equal the whole."""
import json
from pathlib import Path

import pytest

from megatron_spirit.cli.data import main as data_main
from megatron_spirit.data import batch as batch_mod
from megatron_spirit.data.alignments import parse_word_list
from megatron_spirit.data.interleave import SpanConfig
from megatron_spirit.data.pack import Pack, is_pack, pack_manifests
from megatron_spirit.data.sequences import SequenceConfig
from megatron_spirit.data.summary import DataBuildError
from megatron_spirit.data.build import build_dataset
from megatron_spirit.data.merge import find_shards, merge_datasets

from .corpus import make_corpus, write_jsonl
from .test_build import _bad_inputs, assert_same_bytes

SUMMARY_KEYS = ("documents", "tokens", "text_tokens", "speech_tokens", "speech_seconds", "rejected",
                "rejects_by_reason")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("pack")
    recs = make_corpus(40, seed=8)
    ctm = d / "extra.ctm"
    ctm.write_text("ghost 1 0.00 0.30 hello\n")  # an alignment whose units record does not exist
    files = [write_jsonl(d / "good.jsonl", recs[11:]), _bad_inputs(d, recs)]
    pack = d / "units.spiritpack"
    meta = pack_manifests(files, str(pack), str(ctm), progress=False)
    return {"dir": d, "files": files, "ctm": str(ctm), "pack": str(pack), "meta": meta}


def _rejects(summary):
    return sorted((r["file"], r["line"], r["id"], r["reason"], r["detail"])
                  for r in map(json.loads, Path(summary["rejects_file"]).read_text().splitlines()))


@pytest.mark.parametrize("kind,flavor", [("speech", "base"), ("speech", "expressive"), ("interleaved", "base"),
                                         ("interleaved", "expressive"), ("asr", "expressive"), ("tts", "base")])
def test_pack_build_equals_jsonl_build(tmp_path, inputs, tok_dir, kind, flavor):
    cfg = SequenceConfig(kind, spans=SpanConfig(3, 8, 2, 5), variants=2 if kind == "interleaved" else 1)
    extra = {"alignments": inputs["ctm"]} if kind == "interleaved" else {}
    a = build_dataset(inputs["files"], str(tmp_path / "j"), tok_dir, cfg, flavor=flavor, progress=False, **extra)
    b = build_dataset([inputs["pack"]], str(tmp_path / "p"), tok_dir, cfg, flavor=flavor, progress=False)
    assert a["documents"] > 20 and a["rejected"] >= 4
    assert {k: a[k] for k in SUMMARY_KEYS if k != "speech_seconds"} == {k: b[k] for k in SUMMARY_KEYS
                                                                          if k != "speech_seconds"}
    assert a["speech_seconds"] == pytest.approx(b["speech_seconds"], rel=1e-12)
    assert _rejects(a) == _rejects(b)
    for pa, pb in zip(a["prefixes"], b["prefixes"]):
        for ext in (".bin", ".idx"):
            assert Path(pa + ext).read_bytes() == Path(pb + ext).read_bytes()


def test_pack_shards_and_workers_equal_the_whole(tmp_path, inputs, tok_dir):
    cfg = SequenceConfig("interleaved", variants=2)
    kw = dict(progress=False, chunk_bytes=2000)  # chunks of ~1000 HuBERT runs: many per pack
    whole = build_dataset([inputs["pack"], inputs["pack"]], str(tmp_path / "w1"), tok_dir, cfg, **kw)
    build_dataset([inputs["pack"], inputs["pack"]], str(tmp_path / "w2"), tok_dir, cfg, workers=2, **kw)
    for i in range(3):
        build_dataset([inputs["pack"], inputs["pack"]], str(tmp_path / "sh"), tok_dir, cfg, shard=(i, 3), **kw)
    for out, shards in find_shards(str(tmp_path / "sh")).items():
        merge_datasets(out, shards)
    assert_same_bytes(tmp_path, "w1", ["w2", "sh"], ["_v0", "_v1"])
    merged = json.loads(Path(tmp_path / "sh_v0.summary.json").read_text())
    assert merged["documents"] == whole["documents"] and merged["rejected"] == whole["rejected"]


def test_pack_contents(inputs):
    meta = inputs["meta"]
    pack = Pack(inputs["pack"])
    b = pack.batch()
    assert meta["records"] == len(b) == 29 + 6 + 3  # good + bad file's usable records
    assert meta["streams"] == ["hubert", "pitch", "style"]
    assert {r.reason for r in pack.rejects()} == {"missing_units", "unit_out_of_range", "invalid_utf8",
                                                  "invalid_json", "missing_units_record"}
    lines = Path(inputs["files"][0]).read_text().splitlines()
    assert list(b.ids[:3]) == [json.loads(x)["id"] for x in lines[:3]] and b.ids[-1] == "utt8_10"
    assert b.ids[len(lines) - 1] == json.loads(lines[-1])["id"] and b.sources[b.source[-1]] == inputs["files"][1]
    first = json.loads(Path(inputs["files"][0]).read_text().splitlines()[0])
    assert b.streams["hubert"].units.row(0).tolist() == first["units"]["hubert"]["units"]
    assert [b.lexicon[i] for i in b.words.row(0)] == list(parse_word_list(first["words"]).words)


def test_killed_pack_leaves_nothing(tmp_path, inputs, monkeypatch):
    real = batch_mod.RecordParser.parse
    calls = []

    def dying(self, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(batch_mod.RecordParser, "parse", dying)
    with pytest.raises(KeyboardInterrupt):
        pack_manifests(inputs["files"], str(tmp_path / "x.spiritpack"), progress=False, chunk_bytes=5000)
    assert list(tmp_path.iterdir()) == []  # no pack, no temporary folder


def test_pack_cli_and_errors(tmp_path, inputs, tok_dir, capsys):
    out = str(tmp_path / "c.spiritpack")
    assert data_main(["pack", "--input", inputs["files"][0], "--out", out, "--no-progress"]) == 0
    assert is_pack(out) and "29 records" in capsys.readouterr().out
    assert data_main(["pack", "--input", inputs["files"][0], "--out", out]) == 0
    assert "already complete" in capsys.readouterr().out
    assert data_main(["build", "--kind", "speech", "--input", out, "--tokenizer", tok_dir,
                      "--out", str(tmp_path / "s"), "--no-progress"]) == 0
    for argv, msg in (
        (["--kind", "speech", "--input", out, inputs["files"][0]], "all JSONL files or all packs"),
        (["--kind", "text", "--input", out], "--kind text reads JSONL"),
        (["--kind", "interleaved", "--input", out, "--alignments", inputs["ctm"]], "--alignments is for JSONL"),
    ):
        assert data_main(["build", *argv, "--tokenizer", tok_dir, "--out", str(tmp_path / "e")]) == 2
        assert msg in capsys.readouterr().err
    (tmp_path / "bad.spiritpack").mkdir()
    assert data_main(["build", "--kind", "speech", "--input", str(tmp_path / "bad.spiritpack"),
                      "--tokenizer", tok_dir, "--out", str(tmp_path / "e")]) == 2


def test_parallel_packing_gives_the_same_pack(tmp_path, inputs):
    one = tmp_path / "one.spiritpack"
    two = tmp_path / "two.spiritpack"
    pack_manifests(inputs["files"], str(one), inputs["ctm"], progress=False, chunk_bytes=20_000)
    pack_manifests(inputs["files"], str(two), inputs["ctm"], workers=2, progress=False, chunk_bytes=20_000)
    names = sorted(p.name for p in one.iterdir())
    assert names == sorted(p.name for p in two.iterdir()) and "hubert.units.bin" in names
    for name in names:
        if name != "pack.json":  # holds the elapsed time
            assert (one / name).read_bytes() == (two / name).read_bytes(), name
    meta = [json.loads((p / "pack.json").read_text()) for p in (one, two)]
    assert [dict(m, elapsed_s=0) for m in meta][0] == dict(meta[1], elapsed_s=0)


def test_strict_build_from_a_pack_stops_at_the_first_bad_line(tmp_path, inputs, tok_dir):
    with pytest.raises(DataBuildError, match=r"bad\.jsonl:9: record .* rejected: missing_units"):
        build_dataset([inputs["pack"]], str(tmp_path / "s"), tok_dir, SequenceConfig("speech"), strict=True,
                      progress=False)
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_record_ids_round_trip_through_the_pack(tmp_path):
    recs = make_corpus(4, seed=2)
    names = ["café/1", "日本語 2", "", 'a"b']
    for r, name in zip(recs, names):
        r["id"] = name
    pack = tmp_path / "u.spiritpack"
    pack_manifests([write_jsonl(tmp_path / "u.jsonl", recs)], str(pack), progress=False)
    ids = Pack(pack).batch().ids
    assert list(ids) == names and [ids[i] for i in range(4)] == names and list(ids[1:3]) == names[1:3]
    assert ids[-1] == names[-1] and list(ids[::2]) == names[::2]
