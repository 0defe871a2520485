"""Benchmarks for softmax_xent and clip_loss at CLIP sizes, timed by `python -m miniclip.bench kernels`.

Work is counted as the bytes a fused kernel must move (read the logits once, write what it
returns), so GB/s compares every implementation against the same napkin number: the reference's
extra passes and temporaries show up as a lower rate. float32, as in CLIP training.
"""
from functools import partial

import numpy as np

from miniclip.backend import has_gpu

from . import numba_cpu, reference


def _inputs(N, C, seed=0):
    rng = np.random.default_rng(seed)
    logits = (3 * rng.standard_normal((N, C))).astype(np.float32)
    return logits, rng.integers(0, C, N), rng.standard_normal(N).astype(np.float32)


def _cuda_implementations(fn_names, *args):
    """numba_cuda v1..vN (and cupy_raw where it has the kernel) on CuPy copies of args, synchronised."""
    import cupy
    from . import cupy_raw, numba_cuda
    gpu_args = [cupy.asarray(a) if isinstance(a, np.ndarray) else a for a in args]

    def timed(fn, **kw):
        def call():
            fn(*gpu_args, **kw)
            cupy.cuda.Device().synchronize()
        return call
    name, versions = fn_names
    impls = {f"numba_cuda_v{v}": timed(getattr(numba_cuda, name), version=v) for v in versions}
    if hasattr(cupy_raw, name):
        impls["cupy_raw"] = timed(getattr(cupy_raw, name))
    return impls


def benchmarks(torch=None):
    for N, C in [(256, 256), (1024, 1024)]:
        x, t, dy = _inputs(N, C)
        _, lse = reference.softmax_xent_forward(x, t)
        forward = {name: partial(module.softmax_xent_forward, x, t)
                   for name, module in [("reference", reference), ("numba_cpu", numba_cpu)]}
        backward = {name: partial(module.softmax_xent_backward, x, t, lse, dy)
                    for name, module in [("reference", reference), ("numba_cpu", numba_cpu)]}
        if torch is not None:
            F = torch.nn.functional
            tx, tt, tdy = torch.tensor(x, requires_grad=True), torch.tensor(t), torch.tensor(dy)
            tloss = F.cross_entropy(tx, tt, reduction="none")
            forward["torch"] = partial(F.cross_entropy, tx.detach(), tt, reduction="none")
            backward["torch"] = partial(torch.autograd.grad, tloss, tx, tdy, retain_graph=True)
        if has_gpu():
            forward.update(_cuda_implementations(("softmax_xent_forward", (1, 2, 3)), x, t))
            backward.update(_cuda_implementations(("softmax_xent_backward", (1, 2, 3)), x, t, lse, dy))
        # forward: read logits, targets, write loss, lse; backward: read logits, targets, lse, dy, write dlogits
        yield f"softmax_xent forward {N}x{C}", forward, ("GB/s", x.nbytes + t.nbytes + N * (4 + 8))
        yield f"softmax_xent backward {N}x{C}", backward, ("GB/s", 2 * x.nbytes + t.nbytes + N * (8 + 4))

    for B in (256, 1024):
        rng = np.random.default_rng(B)
        features = rng.standard_normal((2, B, 64))
        features /= np.linalg.norm(features, axis=-1, keepdims=True)
        sims = (features[0] @ features[1].T).astype(np.float32)           # (B, B)
        S = 100.0 * sims                                                  # (B, B) logits
        _, lse_row, lse_col = reference.clip_loss_forward(S)
        forward = {name: partial(module.clip_loss_forward, S)
                   for name, module in [("reference", reference), ("numba_cpu", numba_cpu)]}
        backward = {name: partial(module.clip_loss_backward, S, lse_row, lse_col, 1.0, sims)
                    for name, module in [("reference", reference), ("numba_cpu", numba_cpu)]}
        if torch is not None:
            F = torch.nn.functional
            labels = torch.arange(B)

            def openclip_loss(logits, labels=labels):       # OpenCLIP's ClipLoss on given logits
                return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
            tscale = torch.tensor(100.0, requires_grad=True)
            tS = tscale * torch.tensor(sims)
            tloss = openclip_loss(tS)
            forward["torch"] = partial(openclip_loss, tS.detach())
            backward["torch"] = partial(torch.autograd.grad, tloss, [tS, tscale], retain_graph=True)
        if has_gpu():
            forward.update(_cuda_implementations(("clip_loss_forward", (1, 2)), S))
            backward.update(_cuda_implementations(("clip_loss_backward", (1, 2)), S, lse_row, lse_col, 1.0, sims))
        # forward: read S once, write both lse; backward: read S, sims and both lse, write dS
        yield f"clip_loss forward B={B}", forward, ("GB/s", S.nbytes + 2 * B * 8)
        yield f"clip_loss backward B={B}", backward, ("GB/s", 3 * S.nbytes + 2 * B * 8)
