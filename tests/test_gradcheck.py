"""gradcheck itself: it passes correct backwards, fails wrong ones readably, refuses float32."""
import numpy as np
import pytest

import miniclip
from miniclip import Function, GradcheckError, gradcheck


class SquareWithWrongBackward(Function):
    """y = x^2 with a planted mistake: the backward forgets the factor 2."""

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, dy):
        return dy * self.x


class ScaleWithOneWrongEntry(Function):
    """y = 3x, but the backward is wrong in exactly one place, so the report must find it."""

    def forward(self, x):
        return 3 * x

    def backward(self, dy):
        dx = 3 * dy
        dx[1, 2] += 0.5
        return dx


class ZeroWithGradient(Function):
    """y = 0 * x, whose true gradient is 0, with a backward that gives one anyway."""

    def forward(self, x):
        return 0 * x

    def backward(self, dy):
        return dy


def test_correct_backward_passes():
    x = miniclip.tensor(np.random.default_rng(0).standard_normal((3, 4)), requires_grad=True)
    assert gradcheck(lambda a: (a * a).sum(1), [x])


def test_wrong_backward_fails_with_a_readable_report():
    x = miniclip.tensor(np.random.default_rng(0).standard_normal((2, 3)), requires_grad=True)
    with pytest.raises(GradcheckError) as failure:
        gradcheck(SquareWithWrongBackward.apply, [x], names=["x"])
    report = str(failure.value)
    assert "gradcheck failed for x (shape (2, 3))" in report
    assert "6 of 6 entries differ" in report
    assert "numeric (finite differences)" in report and "analytic (backward)" in report
    assert "max abs error" in report and "max rel error" in report


def test_report_points_at_the_wrong_entry():
    x = miniclip.tensor(np.random.default_rng(1).standard_normal((3, 5)), requires_grad=True)
    with pytest.raises(GradcheckError, match=r"1 of 15 entries differ.\n  worst at index \(1, 2\)"):
        gradcheck(ScaleWithOneWrongEntry.apply, [x])


def test_a_gradient_where_the_truth_is_zero_is_named_not_a_huge_relative_error():
    x = miniclip.tensor(np.random.default_rng(3).standard_normal((2, 3)), requires_grad=True)
    with pytest.raises(GradcheckError) as failure:
        gradcheck(ZeroWithGradient.apply, [x])
    report = str(failure.value)
    assert "6 of the differing entries are where the numeric gradient is 0" in report
    assert "rel error" not in report and "e+" not in report
    big = miniclip.tensor(np.random.default_rng(4).standard_normal((40, 30)), requires_grad=True)
    with pytest.raises(GradcheckError, match="the numeric value is 0 \\(within atol\\), so no relative error"):
        gradcheck(ZeroWithGradient.apply, [big])


def test_large_inputs_are_checked_along_random_directions():
    rng = np.random.default_rng(2)
    x = miniclip.tensor(rng.standard_normal((40, 30)), requires_grad=True)   # 1200 > max_full_size
    assert gradcheck(lambda a: (a * a).sum(0), [x])
    with pytest.raises(GradcheckError, match="along random direction"):
        gradcheck(SquareWithWrongBackward.apply, [x])


def test_only_inputs_that_require_grad_are_checked():
    rng = np.random.default_rng(3)
    x = miniclip.tensor(rng.standard_normal(4), requires_grad=True)
    frozen = miniclip.tensor(rng.standard_normal(4))
    assert gradcheck(lambda a, b: a * b, [x, frozen])
    assert frozen.grad is None
    with pytest.raises(ValueError, match="nothing to check"):
        gradcheck(lambda b: b * 2, [frozen])


def test_float32_is_refused_with_the_reason():
    x = miniclip.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(TypeError, match="float64.*float32.*significant digits"):
        gradcheck(lambda a: a * 2, [x])


def test_the_upstream_gradient_is_not_all_ones():
    # sum-then-any-mistake that only shows with a non-uniform upstream gradient:
    # reversing dy is invisible when dy is all ones, visible otherwise
    class ReverseBug(Function):
        def forward(self, x):
            return x * 2

        def backward(self, dy):
            return dy[::-1] * 2
    x = miniclip.tensor(np.arange(5.0), requires_grad=True)
    with pytest.raises(GradcheckError):
        gradcheck(ReverseBug.apply, [x])
