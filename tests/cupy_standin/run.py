"""Run a module with the CuPy stand-in installed as `cupy`:

    python -m tests.cupy_standin.run -m miniclip.train --device cuda --max-steps 2 ...

With MINICLIP_STANDIN_TRANSFERS=<path>, the device-to-host transfers it counted (per file:line)
and the pinned-memory allocations are written to <path> as JSON when the module ends.
"""
import atexit
import json
import os
import runpy
import sys

from tests import cupy_standin


def _write_counts(path):
    with open(path, "w") as f:
        json.dump({"transfers": dict(cupy_standin.transfers),
                   "pinned_allocations": sum(cupy_standin.pinned_allocations.values())}, f, indent=1)


def main():
    if len(sys.argv) < 3 or sys.argv[1] != "-m":
        raise SystemExit("usage: python -m tests.cupy_standin.run -m MODULE [ARGS...]")
    module = sys.argv[2]
    sys.argv = [module] + sys.argv[3:]
    cupy_standin.install()
    if os.environ.get("MINICLIP_STANDIN_TRANSFERS"):
        atexit.register(_write_counts, os.environ["MINICLIP_STANDIN_TRANSFERS"])
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
