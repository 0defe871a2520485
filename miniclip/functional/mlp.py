"""mlp: the transformer's feed-forward block, c_proj(act(c_fc(x))), as one Function that recomputes
the activation in its backward instead of keeping it.

With x as (N, W) (N the product of the leading dimensions), W1 (H, W), W2 (out, H), act = gelu
(exact, erf) or quick_gelu:

    forward     h = x W1^T             (N, H)      kept
                a = act(h + b1)        (N, H)      dropped once c_proj has read it
                y = a W2^T + b2        (N, out)
    backward    a  = act(h + b1)       (N, H)      recomputed: one more elementwise pass
                dW2 = dy^T a           (out, H)    then a is freed
                db2 = sum over N of dy
                da = dy W2             (N, H)
                dh = da * act'(h + b1) (N, H)      then da is freed
                dW1 = dh^T x           (H, W)
                db1 = sum over N of dh
                dx  = dh W1            (N, W)      only when x needs a gradient

b1 is added inside the activation's kernel pass (kernels/layer_norm: act(x + bias)) rather than
into h after the GEMM: an in-place bias add over (N, H) is a pass of its own, and it cost more
than the GELU pass itself (1.7 against 1.4 ms on 4160 x 1024, measured).

Why recompute (selective activation recomputation, Korthikanti et al. 2022, "Reducing Activation
Recomputation in Large Transformer Models"): the composed linear -> act -> linear keeps three
arrays until the backward, x for c_fc, h for the activation and a for c_proj; a is a function of
h, so FusedMLP keeps only x and h and saves N*H floats per block. On a batch-256 step of
tiny-vit-s (H = 1024) that is 256*65*1024 float32 = 68 MB per image block and 256*32*1024 = 34 MB
per text block: ~0.5 GB over its 6 image and 3 full text blocks (the text tower's last block
computes one row). The price is one more elementwise pass over (N, H) in the backward, cheap beside
the six GEMMs of N*W*H multiply-adds each (two forward, four backward) around it.

FusedMLP runs when all five tensors are float32 or float64 of one dtype, both biases are given and
amp.autocast is off; otherwise mlp runs mlp_composed, which is exactly linear(act(linear(...)))
(under autocast: 16-bit products rounded as F.linear rounds them, miniclip/amp.py).
Checked by tests/functional/test_mlp.py: float64 gradcheck for both activations, FusedMLP against
mlp_composed (values and the five gradients, float32 and float64, both kernel modes), that the
node keeps exactly x and h, the autocast fallback, and torch.nn.functional on the same inputs.
"""
import numpy as np

from miniclip import amp
from miniclip.functional.activation import gelu, quick_gelu
from miniclip.functional.linear import linear, sum_rows
from miniclip.kernels import layer_norm as activation_kernels
from miniclip.tensor import Function, as_tensor

# name: (forward kernel, backward kernel, composed activation)
ACTIVATIONS = {
    "gelu": (activation_kernels.gelu_forward, activation_kernels.gelu_backward, gelu),
    "quick_gelu": (activation_kernels.quick_gelu_forward, activation_kernels.quick_gelu_backward, quick_gelu),
}


class FusedMLP(Function):
    """y = act(x W1^T + b1) W2^T + b2, keeping x and h but not act(h) (the module docstring)."""

    def forward(self, x, w1, b1, w2, b2, activation="gelu"):
        self.x2 = x.reshape(-1, x.shape[-1])                        # (N, W); a view when x is contiguous
        self.w1, self.b1, self.w2, self.activation = w1, b1, w2, activation
        self.h = amp.matmul_2d(self.x2, w1.T)                       # (N, H), without b1
        a = ACTIVATIONS[activation][0](self.h, b1)                  # (N, H) = act(h + b1), not kept
        y = amp.matmul_2d(a, w2.T, b2)                              # (N, out)
        return y.reshape(x.shape[:-1] + (w2.shape[0],))             # (..., out)

    def backward(self, dy):
        act_forward, act_backward, _ = ACTIVATIONS[self.activation]
        dy2 = dy.reshape(-1, dy.shape[-1])                          # (N, out)
        a = act_forward(self.h, self.b1)                            # (N, H): the same values as forward's
        dw2 = dy2.T @ a                                             # (out, H)
        del a                                                       # the backward's peak: h, da, dh
        da = dy2 @ self.w2                                          # (N, H)
        dh = act_backward(da, self.h, self.b1)                      # (N, H)
        del da
        x = self.inputs[0]
        dx = (dh @ self.w1).reshape(x.shape) if x.requires_grad else None   # (..., W)
        return dx, dh.T @ self.x2, sum_rows(dh), dw2, sum_rows(dy2)         # dW1 (H, W), db1 (H,), db2 (out,)


def mlp(x, fc_weight, fc_bias, proj_weight, proj_bias, activation="gelu"):
    """linear(act(linear(x, fc_weight, fc_bias)), proj_weight, proj_bias): x (..., W),
    fc_weight (H, W), fc_bias (H,) or None, proj_weight (out, H), proj_bias (out,) or None;
    activation "gelu" (exact) or "quick_gelu". Runs FusedMLP where it applies (module docstring)."""
    x, fc_weight, proj_weight = as_tensor(x), as_tensor(fc_weight), as_tensor(proj_weight)
    fc_bias, proj_bias = [None if b is None else as_tensor(b) for b in (fc_bias, proj_bias)]
    tensors = (x, fc_weight, fc_bias, proj_weight, proj_bias)
    _check(*tensors, activation)
    if (fc_bias is not None and proj_bias is not None and amp.autocast_dtype() is None
            and len({t.dtype for t in tensors}) == 1 and x.dtype in (np.float32, np.float64)):
        return FusedMLP.apply(*tensors, activation=activation)
    return mlp_composed(*tensors, activation=activation)


def mlp_composed(x, fc_weight, fc_bias, proj_weight, proj_bias, activation="gelu"):
    """The same from F.linear and F.gelu / F.quick_gelu (their own backwards): FusedMLP's oracle."""
    act = ACTIVATIONS[activation][2]
    return linear(act(linear(x, fc_weight, fc_bias)), proj_weight, proj_bias)


def _check(x, fc_weight, fc_bias, proj_weight, proj_bias, activation):
    if activation not in ACTIVATIONS:
        raise ValueError(f"mlp: activation must be one of {tuple(ACTIVATIONS)}, got {activation!r}")
    fits = (x.ndim >= 1 and fc_weight.ndim == 2 and proj_weight.ndim == 2
            and x.shape[-1] == fc_weight.shape[1] and proj_weight.shape[1] == fc_weight.shape[0]
            and (fc_bias is None or fc_bias.shape == fc_weight.shape[:1])
            and (proj_bias is None or proj_bias.shape == proj_weight.shape[:1]))
    if not fits:
        shapes = ", ".join(f"{name} {None if t is None else t.shape}" for name, t in [
            ("x", x), ("fc_weight", fc_weight), ("fc_bias", fc_bias), ("proj_weight", proj_weight),
            ("proj_bias", proj_bias)])
        raise ValueError("mlp: expected x (..., W), fc_weight (H, W), fc_bias (H,), proj_weight (out, H), "
                         f"proj_bias (out,), got {shapes}")
