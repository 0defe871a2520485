"""python -m miniclip.export CHECKPOINT OUT_DIR: a miniclip model as an OpenCLIP model folder.

    python -m miniclip.export logs/my_run/checkpoints/epoch_5.safetensors exported/
    # then, in PyTorch:  model = open_clip.create_model("local-dir:exported")

What: OUT_DIR gets the layout of an OpenCLIP model on the Hugging Face hub, which open_clip reads
with `create_model("local-dir:OUT_DIR")` (and from the hub as "hf-hub:user/repo" once uploaded):
    open_clip_config.json         {"model_cfg": the model config, "preprocess_cfg": image size,
                                  mean, std, interpolation, resize mode: miniclip's transforms}
    open_clip_model.safetensors   the weights alone, under OpenCLIP's key names
    bpe_merges.txt.gz             only for a model trained on a vocabulary miniclip learned from
                                  its captions (python -m miniclip.train without --tokenizer); open_clip
                                  reads it with open_clip.tokenizer.SimpleTokenizer(bpe_path=...,
                                  context_length=...), and its ids are miniclip's.
Why: a model trained with miniclip should be usable where CLIP models are used, without miniclip.
A training checkpoint is a model file plus the optimizer's moments and the run's metadata;
open_clip loads strictly and would refuse the extra keys, so they are left out here.
How: the weights and config come from miniclip.load_checkpoint (which drops the optimizer's
tensors); config fields that are None (OpenCLIP's "use the default") are left out, because
open_clip passes model_cfg on as keyword arguments. Checked by tests/test_export.py: open_clip
loads the folder strictly and gives the same features (oracle).
"""
import argparse
import gzip
import json
import os
import sys

from miniclip.checkpoint import atomic_write, save_safetensors
from miniclip.data.transforms import CLIP_MEAN, CLIP_STD
from miniclip.errors import UserError, exit_on_user_error
from miniclip.models import load_checkpoint, load_tokenizer
from miniclip.models.factory import image_statistics
from miniclip.tokenizer import Tokenizer
from miniclip.tokenizer.merges_file import HEADER

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
MERGES_FILE = "bpe_merges.txt.gz"


def openclip_config(config, mean=CLIP_MEAN, std=CLIP_STD):
    """The contents of open_clip_config.json for a resolved miniclip model config and the image
    statistics it was trained with."""
    model_cfg = {key: value for key, value in config.items() if value is not None}
    preprocess_cfg = {"size": config["vision_cfg"]["image_size"], "mode": "RGB", "mean": list(mean),
                      "std": list(std), "interpolation": "bicubic", "resize_mode": "shortest"}
    return {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}


def export(checkpoint, out_dir):
    """Write the OpenCLIP folder for `checkpoint` into `out_dir` (new or empty); return the files written."""
    if not os.path.isfile(checkpoint):
        raise UserError(f"{checkpoint}: no such file")
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise UserError(f"{out_dir} exists and is not an empty folder: export into a new one")
    state_dict, config = load_checkpoint(checkpoint)
    if config is None:
        raise UserError(f"{checkpoint} holds no model config: it is not a miniclip model file")
    os.makedirs(out_dir, exist_ok=True)
    written = [os.path.join(out_dir, CONFIG_FILE), os.path.join(out_dir, WEIGHTS_FILE)]
    atomic_write(written[0], [json.dumps(openclip_config(config, *image_statistics(checkpoint)), indent=2).encode()])
    save_safetensors(written[1], state_dict, {"format": "pt"})   # "pt": safetensors' PyTorch tag
    tokenizer = load_tokenizer(checkpoint, config["text_cfg"]["context_length"])
    if tokenizer is not None and tokenizer.merges != Tokenizer().merges[:len(tokenizer.merges)]:
        written.append(os.path.join(out_dir, MERGES_FILE))
        write_openclip_merges(written[-1], tokenizer.merges)
    return written


def write_openclip_merges(path, merges):
    """The merges file as open_clip's SimpleTokenizer reads it: gzip-compressed, and no newline
    after the last merge (it splits the text on newlines and would read the empty string after a
    final one as one more merge: one more token, so <start_of_text> and <end_of_text> would move)."""
    text = "\n".join([HEADER] + [f"{first} {second}" for first, second in merges])
    atomic_write(path, [gzip.compress(text.encode("utf-8"), mtime=0)])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m miniclip.export",
                                     description="Write a miniclip model (a training checkpoint too) as an "
                                                 "OpenCLIP model folder: open_clip.create_model('local-dir:OUT_DIR').")
    parser.add_argument("checkpoint", help="a miniclip .safetensors model or training checkpoint")
    parser.add_argument("out_dir", help="the folder to write (new or empty)")
    args = parser.parse_args(argv)
    written = exit_on_user_error(parser.prog, export, args.checkpoint, args.out_dir)
    print("wrote " + ", ".join(written))
    if written[-1].endswith(MERGES_FILE):
        print(f"its vocabulary is miniclip's own: in open_clip use SimpleTokenizer(bpe_path={written[-1]!r}, "
              f"context_length=...) rather than get_tokenizer")
    return 0


if __name__ == "__main__":
    sys.exit(main())
