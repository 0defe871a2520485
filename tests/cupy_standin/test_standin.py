"""The stand-in keeps CuPy's rules: no implicit host conversion, no host arrays mixed in, every
device-to-host transfer counted where it was asked for."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from numba import cuda

from miniclip import backend

HERE = os.path.relpath(__file__)


def test_arrays_are_cupy_arrays_and_a_gpu_is_seen(standin):
    import cupy
    x = cupy.arange(6, dtype=np.float32).reshape(2, 3)
    assert backend.has_gpu() and backend.is_cupy_array(x) and backend.get_array_module(x) is cupy
    for result in (x + 1, x.sum(), x[0], np.exp(x), np.float32(2) * x, cupy.zeros_like(x), x.T):
        assert backend.is_cupy_array(result), type(result)
    assert x.sum().shape == ()   # a reduction is a 0-d device array, as in CuPy


def test_the_backend_forgets_the_stand_in_after_it_is_removed(standin):
    assert backend.has_gpu()
    standin.uninstall()
    assert not backend.has_gpu()
    standin.install()


@pytest.mark.parametrize("convert", [np.asarray, np.array, lambda x: np.array([x[0], x[1]]),
                                     lambda x: np.float32(x), float, int],
                         ids=["asarray", "array", "array_of_rows", "np.float32", "float", "int"])
def test_implicit_conversion_to_the_host_is_a_type_error(standin, convert):
    import cupy
    with pytest.raises(TypeError):
        convert(cupy.ones((2, 3), np.float32))
    assert standin.total_transfers() == 0


@pytest.mark.parametrize("mix", [lambda x, h: x + h, lambda x, h: h * x, lambda x, h: x @ h.T,
                                 lambda x, h: np.concatenate([x, h]), lambda x, h: x.__setitem__(0, h[0]),
                                 lambda x, h: np.maximum(x, h)],
                         ids=["add", "rmul", "matmul", "concatenate", "setitem", "ufunc"])
def test_a_host_array_mixed_with_device_arrays_is_a_type_error(standin, mix):
    import cupy
    with pytest.raises(TypeError, match="NumPy"):
        mix(cupy.ones((2, 3), np.float32), np.ones((2, 3), np.float32))


def test_each_transfer_is_counted_at_its_line(standin):
    import cupy
    x = cupy.asarray(np.array([[1.5, 2.0], [3.0, 4.0]]))
    line = sys._getframe().f_lineno
    x.get(); x.sum().item(); float(x[0, 0]); cupy.asnumpy(x)   # noqa: E702
    bool(x[0, 0] > 1); int(x[1, 1]); x.tolist()              # noqa: E702
    assert dict(standin.transfers) == {f"{HERE}:{line + 1}": 4, f"{HERE}:{line + 2}": 3}
    assert x.get().tolist() == [[1.5, 2.0], [3.0, 4.0]]


def test_truth_of_a_larger_array_is_ambiguous(standin):
    import cupy
    with pytest.raises(ValueError, match="ambiguous"):
        bool(cupy.ones(2) > 0)


def test_cuda_cupyx_and_linalg_parts(standin):
    import cupy
    import cupyx
    from cupyx.scipy.special import erf
    assert cupy.cuda.runtime.getDeviceCount() == 1 and cupy.cuda.get_current_stream().ptr == 0
    pinned = np.frombuffer(cupy.cuda.alloc_pinned_memory(24), np.float64, 3)
    pinned[:] = [1, 2, 3]
    assert sum(standin.pinned_allocations.values()) == 1
    target = cupy.zeros(3)
    cupyx.scatter_add(target, cupy.asarray(np.array([0, 2, 0])), cupy.asarray(pinned))
    values = np.array([-2.0, 0.1, 3.0])
    assert target.get().tolist() == [4.0, 0.0, 2.0]
    assert np.allclose(erf(cupy.asarray(values)).get(), [math.erf(v) for v in values], rtol=1e-15)
    assert float(cupy.linalg.norm(cupy.asarray(values))) == pytest.approx(np.linalg.norm(values))


@cuda.jit
def twice(x, out):
    i = cuda.grid(1)
    if i < x.size:
        out[i] = 2 * x[i]


def test_simulated_numba_kernels_work_on_stand_in_memory(standin):
    import cupy
    x = cupy.arange(5, dtype=np.float32)
    out = cupy.empty_like(x)
    twice[1, 8](x, out)
    assert out.get().tolist() == [0, 2, 4, 6, 8]


def test_the_launcher_runs_a_module_on_it_and_writes_the_counts(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text("import cupy, numpy\nx = cupy.ones(3)\nprint(float(x.sum()))\n"
                      "numpy.asarray(x)\n")
    counts = tmp_path / "counts.json"
    env = {**os.environ, "MINICLIP_STANDIN_TRANSFERS": str(counts),
           "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.getcwd()}"}
    result = subprocess.run([sys.executable, "-m", "tests.cupy_standin.run", "-m", "probe"],
                            capture_output=True, text=True, env=env)
    assert result.returncode != 0 and "Implicit conversion to a NumPy array" in result.stderr
    assert result.stdout.strip() == "3.0"
    import json
    assert list(json.loads(counts.read_text())["transfers"].values()) == [1]
