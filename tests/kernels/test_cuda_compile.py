"""Every CUDA kernel compiles for sm_80 and sm_90 and fits its resources, checked without a GPU.

kernels/compile_check.py runs in a subprocess without NUMBA_ENABLE_CUDASIM (this session runs the
simulator, which has no compiler): it compiles each numba.cuda kernel the wrappers launch (every
version, float32 and float64) to PTX with NVVM, the CUDA C of softmax_xent/cupy_raw.py with
NVRTC (what cupy.RawModule uses), and reads `ptxas -v`. The tests hold each kernel to:

- it compiles, for both GPUs, in both dtypes (and the check covers every family and cupy_raw);
- static shared memory at most 48 KB, the most a block may declare;
- no spill stores or loads in the kernels the dispatcher uses (each family's newest version).

A missing compiler (libnvvm, NVRTC, ptxas) skips these tests with its name, or fails them when
MINICLIP_REQUIRE_ORACLE=1 (CI, where `pip install -e .[test]` installs them). The parser of
ptxas's report and NVRTC's error on the old `-INFINITY` are checked on their own.
"""
import json
import os
import subprocess
import sys

import pytest

from miniclip.kernels import compile_check
from miniclip.kernels.softmax_xent import cupy_raw

FAMILIES = {"softmax_xent", "layer_norm", "attention", "conv2d", "adamw"}


def _missing_or_fail(what):
    if os.environ.get("MINICLIP_REQUIRE_ORACLE") == "1":
        pytest.fail(f"the CUDA compile checks need {what} (pip install -e '.[test]' installs them)")
    pytest.skip(f"CUDA compile checks: {what} not installed")


@pytest.fixture(scope="module")
def rows():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    result = subprocess.run([sys.executable, "-m", "miniclip.kernels.compile_check", "--json"],
                            capture_output=True, text=True, env=env, timeout=1200)
    if result.returncode == 3:
        _missing_or_fail(result.stderr.strip().removeprefix("compile_check: missing "))
    assert result.returncode in (0, 1), f"compile_check failed:\n{result.stderr[-3000:]}"
    return [json.loads(line) for line in result.stdout.splitlines()]


def _describe(row):
    return f"{row['kernel']} {row['signature']} on {row['arch']}"


def test_every_kernel_compiles_for_both_gpus(rows):
    failed = [f"{_describe(row)}:\n  {row['error']}" for row in rows if "error" in row]
    assert not failed, "kernels that do not compile:\n" + "\n".join(failed)


def test_the_check_covers_every_family_both_dtypes_both_gpus_and_the_cuda_c(rows):
    assert {row["family"] for row in rows} == FAMILIES
    assert {row["arch"] for row in rows} == {"sm_80", "sm_90"}
    for dtype in ("float32", "float64"):
        assert {row["family"] for row in rows if f"array({dtype}, " in row["signature"]} == FAMILIES
    kernels = {row["kernel"] for row in rows}
    assert {"cupy_raw.softmax_xent_forward", "cupy_raw.softmax_xent_backward"} <= kernels
    assert {"forward_v1", "forward_v2", "adamw_v1", "adamw_v2", "adamw_v3"} <= kernels         # every version
    assert {row["family"] for row in rows if row["dispatched"]} == FAMILIES


def test_static_shared_memory_fits_in_48_kb(rows):
    over = [f"{_describe(row)}: {row['shared_bytes']} bytes of static shared memory"
            for row in rows if row.get("shared_bytes", 0) > compile_check.SHARED_MEMORY_LIMIT]
    assert not over, f"above {compile_check.SHARED_MEMORY_LIMIT} bytes:\n" + "\n".join(over)


def test_the_dispatched_kernels_spill_no_registers(rows):
    spilled = [f"{_describe(row)}: {row['spill_stores']} bytes spill stores, {row['spill_loads']} bytes spill loads"
               f" ({row['registers']} registers)"
               for row in rows if row["dispatched"] and (row.get("spill_stores") or row.get("spill_loads"))]
    assert not spilled, "kernels the dispatcher uses spill registers to local memory:\n" + "\n".join(spilled)


def test_parse_ptxas_reads_each_entry_and_not_its_device_functions():
    report = compile_check.parse_ptxas("""\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'kernel_a' for 'sm_80'
ptxas info    : Function properties for helper
    16 bytes stack frame, 8 bytes spill stores, 8 bytes spill loads
ptxas info    : Function properties for kernel_a
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 30 registers, 4096 bytes smem, 380 bytes cmem[0]
ptxas info    : Compiling entry function 'kernel_b' for 'sm_80'
ptxas info    : Function properties for kernel_b
    280 bytes stack frame, 728 bytes spill stores, 512 bytes spill loads
ptxas info    : Used 255 registers, 380 bytes cmem[0]
""")
    assert report == {
        "kernel_a": dict(registers=30, shared_bytes=4096, stack_bytes=0, spill_stores=0, spill_loads=0),
        "kernel_b": dict(registers=255, shared_bytes=0, stack_bytes=280, spill_stores=728, spill_loads=512),
    }


def test_nvrtc_rejects_what_nvcc_accepts_and_compiles_cupy_raw():
    try:
        from cuda.bindings import nvrtc
        nvrtc.nvrtcVersion()
    except Exception:
        _missing_or_fail("NVRTC (cuda-bindings and nvidia-cuda-nvrtc)")
    with pytest.raises(RuntimeError, match='identifier "INFINITY" is undefined'):
        compile_check.nvrtc_ptx("extern \"C\" __global__ void k(double* x) { x[0] = -INFINITY; }", "k.cu", (8, 0))
    for dtype_name in cupy_raw.CTYPES:
        assert ".entry softmax_xent_forward" in compile_check.nvrtc_ptx(cupy_raw.source_for(dtype_name), "x.cu", (9, 0))


def test_nvrtc_leaves_python_s_own_bytes_alone():
    """NVRTC writes its log and PTX into the buffers it gets; given bytes, it once wrote a NUL into
    CPython's shared one-byte b" " (an empty log is one byte), and every b" " in the process changed."""
    try:
        from cuda.bindings import nvrtc
        nvrtc.nvrtcVersion()
    except Exception:
        _missing_or_fail("NVRTC (cuda-bindings and nvidia-cuda-nvrtc)")
    compile_check.nvrtc_ptx('extern "C" __global__ void k(float* x) { x[0] = 1; }', "k.cu", (8, 0))
    assert b" " * 3 == bytes([32, 32, 32])
