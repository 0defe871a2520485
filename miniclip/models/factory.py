"""Making models: build one from a config, read and write weights, and check they belong together.

    model = create_model("ViT-B-32")                                   # random init
    model = create_model("ViT-B-32", pretrained="openai")              # OpenCLIP's tags (pretrained.py)
    model = create_model("ViT-B-32", checkpoint="open_clip_model.safetensors")
    save_model("model.safetensors", model, tokenizer)                  # weights + config + BPE merges
    model, tokenizer = load_model("model.safetensors")                 # everything needed to use it

The weights are OpenCLIP's state dict (the same keys and shapes), read and written as safetensors
by miniclip/checkpoint.py; the config rides along in the file's metadata, checked (models/config.py)
before anything is built, so a file cannot make miniclip allocate what its header did not promise.
"""
import json
import os

import numpy as np

from miniclip.backend import to_numpy
from miniclip.checkpoint import load_safetensors, read_safetensors_metadata, save_safetensors
from miniclip.data.transforms import CLIP_MEAN, CLIP_STD
from miniclip.errors import UserError
from miniclip.models import pretrained as pretrained_weights
from miniclip.models.clip import CLIP
from miniclip.models.config import MAX_PARAMETERS, load_config, resolve
from miniclip.tensor import Tensor
from miniclip.tokenizer import Tokenizer


def create_model(name_or_config, checkpoint=None, pretrained=None, max_parameters=MAX_PARAMETERS):
    """Build a CLIP from a config name, JSON path or dict; load weights from `checkpoint` if given,
    or from `pretrained`: an OpenCLIP tag of a built-in config ("openai", "laion2b_s34b_b79k", ...),
    fetched from the Hugging Face hub or its cache (models/pretrained.py), or a file. A tag trained
    with QuickGELU gets it, whatever the config says. A config of more than `max_parameters`
    parameters is refused before anything is built."""
    config = load_config(name_or_config, max_parameters)
    if pretrained is not None:
        if checkpoint is not None:
            raise UserError("give create_model a checkpoint or pretrained weights, not both")
        if isinstance(name_or_config, str) and pretrained_weights.is_tag(name_or_config, pretrained):
            config["quick_gelu"] = pretrained_weights.tag_uses_quick_gelu(name_or_config, pretrained)
        checkpoint = pretrained_weights.pretrained_file(str(name_or_config), pretrained)
    init_logit_scale = config["init_logit_scale"]
    model = CLIP(config["embed_dim"], config["vision_cfg"], config["text_cfg"],
                 quick_gelu=config["quick_gelu"],
                 init_logit_scale=float(np.log(1 / 0.07)) if init_logit_scale is None else init_logit_scale,
                 init_logit_bias=config["init_logit_bias"])
    model.config = config
    # The pixel statistics its images are normalised with (OpenCLIP keeps them on model.visual too).
    model.visual.image_mean, model.visual.image_std = CLIP_MEAN, CLIP_STD
    if checkpoint is not None:
        state_dict, checkpoint_config = load_checkpoint(checkpoint, max_parameters)
        if checkpoint_config is not None:
            check_same_architecture(config, checkpoint_config, checkpoint)
        load_weights(model, state_dict, checkpoint)
    return model


def load_checkpoint(path, max_parameters=MAX_PARAMETERS):
    """Read a .safetensors checkpoint without torch: (state_dict of NumPy arrays, config or None).

    The config comes from miniclip's own checkpoints (stored in the file's metadata) or, for
    OpenCLIP's open_clip_model.safetensors, from an open_clip_config.json in the same folder.
    The file's header and its config are checked before any tensor is read (a UserError says
    what is wrong; miniclip/checkpoint.py and models/config.py list the checks).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    config = checkpoint_config(path, max_parameters)
    tensors, _ = load_safetensors(path)
    state_dict = {k: v for k, v in tensors.items() if not k.startswith(TRAINING_STATE_PREFIX)}
    return state_dict, config


def checkpoint_config(path, max_parameters=MAX_PARAMETERS):
    """The checked config of a checkpoint (its miniclip_config metadata, or an open_clip_config.json
    beside it), or None; reads only the file's header."""
    metadata = read_safetensors_metadata(path)
    if "miniclip_config" in metadata:
        source = f"{path} (its miniclip_config metadata)"
        try:
            raw = json.loads(metadata["miniclip_config"])
        except ValueError as error:
            raise UserError(f"{source}: not JSON ({error})") from None
        return resolve(raw, source, max_parameters)
    sibling = os.path.join(os.path.dirname(os.path.abspath(path)), "open_clip_config.json")
    if os.path.isfile(sibling):
        return load_config(sibling, max_parameters)
    return None


def non_finite_tensors(tensors):
    """The names of the floating-point arrays that hold a NaN or an infinity."""
    return [name for name, array in tensors.items()
            if np.asarray(array).dtype.kind == "f" and not np.isfinite(array).all()]


def load_weights(model, state_dict, path):
    """model.load_state_dict(state_dict), where a missing, unexpected or misshapen tensor, or one
    holding NaN or infinity (the weights of a run that diverged), is the checkpoint's fault: a
    UserError naming the file and the tensors. A model with non-finite weights still computes
    something, a wrong number with no other symptom."""
    not_finite = non_finite_tensors(state_dict)
    if not_finite:
        raise UserError(f"{path}: {len(not_finite)} tensors hold NaN or infinite values ({', '.join(not_finite[:3])}"
                        f"{', ...' if len(not_finite) > 3 else ''}): the weights of a run that diverged")
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:
        raise UserError(f"{path}: its tensors do not fit the model: {error}") from None


# miniclip's training checkpoints keep the optimizer's moments beside the weights, under this
# prefix (no OpenCLIP key starts with it); load_checkpoint leaves them out.
TRAINING_STATE_PREFIX = "optimizer."


def save_model(path, model, tokenizer=None):
    """Write the model's weights (OpenCLIP's key names), its config and, if given, the tokenizer's
    BPE merges into one safetensors file, so `load_model(path)` needs nothing else."""
    save_safetensors(path, model_tensors(model), model_metadata(model, tokenizer))


def model_tensors(model):
    """The state_dict as NumPy arrays, ready to be written."""
    return {k: to_numpy(v.data if isinstance(v, Tensor) else v) for k, v in model.state_dict().items()}


def model_metadata(model, tokenizer=None):
    """The config, the image statistics (and the tokenizer's merges) as safetensors string metadata."""
    metadata = {"miniclip_config": json.dumps(model.config),
                "miniclip_preprocess": json.dumps({"mean": list(model.visual.image_mean),
                                                   "std": list(model.visual.image_std)})}
    if tokenizer is not None:
        metadata["miniclip_bpe_merges"] = "\n".join(f"{a} {b}" for a, b in tokenizer.merges)
    return metadata


def load_model(path, max_parameters=MAX_PARAMETERS):
    """(model, tokenizer) from a file written by save_model; tokenizer is None if none was saved.
    For OpenCLIP's own files use create_model(config, checkpoint=path) and a Tokenizer."""
    state_dict, config = load_checkpoint(path, max_parameters)
    if config is None:
        raise UserError(f"{path} holds no model config (miniclip_config metadata, or an "
                        f"open_clip_config.json beside it); use create_model(config, checkpoint=path)")
    model = create_model(config, max_parameters=max_parameters)
    load_weights(model, state_dict, path)
    model.visual.image_mean, model.visual.image_std = image_statistics(path)
    return model, load_tokenizer(path, config["text_cfg"]["context_length"])


def image_statistics(path):
    """(mean, std) the model in `path` was trained to see its pixels normalised with: its
    miniclip_preprocess metadata (python -m miniclip.train --image-mean/--image-std), else CLIP's."""
    metadata = read_safetensors_metadata(path)
    if "miniclip_preprocess" not in metadata:
        return CLIP_MEAN, CLIP_STD
    try:
        saved = json.loads(metadata["miniclip_preprocess"])
        mean, std = tuple(float(v) for v in saved["mean"]), tuple(float(v) for v in saved["std"])
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{path}: its miniclip_preprocess metadata is not {{\"mean\": [3 numbers], "
                        f"\"std\": [3 numbers]}}") from None
    if len(mean) != 3 or len(std) != 3 or not all(np.isfinite(mean + std)) or min(std) <= 0:
        raise UserError(f"{path}: its image statistics are not 3 finite means and 3 positive stds: {saved}")
    return mean, std


def load_tokenizer(path, context_length):
    """The Tokenizer saved in a miniclip model file's metadata, or None if it holds none."""
    metadata = read_safetensors_metadata(path)
    if "miniclip_bpe_merges" not in metadata:
        return None
    merges = [tuple(line.split(" ")) for line in metadata["miniclip_bpe_merges"].split("\n") if line]
    for number, merge in enumerate(merges, 1):
        if len(merge) != 2 or not all(merge):
            raise UserError(f"{path}: line {number} of its miniclip_bpe_merges metadata is not a merge "
                            f"(two tokens and one space): {' '.join(merge)[:80]!r}")
    return Tokenizer(merges=merges, context_length=context_length)


def check_same_architecture(config, checkpoint_config, path):
    """Refuse weights trained with a different activation or shape of model: loading QuickGELU
    weights into a GELU model gives wrong features with no other symptom."""
    if config["quick_gelu"] != checkpoint_config["quick_gelu"]:
        wanted = "QuickGELU" if checkpoint_config["quick_gelu"] else "GELU"
        raise UserError(f"{path} was trained with {wanted} (quick_gelu={checkpoint_config['quick_gelu']}) "
                        f"but the model uses quick_gelu={config['quick_gelu']}; use the matching "
                        f"config (e.g. a '-quickgelu' one)")
    for section in ("vision_cfg", "text_cfg"):
        if config[section] != checkpoint_config[section]:
            raise UserError(f"{path}: its {section} {checkpoint_config[section]} differs from the "
                            f"model's {config[section]}")
