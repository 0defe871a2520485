"""The basic layers: Linear, LayerNorm, Embedding, Dropout and the activations.

Each layer owns its parameters (torch's names, shapes and default initialisation) and calls
the matching op of miniclip.functional in forward; the math lives there.

    Linear       y = x W^T + b              weight (out, in), bias (out,)
    LayerNorm    y = (x - mean) / sqrt(var + eps) * weight + bias, over the last dims
    Embedding    y = weight[ids]            weight (num_embeddings, embedding_dim)
    Dropout      zero each entry with probability p in training, scale the rest by 1 / (1 - p)
    GELU         x * Phi(x)  (or its tanh approximation);   QuickGELU  x * sigmoid(1.702 x)

Checked against torch.nn with the same weights (outputs and parameter gradients) in
tests/nn/test_layers.py.
"""
import numpy as np

from miniclip import functional as F
from miniclip.nn import init
from miniclip.nn.module import Module, Parameter


class Linear(Module):
    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = Parameter(init.fan_in_uniform((out_features, in_features), in_features))
        self.bias = Parameter(init.fan_in_uniform((out_features,), in_features)) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class LayerNorm(Module):
    """Normalise over the last len(normalized_shape) dimensions; weight starts at 1, bias at 0."""

    def __init__(self, normalized_shape, eps=1e-5):
        super().__init__()
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        self.normalized_shape, self.eps = tuple(normalized_shape), eps
        self.weight = Parameter(np.ones(self.normalized_shape, np.float32))
        self.bias = Parameter(np.zeros(self.normalized_shape, np.float32))

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}"


class Embedding(Module):
    """A lookup table: row i of weight is the vector of token i."""

    def __init__(self, num_embeddings, embedding_dim):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(init.normal((num_embeddings, embedding_dim)))

    def forward(self, ids):
        return F.embedding(ids, self.weight)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


class Dropout(Module):
    """Active only in training mode (model.train()); the identity after model.eval()."""

    def __init__(self, p=0.5):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class GELU(Module):
    """approximate='none': x * Phi(x) with the exact normal CDF; 'tanh': its tanh approximation."""

    def __init__(self, approximate="none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, approximate=self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class QuickGELU(Module):
    """x * sigmoid(1.702 x): the GELU approximation OpenAI's CLIP weights were trained with."""

    def forward(self, x):
        return F.quick_gelu(x)


class ReLU(Module):
    def forward(self, x):
        return F.relu(x)


class Identity(Module):
    """Returns its input: a placeholder where a model variant has no layer."""

    def forward(self, x):
        return x
