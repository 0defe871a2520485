"""Exercise matmul: the backward of a matrix product (and a batched one)."""
import numpy as np

from miniclip import ops
from miniclip.exercises._harness import Case

TITLE = "backward of z = x @ y, for matrices and for a batch of matrices times one matrix"
TUTORIAL = "tutorials/01_tensor_and_backward.ipynb"
MATH = """
For z = x @ y with x (M, K), y (K, N), z (M, N):  z_mn = sum_k x_mk y_kn, so

    dx_mk = sum_n dz_mn y_kn    ->   dx = dz @ y.T          (M, K)
    dy_kn = sum_m x_mk dz_mn    ->   dy = x.T @ dz          (K, N)

Check the shapes: they alone almost fix the formula. When x is a batch (B, M, K) and y one
matrix (K, N), y is used by every batch entry: its gradient is summed over the batch.
"""


def matmul_backward(dz, x, y):
    """(dx, dy) for z = x @ y; x (M, K) or (B, M, K), y (K, N), dz like z."""
    dx = dz @ y.T                                          # (..., M, K)
    dy = x.reshape(-1, x.shape[-1]).T @ dz.reshape(-1, dz.shape[-1])   # (K, N), summed over the batch
    return dx, dy


FILL = [matmul_backward]
RETURNS = {"matmul_backward": ("x", "y")}


def cases():
    rng = np.random.default_rng(1)

    def forward(x, y):
        return x @ y, (x, y)

    def backward(learner, dz, saved):
        dx, dy = learner.matmul_backward(dz, *saved)
        return {"x": dx, "y": dy}

    return [Case(f"x {xs} @ y {ys}", {"x": rng.standard_normal(xs), "y": rng.standard_normal(ys)},
                 forward, backward, ops.matmul)
            for xs, ys in [((3, 5), (5, 2)), ((1, 4), (4, 1)), ((2, 3, 5), (5, 4))]]
