"""Exercise conv2d: backward of conv2d through im2col: dw and db from the columns, dx by col2im

A convolution of x (N, C, H, W) with w (OC, C, KH, KW), stride s and zero padding p:

    cols = im2col(x)         (N, C*KH*KW, OH*OW): column l holds the C*KH*KW inputs that
                             output pixel l sees (given below)
    y[n] = w.reshape(OC, -1) @ cols[n] + b[:, None]        then reshaped to (N, OC, OH, OW)

It is a matrix product, so its backward is a matrix product's (dy reshaped to (N, OC, OH*OW)):

    dw    = sum_n dy[n] @ cols[n].T          reshaped to w's shape
    db    = dy summed over n, oh, ow
    dcols = w.reshape(OC, -1).T @ dy[n]      (C*KH*KW, OH*OW) for each n
    dx    = col2im(dcols)

col2im is im2col's adjoint: every entry of dcols is ADDED back onto the input pixel it was
copied from (a pixel in several windows collects several gradients); entries that came from
the padding are dropped.

Fill in every function that raises NotImplementedError, then check your work:

    python -m miniclip.exercises check conv2d exercises/conv2d.py

The notebook tutorials/07_conv_im2col.ipynb derives this step by step.
"""

import numpy as np


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
    """dx (x_shape) from dcols (N, C*KH*KW, OH*OW): each column entry added back where im2col read it."""
    raise NotImplementedError("col2im is not written yet")


def conv2d_backward(dy, x, w, stride, padding):
    """(dx, dw, db) from dy (N, OC, OH, OW), x (N, C, H, W), w (OC, C, KH, KW), int stride and padding."""
    raise NotImplementedError("conv2d_backward is not written yet")
