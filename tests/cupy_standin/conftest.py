import pytest

from tests import cupy_standin


@pytest.fixture
def standin():
    """The CuPy stand-in installed as `cupy` for one test (tests/cupy_standin/__init__.py)."""
    with cupy_standin.installed() as module:
        yield module
