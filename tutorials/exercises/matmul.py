"""Exercise matmul: backward of z = x @ y, for matrices and for a batch of matrices times one matrix

For z = x @ y with x (M, K), y (K, N), z (M, N):  z_mn = sum_k x_mk y_kn, so

    dx_mk = sum_n dz_mn y_kn    ->   dx = dz @ y.T          (M, K)
    dy_kn = sum_m x_mk dz_mn    ->   dy = x.T @ dz          (K, N)

Check the shapes: they alone almost fix the formula. When x is a batch (B, M, K) and y one
matrix (K, N), y is used by every batch entry: its gradient is summed over the batch.

Fill in every function that raises NotImplementedError, then check your work:

    python -m miniclip.exercises check matmul exercises/matmul.py

The notebook tutorials/01_tensor_and_backward.ipynb derives this step by step.
"""

import numpy as np


def matmul_backward(dz, x, y):
    """(dx, dy) for z = x @ y; x (M, K) or (B, M, K), y (K, N), dz like z."""
    raise NotImplementedError("matmul_backward is not written yet")
