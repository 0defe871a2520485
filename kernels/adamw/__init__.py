"""One AdamW optimizer step, fused: param, exp_avg and exp_avg_sq updated in place.

    adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay)

All four arrays share one shape and one float dtype; step counts from 1. The update is
torch.optim.AdamW's (see reference.py for the equations).

Implementations (see each file's docstring):
    reference.py    array operations in NumPy/CuPy: the definition
    numba_cpu.py    one @njit(parallel=True) pass over the flat arrays
    numba_cuda.py   numba.cuda kernels, v1 (a thread per element) and v2 (grid-stride loop)

Which one runs: the reference when miniclip.kernels.mode() == "reference", else numba_cpu for
NumPy arrays and the newest numba_cuda version for CuPy arrays.
"""
from .. import pick


def adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay):
    """Update param, exp_avg and exp_avg_sq in place by one AdamW step (step counts from 1)."""
    pick("adamw", param).adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay)
