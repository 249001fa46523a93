"""spirit-eval fewshot: the Appendix B prompts, shot dropping, WER, and the three tasks end to end (tiny model)."""
import json
import random

import pytest

from megatron_spirit.cli.eval import main
from megatron_spirit.evaluation import fewshot
from megatron_spirit.evaluation.fewshot import FewShotPrompts, intent, transcript, word_errors
from megatron_spirit.evaluation.layouts import write_wav

SENTENCES = ["the cat sat down", "a dog ran home", "the sun is warm", "we like green apples", "birds can fly"]
INTENTS = [("lights on please", "lights_on"), ("turn the lights on", "lights_on"), ("play some music", "play"),
           ("play a song", "play")]


def _speak(text):
    from megatron_spirit.synth.espeak import synthesize

    return synthesize(text, "en-us").audio


@pytest.fixture(scope="module")
def sets(tmp_path_factory, speech_tokenizer):
    root = tmp_path_factory.mktemp("fewshot")
    chapter = root / "libri" / "19" / "198"
    lines = []
    for i, s in enumerate(SENTENCES):
        uid = f"19-198-{i:04d}"
        write_wav(chapter / f"{uid}.wav", audio=_speak(s))
        lines.append(f"{uid} {s.upper()}")
    (chapter / "19-198.trans.txt").write_text("\n".join(lines) + "\n")
    rows = ["filename,label"]
    for i, (s, label) in enumerate(INTENTS):
        write_wav(root / "ic" / f"u{i}.wav", audio=_speak(s))
        rows.append(f"u{i},{label}")
    (root / "ic" / "labels.csv").write_text("\n".join(rows) + "\n")
    hubert, km = speech_tokenizer
    for bench, src in (("librispeech", root / "libri"), ("intents", root / "ic")):
        assert main(["units", "--bench", bench, "--root", str(src), "--out", str(root / "units" / bench),
                     "--hubert-model", str(hubert), "--kmeans", str(km), "--device", "cpu"]) == 0
    return root


def test_word_errors_and_answer_extraction():
    assert word_errors("the cat sat", "The cat sat down.") == (1, 4)
    assert word_errors("a b c", "a x c") == (1, 3)
    assert word_errors("", "one two") == (2, 2)
    assert transcript(" <START Transcript> the cat <END> [junk") == "the cat"
    assert transcript("the cat <END>") == "the cat"
    assert intent(" play_music now") == "play_music" and intent("  ") == ""


def test_prompts_follow_appendix_b_and_drop_shots_that_do_not_fit(sets, spirit_tokenizer_dir, monkeypatch):
    from megatron_spirit.evaluation.tasks import load_units_dir
    from megatron_spirit.tokenizer.tokenizer import SpiritTokenizer

    tok = SpiritTokenizer(spirit_tokenizer_dir)
    _, units = load_units_dir(sets / "units" / "librispeech")
    labels = {f"19-198-{i:04d}": s.upper() for i, s in enumerate(SENTENCES)}
    v = tok.vocab
    for task, tail in (("asr", [v.text_id]), ("tts", [v.speech_id])):
        p = FewShotPrompts(task, tok, labels, units, "base")
        item = p.item("19-198-0000", 3, random.Random(0))
        ids = list(item.prompt)
        assert ids[0] == tok.bos_id and item.shots == 3 and ids[-1:] == tail
        assert ids.count(v.speech_id) == 4 and ids.count(v.text_id) == 4
        text = tok.decode([i for i in ids if i < v.base_size])
        if task == "asr":
            assert text.count("<START Transcript>") == 3 and text.count("<END>") == 3
            assert "THE CAT SAT DOWN" not in text  # the item's own transcript is not a shot
    monkeypatch.setitem(fewshot.CONTEXT, "asr", 1 + 2 * max(len(FewShotPrompts("asr", tok, labels, units, "base")
                                                                 .part(u, True)) for u in labels))
    item = FewShotPrompts("asr", tok, labels, units, "base").item("19-198-0000", 4, random.Random(0))
    assert item.shots < 4 and len(item.prompt) <= fewshot.CONTEXT["asr"]


@pytest.mark.parametrize("task", ["asr", "tts", "ic"])
def test_fewshot_end_to_end(sets, hf_model_dir, tmp_path, task):
    data = sets / "units" / ("intents" if task == "ic" else "librispeech")
    assert main(["fewshot", task, "--model", str(hf_model_dir), "--data", str(data), "--shots", "2",
                 "--max-new-tokens", "6", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results.json").read_text())["fewshot"]
    items = [json.loads(x) for x in (tmp_path / "items" / f"{task}.jsonl").read_text().splitlines()]
    assert res["task"] == task and res["items"] == len(items) == (4 if task == "ic" else 5)
    assert all(it["shots"] == 2 for it in items)
    if task == "asr":
        assert res["wer"] == sum(it["errors"] for it in items) / sum(len(s.split()) for s in SENTENCES)
    elif task == "ic":
        assert res["accuracy"] == sum(it["correct"] for it in items) / 4
    else:
        assert "vocoder" in res["note"] and all(it["units"].startswith("[Hu") or it["units"] == "" for it in items)
    # a units folder of the other kind is refused with a clear message
    other = sets / "units" / ("librispeech" if task == "ic" else "intents")
    assert main(["fewshot", task, "--model", str(hf_model_dir), "--data", str(other), "--out", str(tmp_path)]) == 2
