"""End to end: espeak corpus → quantizers → sharded, resumable expressive extraction → unit strings and back."""
import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from megatron_spirit.cli.units import main, parser
from megatron_spirit.data.pack import Pack
from megatron_spirit.speech.manifest import UnitsRecord
from megatron_spirit.tokenizer.units import dedup, string_to_units

from .signals import tone


def _extract(trained, manifest, out, *extra):
    return main(["extract", "--manifest", str(manifest), "--out", str(out), "--hubert-model", str(trained.hubert),
                 "--kmeans", str(trained / "km"), "--pitch", str(trained / "pitch"), "--style", str(trained / "style"),
                 "--device", "cpu", *extra])


class _Trained:
    """The quantizers' folder (``trained / "km"``) and the HuBERT folder they were trained on."""

    def __init__(self, folder, hubert):
        self.folder, self.hubert = folder, hubert

    def __truediv__(self, name):
        return self.folder / name


@pytest.fixture(scope="module")
def trained(trained_units, tiny_hubert_dir):
    return _Trained(trained_units, tiny_hubert_dir)


@pytest.fixture(scope="module")
def bad_manifest(tmp_path_factory, espeak_corpus):
    """The espeak corpus plus one record of each kind of bad input, spread through the file."""
    d = tmp_path_factory.mktemp("bad")
    sf.write(d / "empty.wav", np.zeros(0, np.float32), 16000)
    nan = tone(200, 0.5)
    nan[10] = np.nan
    sf.write(d / "nan.wav", nan, 16000, subtype="FLOAT")
    sf.write(d / "short.wav", tone(200, 0.03), 16000)  # 480 samples < one 720-sample frame
    sf.write(d / "rate.wav", tone(200, 0.5, sr=8000), 8000)
    (d / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage" * 10)
    good = [json.loads(line) for line in espeak_corpus.read_text().splitlines()]
    bad = [{"id": "missing", "path": str(d / "nope.wav")}, {"id": "corrupt", "path": "corrupt.wav"},
           {"id": "empty", "path": "empty.wav"}, {"id": "nan", "path": "nan.wav"},
           {"id": "short", "path": "short.wav"}, {"id": "rate", "path": "rate.wav", "sample_rate": 16000},
           dict(good[0])]  # a duplicate id
    recs = []
    for i, g in enumerate(good):
        recs.append(g)
        if i < len(bad):
            recs.append(bad[i])
    m = d / "manifest.jsonl"
    m.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return m


def test_expressive_extraction_rejects_bad_input_and_round_trips(trained, bad_manifest, tmp_path, capsys):
    assert _extract(trained, bad_manifest, tmp_path / "u", "--flavor", "expressive") == 0
    summary = json.loads((tmp_path / "u" / "summary-00000-of-00001.json").read_text())
    assert summary["records"] == 15 and summary["written"] == 8 and summary["rejected"] == 7
    assert summary["reject_reasons"] == {"missing file": 1, "unreadable": 1, "zero-length audio": 1,
                                         "NaN or infinite samples": 1, "too short": 1, "wrong sample rate 8000 Hz": 1,
                                         "duplicate id": 1}
    rejects = {r["id"]: r["reason"] for r in map(json.loads, (tmp_path / "u" / "rejects-00000-of-00001.jsonl")
                                                 .read_text().splitlines())}
    assert set(rejects) == {"missing", "corrupt", "empty", "nan", "short", "rate", "utt000000"}
    lines = (tmp_path / "u" / "units-00000-of-00001.jsonl").read_text().splitlines()
    recs = [UnitsRecord.from_json(line) for line in lines]
    src = [json.loads(line) for line in bad_manifest.read_text().splitlines() if line.startswith('{"id": "utt')]
    src = [s for i, s in enumerate(src) if s["id"] not in {t["id"] for t in src[:i]}]  # duplicate: first kept
    assert [r.id for r in recs] == [s["id"] for s in src]  # input order kept
    for r, s in zip(recs, src):
        assert r.extra["text"] == s["text"] and r.extra["alignment"] == s["alignment"]
        assert r.extra["speaker"] == s["speaker"]
        info = sf.info(s["path"])
        assert r.duration == pytest.approx(info.duration, abs=1e-3)
        hu, pi, st = r.streams["hubert"], r.streams["pitch"], r.streams["style"]
        assert (hu.rate, pi.rate, st.rate) == (25.0, 12.5, 1.0)
        assert hu.frames == (int(info.frames) - 720) // 640 + 1
        assert pi.frames == -(-(info.frames // 80) // 16) and st.frames == -(-hu.frames // 25)
        # Rendered with the foundation's helpers, then parsed back.
        text = r.merged("expressive").string()
        assert text.startswith("[St") and "[Pi" in text
        back = string_to_units(text)
        assert back["hubert"] == dedup(hu.frame_level())[0].tolist() == hu.units.tolist()
        assert set(back["pitch"]) <= set(pi.units.tolist()) and set(back["style"]) <= set(st.units.tolist())
        assert len(back["pitch"]) == len(back["style"]) == len(back["hubert"])
        assert r.merged("expressive").time.max() < r.duration
    assert "8 of 15 records written, 7 rejected" in capsys.readouterr().out


def test_batched_corpus_pass_equals_one_file_at_a_time(trained, espeak_corpus, tmp_path):
    assert _extract(trained, espeak_corpus, tmp_path / "big", "--flavor", "expressive", "--batch-seconds", "60") == 0
    assert _extract(trained, espeak_corpus, tmp_path / "one", "--flavor", "expressive", "--batch-seconds", "0.1",
                    "--pack") == 0
    a = [json.loads(x)["units"] for x in (tmp_path / "big" / "units-00000-of-00001.jsonl").read_text().splitlines()]
    b = [json.loads(x)["units"] for x in (tmp_path / "one" / "units-00000-of-00001.jsonl").read_text().splitlines()]
    assert a == b
    # --pack: the shard's pack, with the espeak corpus's word alignments, holds the same units.
    pack = Pack(tmp_path / "one" / "units-00000-of-00001.spiritpack").batch()
    assert len(pack) == len(b) and np.all(pack.align_problem == 0)
    for i, units in enumerate(b):
        assert pack.streams["pitch"].units.row(i).tolist() == units["pitch"]["units"]
        assert len(pack.words.row(i)) > 0


def test_f0_in_worker_processes_gives_the_same_units(trained, espeak_corpus, tmp_path):
    assert _extract(trained, espeak_corpus, tmp_path / "t", "--flavor", "expressive") == 0
    assert _extract(trained, espeak_corpus, tmp_path / "p", "--flavor", "expressive", "--f0-workers", "2") == 0
    a = (tmp_path / "t" / "units-00000-of-00001.jsonl").read_text()
    assert a == (tmp_path / "p" / "units-00000-of-00001.jsonl").read_text() and '"pitch"' in a


def test_shards_partition_and_resume(trained, espeak_corpus, tmp_path, capsys):
    out = tmp_path / "s"
    for i in range(3):
        assert _extract(trained, espeak_corpus, out, "--shard", f"{i}/3") == 0
    ids = [json.loads(x)["id"] for i in range(3)
           for x in (out / f"units-{i:05d}-of-00003.jsonl").read_text().splitlines()]
    assert ids == [json.loads(x)["id"] for x in espeak_corpus.read_text().splitlines()]
    rec = UnitsRecord.from_json((out / "units-00000-of-00003.jsonl").read_text().splitlines()[0])
    assert set(rec.streams) == {"hubert"}  # base flavor
    capsys.readouterr()
    before = (out / "units-00001-of-00003.jsonl").stat().st_mtime_ns
    assert _extract(trained, espeak_corpus, out, "--shard", "1/3") == 0
    assert "already done" in capsys.readouterr().out
    assert (out / "units-00001-of-00003.jsonl").stat().st_mtime_ns == before
    # An unfinished shard (no summary) is redone; no temporary files are left behind.
    (out / "summary-00001-of-00003.json").unlink()
    assert _extract(trained, espeak_corpus, out, "--shard", "1/3") == 0
    assert (out / "summary-00001-of-00003.json").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_strict_and_usage_errors(trained, bad_manifest, tmp_path, capsys):
    assert _extract(trained, bad_manifest, tmp_path / "x", "--strict") == 2
    err = capsys.readouterr().err
    assert "record 'missing'" in err and "missing file" in err
    assert not (tmp_path / "x" / "summary-00000-of-00001.json").exists()
    assert _extract(trained, bad_manifest, tmp_path / "y", "--shard", "3/2") == 2
    assert "need 0 <= i < n" in capsys.readouterr().err
    assert _extract(trained, bad_manifest, tmp_path / "z", "--flavor", "expressive", "--style", "") == 2
    assert "needs a pitch quantizer and a style quantizer" in capsys.readouterr().err
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text('{"path": "b.wav"}\n{"id": "a", "path": "a.wav"}\n')
    assert _extract(trained, wrong, tmp_path / "w", "--strict") == 2
    assert f"{wrong}:1: a record needs 'id' and 'path'" in capsys.readouterr().err


def test_a_bad_manifest_line_is_a_reject_not_the_end(trained, espeak_corpus, tmp_path, capsys):
    """One Latin-1 line (or a line that is no record) must not abort a corpus pass: it is rejected, named by file
    and line, in the shard that holds its place; --strict stops there."""
    lines = espeak_corpus.read_bytes().splitlines(keepends=True)
    manifest = tmp_path / "manifest.jsonl"
    latin1 = json.dumps({"id": "caf\u00e9", "path": "x.wav"}, ensure_ascii=False).encode("latin-1") + b"\n"
    manifest.write_bytes(b"".join(lines[:3]) + latin1 + b"".join(lines[3:6]) + b'{"path": "b.wav"}\n' + b"".join(lines[6:]))
    for p in {json.loads(x)["path"] for x in lines}:  # the corpus's relative paths, resolved beside the manifest
        if not (tmp_path / p).exists() and not p.startswith("/"):
            (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / p).symlink_to(espeak_corpus.parent / p)
    assert _extract(trained, manifest, tmp_path / "u", "--shard", "0/2") == 0
    assert _extract(trained, manifest, tmp_path / "u", "--shard", "1/2") == 0
    rejects = [json.loads(x) for k in (0, 1)
               for x in (tmp_path / "u" / f"rejects-0000{k}-of-00002.jsonl").read_text().splitlines()]
    assert rejects == [
        {"id": None, "path": f"{manifest}:4", "reason": "bad manifest line: not UTF-8 (byte 11 of the line: invalid "
                                                        "continuation byte)"},
        {"id": None, "path": f"{manifest}:8", "reason": "bad manifest line: a record needs 'id' and 'path'"},
    ]
    written = sum(json.loads((tmp_path / "u" / f"summary-0000{k}-of-00002.json").read_text())["written"] for k in (0, 1))
    assert written == len(lines)
    capsys.readouterr()
    assert _extract(trained, manifest, tmp_path / "s", "--strict") == 2
    assert f"{manifest}:4: not UTF-8" in capsys.readouterr().err


def test_twist_centroids_file_with_layer_flag(trained, espeak_corpus, tmp_path):
    """A bare centroid file (as converted from a public quantizer) works once the layer is given."""
    shutil.copy(trained / "km" / "centroids.npy", tmp_path / "km.npy")
    args = ["extract", "--manifest", str(espeak_corpus), "--hubert-model", str(trained.hubert), "--device", "cpu"]
    assert main(args + ["--out", str(tmp_path / "a"), "--kmeans", str(trained / "km")]) == 0
    assert main(args + ["--out", str(tmp_path / "b"), "--kmeans", str(tmp_path / "km.npy"), "--layer", "2"]) == 0
    assert ((tmp_path / "a" / "units-00000-of-00001.jsonl").read_text()
            == (tmp_path / "b" / "units-00000-of-00001.jsonl").read_text())


def test_trained_quantizers_metadata(trained):
    km = json.loads((trained / "km" / "kmeans.json").read_text())
    assert km["layer"] == 2 and km["rate"] == 25.0 and km["k"] == 16 and km["model"].endswith("tiny")
    st = json.loads((trained / "style" / "kmeans.json").read_text())
    assert st["window_seconds"] == 1.0 and st["k"] == 4 and st["layer"] == 1
    pc = json.loads((trained / "pitch" / "config.json").read_text())
    assert pc["rate"] == 12.5 and pc["config"]["codes"] == 64 and pc["metrics"]["files"] == 2
    assert pc["metrics"]["f0_rmse"] < pc["metrics"]["constant_f0_rmse"]


@pytest.mark.parametrize("cmd", ["train-hubert-kmeans", "train-style", "train-pitch", "extract", "synth-corpus"])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        parser().parse_args([cmd, "--help"])
    assert e.value.code == 0 and "--out" in capsys.readouterr().out


def test_a_50_hz_model_is_refused(tmp_path, trained):
    from megatron_spirit.speech.extract import UnitExtractor
    from megatron_spirit.speech.hubert import save_random_hubert, tiny_hubert_config
    from megatron_spirit.speech.kmeans import KMeansQuantizer

    cfg = tiny_hubert_config(conv_dim=(16,) * 7, conv_kernel=(10, 3, 3, 3, 3, 2, 2), conv_stride=(5, 2, 2, 2, 2, 2, 2))
    model = save_random_hubert(cfg, tmp_path / "h50")
    with pytest.raises(ValueError, match="stride 320 gives 50 Hz frames"):
        UnitExtractor(model, KMeansQuantizer.load(trained / "km"))
