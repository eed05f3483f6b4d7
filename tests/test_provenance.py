"""vgcore.provenance: a run records the versions of every package that can change a number, and the commit."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from vgcore import provenance, results, train
from vgcore.config import get_profile


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture
def repo(tmp_path) -> Path:
    root = tmp_path / "checkout"
    (root / "vgcore").mkdir(parents=True)
    (root / "figures" / "demo").mkdir(parents=True)
    (root / "vgcore" / "loss.py").write_text("MARGIN = 0.2\n")
    (root / "figures" / "demo" / "fig.png").write_bytes(b"png")
    git(root, "init", "-q")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    return root


def test_git_state_names_the_commit_and_whether_the_code_changed(repo):
    head = git(repo, "rev-parse", "HEAD").strip()
    assert provenance.git_state(repo) == {"commit": head, "dirty": False}
    (repo / "figures" / "demo" / "fig.png").write_bytes(b"rebuilt")  # the build's own output
    assert provenance.git_state(repo)["dirty"] is False
    (repo / "vgcore" / "loss.py").write_text("MARGIN = 0.3\n")
    assert provenance.git_state(repo) == {"commit": head, "dirty": True}
    git(repo, "checkout", "--", "vgcore/loss.py")
    (repo / "vgcore" / "new_loss.py").write_text("")  # untracked code counts too
    assert provenance.git_state(repo)["dirty"] is True


def test_git_state_outside_a_checkout_is_unknown(tmp_path):
    assert provenance.git_state(tmp_path) == {"commit": None, "dirty": None}


def test_versions_cover_every_package_that_can_change_a_number():
    v = provenance.versions()
    for name in ("torch", "numpy", "pandas", "scikit-learn", "scipy", "torchvision", "pillow"):
        assert v[name] == metadata.version(name), name
    assert set(provenance.NUMERIC_PACKAGES) <= set(v) and {"python", "vgcore", "torch_cuda"} <= set(v)


def test_a_run_summary_records_versions_and_commit(tmp_path):
    config = get_profile("smoke").config("synthetic", "contrastive", 0, epochs=1)
    run = train.run(config, results.run_dir(tmp_path, config), cache_dir=tmp_path / "cache", progress=False)
    summary = results.load_run(run.path)["summary"]
    assert summary["versions"] == provenance.versions()
    assert summary["git"] == provenance.git_state()
    assert summary["git"]["commit"] is None or len(summary["git"]["commit"]) == 40


def test_lock_lists_the_installed_closure_with_exact_versions():
    lines = provenance.lock(("offline",))
    pins = dict(line.split("==") for line in lines)
    assert pins["torch"] == metadata.version("torch") and "efficientnet-lite-pytorch" in pins
    assert "filelock" in pins, "a dependency of torch: the closure, not only the direct dependencies"
    assert "selenium" not in pins and "ruff" not in pins, "dev is not asked for"
    names = [canonicalize_name(line.split("==")[0]) for line in lines]
    assert names == sorted(names)
