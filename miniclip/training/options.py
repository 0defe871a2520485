"""The flags of `python -m miniclip.train`: OpenCLIP's names and meanings where OpenCLIP has them.

With no flags at all the command trains the small default model on the built-in shapes dataset
on the CPU in a few minutes. `check(args)` refuses a value outside a flag's range (a UserError
naming the flag); `resolve(args)` fills the defaults that depend on other flags (the
run name, the warmup), so the run folder's config.json records every value that was used.
"""
import argparse
import math
import os
import time

from miniclip.errors import UserError
from miniclip.models.config import MAX_PARAMETERS

SCHEDULERS = ("cosine", "const", "const-cooldown")
REPORT_TO = ("tensorboard",)   # --report-to writers miniclip has (metrics.jsonl is always written)
# --precision (OpenCLIP's names) -> the 16-bit dtype of the matmuls (miniclip/amp.py), None: float32
PRECISIONS = {"fp32": None, "amp": "float16", "amp_bf16": "bfloat16", "amp_bfloat16": "bfloat16"}


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m miniclip.train",
        description="Train a CLIP (or SigLIP) model with miniclip. With no arguments: a small model "
                    "on the built-in shapes dataset, on the CPU, in a few minutes.")
    data = p.add_argument_group("data")
    data.add_argument("--dataset", choices=("shapes", "fashion-mnist"), default="shapes",
                      help="built-in data when --train-data is not given (default: shapes)")
    data.add_argument("--train-data", help="a CSV/TSV file (OpenCLIP's format) or a folder of "
                                           "name.jpg + name.txt pairs")
    data.add_argument("--val-data", help="the same kinds, for validation loss and retrieval")
    data.add_argument("--dataset-type", choices=("auto", "csv", "folder"), default="auto",
                      help="how to read --train-data/--val-data (auto: a file is CSV, a folder is pairs)")
    data.add_argument("--zeroshot-data", help="a class-per-folder image tree to classify zero-shot "
                                              "(class names from the folder names)")
    data.add_argument("--csv-separator", default="\t", help="column separator of CSV files (default: tab)")
    data.add_argument("--csv-img-key", default="filepath", help="image-path column (default: filepath)")
    data.add_argument("--csv-caption-key", default="title", help="caption column (default: title)")
    data.add_argument("--csv-class-key", help="a class column: captions of the same class are positives "
                                              "of the multi-positive loss (default: none)")
    data.add_argument("--train-num-samples", type=int,
                      help="samples per epoch: the size of the generated shapes dataset, or the first N "
                           "samples of other data (default: 15360 of the built-in datasets, all of --train-data)")
    data.add_argument("--val-num-samples", type=int, default=512,
                      help="validation pairs of the built-in datasets (default: 512)")
    data.add_argument("--zeroshot-num-samples", type=int, default=360,
                      help="images per built-in zero-shot set, and hard-negative scenes (default: 360)")
    data.add_argument("--workers", type=int, default=2,
                      help="threads preparing batches (default: 2; OpenCLIP's default: 4 processes)")
    data.add_argument("--skip-bad-samples", action="store_true",
                      help="skip (and count) unreadable images or empty captions instead of stopping")
    data.add_argument("--tokenizer", help="a BPE merges file (e.g. OpenAI's bpe_simple_vocab_16e6.txt.gz); "
                                          "default: learn a vocabulary from the training captions")
    data.add_argument("--vocab-size", type=int, default=1024,
                      help="size of the vocabulary learned from the captions (default: 1024, "
                           "fewer if the captions have fewer merges)")
    data.add_argument("--image-mean", type=float, nargs=3, metavar=("R", "G", "B"),
                      help="the per-channel mean that the train and eval transforms subtract (default: "
                           "CLIP's, 0.481 0.458 0.408)")
    data.add_argument("--image-std", type=float, nargs=3, metavar=("R", "G", "B"),
                      help="the per-channel standard deviation they divide by (default: CLIP's, "
                           "0.269 0.261 0.276)")

    model = p.add_argument_group("model")
    model.add_argument("--model", default="tiny-rn-xs",
                       help="a built-in config name or an OpenCLIP model-config JSON (default: tiny-rn-xs; "
                            "OpenCLIP's default: RN50)")
    model.add_argument("--pretrained", metavar="TAG_OR_FILE",
                       help="start from these weights: an OpenCLIP tag of --model (openai, laion2b_s34b_b79k, "
                            "...: downloaded from the Hugging Face hub, needs miniclip[hub]; the tag's "
                            "QuickGELU setting is applied) or a .safetensors file")
    model.add_argument("--force-quick-gelu", action="store_true",
                       help="QuickGELU in the towers whatever the config (and the tag) say")
    model.add_argument("--max-parameters", type=int, default=MAX_PARAMETERS,
                       help=f"refuse a model with more parameters, before building it (default: {MAX_PARAMETERS:,})")
    model.add_argument("--grad-checkpointing", action="store_true",
                       help="keep no activations inside the transformer blocks: recompute each block's "
                            "forward during backward (less memory, about one more forward of time)")
    model.add_argument("--siglip", action="store_true",
                       help="the sigmoid loss; logit scale starts at ln 10 and the bias at -10")
    model.add_argument("--lock-image", action="store_true", help="freeze the image tower")
    model.add_argument("--lock-text", action="store_true", help="freeze the text tower")

    opt = p.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=int, default=5, help="(default: 5; OpenCLIP's default: 32)")
    opt.add_argument("--max-steps", type=int,
                     help="stop after this many optimizer steps (the schedule is planned for them)")
    opt.add_argument("--batch-size", type=int, default=64, help="pairs per step and process (default: 64)")
    opt.add_argument("--accum-freq", type=int, default=1,
                     help="micro-batches per step; the loss still sees all of their negatives")
    opt.add_argument("--lr", type=float, default=3e-3, help="(default: 3e-3; OpenCLIP's default: 5e-4)")
    opt.add_argument("--wd", type=float, default=0.1, help="weight decay, not on gains, biases, logit_scale "
                                                          "(default: 0.1; OpenCLIP's default: 0.2)")
    opt.add_argument("--beta1", type=float, default=0.9, help="(default: 0.9)")
    opt.add_argument("--beta2", type=float, default=0.98,
                     help="(default: 0.98; OpenCLIP's default: 0.98 for a ViT, 0.999 otherwise)")
    opt.add_argument("--eps", type=float, default=1e-6,
                     help="(default: 1e-6; OpenCLIP's default: 1e-6 for a ViT, 1e-8 otherwise)")
    opt.add_argument("--warmup", type=int, help="warmup steps (default: 10%% of the steps; OpenCLIP's default: 10000)")
    opt.add_argument("--lr-scheduler", choices=SCHEDULERS, default="cosine",
                     help="cosine: warmup, then half a cosine to 0; const: warmup, then --lr; const-cooldown: "
                          "const, then a decay to --lr-cooldown-end over the last --epochs-cooldown epochs "
                          "(default: cosine)")
    opt.add_argument("--epochs-cooldown", type=int,
                     help="const-cooldown: the cooldown's length in epochs, at the end of the run")
    opt.add_argument("--lr-cooldown-power", type=float,
                     help="const-cooldown: lr falls as (1 - e/E)^power over the cooldown (default: 1, linear)")
    opt.add_argument("--lr-cooldown-end", type=float, help="const-cooldown: the lr it ends at (default: 0)")
    opt.add_argument("--grad-clip-norm", type=float, help="clip the global gradient norm to this")
    opt.add_argument("--no-multi-positive", action="store_true",
                     help="the one-hot contrastive loss even when a batch repeats a caption or a class "
                          "(default: such pairs are positives too, miniclip/losses.py)")
    opt.add_argument("--no-hard-negatives", action="store_true",
                     help="no extra false captions in the loss (default on the shapes data: each caption's "
                          "colours, shapes or relation swapped, NegCLIP; CLIP loss, --accum-freq 1, one process)")
    opt.add_argument("--seed", type=int, default=0)
    opt.add_argument("--precision", choices=tuple(PRECISIONS), default="fp32",
                     help="amp: float16 matmuls with loss scaling; amp_bf16: bfloat16 matmuls, emulated (neither "
                          "NumPy nor CuPy has a bfloat16 dtype: float32 arrays rounded to bfloat16, so its "
                          "numerics at float32's speed); weights, norms, softmax and loss stay float32 "
                          "(miniclip/amp.py) (default: fp32; OpenCLIP's default: amp)")
    opt.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                     help="auto: the GPU when CuPy sees one, else the CPU")

    dist = p.add_argument_group("data-parallel training (see miniclip/distributed.py)")
    dist.add_argument("--distributed", action="store_true",
                      help="one rank of a data-parallel job started by mpirun: mpirun -n N python -m "
                           "miniclip.train --distributed ... (--batch-size is per rank; the global "
                           "batch is N x --batch-size)")
    dist.add_argument("--local-loss", action="store_true",
                      help="each rank scores its own rows against the whole global batch (B x N*B "
                           "logits) instead of all N*B x N*B; needs --gather-with-grad (default: off)")
    dist.add_argument("--gather-with-grad", action="store_true",
                      help="the gradient flows back through the all-gather of the features, so each "
                           "rank gets the global batch's gradient (default: off, as in OpenCLIP: then "
                           "the towers get 1/N of it)")

    run = p.add_argument_group("run folder, checkpoints, evaluation")
    run.add_argument("--logs", default="./logs", help="where run folders go (default: ./logs)")
    run.add_argument("--name", help="the run folder's name (default: date, model, lr, batch size); a folder "
                                    "that already holds a run is only continued, with --resume")
    run.add_argument("--resume", help="a checkpoint to continue from, or 'latest' (needs --name; starts "
                                      "from step 0 if the run saved no checkpoint yet)")
    run.add_argument("--save-frequency", type=int, default=1, help="save a checkpoint every N epochs")
    run.add_argument("--save-most-recent", action="store_true",
                     help="also keep the newest state in checkpoints/epoch_latest.safetensors, overwritten "
                          "at every epoch's end and every other save")
    run.add_argument("--delete-previous-checkpoint", action="store_true",
                     help="after saving a checkpoint, delete the one this run saved (or resumed from) before it")
    run.add_argument("--zeroshot-frequency", type=int, default=1,
                     help="zero-shot evaluation every N epochs (default: 1; OpenCLIP's default: 2)")
    run.add_argument("--val-frequency", type=int, default=1, help="validation every N epochs")
    run.add_argument("--log-every-n-steps", type=int, default=1,
                     help="log the first step of every N of each epoch, and its last step, as OpenCLIP does "
                          "(default: 1; OpenCLIP's default: 100)")
    run.add_argument("--report-to", default="",
                     help="also write the metrics for tensorboard: event files in <run folder>/tensorboard "
                          "(metrics.jsonl is always written; OpenCLIP's wandb is not supported)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. in log files)")
    return p


def parse_args(argv=None):
    args = build_parser().parse_args(argv)
    check(args)
    return resolve(args)


# The range of every numeric flag; floats must also be finite numbers (not nan or inf).
COUNTS = ("batch_size", "accum_freq", "epochs", "max_steps", "train_num_samples", "val_num_samples",
          "zeroshot_num_samples", "save_frequency", "zeroshot_frequency", "val_frequency",
          "log_every_n_steps", "epochs_cooldown", "max_parameters")   # integers >= 1 (None: the default)
POSITIVE = ("lr", "eps", "grad_clip_norm", "lr_cooldown_power")       # > 0 (None: the default)
NON_NEGATIVE = ("wd", "warmup", "workers", "seed", "lr_cooldown_end")   # >= 0 (None: the default)
FRACTIONS = ("beta1", "beta2")                              # 0 <= beta < 1: AdamW's moving averages
# A learned vocabulary counts 256 byte tokens, 256 byte tokens ending a word, the merges and
# 2 special tokens (miniclip/tokenizer).
MIN_VOCAB_SIZE = 514


def check(args):
    """Refuse values and combinations that cannot work: a UserError naming the flag
    (`python -m miniclip.train` prints it and exits with code 2)."""
    for key in COUNTS + POSITIVE + NON_NEGATIVE + FRACTIONS:
        value = getattr(args, key)
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if key in COUNTS and value < 1:
            raise UserError(f"{flag} must be at least 1, got {value}")
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{flag} must be a finite number, got {value}")
        if key in POSITIVE and not value > 0:
            raise UserError(f"{flag} must be greater than 0, got {value}")
        if key in NON_NEGATIVE and value < 0:
            raise UserError(f"{flag} must be at least 0, got {value}")
        if key in FRACTIONS and not 0 <= value < 1:
            raise UserError(f"{flag} must be at least 0 and less than 1, got {value}")
    if args.vocab_size < MIN_VOCAB_SIZE:
        raise UserError(f"--vocab-size must be at least {MIN_VOCAB_SIZE} (256 byte tokens, 256 more that end a "
                        f"word, 2 special tokens), got {args.vocab_size}")
    if args.resume == "latest" and args.name is None:
        raise UserError("--resume latest needs --name: the run folder whose latest checkpoint to load")
    if (args.local_loss or args.gather_with_grad) and not args.distributed:
        raise UserError("--local-loss and --gather-with-grad are for data-parallel runs: add --distributed "
                        "(and start the ranks with mpirun)")
    if args.local_loss and not args.gather_with_grad:
        raise UserError("--local-loss needs --gather-with-grad: without it the gradient of each rank's "
                        "features as negatives in the other ranks' rows is lost")
    if args.lock_image and args.lock_text:
        raise UserError("--lock-image and --lock-text together leave nothing to train")
    for key, positive in (("image_mean", False), ("image_std", True)):
        values = getattr(args, key) or ()
        if not all(math.isfinite(v) for v in values) or (positive and min(values, default=1) <= 0):
            raise UserError(f"--{key.replace('_', '-')} must be 3 finite numbers{', each above 0' if positive else ''}, "
                            f"got {' '.join(map(str, values))}")
    cooldown = [f"--{key.replace('_', '-')}" for key in ("epochs_cooldown", "lr_cooldown_power", "lr_cooldown_end")
                if getattr(args, key) is not None]
    if args.lr_scheduler == "const-cooldown" and args.epochs_cooldown is None:
        raise UserError("--lr-scheduler const-cooldown needs --epochs-cooldown: how many epochs the cooldown lasts")
    if cooldown and args.lr_scheduler != "const-cooldown":
        raise UserError(f"{', '.join(cooldown)}: for --lr-scheduler const-cooldown only (this run's is "
                        f"{args.lr_scheduler})")
    unknown = sorted(set(report_to(args)) - set(REPORT_TO))
    if unknown:
        raise UserError(f"--report-to {args.report_to}: miniclip writes {', '.join(REPORT_TO)} (and always "
                        f"metrics.jsonl), not {', '.join(unknown)}")


def report_to(args):
    """The writers --report-to names ("tensorboard,wandb" -> ["tensorboard", "wandb"]; "all": every one)."""
    names = [name.strip() for name in args.report_to.split(",") if name.strip()]
    return list(REPORT_TO) if names == ["all"] else names


def resolve(args):
    if args.train_num_samples is None and args.train_data is None:
        # 240 batches of 64 an epoch: the default 5 epochs (1,200 steps) take about 3 minutes on
        # 2 CPU cores. Steps teach this small model more than batch size does (README, "bench learn").
        # (Fashion-MNIST has 60,000 training images: --train-num-samples 60000 takes them all.)
        args.train_num_samples = 15360
    if args.lr_scheduler == "const-cooldown":
        args.lr_cooldown_power = 1.0 if args.lr_cooldown_power is None else args.lr_cooldown_power
        args.lr_cooldown_end = 0.0 if args.lr_cooldown_end is None else args.lr_cooldown_end
    if args.name is None:
        args.name = default_name(args)
    return args


def default_name(args):
    """date, model, lr and batch size; -2, -3, ... when runs started in the same second (a run
    folder that exists needs --resume: miniclip/training/state.py)."""
    name = (f"{time.strftime('%Y_%m_%d-%H_%M_%S')}-model_{args.model.replace('/', '_')}"
            f"-lr_{args.lr:g}-b_{args.batch_size}")
    taken = 1
    while os.path.exists(os.path.join(args.logs, name if taken == 1 else f"{name}-{taken}")):
        taken += 1
    return name if taken == 1 else f"{name}-{taken}"
