"""One AdamW optimizer step, fused: param, exp_avg and exp_avg_sq updated in place.

    adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay)

All four arrays share one shape and one float dtype; step counts from 1. The update is
torch.optim.AdamW's (see reference.py for the equations).

    adamw_multi_step(param, grad, exp_avg, exp_avg_sq, segments)

The same step for many tensors at once, stored in flat buffers: each checks.Segment says where
one tensor lies in param and the moments, where its gradient lies in grad, and its own step
count and hyper-parameters. miniclip.optim.AdamW uses it: on a GPU it is one kernel launch
per step (numba_cuda v3) instead of one per parameter.

Implementations (see each file's docstring):
    reference.py    array operations in NumPy/CuPy: the definition
    numba_cpu.py    one @njit pass over the flat arrays
    numba_cuda.py   numba.cuda kernels, v1 (a thread per element), v2 (grid-stride loop) and
                    v3 (multi-tensor: chunks of every tensor in one launch)

Which one runs: the reference when miniclip.kernels.mode() == "reference", else numba_cpu for
NumPy arrays and numba_cuda for CuPy arrays (v2 for one tensor, v3 for many).
"""
from .. import pick
from .checks import Segment  # noqa: F401  (the multi-step's table row, for callers)


def adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay):
    """Update param, exp_avg and exp_avg_sq in place by one AdamW step (step counts from 1)."""
    pick("adamw", param).adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay)


def adamw_multi_step(param, grad, exp_avg, exp_avg_sq, segments):
    """Update every segment (a Segment: offsets, size, step, hyper-parameters) of the flat param and
    moment buffers in place by one AdamW step; the gradients are read from the flat grad buffer."""
    pick("adamw", param).adamw_multi_step(param, grad, exp_avg, exp_avg_sq, segments)
