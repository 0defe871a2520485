"""The CLIP model: towers, configs, and loading OpenCLIP weights.

    model = miniclip.create_model("ViT-B-32")                 # a built-in config, random init
    model = miniclip.create_model("my_config.json")           # an OpenCLIP model-config file
    model = miniclip.create_model("ViT-B-32", checkpoint="open_clip_model.safetensors")
    model = miniclip.create_model("ViT-B-32", pretrained="openai")   # OpenCLIP's tags (models/pretrained.py)
    miniclip.save_model("model.safetensors", model, tokenizer)   # weights + config + BPE merges
    model, tokenizer = miniclip.load_model("model.safetensors")   # everything needed to use it

Modules: config (OpenCLIP's JSON schema, checked), vit, modified_resnet and transformer (the
towers), clip (the two towers and the logit scale), factory (create, save, load), pretrained
(OpenCLIP's tags on the Hugging Face hub).
"""
from miniclip.models.clip import CLIP
from miniclip.models.config import list_models, load_config
from miniclip.models.factory import (TRAINING_STATE_PREFIX, check_same_architecture, checkpoint_config, create_model,
                                     load_checkpoint, load_model, load_tokenizer, load_weights, model_metadata,
                                     model_tensors, save_model)
from miniclip.models.modified_resnet import ModifiedResNet
from miniclip.models.vit import VisionTransformer

__all__ = ["CLIP", "VisionTransformer", "ModifiedResNet", "create_model", "load_checkpoint", "save_model", "load_model",
           "load_tokenizer",
           "list_models", "load_config"]
