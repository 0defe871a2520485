"""python -m miniclip.train: train a CLIP (or SigLIP) model, evaluate it, and keep everything in a run folder.

    python -m miniclip.train                                  # small model, built-in shapes, CPU, minutes
    python -m miniclip.train --dataset fashion-mnist --epochs 2
    python -m miniclip.train --train-data pairs.tsv --val-data val.tsv --model tiny-vit-s
    python -m miniclip.train --name my_run --resume latest    # continue a stopped run exactly

One step (Radford et al. 2021, Figure 3): encode a batch of B images and their B captions,
normalise, score all B x B pairs with s = exp(t) (t = logit_scale, learned), and take the
symmetric cross-entropy with the pairs on the diagonal (or SigLIP's pairwise sigmoid loss with
--siglip); when captions repeat in a batch (class-name captions), every pair with the same caption
or class is a positive too (the multi-positive loss of miniclip/losses.py; --no-multi-positive
turns it off; data-parallel runs use the one-hot loss); backward; AdamW (no weight decay on gains,
biases and t); then clamp t to ln 100, as CLIP does, so the temperature cannot run away.

--accum-freq K keeps every negative of a K*B batch with the memory of B (OpenCLIP's method):
first encode all K micro-batches without a graph and keep their features; then, micro-batch by
micro-batch, encode it again with a graph, put its features among the kept ones and backward the
loss of the whole K*B batch. Each backward gives d loss/d (its micro-batch's features) times their
Jacobian, so the sum over micro-batches is exactly the K*B batch's gradient. (The logit scale is
live in only the first micro-batch's loss, so its gradient is counted once, not K times.)

--distributed trains data-parallel over the ranks started by mpirun (miniclip/distributed.py
explains the math): each rank reads its own shard of --batch-size pairs, the contrastive loss sees
the features of the whole global batch, gradients are averaged over the ranks, and every rank takes
the same step. Only rank 0 writes the run folder, shows progress and evaluates (the others wait);
every rank resumes from the checkpoint rank 0 chose. An error on any rank ends the whole job.
(BatchNorm's running statistics, in the ResNet towers, are each rank's own; rank 0's are the ones
evaluated and saved.)

    mpirun -n 2 python -m miniclip.train --distributed --local-loss --gather-with-grad

The run folder logs/<name>/ holds config.json (every flag and the model config), metrics.jsonl
(one line per logged step, one per evaluation), checkpoints/ (see miniclip/training/state.py),
plots/ and, with --report-to tensorboard, tensorboard/ (miniclip/training/tensorboard.py). One
run at a time: a folder that holds a run needs --resume, and a live run locks it
(miniclip/training/state.py). metrics.jsonl is strict JSON: a number that is not finite (an
evaluation of a diverged model) is written as null. Ctrl-C finishes the current step, saves a
checkpoint and stops. A NaN or infinite loss stops the run before anything is saved, and a save
refuses weights or optimizer moments that are not finite, so the last checkpoint is always a good one.

A mistake in the flags, files or checkpoints is one line on stderr and exit code 2 (a UserError,
miniclip/errors.py); a traceback means a bug in miniclip.
"""
import contextlib
import glob
import json
import math
import numbers
import os
import signal
import sys
import time

import numpy as np
from tqdm import tqdm

from miniclip import amp, backend, distributed, optim
from miniclip.checkpoint import atomic_write
from miniclip.creation import manual_seed
from miniclip.errors import UserError, exit_on_user_error
from miniclip.losses import clip_loss, clip_loss_with_negatives, siglip_loss
from miniclip.models import check_same_architecture, create_model, load_checkpoint, load_tokenizer, load_weights
from miniclip.models.config import load_config, parameter_count
from miniclip.models.pretrained import is_tag, pretrained_file, tag_uses_quick_gelu
from miniclip.ops import concat
from miniclip.tensor import Tensor, no_grad
from miniclip.tokenizer import Tokenizer
from miniclip.training.data import build_data, train_loader
from miniclip.training.evaluate import evaluate
from miniclip.training.options import PRECISIONS, parse_args, report_to
from miniclip.training.plots import plot_run
from miniclip.training.tensorboard import SummaryWriter
from miniclip.training.state import (NonFiniteState, checkpoint_step, latest_checkpoint, load_training_state,
                                     own_run_folder, save_training_state, training_metadata)

PROG = "python -m miniclip.train"
LATEST_CHECKPOINT = "epoch_latest.safetensors"   # --save-most-recent (OpenCLIP's epoch_latest.pt)
MAX_LOGIT_SCALE = math.log(100)
# Flags that change the data order or the model: a resumed run must keep them.
SAME_ON_RESUME = ("model", "batch_size", "accum_freq", "seed", "siglip", "dataset", "train_data",
                  "train_num_samples", "lock_image", "lock_text", "tokenizer", "vocab_size", "world_size",
                  "force_quick_gelu", "image_mean", "image_std")


def choose_device(requested):
    if requested == "auto":
        return "cuda" if backend.has_gpu() else "cpu"
    if requested == "cuda" and not backend.has_gpu():
        raise UserError("--device cuda: CuPy cannot see a CUDA GPU here (install miniclip[gpu] on a "
                        "machine with a GPU, or use --device cpu)")
    return requested


def model_config(args):
    try:
        # No limit on the size here: the check below says which flag raises it.
        config = load_config(args.model, max_parameters=math.inf)
    except ValueError as error:   # an unknown name, or a JSON file that is not a model config
        raise UserError(f"--model {args.model}: {error}") from None
    count = parameter_count(config)   # from the config alone, before anything is allocated
    if count > args.max_parameters:
        raise UserError(f"--model {args.model} has {count:,} parameters ({4 * count / 1e9:.1f} GB in float32), "
                        f"more than --max-parameters {args.max_parameters:,}; pass a larger --max-parameters "
                        f"to train it")
    if args.force_quick_gelu:
        config["quick_gelu"] = True
    if args.siglip:
        # SigLIP's initialisation (Zhai et al. 2023, section 3.2): t' = ln 10, b = -10, so that the
        # B^2 - B negatives do not dominate the first steps.
        config["init_logit_scale"] = math.log(10) if config["init_logit_scale"] is None else config["init_logit_scale"]
        config["init_logit_bias"] = -10.0 if config["init_logit_bias"] is None else config["init_logit_bias"]
    return config


def pretrained_weights(args, config):
    """(state_dict, file) of --pretrained, or (None, None).

    A tag of --model ("openai", "laion2b_s34b_b79k", ...) is OpenCLIP's name for a file on the
    Hugging Face hub (miniclip/models/pretrained.py): it is downloaded, or read from the hub's
    cache, and the config takes the activation the tag was trained with (QuickGELU for OpenAI's
    weights; --force-quick-gelu still forces it), as create_model(name, pretrained=tag) does.
    A file that miniclip saved holds its config and its tokenizer, and the run then trains with
    that tokenizer (train() reads it): so the text embedding takes the file's vocabulary size, and
    the rest of the file's architecture must be --model's."""
    if args.pretrained is None:
        return None, None
    if is_tag(args.model, args.pretrained):
        config["quick_gelu"] = tag_uses_quick_gelu(args.model, args.pretrained) or args.force_quick_gelu
    # A file as it is; a tag from the hub or its cache; else a UserError listing --model's tags.
    path = pretrained_file(args.model, args.pretrained)
    state_dict, saved_config = load_checkpoint(path, args.max_parameters)
    if saved_config is not None:
        if load_tokenizer(path, saved_config["text_cfg"]["context_length"]) is not None:
            config["text_cfg"]["vocab_size"] = saved_config["text_cfg"]["vocab_size"]
        try:
            check_same_architecture(config, saved_config, path)
        except ValueError as error:
            raise UserError(f"--pretrained {args.pretrained} does not fit --model {args.model}: {error}") from None
    return state_dict, path


def run_tokenizer(args, resume, pretrained_path, context_length):
    """The tokenizer a run must keep (None: build_data makes one from the flags): the one saved in
    the checkpoint it resumes or the weights it starts from; for pretrained weights that hold none
    (OpenCLIP's files), OpenAI's vocabulary, which they were trained with, unless --tokenizer."""
    for path in (resume, pretrained_path):
        if path is not None:
            saved = load_tokenizer(path, context_length)
            if saved is not None:
                return saved
    if pretrained_path is not None and args.tokenizer is None:
        return Tokenizer(context_length=context_length)
    return None


def parameter_groups(model, weight_decay):
    """OpenCLIP's split: no weight decay on gains, biases, norms' parameters and the logit scale/bias
    (anything with fewer than 2 dimensions, or named bn/ln/bias/logit_scale)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exclude = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if exclude else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def lock_towers(model, args):
    """--lock-image / --lock-text: the frozen tower gets no gradient (and no optimizer state)."""
    if args.lock_image:
        model.visual.requires_grad_(False)
    if args.lock_text:
        for name, p in model.named_parameters():
            if not name.startswith("visual.") and "logit" not in name:
                p.requires_grad = False


def contrastive_loss(model, image_features, text_features, logit_scale, keys=None, negative_features=None):
    """The CLIP loss, or the SigLIP loss when the model has a logit bias; keys (B,): the
    multi-positive form, every pair with the same key a positive; negative_features (N, D): extra
    captions that match no image (NegCLIP, CLIP loss only) (miniclip/losses.py)."""
    if negative_features is not None:
        return clip_loss_with_negatives(image_features, text_features, negative_features, logit_scale, keys)
    if model.logit_bias is None:
        return clip_loss(image_features, text_features, logit_scale, keys)
    return siglip_loss(image_features, text_features, logit_scale, model.logit_bias, keys)


def uses_hard_negatives(args, model, dist=None):
    """Whether the loss takes the data's hard negative captions (when it makes any): the CLIP loss
    of one process with --accum-freq 1, unless --no-hard-negatives."""
    return not args.no_hard_negatives and model.logit_bias is None and args.accum_freq == 1 and dist is None


def forward_backward(model, images, tokens, accum_freq, loss_fn=None, loss_scale=1.0, keys=None,
                     negative_tokens=None):
    """Backward the loss of the whole batch (see the module docstring); return its value, a Python
    float: on a GPU, the one read of the step's results that every step makes (the NaN stop needs it).
    loss_fn(image_features, text_features, logit_scale): by default contrastive_loss(model, ...),
    multi-positive with `keys` (B,) of the whole batch, every micro-batch's loss included.
    loss_scale: backward loss * loss_scale (float16 loss scaling, miniclip/amp.py).
    negative_tokens (N, T): hard negative captions in the loss (accum_freq 1 and the default loss_fn only)."""
    if negative_tokens is not None and (accum_freq != 1 or loss_fn is not None):
        raise ValueError("hard negative captions need accum_freq 1 and the default loss")
    if loss_fn is None:
        def loss_fn(image_features, text_features, logit_scale):
            negative_features = None if negative_tokens is None else model.encode_text(negative_tokens, normalize=True)
            return contrastive_loss(model, image_features, text_features, logit_scale, keys, negative_features)
    if accum_freq == 1:
        image_features = model.encode_image(Tensor(images), normalize=True)
        text_features = model.encode_text(tokens, normalize=True)
        loss = loss_fn(image_features, text_features, model.logit_scale.exp())
        loss.backward(grad=loss_scale)
        return float(loss.data)

    image_chunks, token_chunks = np.array_split(images, accum_freq), np.array_split(tokens, accum_freq)
    with no_grad():
        kept = [(model.encode_image(Tensor(i), normalize=True).data, model.encode_text(t, normalize=True).data)
                for i, t in zip(image_chunks, token_chunks)]
    for j, (images_j, tokens_j) in enumerate(zip(image_chunks, token_chunks)):
        image_j = model.encode_image(Tensor(images_j), normalize=True)
        text_j = model.encode_text(tokens_j, normalize=True)
        image_features = concat([image_j if i == j else Tensor(f) for i, (f, _) in enumerate(kept)])
        text_features = concat([text_j if i == j else Tensor(f) for i, (_, f) in enumerate(kept)])
        logit_scale = model.logit_scale.exp() if j == 0 else Tensor(np.exp(model.logit_scale.data))
        loss = loss_fn(image_features, text_features, logit_scale)
        loss.backward(grad=loss_scale)
    return float(loss.data)


def global_batch_loss(model, dist, args):
    """The loss function of a data-parallel rank: the CLIP or SigLIP loss of the global batch."""
    def loss_fn(image_features, text_features, logit_scale):
        return dist.contrastive_loss(image_features, text_features, logit_scale, model.logit_bias,
                                     local_loss=args.local_loss, gather_with_grad=args.gather_with_grad)
    return loss_fn


class StopRequest:
    """The first Ctrl-C asks the loop to stop after the current step (and save); a second one
    interrupts at once. Disabled in data-parallel runs: there mpirun ends the job on Ctrl-C, and
    ranks that stopped at different steps would wait for each other forever."""

    def __init__(self, enabled=True):
        self.requested, self.enabled = False, enabled

    def __enter__(self):
        if self.enabled:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: stopping after this step and saving a checkpoint (Ctrl-C again to quit now)",
              file=sys.stderr)

    def __exit__(self, *exc):
        if self.enabled:
            signal.signal(signal.SIGINT, self.previous)


def resume_path(args, checkpoints):
    """The checkpoint to resume from, or None. `--resume latest` in a run that saved no checkpoint
    yet (it was killed during its first epoch) starts it again from step 0, as OpenCLIP does."""
    if args.resume is None:
        return None
    if args.resume == "latest":
        path = latest_checkpoint(checkpoints)
        if path is None and glob.glob(os.path.join(checkpoints, "*.safetensors")):
            raise UserError(f"--resume latest: no readable training checkpoint in {checkpoints} (see the "
                            f"warnings above); name one with --resume PATH")
        if path is None:
            print(f"--resume latest: no checkpoint in {checkpoints} yet: starting from step 0")
        return path
    if not os.path.isfile(args.resume):
        raise UserError(f"--resume {args.resume}: no such file")
    training_metadata(args.resume)   # a model file or an unreadable state: said before anything else
    return args.resume


def main(argv=None):
    """The command: its exit code (0 done, 130 stopped by Ctrl-C, 2 a user error)."""
    return exit_on_user_error(PROG, command, argv)


def command(argv):
    args = parse_args(argv)
    device = choose_device(args.device)
    backend.reuse_freed_host_memory()   # no page faults on every step's fresh arrays (see backend.py)
    if not args.distributed:
        return run(args, device, argv)
    dist = distributed.init(device)
    try:
        return run(args, device, argv, dist)
    except UserError as error:   # one line, no traceback, but the whole job must still end
        dist.abort(SystemExit(f"{PROG}: error: {error}"))
    except BaseException as error:   # anything, even Ctrl-C: a rank that left alone would hang the others
        dist.abort(error)


def run(args, device, argv, dist=None):
    """Train, evaluate and save as the flags say, holding the run folder (rank 0 only: the others
    write nothing); dist: this rank's Distributed, or None alone."""
    is_main = dist is None or dist.rank == 0   # the rank that writes, prints and evaluates
    run_folder = os.path.join(args.logs, args.name)
    with own_run_folder(run_folder, resuming=args.resume is not None) if is_main else contextlib.nullcontext():
        return train(args, device, argv, run_folder, dist)


def train(args, device, argv, run_folder, dist=None):
    """run()'s work, once the run folder is this run's."""
    is_main = dist is None or dist.rank == 0
    args.world_size = 1 if dist is None else dist.world_size
    checkpoints = os.path.join(run_folder, "checkpoints")
    resume = resume_path(args, checkpoints) if is_main else None
    if dist is not None:
        resume = dist.broadcast_object(resume)
        if resume is not None and not os.path.isfile(resume):
            raise UserError(f"rank {dist.rank} cannot read {resume} (rank 0 resumes from it): the run "
                            f"folder must be on a file system every rank sees")

    config = model_config(args)
    image_size = config["vision_cfg"]["image_size"]
    context_length = config["text_cfg"]["context_length"]
    pretrained, pretrained_path = pretrained_weights(args, config)
    data = build_data(args, image_size, context_length, run_tokenizer(args, resume, pretrained_path, context_length))
    if args.tokenizer is None and args.pretrained is None:
        config["text_cfg"]["vocab_size"] = data.tokenizer.vocab_size   # a learned vocabulary: a small embedding
    if data.tokenizer.vocab_size > config["text_cfg"]["vocab_size"]:
        raise UserError(f"the tokenizer has {data.tokenizer.vocab_size} tokens but the model's text "
                        f"embedding only {config['text_cfg']['vocab_size']}")

    manual_seed(args.seed)
    model = create_model(config, max_parameters=args.max_parameters)
    if args.image_mean is not None:   # saved with the weights, so that zeroshot and search use them
        model.visual.image_mean = tuple(args.image_mean)
    if args.image_std is not None:
        model.visual.image_std = tuple(args.image_std)
    if args.grad_checkpointing:
        model.set_grad_checkpointing(True)
    if pretrained is not None:   # an OpenCLIP file without a config: the shapes say whether it fits
        load_weights(model, pretrained, f"--pretrained {args.pretrained} (for --model {args.model})")
    lock_towers(model, args)
    model.to(device)
    if dist is not None:
        dist.broadcast_parameters(model)
    optimizer = optim.AdamW(parameter_groups(model, args.wd), lr=args.lr, betas=(args.beta1, args.beta2),
                            eps=args.eps)
    loader = train_loader(data, args, image_size, rank=0 if dist is None else dist.rank,
                          world_size=args.world_size)
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise UserError(f"{len(data.train)} training samples make no full batch of "
                        f"{args.batch_size * args.accum_freq} (--batch-size x --accum-freq) "
                        f"on each of {args.world_size} ranks")
    total_steps = args.max_steps or args.epochs * steps_per_epoch
    warmup = args.warmup if args.warmup is not None else total_steps // 10
    schedule = lr_schedule(args, optimizer, warmup, total_steps, steps_per_epoch)

    low_precision = PRECISIONS[args.precision]
    scaler = amp.GradScaler() if low_precision == "float16" else None
    progress = {"step": 0, "epoch": 0, "batch": 0}
    if resume:
        check_same_flags(args, resume)
        progress = load_training_state(resume, model, optimizer, scaler)
        if progress["batch"] >= steps_per_epoch:   # the loader would never finish the epoch
            raise UserError(f"cannot resume {resume}: it stopped at batch {progress['batch']} of epoch "
                            f"{progress['epoch']}, but the training data now makes {steps_per_epoch} batches an "
                            f"epoch ({len(data.train)} samples): did the data change?")
        if is_main:
            print(f"resumed from {resume} at step {progress['step']} (epoch {progress['epoch']}, "
                  f"batch {progress['batch']})")
    if dist is not None:
        dist.check_same_parameters(model)
        loss_fn = global_batch_loss(model, dist, args)
    else:
        loss_fn = None
    if is_main:
        os.makedirs(checkpoints, exist_ok=True)
        write_config(run_folder, args, config, data, device, total_steps, warmup)
        metrics_path = os.path.join(run_folder, "metrics.jsonl")
        if args.resume:   # (from step 0 when there was no checkpoint yet: nothing is kept)
            forget_metrics_after(metrics_path, progress["step"] if resume else -1)
        metrics_file = open(metrics_path, "a")
        tensorboard = None
        if "tensorboard" in report_to(args):   # a resumed run: TensorBoard forgets what metrics.jsonl forgot
            purge_step = (progress["step"] + 1 if resume else 0) if args.resume else None
            tensorboard = SummaryWriter(os.path.join(run_folder, "tensorboard"), purge_step)

    def log(record):
        if is_main:
            metrics_file.write(metrics_line(record) + "\n")
            metrics_file.flush()
            if tensorboard is not None:
                tensorboard.add_scalars(tensorboard_scalars(record), record["step"])

    def run_evaluation(epoch, zeroshot=True, val=True):
        """Rank 0 evaluates while the others wait; returns the metrics (None on the others)."""
        metrics = None
        if is_main:
            metrics, plot_data = evaluate(model, data, args, image_size, device, zeroshot=zeroshot, val=val)
            log({"step": progress["step"], "epoch": epoch, "eval": metrics})
            plot_run(run_folder, plot_data)
        if dist is not None:
            dist.barrier()
        return metrics

    def save(name):
        path = os.path.join(checkpoints, name)
        if dist is not None:
            dist.check_same_parameters(model)
        if is_main:
            try:
                save_training_state(path, model, data.tokenizer, optimizer, progress, args, scaler)
            except NonFiniteState as error:
                raise UserError(diverged(f"after step {progress['step']}, {error}", last_saved)) from None
        return path

    def save_checkpoint(name):
        """save(name), then what --save-most-recent and --delete-previous-checkpoint ask for;
        returns the new checkpoint's path."""
        path = save(name)
        if args.save_most_recent:
            save(LATEST_CHECKPOINT)
        if is_main and args.delete_previous_checkpoint and last_saved not in (None, path):
            # Only a checkpoint of this run folder (a --resume PATH elsewhere is the user's file), and
            # never epoch_latest, just written again when the run resumed from it.
            if (os.path.dirname(os.path.abspath(last_saved)) == os.path.abspath(checkpoints)
                    and os.path.basename(last_saved) != LATEST_CHECKPOINT):
                os.remove(last_saved)
        return path

    global_batch = args.world_size * args.batch_size * args.accum_freq
    if is_main:
        ranks = "" if dist is None else f" ({args.world_size} ranks x {args.batch_size * args.accum_freq})"
        print(f"run folder {run_folder}: {sum(p.data.size for p in model.parameters()):,} parameters, "
              f"{len(data.train):,} training samples, {total_steps} steps of {global_batch}{ranks} on {device}"
              + ("" if low_precision is None else f", {low_precision} matmuls"))
        if low_precision == "bfloat16" and device == "cuda":
            print("bfloat16 is emulated: CuPy has no bfloat16 dtype, so the matmuls take float32 arrays "
                  "with the low 16 bits zeroed (bfloat16's numerics, float32's speed)")
    if progress["step"] == 0:
        run_evaluation(0)   # before training: the chance level, for the plots
    bar = tqdm(total=total_steps, initial=progress["step"], disable=args.no_progress or not is_main,
               unit="step", dynamic_ncols=True)
    model.train()
    last_saved, skipped, overflows = resume, 0, 0
    # A step that overflows is caught by the checks below (the loss, float16's loss scale, the
    # weights before a save), each with a message that says what to do; NumPy's own warnings,
    # one per operation, would only say it first and less clearly.
    with StopRequest(enabled=dist is None) as stop, np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        while progress["step"] < total_steps and not stop.requested:
            epoch = progress["epoch"]
            tick = time.perf_counter()
            for images, tokens in loader.epoch(epoch, start=progress["batch"]):
                lr = schedule(progress["step"])
                optimizer.zero_grad()
                keys = None if args.no_multi_positive or dist else data.pair_keys(tokens)   # on the host
                negatives = (data.negative_tokens(tokens, np.random.default_rng((args.seed, progress["step"])))
                             if uses_hard_negatives(args, model, dist) else None)
                # The token ids stay on the host: the model checks them there and its embedding
                # copies them to the device (models/clip.py), so they cost no device-to-host transfer.
                images = backend.batch_to_device(images, device)
                with amp.autocast(low_precision):
                    loss = forward_backward(model, images, tokens, args.accum_freq, loss_fn,
                                            loss_scale=1.0 if scaler is None else scaler.scale, keys=keys,
                                            negative_tokens=negatives)
                if dist is not None:
                    dist.simulate_failure(progress["step"] + 1)
                    dist.all_reduce_gradients(model.parameters())
                    loss, = dist.mean([loss])   # every rank sees the same loss, so all stop on a NaN
                if not math.isfinite(loss):
                    bar.close()
                    raise UserError(diverged(f"the loss is {loss} at step {progress['step'] + 1}", last_saved))
                overflow = False
                if scaler is not None:   # the gradients are the same on every rank here (all-reduced)
                    loss_scale = scaler.scale
                    overflow = scaler.unscale_(model.parameters())
                    scaler.update(overflow)
                    overflows += overflow
                if not overflow:   # a float16 overflow skips the step; the loss scale was halved
                    if args.grad_clip_norm is not None:
                        optim.clip_grad_norm_(model.parameters(), args.grad_clip_norm)
                    optimizer.step()
                    # In place: the optimizer updates this array in place too (and a 0-d array's
                    # .clip() would return a NumPy scalar, which no in-place update can change).
                    t = model.logit_scale.data
                    backend.get_array_module(t).clip(t, 0, MAX_LOGIT_SCALE, out=t)
                progress["step"] += 1
                progress["batch"] += 1
                now = time.perf_counter()
                samples_per_s = len(images) * args.world_size / (now - tick)
                tick = now
                if logged_step(progress, args.log_every_n_steps, steps_per_epoch, total_steps):
                    # Read from the device only on a logged step: each read waits for the GPU.
                    scale = float(np.exp(backend.to_numpy(model.logit_scale.data)))
                    record = {"step": progress["step"], "epoch": epoch, "loss": loss, "lr": lr,
                              "logit_scale": scale, "samples_per_s": samples_per_s}
                    if scaler is not None:
                        record.update(loss_scale=loss_scale, skipped_step=overflow)
                    log(record)
                    bar.set_postfix(loss=f"{loss:.3f}", scale=f"{scale:.1f}", samples_s=f"{samples_per_s:.0f}")
                bar.update(1)
                if stop.requested or (progress["step"] == total_steps and progress["batch"] < steps_per_epoch):
                    break   # mid-epoch; at the epoch's end the loader finishes it (and reports skips)
            skipped += len(loader.skipped)
            epoch_done = progress["batch"] == steps_per_epoch
            if epoch_done:
                progress["epoch"], progress["batch"] = epoch + 1, 0
            finished = progress["step"] == total_steps
            if epoch_done and ((epoch + 1) % args.save_frequency == 0 or finished):
                last_saved = save_checkpoint(f"epoch_{epoch + 1}.safetensors")
            elif finished or stop.requested:
                last_saved = save_checkpoint(f"step_{progress['step']}.safetensors")
            elif epoch_done and args.save_most_recent:   # OpenCLIP writes it every epoch
                save(LATEST_CHECKPOINT)
            if (epoch_done or finished) and not stop.requested:
                zeroshot = (epoch + 1) % args.zeroshot_frequency == 0 or finished
                val = (epoch + 1) % args.val_frequency == 0 or finished
                if zeroshot or val:
                    bar.clear()
                    metrics = run_evaluation(progress["epoch"], zeroshot, val)
                    if is_main:
                        tqdm.write(format_metrics(progress["step"], metrics), file=sys.stderr)
        if stop.requested and saved_step(last_saved) != progress["step"]:
            last_saved = save_checkpoint(f"step_{progress['step']}.safetensors")   # Ctrl-C came during an evaluation
    bar.close()
    if not is_main:
        return 0
    metrics_file.close()
    if tensorboard is not None:
        tensorboard.close()
    if overflows:
        print(f"float16 overflow: skipped {overflows} optimizer steps (each halved the loss scale, now "
              f"{scaler.scale:g})")
    if skipped:
        print(f"skipped {skipped} bad samples (--skip-bad-samples); the first ones are named in the warnings above")
    if stop.requested:
        print(f"stopped at step {progress['step']}; checkpoint {last_saved}\n"
              f"continue with: python -m miniclip.train {' '.join(resume_command(argv, args))}")
        return 130
    print(f"done: {progress['step']} steps. Checkpoint {last_saved}; plots in {os.path.join(run_folder, 'plots')}")
    return 0


def lr_schedule(args, optimizer, warmup, total_steps, steps_per_epoch):
    """--lr-scheduler's function of the step (miniclip/optim.py), planned for total_steps."""
    if args.lr_scheduler == "cosine":
        return optim.cosine_lr(optimizer, args.lr, warmup, total_steps)
    if args.lr_scheduler == "const":
        return optim.const_lr(optimizer, args.lr, warmup, total_steps)
    cooldown = args.epochs_cooldown * steps_per_epoch   # OpenCLIP counts the cooldown in epochs too
    if cooldown > total_steps - warmup:
        raise UserError(f"--epochs-cooldown {args.epochs_cooldown} is {cooldown} steps, more than the "
                        f"{total_steps - warmup} steps after the warmup of {warmup}")
    return optim.const_lr_cooldown(optimizer, args.lr, warmup, total_steps, cooldown,
                                   args.lr_cooldown_power, args.lr_cooldown_end)


def logged_step(progress, every, steps_per_epoch, total_steps):
    """Whether the step just done goes to the logs: OpenCLIP's --log-every-n-steps rule, the first
    batch of every `every` in an epoch and its last batch (progress["batch"] batches are done), and
    the run's last step."""
    return ((progress["batch"] - 1) % every == 0 or progress["batch"] == steps_per_epoch
            or progress["step"] == total_steps)


# The names OpenCLIP gives the training metrics in TensorBoard (the evaluation's: val/<name>).
TENSORBOARD_NAMES = {"loss": "train/loss", "lr": "train/lr", "logit_scale": "train/scale",
                     "samples_per_s": "train/samples_per_second", "loss_scale": "train/loss_scale"}


def tensorboard_scalars(record):
    """The TensorBoard scalars of one metrics.jsonl record, at its step. (OpenCLIP puts the
    evaluations at the epoch number; miniclip also evaluates before training and when --max-steps
    ends mid-epoch, so they go at the step, on one axis with the training curves.)"""
    if "eval" in record:
        return {f"val/{name}": value for name, value in record["eval"].items()
                if isinstance(value, numbers.Real) and not isinstance(value, bool)}
    return {TENSORBOARD_NAMES[k]: v for k, v in record.items() if k in TENSORBOARD_NAMES}


def diverged(what, last_saved):
    """The message that stops a run whose loss or weights are no longer finite numbers."""
    return (f"{what}: stopping. Nothing was saved after the last good checkpoint ({last_saved or 'none'}); "
            f"try a lower --lr, --grad-clip-norm, or a longer --warmup")


def metrics_line(record):
    """One line of metrics.jsonl. JSON has no NaN or infinity (json.dumps would write a bare NaN,
    which JSON readers refuse): a number that is not finite is written as null."""
    def finite(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {key: finite(v) for key, v in value.items()}
        return value
    return json.dumps(finite(record), allow_nan=False)


def forget_metrics_after(path, step):
    """Drop the lines of metrics.jsonl logged after `step`: a run that stopped past its last
    checkpoint logged steps that the resumed run is about to do (and log) again. A last line that
    is not JSON was cut short by a crash mid-write and is dropped too; any other is a damaged file."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = f.readlines()
    kept = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line) if line.strip() else None
            if record is not None and record["step"] <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
        except (ValueError, KeyError, TypeError) as error:
            if number < len(lines):
                raise UserError(f"{path} line {number}: not a metrics record ({error!r}); fix or delete "
                                f"the line to resume") from None
    atomic_write(path, [line.encode() for line in kept])


def saved_step(path):
    return None if path is None else checkpoint_step(path)


def format_metrics(step, metrics):
    keys = [k for k in metrics if k.endswith("_top1") or k.startswith("hard_negatives") or
            k.endswith("R@1") or k == "val_loss"]
    return f"step {step}: " + ", ".join(f"{k} {metrics[k]:.3f}" for k in keys)


def resume_command(argv, args):
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--name" not in argv:
        argv += ["--name", args.name]
    if "--resume" not in argv:
        argv += ["--resume", "latest"]
    return argv


def check_same_flags(args, path):
    """Refuse to resume with flags that change the model or the order of the data."""
    saved = training_metadata(path)["args"]
    # (A key the checkpoint lacks is a flag added after it was written: nothing to compare.)
    changed = [f"{flag_name(k)} {getattr(args, k)!r} (the checkpoint has {saved[k]!r})"
               for k in SAME_ON_RESUME if k in saved and saved[k] != getattr(args, k)]
    if changed:
        raise UserError(f"cannot resume {path} exactly with different flags: " + "; ".join(changed))


def flag_name(key):
    return "the number of ranks (mpirun -n)" if key == "world_size" else f"--{key.replace('_', '-')}"


def write_config(run_folder, args, config, data, device, total_steps, warmup):
    """config.json: every flag, the model config and what was derived from them."""
    os.makedirs(run_folder, exist_ok=True)
    resolved = {"args": vars(args), "model_config": config, "device": device, "total_steps": total_steps,
                "global_batch_size": args.world_size * args.batch_size * args.accum_freq,
                "warmup_steps": warmup, "train_samples": len(data.train),
                "tokenizer_vocab_size": data.tokenizer.vocab_size}
    atomic_write(os.path.join(run_folder, "config.json"), [json.dumps(resolved, indent=2).encode()])


if __name__ == "__main__":
    sys.exit(main())
