"""AdamW on the CPU: one fused @njit pass over param, grad and both moments (math in reference.py).

The reference makes about a dozen passes over memory (one per array operation, with temporaries);
this loop reads each element of the four arrays once and writes three of them once, which is
all an optimizer step needs, since it does a few flops per element and is limited by memory
bandwidth. The scalars are cast to the arrays' dtype first, so a float32 step does float32
arithmetic in the same order as torch.

error_model="numpy" lets a division by zero give inf, as in NumPy, instead of raising
ZeroDivisionError: without it every m / denom carries a branch, LLVM cannot vectorise the loop,
and a step over 20M float32 parameters takes 78 ms; with it, 16 ms (AVX-512 vsqrtps/vdivps).
The loop is serial on purpose. prange over the 2 cores brings it to 12 ms, but after a parallel
region Numba's OpenMP threads keep spinning for a while, and a 3.5 ms GEMM run right after it
took 6.6 ms (measured): the next forward pass would lose what the optimizer step gained.
Checked against reference.py step for step in tests/kernels/test_adamw.py.
"""
import math

from numba import njit

from . import checks


@njit(cache=True, error_model="numpy")
def _adamw(param, grad, exp_avg, exp_avg_sq, decay, one_minus_beta1, beta2, one_minus_beta2, step_size,
           bias_correction2_sqrt, eps):
    for idx in range(param.size):
        g = grad[idx]
        m = exp_avg[idx] + one_minus_beta1 * (g - exp_avg[idx])
        v = exp_avg_sq[idx] * beta2 + one_minus_beta2 * g * g
        denom = math.sqrt(v) / bias_correction2_sqrt + eps
        param[idx] = param[idx] * decay - step_size * (m / denom)
        exp_avg[idx] = m
        exp_avg_sq[idx] = v


def adamw_step(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay):
    """Update param, exp_avg and exp_avg_sq in place by one AdamW step (step counts from 1)."""
    checks.step_inputs(param, grad, exp_avg, exp_avg_sq, step, beta1, beta2)
    arrays = checks.contiguous([param, grad, exp_avg, exp_avg_sq])
    _adamw(*(x.reshape(-1) for x in arrays), *checks.scalars(param.dtype, step, lr, beta1, beta2, eps, weight_decay))
    checks.write_back([param, exp_avg, exp_avg_sq], [arrays[0], arrays[2], arrays[3]])


def adamw_multi_step(param, grad, exp_avg, exp_avg_sq, segments):
    """Many tensors in flat buffers (checks.Segment), each updated by adamw_step above, in place."""
    checks.step_each(adamw_step, param, grad, exp_avg, exp_avg_sq, segments)
