"""``ctvlp.fsutil.jsonable``: strict JSON from results holding NaN/inf and numpy scalars, with fsutil numpy-free."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from ctvlp.fsutil import jsonable


def test_jsonable_nulls_non_finite_floats_and_unwraps_numpy_scalars():
    value = {"a": [1.5, float("nan"), np.float32(0.25), np.float64("inf")],
             "b": (np.int64(3), True, 2, "x", None), "c": {"d": -np.inf, "e": np.uint8(7)}}
    out = jsonable(value)
    assert out == {"a": [1.5, None, 0.25, None], "b": [3, True, 2, "x", None], "c": {"d": None, "e": 7}}
    assert type(out["a"][2]) is float and type(out["b"][0]) is int and out["b"][1] is True
    assert json.loads(json.dumps(out, allow_nan=False)) == out


def test_fsutil_imports_without_numpy():
    code = "import sys, ctvlp.fsutil; assert 'numpy' not in sys.modules, 'numpy loaded'"
    subprocess.run([sys.executable, "-c", code], check=True)
