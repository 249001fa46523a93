"""Readers of the released layouts, the official ZeroSpeech aggregation and submission files, bad input."""
import csv

import pytest

from megatron_spirit.evaluation.aggregate import accuracy, outcome, write_zerospeech_submission
from megatron_spirit.evaluation.benchmarks import BenchmarkError, read_benchmark
from megatron_spirit.evaluation.scoring import CandidateScore

from megatron_spirit.evaluation import layouts


def _cs(x, n=1):
    return CandidateScore(x * n, n)


def test_lexical_reader_and_official_aggregation(tmp_path):
    # ids a (freq 0, oov), b (freq 3), c (freq 50); voices v1 v2 v3.
    root = layouts.lexical(tmp_path, [("a", "cat", "cag", 0), ("b", "dog", "dag", 3), ("c", "sun", "sen", 50)],
                           voices=("v1", "v2", "v3"))
    bench = read_benchmark("swuggy", tmp_path)
    assert bench.zerospeech == "lexical" and len(bench.audio) == 18
    items = bench.items["S"]
    assert len(items) == 9 and all(it.candidates[0][0].modality == "speech" for it in items)
    assert bench.items["T"][0].candidates[0][0].value == "cat"
    # Outcomes per (id, voice): a: 1, 0, tie → 0.5 mean; b: 1, 1, 1 → 1; c: 0, tie, 0 → 1/6.
    table = {("a", "v1"): (2, 1), ("a", "v2"): (1, 2), ("a", "v3"): (1, 1),
             ("b", "v1"): (3, 1), ("b", "v2"): (3, 2), ("b", "v3"): (5, 0),
             ("c", "v1"): (0, 1), ("c", "v2"): (4, 4), ("c", "v3"): (1, 9)}
    scores = [[_cs(table[it.meta["id"], it.meta["voice"]][0]), _cs(table[it.meta["id"], it.meta["voice"]][1])]
              for it in items]
    acc = accuracy(items, scores, "normalised", "lexical")
    assert acc["pairs"] == 3 and acc["items"] == 9
    assert acc["accuracy"] == pytest.approx((0.5 + 1.0 + 1 / 6) / 3)
    assert acc["by_frequency"] == {"oov": {"n": 1, "accuracy": 0.5}, "1-5": {"n": 1, "accuracy": 1.0},
                                   "21-100": {"n": 1, "accuracy": pytest.approx(1 / 6)}}
    assert acc["by_length"]["3"]["n"] == 3
    # Submission: one 'filename score' line per wav of gold.csv.
    sub = write_zerospeech_submission(tmp_path / "sub", "lexical", "dev", items, scores, "normalised")
    lines = sub.read_text().split("\n")[:-1]
    with open(root / "dev" / "gold.csv") as f:
        gold = {r["filename"] for r in csv.DictReader(f)}
    assert {ln.split(" ")[0] for ln in lines} == gold and len(lines) == 18
    assert all(len(ln.split(" ")) == 2 and float(ln.split(" ")[1]) >= 0 for ln in lines)


def test_syntactic_reader_groups_by_type(tmp_path):
    layouts.syntactic(tmp_path, [("1", "agr", "n", "the dog runs", "the dog run"),
                                 ("2", "agr", "n", "cats sleep", "cats sleeps"),
                                 ("3", "island", "wh", "who saw it", "who it saw")])
    bench = read_benchmark("sblimp", tmp_path / "syntactic")
    items = bench.items["T"]
    assert items[0].candidates[1][0].value == "the dog run"
    wins = {"1": (1, 0), "2": (0, 1), "3": (1, 1)}
    scores = [[_cs(wins[it.meta["id"]][0]), _cs(wins[it.meta["id"]][1])] for it in items]
    acc = accuracy(items, scores, "summed", "syntactic")
    assert acc["accuracy"] == pytest.approx(0.5)
    assert acc["by_type"] == {"agr/n": {"n": 2, "accuracy": 0.5}, "island/wh": {"n": 1, "accuracy": 0.5}}


def test_summed_and_normalised_differ_on_length_bias():
    # Correct candidate: 4 tokens at -1 each (sum -4, mean -1); wrong: 1 token at -2 (sum -2, mean -2).
    from megatron_spirit.evaluation.prompts import Item, Segment

    it = Item("x", (), ((Segment("text", "a"),), (Segment("text", "b"),)))
    sc = [[CandidateScore(-4.0, 4), CandidateScore(-2.0, 1)]]
    assert accuracy([it], sc, "normalised")["accuracy"] == 1.0
    assert accuracy([it], sc, "summed")["accuracy"] == 0.0
    assert outcome([1.0, 1.0], 0) == 0.5 and outcome([1.0, 1.0, 1.0], 2) == pytest.approx(1 / 3)


def test_story_pairs_and_cross_modal(tmp_path):
    bench = read_benchmark("tsc", layouts.story_pairs(tmp_path / "tsc", 3))
    assert [it.names for it in bench.items["S"]][0] == ("0_astory", "0_bstory")
    (tmp_path / "named").mkdir()
    for tag in ("incorrect", "correct"):
        layouts.write_wav(tmp_path / "named" / f"7_{tag}.wav")
    assert read_benchmark("ssc", tmp_path / "named").items["S"][0].names == ("7_correct", "7_incorrect")
    cm = read_benchmark("cm-tsc", layouts.cross_modal(tmp_path / "cm", [("12", "a story.", "good end.", "bad end.")]))
    assert set(cm.items) == {"T", "S", "T2S", "S2T"}
    t2s = cm.items["T2S"][0]
    assert t2s.context[0].modality == "text" and t2s.context[0].value == "a story."
    assert t2s.candidates[0][0].modality == "speech" and t2s.candidates[0][0].value == "12_correct"
    assert cm.items["S2T"][0].candidates[1][0].value == "bad end."


def test_bad_input_names_file_and_item(tmp_path):
    root = layouts.lexical(tmp_path / "a", [("a", "cat", "cag", 0), ("b", "dog", "dag", 3)])
    (root / "dev" / "f0001x.wav").unlink()
    with pytest.raises(BenchmarkError, match=r"gold.csv:3 \(filename 'f0001x'\).*absent"):
        read_benchmark("swuggy", root)
    root = layouts.lexical(tmp_path / "b", [("a", "cat", "cag", 0)])
    gold = root / "dev" / "gold.csv"
    gold.write_text(gold.read_text().replace(",frequency,", ",freq,"))
    with pytest.raises(BenchmarkError, match=r"gold.csv: missing gold columns \['frequency'\]"):
        read_benchmark("swuggy", root)
    root = layouts.lexical(tmp_path / "c", [("a", "cat", "cag", 0)], voices=("v1",))
    gold = root / "dev" / "gold.csv"
    gold.write_text("\n".join(gold.read_text().splitlines()[:2]) + "\n")
    with pytest.raises(BenchmarkError, match=r"pair id 'a' voice 'v1' is unpaired \(only 'f0000x'"):
        read_benchmark("swuggy", root)
    layouts.story_pairs(tmp_path / "sc", 2)
    (tmp_path / "sc" / "1_bstory.wav").unlink()
    with pytest.raises(BenchmarkError, match=r"story 1 has 1 wavs \(1_astory.wav\)"):
        read_benchmark("ssc", tmp_path / "sc")
    layouts.cross_modal(tmp_path / "cm", [("3", "ctx", "good", "bad")])
    (tmp_path / "cm" / "3_incorrect.txt").unlink()
    with pytest.raises(BenchmarkError, match=r"story '3' lacks 3_incorrect.txt"):
        read_benchmark("cm-ssc", tmp_path / "cm")


def test_speech_fingerprint_follows_files_and_settings(tmp_path):
    from megatron_spirit.evaluation.units import speech_fingerprint

    (tmp_path / "km").mkdir()
    (tmp_path / "km" / "centroids.npy").write_bytes(b"abc")
    paths = {"hubert": tmp_path / "km", "pitch": None}
    fp = speech_fingerprint(paths, {"layer": 11})
    assert fp == speech_fingerprint(paths, {"layer": 11}) and len(fp) == 16
    assert fp != speech_fingerprint(paths, {"layer": 10})
    (tmp_path / "km" / "centroids.npy").write_bytes(b"abd")
    assert fp != speech_fingerprint(paths, {"layer": 11})
