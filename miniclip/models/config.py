"""Model configs in OpenCLIP's JSON schema, so an OpenCLIP model-config file loads as it is.

    {"embed_dim": 512, "quick_gelu": false,
     "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
     "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}}

`vision_cfg.layers` is an int for a ViT and a list of 4 block counts for a ModifiedResNet.
Missing fields take OpenCLIP's defaults (CLIPVisionCfg / CLIPTextCfg in open_clip/model.py).
Fields miniclip does not implement are accepted only at their default value; anything else
is a clear error rather than a silently different model.
"""
import json
import os
from pathlib import Path

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


def list_models():
    """Names of the built-in configs (ViT-B-32, RN50, ..., and the small CPU-sized ones)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_config(name_or_config):
    """A resolved config dict from a built-in name, a JSON file path, or a dict."""
    if isinstance(name_or_config, dict):
        raw, source = name_or_config, "the given dict"
    elif (CONFIG_DIR / f"{name_or_config}.json").is_file():
        source = CONFIG_DIR / f"{name_or_config}.json"
        raw = json.loads(source.read_text())
    elif os.path.isfile(str(name_or_config)):
        source = name_or_config
        raw = json.loads(Path(name_or_config).read_text())
    else:
        raise ValueError(f"unknown model {name_or_config!r}: not a built-in config "
                         f"({', '.join(list_models())}) and not a JSON file")
    raw = raw.get("model_cfg", raw)                 # open_clip_config.json wraps it in model_cfg
    return resolve(raw, source)


def resolve(raw, source="config"):
    """Fill in defaults and refuse options miniclip does not implement."""
    config = dict(TOP_DEFAULTS)
    for key, value in raw.items():
        if key in ("vision_cfg", "text_cfg", "embed_dim") or key in TOP_DEFAULTS:
            config[key] = value
        elif key not in IGNORED_TOP:
            raise ValueError(f"{source}: unknown or unsupported top-level field {key!r}")
    if "embed_dim" not in config:
        raise ValueError(f"{source}: missing 'embed_dim'")
    config["vision_cfg"] = _section(raw.get("vision_cfg", {}), VISION_DEFAULTS, UNSUPPORTED_VISION,
                                    f"{source}: vision_cfg")
    config["text_cfg"] = _section(raw.get("text_cfg", {}), TEXT_DEFAULTS, UNSUPPORTED_TEXT,
                                  f"{source}: text_cfg")
    return config


def _section(raw, defaults, unsupported, where):
    section = dict(defaults)
    for key, value in raw.items():
        if key in defaults:
            section[key] = value
        elif key in unsupported:
            if value != unsupported[key]:
                raise ValueError(f"{where}: {key}={value!r} is not supported by miniclip "
                                 f"(only {unsupported[key]!r})")
        else:
            raise ValueError(f"{where}: unknown field {key!r}")
    return section
