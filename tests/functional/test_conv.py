"""conv2d, unfold, avg_pool2d, max_pool2d, adaptive_avg_pool2d on odd image sizes.

float64 gradcheck and torch on the same inputs (values and every input gradient); max pooling
inputs have no ties (distinct values), and one test pins down how a tie shares the gradient.
"""
import numpy as np
import pytest

import miniclip
from miniclip import functional as F
from tests.helpers import assert_matches_torch, distinct, make_inputs, normal
from tests.tolerances import GRADCHECK

CASES = [
    # name, miniclip fn, torch fn, input shapes, input maker
    ("conv2d_stride2_pad1", lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1),
     lambda t, x, w, b: t.nn.functional.conv2d(x, w, b, stride=2, padding=1),
     [(1, 3, 7, 5), (4, 3, 3, 3), (4,)], normal),
    ("conv2d_rect_kernel_mixed_stride_no_bias", lambda x, w: F.conv2d(x, w, stride=(1, 2), padding=(0, 1)),
     lambda t, x, w: t.nn.functional.conv2d(x, w, stride=(1, 2), padding=(0, 1)),
     [(2, 2, 5, 5), (3, 2, 1, 3)], normal),
    ("conv2d_dilation2", lambda x, w, b: F.conv2d(x, w, b, padding=2, dilation=2),
     lambda t, x, w, b: t.nn.functional.conv2d(x, w, b, padding=2, dilation=2),
     [(1, 2, 5, 7), (2, 2, 3, 3), (2,)], normal),
    ("conv2d_kernel_covers_image", F.conv2d, lambda t, x, w: t.nn.functional.conv2d(x, w),
     [(3, 1, 3, 2), (5, 1, 3, 2)], normal),
    ("unfold", lambda x: F.unfold(x, (2, 3), padding=1, stride=(2, 1)),
     lambda t, x: t.nn.functional.unfold(x, (2, 3), padding=1, stride=(2, 1)), [(1, 2, 5, 7)], normal),
    ("avg_pool2d_k3_s2_p1", lambda x: F.avg_pool2d(x, 3, 2, 1),
     lambda t, x: t.nn.functional.avg_pool2d(x, 3, 2, 1), [(2, 3, 7, 5)], normal),
    ("avg_pool2d_k2_drops_odd_edge", lambda x: F.avg_pool2d(x, 2),
     lambda t, x: t.nn.functional.avg_pool2d(x, 2), [(1, 3, 7, 5)], normal),
    ("avg_pool2d_rect_overlapping", lambda x: F.avg_pool2d(x, (3, 2), stride=1),
     lambda t, x: t.nn.functional.avg_pool2d(x, (3, 2), stride=1), [(2, 1, 5, 3)], normal),
    ("max_pool2d_k3_s2_p1", lambda x: F.max_pool2d(x, 3, 2, 1),
     lambda t, x: t.nn.functional.max_pool2d(x, 3, 2, 1), [(2, 3, 7, 5)], distinct),
    ("max_pool2d_k2", lambda x: F.max_pool2d(x, 2), lambda t, x: t.nn.functional.max_pool2d(x, 2),
     [(1, 2, 5, 7)], distinct),
    ("max_pool2d_overlapping_dilated", lambda x: F.max_pool2d(x, 2, stride=1, dilation=2),
     lambda t, x: t.nn.functional.max_pool2d(x, 2, stride=1, dilation=2), [(1, 2, 5, 5)], distinct),
    ("adaptive_avg_pool2d_uneven_bins", lambda x: F.adaptive_avg_pool2d(x, (3, 2)),
     lambda t, x: t.nn.functional.adaptive_avg_pool2d(x, (3, 2)), [(2, 3, 7, 5)], normal),
    ("adaptive_avg_pool2d_to_1", lambda x: F.adaptive_avg_pool2d(x, 1),
     lambda t, x: t.nn.functional.adaptive_avg_pool2d(x, 1), [(2, 3, 7, 5)], normal),
    ("adaptive_avg_pool2d_upsample_keep_width", lambda x: F.adaptive_avg_pool2d(x, (5, None)),
     lambda t, x: t.nn.functional.adaptive_avg_pool2d(x, (5, None)), [(1, 2, 3, 7)], normal),
]


@pytest.mark.parametrize("name, fn, torch_fn, shapes, maker", CASES, ids=[c[0] for c in CASES])
def test_gradcheck(name, fn, torch_fn, shapes, maker):
    assert miniclip.gradcheck(fn, make_inputs(shapes, maker), **GRADCHECK)


@pytest.mark.oracle
@pytest.mark.parametrize("name, fn, torch_fn, shapes, maker", CASES, ids=[c[0] for c in CASES])
def test_matches_torch(torch, name, fn, torch_fn, shapes, maker):
    assert_matches_torch(torch, fn, torch_fn, make_inputs(shapes, maker))


def test_max_pool2d_shares_the_gradient_of_a_tie_equally():
    x = miniclip.tensor(np.array([[[[2.0, 2.0, 0.0], [2.0, 1.0, 0.0]]]]), requires_grad=True)
    y = F.max_pool2d(x, 2, stride=1)                        # two windows, each with a tie at 2.0
    y.backward(np.array([[[[6.0, 4.0]]]]))
    np.testing.assert_allclose(x.grad[0, 0], [[2.0, 6.0, 0.0], [2.0, 0.0, 0.0]])


BAD = [
    # call, words the message must contain
    (lambda x: F.conv2d(x, miniclip.ones(4, 2, 3, 3, dtype=np.float64)),
     r"weight of shape \(4, 2, 3, 3\) must be \(out_channels, 3, kh, kw\) for an input of shape "
     r"\(1, 3, 7, 5\) with 3 channels"),
    (lambda x: F.conv2d(x, miniclip.ones(4, 3, 3, 3, dtype=np.float64), miniclip.ones(3)),
     r"bias must have shape \(4,\), got \(3,\)"),
    (lambda x: F.conv2d(x, miniclip.ones(4, 3, 3, 7, dtype=np.float64)),
     r"kernel \(3, 7\) .* does not fit the input \(1, 3, 7, 5\)"),
    (lambda x: F.conv2d(x[0], miniclip.ones(4, 3, 3, 3, dtype=np.float64)),
     r"expected an input of shape \(B, C, H, W\), got \(3, 7, 5\)"),
    (lambda x: F.max_pool2d(x, 3, padding=2), r"padding \(2, 2\) must be at most half the kernel size \(3, 3\)"),
]


@pytest.mark.parametrize("call, message", BAD)
def test_bad_input_gives_a_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call(make_inputs([(1, 3, 7, 5)])[0])
