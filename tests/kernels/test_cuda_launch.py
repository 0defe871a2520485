"""miniclip.kernels.cuda_launch: the grid limits every numba.cuda launch is checked against, and
the launch configurations that must stay legal at large batch.

- check_launch accepts the largest legal grid (2^31 - 1 blocks on x, 65,535 on y and z, 1,024
  threads per block) and refuses one block more, naming the kernel and the axis.
- Attention v2 puts B * H on the x axis: its grid for B * H = 65,536 (one past the y limit) is
  legal, computed as a pure function (no kernel runs); a small simulator run records the same
  layout, (B * H, query tiles), and its result matches the reference.
- Every other numba_cuda grid is one-dimensional (x, up to 2^31 - 1 blocks; the CLIP loss
  backward v1 at B = 16,384 needs 2^21 of 128 threads), and the simulator runs check each launch.
- recording() collects launches without running them (what kernels/compile_check.py builds on).
"""
import numpy as np
import pytest

from miniclip.kernels import cuda_launch
from miniclip.kernels.attention import numba_cuda as attention_cuda
from miniclip.kernels.attention import reference as attention_reference
from tests.kernels.helpers import assert_close
from tests.tolerances import TORCH_FLOAT64


@pytest.mark.parametrize("grid, block", [((2 ** 31 - 1, 65_535, 65_535), 1), (1, (32, 32)), (7, (1024, 1, 1))])
def test_the_largest_legal_launches_pass(grid, block):
    cuda_launch.check_launch("k", grid, block)


@pytest.mark.parametrize("grid, block, message", [
    ((2 ** 31, 1), 1, "gridDim.x = 2147483648"),
    ((3, 65_536), 128, "gridDim.y = 65536"),
    ((3, 1, 65_536), 128, "gridDim.z = 65536"),
    (0, 128, "gridDim.x = 0"),
    (4, (32, 33), "block (32, 33, 1) has 1056 threads"),
])
def test_an_illegal_launch_names_the_kernel_and_the_figure(grid, block, message):
    with pytest.raises(ValueError, match="my_kernel: .*" + message.replace("(", r"\(").replace(")", r"\)")):
        cuda_launch.check_launch("my_kernel", grid, block)


def test_attention_grid_is_legal_at_65536_heads_times_batch():
    B, H, T = 4096, 16, 77                      # B * H = 65,536: one past gridDim.y's limit
    Br, _ = attention_cuda.default_tiles(np.float32)
    grid = attention_cuda.tile_grid(B, H, T, Br)
    assert grid == (65_536, 5)
    cuda_launch.check_launch("forward_v2", grid, (16, 16))
    with pytest.raises(ValueError, match="gridDim.y = 65536"):     # the layout it replaced
        cuda_launch.check_launch("forward_v2", grid[::-1], (16, 16))


def test_attention_v2_runs_with_batch_times_heads_on_x():
    """A tiny simulator run: the recorded grid is (B * H, tiles), and the result is right."""
    rng = np.random.default_rng(0)
    B, H, T, d = 2, 3, 5, 4
    q, k, v = (rng.standard_normal((B, H, T, d)) for _ in range(3))
    with cuda_launch.recording() as launches:
        attention_cuda.attention_forward_v2(q, k, v, 0.5, Br=2, Bc=2)
    assert [(kernel.__name__, grid) for kernel, grid, _, _ in launches] == [("forward_v2", (6, 3))]
    o, lse = attention_cuda.attention_forward_v2(q, k, v, 0.5, Br=2, Bc=2)
    o_ref, lse_ref = attention_reference.attention_forward(q, k, v, 0.5)
    assert_close("o", o, o_ref, TORCH_FLOAT64)
    assert_close("lse", lse, lse_ref, TORCH_FLOAT64)

