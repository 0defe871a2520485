"""Mixed precision: matmuls in 16 bits, everything else in float32 (Micikevicius et al. 2018).

A GPU multiplies 16-bit matrices several times faster than float32 ones (tensor cores take 16-bit
inputs and accumulate in float32). Mixed precision spends that speed where it is safe:

- inside `with autocast("float16")` (or "bfloat16") every F.linear, i.e. every Linear layer, the
  attention projections and the MLPs, most of a transformer's FLOPs, rounds its input, weight and
  bias to 16 bits, multiplies, and rounds its output to 16 bits; its gradients come back to
  float32 the same way (rounded to 16 bits on the way in);
- the weights themselves stay float32 ("master weights"), and so do layer norm, softmax, the
  attention kernel, the loss and the optimizer: a tiny update added to a 16-bit weight would be
  rounded away, and sums of many terms need float32's range and precision.

The two 16-bit formats trade range for precision:

    float16   5 exponent bits, 10 mantissa bits: largest 65504, smallest normal 6.1e-5
    bfloat16  8 exponent bits,  7 mantissa bits: float32's range, 3 significant digits

float16's small range is the danger: gradients of order 1e-8 round to zero (underflow). Loss
scaling fixes it (GradScaler below): backward loss * S instead of the loss, so every gradient is
S times larger and clears the underflow, then divide the gradients by S before the optimizer step.
S starts at 2^16, halves whenever a gradient overflows to inf or NaN (that step is skipped), and
doubles after every 2000 good steps, so it sits just below overflow. bfloat16 needs no scaling.

How the 16-bit numbers are stored here:
- float16: real float16 arrays. On a GPU (CuPy), cuBLAS multiplies them on the tensor cores. NumPy
  has no float16 BLAS (its own float16 matmul is ~40x slower than float32), so on the CPU a float16
  product is computed in float32 and rounded to float16: the same numbers a tensor core gives
  (16-bit inputs, float32 accumulation, 16-bit output), at float32 speed. (On CuPy the bias is
  added after the product's rounding, so there the output is rounded twice.)
- bfloat16: neither NumPy nor CuPy has a bfloat16 dtype, so bfloat16 values live in float32 arrays
  whose low 16 bits are zero (round_to_bfloat16). This gives bfloat16's numerics, not its speed.
Checked by tests/test_amp.py: rounding bit-exact against torch's float16/bfloat16 conversions,
autocast linear against a float64 product of the rounded inputs, GradScaler's skip/backoff/growth,
and short training runs with --precision amp and amp_bf16 (tests/training).
"""
import contextlib
import warnings

import numpy as np

from miniclip import backend
from miniclip.tensor import Function

DTYPES = ("float16", "bfloat16")
_autocast_dtype = None


@contextlib.contextmanager
def autocast(dtype="float16"):
    """Inside the block, F.linear multiplies in `dtype` ("float16" or "bfloat16"; None: float32).
    With float16, NumPy's warnings about overflow (to inf, and the NaNs that follow) are silenced,
    also in the kernels' worker threads: they are expected, and the GradScaler deals with them."""
    global _autocast_dtype
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"autocast: dtype must be one of {DTYPES} or None, got {dtype!r}")
    previous, _autocast_dtype = _autocast_dtype, dtype
    try:
        with warnings.catch_warnings():
            if dtype == "float16":
                warnings.filterwarnings("ignore", "(overflow|invalid value) encountered", RuntimeWarning)
            yield
    finally:
        _autocast_dtype = previous


def autocast_dtype():
    """The 16-bit dtype F.linear uses now ("float16", "bfloat16"), or None outside autocast."""
    return _autocast_dtype


def round_to_bfloat16(x):
    """float32 array -> float32 array holding the nearest bfloat16 values (ties to even).

    A bfloat16 is the top 16 bits of a float32. Rounding to nearest: add 0x7FFF plus the lowest
    kept bit (so that a tie rounds to an even mantissa) to the 32-bit pattern, then clear the low
    16 bits. A carry out of the mantissa bumps the exponent, which is exactly right; NaN is kept
    as a (quiet) NaN rather than rounded, since adding to its pattern could turn it into inf.
    """
    xp = backend.get_array_module(x)
    if x.dtype != np.float32:
        raise TypeError(f"round_to_bfloat16: expected a float32 array, got dtype {x.dtype}")
    bits = x.view(xp.uint32)
    lowest_kept_bit = (bits >> 16) & 1
    rounded = ((bits + xp.uint32(0x7FFF) + lowest_kept_bit) & xp.uint32(0xFFFF0000)).view(xp.float32)
    return xp.where(xp.isnan(x), xp.float32(np.nan), rounded)


def to_16_bits(array, dtype):
    """A float32 array rounded to `dtype`: a float16 array, or for bfloat16 a float32 array holding
    bfloat16 values."""
    return array.astype(np.float16) if dtype == "float16" else round_to_bfloat16(array)


def through_16_bits(array, dtype):
    """Rounded to `dtype`, then held as float32 (exactly: every 16-bit value is a float32 value)."""
    return to_16_bits(array, dtype).astype(np.float32, copy=False)


class ToLowPrecision(Function):
    """float32 -> 16 bits (see the module docstring). The gradient goes back to float32, rounded
    through 16 bits: a 16-bit tensor's gradient is itself 16-bit."""

    def forward(self, x, dtype):
        self.dtype = dtype
        return to_16_bits(x, dtype)

    def backward(self, dy):
        return through_16_bits(dy, self.dtype)


class ToFloat32(Function):
    """The mirror image of ToLowPrecision: a 16-bit product's output -> float32 (for bfloat16 this
    is where the product, held unrounded in float32, is rounded); the gradient goes to 16 bits."""

    def forward(self, x, dtype):
        self.dtype = dtype
        return through_16_bits(x, dtype)

    def backward(self, dy):
        return to_16_bits(dy, self.dtype)


def to_low_precision(x, dtype):
    return ToLowPrecision.apply(x, dtype=dtype)


def to_float32(x, dtype):
    return ToFloat32.apply(x, dtype=dtype)


def matmul_2d(a, b, bias=None):
    """a @ b (+ bias, added in place) for 2-D arrays, in a fresh array. float16 on NumPy is
    multiplied and biased in float32 and rounded to float16 once, as torch does (see above)."""
    on_numpy_float16 = a.dtype == np.float16 and isinstance(a, np.ndarray)
    y = a.astype(np.float32) @ b.astype(np.float32) if on_numpy_float16 else a @ b
    if bias is not None:
        y += bias
    return y.astype(np.float16) if on_numpy_float16 else y


class GradScaler:
    """Dynamic loss scaling for float16 training (the module docstring has the why).

        scaler = GradScaler()
        loss.backward(grad=scaler.scale)          # gradients are scale times too large
        if scaler.unscale_(model.parameters()):   # divide them back; True if any is inf or NaN
            ...skip the optimizer step...
        scaler.update(found_inf)                  # back off after an overflow, grow after calm

    The defaults are torch.amp.GradScaler's: scale 2^16, x0.5 on overflow, x2 after 2000 good steps.
    """

    def __init__(self, init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000):
        self.scale = float(init_scale)
        self.growth_factor, self.backoff_factor = growth_factor, backoff_factor
        self.growth_interval = growth_interval
        self.good_steps = 0   # steps since the last overflow or growth

    def unscale_(self, parameters):
        """Divide every gradient by the scale, in place; return True if any of them is not finite.
        Whether all are finite is one reduction on the device, read once: one device-to-host
        transfer per step, however many parameters there are."""
        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return False
        xp = backend.get_array_module(grads[0])
        finite = []
        for grad in grads:
            grad *= grad.dtype.type(1.0 / self.scale)
            finite.append(xp.isfinite(grad).all())                   # 0-d, on the gradient's device
        return not bool(xp.stack(finite).all())

    def update(self, found_inf):
        if found_inf:
            self.scale *= self.backoff_factor
            self.good_steps = 0
            return
        self.good_steps += 1
        if self.good_steps == self.growth_interval:
            self.scale *= self.growth_factor
            self.good_steps = 0

    def state_dict(self):
        return {"scale": self.scale, "good_steps": self.good_steps}

    def load_state_dict(self, state):
        self.scale, self.good_steps = float(state["scale"]), int(state["good_steps"])
