"""AdamW in numba.cuda: one fused pass, every version kept and numbered (math in reference.py).

Each element's update reads param, grad and both moments once and writes three of them once
(7 memory operations for ~15 flops), so the kernel is limited by memory bandwidth; the scalars
(the decay factor, the step size with the bias correction folded in, sqrt(1 - beta2^t)) are
computed once on the host, in the arrays' dtype, and passed to every thread.

Versions
  v1  one thread per element: a grid of ceil(n / 256) blocks of 256 threads.
  v2  grid-stride loop: a fixed grid (at most MAX_BLOCKS blocks, a few waves of any current
      GPU) whose threads step through the array by the grid's size, so one launch shape serves
      every tensor, each thread updates several elements, and consecutive threads still touch
      consecutive addresses (coalesced). Expect about v1's speed on one large tensor (both move
      the same bytes); the loop is what multi-tensor optimizers build on.
"""
import math

from numba import cuda

from ..cuda_launch import launch
from . import checks

THREADS_PER_BLOCK = 256
MAX_BLOCKS = 1024


@cuda.jit
def adamw_v1(param, grad, exp_avg, exp_avg_sq, decay, one_minus_beta1, beta2, one_minus_beta2, step_size,
             bias_correction2_sqrt, eps):
    idx = cuda.grid(1)
    if idx < param.size:
        g = grad[idx]
        m = exp_avg[idx] + one_minus_beta1 * (g - exp_avg[idx])
        v = exp_avg_sq[idx] * beta2 + one_minus_beta2 * g * g
        denom = math.sqrt(v) / bias_correction2_sqrt + eps
        param[idx] = param[idx] * decay - step_size * (m / denom)
        exp_avg[idx] = m
        exp_avg_sq[idx] = v


@cuda.jit
def adamw_v2(param, grad, exp_avg, exp_avg_sq, decay, one_minus_beta1, beta2, one_minus_beta2, step_size,
             bias_correction2_sqrt, eps):
    for idx in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        g = grad[idx]
        m = exp_avg[idx] + one_minus_beta1 * (g - exp_avg[idx])
        v = exp_avg_sq[idx] * beta2 + one_minus_beta2 * g * g
        denom = math.sqrt(v) / bias_correction2_sqrt + eps
        param[idx] = param[idx] * decay - step_size * (m / denom)
        exp_avg[idx] = m
        exp_avg_sq[idx] = v


def _launch(kernel, blocks, threads, param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay):
    if param.size == 0:                   # a grid of 0 blocks is a launch error
        return
    arrays = checks.contiguous([param, grad, exp_avg, exp_avg_sq])
    as_dtype = param.dtype.type
    launch(kernel, blocks, threads, *(x.reshape(-1) for x in arrays),
                            as_dtype(1 - lr * weight_decay), as_dtype(1 - beta1), as_dtype(beta2), as_dtype(1 - beta2),
                            as_dtype(lr / (1 - beta1 ** step)), as_dtype(math.sqrt(1 - beta2 ** step)), as_dtype(eps))
    checks.write_back([param, exp_avg, exp_avg_sq], [arrays[0], arrays[2], arrays[3]])


def adamw_step_v1(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay,
                  threads=THREADS_PER_BLOCK):
    """v1: one thread per element. Updates param, exp_avg, exp_avg_sq in place."""
    checks.step_inputs(param, grad, exp_avg, exp_avg_sq, step, beta1, beta2)
    blocks = (param.size + threads - 1) // threads
    _launch(adamw_v1, blocks, threads, param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay)


def adamw_step_v2(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay,
                  threads=THREADS_PER_BLOCK, max_blocks=MAX_BLOCKS):
    """v2: grid-stride loop over a grid of at most max_blocks blocks. Updates in place."""
    checks.step_inputs(param, grad, exp_avg, exp_avg_sq, step, beta1, beta2)
    blocks = min(max_blocks, (param.size + threads - 1) // threads)
    _launch(adamw_v2, blocks, threads, param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay)


VERSIONS = {1: adamw_step_v1, 2: adamw_step_v2}
adamw_step = adamw_step_v2          # the newest version: what the dispatch calls
