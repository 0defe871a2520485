"""Softmax cross-entropy and the CLIP loss in plain NumPy: the definition of correct.

Row-wise cross-entropy with integer targets t, for logits x of shape (N, C):

    lse_i   = log sum_j exp(x_ij)                 computed as m_i + log sum_j exp(x_ij - m_i),
                                                  m_i = max_j x_ij, so no exp overflows
    loss_i  = lse_i - x_i,t_i                     (= -log softmax(x_i)[t_i])
    dx_ij   = (softmax(x_i)_j - [j == t_i]) * dy_i,    softmax(x_i)_j = exp(x_ij - lse_i)

The CLIP loss over a square logits matrix S = logit_scale * I T^T (B, B), the pair (i, i)
being the positive for row i (image -> text) and for column i (text -> image):

    loss    = ( mean_i (lse_row_i - S_ii) + mean_j (lse_col_j - S_jj) ) / 2
    dS_ij   = dy / (2B) * ( exp(S_ij - lse_row_i) + exp(S_ij - lse_col_j) - 2 [i == j] )
    dscale  = sum_ij dS_ij * sims_ij              (sims = I T^T, the unscaled similarities)

Everything is computed in float64, whatever the input dtype, and `lse` is returned in float64:
at |x| ~ 1e4 a float32 lse is off by up to half an ulp of 1e4 (~5e-4), and exp(x - lse) would
carry that as a 5e-4 relative error into every gradient. Outputs other than lse have the
logits' dtype. Written with `xp` so it also runs on CuPy arrays (slowly, op by op).

Checked in tests/kernels/test_softmax_xent.py: the backward against float64 central
differences, forward and backward against torch (F.cross_entropy, OpenCLIP's ClipLoss).
"""
from miniclip.backend import get_array_module


def logsumexp_rows(x):
    """lse_i = log sum_j exp(x_ij), in float64, stable: the max is subtracted before exp."""
    xp = get_array_module(x)
    x = x.astype(xp.float64)
    m = x.max(axis=1)                                                # (N,)
    return m + xp.log(xp.exp(x - m[:, None]).sum(axis=1))            # (N,)


def softmax_xent_forward(logits, targets):
    """(loss, lse): per-row losses (N,) in the logits' dtype, and lse (N,) in float64."""
    xp = get_array_module(logits)
    lse = logsumexp_rows(logits)                                     # (N,)
    rows = xp.arange(logits.shape[0])
    loss = lse - logits[rows, targets].astype(xp.float64)            # (N,)
    return loss.astype(logits.dtype), lse


def softmax_xent_backward(logits, targets, lse, dy):
    """dlogits (N, C) = (softmax - onehot) * dy, softmax recomputed from the saved lse."""
    xp = get_array_module(logits)
    p = xp.exp(logits.astype(xp.float64) - lse[:, None])             # (N, C) softmax
    rows = xp.arange(logits.shape[0])
    p[rows, targets] -= 1.0
    return (p * dy.astype(xp.float64)[:, None]).astype(logits.dtype)


def clip_loss_forward(logits):
    """(loss, lse_row, lse_col): the symmetric CLIP loss (a 0-d array) and both lse (B,)."""
    xp = get_array_module(logits)
    lse_row = logsumexp_rows(logits)                                 # (B,) image -> text
    lse_col = logsumexp_rows(logits.T)                               # (B,) text -> image
    diag = xp.diagonal(logits).astype(xp.float64)                    # (B,) the positives
    loss = ((lse_row - diag).mean() + (lse_col - diag).mean()) / 2
    return loss.astype(logits.dtype), lse_row, lse_col


def clip_loss_backward(logits, lse_row, lse_col, dy, sims=None):
    """(dlogits, dscale): the gradient of the CLIP loss times dy, w.r.t. the logits and, when the
    unscaled similarities `sims` are given, w.r.t. logit_scale (else dscale is None)."""
    xp = get_array_module(logits)
    B = logits.shape[0]
    x = logits.astype(xp.float64)
    p_row = xp.exp(x - lse_row[:, None])                             # (B, B) softmax of each row
    p_col = xp.exp(x - lse_col[None, :])                             # (B, B) softmax of each column
    dlogits = float(dy) / (2 * B) * (p_row + p_col - 2 * xp.eye(B))  # (B, B)
    dscale = None
    if sims is not None:
        dscale = (dlogits * sims.astype(xp.float64)).sum().astype(logits.dtype)
    return dlogits.astype(logits.dtype), dscale
