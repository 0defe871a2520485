"""Fixtures for the tokenizer tests: OpenCLIP's tokenizer and ours on OpenAI's vocabulary, and the
`regex` and `ftfy` modules (open_clip's dependencies, used here only as oracles)."""
import pytest


@pytest.fixture(scope="session")
def openai_bpe_path(open_clip):
    return open_clip.tokenizer.default_bpe()


@pytest.fixture(scope="session")
def reference(open_clip):
    """OpenCLIP's tokenizer for CLIP ViT-B/32: the one our ids must equal."""
    return open_clip.get_tokenizer("ViT-B-32")


@pytest.fixture(scope="session")
def tokenizer(openai_bpe_path):
    from miniclip.tokenizer import Tokenizer
    return Tokenizer(openai_bpe_path)


@pytest.fixture(scope="session")
def regex(open_clip):
    import regex
    return regex


@pytest.fixture(scope="session")
def ftfy(open_clip):
    import ftfy
    return ftfy
