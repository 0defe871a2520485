"""Input checks shared by every AdamW implementation, the contiguous-copy helpers, and what the
multi-tensor step shares: Segment (one tensor in the flat buffers) and the per-tensor scalars.

The fused kernels walk the four arrays as one flat run of memory. A strided array (a transposed
view, a slice) is copied once into a contiguous one, updated there, and written back, on purpose:
the update stays in place for the caller, and the kernels stay simple.
"""
import math
import numbers
from collections import namedtuple

from miniclip.backend import get_array_module

Segment = namedtuple("Segment", "offset grad_offset size step lr beta1 beta2 eps weight_decay")
Segment.__doc__ = """One tensor of a multi-tensor step: param[offset:offset + size] (and the same
slice of both moments), its gradient grad[grad_offset:grad_offset + size], its own step count
and its param group's hyper-parameters."""

FLOAT_DTYPES = ("float32", "float64")
NAMES = ("param", "grad", "exp_avg", "exp_avg_sq")


def step_inputs(param, grad, exp_avg, exp_avg_sq, step, beta1, beta2):
    """Check shapes, dtypes and the step; raise an error naming the argument that is wrong."""
    arrays = (param, grad, exp_avg, exp_avg_sq)
    if str(param.dtype) not in FLOAT_DTYPES:
        raise TypeError(f"adamw_step: param has dtype {param.dtype}; expected float32 or float64")
    for name, x in zip(NAMES[1:], arrays[1:]):
        if x.shape != param.shape:
            raise ValueError(f"adamw_step: {name} has shape {x.shape}; expected param's {param.shape}")
        if x.dtype != param.dtype:
            raise TypeError(f"adamw_step: {name} has dtype {x.dtype}; expected param's {param.dtype}")
    if not isinstance(step, numbers.Integral) or step < 1:
        raise ValueError(f"adamw_step: step must be an int >= 1 (the bias corrections divide by "
                         f"1 - beta**step), got {step!r}")
    if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
        raise ValueError(f"adamw_step: betas must be in [0, 1), got beta1={beta1}, beta2={beta2}")


def contiguous(arrays):
    """Each array, or a C-contiguous copy of it when it is strided."""
    xp = get_array_module(arrays[0])
    return [x if x.flags.c_contiguous else xp.ascontiguousarray(x) for x in arrays]


def write_back(originals, updated):
    """Copy the updated contiguous arrays into the caller's strided ones (a no-op for the others)."""
    for original, new in zip(originals, updated):
        if new is not original:
            original[...] = new


def multi_step_inputs(param, grad, exp_avg, exp_avg_sq, segments):
    """Check the flat buffers and every segment; raise an error naming what is wrong."""
    for name, x in zip(NAMES, (param, grad, exp_avg, exp_avg_sq)):
        if x.ndim != 1 or not x.flags.c_contiguous:
            raise ValueError(f"adamw_multi_step: {name} must be a flat contiguous array, got shape {x.shape}")
    step_inputs(param, param, exp_avg, exp_avg_sq, 1, 0.0, 0.0)
    if grad.dtype != param.dtype:
        raise TypeError(f"adamw_multi_step: grad has dtype {grad.dtype}; expected param's {param.dtype}")
    for i, s in enumerate(segments):
        if s.size < 0 or s.offset < 0 or s.grad_offset < 0 or s.offset + s.size > param.size \
                or s.grad_offset + s.size > grad.size:
            raise ValueError(f"adamw_multi_step: segment {i} ({s.offset}, {s.grad_offset}, {s.size}) is outside "
                             f"param ({param.size}) or grad ({grad.size})")
        step_inputs(param, param, exp_avg, exp_avg_sq, s.step, s.beta1, s.beta2)


def scalars(dtype, step, lr, beta1, beta2, eps, weight_decay):
    """The kernels' scalars, computed once on the host and cast to the arrays' dtype (so a float32
    step does float32 arithmetic, in torch's order): the decay factor, 1 - beta1, beta2, 1 - beta2,
    the step size with the first bias correction folded in, sqrt(1 - beta2^t), eps."""
    as_dtype = dtype.type
    return (as_dtype(1 - lr * weight_decay), as_dtype(1 - beta1), as_dtype(beta2), as_dtype(1 - beta2),
            as_dtype(lr / (1 - beta1 ** step)), as_dtype(math.sqrt(1 - beta2 ** step)), as_dtype(eps))


def step_each(adamw_step, param, grad, exp_avg, exp_avg_sq, segments):
    """A multi-tensor step as one single-tensor `adamw_step` per segment, on views of the flat
    buffers (so the update is in place): how the CPU implementations do it, where a call costs
    no kernel launch."""
    multi_step_inputs(param, grad, exp_avg, exp_avg_sq, segments)
    for s in segments:
        own = slice(s.offset, s.offset + s.size)
        adamw_step(param[own], grad[s.grad_offset:s.grad_offset + s.size], exp_avg[own], exp_avg_sq[own],
                   s.step, s.lr, s.beta1, s.beta2, s.eps, s.weight_decay)
