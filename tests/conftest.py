"""Shared fixtures. Tests run single-threaded: on 2 busy cores, 2 torch threads were 50-100x slower."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

try:
    import torch  # noqa: E402

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass


@pytest.fixture(scope="session")
def base_spm(tmp_path_factory):
    """A small LLaMA-style BPE trained on generated text (round trips)."""
    from megatron_spirit.synth.text import sentences
    from megatron_spirit.tokenizer.sentencepiece_bpe import train_sentencepiece

    path = tmp_path_factory.mktemp("spm") / "base.model"
    return train_sentencepiece(sentences(3000, seed=1), path, vocab_size=600)


@pytest.fixture(scope="session")
def llama_sized_spm(tmp_path_factory):
    """A 32000-piece model with LLaMA-2's special ids, for the exact docs/spec.md §1 layout."""
    from megatron_spirit.synth.text import sentences
    from megatron_spirit.tokenizer.sentencepiece_bpe import train_sentencepiece

    path = tmp_path_factory.mktemp("spm32k") / "tokenizer.model"
    return train_sentencepiece(sentences(3000, seed=2), path, vocab_size=600, pad_to=32000)


@pytest.fixture(scope="session")
def spirit_tokenizer_dir(tmp_path_factory, base_spm):
    """An extended (expressive) tokenizer folder over the small BPE."""
    from megatron_spirit.tokenizer.build import build_tokenizer

    return build_tokenizer(base_spm, tmp_path_factory.mktemp("tok") / "spirit", "expressive")
