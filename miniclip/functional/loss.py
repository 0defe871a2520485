"""Cross-entropy of logits against class indices, with optional label smoothing.

For a row of logits x (C classes) and its target class t, with p = softmax(x) and the target
distribution q (label smoothing eps spreads eps of the mass evenly over all C classes):

    q_c    = (1 - eps) [c == t] + eps / C
    loss   = -sum_c q_c log p_c          = -(1 - eps) log p_t - eps/C sum_c log p_c
    d loss / d x_c = p_c - q_c           (because sum_c q_c = 1)

log p is computed as x - max(x) - log sum exp(x - max(x)), so logits of +-1e4 do not overflow.
The losses of the N rows are averaged (reduction='mean'), summed ('sum') or returned ('none').

Without label smoothing (q is the one-hot target), cross_entropy runs the fused kernel
miniclip.kernels.softmax_xent through FusedCrossEntropy: one pass per row for the loss and its
log-sum-exp, and a backward that recomputes softmax from the saved lse; with label smoothing it
runs CrossEntropy, written in array operations, which stays as the kernel's test oracle.

Checked by tests/functional/test_loss.py: float64 gradcheck of both, the fused against
CrossEntropy in both kernel modes, torch.nn.functional.cross_entropy on the same inputs (values
and gradients, every reduction, with and without label smoothing), rows of +-1e4, and the
error for a target out of range.
"""
from miniclip.backend import get_array_module, to_device
from miniclip.kernels import softmax_xent as softmax_xent_kernels
from miniclip.tensor import Function, Tensor, as_tensor


class CrossEntropy(Function):
    """The loss and its backward p - q in one node; `target` is an integer array of shape (N,).

    Forward keeps p - q (N, C), which is the whole backward up to the factor dy:
        reduction 'none':  dx_ic = dy_i (p_ic - q_ic)
        reduction 'sum':   dx_ic = dy   (p_ic - q_ic)
        reduction 'mean':  dx_ic = dy   (p_ic - q_ic) / N
    """

    def forward(self, logits, target=None, reduction="mean", label_smoothing=0.0):
        xp = get_array_module(logits)
        N, C = logits.shape
        z = logits - logits.max(axis=1, keepdims=True)
        log_p = z - xp.log(xp.exp(z).sum(axis=1, keepdims=True))          # (N, C)
        q = xp.full((N, C), label_smoothing / C, dtype=logits.dtype)
        q[xp.arange(N), target] += 1 - label_smoothing
        losses = -(q * log_p).sum(axis=1)                                 # (N,)
        self.p_minus_q = xp.exp(log_p) - q
        self.reduction = reduction
        if reduction == "none":
            return losses
        return losses.sum() if reduction == "sum" else losses.mean()

    def backward(self, dy):
        if self.reduction == "none":
            return self.p_minus_q * dy[:, None]
        if self.reduction == "sum":
            return self.p_minus_q * dy
        return self.p_minus_q * (dy / self.p_minus_q.shape[0])


class FusedCrossEntropy(Function):
    """The loss by the softmax_xent kernel: per-row losses and lse in one pass; the backward is
    (softmax - onehot) * dy_i, each row's dy_i from the reduction (dy, or dy / N for the mean)."""

    def forward(self, logits, target=None, reduction="mean"):
        losses, self.lse = softmax_xent_kernels.softmax_xent_forward(logits, target)      # (N,), (N,)
        self.logits, self.target, self.reduction = logits, target, reduction
        if reduction == "none":
            return losses
        return losses.sum() if reduction == "sum" else losses.mean()

    def backward(self, dy):
        xp = get_array_module(dy)
        N = self.logits.shape[0]
        if self.reduction == "none":
            dy_rows = dy                                                  # (N,)
        else:
            dy_rows = xp.broadcast_to(dy / N if self.reduction == "mean" else dy, (N,))
        return softmax_xent_kernels.softmax_xent_backward(self.logits, self.target, self.lse,
                                                          dy_rows.astype(self.logits.dtype, copy=False))


def cross_entropy(input, target, *, reduction="mean", label_smoothing=0.0):
    """torch.nn.functional.cross_entropy for logits `input` (N, C) and class indices `target` (N,)
    (a Tensor, NumPy/CuPy array or list of ints). Class weights and ignore_index are not supported."""
    input = as_tensor(input)
    if input.ndim != 2:
        raise ValueError(f"cross_entropy: expected logits of shape (N, C), got {input.shape}")
    N, C = input.shape
    target = target.data if isinstance(target, Tensor) else target
    target = to_device(target, input.device)
    if target.shape != (N,) or target.dtype.kind not in "iu":
        raise ValueError(f"cross_entropy: target must hold N = {N} integer class indices, shape ({N},), "
                         f"got shape {target.shape} of dtype {target.dtype} for logits {input.shape}")
    if N and not (0 <= int(target.min()) and int(target.max()) < C):
        raise ValueError(f"cross_entropy: target values must lie in [0, {C}) for logits {input.shape}, "
                         f"got min {int(target.min())}, max {int(target.max())}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if not 0 <= label_smoothing <= 1:
        raise ValueError(f"cross_entropy: label_smoothing must lie in [0, 1], got {label_smoothing}")
    if label_smoothing == 0 and N and C and input.dtype.name in ("float32", "float64"):
        return FusedCrossEntropy.apply(input, target=target, reduction=reduction)
    return CrossEntropy.apply(input, target=target, reduction=reduction, label_smoothing=label_smoothing)
