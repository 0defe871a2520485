"""Attention benchmarks at CLIP's text-tower sizes, for `python -m miniclip.bench kernels --family attention`.

B * H = 64 x 4 heads of d = 64, T = 65 and 77 tokens, float32, forward and forward + backward.
FLOPs count the matrix products only: 4 B H T^2 d forward (Q K^T and P V), and 2.5 times that
for the backward (S recomputed, dV, dP, dQ, dK), as Triton's fused-attention tutorial counts.
"""
import numpy as np

from . import numba_cpu, reference

B, H, d = 64, 4, 64


def _implementations(q, k, v, do, scale, torch):
    """({name: forward callable}, {name: forward + backward callable}) for one case."""
    def forward_and_backward(module):
        def run():
            o, lse = module.attention_forward(q, k, v, scale)
            module.attention_backward(q, k, v, o, lse, do, scale)
        return run

    forward = {"reference": lambda: reference.attention_forward(q, k, v, scale),
               "numba_cpu": lambda: numba_cpu.attention_forward(q, k, v, scale)}
    both = {"reference": forward_and_backward(reference), "numba_cpu": forward_and_backward(numba_cpu)}
    if torch is not None:
        sdpa = torch.nn.functional.scaled_dot_product_attention
        tq, tk, tv = (torch.from_numpy(x).requires_grad_() for x in (q, k, v))
        tdo = torch.from_numpy(do)

        def torch_forward():
            with torch.no_grad():
                sdpa(tq, tk, tv)

        def torch_forward_and_backward():
            tq.grad = tk.grad = tv.grad = None              # as a training step sees them
            sdpa(tq, tk, tv).backward(tdo)
        forward["torch"] = torch_forward
        both["torch"] = torch_forward_and_backward
    return forward, both


def benchmarks(torch=None):
    rng = np.random.default_rng(0)
    for T in (65, 77):
        q, k, v, do = (rng.standard_normal((B, H, T, d), dtype=np.float32) for _ in range(4))
        forward, both = _implementations(q, k, v, do, 1 / np.sqrt(d), torch)
        forward_flops = 4 * B * H * T * T * d
        yield f"forward B*H=64x4 T={T} d=64", forward, ("GFLOP/s", forward_flops)
        yield f"forward+backward B*H=64x4 T={T} d=64", both, ("GFLOP/s", 3.5 * forward_flops)
