"""scaled_dot_product_attention: float64 gradcheck and torch on the same inputs (the output and
the gradients of query, key, value, and of an additive mask), for T = 1, T = 7, cross-attention,
causal, boolean masks (one row keeps exactly one key) and additive masks; clear errors."""
import numpy as np
import pytest

import miniclip
from miniclip import functional as F
from tests.functional.helpers import assert_matches_torch, make_inputs, normal
from tests.tolerances import GRADCHECK

_rng = np.random.default_rng(5)
KEEP_7x7 = _rng.random((7, 7)) > 0.4
KEEP_7x7[:, 0] = True                              # every query keeps at least one key ...
KEEP_7x7[2] = np.arange(7) == 4                    # ... and query 2 keeps exactly one, key 4
KEEP_PER_BATCH = _rng.random((2, 1, 3, 5)) > 0.5   # (B, 1, L, S): broadcast over the heads
KEEP_PER_BATCH[..., 1] = True
ADDITIVE_7x7 = _rng.standard_normal((7, 7))
ADDITIVE_7x7[3, [0, 5]] = -np.inf                  # an additive mask may drop keys with -inf


def sdpa(**kwargs):
    """The miniclip and the torch function of q, k, v with the same keyword arguments."""
    return (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, **kwargs),
            lambda t, q, k, v: t.nn.functional.scaled_dot_product_attention(q, k, v, **_torch_args(t, kwargs)))


def _torch_args(t, kwargs):
    return {name: t.tensor(value) if isinstance(value, np.ndarray) else value for name, value in kwargs.items()}


CASES = [
    # name, (miniclip fn, torch fn), shapes of q, k, v (and an additive mask)
    ("T1", sdpa(), [(2, 3, 1, 5), (2, 3, 1, 5), (2, 3, 1, 4)]),
    ("T7_no_heads", sdpa(), [(2, 7, 5), (2, 7, 5), (2, 7, 3)]),
    ("T7_causal", sdpa(is_causal=True), [(1, 2, 7, 3), (1, 2, 7, 3), (1, 2, 7, 3)]),
    ("causal_cross_L3_S5", sdpa(is_causal=True), [(2, 3, 4), (2, 5, 4), (2, 5, 2)]),
    ("bool_mask_one_key_in_a_row", sdpa(attn_mask=KEEP_7x7), [(2, 7, 3), (2, 7, 3), (2, 7, 5)]),
    ("bool_mask_per_batch", sdpa(attn_mask=KEEP_PER_BATCH), [(2, 2, 3, 3), (2, 2, 5, 3), (2, 2, 5, 3)]),
    ("additive_mask_with_inf_scale", sdpa(attn_mask=ADDITIVE_7x7, scale=0.3),
     [(1, 7, 5), (1, 7, 5), (1, 7, 5)]),
    ("additive_mask_gradient",
     (lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m),
      lambda t, q, k, v, m: t.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=m)),
     [(2, 5, 3), (2, 7, 3), (2, 7, 3), (1, 5, 7)]),
]


@pytest.mark.parametrize("name, fns, shapes", CASES, ids=[c[0] for c in CASES])
def test_gradcheck(name, fns, shapes):
    assert miniclip.gradcheck(fns[0], make_inputs(shapes, normal), **GRADCHECK)


@pytest.mark.oracle
@pytest.mark.parametrize("name, fns, shapes", CASES, ids=[c[0] for c in CASES])
def test_matches_torch(torch, name, fns, shapes):
    assert_matches_torch(torch, *fns, make_inputs(shapes, normal))


def test_a_row_that_keeps_one_key_copies_that_value():
    q, k, v = make_inputs([(2, 7, 3), (2, 7, 3), (2, 7, 5)])
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=KEEP_7x7)
    np.testing.assert_allclose(out.data[:, 2], v.data[:, 4], rtol=1e-15)


def test_dropout_p_draws_from_the_seeded_generator():
    q, k, v = make_inputs([(2, 7, 3), (2, 7, 3), (2, 7, 5)])
    outs = []
    for _ in range(2):
        miniclip.manual_seed(11)
        outs.append(F.scaled_dot_product_attention(q, k, v, dropout_p=0.5).data)
    np.testing.assert_array_equal(outs[0], outs[1])
    assert not np.allclose(outs[0], F.scaled_dot_product_attention(q, k, v).data)


BAD = [
    # shapes of q, k, v, keyword arguments, words the message must contain
    ([(2, 7, 3), (2, 7, 4), (2, 7, 3)], {}, r"got query \(2, 7, 3\), key \(2, 7, 4\), value \(2, 7, 3\)"),
    ([(2, 7, 3), (2, 7, 3), (2, 5, 3)], {}, r"value \(2, 5, 3\)"),
    ([(2, 7, 3), (2, 7, 3), (2, 7, 3)], {"attn_mask": KEEP_7x7, "is_causal": True}, r"not both"),
]


@pytest.mark.parametrize("shapes, kwargs, message", BAD)
def test_bad_input_gives_a_clear_error(shapes, kwargs, message):
    with pytest.raises(ValueError, match=message):
        F.scaled_dot_product_attention(*make_inputs(shapes), **kwargs)
