"""A first training run on miniclip's own autograd, layers and optimizer: no torch anywhere.

    python -m miniclip.demo

It fits a small MLP to the classic "two spirals" problem: 2-D points on two interleaved
spirals, one class each. A straight line cannot separate them, so the loss only falls if
backward, the layers and AdamW all work. It prints the loss and accuracy as it trains.
"""
import argparse
import time

import numpy as np

import miniclip
from miniclip import functional as F
from miniclip import nn, optim


def two_spirals(n_per_class, noise, rng):
    """Points (2 n, 2) on two interleaved spirals, and their labels 0 / 1."""
    t = np.sqrt(rng.uniform(0, 1, n_per_class)) * 3 * np.pi              # angle along the spiral
    arm = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / (3 * np.pi)
    points = np.concatenate([arm, -arm]) + noise * rng.standard_normal((2 * n_per_class, 2))
    labels = np.repeat([0, 1], n_per_class)
    return points.astype(np.float32), labels


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m miniclip.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    miniclip.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    x_train, y_train = two_spirals(256, 0.02, rng)
    x_test, y_test = two_spirals(256, 0.02, rng)

    model = nn.Sequential(nn.Linear(2, args.hidden), nn.GELU(), nn.Linear(args.hidden, args.hidden),
                          nn.GELU(), nn.Linear(args.hidden, 2))
    optimizer = optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    started = time.perf_counter()
    for step in range(1, args.steps + 1):
        loss = F.cross_entropy(model(miniclip.tensor(x_train)), y_train)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0 or step == 1:
            with miniclip.no_grad():
                accuracy = (model(miniclip.tensor(x_test)).data.argmax(1) == y_test).mean()
            print(f"step {step:4d}  loss {loss.item():.4f}  test accuracy {accuracy:6.1%}")
    print(f"trained {args.steps} steps in {time.perf_counter() - started:.1f} s")
    return accuracy


if __name__ == "__main__":
    main()
