"""Pretrained weights by name: OpenCLIP's tags ("openai", "laion2b_s34b_b79k", ...) to files.

    path = pretrained_file("ViT-B-32", "openai")     # the open_clip_model.safetensors of that tag
    model = miniclip.create_model("ViT-B-32", pretrained="openai")

What: for the architectures miniclip builds (RN50, ViT-B-32, ViT-B-16 and their -quickgelu
configs), the Hugging Face hub repositories where OpenCLIP keeps each tag's weights, as
open_clip/pretrained.py lists them (checked against it in tests/models/test_pretrained.py), and
whether the tag was trained with QuickGELU (the OpenAI ones, and ViT-B-32 on LAION-400M).
Why: loading OpenAI's or LAION's weights and classifying one's own photo is the first thing people
do with CLIP. OpenCLIP's hub repositories hold the weights as open_clip_model.safetensors, which
miniclip reads without torch (pickled .bin/.pt files it cannot read, on purpose).
How: the file is fetched with `huggingface_hub.hf_hub_download` (the optional extra
`pip install "miniclip[hub]"`), so it lands in the hub's standard cache (~/.cache/huggingface/hub,
or HF_HUB_CACHE / HF_HOME) and is shared with open_clip and every other hub user; with
HF_HUB_OFFLINE=1 only the cache is read. A tag can also be a path to a .safetensors file, which is
used as it is. Without the package, the network or a cached copy, the error says what to install
or which file to download and pass as a path.
"""
import os

from miniclip.errors import UserError

WEIGHTS_FILE = "open_clip_model.safetensors"

# {architecture: {tag: (hub repository, trained with QuickGELU)}}, from open_clip/pretrained.py.
PRETRAINED = {
    "RN50": {
        "openai": ("timm/resnet50_clip.openai", True),
        "yfcc15m": ("timm/resnet50_clip.yfcc15m", True),
        "cc12m": ("timm/resnet50_clip.cc12m", True),
    },
    "ViT-B-32": {
        "openai": ("timm/vit_base_patch32_clip_224.openai", True),
        "laion400m_e31": ("timm/vit_base_patch32_clip_224.laion400m_e31", True),
        "laion400m_e32": ("timm/vit_base_patch32_clip_224.laion400m_e32", True),
        "laion2b_e16": ("timm/vit_base_patch32_clip_224.laion2b_e16", False),
        "laion2b_s34b_b79k": ("laion/CLIP-ViT-B-32-laion2B-s34B-b79K", False),
        "datacomp_xl_s13b_b90k": ("laion/CLIP-ViT-B-32-DataComp.XL-s13B-b90K", False),
    },
    "ViT-B-16": {
        "openai": ("timm/vit_base_patch16_clip_224.openai", True),
        "laion400m_e31": ("timm/vit_base_patch16_clip_224.laion400m_e31", False),
        "laion400m_e32": ("timm/vit_base_patch16_clip_224.laion400m_e32", False),
        "laion2b_s34b_b88k": ("laion/CLIP-ViT-B-16-laion2B-s34B-b88K", False),
        "datacomp_xl_s13b_b90k": ("laion/CLIP-ViT-B-16-DataComp.XL-s13B-b90K", False),
    },
}


def architecture(model_name):
    """The PRETRAINED key of a built-in config name: "ViT-B-32-quickgelu" -> "ViT-B-32"."""
    return model_name[:-len("-quickgelu")] if model_name.endswith("-quickgelu") else model_name


def list_pretrained(model_name=None):
    """[(model, tag), ...] of every tag, or of one model's."""
    return [(model, tag) for model, tags in PRETRAINED.items() for tag in tags
            if model_name is None or model == architecture(model_name)]


def is_tag(model_name, pretrained):
    """Whether `pretrained` names a tag of `model_name` rather than a file."""
    return not os.path.isfile(pretrained) and pretrained in PRETRAINED.get(architecture(str(model_name)), {})


def tag_uses_quick_gelu(model_name, tag):
    return PRETRAINED[architecture(model_name)][tag][1]


def pretrained_file(model_name, pretrained):
    """The local path of `pretrained` (a tag of `model_name`, or a file), downloading it if needed."""
    if os.path.isfile(pretrained):
        return pretrained
    tags = PRETRAINED.get(architecture(str(model_name)), {})
    if pretrained not in tags:
        known = ", ".join(tags) if tags else f"none for {model_name!r} (tags exist for {', '.join(PRETRAINED)})"
        raise UserError(f"--pretrained {pretrained}: not a file and not a tag of {model_name}; its tags: {known}")
    repo = tags[pretrained][0]
    url = f"https://huggingface.co/{repo}/resolve/main/{WEIGHTS_FILE}"
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise UserError(f"--pretrained {pretrained} downloads {WEIGHTS_FILE} from the Hugging Face hub ({repo}), "
                        f"which needs the huggingface_hub package: pip install \"miniclip[hub]\"; or download "
                        f"{url} yourself and pass its path") from None
    try:
        return hf_hub_download(repo_id=repo, filename=WEIGHTS_FILE)
    except Exception as error:   # offline, no network, no such file: the hub's many error types
        raise UserError(f"--pretrained {pretrained}: cannot get {WEIGHTS_FILE} of {repo} from the Hugging Face "
                        f"hub or its cache ({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
                        f"download {url} and pass its path") from None
