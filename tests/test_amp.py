"""Mixed precision (miniclip/amp.py): 16-bit rounding, autocast linear, loss scaling."""
import os

import numpy as np
import pytest

import miniclip.functional as F
from miniclip import amp
from miniclip.models import create_model
from miniclip.tensor import Tensor

from tests.training.conftest import TINY


def awkward_float32(rng, n=4000):
    """Random magnitudes over float32's whole range, exact bfloat16 ties, and the special values."""
    x = (rng.standard_normal(n) * 10.0 ** rng.uniform(-44, 38, n)).astype(np.float32)
    ties = (rng.integers(0, 2 ** 31, 500, dtype=np.uint32) & np.uint32(0xFFFF0000)) | np.uint32(0x8000)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 3.4028235e38, -3.4028235e38, 1e-45, 1.0,
                         1.00390625, 1.005859375], np.float32)   # 1 + 2^-8: a tie; + 2^-9: not
    return np.concatenate([x, ties.view(np.float32), specials])


def nearest_bfloat16(x):
    """Slow reference: of the two bfloat16 neighbours of x (its truncation and the next one up in
    magnitude), the nearer one in float64, the even one on a tie."""
    out = np.empty_like(x)
    for i, value in enumerate(x):
        if not np.isfinite(value):
            out[i] = value
            continue
        bits = np.array([value], np.float32).view(np.uint32)[0]
        low = np.array([bits & 0xFFFF0000], np.uint32).view(np.float32)[0]
        high = np.array([(bits & 0xFFFF0000) + 0x10000], np.uint32).view(np.float32)[0]
        # Past the largest bfloat16 the next one up is 2^128, which float32 calls inf.
        high_value = float(high) if np.isfinite(high) else np.copysign(2.0 ** 128, float(value))
        d_low, d_high = abs(float(value) - float(low)), abs(high_value - float(value))
        even_is_low = ((bits >> 16) & 1) == 0
        out[i] = low if d_low < d_high or (d_low == d_high and even_is_low) else high
    return out


def test_round_to_bfloat16_is_the_nearest_bfloat16_ties_to_even():
    x = awkward_float32(np.random.default_rng(0))
    got = amp.round_to_bfloat16(x)
    assert got.dtype == np.float32
    assert not (got[np.isfinite(got)].view(np.uint32) & 0xFFFF).any()      # the low 16 bits are zero
    np.testing.assert_array_equal(got, nearest_bfloat16(x))
    assert got[-2] == np.float32(1.0) and got[-1] == np.float32(1.0078125)   # a tie goes to even


@pytest.mark.oracle
def test_round_to_bfloat16_matches_torch_bit_for_bit(torch):
    x = awkward_float32(np.random.default_rng(1))
    expected = torch.from_numpy(x).to(torch.bfloat16).to(torch.float32).numpy()
    np.testing.assert_array_equal(amp.round_to_bfloat16(x), expected)


def test_round_to_bfloat16_refuses_other_dtypes():
    with pytest.raises(TypeError, match="float64"):
        amp.round_to_bfloat16(np.ones(3))


def linear_inputs(seed=0):
    rng = np.random.default_rng(seed)
    x = Tensor(rng.standard_normal((3, 5, 24)).astype(np.float32), requires_grad=True)
    w = Tensor((rng.standard_normal((17, 24)) / 5).astype(np.float32), requires_grad=True)
    b = Tensor(rng.standard_normal(17).astype(np.float32), requires_grad=True)
    return x, w, b


def rounded(array, dtype):
    return array.astype(np.float16).astype(np.float64) if dtype == "float16" else \
        amp.round_to_bfloat16(array).astype(np.float64)


@pytest.mark.parametrize("dtype", amp.DTYPES)
def test_autocast_linear_multiplies_the_rounded_inputs_and_keeps_float32_gradients(dtype):
    x, w, b = linear_inputs()
    with amp.autocast(dtype):
        y = F.linear(x, w, b)
    assert y.dtype == np.float32
    # A tensor core's product: 16-bit inputs, exact products, float32 sums, one rounding at the end.
    exact = rounded(x.data, dtype) @ rounded(w.data, dtype).T + rounded(b.data, dtype)
    expected = rounded(exact.astype(np.float32), dtype)
    ulp = 2.0 ** (-10 if dtype == "float16" else -7)
    np.testing.assert_allclose(y.data, expected, rtol=ulp, atol=ulp * 2 ** -6)
    dy = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    y.backward(dy)
    assert x.grad.dtype == w.grad.dtype == b.grad.dtype == np.float32
    dy16 = rounded(dy, dtype).reshape(-1, 17)
    np.testing.assert_allclose(w.grad, dy16.T @ rounded(x.data, dtype).reshape(-1, 24), rtol=2e-2, atol=2e-2)
    np.testing.assert_allclose(x.grad, (dy16 @ rounded(w.data, dtype)).reshape(x.shape), rtol=2e-2, atol=2e-2)
    np.testing.assert_allclose(b.grad, dy16.sum(axis=0), rtol=2e-2, atol=2e-2)


@pytest.mark.oracle
def test_autocast_float16_linear_matches_torch_float16(torch):
    x, w, b = linear_inputs(2)
    with amp.autocast("float16"):
        y = F.linear(x, w, b)
    t = [torch.from_numpy(a.data).half() for a in (x, w, b)]
    expected = torch.nn.functional.linear(*t).float().numpy()
    np.testing.assert_allclose(y.data, expected, rtol=2 ** -10, atol=2 ** -14)


def test_outside_autocast_and_for_float64_linear_is_untouched():
    x, w, b = linear_inputs()
    plain = F.linear(x, w, b).data
    with amp.autocast(None):
        np.testing.assert_array_equal(F.linear(x, w, b).data, plain)
    x64, w64 = Tensor(x.data.astype(np.float64)), Tensor(w.data.astype(np.float64))
    with amp.autocast("float16"):
        assert F.linear(x64, w64).dtype == np.float64
    assert amp.autocast_dtype() is None


def test_autocast_refuses_an_unknown_dtype():
    with pytest.raises(ValueError, match="float8"):
        with amp.autocast("float8"):
            pass


def test_loss_scaling_rescues_gradients_that_underflow_in_float16():
    x, w, _ = linear_inputs(3)
    dy = np.full((3, 5, 17), 1e-8, np.float32)   # below float16's smallest subnormal, 6e-8
    with amp.autocast("float16"):
        F.linear(x, w).backward(dy)
    assert not w.grad.any()                       # every gradient rounded to zero
    w.grad = None
    scaler = amp.GradScaler()
    with amp.autocast("float16"):
        F.linear(x, w).backward(dy * scaler.scale)
    assert not scaler.unscale_([w])
    exact = dy.reshape(-1, 17).T.astype(np.float64) @ x.data.reshape(-1, 24)
    np.testing.assert_allclose(w.grad, exact, rtol=2e-2, atol=1e-9)


def test_grad_scaler_skips_backs_off_and_grows():
    p = Tensor(np.ones(3, np.float32), requires_grad=True)
    scaler = amp.GradScaler(init_scale=8.0, growth_interval=3)
    p.grad = np.array([8.0, 16.0, 24.0], np.float32)
    assert scaler.unscale_([p]) is False
    np.testing.assert_array_equal(p.grad, [1, 2, 3])
    p.grad = np.array([1.0, np.inf, 0.0], np.float32)
    assert scaler.unscale_([p]) is True
    p.grad = np.array([np.nan, 0.0, 0.0], np.float32)
    assert scaler.unscale_([p]) is True
    scales = []
    for found_inf in [False, True, False, False, False, False, False, False]:
        scaler.update(found_inf)
        scales.append(scaler.scale)
    assert scales == [8, 4, 4, 4, 8, 8, 8, 16]   # halve on overflow; double after 3 good steps
    restored = amp.GradScaler()
    restored.load_state_dict(scaler.state_dict())
    assert restored.state_dict() == {"scale": 16.0, "good_steps": 0}


@pytest.mark.parametrize("dtype", amp.DTYPES)
def test_a_clip_model_under_autocast_stays_close_to_float32(dtype):
    model = create_model(TINY)
    rng = np.random.default_rng(0)
    images = Tensor(rng.standard_normal((4, 3, 16, 16)).astype(np.float32))
    tokens = rng.integers(1, 300, (4, 24))
    reference = model.encode_image(images, normalize=True).data
    with amp.autocast(dtype):
        features = model.encode_image(images, normalize=True)
    assert features.dtype == np.float32
    error = np.abs(features.data - reference).max()
    assert 0 < error < (3e-2 if dtype == "bfloat16" else 5e-3), error
    with amp.autocast(dtype):
        text = model.encode_text(tokens, normalize=True)
    np.testing.assert_allclose(text.data, model.encode_text(tokens, normalize=True).data, atol=3e-2)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", amp.DTYPES)
def test_autocast_linear_on_cupy_matches_numpy(dtype):
    import cupy
    x, w, b = linear_inputs()
    with amp.autocast(dtype):
        expected = F.linear(x, w, b).data
        got = F.linear(*[Tensor(cupy.asarray(t.data)) for t in (x, w, b)])
    assert os.environ.get("MINICLIP_REAL_GPU") == "1"
    np.testing.assert_allclose(cupy.asnumpy(got.data), expected, rtol=2 ** -7, atol=1e-3)


@pytest.mark.parametrize("dtype", amp.DTYPES)
def test_the_conversions_backward_is_the_mirror_conversion(dtype):
    """A rounding has no useful derivative (central differences give 0 or a jump), so its gradient
    is defined as torch's .to(dtype) defines it: the gradient converted the other way. Checked here
    against that definition, values and dtypes."""
    rng = np.random.default_rng(4)
    x = Tensor(rng.standard_normal(50).astype(np.float32), requires_grad=True)
    dy = (rng.standard_normal(50) * 1e-3).astype(np.float32)
    low = amp.to_low_precision(x, dtype)
    np.testing.assert_array_equal(low.data, amp.to_16_bits(x.data, dtype))
    back = amp.to_float32(low, dtype)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back.data, amp.through_16_bits(x.data, dtype))
    back.backward(dy)
    # dy went to 16 bits at ToFloat32 and back to float32 at ToLowPrecision: rounded once.
    np.testing.assert_array_equal(x.grad, amp.through_16_bits(dy, dtype))
    assert not np.array_equal(x.grad, dy)
