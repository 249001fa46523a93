"""What the data tools check (issue 18): tokenizer fingerprints, the resume rule, the reject fraction, bad unit
records, datasets checked whole at start-up, a full disk."""
import errno
import json
from pathlib import Path

import pytest

from megatron_spirit.cli.data import main as cli
from megatron_spirit.cli.train import main as train_cli
from megatron_spirit.data.build import build_dataset
from megatron_spirit.data.check import DatasetError
from megatron_spirit.data.merge import merge_datasets
from megatron_spirit.data.pack import pack_manifests
from megatron_spirit.data.sequences import SequenceConfig
from megatron_spirit.data.summary import DataBuildError
from megatron_spirit.synth.text import documents
from megatron_spirit.tokenizer.tokenizer import SpiritTokenizer, fingerprint
from megatron_spirit.training.datasets import build_gpt_datasets

from .corpus import make_corpus, write_jsonl


def _text(tmp_path, tok, name="t", n=40, key="text"):
    src = tmp_path / f"{name}.jsonl"
    if not src.exists():
        write_jsonl(src, [{key: t} for t in documents(n, seed=3)])
    return build_dataset([str(src)], str(tmp_path / name), tok, SequenceConfig("text", json_key=key), progress=False)


def _blend(*prefixes):
    return {"format": "megatron_spirit.blend/1", "split": "100,0,0", "blend": [[1.0, str(p)] for p in prefixes]}


def _files(tmp_path, name):
    return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(name + "."))


# 2. Tokenizer fingerprints --------------------------------------------------------------------------------------
def test_fingerprint_is_recorded_and_tells_tokenizers_apart(tmp_path, tok_dir, base_tok_dir):
    fp = SpiritTokenizer(tok_dir).fingerprint
    assert fp == fingerprint(tok_dir) == SpiritTokenizer(tok_dir, "base").fingerprint  # the folder, not the view
    assert fp != fingerprint(base_tok_dir)
    s = _text(tmp_path, tok_dir)
    assert s.tokenizer_fingerprint == fp
    assert json.loads(Path(s.prefix + ".summary.json").read_text())["tokenizer_fingerprint"] == fp


def test_merge_and_mixture_refuse_datasets_of_two_tokenizers(tmp_path, tok_dir, base_tok_dir, capsys):
    a = _text(tmp_path, tok_dir, "a")
    b = _text(tmp_path, base_tok_dir, "b")
    with pytest.raises(DataBuildError, match="different tokenizers"):
        merge_datasets(str(tmp_path / "ab"), [a.prefix, b.prefix])
    assert not _files(tmp_path, "ab")
    assert cli(["merge", str(tmp_path / "ab"), "--inputs", a.prefix, b.prefix]) == 2
    assert cli(["mixture", "--text", a.prefix, b.prefix, "--steps", "4", "--seq-length", "32",
                "--global-batch", "2"]) == 2
    err = capsys.readouterr().err
    assert "different tokenizers" in err and a.prefix in err and "Traceback" not in err


def test_training_refuses_a_dataset_of_another_tokenizer(tmp_path, tok_dir, base_tok_dir):
    b = _text(tmp_path, base_tok_dir, "b")
    with pytest.raises(DatasetError, match=r"b was built with tokenizer .* not with"):
        build_gpt_datasets(_blend(b.prefix), tok_dir, 32, [4, 0, 0])
    rc = train_cli(["model.name=tiny", f"data.tokenizer={tok_dir}", f"data.prefixes=[{b.prefix}]",
                    f"checkpoint.dir={tmp_path / 'ck'}"])
    assert rc == 2


def test_a_dataset_that_predates_fingerprints_is_a_warning(tmp_path, tok_dir, capsys):
    s = _text(tmp_path, tok_dir)
    f = Path(s.prefix + ".summary.json")
    old = {k: v for k, v in json.loads(f.read_text()).items() if k not in ("tokenizer_fingerprint", "build_args")}
    f.write_text(json.dumps(old))
    with pytest.warns(UserWarning, match=r"records no tokenizer fingerprint .* --overwrite"):
        train, _, _ = build_gpt_datasets(_blend(s.prefix), tok_dir, 32, [4, 0, 0])
    assert len(train) >= 4
    assert cli(["mixture", "--text", s.prefix, "--steps", "4", "--seq-length", "32", "--global-batch", "2"]) == 0
    assert "records no tokenizer fingerprint" in capsys.readouterr().err


# 3. Resume only with the same shaping arguments -----------------------------------------------------------------
def test_a_finished_build_is_resumed_only_with_the_same_arguments(tmp_path, tok_dir, base_tok_dir, capsys):
    src = write_jsonl(tmp_path / "t.jsonl", [{"text": t, "body": t[::-1]} for t in documents(30, seed=4)])
    out = str(tmp_path / "t")
    base = ["build", "--kind", "text", "--input", src, "--out", out, "--no-progress"]
    assert cli(base + ["--tokenizer", tok_dir]) == 0
    capsys.readouterr()
    assert cli(base + ["--tokenizer", tok_dir, "--workers", "2"]) == 0  # workers do not shape the output
    assert "already complete, skipped" in capsys.readouterr().out
    before = Path(out + ".bin").read_bytes()
    for extra, name in [(["--tokenizer", base_tok_dir], "--tokenizer"),
                        (["--tokenizer", tok_dir, "--json-key", "body"], "--json-key")]:
        assert cli(base + extra) == 2
        err = capsys.readouterr().err
        assert f"{name} (was" in err and "--overwrite" in err
    other = write_jsonl(tmp_path / "u.jsonl", [{"text": "Another text."}])
    assert cli(["build", "--kind", "text", "--input", other, "--out", out, "--tokenizer", tok_dir]) == 2
    assert "--input (was" in capsys.readouterr().err
    with open(src, "a") as f:
        f.write('{"text": "One more document."}\n')
    assert cli(base + ["--tokenizer", tok_dir]) == 2
    assert "--input (the files changed since" in capsys.readouterr().err
    assert Path(out + ".bin").read_bytes() == before  # refused: the output is untouched
    assert cli(base + ["--tokenizer", tok_dir, "--overwrite"]) == 0
    assert json.loads(Path(out + ".summary.json").read_text())["documents"] == 31
    assert cli(base + ["--tokenizer", tok_dir]) == 0
    assert "already complete, skipped" in capsys.readouterr().out


# 4. Nothing (or too little) written is an error ----------------------------------------------------------------
def test_a_build_that_writes_nothing_fails(tmp_path, tok_dir, capsys):
    src = write_jsonl(tmp_path / "t.jsonl", [{"body": t} for t in documents(10, seed=5)])
    out = str(tmp_path / "t")
    assert cli(["build", "--kind", "text", "--input", src, "--tokenizer", tok_dir, "--out", out]) == 2
    err = capsys.readouterr().err
    assert "10 of 10 records rejected (missing_text: 10)" in err and "nothing written" in err
    assert _files(tmp_path, "t") == ["t.jsonl", "t.rejects.jsonl"]  # the reasons, and no dataset
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    assert cli(["build", "--kind", "speech", "--input", str(empty), "--tokenizer", tok_dir,
                "--out", str(tmp_path / "e")]) == 2
    assert "no records in" in capsys.readouterr().err and _files(tmp_path, "e") == ["e.jsonl"]


def test_max_reject_fraction(tmp_path, tok_dir):
    src = write_jsonl(tmp_path / "t.jsonl", [{"text": "Good."}, {"body": "x"}, {"body": "y"}])
    with pytest.raises(DataBuildError, match=r"2 of 3 records rejected .* --max-reject-fraction 0.5"):
        build_dataset([src], str(tmp_path / "t"), tok_dir, SequenceConfig("text"), progress=False)
    s = build_dataset([src], str(tmp_path / "t"), tok_dir, SequenceConfig("text"), progress=False,
                      max_reject_fraction=0.7)
    assert s.documents == 1 and s.rejected == 2


# 5. Unit records: fractional ids, wrong rates, duplicate ids (JSONL and pack alike) ----------------------------
def _odd_manifest(tmp_path):
    recs = make_corpus(12, seed=8)
    frac = json.loads(json.dumps(recs[1]))
    frac["units"]["hubert"]["units"][2] = 3.7
    fast = json.loads(json.dumps(recs[2]))
    fast["units"]["hubert"]["rate"] = 50.0
    text_units = {"id": "s", "units": "12 7 3.5"}
    dup = dict(recs[0], text=recs[0]["text"])  # the same id again, later in the file
    lines = [recs[0], frac, fast, text_units] + recs[3:] + [dup, recs[5]]
    return write_jsonl(tmp_path / "odd.jsonl", lines), recs


def _rejects(s):
    return sorted((r["file"], r["line"], r["id"], r["reason"])
                  for r in map(json.loads, Path(s.rejects_file).read_text().splitlines()))


@pytest.mark.parametrize("kind", ["speech", "interleaved"])
def test_bad_unit_records_are_rejected_alike_from_jsonl_and_pack(tmp_path, tok_dir, kind):
    src, recs = _odd_manifest(tmp_path)
    a = build_dataset([src], str(tmp_path / "a"), tok_dir, SequenceConfig(kind), progress=False, workers=2,
                      chunk_bytes=4096)  # several chunks: duplicates across chunks and workers
    pack = str(tmp_path / "odd.spiritpack")
    pack_manifests([src], pack, progress=False)
    b = build_dataset([pack], str(tmp_path / "b"), tok_dir, SequenceConfig(kind), progress=False, chunk_bytes=4096)
    got = {(line, rid, reason) for _, line, rid, reason in _rejects(a)}
    assert got == {(2, recs[1]["id"], "non_integer_unit"), (3, recs[2]["id"], "wrong_rate"),
                   (4, "s", "non_integer_unit"), (14, recs[0]["id"], "duplicate_id"),
                   (15, recs[5]["id"], "duplicate_id")}
    assert _rejects(a) == _rejects(b)
    assert a.documents == b.documents == 10
    assert Path(a.prefix + ".bin").read_bytes() == Path(b.prefix + ".bin").read_bytes()
    detail = {r["line"]: r["detail"] for r in map(json.loads, Path(a.rejects_file).read_text().splitlines())}
    assert "3.7 (position 2) is not an integer" in detail[2] and "'3.5' is not an integer" in detail[4]
    assert "hubert stream at 50 Hz" in detail[3] and "already written from" in detail[14]
    assert detail[14].endswith("odd.jsonl:1; only the first record of an id is kept")


# 7. Every dataset checked whole at start-up ---------------------------------------------------------------------
@pytest.mark.parametrize("suffix,cut", [(".bin", 10), (".idx", 8)])
def test_truncated_datasets_are_named_at_start_up(tmp_path, tok_dir, capsys, suffix, cut):
    s = _text(tmp_path, tok_dir)
    f = Path(s.prefix + suffix)
    f.write_bytes(f.read_bytes()[:-cut])
    with pytest.raises(DatasetError, match=rf"{f}: .*truncated"):
        build_gpt_datasets(_blend(s.prefix), tok_dir, 32, [4, 0, 0])
    assert cli(["mixture", "--text", s.prefix, "--steps", "4", "--seq-length", "32", "--global-batch", "2"]) == 2
    assert train_cli(["model.name=tiny", f"data.tokenizer={tok_dir}", f"data.prefixes=[{s.prefix}]",
                      f"checkpoint.dir={tmp_path / 'ck'}"]) == 2
    err = capsys.readouterr().err
    assert err.count(str(f)) == 2 and "Traceback" not in err


def test_missing_tokenizer_and_missing_dataset_at_start_up(tmp_path, tok_dir, capsys):
    s = _text(tmp_path, tok_dir)
    common = [f"data.prefixes=[{s.prefix}]", f"checkpoint.dir={tmp_path / 'ck'}", "model.name=tiny"]
    assert train_cli([f"data.tokenizer={tmp_path / 'no_tok'}"] + common) == 2
    assert f"no tokenizer.model in {tmp_path / 'no_tok'}" in capsys.readouterr().err
    blend = tmp_path / "blend.json"
    blend.write_text(json.dumps(_blend(s.prefix, tmp_path / "gone")))
    assert train_cli([f"data.tokenizer={tok_dir}", f"data.blend={blend}", f"checkpoint.dir={tmp_path / 'ck'}",
                      "model.name=tiny"]) == 2
    assert f"{tmp_path / 'gone'}.idx not found" in capsys.readouterr().err
    assert cli(["mixture", "--text", s.prefix, str(tmp_path / "gone")]) == 2
    assert "gone" in capsys.readouterr().err


# 9. A full disk -------------------------------------------------------------------------------------------------
def test_a_full_disk_is_named_and_keeps_earlier_outputs(tmp_path, tok_dir, capsys, monkeypatch):
    s = _text(tmp_path, tok_dir, "kept")
    kept = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("megatron_spirit.data.sink.add_documents", full)
    assert cli(["build", "--kind", "text", "--input", str(tmp_path / "kept.jsonl"), "--tokenizer", tok_dir,
                "--out", str(tmp_path / "new"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"no space left on device while writing into {tmp_path.resolve()}" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == kept  # nothing new, nothing lost
    assert s.documents == 40


def test_a_shard_that_owns_no_record_is_fine(tmp_path, tok_dir):
    src = write_jsonl(tmp_path / "t.jsonl", [{"text": "One."}, {"text": "Two."}])
    docs = [build_dataset([src], str(tmp_path / "t"), tok_dir, SequenceConfig("text"), shard=(i, 4),
                          progress=False).documents for i in range(4)]
    assert sorted(docs) == [0, 0, 1, 1]
    shards = [str(tmp_path / f"t-shard{i:05d}of00004") for i in range(4)]
    assert merge_datasets(str(tmp_path / "t"), shards).documents == 2


def test_a_full_disk_while_packing_is_named(tmp_path, capsys, monkeypatch):
    src = write_jsonl(tmp_path / "u.jsonl", make_corpus(3, seed=9))

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("megatron_spirit.data.pack._Columns.add", full)
    assert cli(["pack", "--input", src, "--out", str(tmp_path / "u.spiritpack"), "--no-progress"]) == 2
    assert "no space left on device while writing into" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u.jsonl"]


def test_spirit_train_warns_once_of_a_dataset_that_predates_fingerprints(tmp_path, tok_dir, capfd, recwarn):
    s = _text(tmp_path, tok_dir)
    f = Path(s.prefix + ".summary.json")
    f.write_text(json.dumps({k: v for k, v in json.loads(f.read_text()).items() if k != "tokenizer_fingerprint"}))
    assert train_cli(["model.name=tiny", f"data.tokenizer={tok_dir}", f"data.prefixes=[{s.prefix}]",
                      "data.split=98,2,0", "schedule.train_steps=1", "schedule.global_batch_size=2",
                      "schedule.micro_batch_size=1", "schedule.eval_interval=1", "schedule.eval_steps=1",
                      f"checkpoint.dir={tmp_path / 'ck'}", f"logging.dir={tmp_path / 'logs'}"]) == 0
    out = capfd.readouterr()
    said = (out.out + out.err).count("records no tokenizer fingerprint")
    said += sum("records no tokenizer fingerprint" in str(w.message) for w in recwarn)
    assert said == 1
