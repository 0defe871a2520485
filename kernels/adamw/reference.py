"""AdamW (Loshchilov & Hutter, arXiv:1711.05101), one step, in place: the definition.

Exactly torch.optim.AdamW's update (amsgrad off), for parameters p, gradient g, first and
second moments m and v, at step t = 1, 2, ...:

    p = p - lr * weight_decay * p                   decoupled weight decay (not added to g)
    m = beta1 m + (1 - beta1) g                     written as torch's lerp, m + (1 - beta1)(g - m)
    v = beta2 v + (1 - beta2) g^2
    m_hat = m / (1 - beta1^t),  v_hat = v / (1 - beta2^t)     bias corrections: m, v start at 0
    p = p - lr * m_hat / (sqrt(v_hat) + eps)

The last line is computed as torch computes it, p - (lr / (1 - beta1^t)) * (m / denom) with
denom = sqrt(v) / sqrt(1 - beta2^t) + eps, so float32 results round the same way. Written
against `xp` (NumPy or CuPy); tests/kernels/test_adamw.py runs it step for step next to
torch.optim.AdamW in float32 and float64.
"""
import math

from miniclip.backend import get_array_module

from . import checks


def adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay):
    """Update param, exp_avg and exp_avg_sq in place by one AdamW step (step counts from 1)."""
    checks.step_inputs(param, grad, exp_avg, exp_avg_sq, step, beta1, beta2)
    xp = get_array_module(param)
    # Python floats (not NumPy float64 scalars) keep the arrays' dtype in every product below.
    lr, beta1, beta2, eps, weight_decay = map(float, (lr, beta1, beta2, eps, weight_decay))
    param *= 1 - lr * weight_decay
    exp_avg += (1 - beta1) * (grad - exp_avg)
    exp_avg_sq *= beta2
    exp_avg_sq += (1 - beta2) * grad * grad
    step_size = lr / (1 - beta1 ** step)
    denom = xp.sqrt(exp_avg_sq) / math.sqrt(1 - beta2 ** step) + eps
    param -= step_size * (exp_avg / denom)


def adamw_multi_step(param, grad, exp_avg, exp_avg_sq, segments):
    """Many tensors in flat buffers (checks.Segment), each updated by adamw_step above, in place."""
    checks.step_each(adamw_step, param, grad, exp_avg, exp_avg_sq, segments)
