"""The numbered notebooks: jupytext pairs in sync, clean .ipynb, parameters, and nbval on the
notebooks as the smoke build executed them.

nbval design: the smoke build (tests/_smoke_build.py) executes every notebook through papermill with
smoke parameters into a temporary directory; nbval (`--nbval-lax`) then re-executes those executed
copies, injected parameters included, and compares the outputs of the cells marked
`# NBVAL_CHECK_OUTPUT` (deterministic facts: shapes, columns, step counts, claim counts) after
sanitising volatile text with tests/nbval_sanitize.cfg. Any cell that raises fails the test.
"""

from __future__ import annotations

import subprocess
import sys

import jupytext
import nbformat
import pytest
from _your_data import write_small_features

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


@pytest.mark.parametrize("name", outputs.NOTEBOOKS)
def test_committed_ipynb_has_no_outputs_and_one_parameters_cell(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), f"clear the outputs of {name}.ipynb"
    params = [c for c in code if "parameters" in c.metadata.get("tags", ())]
    assert len(params) == 1 and "profile" in params[0].source
    after = code[code.index(params[0]) + 1].source
    assert "get_profile" in after or "collect_profile" in after, "validate the parameters right after them"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith(f"# {name[:2]} ·")
    assert any("NBVAL_CHECK_OUTPUT" in c.source for c in code)


@pytest.mark.slow
def test_nbval_on_the_notebooks_executed_by_the_smoke_build():
    b = smoke_build()
    runs = b.results / "smoke"
    executed = [runs / "synthetic" / "01_features.ipynb", runs / "synthetic" / "triplet" / "seed0" / "02_train.ipynb",
                *(runs / "analysis" / f"{nb}.ipynb" for nb in outputs.ANALYSIS)]
    for path in executed:
        nb = nbformat.read(path, as_version=4)
        assert any("injected-parameters" in c.metadata.get("tags", ()) for c in nb.cells), path
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
    assert sorted(p.stem for p in (tmp_path / "figures" / "custom" / "my_features").glob("*.png")) == [
        "active_ratio_over_training", "claims", "embeddings_pca", "greediness_bars", "intra_var_over_epochs",
        "recall_over_epochs", "separation_vs_spacing", "tradeoff", "variance_bars"]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
         "--sanitize-with", str(ROOT / "tests" / "nbval_sanitize.cfg"), "--nbval-cell-timeout", "600",
         "--rootdir", str(tmp_path), str(executed)],
        cwd=tmp_path, env=env(VGCORE_CACHE=str(tmp_path / "cache")), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout
