"""Binary arithmetic with NumPy broadcasting, and `where`.

Broadcasting copies an input along new or size-1 dimensions; in the backward each copy's
gradient must flow back to the one element it came from, so the gradient is *summed* over the
broadcast dimensions (`sum_to_shape`). For z = x * y with x (3, 1) and y (4,): z is (3, 4),
dz/dx sums dz * y over the 4 columns, dz/dy sums dz * x over the 3 rows.
Those sums accumulate float32 in float64, as ops.sum does (ops/reduction.py says why): a batch
norm's bias gradient sums dy over N, H and W.
"""
from miniclip.backend import get_array_module
from miniclip.ops.reduction import accumulator_dtype
from miniclip.tensor import Function


def sum_to_shape(dx, shape):
    """Sum a broadcast gradient back to `shape` (the inverse of broadcasting)."""
    if dx.shape == shape:
        return dx
    n_new = dx.ndim - len(shape)                                         # leading dims broadcasting added
    stretched = tuple(n_new + i for i, n in enumerate(shape) if n == 1 and dx.shape[n_new + i] != 1)
    summed = dx.sum(axis=tuple(range(n_new)) + stretched, keepdims=True, dtype=accumulator_dtype(dx))
    return summed.astype(dx.dtype, copy=False).reshape(shape)


class Add(Function):
    def forward(self, x, y):
        self.x_shape, self.y_shape = x.shape, y.shape
        return x + y

    def backward(self, dy):
        return sum_to_shape(dy, self.x_shape), sum_to_shape(dy, self.y_shape)


class Sub(Function):
    def forward(self, x, y):
        self.x_shape, self.y_shape = x.shape, y.shape
        return x - y

    def backward(self, dy):
        return sum_to_shape(dy, self.x_shape), sum_to_shape(-dy, self.y_shape)


class Mul(Function):
    def forward(self, x, y):
        self.x, self.y = x, y
        return x * y

    def backward(self, dy):
        return sum_to_shape(dy * self.y, self.x.shape), sum_to_shape(dy * self.x, self.y.shape)


class Div(Function):
    """z = x / y;  dz/dx = 1/y,  dz/dy = -x/y^2 = -z/y."""

    def forward(self, x, y):
        self.x_shape, self.y = x.shape, y
        self.z = x / y
        return self.z

    def backward(self, dy):
        dx = dy / self.y
        return sum_to_shape(dx, self.x_shape), sum_to_shape(-dx * self.z, self.y.shape)


class Neg(Function):
    def forward(self, x):
        return -x

    def backward(self, dy):
        return -dy


class Pow(Function):
    """z = x ** p;  dz/dx = p x^(p-1),  dz/dp = z ln x (only where x > 0)."""

    def forward(self, x, p):
        self.x, self.p = x, p
        self.z = x ** p
        return self.z

    def backward(self, dy):
        xp = get_array_module(dy)
        dx = dy * self.p * self.x ** (self.p - 1)
        dp = None
        if self.inputs[1].requires_grad:
            log_x = xp.log(xp.where(self.x > 0, self.x, 1))
            dp = sum_to_shape(dy * self.z * log_x, self.p.shape)
        return sum_to_shape(dx, self.x.shape), dp


class Maximum(Function):
    """Elementwise max. Where x == y the gradient is split evenly between the two (as torch)."""

    def forward(self, x, y):
        self.x, self.y = x, y
        return get_array_module(x).maximum(x, y)

    def backward(self, dy):
        return _split_by_winner(dy, self.x > self.y, self.x == self.y, self.x.shape, self.y.shape)


class Minimum(Function):
    """Elementwise min. Where x == y the gradient is split evenly between the two (as torch)."""

    def forward(self, x, y):
        self.x, self.y = x, y
        return get_array_module(x).minimum(x, y)

    def backward(self, dy):
        return _split_by_winner(dy, self.x < self.y, self.x == self.y, self.x.shape, self.y.shape)


def _split_by_winner(dy, x_wins, tie, x_shape, y_shape):
    share_x = (x_wins + 0.5 * tie).astype(dy.dtype)   # 1 where x wins, 1/2 on a tie, 0 where y wins
    dx = dy * share_x
    return sum_to_shape(dx, x_shape), sum_to_shape(dy - dx, y_shape)


class Where(Function):
    """z = x where condition else y; the condition gets no gradient."""

    def forward(self, condition, x, y):
        self.condition = condition.astype(bool)
        self.x_shape, self.y_shape = x.shape, y.shape
        return get_array_module(x).where(self.condition, x, y)

    def backward(self, dy):
        xp = get_array_module(dy)
        zero = dy.dtype.type(0)
        dx = xp.where(self.condition, dy, zero)
        dy_for_y = xp.where(self.condition, zero, dy)
        return None, sum_to_shape(dx, self.x_shape), sum_to_shape(dy_for_y, self.y_shape)


def add(x, y):
    return Add.apply(x, y)


def sub(x, y):
    return Sub.apply(x, y)


def mul(x, y):
    return Mul.apply(x, y)


def div(x, y):
    return Div.apply(x, y)


def neg(x):
    return Neg.apply(x)


def pow(x, exponent):
    return Pow.apply(x, exponent)


def maximum(x, y):
    return Maximum.apply(x, y)


def minimum(x, y):
    return Minimum.apply(x, y)


def where(condition, x, y):
    return Where.apply(condition, x, y)
