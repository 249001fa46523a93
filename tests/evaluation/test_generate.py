"""Generation with the release's semantics on a tiny random export: markers, bans, sampling defaults, segments."""
import json

import pytest
import torch

from megatron_spirit.evaluation.generate import (GenerateConfig, build_prompt, generate, release_allowed_ids,
                                                 split_segments)
from megatron_spirit.tokenizer.tokenizer import SpiritTokenizer


@pytest.fixture(scope="module")
def tok(hf_model_dir):
    return SpiritTokenizer(hf_model_dir)


@pytest.fixture(scope="module")
def model(hf_model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(hf_model_dir).eval()


def _prompt(tok, text, modality, add_markers=True):
    return tok.decode(build_prompt(tok.vocab, tok.encode(text), modality, add_markers))


@pytest.mark.parametrize("prompt, modality, expected", [
    ("[Text]the cat", "speech", "[Text]the cat[Speech]"),           # text → speech: [Speech] appended
    ("[Speech][Hu3][Hu7]", "text", "[Speech][Hu3][Hu7][Text]"),     # speech → text: [Text] appended
    ("[Text]the cat", "text", "[Text]the cat"),                     # same modality: nothing appended
    ("[Speech][Hu3][Hu7]", "speech", "[Speech][Hu3][Hu7]"),
    ("the cat", "text", "[Text]the cat"),                           # a bare prompt gets its own marker
    ("[Hu3][Hu7]", "speech", "[Speech][Hu3][Hu7]"),
    ("the cat[Hu3] the mat", "free", "[Text]the cat[Speech][Hu3][Text]the mat"),  # free: nothing at the end
    ("[Text]the cat[Speech]", "speech", "[Text]the cat[Speech]"),   # ends with the marker already
    ("[Text]the cat[Speech]", "text", "[Text]the cat[Speech][Text]"),
    ("[TEXT]the cat", "speech", "[Text]the cat[Speech]"),           # the paper's spelling is accepted
])
def test_markers_appended_where_the_modality_changes(tok, prompt, modality, expected):
    assert _prompt(tok, prompt, modality) == expected


def test_no_markers_leaves_the_prompt_alone(tok):
    assert _prompt(tok, "the cat[Hu3]", "text", add_markers=False) == "the cat[Hu3]"


def test_allowed_ids_follow_the_release(tok):
    v = tok.vocab
    text, speech, free = (set(release_allowed_ids(v, m).tolist()) for m in ("text", "speech", "free"))
    assert text == set(range(v.base_size))                      # <unk>, <s>, </s> kept, as the release
    assert 2 not in speech and v.text_id not in speech and v.speech_id not in speech
    assert speech == set(range(v.base_size + 2, v.base_size + 667))  # expressive: every unit, nothing else
    assert free == text | speech | {v.text_id, v.speech_id}
    from megatron_spirit.tokenizer.vocab import SpiritVocab

    base = SpiritVocab(v.base_size, "base")
    assert set(release_allowed_ids(base, "speech").tolist()) == set(range(v.base_size + 2, v.base_size + 503))


def _units(tok, prefix, units):
    return [tok.vocab.token_to_id[f"[{prefix}{u}]"] for u in units]


def test_free_mode_split_on_a_constructed_continuation(tok):
    v = tok.vocab
    words = tok.encode_text(" the old man")
    later = tok.encode_text(" and the sea")
    ids = (words + [v.speech_id] + _units(tok, "St", [4]) + _units(tok, "Hu", range(30)) + [v.text_id]
           + later + [v.speech_id] + _units(tok, "Hu", range(5)) + [v.text_id] + tok.encode_text(" end") + [2])
    segs = split_segments(v, tok.decode, ids, prompt_ids=[1, v.text_id] + tok.encode_text("hi"))
    assert [s.modality for s in segs] == ["text", "speech", "text", "text"]  # 5-unit speech segment dropped
    assert segs[0].content == "the old man"                       # stripped at the very start
    assert segs[1].content == "[St4]" + "".join(f"[Hu{u}]" for u in range(30))
    assert segs[1].units()["hubert"] == list(range(30)) and segs[1].units()["style"] == [4] * 30
    assert segs[3].content.endswith("end")
    kept = split_segments(v, tok.decode, ids, min_speech_units=0)
    assert [s.modality for s in kept] == ["text", "speech", "text", "speech", "text"]
    # Markers drop out without splitting: speech, marker, speech is one segment.
    one = split_segments(v, tok.decode, _units(tok, "Hu", [1]) + [v.text_id, v.speech_id] + _units(tok, "Hu", [2]))
    assert [(s.modality, s.content) for s in one] == [("speech", "[Hu1][Hu2]")]


def test_short_first_speech_kept_unless_it_continues_the_prompt(tok):
    v = tok.vocab
    ids = _units(tok, "Hu", [1, 2, 3]) + [v.text_id] + tok.encode_text(" so")
    fresh = split_segments(v, tok.decode, ids, prompt_ids=[1, v.text_id] + tok.encode_text("hi"))
    assert [s.modality for s in fresh] == ["speech", "text"]
    cont = split_segments(v, tok.decode, ids, prompt_ids=[1, v.speech_id] + _units(tok, "Hu", [9]))
    assert [s.modality for s in cont] == ["text"]


class _Spy:
    """Records model.generate's keyword arguments."""

    def __init__(self, model):
        self.model, self.calls = model, []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def generate(self, **kw):
        self.calls.append(kw)
        return self.model.generate(**kw)


def test_defaults_are_the_releases_and_overridable(model, tok):
    cfg = GenerateConfig()
    assert (cfg.temperature, cfg.top_p, cfg.top_k, cfg.do_sample) == (0.8, 0.95, 50, True)
    spy = _Spy(model)
    generate(spy, tok, "[Text]the cat", "text", GenerateConfig(max_new_tokens=3))
    generate(spy, tok, "[Text]the cat", "text", GenerateConfig(max_new_tokens=3, temperature=0.3, top_p=0.5,
                                                                top_k=7))
    generate(spy, tok, "[Text]the cat", "text", GenerateConfig(max_new_tokens=3, do_sample=False))
    got = [(c.get("temperature"), c.get("top_p"), c.get("top_k"), c["do_sample"]) for c in spy.calls]
    assert got == [(0.8, 0.95, 50, True), (0.3, 0.5, 7, True), (None, None, None, False)]


@pytest.fixture()
def eos_loving(model):
    """The export with a huge bias on </s>: unmasked, it would end every continuation at once."""
    import copy

    m = copy.deepcopy(model)
    head = m.get_output_embeddings()
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.zero_()
        biased.bias[2] = 1e4
    m.lm_head = biased
    return m


def test_speech_never_emits_eos(eos_loving, tok):
    v = tok.vocab
    text = generate(eos_loving, tok, "[Text]the cat", "text", GenerateConfig(max_new_tokens=8))
    assert text.ids == [2]  # the bias works: text stops at EOS
    for seed in range(3):
        g = generate(eos_loving, tok, "[Text]the cat", "speech", GenerateConfig(max_new_tokens=20, seed=seed))
        assert len(g.ids) == 20 and 2 not in g.ids
        assert all(v.is_speech_id(i) for i in g.ids)
        assert g.prompt.endswith("[Speech]") and [s.modality for s in g.segments] == ["speech"]
        assert g.segments[0].content == tok.decode(g.ids)


def test_continuation_is_cut_by_ids(model, tok):
    cfg = GenerateConfig(max_new_tokens=12, do_sample=False)
    prompt = "[Text]the old man  found"  # a double space does not survive decoding: cutting strings would shift
    g = generate(model, tok, prompt, "text", cfg)
    x = torch.tensor([g.prompt_ids])
    full = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=12, do_sample=False,
                          logits_processor=None, bad_words_ids=[[i] for i in range(tok.vocab.base_size,
                                                                                   model.config.vocab_size)],
                          pad_token_id=2, eos_token_id=2)[0].tolist()
    assert g.prompt_ids + g.ids == full
    assert g.text == tok.decode([i for i in g.ids if i not in (0, 1, 2)]).strip()
    assert g.prompt_ids[:2] == [1, tok.vocab.text_id]


def test_seeded_sampling_repeats(model, tok):
    a = generate(model, tok, "[Speech][Hu3]", "free", GenerateConfig(max_new_tokens=15, seed=4))
    b = generate(model, tok, "[Speech][Hu3]", "free", GenerateConfig(max_new_tokens=15, seed=4))
    assert a == b and len(a.ids) >= 1


def test_cli_generate(hf_model_dir, tmp_path, capsys):
    from megatron_spirit.cli.eval import main

    out = tmp_path / "gen.json"
    assert main(["generate", "--model", str(hf_model_dir), "--prompt", "[Text]the cat", "--modality", "speech",
                 "--max-new-tokens", "6", "--out", str(out)]) == 0
    d = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == d
    assert len(d["ids"]) == 6 and d["segments"][0]["modality"] == "speech"
    assert d["prompt"].endswith("[Text]the cat[Speech]")
    assert main(["generate", "--model", str(hf_model_dir), "--prompt", "x", "--top-p", "0"]) == 2
    (tmp_path / "p.txt").write_text("[Speech]" + "[Hu3][Hu9]" * 40 + "\n")
    assert main(["generate", "--model", str(hf_model_dir), "--prompt-file", str(tmp_path / "p.txt"),
                 "--modality", "free", "--max-new-tokens", "5", "--greedy"]) == 0
    d = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert d["prompt"] == "[Speech]" + "[Hu3][Hu9]" * 40 and len(d["ids"]) <= 5
