"""vgcore.io: atomic writes leave the old file or the complete new one, never a partial one."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch

from vgcore import io


def test_atomic_write_bytes_json_tensor(tmp_path):
    p = io.atomic_write_bytes(tmp_path / "a" / "b.bin", b"hello")
    assert p.read_bytes() == b"hello"
    io.atomic_write_json(tmp_path / "c.json", {"b": 1, "a": [1, 2]})
    assert json.loads((tmp_path / "c.json").read_text()) == {"a": [1, 2], "b": 1}
    io.atomic_save_tensor({"x": torch.arange(3)}, tmp_path / "t.pt")
    assert torch.equal(torch.load(tmp_path / "t.pt", weights_only=True)["x"], torch.arange(3))
    assert io.file_md5(p) == hashlib.md5(b"hello").hexdigest()
    assert io.file_digest(p) == hashlib.sha256(b"hello").hexdigest()
    mode = os.stat(p).st_mode & 0o777
    assert mode == 0o666 & ~_umask()  # not mkstemp's 0600


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_failed_write_keeps_old_content(tmp_path):
    p = tmp_path / "f.txt"
    io.atomic_write_text(p, "old")
    with pytest.raises(RuntimeError), io.atomic_open(p, "w") as fh:
        fh.write("new, half written")
        raise RuntimeError("killed")
    assert p.read_text() == "old"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["f.txt"]
    with pytest.raises(ValueError):
        io.atomic_open(p, "r").__enter__()


def test_atomic_directory(tmp_path):
    with io.atomic_directory(tmp_path / "d") as tmp:
        (tmp / "x").write_text("1")
        assert not (tmp_path / "d").exists()
    assert (tmp_path / "d" / "x").read_text() == "1"
    with pytest.raises(RuntimeError), io.atomic_directory(tmp_path / "e") as tmp:
        (tmp / "x").write_text("1")
        raise RuntimeError
    assert sorted(x.name for x in tmp_path.iterdir()) == ["d"]
    with pytest.raises(FileExistsError), io.atomic_directory(tmp_path / "d"):
        pass
