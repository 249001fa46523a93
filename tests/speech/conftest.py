"""Speech fixtures: a tiny random HuBERT saved to disk, a handful of espeak-ng utterances, trained quantizers."""
import pytest


@pytest.fixture(scope="session")
def tiny_hubert_dir(tmp_path_factory):
    """A 2-layer random HubertModel with the 25 Hz conv stack (stride 640) and HuBERT-base's GroupNorm."""
    from megatron_spirit.speech.hubert import save_random_hubert, tiny_hubert_config

    return save_random_hubert(tiny_hubert_config(), tmp_path_factory.mktemp("hubert") / "tiny")


@pytest.fixture(scope="session")
def espeak_corpus(tmp_path_factory):
    """Eight short sentences spoken by espeak-ng voices, with a manifest holding word alignments."""
    from megatron_spirit.synth.espeak import write_corpus
    from megatron_spirit.synth.text import sentences

    return write_corpus(sentences(8, seed=3), tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def trained_units(tmp_path_factory, espeak_corpus, tiny_hubert_dir):
    """HuBERT k-means, style k-means and pitch VQ-VAE trained through the CLI on the espeak corpus."""
    from megatron_spirit.cli.units import main

    out = tmp_path_factory.mktemp("quantizers")
    m, h = str(espeak_corpus), str(tiny_hubert_dir)
    assert main(["train-hubert-kmeans", "--manifest", m, "--model", h, "--layer", "2", "--k", "16",
                 "--niter", "5", "--out", str(out / "km"), "--device", "cpu"]) == 0
    assert main(["train-style", "--manifest", m, "--model", h, "--layer", "1", "--k", "4", "--niter", "5",
                 "--out", str(out / "style"), "--device", "cpu"]) == 0
    assert main(["train-pitch", "--manifest", m, "--method", "acf", "--steps", "60", "--batch-size", "8",
                 "--channels", "16", "--code-dim", "8", "--segment", "128", "--heldout", "2",
                 "--out", str(out / "pitch"), "--device", "cpu"]) == 0
    return out

