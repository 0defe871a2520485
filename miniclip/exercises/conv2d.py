"""Exercise conv2d: the backward of a convolution written as im2col + matrix product."""
import numpy as np

from miniclip import functional as F
from miniclip.exercises._harness import Case
from miniclip.kernels.conv2d import reference

TITLE = "backward of conv2d written as im2col and a matrix product: dx (by col2im), dw and db"
TUTORIAL = "tutorials/07_conv_im2col.ipynb"
MATH = """
A convolution of x (N, C, H, W) with w (OC, C, KH, KW), bias b (OC,), stride s and zero padding p:

    cols = im2col(x)         (N, C*KH*KW, OH*OW): column l holds the C*KH*KW inputs that
                             output pixel l sees (given below)
    y[n] = w.reshape(OC, -1) @ cols[n] + b[:, None]        then reshaped to (N, OC, OH, OW)

Given dy (N, OC, OH, OW), what are dw (w's shape), db (OC,) and dx (x's shape)? Write col2im,
which takes a gradient of cols (N, C*KH*KW, OH*OW) to the gradient of x, and use it in
conv2d_backward.
"""
HINTS = (
    """
    For each image n the forward is one matrix product plus a bias: its backward is the
    matmul exercise's, with dy reshaped to (N, OC, OH*OW). What remains is to undo im2col:
    where was each entry of cols copied from, and what if a pixel was copied more than once?
    """,
    """
    dw sums over the images the matmul gradient of w (dy[n] against cols[n]); db sums dy over
    everything but OC; dcols[n] is the matmul gradient of cols[n]. col2im is im2col's adjoint: it
    walks the same kernel taps and windows as im2col, and every entry goes back onto the pixel it
    was read from, ADDED (a pixel in several windows collects several gradients). Work in the
    padded image and cut the padding off at the end: gradients of padding are dropped.
    """,
    """
    dw    = sum_n dy[n] @ cols[n].T          reshaped to w's shape
    db    = dy.sum(axis=(0, 2))              (dy as (N, OC, OH*OW))
    dcols = w.reshape(OC, -1).T @ dy         (N, C*KH*KW, OH*OW)
    dx    = col2im(dcols): for each tap (i, j),
            dx_pad[:, :, i:i + s*OH:s, j:j + s*OW:s] += dcols[:, :, i, j]   (dcols as (N, C, KH, KW, OH, OW))
            then dx = dx_pad[:, :, p:p + H, p:p + W]
    """,
)


def im2col(x, KH, KW, stride, padding):
    """cols (N, C*KH*KW, OH*OW) of x (N, C, H, W): every receptive field as a column."""
    N, C, H, W = x.shape
    OH = (H + 2 * padding - KH) // stride + 1
    OW = (W + 2 * padding - KW) // stride + 1
    x_pad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    cols = np.empty((N, C, KH, KW, OH, OW), dtype=x.dtype)
    for i in range(KH):                      # kernel tap (i, j) reads a strided window of x_pad
        for j in range(KW):
            cols[:, :, i, j] = x_pad[:, :, i:i + stride * OH:stride, j:j + stride * OW:stride]
    return cols.reshape(N, C * KH * KW, OH * OW)


def col2im(dcols, x_shape, KH, KW, stride, padding):
    """dx (x_shape) from dcols (N, C*KH*KW, OH*OW), the gradient of im2col(x, KH, KW, stride, padding)."""
    N, C, H, W = x_shape
    OH = (H + 2 * padding - KH) // stride + 1
    OW = (W + 2 * padding - KW) // stride + 1
    dcols = dcols.reshape(N, C, KH, KW, OH, OW)
    dx_pad = np.zeros((N, C, H + 2 * padding, W + 2 * padding), dtype=dcols.dtype)
    for i in range(KH):
        for j in range(KW):
            dx_pad[:, :, i:i + stride * OH:stride, j:j + stride * OW:stride] += dcols[:, :, i, j]
    return dx_pad[:, :, padding:padding + H, padding:padding + W]


def conv2d_backward(dy, x, w, stride, padding):
    """(dx, dw, db) from dy (N, OC, OH, OW), x (N, C, H, W), w (OC, C, KH, KW), int stride and padding."""
    N, OC, OH, OW = dy.shape
    KH, KW = w.shape[2:]
    cols = im2col(x, KH, KW, stride, padding)                          # (N, K, L)
    dy = dy.reshape(N, OC, OH * OW)                                     # (N, OC, L)
    dw = np.einsum("nol,nkl->ok", dy, cols).reshape(w.shape)
    dcols = w.reshape(OC, -1).T @ dy                                    # (N, K, L)
    return col2im(dcols, x.shape, KH, KW, stride, padding), dw, dy.sum(axis=(0, 2))


GIVEN = [im2col]
FILL = [col2im, conv2d_backward]
RETURNS = {"col2im": ("x",), "conv2d_backward": ("x", "w", "b")}


def cases():
    rng = np.random.default_rng(8)
    out = []
    for x_shape, w_shape, stride, padding in [((2, 3, 7, 6), (4, 3, 3, 2), 2, 1), ((1, 2, 5, 5), (3, 2, 3, 3), 1, 0),
                                              ((1, 1, 4, 4), (2, 1, 2, 2), 2, 0)]:
        def forward(x, w, b, stride=stride, padding=padding):
            return reference.conv2d_forward(x, w, b, stride, padding), (x, w, stride, padding)

        def backward(learner, dy, saved):
            dx, dw, db = learner.conv2d_backward(dy, *saved)
            return {"x": dx, "w": dw, "b": db}

        def library(x, w, b, stride=stride, padding=padding):
            return F.conv2d(x, w, b, stride=stride, padding=padding)

        inputs = {"x": rng.standard_normal(x_shape), "w": rng.standard_normal(w_shape),
                  "b": rng.standard_normal(w_shape[0])}
        out.append(Case(f"x {x_shape}, w {w_shape}, stride {stride}, padding {padding}", inputs,
                        forward, backward, library))
    return out
