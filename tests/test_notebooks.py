"""The numbered notebooks: jupytext pairs in sync, clean .ipynb, parameters, and nbval on the
notebooks as the smoke build executed them.

The conventions every notebook follows are vgcore.notebooks' (checked for each notebook in
notebooks/, so a new one is covered as soon as it exists); the repository address has one source,
pyproject.toml's [project.urls], which every badge and the Colab setup cell take.

nbval design: the smoke build (tests/_smoke_build.py) executes every notebook through papermill with
smoke parameters into a temporary directory; nbval (`--nbval-lax`) then re-executes those executed
copies, injected parameters included, and compares the outputs of the cells tagged
`nbval-check-output` (deterministic facts: shapes, columns, step counts, claim counts, what was
written) after sanitising volatile text with tests/nbval_sanitize.cfg. Any cell that raises fails the test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
from _your_data import write_small_features

from vgcore import notebooks
from vgcore.report import outputs

from _smoke_build import ROOT, env, smoke_build

NOTEBOOKS = ROOT / "notebooks"


def cells(nb) -> list[tuple[str, str, tuple[str, ...]]]:
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", ()))) for c in nb.cells]


def test_every_numbered_notebook_is_a_jupytext_pair():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.py")) == list(outputs.NOTEBOOKS)
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == list(outputs.NOTEBOOKS)


@pytest.mark.parametrize("name", outputs.NOTEBOOKS)
def test_py_and_ipynb_hold_the_same_cells(name):
    """Fails when a pair drifts; fix with `make sync-notebooks` (jupytext --sync notebooks/*.py)."""
    py = jupytext.read(NOTEBOOKS / f"{name}.py")
    ipynb = jupytext.read(NOTEBOOKS / f"{name}.ipynb")
    assert cells(py) == cells(ipynb), f"{name}.py and {name}.ipynb differ: run `make sync-notebooks`"
    assert ipynb.metadata["jupytext"]["formats"] == "ipynb,py:percent"


ALL = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))  # every notebook, a new one included


@pytest.mark.parametrize("name", ALL)
def test_notebook_follows_the_conventions(name):
    """vgcore.notebooks: the setup cell (collapsed), badges at the repository address, metadata that
    JupyterLab does not rewrite on opening, no outputs, nbval markers as tags, a .py twin."""
    found = notebooks.check([NOTEBOOKS / f"{name}.ipynb"])
    assert not found, "\n".join(found.get(str(NOTEBOOKS / f"{name}.ipynb"), ())) + \
        f"\nfix: python -m vgcore notebooks fix notebooks/{name}.py"


@pytest.mark.parametrize("name", ALL)
def test_parameters_are_checked_right_after_they_are_set(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    params = [c for c in code if "parameters" in c.metadata.get("tags", ())]
    assert len(params) == 1 and "profile" in params[0].source
    after = code[code.index(params[0]) + 1].source
    assert "get_profile" in after or "collect_profile" in after, "validate the parameters right after them"
    assert any(notebooks.CHECK_TAG in c.metadata.get("tags", ()) for c in code), "nbval checks nothing"


def test_the_checks_catch_what_a_reader_would_trip_over(tmp_path):
    """Outputs, a missing language_info, a bare setup cell and comment markers are each reported."""
    for path in NOTEBOOKS.glob("03_variance.*"):
        (tmp_path / "notebooks").mkdir(exist_ok=True)
        shutil.copy(path, tmp_path / "notebooks" / path.name)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / "notebooks" / "03_variance.ipynb"
    assert notebooks.check(root=tmp_path) == {}
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    code[2].outputs = [nbformat.v4.new_output("stream", text="42 runs\n")]
    code[2].execution_count = 3
    del nb.metadata["language_info"]
    code[0].metadata = {}
    code[3].source = "# NBVAL_CHECK_OUTPUT\n" + code[3].source
    nbformat.write(nb, path)
    text = "\n".join(notebooks.check(root=tmp_path)[str(path)])
    for expected in ("outputs or execution counts", "language_info", "setup cell's metadata", "cell tags",
                     "hold different cells"):
        assert expected in text, text
    notebooks.fix(path.with_suffix(".py"))  # the .py is the source of truth: the pair comes back clean
    assert notebooks.check(root=tmp_path) == {}


def test_pre_commit_hook_refuses_a_notebook_with_outputs(tmp_path):
    """The guard `make hooks` installs (.githooks/pre-commit), on a real commit in a scratch repository."""
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    for path in [*NOTEBOOKS.glob("05_retrieval.*"), ROOT / "pyproject.toml"]:
        shutil.copy(path, repo / path.relative_to(ROOT))
    shutil.copytree(ROOT / ".githooks", repo / ".githooks")
    git = lambda *a: subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *a],  # noqa: E731
                                    capture_output=True, text=True,
                                    env=env(PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])))
    git("init", "-q")
    git("config", "core.hooksPath", ".githooks")
    git("add", ".")
    assert git("commit", "-qm", "clean notebooks").returncode == 0
    nb = nbformat.read(repo / "notebooks" / "05_retrieval.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    code[2].outputs, code[2].execution_count = [nbformat.v4.new_output("stream", text="90 runs\n")], 1
    nbformat.write(nb, repo / "notebooks" / "05_retrieval.ipynb")
    git("add", "notebooks/05_retrieval.ipynb")
    refused = git("commit", "-qm", "with outputs")
    assert refused.returncode != 0 and "outputs or execution counts" in refused.stderr, refused.stderr
    assert "commit refused" in refused.stderr
    makefile = (ROOT / "Makefile").read_text()
    assert "git config core.hooksPath .githooks" in makefile and "setup: $(STAMP) hooks" in makefile


@pytest.mark.slow
def test_nbval_on_the_notebooks_executed_by_the_smoke_build():
    b = smoke_build()
    runs = b.results / "smoke"
    executed = [runs / "synthetic" / "01_features.ipynb", runs / "synthetic" / "triplet" / "seed0" / "02_train.ipynb",
                *(runs / "analysis" / f"{nb}.ipynb" for nb in outputs.ANALYSIS)]
    for path in executed:
        nb = nbformat.read(path, as_version=4)
        assert any("injected-parameters" in c.metadata.get("tags", ()) for c in nb.cells), path
        defaults = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", ()))
        assert defaults.metadata["jupyter"]["source_hidden"], "a reader sees the parameters that ran, once"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
         "--sanitize-with", str(ROOT / "tests" / "nbval_sanitize.cfg"), "--nbval-cell-timeout", "600",
         "--rootdir", str(b.directory), *map(str, executed)],
        cwd=b.directory, env=env(VGCORE_CACHE=str(b.cache)), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout


@pytest.mark.slow
def test_your_data_notebook_runs_under_nbval_on_a_small_features_file(tmp_path):
    """07_your_data on a features file written here: papermill runs it (training the seven losses at
    smoke size), then nbval re-executes the executed copy and compares its checked cells."""
    from vgcore.workflow import execute

    write_small_features(tmp_path / "my_features.npz")
    executed = tmp_path / "07_your_data.ipynb"
    params = {"features": str(tmp_path / "my_features.npz"), "seeds": [0],
              "settings": {"epochs": 2, "batch_size": 32}}
    execute(NOTEBOOKS / "07_your_data.ipynb", executed, params, cwd=tmp_path, log=lambda m: None)
    nb = nbformat.read(executed, as_version=4)
    text = "\n".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", ()))
    assert "7 complete runs, 7 losses, 1 seed(s)" in text
    assert not (tmp_path / "figures").exists(), "a run by hand must not write into the committed figures/"
    assert sorted(p.stem for p in (tmp_path / "results" / "figures" / "custom" / "my_features").glob("*.png")) == [
        "active_ratio_over_training", "claims", "embeddings_pca", "gallery_disagreements", "gallery_random",
        "greediness_bars", "intra_var_over_epochs",
        "recall_over_epochs", "separation_vs_spacing", "tradeoff", "variance_bars"]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
         "--sanitize-with", str(ROOT / "tests" / "nbval_sanitize.cfg"), "--nbval-cell-timeout", "600",
         "--rootdir", str(tmp_path), str(executed)],
        cwd=tmp_path, env=env(VGCORE_CACHE=str(tmp_path / "cache")), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout


def _default(name: str, parameter: str):
    """A notebook's default value of one parameter (its parameters cell, evaluated alone)."""
    nb = jupytext.read(NOTEBOOKS / f"{name}.py")
    scope: dict = {}
    exec(next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", ())), scope)  # noqa: S102
    return scope[parameter]


@pytest.mark.parametrize("name", [n for n in outputs.NOTEBOOKS if "figures_root" in (NOTEBOOKS / f"{n}.py").read_text()])
def test_a_notebook_run_by_hand_writes_where_git_does_not_look(name):
    """The committed figures are the build's (it passes figures_root=figures/); a notebook run by hand,
    with its defaults, writes under results/, which git ignores, so `git status` stays clean."""
    where = Path(_default(name, "figures_root")) / "demo" / "x.png"
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", str(where)])
    assert ignored.returncode == 0, f"{name} writes {where} by default: git would see it"


@pytest.mark.slow
def test_running_an_analysis_notebook_by_hand_after_a_restore_leaves_the_checkout_alone(tmp_path):
    """04_greediness run as a user runs it (defaults but the profile) in a checkout holding the smoke
    runs under results/: everything it writes lands under results/."""
    from vgcore.workflow import execute

    b = smoke_build()
    checkout = tmp_path / "checkout"
    (checkout / "results").mkdir(parents=True)
    (checkout / "results" / "smoke").symlink_to(b.results / "smoke", target_is_directory=True)
    execute(NOTEBOOKS / "04_greediness.ipynb", tmp_path / "04.ipynb", {"profile": "smoke"}, cwd=checkout,
            log=lambda m: None)
    assert sorted(p.name for p in checkout.iterdir()) == ["results"]
    assert list((checkout / "results" / "figures" / "smoke").glob("04_*.png"))
