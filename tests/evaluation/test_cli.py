"""spirit-eval end to end on generated benchmark folders: units (espeak speech), score, table, refusals."""
import json

import pytest

from megatron_spirit.cli.eval import main

from megatron_spirit.evaluation import layouts


def _speak(text, voice):
    from megatron_spirit.synth.espeak import synthesize

    return synthesize(text, "en-us" if voice == "v1" else "en-us+f3").audio


@pytest.fixture(scope="module")
def benches(tmp_path_factory):
    root = tmp_path_factory.mktemp("benches")
    layouts.lexical(root / "zr", [("a", "cat", "cag", 0), ("b", "dog", "dag", 7)], audio=_speak)
    layouts.cross_modal(root / "cm", [("1", "the man went home.", "he slept.", "the sky is green."),
                                      ("2", "she baked bread.", "it was warm.", "dogs fly south.")])
    for stem in ("1", "2"):  # the cross-modal wavs as speech
        for part in ("mutual", "correct", "incorrect"):
            text = (root / "cm" / f"{stem}_{part}.txt").read_text().strip()
            layouts.write_wav(root / "cm" / f"{stem}_{part}.wav", audio=_speak(text, "v1"))
    layouts.story_pairs(root / "ssc", 2, audio=lambda k, tag: _speak(f"story {k} ending {tag}", "v1"))
    return root


def _units(bench, root, out, speech_tokenizer, *extra):
    hubert, km = speech_tokenizer
    return main(["units", "--bench", bench, "--root", str(root), "--out", str(out), "--hubert-model", str(hubert),
                 "--kmeans", str(km), "--device", "cpu", *extra])


def test_units_score_table(tmp_path, benches, speech_tokenizer, hf_model_dir, capsys):
    u = tmp_path / "units"
    assert _units("swuggy", benches / "zr" / "lexical", u / "swuggy", speech_tokenizer) == 0
    assert _units("cm-tsc", benches / "cm", u / "cm-tsc", speech_tokenizer, "--shard", "0/2") == 0
    assert _units("cm-tsc", benches / "cm", u / "cm-tsc", speech_tokenizer, "--shard", "1/2") == 0
    assert _units("ssc", benches / "ssc", u / "ssc", speech_tokenizer) == 0
    assert _units("ssc", benches / "ssc", u / "ssc", speech_tokenizer) == 0  # resumable: done shards skipped
    assert "already done" in capsys.readouterr().out
    meta = json.loads((u / "swuggy" / "eval-units.json").read_text())
    assert meta["bench"] == "swuggy" and len(meta["fingerprint"]) == 16 and meta["flavor"] == "base"
    fp = meta["fingerprint"]
    assert json.loads((u / "ssc" / "eval-units.json").read_text())["fingerprint"] == fp

    out = tmp_path / "run"
    tasks = "swuggy:T,swuggy:S,tsc:T,tsc:T2S,tsc:S2T,sc:S"
    args = ["score", "--model", str(hf_model_dir), "--tasks", tasks, "--data", f"swuggy={u / 'swuggy'}",
            "--data", f"cm-tsc={u / 'cm-tsc'}", "--data", f"ssc={u / 'ssc'}",
            "--out", str(out), "--units-fingerprint", fp]
    assert main(args) == 0
    res = json.loads((out / "results.json").read_text())
    assert set(res["tasks"]) == set(tasks.split(","))
    sw = res["tasks"]["swuggy:S"]
    assert sw["items"] == 4 and sw["normalised"]["pairs"] == 2 and 0 <= sw["summed"]["accuracy"] <= 1
    assert res["tasks"]["tsc:T2S"]["items"] == 2 and res["fingerprints"]["swuggy"] == fp
    assert res["config"]["prompt"]["softmax"] == "full" and res["model"].endswith("model")
    rows = [json.loads(x) for x in (out / "items" / "tsc-T2S.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(c["tokens"] > 0 and c["logprob"] < 0 for r in rows for c in r["candidates"])
    sub = (out / "zerospeech" / "S" / "normalised" / "lexical" / "dev.txt").read_text().splitlines()
    assert len(sub) == 8 and all(len(line.split(" ")) == 2 for line in sub)
    table = (out / "table.md").read_text()
    assert "| WUGGY T | WUGGY S |" in table and "SpiRit-LM BASE 7B (paper) | 80.3 | 69.0 |" in table
    assert "Table 10" in table

    # Packing choices do not change a single score.
    assert main(args[:-4] + ["--out", str(tmp_path / "plain"), "--pack", "--no-share-context",
                 "--label", "plain"]) == 0
    plain = json.loads((tmp_path / "plain" / "results.json").read_text())
    for name, t in res["tasks"].items():
        assert plain["tasks"][name]["normalised"]["accuracy"] == t["normalised"]["accuracy"]
    a = [json.loads(x) for x in (out / "items" / "sc-S.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "plain" / "items" / "sc-S.jsonl").read_text().splitlines()]
    assert all(abs(c["logprob"] - d["logprob"]) < 1e-4 for x, y in zip(a, b)
               for c, d in zip(x["candidates"], y["candidates"]))

    assert main(["table", str(out), str(tmp_path / "plain"), "--out", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp" / "table.png").stat().st_size > 1000
    csv_text = (tmp_path / "cmp" / "table.csv").read_text()
    assert "\nmodel,normalised," in csv_text and "\nplain,summed," in csv_text

    # Refusals: another fingerprint; a model whose vocabulary does not fit the tokenizer.
    capsys.readouterr()
    assert main(args[:-1] + ["0123456789abcdef"]) == 2
    assert "fingerprint" in capsys.readouterr().err


def test_text_tasks_from_released_folders_and_vocab_mismatch(tmp_path, benches, hf_model_dir, capsys):
    out = tmp_path / "t"
    assert main(["score", "--model", str(hf_model_dir), "--tasks", "swuggy:T,tsc:T", "--data",
                 f"swuggy={benches / 'zr'}", "--data", f"cm-tsc={benches / 'cm'}", "--out", str(out)]) == 0
    assert json.loads((out / "results.json").read_text())["tasks"]["swuggy:T"]["normalised"]["pairs"] == 2
    assert main(["score", "--model", str(hf_model_dir), "--tasks", "swuggy:S", "--data",
                 f"swuggy={benches / 'zr'}", "--out", str(out)]) == 2
    assert "needs speech units" in capsys.readouterr().err
    import shutil

    from .conftest import tiny_llama

    bad = tmp_path / "bad"
    shutil.copytree(hf_model_dir, bad)
    tiny_llama(700).save_pretrained(bad)
    assert main(["score", "--model", str(bad), "--tasks", "swuggy:T", "--data", f"swuggy={benches / 'zr'}",
                 "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "has 700 output rows" in err and "do not belong together" in err


def test_units_from_relative_folders(tmp_path, benches, speech_tokenizer, monkeypatch):
    """`--root` and `--out` relative to the current folder, as `make demo` gives them."""
    import shutil

    shutil.copytree(benches / "zr", tmp_path / "zr")
    monkeypatch.chdir(tmp_path)
    assert _units("swuggy", "zr/lexical", "units/swuggy", speech_tokenizer) == 0
    units = [json.loads(line) for line in (tmp_path / "units/swuggy").glob("units-*.jsonl").__next__().open()]
    assert len(units) == 8 and not list((tmp_path / "units/swuggy").glob("rejects-*.jsonl"))[0].read_text()
