"""python -m miniclip.bench learn: how fast a training recipe learns, in steps and seconds.

    python -m miniclip.bench learn                               # the default run of miniclip.train
    python -m miniclip.bench learn --eval-every 10 -- --lr 1e-3 --batch-size 64 --epochs 4
    python -m miniclip.bench learn --json runs.jsonl -- --model my_config.json

Everything after the bench's own flags (or after `--`) is a `python -m miniclip.train` flag, so a
recipe is measured exactly as it would be trained. The run trains on the built-in shapes data with
the trainer's own pieces (data, model, AdamW, schedule, forward_backward) and, every --eval-every
steps, classifies a fixed small set of one-object images of seen colour-shape pairs zero-shot
among the 36 pairs (the same prompts as the trainer's evaluation). It prints the first step at
which that accuracy reaches 50 / 80 / 90%, and the training seconds until then (evaluation time
not counted), then the trainer's full evaluation at the end: seen and held-out pairs, the hard
negatives, the style-shifted split.

Why: a recipe change (learning rate, warmup, batch, patch size, temperature, data) is worth
keeping only if it learns faster per step or per second; one final number after a fixed budget
hides whether the model got there early or just barely. Steps-to-accuracy are exact and
repeatable (same seed, same samples); the seconds are not (a shared machine), so the load
average is printed with them: compare step counts and the median step time, not raw seconds.
"""
import json
import math
import os
import statistics
import sys
import time

import numpy as np

from miniclip import backend, optim
from miniclip.creation import manual_seed
from miniclip.errors import UserError
from miniclip.data import ShapesDataset
from miniclip.models import create_model
from miniclip.training.data import ZeroShotSet, build_data, train_loader
from miniclip.training.evaluate import evaluate, evaluate_zeroshot
from miniclip.training.options import parse_args

THRESHOLDS = (0.5, 0.8, 0.9)
# The figures of the final evaluation worth a line each (the rest are in --json).
FINAL_KEYS = ("zeroshot_seen_top1", "zeroshot_unseen_top1", "zeroshot_style_top1",
              "hard_negatives_swap_colors", "hard_negatives_swap_shapes", "hard_negatives_reverse_relation",
              "val_image_to_text_R@1")


def add_arguments(parser):
    """The bench's own flags (the `learn` sub-command of python -m miniclip.bench)."""
    parser.add_argument("--eval-every", type=int, default=25, help="steps between zero-shot checks (default: 25)")
    parser.add_argument("--eval-samples", type=int, default=144,
                        help="one-object seen-pair images in the check (default: 144)")
    parser.add_argument("--json", metavar="FILE", help="also append the result as one JSON line to FILE")
    parser.add_argument("--label", default="", help="a name for this recipe in the output and the JSON")


def probe_set(args, image_size, count):
    """The fixed zero-shot check: `count` one-object images of seen pairs (a seed of its own)."""
    images = ShapesDataset(count, image_size, "val", seed=args.seed + 3, max_objects=1, target="color_shape")
    return ZeroShotSet("probe", images, images.classnames, images.class_prompts())


def load_average():
    """The 1-minute load average (how busy the machine was), or None where the OS has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def peak_memory_mb():
    """This process's peak resident memory in MB (Linux reports kilobytes, macOS bytes), or None."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def first_reaching(curve, threshold):
    """The first (step, train_seconds) of the curve with accuracy >= threshold, or None."""
    for point in curve:
        if point["accuracy"] >= threshold:
            return point["step"], point["train_seconds"]
    return None


def build(args):
    """What `python -m miniclip.train` builds from these flags: config, data, model, optimizer,
    loader, schedule and the number of steps."""
    from miniclip.train import lr_schedule, model_config, parameter_groups

    config = model_config(args)
    image_size = config["vision_cfg"]["image_size"]
    data = build_data(args, image_size, config["text_cfg"]["context_length"])
    if args.tokenizer is None:
        config["text_cfg"]["vocab_size"] = data.tokenizer.vocab_size
    manual_seed(args.seed)
    model = create_model(config, max_parameters=args.max_parameters)
    if args.grad_checkpointing:
        model.set_grad_checkpointing(True)
    optimizer = optim.AdamW(parameter_groups(model, args.wd), lr=args.lr, betas=(args.beta1, args.beta2),
                            eps=args.eps)
    loader = train_loader(data, args, image_size)
    total_steps = args.max_steps or args.epochs * len(loader)
    warmup = args.warmup if args.warmup is not None else total_steps // 10
    schedule = lr_schedule(args, optimizer, warmup, total_steps, len(loader))
    return config, data, model, optimizer, loader, schedule, total_steps


def train_step(model, optimizer, images, tokens, args, device, keys=None, negative_tokens=None):
    """One optimizer step as miniclip.train takes it (fp32, one process, multi-positive with
    `keys`, hard negative captions `negative_tokens`); returns the loss."""
    from miniclip.train import MAX_LOGIT_SCALE, forward_backward

    optimizer.zero_grad()
    images, tokens = backend.to_device(images, device), backend.to_device(tokens, device)
    loss = forward_backward(model, images, tokens, args.accum_freq, keys=keys, negative_tokens=negative_tokens)
    if not math.isfinite(loss):
        raise SystemExit(f"the loss is {loss}: this recipe diverges")
    if args.grad_clip_norm is not None:
        optim.clip_grad_norm_(model.parameters(), args.grad_clip_norm)
    optimizer.step()
    t = model.logit_scale.data
    backend.get_array_module(t).clip(t, 0, MAX_LOGIT_SCALE, out=t)
    return loss


def run(bench_args, train_argv):
    """Train as `python -m miniclip.train <train_argv>` would, checking zero-shot accuracy as it goes."""
    from miniclip.train import choose_device, uses_hard_negatives

    args = parse_args(list(train_argv) + ["--no-progress"])
    if args.train_data or args.dataset != "shapes":
        raise UserError("it measures the built-in shapes data: leave out --train-data and --dataset")
    if bench_args.eval_every < 1 or bench_args.eval_samples < 1:
        raise UserError("--eval-every and --eval-samples must be at least 1")
    device = choose_device(args.device)
    backend.reuse_freed_host_memory()
    config, data, model, optimizer, loader, schedule, total_steps = build(args)
    model.to(device)
    image_size = config["vision_cfg"]["image_size"]
    probe = probe_set(args, image_size, bench_args.eval_samples)

    def check(step, train_seconds):
        model.eval()
        accuracy = evaluate_zeroshot(model, data.tokenizer, probe, args, image_size, device)["probe_top1"]
        model.train()
        return {"step": step, "train_seconds": round(train_seconds, 2), "accuracy": accuracy}

    load_before = load_average()
    started = time.perf_counter()
    curve = [check(0, 0.0)]
    step, train_seconds, step_times = 0, 0.0, []
    while step < total_steps:
        tick = time.perf_counter()
        for images, tokens in loader.epoch(step // len(loader)):
            schedule(step)
            keys = None if args.no_multi_positive else data.pair_keys(tokens)
            negatives = (data.negative_tokens(tokens, np.random.default_rng((args.seed, step)))
                         if uses_hard_negatives(args, model) else None)
            loss = train_step(model, optimizer, images, tokens, args, device, keys, negatives)
            step += 1
            step_times.append(time.perf_counter() - tick)   # waiting for the loader is part of a step
            train_seconds += step_times[-1]
            if step % bench_args.eval_every == 0 or step == total_steps:
                curve.append(check(step, train_seconds))
            if step == total_steps:
                break
            tick = time.perf_counter()
    final, _ = evaluate(model, data, args, image_size, device)
    return {
        "label": bench_args.label, "train_args": list(train_argv), "model_config": config,
        "steps": total_steps, "batch_size": args.batch_size, "train_seconds": round(train_seconds, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "median_step_seconds": round(statistics.median(step_times), 4),
        "load_average": [load_before, load_average()], "peak_memory_mb": peak_memory_mb(), "final_loss": loss,
        "reached": {f"{int(100 * t)}%": first_reaching(curve, t) for t in THRESHOLDS},
        "curve": curve, "final": {k: float(v) for k, v in final.items()},
    }


def print_result(result):
    label = f" ({result['label']})" if result["label"] else ""
    print(f"recipe{label}: {' '.join(result['train_args']) or 'the defaults'}")
    print(f"{result['steps']} steps of {result['batch_size']}: {result['train_seconds']} s training "
          f"(median step {1e3 * result['median_step_seconds']:.0f} ms), {result['wall_seconds']} s with "
          f"evaluations; load average {result['load_average'][0]} -> {result['load_average'][1]}; "
          f"peak memory {result['peak_memory_mb']} MB")
    print("seen zero-shot top-1 during training (step: accuracy):")
    print("  " + "  ".join(f"{p['step']}: {100 * p['accuracy']:.0f}%" for p in result["curve"]))
    for name, reached in result["reached"].items():
        where = "not reached" if reached is None else f"step {reached[0]} ({reached[1]:.1f} s of training)"
        print(f"reached {name:>3} seen: {where}")
    final = result["final"]
    print("final: " + ", ".join(f"{k} {100 * final[k]:.1f}%" for k in FINAL_KEYS if k in final)
          + f", loss {result['final_loss']:.3f}")


def main(bench_args, train_argv):
    result = run(bench_args, train_argv)
    print_result(result)
    if bench_args.json:
        with open(bench_args.json, "a") as f:
            f.write(json.dumps(result) + "\n")
    return result
