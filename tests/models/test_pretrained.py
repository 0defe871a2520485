"""Pretrained weights by tag (miniclip/models/pretrained.py), from a hub cache laid out as the hub
lays it out: nothing is downloaded."""
import os
import subprocess
import sys

import pytest

from miniclip.errors import UserError
from miniclip.models import pretrained

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(root, repo, content=b"weights"):
    """HF_HUB_CACHE/models--org--name/{refs/main, snapshots/<commit>/open_clip_model.safetensors}."""
    folder = root / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(COMMIT)
    (folder / "snapshots" / COMMIT).mkdir(parents=True)
    path = folder / "snapshots" / COMMIT / pretrained.WEIGHTS_FILE
    path.write_bytes(content)
    return path


def resolve_in_subprocess(cache, model, tag, block_hub=False):
    """pretrained_file(model, tag) with HF_HUB_OFFLINE=1 and this cache (the hub reads both at import)."""
    code = ("import sys\n"
            + ("sys.modules['huggingface_hub'] = None\n" if block_hub else "")
            + "from miniclip.errors import UserError\nfrom miniclip.models.pretrained import pretrained_file\n"
            f"try:\n    print(pretrained_file({model!r}, {tag!r}))\nexcept UserError as e:\n    print('UserError:', e)\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(cache.parent / "hf_home"))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_a_tag_resolves_to_the_cached_file(tmp_path):
    pytest.importorskip("huggingface_hub")
    expected = hub_cache(tmp_path / "hub", "timm/vit_base_patch32_clip_224.openai")
    assert resolve_in_subprocess(tmp_path / "hub", "ViT-B-32", "openai") == str(expected)
    assert resolve_in_subprocess(tmp_path / "hub", "ViT-B-32-quickgelu", "openai") == str(expected)


def test_offline_without_a_cached_copy_says_which_file_to_download(tmp_path):
    pytest.importorskip("huggingface_hub")
    (tmp_path / "hub").mkdir()
    message = resolve_in_subprocess(tmp_path / "hub", "RN50", "openai")
    assert message.startswith("UserError:")
    assert "https://huggingface.co/timm/resnet50_clip.openai/resolve/main/open_clip_model.safetensors" in message


def test_without_huggingface_hub_the_message_says_what_to_install(tmp_path):
    message = resolve_in_subprocess(tmp_path, "ViT-B-16", "laion2b_s34b_b88k", block_hub=True)
    assert 'pip install "miniclip[hub]"' in message and "laion/CLIP-ViT-B-16-laion2B-s34B-b88K" in message


def test_a_file_is_used_as_it_is_and_an_unknown_tag_lists_the_known_ones(tmp_path):
    (tmp_path / "mine.safetensors").write_bytes(b"x")
    assert pretrained.pretrained_file("ViT-B-32", str(tmp_path / "mine.safetensors")) == str(tmp_path / "mine.safetensors")
    with pytest.raises(UserError, match="not a file and not a tag of ViT-B-32; its tags: openai, laion400m_e31"):
        pretrained.pretrained_file("ViT-B-32", "opneai")
    with pytest.raises(UserError, match="none for 'tiny-vit-s'"):
        pretrained.pretrained_file("tiny-vit-s", "openai")


@pytest.mark.oracle
def test_the_tags_are_open_clips(open_clip):
    for model, tag in pretrained.list_pretrained():
        theirs = open_clip.pretrained.get_pretrained_cfg(model, tag)
        repo, quick_gelu = pretrained.PRETRAINED[model][tag]
        assert theirs["hf_hub"].rstrip("/") == repo, (model, tag)
        assert bool(theirs.get("quick_gelu", False)) == quick_gelu, (model, tag)


def test_create_model_loads_a_tag_from_the_hub_cache_with_the_tags_activation(tmp_path):
    pytest.importorskip("huggingface_hub")
    import numpy as np
    import miniclip
    from miniclip.checkpoint import save_safetensors
    from miniclip.models import model_tensors
    # A small stand-in for a tag's weights: register "tiny-vit-xs" tags for this test's process.
    source = miniclip.create_model("tiny-vit-xs")
    weights = hub_cache(tmp_path / "hub", "example/tiny-quickgelu")
    save_safetensors(str(weights), model_tensors(source))
    code = ("import numpy as np, miniclip\nfrom miniclip.models import pretrained\n"
            "pretrained.PRETRAINED['tiny-vit-xs'] = {'example': ('example/tiny-quickgelu', True)}\n"
            "model = miniclip.create_model('tiny-vit-xs', pretrained='example')\n"
            "print(model.config['quick_gelu'], float(np.abs(model.visual.conv1.weight.data).sum()))\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"), HF_HOME=str(tmp_path / "hf_home"))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    quick_gelu, weight_sum = result.stdout.split()
    assert quick_gelu == "True"
    assert float(weight_sum) == pytest.approx(float(np.abs(source.visual.conv1.weight.data).sum()), rel=1e-6)
