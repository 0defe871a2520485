"""Input checks shared by every attention implementation.

Each public function calls `forward_inputs` / `backward_inputs` first, so a wrong shape or dtype
fails with a message naming the argument, and every kernel below can assume:

- q (B, H, Tq, d), k and v (B, H, Tk, d), all C-contiguous (numba_cpu.py: contiguous rows), one
  float dtype (float32 or float64);
- mask is None or a C-contiguous 4-D array of that dtype whose every dimension is either 1 or
  the full (B, H, Tq, Tk) size. Kernels broadcast it by clamping an index to the size - 1, so a
  (Tq, Tk) or a (B, 1, 1, Tk) padding mask is never copied to a full (B, H, Tq, Tk) one.

Outputs the caller allocated (out=, dq=, dk=, dv=) are checked by `output`: they may be strided
views, say the (B, H, T, d) transpose of a (B, T, H, d) array, so that attention writes the heads
straight into the concatenated layout the next layer reads. numba_cpu.py writes into them; the
other implementations compute into fresh arrays and copy once (`write_into`).
"""
from miniclip.backend import get_array_module

FLOAT_DTYPES = ("float32", "float64")


def _contiguous(xp, x, rows_only=False):
    # Kernels index raw memory row by row, so a strided view (a transpose, a slice) is copied
    # once here, on purpose, rather than handled by every kernel. With rows_only (the CPU kernel,
    # which only hands q, k, v to NumPy) a view whose rows are contiguous is kept as it is: BLAS
    # multiplies such a matrix in place, through its row stride.
    if x.flags.c_contiguous or (rows_only and x.strides[-1] == x.itemsize):
        return x
    return xp.ascontiguousarray(x)


def forward_inputs(q, k, v, is_causal=False, mask=None, rows_only=False):
    """Check q, k, v and the mask; return them C-contiguous, the mask as 4-D (or None).
    rows_only: q, k, v only need contiguous rows (the q/k/v heads of one fused projection, say)."""
    xp = get_array_module(q)
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.ndim != 4:
            raise ValueError(f"attention: {name} must have shape (B, H, T, d), got {x.shape}")
        if str(x.dtype) not in FLOAT_DTYPES:
            raise TypeError(f"attention: {name} has dtype {x.dtype}; expected float32 or float64")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"attention: q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    B, H, Tq, d = q.shape
    if k.shape[:2] != (B, H) or k.shape[3] != d:
        raise ValueError(f"attention: k has shape {k.shape}; expected (B, H, Tk, d) = ({B}, {H}, Tk, {d}) "
                         f"to match q {q.shape}")
    if v.shape != k.shape:
        raise ValueError(f"attention: v has shape {v.shape}; expected the shape of k, {k.shape}")
    Tk = k.shape[2]
    if Tq == 0 or Tk == 0 or d == 0:
        raise ValueError(f"attention: empty input, q {q.shape} k {k.shape}")
    if is_causal and mask is not None:
        raise ValueError("attention: pass either is_causal=True or a mask, not both "
                         "(fold the causal mask into the additive mask instead)")
    if mask is not None:
        mask = _mask_4d(xp, mask, (B, H, Tq, Tk), q.dtype)
    return _contiguous(xp, q, rows_only), _contiguous(xp, k, rows_only), _contiguous(xp, v, rows_only), mask


def _mask_4d(xp, mask, full_shape, dtype):
    if mask.dtype.kind != "f":
        raise TypeError(f"attention: mask has dtype {mask.dtype}; it must be an additive float mask "
                        "(0 where a key takes part, -inf where it does not): for a boolean mask "
                        "`keep` pass xp.where(keep, 0.0, -xp.inf)")
    if mask.ndim > 4:
        raise ValueError(f"attention: mask has shape {mask.shape}; expected at most 4 dimensions")
    shape4 = (1,) * (4 - mask.ndim) + tuple(mask.shape)
    for size, full in zip(shape4, full_shape):
        if size not in (1, full):
            raise ValueError(f"attention: mask of shape {mask.shape} does not broadcast to "
                             f"(B, H, Tq, Tk) = {full_shape}")
    return _contiguous(xp, mask.reshape(shape4).astype(dtype, copy=False))


def backward_inputs(q, k, v, o, lse, do, is_causal=False, mask=None, rows_only=False):
    """forward_inputs, plus o and do of q's shape and lse of shape (B, H, Tq); rows_only applies
    to o and do as well."""
    q, k, v, mask = forward_inputs(q, k, v, is_causal, mask, rows_only)
    xp = get_array_module(q)
    for name, x, shape in (("o", o, q.shape), ("do", do, q.shape), ("lse", lse, q.shape[:3])):
        if tuple(x.shape) != shape:
            raise ValueError(f"attention backward: {name} has shape {x.shape}; expected {shape}")
        if x.dtype != q.dtype:
            raise TypeError(f"attention backward: {name} has dtype {x.dtype}; expected q's {q.dtype}")
    return q, k, v, _contiguous(xp, o, rows_only), _contiguous(xp, lse), _contiguous(xp, do, rows_only), mask


def output(name, out, like):
    """Check an output array the caller passed (None: the kernel allocates one): the shape, dtype
    and array type (NumPy or CuPy) of `like` (q for o and dq, k for dk and dv). Any strides are
    fine, a view included. (It must not overlap q, k, v, o or do, which the kernels read while
    they write it; that is not checked.)"""
    if out is None:
        return
    if get_array_module(out) is not get_array_module(like):
        raise TypeError(f"attention: {name} is a {type(out).__name__}, the inputs are {type(like).__name__}s")
    if tuple(out.shape) != tuple(like.shape):
        raise ValueError(f"attention: {name} has shape {out.shape}; expected {like.shape}")
    if out.dtype != like.dtype:
        raise TypeError(f"attention: {name} has dtype {out.dtype}; expected the inputs' {like.dtype}")


def gradient_outputs(dq, dk, dv, q, k, v):
    """`output` for the backward's three: dq like q, dk like k, dv like v."""
    for name, given, like in (("dq", dq, q), ("dk", dk, k), ("dv", dv, v)):
        output(name, given, like)


def write_into(out, x):
    """x itself when the caller gave no output array, else x copied into it (one copy, for the
    implementations that cannot write into a strided view)."""
    if out is None:
        return x
    out[...] = x
    return out
