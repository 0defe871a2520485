"""Activations and friends: softmax, log_softmax, logsumexp, gelu, quick_gelu, logsigmoid, dropout.

    softmax(x)_i     = exp(x_i - m) / sum_j exp(x_j - m)          m = max_j x_j
    log_softmax(x)_i = x_i - logsumexp(x)
    logsumexp(x)     = m + log sum_j exp(x_j - m)
    gelu(x)          = x Phi(x) = x/2 (1 + erf(x / sqrt 2))        Phi: the standard normal CDF
    quick_gelu(x)    = x sigmoid(1.702 x)                          (the original CLIP's cheap gelu)
    logsigmoid(x)    = log(1 / (1 + e^-x)) = min(x, 0) - log(1 + e^-|x|)
    dropout(x)       = x * keep / (1 - p),  keep ~ Bernoulli(1 - p) per element

Subtracting the maximum m changes nothing mathematically (it cancels) but keeps every exponent
<= 0, so exp never overflows: rows of +-1e4 give exact answers instead of inf/inf = nan.

softmax, log_softmax and gelu are Functions with hand-derived backwards (the math is in their
docstrings); the others are composed from the primitives, and autograd derives their backward.
gelu (exact) and quick_gelu run fused elementwise kernels (miniclip.kernels.layer_norm: one
pass forward, one backward) on float arrays; Gelu and quick_gelu_composed stay as their oracles.
Checked by tests/functional/test_activation.py: float64 gradcheck, torch.nn.functional on the
same inputs (values and gradients), the fused against the composed versions in both kernel
modes, rows of +-1e4, and dropout's mask statistics.
"""
import math

from miniclip.backend import erf, get_array_module, to_device
from miniclip.creation import get_rng
from miniclip.kernels import layer_norm as activation_kernels
from miniclip.ops import minimum, sigmoid, tanh
from miniclip.tensor import Function, Tensor, as_tensor


class Softmax(Function):
    """y = softmax(x) along `dim`.

    Backward: the Jacobian is dy_i/dx_j = y_i (delta_ij - y_j), so for an incoming gradient dy
        dx_j = sum_i dy_i y_i (delta_ij - y_j) = y_j (dy_j - sum_i dy_i y_i)
    one product and one reduction per row; the (n, n) Jacobian is never built.
    """

    def forward(self, x, dim=-1):
        xp = get_array_module(x)
        self.dim = dim
        e = xp.exp(x - x.max(axis=dim, keepdims=True))
        self.y = e / e.sum(axis=dim, keepdims=True)
        return self.y

    def backward(self, dy):
        return self.y * (dy - (dy * self.y).sum(axis=self.dim, keepdims=True))


class LogSoftmax(Function):
    """y = log_softmax(x) = x - logsumexp(x) along `dim`.

    Backward: d logsumexp(x) / dx_j = softmax(x)_j = exp(y_j), so dy_i/dx_j = delta_ij - exp(y_j) and
        dx_j = dy_j - exp(y_j) sum_i dy_i
    """

    def forward(self, x, dim=-1):
        xp = get_array_module(x)
        self.dim = dim
        z = x - x.max(axis=dim, keepdims=True)
        self.y = z - xp.log(xp.exp(z).sum(axis=dim, keepdims=True))
        return self.y

    def backward(self, dy):
        xp = get_array_module(dy)
        return dy - xp.exp(self.y) * dy.sum(axis=self.dim, keepdims=True)


class Gelu(Function):
    """y = x Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2, the exact gelu.

    Backward: dy/dx = Phi(x) + x phi(x), with phi(x) = exp(-x^2 / 2) / sqrt(2 pi) the normal density.
    """

    def forward(self, x):
        self.x = x
        self.cdf = 0.5 * (1 + erf(x / math.sqrt(2)))
        return x * self.cdf

    def backward(self, dy):
        xp = get_array_module(dy)
        pdf = xp.exp(-0.5 * self.x * self.x) / math.sqrt(2 * math.pi)
        return dy * (self.cdf + self.x * pdf)


class FusedGelu(Function):
    """Gelu's forward and backward, each one kernel pass (miniclip.kernels.layer_norm.gelu_*)."""

    def forward(self, x):
        self.x = x
        return activation_kernels.gelu_forward(x)

    def backward(self, dy):
        return activation_kernels.gelu_backward(dy, self.x)


class FusedQuickGelu(Function):
    """x sigmoid(1.702 x) and its derivative s + 1.702 x s (1 - s), each one kernel pass."""

    def forward(self, x):
        self.x = x
        return activation_kernels.quick_gelu_forward(x)

    def backward(self, dy):
        return activation_kernels.quick_gelu_backward(dy, self.x)


def _is_float(x):
    return x.dtype.name in ("float32", "float64")


def softmax(x, dim=-1):
    return Softmax.apply(x, dim=dim)


def log_softmax(x, dim=-1):
    return LogSoftmax.apply(x, dim=dim)


def logsumexp(x, dim, keepdim=False):
    """log sum exp(x) over `dim` (an int or a tuple), as torch.logsumexp.

    The row maximum m enters as a constant: logsumexp(x) = m + log sum exp(x - m) holds for any
    m, so its gradient through m is zero and autograd needs only the second term.
    """
    x = as_tensor(x)
    xp = get_array_module(x.data)
    m = x.data.max(axis=dim, keepdims=True)
    return (x - m).exp().sum(dim, keepdim).log() + (m if keepdim else xp.squeeze(m, axis=dim))


def gelu(x, approximate="none"):
    """Exact gelu x Phi(x); approximate='tanh' gives the tanh formula (as torch), composed:
    x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    if approximate == "none":
        x = as_tensor(x)
        return FusedGelu.apply(x) if _is_float(x) else Gelu.apply(x)
    if approximate == "tanh":
        x = as_tensor(x)
        return 0.5 * x * (1 + tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)))
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def quick_gelu(x):
    """x sigmoid(1.702 x): the sigmoid approximation of gelu that OpenAI's CLIP was trained with."""
    x = as_tensor(x)
    return FusedQuickGelu.apply(x) if _is_float(x) else quick_gelu_composed(x)


def quick_gelu_composed(x):
    """quick_gelu from the primitives (autograd derives the backward): the fused kernel's oracle."""
    return x * sigmoid(1.702 * as_tensor(x))


def logsigmoid(x):
    """log sigmoid(x) = min(x, 0) - log(1 + e^-|x|): the exponent is never positive, so it cannot
    overflow for large |x| (the plain log(sigmoid(x)) gives log(0) = -inf for x = -800)."""
    x = as_tensor(x)
    return minimum(x, 0.0) - (1 + (-x.abs()).exp()).log()


def dropout(x, p=0.5, training=True):
    """Zero each element with probability p and scale the survivors by 1 / (1 - p), so the
    expected value of every element is unchanged; the identity when training=False.

    The mask is drawn from miniclip.creation.get_rng() (on the host, then moved to x's device),
    so manual_seed makes it repeatable. The gradient is dy times the same mask and scale.
    """
    if not 0 <= p <= 1:
        raise ValueError(f"dropout: p must be a probability in [0, 1], got {p}")
    x = as_tensor(x)
    if not training or p == 0:
        return x
    if p == 1:
        return x * 0.0
    keep = get_rng().random(x.shape) >= p
    scale = (keep / (1 - p)).astype(x.dtype)
    return x * Tensor(to_device(scale, x.device))
