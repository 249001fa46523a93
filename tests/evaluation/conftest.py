"""Evaluation fixtures: a tiny random LlamaForCausalLM exported with the tiny SpiRit tokenizer."""
import pytest


def tiny_llama(vocab_rows: int, seed: int = 0, attn: str = "sdpa"):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab_rows, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      rope_theta=100000.0, attn_implementation=attn)
    model = LlamaForCausalLM(cfg).float().eval()
    with torch.no_grad():  # larger weights than the init: logits far from uniform, so ranking tests mean something
        for p in model.parameters():
            p.mul_(4.0 if p.dim() > 1 else 1.0)
    return model


@pytest.fixture(scope="session")
def hf_model_dir(tmp_path_factory, spirit_tokenizer_dir):
    """A tiny random export: config + weights + the SpiRit tokenizer files in one folder."""
    import shutil

    from megatron_spirit.tokenizer.tokenizer import SpiritTokenizer

    tok = SpiritTokenizer(spirit_tokenizer_dir)
    out = tmp_path_factory.mktemp("hf") / "model"
    tiny_llama(tok.vocab.export_size).save_pretrained(out)
    for f in spirit_tokenizer_dir.iterdir():
        if f.is_file():
            shutil.copy(f, out / f.name)
    return out


@pytest.fixture(scope="session")
def speech_tokenizer(tmp_path_factory):
    """A tiny random HuBERT and a HuBERT k-means trained through spirit-units on a few espeak sentences."""
    from megatron_spirit.cli.units import main
    from megatron_spirit.speech.hubert import save_random_hubert, tiny_hubert_config
    from megatron_spirit.synth.espeak import write_corpus
    from megatron_spirit.synth.text import sentences

    root = tmp_path_factory.mktemp("speechtok")
    hubert = save_random_hubert(tiny_hubert_config(), root / "hubert")
    manifest = write_corpus(sentences(4, seed=5), root / "corpus")
    assert main(["train-hubert-kmeans", "--manifest", str(manifest), "--model", str(hubert), "--layer", "2",
                 "--k", "12", "--niter", "3", "--out", str(root / "km"), "--device", "cpu"]) == 0
    return hubert, root / "km"
