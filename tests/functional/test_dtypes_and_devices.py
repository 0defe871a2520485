"""Every functional op keeps float32 as float32, and runs unchanged on CuPy arrays.

Each op runs on the CPU in float64 (the reference), then in float32 on the CPU, and (tests
marked gpu, real GPU only) in float64 and float32 on the GPU. The output and every input gradient
must keep the dtype and device of the inputs and match the reference: to float64 rounding on
the GPU, to float32 rounding (KERNEL_FLOAT32) in float32.
"""
import numpy as np
import pytest

from miniclip import functional as F
from miniclip.backend import get_array_module, to_device, to_numpy
from miniclip.tensor import Tensor
from tests.helpers import distinct, normal
from tests.tolerances import KERNEL_FLOAT32, TORCH_FLOAT64

TARGET = np.array([2, 0, 4])
KEEP = np.tril(np.ones((5, 5), dtype=bool))


def batch_norm_eval(x, w, b):
    """batch_norm with running statistics on x's device, as an nn.Module's buffers would be."""
    xp = get_array_module(x.data)
    mean = xp.asarray([0.5, -0.2], dtype=x.dtype)
    var = xp.asarray([1.5, 0.7], dtype=x.dtype)
    return F.batch_norm(x, mean, var, w, b)


CASES = [
    # name, fn, input shapes, input maker
    ("softmax", lambda x: F.softmax(x, -1), [(3, 5)], normal),
    ("log_softmax", lambda x: F.log_softmax(x, 0), [(3, 5)], normal),
    ("logsumexp", lambda x: F.logsumexp(x, 1), [(3, 5)], normal),
    ("gelu", F.gelu, [(3, 5)], normal),
    ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"), [(3, 5)], normal),
    ("quick_gelu", F.quick_gelu, [(3, 5)], normal),
    ("logsigmoid", F.logsigmoid, [(3, 5)], normal),
    ("cross_entropy", lambda x: F.cross_entropy(x, TARGET, label_smoothing=0.1), [(3, 5)], normal),
    ("layer_norm", lambda x, w, b: F.layer_norm(x, 5, w, b), [(3, 5), (5,), (5,)], normal),
    ("batch_norm_train", lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
     [(3, 2, 5), (2,), (2,)], normal),
    ("batch_norm_eval", batch_norm_eval, [(3, 2, 5), (2,), (2,)], normal),
    ("normalize", F.normalize, [(3, 5)], normal),
    ("linear", F.linear, [(3, 5), (2, 5), (2,)], normal),
    ("embedding", lambda w: F.embedding(TARGET, w), [(5, 3)], normal),
    ("conv2d", lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1), [(1, 3, 7, 5), (2, 3, 3, 3), (2,)],
     normal),
    ("avg_pool2d", lambda x: F.avg_pool2d(x, 3, 2, 1), [(1, 2, 7, 5)], normal),
    ("max_pool2d", lambda x: F.max_pool2d(x, 3, 2, 1), [(1, 2, 7, 5)], distinct),
    ("adaptive_avg_pool2d", lambda x: F.adaptive_avg_pool2d(x, (3, 2)), [(1, 2, 7, 5)], normal),
    ("attention_bool_mask", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=KEEP),
     [(2, 5, 3), (2, 5, 3), (2, 5, 3)], normal),
]

RUNS = [
    pytest.param("cpu", np.float32, id="cpu-float32"),
    pytest.param("cuda", np.float64, id="cuda-float64", marks=pytest.mark.gpu),
    pytest.param("cuda", np.float32, id="cuda-float32", marks=pytest.mark.gpu),
]


def run(fn, arrays, device, dtype):
    """fn on leaf tensors made from `arrays`; returns the output and the input gradients as NumPy."""
    inputs = [Tensor(to_device(a.astype(dtype), device), requires_grad=True) for a in arrays]
    out = fn(*inputs)
    upstream = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
    out.backward(to_device(upstream, device))
    for tensor in [out] + [x.grad for x in inputs]:
        data = tensor.data if isinstance(tensor, Tensor) else tensor
        assert data.dtype == dtype and get_array_module(data) is get_array_module(inputs[0].data), \
            f"expected {device} {np.dtype(dtype).name}, got {type(data).__module__} {data.dtype}"
    return [to_numpy(out.data)] + [to_numpy(x.grad) for x in inputs]


@pytest.mark.parametrize("device, dtype", RUNS)
@pytest.mark.parametrize("name, fn, shapes, maker", CASES, ids=[c[0] for c in CASES])
def test_matches_the_float64_cpu_result(name, fn, shapes, maker, device, dtype):
    rng = np.random.default_rng(0)
    arrays = [maker(rng, shape) for shape in shapes]
    expected = run(fn, arrays, "cpu", np.float64)
    got = run(fn, arrays, device, dtype)
    tolerance = TORCH_FLOAT64 if dtype == np.float64 else KERNEL_FLOAT32
    for what, g, e in zip(["output"] + [f"gradient of input {i}" for i in range(len(arrays))], got, expected):
        np.testing.assert_allclose(g, e, **tolerance, err_msg=f"{name} on {device}: {what}")
