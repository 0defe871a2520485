"""The random initialisations torch.nn's layers start from, as float32 NumPy arrays.

All draw from miniclip.creation.get_rng(), so miniclip.manual_seed(s) makes a model repeatable.

- Linear and Conv2d: torch's default is kaiming_uniform_(a=sqrt(5)), the uniform distribution on
  [-b, b] with b = gain * sqrt(3 / fan_in) and gain = sqrt(2 / (1 + a^2)) = sqrt(1/3), which is
  simply b = 1 / sqrt(fan_in). Their bias uses the same bound. fan_in is the number of inputs
  each output sums over: in_features, or in_channels * kernel_height * kernel_width.
- MultiheadAttention's in_proj: xavier_uniform_, b = sqrt(6 / (fan_in + fan_out)).
- Embedding: the standard normal N(0, 1).

Checked in tests/nn/test_layers.py: the bounds, the standard deviations, and seed repeatability.
"""
import numpy as np

from miniclip.creation import get_rng


def uniform(shape, bound):
    """Samples of U(-bound, bound)."""
    return get_rng().uniform(-bound, bound, shape).astype(np.float32)


def fan_in_uniform(shape, fan_in):
    """torch's default for Linear and Conv2d weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    return uniform(shape, 1.0 / np.sqrt(fan_in))


def xavier_uniform(shape, fan_in, fan_out):
    """Glorot & Bengio (2010): keeps the variance of activations and of gradients about equal."""
    return uniform(shape, np.sqrt(6.0 / (fan_in + fan_out)))


def normal(shape, std=1.0):
    return (std * get_rng().standard_normal(shape)).astype(np.float32)
