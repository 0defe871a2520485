"""Model configs in OpenCLIP's JSON schema, so an OpenCLIP model-config file loads as it is.

    {"embed_dim": 512, "quick_gelu": false,
     "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
     "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}}

`vision_cfg.layers` is an int for a ViT and a list of 4 block counts for a ModifiedResNet.
Missing fields take OpenCLIP's defaults (CLIPVisionCfg / CLIPTextCfg in open_clip/model.py).
Fields miniclip does not implement are accepted only at their default value; anything else
is a clear error rather than a silently different model.

A config may come from a checkpoint's metadata, so every value is checked before anything is
built (`check_config`): types and ranges (counts are integers >= 1, bools are bools), what the
towers need (image_size a multiple of patch_size, width a multiple of head_width or heads, 4 block
counts for a ResNet), at most MAX_LAYERS blocks per tower, and at most `max_parameters`
parameters, counted from the config alone (`parameter_count`, equal to create_model's count) so
that a config of 10^12 weights is refused instead of filling the memory. Errors are UserErrors
naming the source (file) and the field.
"""
import json
import math
import os
from pathlib import Path

from miniclip.errors import UserError

CONFIG_DIR = Path(__file__).parent / "configs"

VISION_DEFAULTS = dict(layers=12, width=768, head_width=64, mlp_ratio=4.0, patch_size=16, image_size=224)
TEXT_DEFAULTS = dict(context_length=77, vocab_size=49408, width=512, heads=8, layers=12, mlp_ratio=4.0)
TOP_DEFAULTS = dict(quick_gelu=False, init_logit_scale=None, init_logit_bias=None)

# OpenCLIP options that change the architecture, with the value miniclip implements.
UNSUPPORTED_VISION = dict(ls_init_value=None, patch_dropout=0.0, attentional_pool=False, no_ln_pre=False,
                          pos_embed_type="learnable", final_ln_after_pool=False, pool_type="tok",
                          output_tokens=False, act_kwargs=None, norm_kwargs=None, timm_model_name=None,
                          block_type=None, qk_norm=False, scaled_cosine_attn=False, scale_heads=False,
                          scale_attn_inner=False, scale_attn=False, scale_fc=False)
UNSUPPORTED_TEXT = dict(ls_init_value=None, hf_model_name=None, hf_tokenizer_name=None, pad_id=0,
                        no_causal_mask=False, pool_type="argmax", proj_bias=False, proj_type="linear",
                        embed_cls=False, output_tokens=False, act_kwargs=None, norm_kwargs=None,
                        block_type=None, qk_norm=False, scaled_cosine_attn=False, scale_heads=False,
                        scale_attn_inner=False, scale_attn=False, scale_fc=False, tokenizer_mode=None,
                        tokenizer_kwargs=None)
IGNORED_TOP = ("custom_text",)          # only selects OpenCLIP's class; the keys stay the same

# ViT-bigG-14, the largest OpenCLIP CLIP with public weights, has 2.54 billion parameters (10 GB in
# float32); callers that mean to build more pass a larger max_parameters.
MAX_PARAMETERS = 3_000_000_000
# Blocks per tower (OpenCLIP's deepest, ViT-bigG-14, has 48): each block is a few Python objects
# even at width 1, so 10^6 of them would take gigabytes with very few parameters.
MAX_LAYERS = 1000


def list_models():
    """Names of the built-in configs (ViT-B-32, RN50, ..., and the small CPU-sized ones)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_config(name_or_config, max_parameters=MAX_PARAMETERS):
    """A resolved, checked config dict from a built-in name, a JSON file path, or a dict."""
    if isinstance(name_or_config, dict):
        raw, source = name_or_config, "the given dict"
    elif (CONFIG_DIR / f"{name_or_config}.json").is_file():
        source = CONFIG_DIR / f"{name_or_config}.json"
        raw = read_json(source)
    elif os.path.isfile(str(name_or_config)):
        source = name_or_config
        raw = read_json(source)
    else:
        raise UserError(f"unknown model {name_or_config!r}: not a built-in config "
                        f"({', '.join(list_models())}) and not a JSON file")
    if isinstance(raw, dict):
        raw = raw.get("model_cfg", raw)             # open_clip_config.json wraps it in model_cfg
    return resolve(raw, source, max_parameters)


def read_json(path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as error:                     # not UTF-8, or not JSON (with line and column)
        raise UserError(f"{path}: not a JSON model config ({error})") from None


def resolve(raw, source="config", max_parameters=MAX_PARAMETERS):
    """Fill in defaults, refuse options miniclip does not implement, and check every value."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: a model config is a JSON object, got {type(raw).__name__}")
    config = dict(TOP_DEFAULTS)
    for key, value in raw.items():
        if key in ("vision_cfg", "text_cfg", "embed_dim") or key in TOP_DEFAULTS:
            config[key] = value
        elif key not in IGNORED_TOP:
            raise UserError(f"{source}: unknown or unsupported top-level field {key!r}")
    if "embed_dim" not in config:
        raise UserError(f"{source}: missing 'embed_dim'")
    config["vision_cfg"] = _section(raw.get("vision_cfg", {}), VISION_DEFAULTS, UNSUPPORTED_VISION,
                                    f"{source}: vision_cfg")
    config["text_cfg"] = _section(raw.get("text_cfg", {}), TEXT_DEFAULTS, UNSUPPORTED_TEXT,
                                  f"{source}: text_cfg")
    check_config(config, source, max_parameters)
    return config


def _section(raw, defaults, unsupported, where):
    if not isinstance(raw, dict):
        raise UserError(f"{where} must be a JSON object, got {type(raw).__name__}")
    section = dict(defaults)
    for key, value in raw.items():
        if key in defaults:
            section[key] = value
        elif key in unsupported:
            if value != unsupported[key]:
                raise UserError(f"{where}: {key}={value!r} is not supported by miniclip "
                                f"(only {unsupported[key]!r})")
        else:
            raise UserError(f"{where}: unknown field {key!r}")
    return section


def check_config(config, source="config", max_parameters=MAX_PARAMETERS):
    """Refuse (UserError naming `source` and the field) any value the towers cannot be built
    with, and a model of more than `max_parameters` parameters, before anything is allocated."""
    vision, text = config["vision_cfg"], config["text_cfg"]
    v, t = f"{source}: vision_cfg.", f"{source}: text_cfg."
    _integer(config["embed_dim"], f"{source}: embed_dim")
    if not isinstance(config["quick_gelu"], bool):
        raise UserError(f"{source}: quick_gelu must be true or false, got {config['quick_gelu']!r}")
    for key in ("init_logit_scale", "init_logit_bias"):
        if config[key] is not None and not _is_finite_number(config[key]):
            raise UserError(f"{source}: {key} must be a finite number or null, got {config[key]!r}")

    if isinstance(vision["layers"], (list, tuple)):               # a ModifiedResNet
        if len(vision["layers"]) != 4:
            raise UserError(f"{v}layers must be an integer (a ViT) or a list of 4 block counts "
                            f"(a ModifiedResNet), got {vision['layers']!r}")
        for stage, blocks in enumerate(vision["layers"]):
            _integer(blocks, f"{v}layers[{stage}]", high=MAX_LAYERS)
        width = _integer(vision["width"], v + "width", low=2)     # the stem starts with width // 2 channels
        head_width = _integer(vision["head_width"], v + "head_width")
        _require(32 * width % head_width == 0, f"{v}head_width {head_width} must divide the attention "
                 f"pool's width 32 * width = {32 * width}")
        image_size = _integer(vision["image_size"], v + "image_size", low=32)
        _require(image_size % 32 == 0, f"{v}image_size {image_size} must be a multiple of 32 "
                 f"(a ModifiedResNet downsamples by 32 before its attention pool)")
        if vision["patch_size"] is not None:                       # not used by a ResNet
            _integer(vision["patch_size"], v + "patch_size")
    else:
        _integer(vision["layers"], v + "layers", high=MAX_LAYERS)
        width = _integer(vision["width"], v + "width")
        head_width = _integer(vision["head_width"], v + "head_width")
        _require(width % head_width == 0, f"{v}width {width} must be a multiple of head_width {head_width}")
        patch_size = _integer(vision["patch_size"], v + "patch_size")
        image_size = _integer(vision["image_size"], v + "image_size")
        _require(image_size % patch_size == 0, f"{v}image_size {image_size} must be a multiple of "
                 f"patch_size {patch_size}")
    _mlp_ratio(vision["mlp_ratio"], width, v + "mlp_ratio")

    _integer(text["context_length"], t + "context_length")
    _integer(text["vocab_size"], t + "vocab_size")
    _integer(text["layers"], t + "layers", high=MAX_LAYERS)
    width, heads = _integer(text["width"], t + "width"), _integer(text["heads"], t + "heads")
    _require(width % heads == 0, f"{t}width {width} must be a multiple of heads {heads}")
    _mlp_ratio(text["mlp_ratio"], width, t + "mlp_ratio")

    count = parameter_count(config)
    _require(count <= max_parameters, f"{source}: this model has {count:,} parameters ({4 * count / 1e9:.1f} GB "
             f"in float32), more than the limit of {max_parameters:,}; pass a larger max_parameters "
             f"to build it anyway")


def _require(condition, message):
    if not condition:
        raise UserError(message)


def _integer(value, name, low=1, high=None):
    """`value`, which must be an int (not a bool or a float) in [low, high]."""
    in_range = type(value) is int and value >= low and (high is None or value <= high)
    _require(in_range, f"{name} must be an integer {f'from {low} to {high}' if high else f'>= {low}'}, "
             f"got {value!r}")
    return value


def _is_finite_number(value):
    return type(value) in (int, float) and math.isfinite(value)


def _mlp_ratio(value, width, name):
    """The MLP's hidden width is int(width * mlp_ratio): a positive number that makes it >= 1."""
    _require(_is_finite_number(value) and value > 0 and math.isfinite(width * value)
             and int(width * value) >= 1,
             f"{name} must be a number > 0 with int(width * mlp_ratio) >= 1 (width {width}), got {value!r}")


def parameter_count(config):
    """How many parameters create_model(config) has, from a checked config alone (nothing is
    built): the towers' parameters term by term (tests/models compare it with the real count)."""
    vision, text, embed_dim = config["vision_cfg"], config["text_cfg"], config["embed_dim"]
    if isinstance(vision["layers"], (list, tuple)):
        visual = _resnet_parameter_count(vision, embed_dim)
    else:
        width, patch = vision["width"], vision["patch_size"]
        grid = vision["image_size"] // patch
        visual = (3 * patch * patch * width                         # conv1 (no bias)
                  + width + (grid * grid + 1) * width               # class, positional embeddings
                  + 2 * 2 * width                                   # ln_pre, ln_post
                  + vision["layers"] * _block_parameter_count(width, vision["mlp_ratio"])
                  + width * embed_dim)                              # proj
    width = text["width"]
    textual = ((text["vocab_size"] + text["context_length"]) * width   # token, positional embeddings
               + text["layers"] * _block_parameter_count(width, text["mlp_ratio"])
               + 2 * width + width * embed_dim)                     # ln_final, text_projection
    logit = 1 + (config["init_logit_bias"] is not None)            # logit_scale (and logit_bias)
    return visual + textual + logit


def _block_parameter_count(width, mlp_ratio):
    """One ResidualAttentionBlock: two LayerNorms, attention (in_proj for q, k, v and out_proj,
    with biases), the MLP (c_fc, c_proj, with biases)."""
    hidden = int(width * mlp_ratio)
    return 2 * 2 * width + 4 * width * width + 4 * width + 2 * width * hidden + hidden + width


def _resnet_parameter_count(vision, embed_dim):
    """ModifiedResNet: the 3-conv stem, 4 stages of Bottlenecks, the attention pool."""
    width = vision["width"]

    def conv_bn(inputs, outputs, kernel):                        # a conv without bias, then a BatchNorm
        return inputs * outputs * kernel * kernel + 2 * outputs

    count = conv_bn(3, width // 2, 3) + conv_bn(width // 2, width // 2, 3) + conv_bn(width // 2, width, 3)
    inplanes = width
    for stage, blocks in enumerate(vision["layers"]):
        planes = width * 2 ** stage
        # Every stage's first block changes the width (or the stride): it has a downsample conv.
        count += conv_bn(inplanes, 4 * planes, 1)
        for _ in range(blocks):
            count += conv_bn(inplanes, planes, 1) + conv_bn(planes, planes, 3) + conv_bn(planes, 4 * planes, 1)
            inplanes = 4 * planes
    channels, grid = 32 * width, vision["image_size"] // 32
    return (count + (grid * grid + 1) * channels                  # attnpool's positional embedding
            + 3 * (channels * channels + channels)                 # q, k, v projections
            + channels * embed_dim + embed_dim)                    # c_proj
