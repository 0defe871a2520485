"""miniclip/environment.py: thread defaults set on import, a user's own values kept."""
import os
import subprocess
import sys

SHOW = "import os, miniclip; print(os.environ['OMP_WAIT_POLICY'], os.environ['OPENBLAS_THREAD_TIMEOUT'])"


def run_with(**variables):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OPENBLAS_THREAD_TIMEOUT")}
    env.update(variables)
    return subprocess.run([sys.executable, "-c", SHOW], env=env, capture_output=True, text=True,
                          check=True).stdout.split()


def test_import_sets_the_thread_defaults():
    assert run_with() == ["PASSIVE", "4"]


def test_a_value_in_the_environment_wins():
    assert run_with(OMP_WAIT_POLICY="ACTIVE", OPENBLAS_THREAD_TIMEOUT="20") == ["ACTIVE", "20"]
