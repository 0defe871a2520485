"""Benchmarks: `python -m miniclip.bench kernels` times every kernel implementation side by side;
`python -m miniclip.bench step` times a whole training step (miniclip/bench_step.py);
`python -m miniclip.bench learn` measures how many steps a recipe needs to learn (miniclip/bench_learn.py);
`python -m miniclip.bench accuracy` measures float32 gradients against float64, beside torch's (miniclip/bench_accuracy.py).

    python -m miniclip.bench kernels                       # every family, torch too when installed
    python -m miniclip.bench kernels --family attention --repeat 20
    python -m miniclip.bench kernels --json results.jsonl
    python -m miniclip.bench step --model tiny-vit-s --batch 64 --vs-openclip
    python -m miniclip.bench learn --eval-every 10 -- --lr 1e-3 --epochs 4   # any miniclip.train flags
    python -m miniclip.bench accuracy --model tiny-rn-xs --seeds 2

Each kernel family has a `bench.py` whose `benchmarks(torch)` yields
`(case, {implementation: zero-argument callable}, (unit, work))`, where unit is "GB/s" (work in
bytes moved) or "GFLOP/s" (work in floating-point operations). This module only times them:
warm-up calls first (Numba compiles on the first call), then the median of repeated calls.
Timings on a shared 2-core machine are noisy: read the ratios measured in one run, not the
absolute times, and never turn them into test assertions.
"""
import argparse
import importlib
import json
import statistics
import time

from miniclip.errors import UserError

FAMILIES = ("softmax_xent", "layer_norm", "attention", "conv2d", "adamw")


def median_seconds(fn, repeat, warmup, min_seconds=0.2):
    """Median wall time of fn() over at least `repeat` calls (and at least `min_seconds`)."""
    for _ in range(warmup):
        fn()
    times = []
    started = time.perf_counter()
    while len(times) < repeat or (time.perf_counter() - started < min_seconds and len(times) < 10 * repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def import_torch():
    """torch with 2 threads, or None when it is not installed (it is only ever an oracle)."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(2)
    return torch


def run_kernels(families, repeat, warmup, use_torch=True):
    """Time every implementation of every case; return a list of result dicts."""
    torch = import_torch() if use_torch else None
    results = []
    for family in families:
        cases = importlib.import_module(f"miniclip.kernels.{family}.bench").benchmarks(torch)
        for case, implementations, (unit, work) in cases:
            seconds = {name: median_seconds(fn, repeat, warmup) for name, fn in implementations.items()}
            results.append(dict(family=family, case=case, unit=unit, work=work, seconds=seconds))
    return results


def print_table(results):
    header = f"{'family':13} {'case':34} {'implementation':15} {'median ms':>10} {'rate':>14} {'vs reference':>12} {'vs torch':>9}"
    print(header)
    print("-" * len(header))
    for r in results:
        reference = r["seconds"].get("reference")
        torch_time = r["seconds"].get("torch")
        for name, s in r["seconds"].items():
            rate = f"{r['work'] / s / 1e9:8.1f} {r['unit']}"
            vs_ref = f"{reference / s:11.2f}x" if reference else ""
            vs_torch = f"{torch_time / s:8.2f}x" if torch_time and name != "torch" else ""
            print(f"{r['family']:13} {r['case']:34} {name:15} {s * 1e3:10.3f} {rate:>14} {vs_ref:>12} {vs_torch:>9}")
    print("\n'vs reference' and 'vs torch' are speed-ups: above 1x means this implementation is faster.")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m miniclip.bench", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    kernels = commands.add_parser("kernels", help="time every kernel implementation")
    kernels.add_argument("--family", action="append", choices=FAMILIES,
                         help="only this kernel family (repeatable); default: all")
    kernels.add_argument("--repeat", type=int, default=7, help="timed calls per implementation (median)")
    kernels.add_argument("--warmup", type=int, default=2, help="untimed calls first (Numba compiles)")
    kernels.add_argument("--no-torch", action="store_true", help="skip torch even when it is installed")
    kernels.add_argument("--json", metavar="FILE", help="also write one JSON line per case to FILE")
    step = commands.add_parser("step", help="time one training step, phase by phase (and vs OpenCLIP)")
    step.add_argument("--model", default="tiny-vit-s", help="a built-in config name or a config JSON")
    step.add_argument("--batch", type=int, action="append", help="batch size (repeatable; default 64)")
    step.add_argument("--steps", type=int, default=5, help="timed steps (median)")
    step.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    step.add_argument("--vs-openclip", action="store_true", help="also OpenCLIP on the same config, in a process of its own")
    step.add_argument("--threads", type=int, default=2, help="torch's threads for --vs-openclip")
    step.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cuda: CuPy vs torch on the GPU")
    step.add_argument("--precision", choices=("fp32", "amp", "amp_bf16"), default="fp32",
                      help="amp / amp_bf16: the mixed-precision step of miniclip.train (and torch.autocast)")
    step.add_argument("--json", metavar="FILE", help="also append one JSON line per batch size to FILE")
    learn = commands.add_parser("learn", allow_abbrev=False, help="steps and seconds a training recipe needs to reach 50/80/90%% "
                                              "zero-shot; the flags after -- are miniclip.train's")
    from miniclip import bench_learn
    bench_learn.add_arguments(learn)
    accuracy = commands.add_parser("accuracy", help="float32 gradients' error against float64, per parameter "
                                                    "and per op, beside torch's")
    from miniclip import bench_accuracy
    bench_accuracy.add_arguments(accuracy)
    args, train_argv = parser.parse_known_args(argv)
    if args.command == "learn":
        try:
            bench_learn.main(args, [a for a in train_argv if a != "--"])
        except UserError as e:   # a flag it cannot measure, or a bad train flag, file or checkpoint
            learn.error(str(e))
        return
    if train_argv:
        parser.error(f"unrecognized arguments: {' '.join(train_argv)}")

    if args.command == "accuracy":
        try:
            bench_accuracy.main(args)
        except UserError as e:   # a bad count, model config or case file
            accuracy.error(str(e))
        return

    if args.command == "step":
        from miniclip import bench_step
        for batch in args.batch or [64]:
            result = bench_step.run(args.model, batch, args.steps, args.warmup, args.vs_openclip, args.threads,
                                    args.device, args.precision)
            bench_step.print_result(result)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(result) + "\n")
        return

    results = run_kernels(args.family or FAMILIES, args.repeat, args.warmup, not args.no_torch)
    print_table(results)
    if args.json:
        with open(args.json, "w") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
