"""Compile every CUDA kernel for sm_80 and sm_90 and read its resources with ptxas, with no GPU.

    python -m miniclip.kernels.compile_check            # a table
    python -m miniclip.kernels.compile_check --json     # one JSON object per kernel and GPU

Numba's simulator runs the numba.cuda kernels as Python, so it never compiles them: a kernel that
NVVM rejects, or one that needs more shared memory than a block may have, passes every simulator
test. This tool compiles what a GPU would run:

- numba.cuda kernels: each wrapper of each numba_cuda.py (every version, float32 and float64)
  is called on small NumPy arrays inside cuda_launch.recording(), which collects each launch's
  kernel and arguments instead of running it. The argument types give the signature, and
  numba.cuda.compile_ptx compiles the kernel for compute capability 8.0 (A100) and 9.0 (H100).
  Attention is compiled for head dims 64 (ViT-B) and MAX_HEAD_DIM, its largest tiles.
- CUDA C (softmax_xent/cupy_raw.py): compiled with NVRTC, the compiler cupy.RawModule uses
  (nvcc defines things NVRTC does not, INFINITY for one).
- `ptxas -v` assembles each PTX and reports per kernel its registers, static shared memory
  (smem), stack frame, and spill stores and loads (registers that did not fit, sent to slow
  local memory).

The limits tests/kernels/test_cuda_compile.py holds every kernel to: static shared memory at
most 48 KB (the most a block may declare statically), and, for the kernels the dispatcher uses
(each family's newest version), 0 bytes of spill stores and loads.

It must run without NUMBA_ENABLE_CUDASIM (the simulator has no compiler); it needs libnvvm and
ptxas (the nvidia-nvvm and nvidia-cuda-nvcc wheels) and NVRTC (nvidia-cuda-nvrtc, read through
cuda-bindings). `missing_tools()` names what is not installed.
"""
import argparse
import json
import re
import subprocess
import sys
import tempfile

import numpy as np

ARCHS = ((8, 0), (9, 0))
SHARED_MEMORY_LIMIT = 48 * 1024      # bytes of static shared memory a block may have
DTYPES = (np.float32, np.float64)


# ---- what is needed -----------------------------------------------------------------------------
def _ptxas():
    from cuda.pathfinder import find_nvidia_binary_utility
    return find_nvidia_binary_utility("ptxas")


def missing_tools():
    """The names of the compilers this machine lacks (an empty list when all are there)."""
    missing = []
    try:
        from numba.cuda.cudadrv.nvvm import NVVM
        NVVM()
    except Exception as error:                       # not installed, or not loadable
        missing.append(f"libnvvm (pip install nvidia-nvvm; {type(error).__name__}: {error})")
    try:
        from cuda.bindings import nvrtc
        nvrtc.nvrtcVersion()
    except Exception as error:
        missing.append(f"NVRTC (pip install cuda-bindings nvidia-cuda-nvrtc; {type(error).__name__}: {error})")
    try:
        if _ptxas() is None:
            missing.append("ptxas (pip install nvidia-cuda-nvcc)")
    except ImportError:
        missing.append("ptxas (cuda-pathfinder, which finds it, is not installed)")
    return missing


# ---- the launches each wrapper makes ------------------------------------------------------------
def _calls(dtype):
    """(family, dispatched, call) for every wrapper: `dispatched` marks the versions the dispatcher
    runs (each numba_cuda.py's module-level default); `call` launches on small arrays of `dtype`."""
    from .adamw import numba_cuda as adamw
    from .adamw.checks import Segment
    from .attention import numba_cuda as attention
    from .conv2d import numba_cuda as conv2d
    from .layer_norm import numba_cuda as layer_norm
    from .softmax_xent import numba_cuda as softmax_xent

    rng = np.random.default_rng(0)

    def rand(*shape):
        return rng.standard_normal(shape).astype(dtype)

    logits, targets, square = rand(5, 7), np.array([0, 6, 2, 3, 1], np.int64), rand(6, 6)
    lse, dy = np.zeros(5), rand(5)
    x, w, b = rand(5, 8), rand(8), rand(8)
    mean, rstd = np.zeros(5), np.ones(5)
    image, filters = rand(1, 3, 5, 5), rand(4, 3, 2, 2)
    p, g, m, v = rand(10), rand(10), rand(10), rand(10)
    calls = []
    for version in (None, 1, 2, 3):
        kw = {} if version is None else {"version": version}
        calls += [("softmax_xent", version is None, lambda kw=kw: softmax_xent.softmax_xent_forward(logits, targets, **kw)),
                  ("softmax_xent", version is None,
                   lambda kw=kw: softmax_xent.softmax_xent_backward(logits, targets, lse, dy, **kw))]
    for version in (None, 1, 2):
        kw = {} if version is None else {"version": version}
        calls += [
            ("softmax_xent", version is None, lambda kw=kw: softmax_xent.clip_loss_forward(square, **kw)),
            ("softmax_xent", version is None,
             lambda kw=kw: softmax_xent.clip_loss_backward(square, lse[:1].repeat(6), lse[:1].repeat(6), 1.0,
                                                           square, **kw)),
            ("layer_norm", version is None, lambda kw=kw: layer_norm.layer_norm_forward(x, w, b, 1e-5, **kw)),
            ("layer_norm", version is None, lambda kw=kw: layer_norm.layer_norm_backward(x, x, w, mean, rstd, **kw)),
        ]
    for name in ("gelu", "quick_gelu"):
        calls += [("layer_norm", True, lambda name=name: getattr(layer_norm, f"{name}_forward")(x, b)),
                  ("layer_norm", True, lambda name=name: getattr(layer_norm, f"{name}_backward")(x, x, b))]
    for d in (64, attention.MAX_HEAD_DIM):
        q = rand(1, 2, 5, d)
        for version, (forward, backward) in attention.VERSIONS.items():
            dispatched = forward is attention.attention_forward
            calls += [("attention", dispatched, lambda f=forward, q=q: f(q, q, q, 0.125)),
                      ("attention", dispatched, lambda f=backward, q=q: f(q, q, q, q, q[..., 0], q, 0.125))]
    for version, (forward, backward) in conv2d.VERSIONS.items():
        dispatched = forward is conv2d.conv2d_forward
        calls += [("conv2d", dispatched, lambda f=forward: f(image, filters, None, (1, 1), (0, 0))),
                  ("conv2d", dispatched, lambda f=backward: f(rand(1, 4, 4, 4), image, filters, (1, 1), (0, 0)))]
    for version, step in adamw.VERSIONS.items():
        calls.append(("adamw", step is adamw.adamw_step,
                      lambda f=step: f(p, g, m, v, 1, 1e-3, 0.9, 0.999, 1e-8, 0.1)))
    # v3, the multi-tensor step AdamW takes: two tensors of 4 and 6 elements in the flat buffers.
    segments = [Segment(0, 0, 4, 1, 1e-3, 0.9, 0.999, 1e-8, 0.1), Segment(4, 4, 6, 1, 1e-3, 0.9, 0.999, 1e-8, 0.0)]
    calls.append(("adamw", True, lambda: adamw.adamw_multi_step(p, g, m, v, segments)))
    return calls


def numba_launches():
    """{(kernel, signature): (family, dispatched)} over every wrapper call, both dtypes."""
    import numba

    from .cuda_launch import recording
    found = {}
    for dtype in DTYPES:
        for family, dispatched, call in _calls(dtype):
            with recording() as launches:
                call()
            for kernel, _, _, args in launches:
                key = (kernel, tuple(numba.typeof(a) for a in args))
                previous = found.get(key, (family, False))
                found[key] = (family, previous[1] or dispatched)
    return found


# ---- compiling and reading ptxas's report -------------------------------------------------------
def ptxas_report(ptx, cc):
    """{entry name: {registers, shared_bytes, stack_bytes, spill_stores, spill_loads}} from ptxas -v."""
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as source:
        source.write(ptx)
        source.flush()
        result = subprocess.run([_ptxas(), f"-arch=sm_{cc[0]}{cc[1]}", "-v", source.name, "-o", "/dev/null"],
                                capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"ptxas failed (sm_{cc[0]}{cc[1]}):\n{result.stderr}")
    return parse_ptxas(result.stderr)


def parse_ptxas(text):
    """The figures of each entry function in ptxas -v's report, whose lines for one kernel read:

        ptxas info    : Compiling entry function '_ZN8__main__6kernel...' for 'sm_80'
        ptxas info    : Function properties for _ZN8__main__6kernel...
            0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
        ptxas info    : Used 30 registers, 4096 bytes smem, 380 bytes cmem[0]
    """
    report, entry, properties_of = {}, None, None
    for line in text.splitlines():
        if match := re.search(r"Compiling entry function '(\S+)'", line):
            entry = match.group(1)
            report[entry] = dict(registers=0, shared_bytes=0, stack_bytes=0, spill_stores=0, spill_loads=0)
        elif match := re.search(r"Function properties for (\S+)", line):
            properties_of = match.group(1)          # the entry's, or a device function's
        elif properties_of == entry and (match := re.search(
                r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)):
            report[entry].update(stack_bytes=int(match[1]), spill_stores=int(match[2]), spill_loads=int(match[3]))
        elif entry and (match := re.search(r"Used (\d+) registers", line)):
            report[entry]["registers"] = int(match[1])
            if smem := re.search(r"(\d+) bytes smem", line):
                report[entry]["shared_bytes"] = int(smem[1])
    return report


def nvrtc_ptx(source, name, cc):
    """PTX of CUDA C `source` compiled by NVRTC for compute capability cc; raises with NVRTC's log."""
    from cuda.bindings import nvrtc
    _, program = nvrtc.nvrtcCreateProgram(source.encode(), name.encode(), 0, [], [])
    options = [f"--gpu-architecture=compute_{cc[0]}{cc[1]}".encode()]
    status, = nvrtc.nvrtcCompileProgram(program, len(options), options)
    # NVRTC writes into the buffers it is given: they must be bytearrays. An immutable bytes would
    # be changed under Python's feet: b" " * 1 is CPython's one shared b" ", and an empty log (one
    # NUL byte) turned every b" " of the process into b"\x00" (safetensors headers broke after it).
    _, size = nvrtc.nvrtcGetProgramLogSize(program)
    log = bytearray(size)
    nvrtc.nvrtcGetProgramLog(program, log)
    if status != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise RuntimeError(f"NVRTC could not compile {name}:\n{log.decode(errors='replace')}")
    _, size = nvrtc.nvrtcGetPTXSize(program)
    ptx = bytearray(size)
    nvrtc.nvrtcGetPTX(program, ptx)
    nvrtc.nvrtcDestroyProgram(program)
    return ptx.decode().rstrip("\x00 ")


def _row(family, kernel, signature, cc, dispatched, resources):
    return dict(family=family, kernel=kernel, signature=signature, arch=f"sm_{cc[0]}{cc[1]}",
                dispatched=dispatched, **resources)


def _without_a_gpu(cc):
    """numba-cuda compiles a device function (@cuda.jit(device=True)) called by a kernel for the
    current GPU's compute capability, which it asks the driver for; with no driver, answer `cc`."""
    from types import SimpleNamespace

    from numba.cuda import dispatcher
    dispatcher.get_current_device = lambda: SimpleNamespace(compute_capability=cc)


def check_all():
    """One row per kernel, signature and GPU architecture: its ptxas figures, or an error."""
    from numba import cuda

    from .softmax_xent import cupy_raw
    _without_a_gpu(ARCHS[0])
    rows = []
    for (kernel, signature), (family, dispatched) in numba_launches().items():
        shown = "(" + ", ".join(str(t) for t in signature) + ")"
        for cc in ARCHS:
            try:
                ptx, _ = cuda.compile_ptx(kernel.py_func, signature, cc=cc)
                (resources,) = ptxas_report(ptx, cc).values()
            except Exception as error:
                resources = dict(error=f"{type(error).__name__}: {error}")
            rows.append(_row(family, kernel.__name__, shown, cc, dispatched, resources))
    for dtype_name in cupy_raw.CTYPES:
        for cc in ARCHS:
            try:
                report = ptxas_report(nvrtc_ptx(cupy_raw.source_for(dtype_name), "cupy_raw.cu", cc), cc)
            except Exception as error:
                report = {"cupy_raw.SOURCE": dict(error=f"{type(error).__name__}: {error}")}
            rows += [_row("softmax_xent", f"cupy_raw.{entry}", dtype_name, cc, False, resources)
                     for entry, resources in report.items()]
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m miniclip.kernels.compile_check", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    args = parser.parse_args(argv)
    from numba.cuda import config
    if config.ENABLE_CUDASIM:
        print("compile_check: NUMBA_ENABLE_CUDASIM=1 is set; the simulator has no compiler: unset it", file=sys.stderr)
        return 2
    missing = missing_tools()
    if missing:
        print("compile_check: missing " + "; ".join(missing), file=sys.stderr)
        return 3
    rows = check_all()
    for row in rows:
        if args.json:
            print(json.dumps(row))
        elif "error" in row:
            print(f"{row['arch']}  {row['family']:12} {row['kernel']:28} {row['signature']}\n    {row['error']}")
        else:
            print(f"{row['arch']}  {row['kernel']:33} {row['registers']:4} regs {row['shared_bytes']:6} B smem "
                  f"{row['stack_bytes']:5} B stack {row['spill_stores']:4}/{row['spill_loads']:<4} B spilled"
                  f"{'  dispatched' if row['dispatched'] else ''}  {row['signature']}")
    return 1 if any("error" in row for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
