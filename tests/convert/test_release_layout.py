"""Continuing from a SpiRit-LM checkpoint in the release's layout (issue 13), end to end on a 32000-piece base.

The EXPRESSIVE model is laid out as the released ``spirit-lm-expressive-7b`` folder is (config, weights with
32768 rows, ``tokenizer.model``, ``tokenizer_config.json``, ``special_tokens_map.json``; none of our files); the
BASE one is this project's own export (32512 rows). Both convert to Megatron keeping every row, round-trip
bit-identically, and the EXPRESSIVE one trains on (TP2, separate gloo processes) from exactly the HF model's
loss; the exports reload in stock transformers with ids and decoding that match ``SpiritTokenizer``.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ..tokenizer.test_build import CANONICAL
from ..training.launch import losses, run_train

TINY = dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
            max_position_embeddings=64, rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False)  # "tiny"
STEPS, GLOBAL_BATCH, SPLIT = 2, 4, "100,0,0"
RELEASE_TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")


def _random_llama(path: Path, vocab: int, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, **TINY)).float()
    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed)
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1.0 + 0.2 * noise if "norm" in name else 0.1 * noise)
    model.save_pretrained(path)
    return path


def _tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory, llama_sized_spm):
    from megatron_spirit.tokenizer.build import build_tokenizer

    root = tmp_path_factory.mktemp("tok32k")
    return {fl: build_tokenizer(llama_sized_spm, root / fl, fl) for fl in ("base", "expressive")}


@pytest.fixture(scope="module")
def release(tmp_path_factory, tokenizers) -> Path:
    """A random EXPRESSIVE model in the released folder's layout."""
    folder = _random_llama(tmp_path_factory.mktemp("release") / "spirit-lm-expressive-7b", 32768, seed=5)
    for name in RELEASE_TOKENIZER_FILES:
        shutil.copy(tokenizers["expressive"] / name, folder / name)
    # The release's code loads a LlamaTokenizer (slow in transformers 4.x) from the folder.
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer", "add_bos_token": True,
                                                              "add_eos_token": False, "legacy": True}))
    return folder


def test_released_expressive_converts_keeping_every_row_and_round_trips(release, tmp_path):
    from megatron_spirit.convert.hf_to_megatron import hf_to_megatron
    from megatron_spirit.convert.megatron_to_hf import megatron_to_hf

    m1 = hf_to_megatron(release, release, tmp_path / "m1", tp=2, progress=False)
    info = json.loads((m1 / "spirit_checkpoint.json").read_text())
    assert info["vocab"] == {"base_size": 32000, "flavor": "expressive", "padded_size": 32768}
    assert info["model_config"]["rope_base"] == 10000.0  # the checkpoint's own rope_theta, not the recipe's
    assert not list((m1 / "tokenizer").glob("*.safetensors"))  # the tokenizer copy, not the model folder
    e1 = megatron_to_hf(m1, tmp_path / "e1", progress=False)
    original, exported = _tensors(release), _tensors(e1)
    assert original.keys() == exported.keys()
    for name, t in original.items():
        assert torch.equal(t, exported[name]), name  # every row kept, no new random rows
    assert json.loads((e1 / "config.json").read_text())["vocab_size"] == 32768
    # Megatron -> HF -> Megatron (PP2 this time) -> HF: bit-identical, tokenizer files included.
    m2 = hf_to_megatron(e1, e1, tmp_path / "m2", pp=2, progress=False)
    e2 = megatron_to_hf(m2, tmp_path / "e2", progress=False)
    assert _files(e2) == _files(e1)
    assert (e1 / "tokenizer.json").is_file()  # the export's own HF files, written from tokenizer.model


def test_own_base_export_converts_back_and_its_tokenizer_fits_its_rows(tmp_path, tokenizers):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from megatron_spirit.convert.hf_to_megatron import hf_to_megatron
    from megatron_spirit.convert.megatron_to_hf import megatron_to_hf
    from megatron_spirit.tokenizer.tokenizer import SpiritTokenizer

    llama = _random_llama(tmp_path / "llama", 32000, seed=6)
    m0 = hf_to_megatron(llama, tokenizers["base"], tmp_path / "m0", progress=False)
    e1 = megatron_to_hf(m0, tmp_path / "e1", progress=False)
    assert json.loads((e1 / "config.json").read_text())["vocab_size"] == 32512
    m1 = hf_to_megatron(e1, e1, tmp_path / "m1", tp=2, progress=False)
    e2 = megatron_to_hf(m1, tmp_path / "e2", progress=False)
    assert _files(e2) == _files(e1)

    tok, hf_tok = SpiritTokenizer(e2), AutoTokenizer.from_pretrained(e2)
    assert len(hf_tok) == tok.vocab_size == 32512
    model = AutoModelForCausalLM.from_pretrained(e2)
    # A BASE tokenizer has no pitch/style pieces: ours says so, HF's keeps such text as text, within the rows.
    with pytest.raises(ValueError, match=r"\[Pi20\] is a pitch unit, which a BASE tokenizer does not hold"):
        tok.encode("[Speech][Pi20][St5]")
    ids = hf_tok("[Speech][St5][Pi20][Hu3]", return_tensors="pt")["input_ids"]
    assert ids.max().item() < 32512 and ids[0, -1].item() == 32002 + 3
    with torch.no_grad():
        assert model(ids).logits.shape[-1] == 32512
    assert hf_tok.decode(list(range(32503, 32512))) == "".join(f"[Madeuptoken{i}]" for i in range(32503, 32512))


def _batch_loss_hf(hf_folder: Path, data_prefix: Path, tokenizer: Path, seq_length: int) -> float:
    """The HF model's per-token loss on the trainer's first global batch (same datasets, same sample order)."""
    from transformers import AutoModelForCausalLM

    from megatron_spirit.training.config import DataConfig
    from megatron_spirit.training.datasets import build_gpt_datasets, data_blend

    blend = data_blend(DataConfig(tokenizer=str(tokenizer), prefixes=[str(data_prefix)], split=SPLIT))
    train, _, _ = build_gpt_datasets(blend, tokenizer, seq_length, [STEPS * GLOBAL_BATCH, 0, 0], seed=1234)
    samples = [train[i] for i in range(GLOBAL_BATCH)]
    tokens = torch.stack([s["tokens"] for s in samples])
    labels = torch.stack([s["labels"] for s in samples])
    mask = torch.stack([s["loss_mask"] for s in samples]).float()
    model = AutoModelForCausalLM.from_pretrained(hf_folder, torch_dtype=torch.float32)
    with torch.no_grad():
        logits = model(tokens).logits.double()
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none")
    return float((ce * mask.reshape(-1).double()).sum() / mask.sum())


def test_training_continues_from_the_released_model_at_its_loss(release, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from megatron_spirit.convert.hf_to_megatron import hf_to_megatron
    from megatron_spirit.convert.megatron_to_hf import megatron_to_hf
    from megatron_spirit.synth.text import documents
    from megatron_spirit.tokenizer.tokenizer import SpiritTokenizer

    start = hf_to_megatron(release, release, tmp_path / "start", tp=2, progress=False)
    corpus = tmp_path / "text.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in documents(200, seed=3)))
    r = subprocess.run([sys.executable, "-m", "megatron_spirit.cli.data", "build", "--kind", "text", "--input",
                        str(corpus), "--out", str(tmp_path / "text"), "--tokenizer", str(release), "--no-progress"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    cfg = {
        "model": {"name": "tiny"},
        "precision": "fp32",
        "data": {"tokenizer": str(release), "prefixes": [str(tmp_path / "text")], "split": SPLIT},
        "schedule": {"train_steps": STEPS, "global_batch_size": GLOBAL_BATCH, "micro_batch_size": 2},
        "optimizer": {"lr": 1.0e-3, "min_lr": 1.0e-3},
        "checkpoint": {"save_interval": STEPS, "finetune_from": str(start)},
        "logging": {"log_interval": 1, "tensorboard": False, "plot_loss": False},
        "parallel": {"tp": 2},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    out = run_train(2, [str(tmp_path / "run.yaml"), f"checkpoint.dir={run}/ckpt", f"logging.dir={run}/logs"], run)
    assert "initialised weights from" in out
    loss = losses(run / "logs" / "metrics.jsonl")
    hf_loss = _batch_loss_hf(release, tmp_path / "text", release, TINY["max_position_embeddings"])
    print(f"first-step loss {loss[1]:.7f}, HF on the same batch {hf_loss:.7f}")
    assert abs(loss[1] - hf_loss) < 1e-4, (loss[1], hf_loss)

    # Export the trained checkpoint; stock transformers reloads it, with our tokenizer's ids and strings.
    trained = megatron_to_hf(run / "ckpt", tmp_path / "trained", progress=False)
    model = AutoModelForCausalLM.from_pretrained(trained)
    assert not torch.equal(model.lm_head.weight, _tensors(release)["lm_head.weight"])  # it did train
    hf_tok, tok = AutoTokenizer.from_pretrained(trained), SpiritTokenizer(trained)
    assert len(hf_tok) == tok.vocab_size == model.config.vocab_size == 32768
    for s in CANONICAL:
        ids = hf_tok(s)["input_ids"]
        assert ids == tok.encode(s, bos=True), s
        assert hf_tok.decode(ids, skip_special_tokens=True) == s == tok.decode(ids), s
    ids = hf_tok("[Speech][St5][Pi20][Hu3]", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert model(ids).logits.shape[-1] == 32768
    fillers = list(range(32667, 32768))  # ids an EXPRESSIVE model may sample: pieces, decodable
    assert hf_tok.decode(fillers) == "".join(f"[Madeuptoken{i}]" for i in fillers) == tok.decode(fillers)

    # Generation with the release's semantics on the re-exported model (issue 13, item 4).
    from megatron_spirit.evaluation.generate import GenerateConfig, generate

    speech = generate(model, tok, "[Text]the cat sat", "speech", GenerateConfig(max_new_tokens=12, seed=1))
    assert speech.prompt_ids[-1] == tok.vocab.speech_id  # [Speech] appended where the modality changes
    assert speech.ids and all(tok.vocab.is_speech_id(i) for i in speech.ids)  # units only, never EOS
    assert speech.text == "".join(tok.vocab.id_to_token[i] for i in speech.ids)
    text = generate(model, tok, "[Speech][Hu3][Hu7]", "text", GenerateConfig(max_new_tokens=8, seed=1))
    assert text.prompt_ids[-1] == tok.vocab.text_id and all(i < 32000 for i in text.ids)
    free = generate(model, tok, "[Text]the cat", "free", GenerateConfig(max_new_tokens=16, seed=1, min_speech_units=0))
    assert free.prompt_ids[-1] != tok.vocab.speech_id and free.prompt_ids[-1] != tok.vocab.text_id
    assert [i for s in free.segments for i in s.ids] == [i for i in free.ids if i not in (tok.vocab.text_id,
                                                                                            tok.vocab.speech_id)]
    assert all(s.modality == "speech" and all(tok.vocab.is_speech_id(i) for i in s.ids)
               or s.modality == "text" and all(i < 32000 for i in s.ids) for s in free.segments)
