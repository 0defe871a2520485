"""The learner's entry point: `pytest tutorials/exercises` checks every exercise file in this folder.

Each NAME.py here (written by `python -m miniclip.exercises start NAME tutorials/exercises`) is one
test, which runs the same check as `python -m miniclip.exercises check NAME tutorials/exercises/NAME.py`:
float64 central differences (miniclip.gradcheck) on every case, then miniclip's own gradients.
A file whose functions still raise NotImplementedError fails with "NOT FILLED IN": every test
fails until you fill the stubs in. Run one exercise with `pytest tutorials/exercises -k layer_norm`.

This folder is not among the test paths of the repository's own test run (setup.cfg: testpaths =
tests); tests/test_exercise_stubs.py checks that these files are the current templates.
"""
import pathlib

import pytest

import miniclip.exercises as exercises

HERE = pathlib.Path(__file__).resolve().parent
STUBS = sorted(p for p in HERE.glob("*.py") if p.stem in exercises.names())


@pytest.mark.parametrize("path", STUBS, ids=[p.stem for p in STUBS])
def test_exercise(path):
    result = exercises.check(path.stem, str(path), verbose=False)
    if not result.passed:
        pytest.fail(result.text, pytrace=False)     # the checker's report is the whole message
