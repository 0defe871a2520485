"""Exercise matmul: the backward of a matrix product (and a batched one)."""
import numpy as np

from miniclip import ops
from miniclip.exercises._harness import Case

TITLE = "backward of z = x @ y, for matrices and for a batch of matrices times one matrix"
TUTORIAL = "tutorials/01_tensor_and_backward.ipynb"
MATH = """
z = x @ y with x (M, K), y (K, N), z (M, N):  z_mn = sum_k x_mk y_kn.

Given dz (M, N), what are dx (M, K) and dy (K, N)? Then the batched case: x (B, M, K) times one
matrix y (K, N) gives z (B, M, N); dx is (B, M, K), and dy is still (K, N).
"""
HINTS = (
    """
    Write one entry: which z_mn does x_mk appear in, and multiplied by what? The shapes alone
    almost fix the answer: dx (M, K) must be built from dz (M, N) and y (K, N), and only one
    product of the two has that shape.
    """,
    """
    dx_mk = sum_n dz_mn * (dz_mn/dx_mk) = sum_n dz_mn y_kn: a sum over n, which is a matrix
    product with y transposed. dy_kn is a sum over m in the same way. In the batched case y is used
    by every batch entry, so its gradient sums over the batch too: flatten (B, M) into rows.
    """,
    """
    dx = dz @ y.T                  (M, K), and (B, M, K) in the batched case
    dy = x.T @ dz                  (K, N); batched: x.reshape(-1, K).T @ dz.reshape(-1, N)
    """,
)


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
