"""linear and embedding, composed from matmul and indexing.

    linear(x, W, b)    = x @ W^T + b          W: (out_features, in_features), PyTorch's layout
    embedding(ids, W)  = W[ids]               W: (num_embeddings, embedding_dim)

Autograd derives both backwards: dW = dy^T x summed over the leading dimensions (matmul), and
the embedding gradient scatter-adds each row of dy into the row of W it was read from, so an id
that appears twice receives both gradients (GetItem). Checked by tests/functional/test_linear.py:
float64 gradcheck and torch.nn.functional on the same inputs.
"""
from miniclip.backend import to_device
from miniclip.ops import getitem, matmul, transpose
from miniclip.tensor import Tensor, as_tensor


def linear(x, weight, bias=None):
    """x (..., in) @ weight.T (in, out) + bias (out,) -> (..., out)."""
    x, weight = as_tensor(x), as_tensor(weight)
    if weight.ndim != 2 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: input of shape {x.shape} has {x.shape[-1]} features, but weight "
                         f"of shape {weight.shape} must be (out_features, {x.shape[-1]})")
    y = matmul(x, transpose(weight, 0, 1))                         # (..., out)
    return y if bias is None else y + bias


def embedding(input, weight):
    """The rows of weight (num_embeddings, dim) picked by the integer ids `input` (...,) -> (..., dim)."""
    weight = as_tensor(weight)
    ids = to_device(input.data if isinstance(input, Tensor) else input, weight.device)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"embedding: ids must be integers, got dtype {ids.dtype}")
    if ids.size and not (0 <= int(ids.min()) and int(ids.max()) < weight.shape[0]):
        raise IndexError(f"embedding: ids must lie in [0, {weight.shape[0]}) for weight of shape "
                         f"{weight.shape}, got min {int(ids.min())}, max {int(ids.max())}")
    return getitem(weight, ids)                                    # (..., dim)
