"""vgcore.io's JSON writer on what the runs record: numpy and torch values as plain numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from vgcore.io import atomic_write_json, plain_json


def test_numpy_and_torch_values_are_written_as_numbers_and_lists(tmp_path):
    obj = {"f32": np.float32(0.5), "i64": np.int64(3), "arr": np.arange(3), "t0": torch.tensor(2.5),
           "t1": torch.tensor([1, 2]), "path": Path("a/b"), "plain": [1, "x"]}
    want = {"arr": [0, 1, 2], "f32": 0.5, "i64": 3, "path": "a/b", "plain": [1, "x"], "t0": 2.5, "t1": [1, 2]}
    out = atomic_write_json(tmp_path / "x.json", obj)
    assert json.loads(out.read_text()) == want
    assert out.read_text() == json.dumps(want, indent=2, sort_keys=True) + "\n"
    assert plain_json(obj) == want
