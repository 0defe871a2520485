"""Input checks shared by every conv2d implementation.

Each public function calls `forward_inputs` / `backward_inputs` first, so a wrong shape or dtype
fails with a message naming the argument, and every kernel can assume x (N, C, H, W) and
w (OC, C, KH, KW) C-contiguous and of one float dtype, b None or (OC,), and stride and padding
as (height, width) pairs.
"""
import numbers

from miniclip.backend import get_array_module

FLOAT_DTYPES = ("float32", "float64")


def pair(value, name):
    """An int or a pair of ints as a (height, width) tuple."""
    if isinstance(value, numbers.Integral):
        return (int(value), int(value))
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, numbers.Integral) for v in value):
        return (int(value[0]), int(value[1]))
    raise TypeError(f"conv2d: {name} must be an int or a pair of ints, got {value!r}")


def output_size(H, W, KH, KW, stride, padding):
    """(OH, OW): how many kernel positions fit, OH = (H + 2 ph - KH) // sh + 1."""
    (sh, sw), (ph, pw) = stride, padding
    return (H + 2 * ph - KH) // sh + 1, (W + 2 * pw - KW) // sw + 1


def _contiguous(xp, x):
    # The kernels index raw memory row by row, so a strided view is copied once here, on
    # purpose, rather than handled by every kernel.
    return x if x.flags.c_contiguous else xp.ascontiguousarray(x)


def forward_inputs(x, w, b, stride, padding):
    """Check the arguments; return (x, w, b, stride, padding) normalised."""
    xp = get_array_module(x)
    if x.ndim != 4:
        raise ValueError(f"conv2d: x must have shape (N, C, H, W), got {x.shape}")
    if w.ndim != 4:
        raise ValueError(f"conv2d: w must have shape (OC, C, KH, KW), got {w.shape}")
    if str(x.dtype) not in FLOAT_DTYPES:
        raise TypeError(f"conv2d: x has dtype {x.dtype}; expected float32 or float64")
    if w.dtype != x.dtype or (b is not None and b.dtype != x.dtype):
        raise TypeError(f"conv2d: x, w and b must share one dtype, got x {x.dtype}, w {w.dtype}, "
                        f"b {None if b is None else b.dtype}")
    if w.shape[1] != x.shape[1]:
        raise ValueError(f"conv2d: w has {w.shape[1]} input channels (shape {w.shape}) but x has "
                         f"{x.shape[1]} (shape {x.shape})")
    if b is not None and b.shape != (w.shape[0],):
        raise ValueError(f"conv2d: b must have shape (OC,) = ({w.shape[0]},), got {b.shape}")
    stride, padding = pair(stride, "stride"), pair(padding, "padding")
    if min(stride) < 1 or min(padding) < 0:
        raise ValueError(f"conv2d: stride must be >= 1 and padding >= 0, got stride {stride}, padding {padding}")
    OH, OW = output_size(x.shape[2], x.shape[3], w.shape[2], w.shape[3], stride, padding)
    if OH < 1 or OW < 1:
        raise ValueError(f"conv2d: kernel {w.shape[2:]} does not fit in the padded input: x {x.shape}, "
                         f"padding {padding}")
    b = None if b is None else _contiguous(xp, b)
    return _contiguous(xp, x), _contiguous(xp, w), b, stride, padding


def backward_inputs(dy, x, w, stride, padding, any_layout=False):
    """forward_inputs, plus dy of the output's shape (N, OC, OH, OW), made C-contiguous unless
    any_layout (the patch path reads dy channels last, as its forward wrote y)."""
    x, w, _, stride, padding = forward_inputs(x, w, None, stride, padding)
    xp = get_array_module(x)
    OH, OW = output_size(x.shape[2], x.shape[3], w.shape[2], w.shape[3], stride, padding)
    expected = (x.shape[0], w.shape[0], OH, OW)
    if tuple(dy.shape) != expected:
        raise ValueError(f"conv2d backward: dy has shape {dy.shape}; expected (N, OC, OH, OW) = {expected}")
    if dy.dtype != x.dtype:
        raise TypeError(f"conv2d backward: dy has dtype {dy.dtype}; expected x's {x.dtype}")
    return (dy if any_layout else _contiguous(xp, dy)), x, w, stride, padding
