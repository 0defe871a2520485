"""Benchmarks for layer norm, GELU and QuickGELU at CLIP sizes, timed by `python -m miniclip.bench kernels`.

4160 rows = a batch of 64 captions of 65 tokens (or 64 images of 65 patch tokens); layer norm
over width 256 (a small CLIP), GELU on the 4x wider MLP hidden layer. Work is the bytes a fused
kernel must move, so the reference's temporaries show up as a lower GB/s. float32.
"""
import numpy as np

from miniclip.backend import has_gpu

from . import numba_cpu, reference

EPS = 1e-5


def _cuda_implementations(name, versions, *args):
    """numba_cuda versions on CuPy copies of args, synchronised after each call."""
    import cupy
    from . import numba_cuda
    gpu_args = [cupy.asarray(a) if isinstance(a, np.ndarray) else a for a in args]

    def timed(**kw):
        def call():
            getattr(numba_cuda, name)(*gpu_args, **kw)
            cupy.cuda.Device().synchronize()
        return call
    if versions is None:
        return {"numba_cuda": timed()}
    return {f"numba_cuda_v{v}": timed(version=v) for v in versions}


def benchmarks(torch=None):
    rng = np.random.default_rng(0)
    N, C = 4160, 256
    x = rng.standard_normal((N, C)).astype(np.float32)
    weight = (1 + 0.1 * rng.standard_normal(C)).astype(np.float32)
    bias = (0.1 * rng.standard_normal(C)).astype(np.float32)
    dy = rng.standard_normal((N, C)).astype(np.float32)
    _, mean, rstd = reference.layer_norm_forward(x, weight, bias, EPS)
    forward = {"reference": lambda: reference.layer_norm_forward(x, weight, bias, EPS),
               "numba_cpu": lambda: numba_cpu.layer_norm_forward(x, weight, bias, EPS)}
    backward = {"reference": lambda: reference.layer_norm_backward(dy, x, weight, mean, rstd),
                "numba_cpu": lambda: numba_cpu.layer_norm_backward(dy, x, weight, mean, rstd)}
    if torch is not None:
        F = torch.nn.functional
        tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, weight, bias))
        ty = F.layer_norm(tx, (C,), tw, tb, EPS)
        tdy = torch.tensor(dy)
        forward["torch"] = lambda: F.layer_norm(tx.detach(), (C,), tw.detach(), tb.detach(), EPS)
        backward["torch"] = lambda: torch.autograd.grad(ty, [tx, tw, tb], tdy, retain_graph=True)
    if has_gpu():
        forward.update(_cuda_implementations("layer_norm_forward", (1, 2), x, weight, bias, EPS))
        backward.update(_cuda_implementations("layer_norm_backward", (1, 2), dy, x, weight, mean, rstd))
    # forward: read x, write y, mean, rstd; backward: read dy, x, mean, rstd, write dx
    yield f"layer_norm forward {N}x{C}", forward, ("GB/s", 2 * x.nbytes + 2 * N * 8)
    yield f"layer_norm backward {N}x{C}", backward, ("GB/s", 3 * x.nbytes + 2 * N * 8)

    h = rng.standard_normal((N, 4 * C)).astype(np.float32)
    dh = rng.standard_normal((N, 4 * C)).astype(np.float32)
    torch_fns = {}
    if torch is not None:
        torch_fns = {"gelu": torch.nn.functional.gelu, "quick_gelu": lambda t: t * torch.sigmoid(1.702 * t)}
    for activation in ("gelu", "quick_gelu"):
        fwd, bwd = f"{activation}_forward", f"{activation}_backward"
        forward = {"reference": lambda fwd=fwd: getattr(reference, fwd)(h),
                   "numba_cpu": lambda fwd=fwd: getattr(numba_cpu, fwd)(h)}
        backward = {"reference": lambda bwd=bwd: getattr(reference, bwd)(dh, h),
                    "numba_cpu": lambda bwd=bwd: getattr(numba_cpu, bwd)(dh, h)}
        if torch is not None:
            fn = torch_fns[activation]
            th = torch.tensor(h, requires_grad=True)
            ty = fn(th)
            forward["torch"] = lambda fn=fn, th=th: fn(th.detach())
            tdh = torch.as_tensor(dh)
            backward["torch"] = lambda ty=ty, th=th: torch.autograd.grad(ty, th, tdh, retain_graph=True)
        if has_gpu():
            forward.update(_cuda_implementations(fwd, None, h))
            backward.update(_cuda_implementations(bwd, None, dh, h))
        yield f"{activation} forward {N}x{4 * C}", forward, ("GB/s", 2 * h.nbytes)
        yield f"{activation} backward {N}x{4 * C}", backward, ("GB/s", 3 * h.nbytes)
