"""AdamW benchmark on 20M float32 parameters (a small CLIP; ViT-B/32's image tower alone has 88M),
for `python -m miniclip.bench kernels --family adamw`.

Bytes moved: each step reads param, grad, exp_avg, exp_avg_sq and writes three of them, 7 x 4
bytes per parameter, the least any implementation can move; the reference's temporaries move more.
"""
import numpy as np

from . import numba_cpu, reference

N_PARAMS = 20_000_000


def benchmarks(torch=None):
    rng = np.random.default_rng(0)
    param = rng.standard_normal(N_PARAMS, dtype=np.float32)
    grad = rng.standard_normal(N_PARAMS, dtype=np.float32)
    exp_avg, exp_avg_sq = np.zeros_like(param), np.zeros_like(param)
    hyper = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1)
    # The step number stays 1: every call does the same work, and the values stay finite.
    implementations = {
        "reference": lambda: reference.adamw_step(param, grad, exp_avg, exp_avg_sq, 1, **hyper),
        "numba_cpu": lambda: numba_cpu.adamw_step(param, grad, exp_avg, exp_avg_sq, 1, **hyper),
    }
    if torch is not None:
        tparam = torch.from_numpy(param.copy())
        tparam.grad = torch.from_numpy(grad)
        for name, options in (("torch", dict(foreach=False)), ("torch fused", dict(fused=True))):
            optimizer = torch.optim.AdamW([tparam], lr=hyper["lr"], betas=(hyper["beta1"], hyper["beta2"]),
                                          eps=hyper["eps"], weight_decay=hyper["weight_decay"], **options)
            implementations[name] = optimizer.step
    yield "adamw 20M float32", implementations, ("GB/s", 7 * 4 * N_PARAMS)
