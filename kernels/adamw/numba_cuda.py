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
  v3  multi-tensor: every parameter of a model in one launch (adamw_multi_step). Parameters and
      moments sit in flat buffers (miniclip.optim keeps each Parameter's array a view into one),
      the gradients are gathered into one more; each tensor is cut into chunks of CHUNK_SIZE
      elements, and a table says which tensor (and which of its elements) each chunk is. A block
      takes a chunk, reads that tensor's offsets and scalars from the tables, and updates the
      chunk as v2 would; then it takes the chunk a grid further on. One launch per step however
      many parameters there are, instead of one per parameter (ViT-B/32 has 302 parameter
      tensors, most of them small biases and gains, each launch a fixed cost on the host).
"""
import math

import numpy as np
from numba import cuda

from miniclip.backend import get_array_module

from ..cuda_launch import launch
from . import checks

THREADS_PER_BLOCK = 256
MAX_BLOCKS = 1024
CHUNK_SIZE = 16384       # elements of one tensor that a block updates in one go (64 per thread): ViT-B/32's
                         # 151M parameters make ~9,300 chunks, a 150 KB table copied to the GPU per step


@cuda.jit(device=True)
def _update(param, exp_avg, exp_avg_sq, idx, g, decay, one_minus_beta1, beta2, one_minus_beta2, step_size,
            bias_correction2_sqrt, eps):
    """One element's AdamW step (reference.py's math), shared by every version: they differ only
    in which thread updates which element."""
    m = exp_avg[idx] + one_minus_beta1 * (g - exp_avg[idx])
    v = exp_avg_sq[idx] * beta2 + one_minus_beta2 * g * g
    denom = math.sqrt(v) / bias_correction2_sqrt + eps
    param[idx] = param[idx] * decay - step_size * (m / denom)
    exp_avg[idx] = m
    exp_avg_sq[idx] = v


@cuda.jit
def adamw_v1(param, grad, exp_avg, exp_avg_sq, decay, one_minus_beta1, beta2, one_minus_beta2, step_size,
             bias_correction2_sqrt, eps):
    idx = cuda.grid(1)
    if idx < param.size:
        _update(param, exp_avg, exp_avg_sq, idx, grad[idx], decay, one_minus_beta1, beta2, one_minus_beta2,
                step_size, bias_correction2_sqrt, eps)


@cuda.jit
def adamw_v2(param, grad, exp_avg, exp_avg_sq, decay, one_minus_beta1, beta2, one_minus_beta2, step_size,
             bias_correction2_sqrt, eps):
    for idx in range(cuda.grid(1), param.size, cuda.gridsize(1)):
        _update(param, exp_avg, exp_avg_sq, idx, grad[idx], decay, one_minus_beta1, beta2, one_minus_beta2,
                step_size, bias_correction2_sqrt, eps)


@cuda.jit
def adamw_v3(param, grad, exp_avg, exp_avg_sq, chunks, tensors, hyper, chunk_size):
    """chunks (C, 2): (tensor, first element) of each chunk; tensors (T, 3): (offset, grad_offset,
    size) of each tensor; hyper (T, 7): its seven scalars (checks.scalars), in the arrays' dtype."""
    for chunk in range(cuda.blockIdx.x, chunks.shape[0], cuda.gridDim.x):
        t = chunks[chunk, 0]
        first = chunks[chunk, 1]
        offset, grad_offset, end = tensors[t, 0], tensors[t, 1], min(first + chunk_size, tensors[t, 2])
        decay, one_minus_beta1, beta2, one_minus_beta2 = hyper[t, 0], hyper[t, 1], hyper[t, 2], hyper[t, 3]
        step_size, bias_correction2_sqrt, eps = hyper[t, 4], hyper[t, 5], hyper[t, 6]
        for i in range(first + cuda.threadIdx.x, end, cuda.blockDim.x):
            _update(param, exp_avg, exp_avg_sq, offset + i, grad[grad_offset + i], decay, one_minus_beta1, beta2,
                    one_minus_beta2, step_size, bias_correction2_sqrt, eps)


def _launch(kernel, blocks, threads, param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay):
    if param.size == 0:                   # a grid of 0 blocks is a launch error
        return
    arrays = checks.contiguous([param, grad, exp_avg, exp_avg_sq])
    launch(kernel, blocks, threads, *(x.reshape(-1) for x in arrays),
           *checks.scalars(param.dtype, step, lr, beta1, beta2, eps, weight_decay))
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


def adamw_multi_step(param, grad, exp_avg, exp_avg_sq, segments, threads=THREADS_PER_BLOCK,
                     max_blocks=MAX_BLOCKS, chunk_size=CHUNK_SIZE):
    """v3: every segment (checks.Segment) of the flat buffers updated in place, in one launch."""
    checks.multi_step_inputs(param, grad, exp_avg, exp_avg_sq, segments)
    tensors = np.array([(s.offset, s.grad_offset, s.size) for s in segments], np.int64).reshape(-1, 3)
    hyper = np.array([checks.scalars(param.dtype, *s[3:]) for s in segments], param.dtype).reshape(-1, 7)
    per_tensor = (tensors[:, 2] + chunk_size - 1) // chunk_size                 # (T,) chunks of each tensor
    tensor_of_chunk = np.repeat(np.arange(len(segments)), per_tensor)           # (C,)
    first_chunk = np.repeat(np.cumsum(per_tensor) - per_tensor, per_tensor)    # (C,) its tensor's first chunk
    chunks = np.stack([tensor_of_chunk, (np.arange(len(tensor_of_chunk)) - first_chunk) * chunk_size], axis=1)
    if len(chunks) == 0:                  # no elements: a grid of 0 blocks is a launch error
        return
    xp = get_array_module(param)          # the tables go to the device: host-to-device copies, no wait
    launch(adamw_v3, min(max_blocks, len(chunks)), threads, param, grad, exp_avg, exp_avg_sq,
           xp.asarray(chunks.astype(np.int64)), xp.asarray(tensors), xp.asarray(hyper), np.int64(chunk_size))
