"""Making tensors: zeros, ones, random numbers, and the one random generator miniclip uses.

All randomness in miniclip (parameter initialisation, dropout, data shuffling) draws from the
generator returned by `get_rng()`, so `manual_seed(s)` makes a run repeatable.
"""
import numpy as np

from miniclip.backend import to_device
from miniclip.tensor import Tensor

_rng = np.random.default_rng()


def manual_seed(seed):
    """Reset miniclip's random generator (as torch.manual_seed)."""
    global _rng
    _rng = np.random.default_rng(seed)


def get_rng():
    """The numpy Generator behind every random choice miniclip makes."""
    return _rng


def _make(array, dtype, requires_grad, device):
    array = array.astype(dtype or np.float32, copy=False)
    return Tensor(to_device(array, device), requires_grad=requires_grad)


def zeros(*shape, dtype=None, requires_grad=False, device="cpu"):
    return _make(np.zeros(_shape(shape)), dtype, requires_grad, device)


def ones(*shape, dtype=None, requires_grad=False, device="cpu"):
    return _make(np.ones(_shape(shape)), dtype, requires_grad, device)


def full(shape, value, dtype=None, requires_grad=False, device="cpu"):
    return _make(np.full(_shape((shape,)), value), dtype, requires_grad, device)


def zeros_like(t, requires_grad=False):
    return zeros(t.shape, dtype=t.dtype, requires_grad=requires_grad, device=t.device)


def ones_like(t, requires_grad=False):
    return ones(t.shape, dtype=t.dtype, requires_grad=requires_grad, device=t.device)


def arange(*args, dtype=None, device="cpu"):
    array = np.arange(*args)
    return Tensor(to_device(array.astype(dtype) if dtype else array, device))


def randn(*shape, dtype=None, requires_grad=False, device="cpu"):
    """Samples of the standard normal distribution."""
    return _make(_rng.standard_normal(_shape(shape)), dtype, requires_grad, device)


def rand(*shape, dtype=None, requires_grad=False, device="cpu"):
    """Samples of the uniform distribution on [0, 1)."""
    return _make(_rng.random(_shape(shape)), dtype, requires_grad, device)


def _shape(args):
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        return tuple(args[0])
    return tuple(args)
