"""The thread settings miniclip makes for itself, on import, before NumPy loads OpenBLAS.

Three thread pools share the cores in a training step: OpenBLAS's (every matmul), GNU OpenMP's
(Numba's parallel kernels) and miniclip's own (the CPU attention kernel's head groups). Both
libraries keep their idle threads spinning for a while after a call, waiting for the next one,
and on a 2-core machine the spinning threads take the cores from whatever runs next:

- OMP_WAIT_POLICY=PASSIVE: OpenMP's idle threads sleep at once. Measured: the autograd test
  suite (`pytest -n 2`) took 45 s instead of 20 s without it, and a 1024 x 1024 softmax_xent
  forward 8 ms instead of 5. It must be set before Numba first loads libgomp.
- OPENBLAS_THREAD_TIMEOUT=4: OpenBLAS's idle threads spin for 2^4 cycles instead of 2^28
  (~0.08 s). Measured: the attention kernel right after a large matmul took 10.4 ms instead of
  5.1 (forward, tiny-vit-s at batch 64), and the whole tiny-vit-s batch-64 training step 1.29 s
  instead of 1.15 (medians of 4 alternating runs). OpenBLAS reads it when NumPy is first
  imported, so it only takes effect when miniclip is imported before NumPy (as in
  `python -m miniclip.train`, `python -m miniclip.bench`).

A value already in the environment wins: these are defaults, not overrides. (The machine's own
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are left alone.) `environment_as_started()` gives the
environment without miniclip's additions, for a child process that must run as its own users
run it (OpenCLIP's side of `bench step --vs-openclip`).
"""
import os

DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_THREAD_TIMEOUT": "4"}
SET_BY_MINICLIP = tuple(name for name in DEFAULTS if name not in os.environ)
for _name in SET_BY_MINICLIP:
    os.environ[_name] = DEFAULTS[_name]


def environment_as_started():
    """os.environ as it was before miniclip's defaults were added."""
    return {name: value for name, value in os.environ.items() if name not in SET_BY_MINICLIP}
