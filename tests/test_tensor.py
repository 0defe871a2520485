"""The autograd core: graph building, accumulation, no_grad, freeing, dtypes, devices."""
import numpy as np
import pytest

import miniclip
from miniclip import Tensor, tensor


def test_default_dtypes_follow_torch():
    assert tensor([1.0, 2.0]).dtype == np.float32          # Python floats: float32
    assert tensor([1, 2]).dtype == np.int64                  # Python ints: int64
    assert tensor(np.zeros(3)).dtype == np.float64           # arrays keep their dtype
    assert tensor([1.0], dtype=np.float64).dtype == np.float64
    assert miniclip.zeros(2, 3).dtype == np.float32


def test_tensor_copies_its_data():
    data = np.arange(3.0)
    t = tensor(data)
    data[0] = 10
    assert t.data[0] == 0


def test_attributes():
    t = tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    assert t.shape == (2, 3) and t.ndim == 2 and t.dtype == np.float64 and len(t) == 2
    assert t.T.shape == (3, 2)
    assert t.is_leaf and t.device == "cpu"
    assert tensor(3.5).item() == 3.5
    np.testing.assert_array_equal(t.numpy(), np.arange(6.0).reshape(2, 3))
    d = (t * 2).detach()
    assert not d.requires_grad and d.is_leaf


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(TypeError, match="floating-point"):
        tensor([1, 2], requires_grad=True)


def test_chain_rule_on_a_small_expression():
    # f(x, y) = (x * y + x) ** 2  ->  df/dx = 2 (xy + x)(y + 1),  df/dy = 2 (xy + x) x
    x = tensor(3.0, requires_grad=True, dtype=np.float64)
    y = tensor(-2.0, requires_grad=True, dtype=np.float64)
    f = (x * y + x) ** 2
    f.backward()
    assert f.item() == 9.0
    assert x.grad == pytest.approx(2 * (-6 + 3) * (-2 + 1))
    assert y.grad == pytest.approx(2 * (-6 + 3) * 3)


def test_gradients_accumulate_when_a_tensor_is_used_twice():
    x = tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * x + x                       # x used three times
    y.sum().backward()
    np.testing.assert_allclose(x.grad, 2 * x.data + 1)


def test_gradients_accumulate_across_backward_calls():
    x = tensor([1.0, -2.0], requires_grad=True)
    (x * 3).sum().backward()
    (x * 4).sum().backward()
    np.testing.assert_allclose(x.grad, [7.0, 7.0])


def test_leaf_grads_do_not_alias_each_other():
    # add's backward hands the same dy to both inputs; the leaves must still own their grads
    x = tensor([1.0, 2.0], requires_grad=True)
    y = tensor([3.0, 4.0], requires_grad=True)
    ((x + y) * 1.0).sum().backward()    # * 1.0: a fresh, writeable dy reaches the add
    x.grad *= 10
    np.testing.assert_allclose(y.grad, [1.0, 1.0])


def test_a_fresh_gradient_is_kept_without_a_copy_and_shared_memory_is_copied():
    """A leaf keeps the array a backward made for it (no copy); views of the caller's gradient, a
    read-only broadcast, and a gradient still pending for another node are copied or not written."""
    from miniclip.tensor import Function

    class Fresh(Function):
        def forward(self, x):
            return x * 2

        def backward(self, dy):
            self.made = dy * 2
            return self.made
    w = tensor([1.0, 2.0], requires_grad=True)
    node = Fresh.apply(w)
    fn = node._ctx
    node.sum().backward(retain_graph=True)      # retained: fn keeps .made for the check
    assert w.grad is fn.made

    x = tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    g = np.ones(4, np.float32)
    x.reshape(4).backward(g)                  # x.grad would be a view of the caller's g
    assert not np.shares_memory(x.grad, g)
    x.grad *= 3
    np.testing.assert_array_equal(g, np.ones(4, np.float32))

    z = tensor([1.0, 2.0, 3.0], requires_grad=True)
    z.sum().backward()                         # sum's backward is a read-only broadcast of dy
    z.grad *= 2                                # the kept gradient is writeable
    np.testing.assert_array_equal(z.grad, [2.0, 2.0, 2.0])

    a = tensor([1.0, 2.0], requires_grad=True)
    h = a * 1.0
    ((a + h + a) * 1.0).sum().backward()       # one fresh dy goes to a (kept), to h (pending), to a again
    np.testing.assert_array_equal(a.grad, [3.0, 3.0])


def test_a_gradient_kept_from_an_earlier_backward_is_not_written_over():
    x = tensor([1.0, -2.0], requires_grad=True)
    (x * 3).sum().backward()
    first = x.grad
    (x * 4).sum().backward()
    np.testing.assert_array_equal(first, [3.0, 3.0])
    np.testing.assert_array_equal(x.grad, [7.0, 7.0])


def test_diamond_graph_is_visited_once_per_node():
    # a is used by b and c, both feed d: a's gradient is the sum over both paths
    a = tensor(2.0, requires_grad=True, dtype=np.float64)
    b = a * 3
    c = a.exp()
    d = b * c
    d.backward()
    assert a.grad == pytest.approx(3 * np.exp(2) + 6 * np.exp(2))


def test_deep_graph_does_not_hit_the_recursion_limit():
    x = tensor(1.0, requires_grad=True, dtype=np.float64)
    y = x
    for _ in range(5000):
        y = y * 1.0001
    y.backward()
    assert x.grad == pytest.approx(1.0001 ** 5000)


def test_no_grad_builds_no_graph():
    x = tensor([1.0], requires_grad=True)
    with miniclip.no_grad():
        y = x * 2
    assert not y.requires_grad and y.is_leaf
    assert miniclip.is_grad_enabled()

    @miniclip.no_grad()
    def double(t):
        return t * 2
    assert not double(x).requires_grad


def test_graph_is_freed_after_backward_unless_retained():
    x = tensor([1.0, 2.0], requires_grad=True)
    y = (x.exp() * x).sum()
    y.backward(retain_graph=True)
    first = x.grad.copy()
    y.backward()                                    # allowed: the graph was retained
    np.testing.assert_allclose(x.grad, 2 * first)
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()
    assert y._ctx.released and y._ctx.inputs == ()  # the saved arrays are gone


def test_backward_needs_a_gradient_for_non_scalars():
    x = tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="one-element"):
        (x * 2).backward()
    (x * 2).backward(np.array([1.0, -1.0], dtype=np.float32))
    np.testing.assert_allclose(x.grad, [2.0, -2.0])
    with pytest.raises(ValueError, match="shape"):
        (x * 2).backward(np.ones(3))


def test_backward_on_a_tensor_without_grad_is_an_error():
    with pytest.raises(RuntimeError, match="does not require grad"):
        tensor([1.0]).sum().backward()


def test_branch_that_does_not_reach_the_loss_gets_no_gradient():
    x = tensor([1.0, 2.0, 3.0], requires_grad=True)
    a, b = x.split([1, 2])
    (a * 5).sum().backward()                        # b is unused: its part of x.grad is zero
    np.testing.assert_allclose(x.grad, [5.0, 0.0, 0.0])


def test_float64_is_kept_everywhere():
    x = tensor(np.random.default_rng(0).standard_normal((3, 4)), requires_grad=True)
    y = ((x @ x.T).exp().sum(1) / 3 - x.mean()).sum()
    y.backward()
    assert y.dtype == np.float64 and x.grad.dtype == np.float64


def test_python_numbers_take_the_tensor_dtype():
    x = tensor([1.0, 2.0])
    assert (x * 2.5).dtype == np.float32
    assert (2 - x).dtype == np.float32
    assert (x ** 2).dtype == np.float32


def test_comparisons_give_boolean_tensors_without_grad():
    x = tensor([1.0, 2.0, 3.0], requires_grad=True)
    mask = x > 1.5
    assert mask.dtype == bool and not mask.requires_grad
    np.testing.assert_array_equal(mask.data, [False, True, True])
    np.testing.assert_array_equal((x == 2.0).data, [False, True, False])


def test_mixing_devices_is_a_clear_error():
    class FakeGpuArray(np.ndarray):
        """An ndarray that reports itself as a CuPy array (no GPU on the test machine)."""
    FakeGpuArray.__module__ = "cupy._core.core"
    x = tensor([1.0, 2.0])
    y = Tensor(np.array([1.0, 2.0], dtype=np.float32).view(FakeGpuArray))
    assert y.device == "cuda"
    with pytest.raises(RuntimeError, match="one device"):
        x + y


def test_to_cpu_is_a_no_op_and_cuda_without_gpu_is_a_clear_error():
    x = tensor([1.0])
    assert x.to("cpu") is x
    if not miniclip.has_gpu():
        with pytest.raises(RuntimeError, match="CuPy"):
            x.to("cuda")


def test_gpu_helpers_without_a_gpu_are_clear_errors_and_synchronize_is_a_no_op():
    if miniclip.has_gpu():
        pytest.skip("this machine has a GPU")
    from miniclip import backend
    backend.synchronize()
    for helper in (backend.nccl, backend.current_stream_pointer, lambda: backend.use_gpu(0)):
        with pytest.raises(RuntimeError, match="CuPy and a CUDA GPU"):
            helper()


def test_after_reuse_freed_host_memory_large_arrays_come_back_without_page_faults():
    import resource
    from miniclip import backend
    if not backend.reuse_freed_host_memory():
        pytest.skip("no glibc malloc here")
    x = np.ones((2048, 2048), np.float32)                    # 16 MiB: glibc would mmap it by default
    (x + 1).sum()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        (x + 1).sum()                                        # a fresh 16 MiB temporary each time
    assert resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults < 50   # ~500 by default (THP)


def test_a_small_regression_trains():
    # fit y = 3x - 1 by gradient descent on the autograd engine alone
    rng = np.random.default_rng(0)
    xs = tensor(rng.standard_normal((64, 1)))
    ys = xs * 3.0 - 1.0
    w = tensor(np.zeros((1, 1)), requires_grad=True)
    b = tensor(np.zeros(1), requires_grad=True)
    for _ in range(200):
        loss = ((xs @ w + b - ys) ** 2).mean()
        w.grad = b.grad = None
        loss.backward()
        w.data -= 0.1 * w.grad
        b.data -= 0.1 * b.grad
    assert loss.item() < 1e-8
    assert w.item() == pytest.approx(3.0) and b.item() == pytest.approx(-1.0)


def test_reductions_take_numpys_axis_as_torch_does():
    x = tensor(np.arange(24.0).reshape(2, 3, 4), requires_grad=True)
    for name in ("sum", "mean", "max"):
        assert np.array_equal(getattr(x, name)(axis=1).data, getattr(x, name)(dim=1).data)
        assert np.array_equal(getattr(x, name)(axis=(0, 2), keepdim=True).data, getattr(x, name)((0, 2), True).data)
    assert np.array_equal(x.argmax(axis=2).data, x.data.argmax(axis=2))
    x.sum(axis=0).sum().backward()
    assert np.array_equal(x.grad, np.ones((2, 3, 4)))
    with pytest.raises(TypeError, match="dim or axis"):
        x.sum(dim=0, axis=1)

