"""linear and embedding, composed from matmul and indexing.

    linear(x, W, b)    = x @ W^T + b          W: (out_features, in_features), PyTorch's layout
    embedding(ids, W)  = W[ids]               W: (num_embeddings, embedding_dim)

linear runs as one Function, FusedLinear, with a hand-written backward over all rows at once
(x as (N, in) with N the product of the leading dimensions):

    dx = dy W        (N, out) @ (out, in)
    dW = dy^T x      (out, in): one GEMM over all N rows, already in W's layout
    db = sum over the N rows of dy  (ones @ dy by blocks of rows: BLAS matrix-vector products, sum_rows)

Why it is faster than the composed matmul(x, W^T) + b (linear_composed, kept as its oracle):
the bias is added into the matmul's fresh output in place, where `y + b` allocates and writes a
second (N, out) array and its Add node's backward sums dy again through broadcasting; dW comes
out in W's layout, where the composed path computes (x^T dy) and transposes it back through a
Permute node; and two graph nodes become one. (On tiny-vit-s this is ~60 layers x 3 fewer nodes
and ~60 fewer (N, out) temporaries per step.)

Under miniclip.amp.autocast, linear rounds x, W and b to 16 bits, runs FusedLinear on them and
brings the output back to float32 (miniclip/amp.py explains mixed precision); the products go
through amp.matmul_2d, which multiplies float16 on NumPy in float32 as a tensor core would.

embedding's gradient scatter-adds each row of dy into the row of W it was read from, so an id
that appears twice receives both gradients (GetItem). Checked by tests/functional/test_linear.py:
float64 gradcheck, torch.nn.functional on the same inputs, and FusedLinear against
linear_composed (values and gradients) on odd shapes.
"""
import numpy as np

from miniclip import amp
from miniclip.backend import get_array_module, to_device, to_numpy
from miniclip.ops import getitem, matmul, transpose
from miniclip.tensor import Function, Tensor, as_tensor


class FusedLinear(Function):
    """y = x W^T (+ b) with the bias added in place, and the backward above."""

    def forward(self, x, weight, bias=None):
        self.x2 = x.reshape(-1, x.shape[-1])                          # (N, in); a view when x is contiguous
        self.weight = weight
        y = amp.matmul_2d(self.x2, weight.T, bias)     # (N, out): a fresh array, the bias added in place
        return y.reshape(x.shape[:-1] + (weight.shape[0],))          # (..., out)

    def backward(self, dy):
        dy2 = dy.reshape(-1, dy.shape[-1])                            # (N, out)
        x = self.inputs[0]
        dx = amp.matmul_2d(dy2, self.weight).reshape(x.shape) if x.requires_grad else None   # (..., in)
        dw = amp.matmul_2d(dy2.T, self.x2)                            # (out, in)
        if len(self.inputs) == 2:
            return dx, dw
        if dy2.dtype == np.float16:                                   # sum in float32, as cuBLAS would
            return dx, dw, dy2.sum(axis=0, dtype=np.float32).astype(np.float16)   # (out,)
        return dx, dw, sum_rows(dy2)                                  # (out,)


def sum_rows(dy2, block=512):
    """The sum of the rows of dy2 (N, out), a block of `block` rows at a time.

    Each block's sum is the product ones (block,) @ dy2[block rows]: BLAS's matrix-vector product
    runs on both cores and is 2-5x faster than NumPy's column sum, which adds the rows one after
    the other on one core (16640 x 768 float32: 1.95 against 4.57 ms, measured). But one product
    over all N rows adds them one after the other too, in float32: its error grows with N, and a
    bias's gradient over 16,640 rows was 11x torch's (262,144 rows: 27x). The blocks' sums are
    added in float64, so the error stays that of 512 rows, whatever N (bench accuracy's linear)."""
    xp = get_array_module(dy2)
    n_rows, n_out = dy2.shape
    if n_rows <= block:
        return xp.ones(n_rows, dy2.dtype) @ dy2
    whole = n_rows - n_rows % block
    blocks = xp.ones(block, dy2.dtype) @ dy2[:whole].reshape(-1, block, n_out)   # (N // block, out)
    rest = xp.ones(n_rows - whole, dy2.dtype) @ dy2[whole:]                    # (out,)
    return (blocks.sum(axis=0, dtype=xp.float64) + rest).astype(dy2.dtype)


def linear(x, weight, bias=None):
    """x (..., in) @ weight.T (in, out) + bias (out,) -> (..., out)."""
    x, weight = as_tensor(x), as_tensor(weight)
    if weight.ndim != 2 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input of shape {x.shape} has {x.shape[-1]} features, but weight "
                         f"of shape {weight.shape} must be (out_features, {x.shape[-1]})")
    tensors = (x, weight) if bias is None else (x, weight, as_tensor(bias))
    low_precision = amp.autocast_dtype()
    if low_precision is not None and all(t.dtype == np.float32 for t in tensors):
        y = FusedLinear.apply(*[amp.to_low_precision(t, low_precision) for t in tensors])
        return amp.to_float32(y, low_precision)
    if len({t.dtype for t in tensors}) > 1:               # mixed dtypes: let NumPy promote, as composed
        return linear_composed(*tensors)
    return FusedLinear.apply(*tensors)


def linear_composed(x, weight, bias=None):
    """linear from matmul, transpose and add (autograd derives the backward): FusedLinear's oracle."""
    x, weight = as_tensor(x), as_tensor(weight)
    y = matmul(x, transpose(weight, 0, 1))                         # (..., out)
    return y if bias is None else y + bias


def embedding(input, weight):
    """The rows of weight (num_embeddings, dim) picked by the integer ids `input` (...,) -> (..., dim).
    The ids' range is checked where they are: free on the host (then they are copied to the
    weight's device), one device-to-host transfer of two numbers for device ids."""
    weight = as_tensor(weight)
    ids = input.data if isinstance(input, Tensor) else input
    if ids.dtype.kind not in "iu":
        raise TypeError(f"embedding: ids must be integers, got dtype {ids.dtype}")
    if ids.size:
        low, high = (int(v) for v in to_numpy(get_array_module(ids).stack([ids.min(), ids.max()])))
        if not (0 <= low and high < weight.shape[0]):
            raise IndexError(f"embedding: ids must lie in [0, {weight.shape[0]}) for weight of shape "
                             f"{weight.shape}, got min {low}, max {high}")
    ids = to_device(ids, weight.device)
    return getitem(weight, ids)                                    # (..., dim)
