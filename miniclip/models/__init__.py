"""The CLIP model: towers, configs, and loading OpenCLIP weights.

    model = miniclip.create_model("ViT-B-32")                 # a built-in config, random init
    model = miniclip.create_model("my_config.json")           # an OpenCLIP model-config file
    model = miniclip.create_model("ViT-B-32", checkpoint="open_clip_model.safetensors")
"""
import json
import os

import numpy as np

from miniclip.checkpoint import load_safetensors
from miniclip.models.clip import CLIP
from miniclip.models.config import list_models, load_config, resolve
from miniclip.models.modified_resnet import ModifiedResNet
from miniclip.models.vit import VisionTransformer


def create_model(name_or_config, checkpoint=None):
    """Build a CLIP from a config name, JSON path or dict; load weights from `checkpoint` if given."""
    config = load_config(name_or_config)
    init_logit_scale = config["init_logit_scale"]
    model = CLIP(config["embed_dim"], config["vision_cfg"], config["text_cfg"],
                 quick_gelu=config["quick_gelu"],
                 init_logit_scale=float(np.log(1 / 0.07)) if init_logit_scale is None else init_logit_scale,
                 init_logit_bias=config["init_logit_bias"])
    model.config = config
    if checkpoint is not None:
        state_dict, checkpoint_config = load_checkpoint(checkpoint)
        if checkpoint_config is not None:
            check_same_architecture(config, checkpoint_config, checkpoint)
        model.load_state_dict(state_dict)
    return model


def load_checkpoint(path):
    """Read a .safetensors checkpoint without torch: (state_dict of NumPy arrays, config or None).

    The config comes from miniclip's own checkpoints (stored in the file's metadata) or, for
    OpenCLIP's open_clip_model.safetensors, from an open_clip_config.json in the same folder.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    state_dict, metadata = load_safetensors(path)
    config = None
    if "miniclip_config" in metadata:
        config = resolve(json.loads(metadata["miniclip_config"]), path)
    else:
        sibling = os.path.join(os.path.dirname(os.path.abspath(path)), "open_clip_config.json")
        if os.path.isfile(sibling):
            config = load_config(sibling)
    return state_dict, config


def check_same_architecture(config, checkpoint_config, path):
    """Refuse weights trained with a different activation or shape of model: loading QuickGELU
    weights into a GELU model gives wrong features with no other symptom."""
    if config["quick_gelu"] != checkpoint_config["quick_gelu"]:
        wanted = "QuickGELU" if checkpoint_config["quick_gelu"] else "GELU"
        raise ValueError(f"{path} was trained with {wanted} (quick_gelu={checkpoint_config['quick_gelu']}) "
                         f"but the model uses quick_gelu={config['quick_gelu']}; use the matching "
                         f"config (e.g. a '-quickgelu' one)")
    for section in ("vision_cfg", "text_cfg"):
        if config[section] != checkpoint_config[section]:
            raise ValueError(f"{path}: its {section} {checkpoint_config[section]} differs from the "
                             f"model's {config[section]}")


__all__ = ["CLIP", "VisionTransformer", "ModifiedResNet", "create_model", "load_checkpoint",
           "list_models", "load_config"]
