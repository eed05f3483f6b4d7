"""The repository address has one source, and the Colab setup cell works for real.

- pyproject.toml's ``[project.urls] Repository`` is the one address: every badge (README.md,
  docs/guide/notebooks.md, each notebook's title cell) and every setup cell point at it, and
  ``make repo URL=...`` (``python -m vgcore repo URL``) changes all of them at once;
- the setup cell, run as Colab runs it (a ``google.colab`` module present), clones the repository
  from a local bare copy of this checkout, installs vgcore from the clone with pip (offline:
  ``--no-index --no-deps`` into a temporary target) and restores the committed demo runs; outside
  Colab it installs nothing and only moves to the repository root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import nbformat
import pytest

from vgcore import notebooks

from _smoke_build import ROOT

NOTEBOOKS = ROOT / "notebooks"
URL = notebooks.repository_url()


def test_every_badge_and_setup_cell_use_the_one_address():
    slug = notebooks.slug(URL)
    for path in notebooks.address_files():
        found = notebooks.addresses_in(path.read_text())
        assert found <= {slug}, f"{path.relative_to(ROOT)} points at {sorted(found - {slug})}, not {slug} " \
                                "(pyproject.toml [project.urls]; `make repo URL=...` changes every file)"
    readme = (ROOT / "README.md").read_text()
    guide = (ROOT / "docs" / "guide" / "notebooks.md").read_text()  # the "Open a notebook" table
    assert ROOT / "docs" / "guide" / "notebooks.md" in notebooks.address_files(), "`make repo` rewrites its badges"
    for name in sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")):
        colab, binder = notebooks.badges(name, URL)
        assert colab.split("](")[1] in guide and binder.split("](")[1] in guide, \
            f"docs/guide/notebooks.md lacks {name}'s badges"
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        assert colab in nb.cells[0].source and binder in nb.cells[0].source
        setup = next(c for c in nb.cells if c.cell_type == "code")
        assert setup.source == notebooks.setup_cell(URL) and f'VGCORE_GIT = "{URL}"' in setup.source
    assert f"mybinder.org/v2/gh/{slug}/{notebooks.BRANCH}?urlpath=lab/tree/notebooks)" in readme.split("\n## ")[0]


def test_one_command_changes_the_address_everywhere(tmp_path):
    for path in notebooks.address_files():
        target = tmp_path / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
    new = "https://github.com/someone/vgcore-fork"
    proc = subprocess.run([sys.executable, "-c", "import sys; from vgcore import notebooks; "
                           "print(len(notebooks.set_repository(sys.argv[1], sys.argv[2])))", new, str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) == len(notebooks.address_files(tmp_path)), "every file names the address"
    assert notebooks.repository_url(tmp_path) == new
    for path in notebooks.address_files(tmp_path):
        assert notebooks.addresses_in(path.read_text()) == {"someone/vgcore-fork"}, path
    assert notebooks.check(root=tmp_path) == {}, "the notebooks still follow the conventions at the new address"
    assert 'make repo URL=' in (ROOT / "Makefile").read_text()
    with pytest.raises(ValueError, match="not a GitHub repository address"):
        notebooks.set_repository("https://gitlab.com/a/b", tmp_path)


# --- the setup cell, for real ----------------------------------------------------------------------


def _run_cell(cell: str, cwd: Path, env: dict, colab: bool) -> tuple[str, list[str]]:
    driver = ("import os, sys, types\n"
              "if os.environ.get('FAKE_COLAB'):\n"
              "    sys.modules['google.colab'] = types.ModuleType('google.colab')\n"
              "exec(compile(open(sys.argv[1]).read(), 'setup_cell', 'exec'))\n"
              "print(os.getcwd())\n")
    (cwd / "cell.py").write_text(cell)
    proc = subprocess.run([sys.executable, "-c", driver, str(cwd / "cell.py")], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env={**env, **({"FAKE_COLAB": "1"} if colab else {})})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc.stdout.strip().splitlines()[-1], proc.stdout.strip().splitlines()


def test_setup_cell_outside_colab_installs_nothing_and_moves_to_the_repository_root(tmp_path):
    cell = notebooks.setup_cell(URL)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    assert _run_cell(cell, tmp_path, env, colab=False)[0] == str(tmp_path)
    # JupyterLab and Binder start the kernel in notebooks/: the cell moves to the repository root
    scratch = tmp_path / "repo" / "notebooks"
    scratch.mkdir(parents=True)
    (scratch.parent / "pyproject.toml").write_text("")
    assert _run_cell(cell, scratch, env, colab=False)[0] == str(scratch.parent)
    assert not (scratch.parent / "results").exists() and not (tmp_path / "content").exists()


def _working_tree_as_bare_repository(tmp_path: Path) -> tuple[Path, str]:
    """This checkout's files as they are now (tracked and new, not ignored), committed into a fresh
    repository, and a bare clone of it: what GitHub would serve after a push."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, check=True).stdout.decode().split("\0")
    src = tmp_path / "src"
    for rel in filter(None, listed):
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q", "-b", "main", str(src)], check=True)
    subprocess.run([*git, "-C", str(src), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(src), "commit", "-qm", "snapshot of the working tree"], check=True)
    head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(src), str(bare)], check=True)
    return bare, head


@pytest.mark.slow
def test_setup_cell_on_colab_clones_installs_and_restores_the_demo_runs(tmp_path):
    committed = next(c for c in nbformat.read(NOTEBOOKS / "03_variance.ipynb", as_version=4).cells
                     if c.cell_type == "code").source
    bare, head = _working_tree_as_bare_repository(tmp_path)
    content = tmp_path / "content"
    content.mkdir()
    repo = content / "vgcore-repo"
    cell = committed.replace(f'"{URL}"', f'"file://{bare}"').replace(notebooks.COLAB_DIR, str(repo))
    assert cell.count(f"file://{bare}") == 1 and cell.count(str(repo)) == 1, "the test changes two constants only"
    site = tmp_path / "site-packages"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",) and not k.startswith("PIP_")}
    # pip offline: vgcore alone from the clone into a scratch target (its dependencies are this venv's)
    env.update(PIP_NO_INDEX="1", PIP_NO_DEPS="1", PIP_TARGET=str(site), PIP_NO_BUILD_ISOLATION="0",
               PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONPATH=str(site))
    cwd, _ = _run_cell(cell, content, env, colab=True)
    assert cwd == str(repo), "the kernel works from the clone"
    assert subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip() == head
    installed = subprocess.run([sys.executable, "-c", "import vgcore; print(vgcore.__file__)"], capture_output=True,
                               text=True, env=env, cwd=tmp_path, check=True).stdout.strip()
    assert Path(installed).is_relative_to(site), f"vgcore imported from {installed}, not the pip target"
    with tarfile.open(repo / "figures" / "demo" / "results.tar.gz") as tar:
        runs = {Path(m.name).parent for m in tar.getmembers() if m.name.endswith("summary.json")}
    restored = {p.parent.relative_to(repo / "results") for p in (repo / "results").glob("*/*/*/seed*/summary.json")}
    assert restored == runs and len(runs) > 0, "every committed demo run is restored under results/"
    summary = json.loads((repo / "results" / sorted(runs)[0] / "summary.json").read_text())
    assert summary["status"] == "complete"
    # run again (a notebook re-run on the same Colab machine): nothing is cloned or installed twice
    before = sorted(p.name for p in site.iterdir())
    assert _run_cell(cell, content, env, colab=True)[0] == str(repo)
    assert sorted(p.name for p in site.iterdir()) == before
