"""The gradients of a data-parallel step, written to a file, for test_distributed.py to compare.

    mpirun -n 2 python -m tests.distributed.gradient_worker OUT.npz      (from the repository root)

Every rank builds the same tiny model and the same batch of N*B pairs, keeps rows rB..rB+B-1 (its
shard), runs miniclip.train.forward_backward with the global-batch loss of each CASE, averages the
gradients over the ranks, and rank 0 writes them all to OUT.npz as "<case>/<parameter>" (plus
"<case>/loss", the mean of the ranks' losses). `reference` is the same step in one process with the
whole batch, which the test runs in its own process.
"""
import copy
import math
import sys

import numpy as np

import miniclip
from miniclip import distributed, train
from tests.training.conftest import TINY

B = 4               # pairs per rank
VOCAB = 600
# name: (siglip, local_loss, gather_with_grad, accum_freq)
CASES = {
    "clip": (False, False, False, 1),
    "clip_gather_with_grad": (False, False, True, 1),
    "clip_local_loss": (False, True, True, 1),
    "clip_local_loss_accum_freq_2": (False, True, True, 2),
    "siglip": (True, False, False, 1),
    "siglip_gather_with_grad": (True, False, True, 1),
    "siglip_local_loss": (True, True, True, 1),
}


def make_model(siglip):
    config = copy.deepcopy(TINY)
    config["text_cfg"]["vocab_size"] = VOCAB
    if siglip:   # a bias of -1 rather than SigLIP's -10, so that the tiny model's gradients are not tiny
        config["init_logit_scale"], config["init_logit_bias"] = math.log(10), -1.0
    miniclip.manual_seed(0)
    return miniclip.create_model(config)


def make_batch(n):
    """n images (n, 3, 16, 16) and n captions of token ids (n, 24): SOT, 5 random tokens, EOT."""
    rng = np.random.default_rng(0)
    images = rng.standard_normal((n, 3, 16, 16)).astype(np.float32)
    tokens = np.zeros((n, 24), np.int64)
    tokens[:, 0], tokens[:, 1:6], tokens[:, 6] = VOCAB - 2, rng.integers(1, 500, (n, 5)), VOCAB - 1
    return images, tokens


def gradients(model):
    return {name: p.grad.copy() for name, p in model.named_parameters()}


def reference(case, world_size):
    """(loss, gradients) of one process with the whole batch of world_size * B pairs."""
    siglip, _, _, accum_freq = CASES[case]
    model = make_model(siglip)
    images, tokens = make_batch(world_size * B)
    loss = train.forward_backward(model, images, tokens, accum_freq)
    return loss, gradients(model)


def main(out):
    dist = distributed.init("cpu")
    images, tokens = make_batch(dist.world_size * B)
    shard = slice(dist.rank * B, (dist.rank + 1) * B)
    results = {}
    for case, (siglip, local_loss, gather_with_grad, accum_freq) in CASES.items():
        model = make_model(siglip)
        args = train.parse_args(["--distributed", *(["--local-loss"] if local_loss else []),
                                 *(["--gather-with-grad"] if gather_with_grad else [])])
        loss = train.forward_backward(model, images[shard], tokens[shard], accum_freq,
                                      train.global_batch_loss(model, dist, args))
        dist.all_reduce_gradients(model.parameters())
        results[f"{case}/loss"] = np.array(dist.mean([loss])[0])
        results.update({f"{case}/{name}": g for name, g in gradients(model).items()})
    if dist.rank == 0:
        np.savez(out, world_size=dist.world_size, **results)


if __name__ == "__main__":
    main(sys.argv[1])
