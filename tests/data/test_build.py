"""Datasets of every kind, read back through megatron-core (IndexedDataset and GPTDataset) and decoded."""
import json
import os
import re
import signal
from pathlib import Path

import numpy as np
import pytest
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_spirit.training.datasets import build_gpt_datasets
from megatron_spirit.data.interleave import SpanConfig
from megatron_spirit.data.sequences import SequenceConfig
from megatron_spirit.data.sink import DatasetSink
from megatron_spirit.data.summary import DataBuildError
from megatron_spirit.data.build import build_dataset
from megatron_spirit.data.merge import find_shards, merge_datasets
from megatron_spirit.speech.manifest import UnitsRecord
from megatron_spirit.synth.text import documents
from megatron_spirit.tokenizer.tokenizer import SpiritTokenizer

from .corpus import make_corpus, write_jsonl

SEGMENT_RE = re.compile(r"(\[Text\]|\[Speech\])")


def read_back(prefix, tok):
    """Decoded documents; checks megatron's view: one sequence per document, <s> first, </s> last."""
    ds = IndexedDataset(prefix)
    assert ds.document_indices.tolist() == list(range(len(ds) + 1))
    out = []
    for i in range(len(ds)):
        ids = ds[i]
        assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
        out.append(tok.decode(ids))
    return out


def gpt_documents(prefix, tok_dir, seq_length=512):
    """Complete documents seen inside GPTDataset samples (one epoch via BlendedMegatronDatasetBuilder)."""
    tok = SpiritTokenizer(tok_dir)
    ds = IndexedDataset(prefix)  # kept alive: its arrays view its mmap
    total = int(ds.sequence_lengths.sum())
    blend = {"format": "megatron_spirit.blend/1", "split": "100,0,0", "blend": [[1.0, prefix]]}
    train, valid, test = build_gpt_datasets(blend, tok_dir, seq_length, [total // seq_length, 0, 0])
    assert valid is None and test is None
    docs = []
    for i in range(len(train)):
        item = train[i]
        window = np.concatenate([item["tokens"].numpy(), item["labels"].numpy()[-1:]])
        eods = np.flatnonzero(window == tok.eod_id)
        for a, b in zip(eods, eods[1:]):  # a document fully inside the window
            docs.append(tok.decode(window[a + 1 : b + 1]))
    return docs


def parse_segments(decoded: str):
    parts = SEGMENT_RE.split(decoded)
    assert parts[0] == ""
    return list(zip(parts[1::2], parts[2::2]))


def check_interleaved(decoded: str, record: dict):
    """Words and units in order: word i is [Hu i] in speech spans and its text in text spans."""
    words = record["text"].lower().split()
    words = [re.sub(r"[^\w']", "", w) for w in words]
    pos = 0
    segs = parse_segments(decoded)
    for marker, body in segs:
        if marker == "[Text]":
            got = body.split()
            assert got == words[pos : pos + len(got)], (pos, got)
            pos += len(got)
        else:
            hu = [int(x) for x in re.findall(r"\[Hu(\d+)\]", body)]
            assert hu == list(range(pos, pos + len(hu))), (pos, hu)
            assert re.fullmatch(r"(\[(Hu|Pi|St)\d+\])+", body)
            pos += len(hu)
    assert pos == len(words)
    assert all(a[0] != b[0] for a, b in zip(segs, segs[1:]))
    return len(segs) - 1


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    recs = make_corpus(60, seed=3)
    texts = [{"id": i, "text": t} for i, t in enumerate(documents(150, seed=4))]
    return {"dir": d, "records": recs, "manifest": write_jsonl(d / "units.jsonl", recs),
            "texts": texts, "text": write_jsonl(d / "text.jsonl", texts)}


def test_text_dataset(tmp_path, corpus, tok_dir):
    tok = SpiritTokenizer(tok_dir)
    s = build_dataset([corpus["text"]], str(tmp_path / "text"), tok_dir, SequenceConfig("text"), progress=False)
    assert s["documents"] == 150 and s["rejected"] == 0 and s["dtype"] == "uint16"
    ds = IndexedDataset(str(tmp_path / "text"))
    assert ds[0].dtype == np.uint16
    for i, rec in enumerate(corpus["texts"]):  # exactly what SpiritTokenizer.encode gives for the string form
        assert ds[i].tolist() == tok.encode("[Text]" + rec["text"], bos=True, eos=True)
    decoded = read_back(str(tmp_path / "text"), tok)
    assert decoded == ["[Text]" + r["text"] for r in corpus["texts"]]
    seen = gpt_documents(str(tmp_path / "text"), tok_dir)
    assert len(seen) > 50 and set(seen) <= set(decoded)
    assert s["text_tokens"] + 3 * 150 == s["tokens"] == int(ds.sequence_lengths.sum())


@pytest.mark.parametrize("flavor", ["base", "expressive"])
def test_speech_dataset(tmp_path, corpus, tok_dir, flavor):
    tok = SpiritTokenizer(tok_dir)
    s = build_dataset([corpus["manifest"]], str(tmp_path / "sp"), tok_dir, SequenceConfig("speech"),
                      flavor=flavor, progress=False)
    assert s["flavor"] == flavor and s["documents"] == 60
    decoded = read_back(str(tmp_path / "sp"), tok)
    want = ["[Speech]" + UnitsRecord.from_json(r).merged(flavor).string() for r in corpus["records"]]
    assert decoded == want
    if flavor == "base":
        assert not any("[Pi" in d or "[St" in d for d in decoded)
    seen = gpt_documents(str(tmp_path / "sp"), tok_dir)
    assert len(seen) > 10 and set(seen) <= set(decoded)
    dur = sum(UnitsRecord.from_json(r).duration for r in corpus["records"])
    assert s["speech_seconds"] == pytest.approx(dur)


@pytest.mark.parametrize("flavor", ["base", "expressive"])
def test_interleaved_dataset_keeps_every_word_and_unit(tmp_path, corpus, tok_dir, flavor):
    tok = SpiritTokenizer(tok_dir)
    cfg = SequenceConfig("interleaved", spans=SpanConfig(2, 6, 1, 4), variants=2, seed=7)
    s = build_dataset([corpus["manifest"]], str(tmp_path / "il"), tok_dir, cfg, flavor=flavor, progress=False)
    assert s["prefixes"] == [str(tmp_path / "il_v0"), str(tmp_path / "il_v1")]
    v0 = read_back(str(tmp_path / "il_v0"), tok)
    v1 = read_back(str(tmp_path / "il_v1"), tok)
    switches = [check_interleaved(d, r) for d, r in zip(v0, corpus["records"])]
    switches += [check_interleaved(d, r) for d, r in zip(v1, corpus["records"])]
    assert np.mean(switches) > 3
    assert sum(a != b for a, b in zip(v0, v1)) > 50  # variants are independently drawn
    starts = {parse_segments(d)[0][0] for d in v0}
    assert starts == {"[Text]", "[Speech]"}
    # Canonical strings: no space before a marker; ids equal SpiritTokenizer.encode of the decoded string.
    ds = IndexedDataset(str(tmp_path / "il_v0"))
    for i in range(5):
        assert " [" not in v0[i]
        assert ds[i].tolist() == tok.encode(v0[i], bos=True, eos=True)
    seen = gpt_documents(str(tmp_path / "il_v0"), tok_dir)
    assert len(seen) > 10 and set(seen) <= set(v0)
    hist = s["span_words_hist"]
    assert sum(hist["text"]) > 0 and max(np.flatnonzero(hist["text"])) <= 6 and hist["speech"][5:] == [0] * 59
    # Same seed, one variant: identical to variant 0 (rng per record id, independent of the variant count).
    cfg1 = SequenceConfig("interleaved", spans=SpanConfig(2, 6, 1, 4), variants=1, seed=7)
    build_dataset([corpus["manifest"]], str(tmp_path / "one"), tok_dir, cfg1, flavor=flavor, progress=False)
    for ext in (".bin", ".idx"):
        assert Path(tmp_path / f"one{ext}").read_bytes() == Path(tmp_path / f"il_v0{ext}").read_bytes()


@pytest.mark.parametrize("kind", ["asr", "tts"])
def test_asr_tts(tmp_path, corpus, tok_dir, kind):
    tok = SpiritTokenizer(tok_dir)
    build_dataset([corpus["manifest"]], str(tmp_path / kind), tok_dir, SequenceConfig(kind), flavor="base",
                  progress=False)
    for d, r in zip(read_back(str(tmp_path / kind), tok), corpus["records"]):
        units = "[Speech]" + UnitsRecord.from_json(r).merged("base").string()
        text = "[Text]" + " ".join(re.sub(r"[^\w']", "", w) for w in r["text"].lower().split())
        assert d == (units + text if kind == "asr" else text + units)


def assert_same_bytes(folder, reference: str, others: list[str], suffixes=("",)):
    """Datasets ``folder/<other><suffix>`` are byte-identical to ``folder/<reference><suffix>`` (.bin and .idx)."""
    for suffix in suffixes:
        for ext in (".bin", ".idx"):
            ref = Path(folder, f"{reference}{suffix}{ext}").read_bytes()
            for other in others:
                assert Path(folder, f"{other}{suffix}{ext}").read_bytes() == ref, (other, suffix, ext)


def test_workers_and_shards_give_identical_bytes(tmp_path, corpus, tok_dir):
    cfg = SequenceConfig("interleaved", variants=2)
    kw = dict(progress=False, chunk_bytes=20_000)
    build_dataset([corpus["manifest"], corpus["manifest"]], str(tmp_path / "w1"), tok_dir, cfg, **kw)
    build_dataset([corpus["manifest"], corpus["manifest"]], str(tmp_path / "w2"), tok_dir, cfg, workers=2, **kw)
    for i in range(3):
        build_dataset([corpus["manifest"], corpus["manifest"]], str(tmp_path / "sh"), tok_dir, cfg, shard=(i, 3), **kw)
    groups = find_shards(str(tmp_path / "sh"))
    assert sorted(groups) == [str(tmp_path / "sh_v0"), str(tmp_path / "sh_v1")]
    for out, inputs in groups.items():
        merge_datasets(out, inputs)
    assert_same_bytes(tmp_path, "w1", ["w2", "sh"], ["_v0", "_v1"])
    merged = json.loads(Path(tmp_path / "sh_v0.summary.json").read_text())
    assert merged["documents"] == 120 and merged["merged_from"] == groups[str(tmp_path / "sh_v0")]


def test_merge_refuses_missing_shard(tmp_path, corpus, tok_dir):
    build_dataset([corpus["text"]], str(tmp_path / "t"), tok_dir, SequenceConfig("text"), shard=(0, 2),
                  progress=False)
    with pytest.raises(DataBuildError, match=r"missing shards \[1\]"):
        find_shards(str(tmp_path / "t"))


def _bad_inputs(tmp_path, good):
    recs = [dict(r) for r in good[:6]]
    lines = [json.dumps(r).encode() for r in recs]
    bad = dict(good[6], text=good[6]["text"] + " extra")  # alignment words != transcript
    lines.append(json.dumps(bad).encode())
    late = json.loads(json.dumps(good[7]))
    late["words"][-1]["end"] = late["duration"] + 1.0  # times beyond the audio
    lines.append(json.dumps(late).encode())
    nounits = {k: v for k, v in good[8].items() if k != "units"}  # missing units record
    lines.append(json.dumps(nounits).encode())
    oor = json.loads(json.dumps(good[9]))
    oor["units"]["hubert"]["units"][0] = 777  # unit id out of range
    lines.append(json.dumps(oor).encode())
    lines.append(b'{"id": "bin", "text": "caf\xe9"}')  # invalid UTF-8 (latin-1 byte)
    lines.append(b'{"id": "trunc", "units": ')  # invalid JSON
    noalign = {k: v for k, v in good[10].items() if k != "words"}
    lines.append(json.dumps(noalign).encode())
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return str(path)


def test_bad_input_rejected_with_reasons(tmp_path, corpus, tok_dir):
    recs = corpus["records"]
    path = _bad_inputs(tmp_path, recs)
    ctm = tmp_path / "extra.ctm"
    ctm.write_text("ghost 1 0.00 0.30 hello\n")  # an alignment whose units record does not exist
    tok = SpiritTokenizer(tok_dir)
    # Inline words win; the CTM adds only the ghost (missing units record).
    s = build_dataset([path], str(tmp_path / "il"), tok_dir, SequenceConfig("interleaved"), alignments=str(ctm),
                      progress=False, max_reject_fraction=1.0)  # mostly bad on purpose
    rejects = [json.loads(x) for x in Path(s["rejects_file"]).read_text().splitlines()]
    got = {(r["id"], r["line"], r["reason"]) for r in rejects}
    assert got == {
        (recs[6]["id"], 7, "alignment_mismatch"),
        (recs[7]["id"], 8, "times_beyond_audio"),
        (recs[8]["id"], 9, "missing_units"),
        (recs[9]["id"], 10, "unit_out_of_range"),
        (None, 11, "invalid_utf8"),
        (None, 12, "invalid_json"),
        (recs[10]["id"], 13, "missing_alignment"),
        ("ghost", 0, "missing_units_record"),
    }
    assert all(r["file"] in (path, str(ctm)) and r["detail"] for r in rejects)
    assert s["documents"] == 6 and s["rejected"] == 8 and s["rejects_by_reason"]["invalid_json"] == 1
    for d, r in zip(read_back(str(tmp_path / "il"), tok), recs[:6]):
        check_interleaved(d, r)
    with pytest.raises(DataBuildError, match=r"bad\.jsonl:7: record .* alignment_mismatch"):
        build_dataset([path], str(tmp_path / "strict"), tok_dir, SequenceConfig("interleaved"), strict=True,
                      progress=False)
    assert not any(p.name.startswith("strict") for p in tmp_path.iterdir())  # nothing left behind


def test_bad_text_rejected(tmp_path, tok_dir):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"text": "Fine text."}\n{"text": "   "}\n{"body": "x"}\n{"text": "a [Hu3] b"}\n'
                     b'{"text": "ok \xff"}\n\n{"text": "More."}\n')
    s = build_dataset([str(path)], str(tmp_path / "t"), tok_dir, SequenceConfig("text"), progress=False,
                      max_reject_fraction=1.0)
    reasons = [(r["line"], r["reason"]) for r in map(json.loads, Path(s["rejects_file"]).read_text().splitlines())]
    assert reasons == [(2, "empty_text"), (3, "missing_text"), (4, "markup_in_text"), (5, "invalid_utf8")]
    assert read_back(str(tmp_path / "t"), SpiritTokenizer(tok_dir)) == ["[Text]Fine text.", "[Text]More."]


def _build_killed(big, out, tok_dir):
    """In a forked child: the build SIGKILLs its own process right after the sink has written its 3rd chunk."""
    add = DatasetSink.add

    def add_then_die(self, *args):
        add(self, *args)
        self.chunks = getattr(self, "chunks", 0) + 1
        if self.chunks == 3:
            os.kill(os.getpid(), signal.SIGKILL)

    DatasetSink.add = add_then_die  # this process only: the child dies with it
    build_dataset([big], out, tok_dir, SequenceConfig("text"), progress=False, chunk_bytes=16_000)


def test_killed_build_leaves_nothing_complete_and_rerun_finishes(tmp_path, tok_dir):
    """A real process killed (SIGKILL) mid-build; forked so it needs no second megatron import."""
    import multiprocessing as mp

    out = tmp_path / "k" / "text"
    big = write_jsonl(tmp_path / "big.jsonl", [{"text": t} for t in documents(600, seed=9)])
    child = mp.get_context("fork").Process(target=_build_killed, args=(big, str(out), tok_dir))
    child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL
    left = sorted(p.name for p in out.parent.iterdir())
    assert left == ["text.bin.tmp"]  # partial data under a temporary name only; no .bin/.idx/.summary
    assert not IndexedDataset.exists(str(out))
    assert os.path.getsize(str(out) + ".bin.tmp") > 0
    s = build_dataset([big], str(out), tok_dir, SequenceConfig("text"), progress=False, chunk_bytes=16_000)
    assert not s["skipped"] and s["documents"] == 600
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "text.bin", "text.idx", "text.rejects.jsonl", "text.summary.json"]
    assert len(IndexedDataset(str(out))) == 600
    again = build_dataset([big], str(out), tok_dir, SequenceConfig("text"), progress=False)
    assert again["skipped"]


def test_text_that_encodes_to_nothing_is_rejected(tmp_path, tok_dir):
    from megatron_spirit.tokenizer.tokenizer import SpiritTokenizer as T

    blank = "\u200b\u200b"  # not white space to str.strip, but sentencepiece's normaliser drops it
    if T(tok_dir).sp.encode(blank):
        pytest.skip("this sentencepiece model keeps the zero-width space")
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "One."}, {"id": "z", "text": blank}, {"text": "Two."}])
    s = build_dataset([path], str(tmp_path / "t"), tok_dir, SequenceConfig("text"), progress=False)
    assert s["documents"] == 2 and s["rejects_by_reason"] == {"empty_text": 1}
    assert json.loads(Path(s["rejects_file"]).read_text())["line"] == 2


def test_asr_transcript_from_inline_words(tmp_path, corpus, tok_dir):
    rec = {k: v for k, v in corpus["records"][0].items() if k != "text"}
    path = write_jsonl(tmp_path / "u.jsonl", [rec, {k: v for k, v in rec.items() if k != "words"}])
    s = build_dataset([path], str(tmp_path / "asr"), tok_dir, SequenceConfig("asr"), flavor="base", progress=False)
    assert s["documents"] == 1 and s["rejects_by_reason"] == {"empty_text": 1}
    (doc,) = read_back(str(tmp_path / "asr"), SpiritTokenizer(tok_dir))
    assert doc.endswith("[Text]" + " ".join(w["word"].lower().strip(".,!?") for w in rec["words"]))


def test_bom_and_crlf_inputs(tmp_path, tok_dir):
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"text": "One."}\r\n{"text": "Two."}\r\n{"text": "Three."}')
    s = build_dataset([str(path)], str(tmp_path / "t"), tok_dir, SequenceConfig("text"), progress=False)
    assert s["rejected"] == 0
    assert read_back(str(tmp_path / "t"), SpiritTokenizer(tok_dir)) == ["[Text]One.", "[Text]Two.", "[Text]Three."]
