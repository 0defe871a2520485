"""Input checks shared by every AdamW implementation, and the contiguous-copy helpers.

The fused kernels walk the four arrays as one flat run of memory. A strided array (a transposed
view, a slice) is copied once into a contiguous one, updated there, and written back, on purpose:
the update stays in place for the caller, and the kernels stay simple.
"""
import numbers

from miniclip.backend import get_array_module

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
