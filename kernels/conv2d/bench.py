"""conv2d benchmarks at CLIP-like sizes, for `python -m miniclip.bench kernels --family conv2d`.

- patch embedding: 64 x 3 x 64 x 64 images, 8 x 8 patches (kernel = stride = 8) to 768 channels
- a ResNet 3x3 convolution: 8 x 64 x 28 x 28, stride 1, padding 1, to 64 channels
each forward and forward + backward, float32. FLOPs: 2 N OC OH OW C KH KW forward, and twice
that again for the backward (dx and dw are one GEMM of the same size each).
"""
import numpy as np

from . import numba_cpu, patch_embed, reference

CASES = [  # name, x shape, w shape, stride, padding, the fast implementation
    ("patch 64x3x64x64 k8 s8 ->768", (64, 3, 64, 64), (768, 3, 8, 8), 8, 0, patch_embed),
    ("3x3 8x64x28x28 s1 p1 ->64", (8, 64, 28, 28), (64, 64, 3, 3), 1, 1, numba_cpu),
]


def _implementations(x, w, b, dy, stride, padding, fast, torch):
    """({name: forward callable}, {name: forward + backward callable}) for one case."""
    def forward_and_backward(module):
        def run():
            module.conv2d_forward(x, w, b, stride, padding)
            module.conv2d_backward(dy, x, w, stride, padding)
        return run

    fast_name = fast.__name__.split(".")[-1]
    forward = {"reference": lambda: reference.conv2d_forward(x, w, b, stride, padding),
               fast_name: lambda: fast.conv2d_forward(x, w, b, stride, padding)}
    both = {"reference": forward_and_backward(reference), fast_name: forward_and_backward(fast)}
    if torch is not None:
        tx, tw, tb = (torch.from_numpy(a).requires_grad_() for a in (x, w, b))
        tdy = torch.from_numpy(dy)

        def torch_forward():
            with torch.no_grad():
                torch.nn.functional.conv2d(tx, tw, tb, stride=stride, padding=padding)

        def torch_forward_and_backward():
            tx.grad = tw.grad = tb.grad = None              # as a training step sees them
            torch.nn.functional.conv2d(tx, tw, tb, stride=stride, padding=padding).backward(tdy)
        forward["torch"] = torch_forward
        both["torch"] = torch_forward_and_backward
    return forward, both


def benchmarks(torch=None):
    rng = np.random.default_rng(0)
    for name, x_shape, w_shape, stride, padding, fast in CASES:
        x = rng.standard_normal(x_shape, dtype=np.float32)
        w = rng.standard_normal(w_shape, dtype=np.float32) * 0.05
        b = rng.standard_normal(w_shape[0], dtype=np.float32)
        N, OC, OH, OW = reference.conv2d_forward(x[:1], w, b, stride, padding).shape
        dy = rng.standard_normal((x_shape[0], OC, OH, OW), dtype=np.float32)
        flops = 2 * x_shape[0] * OC * OH * OW * int(np.prod(w_shape[1:]))
        forward, both = _implementations(x, w, b, dy, stride, padding, fast, torch)
        yield f"forward {name}", forward, ("GFLOP/s", flops)
        yield f"forward+backward {name}", both, ("GFLOP/s", 3 * flops)
