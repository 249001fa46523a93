"""Fixtures of the data tests: tokenizer folders of both flavors."""
import pytest


@pytest.fixture(scope="session")
def tok_dir(spirit_tokenizer_dir):
    return str(spirit_tokenizer_dir)


@pytest.fixture(scope="session")
def base_tok_dir(tmp_path_factory, base_spm):
    from megatron_spirit.tokenizer.build import build_tokenizer

    return str(build_tokenizer(base_spm, tmp_path_factory.mktemp("tokb") / "spirit", "base"))
