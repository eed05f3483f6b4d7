"""The pip sections of environment.yml and binder/environment.yml install: `pip install --dry-run`.

pip resolves each pip section as a fresh environment would (``--ignore-installed``), with whatever
index pip is configured with (on our machines the local wheel mirror of pip.conf, in the cloud PyPI),
and the resolved set must satisfy every pin. The top-level file's ``-e .`` is resolved as this
checkout, so vgcore's own dependencies are resolved together with the pins.

Binder's CPU wheels: binder/environment.yml pins ``torch==2.14.1+cpu`` from
https://download.pytorch.org/whl/cpu. Where that index cannot be reached (our offline CI), the dry
run drops the index option and the ``+cpu`` local labels and resolves the same public versions with
everything else, so a conflict between the Binder pins and the rest is still caught; a separate test
then skips, saying so. Where the index is reachable, the file's lines are resolved exactly as written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from functools import cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from test_environment import (
    BINDER,
    CPU_BUILDS,
    CPU_INDEX,
    ROOT,
    _environment_pip_requirements,
    pip_section,
)


@cache
def reachable(index: str) -> bool:
    try:
        with urllib.request.urlopen(f"{index}/torch/", timeout=10) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def dry_run_lines(env_file: Path) -> tuple[list[str], list[Requirement]]:
    """The pip section as a requirements file for the dry run, and the requirements to check after it."""
    lines, checks = [], []
    for line in pip_section(env_file):
        if line.startswith(("--extra-index-url", "--index-url")):
            if reachable(line.split()[1]):
                lines.append(line)
            continue
        if line == "-e .":  # relative to the environment file, as conda runs pip there
            lines.append(str(env_file.parent.resolve()))
            continue
        req = Requirement(line)
        if any(Version(s.version).local for s in req.specifier) and not reachable(CPU_INDEX):
            req = Requirement(str(req).replace("+cpu", ""))  # the same public version, from the configured index
        lines.append(str(req))
        checks.append(req)
    return lines, checks


def pip_dry_run(lines: list[str], tmp_path: Path) -> dict[str, str]:
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("\n".join(lines) + "\n")
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--disable-pip-version-check", "--no-input", "--report", str(report), "-r", str(reqs)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"pip could not resolve:\n{reqs.read_text()}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    installed = json.loads(report.read_text())["install"]
    return {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in installed}


@pytest.mark.slow
@pytest.mark.parametrize("env_file", [ROOT / "environment.yml", BINDER / "environment.yml"],
                         ids=["environment.yml", "binder/environment.yml"])
def test_pip_section_resolves(env_file, tmp_path):
    lines, checks = dry_run_lines(env_file)
    resolved = pip_dry_run(lines, tmp_path)
    for req in checks:
        name = canonicalize_name(req.name)
        assert name in resolved, f"{req} is not in the resolved set"
        assert req.specifier.contains(resolved[name], prereleases=True), f"{name} {resolved[name]} does not satisfy {req}"
    if "-e ." in pip_section(env_file):
        assert "vgcore" in resolved, "the editable vgcore was not resolved"
    top = _environment_pip_requirements()
    for name in CPU_BUILDS:  # CUDA or CPU build: the public version of the top-level pin
        (pin,) = top[name].specifier
        assert Version(resolved[name]).public == pin.version, (name, resolved[name], str(pin))


@pytest.mark.slow
def test_cpu_index_serves_binders_torch(tmp_path):
    if not reachable(CPU_INDEX):
        pytest.skip(f"{CPU_INDEX} is not reachable (offline): the +cpu wheels are checked where it is; "
                    "test_pip_section_resolves checked the same public versions with everything else")
    pins = [line for line in pip_section(BINDER / "environment.yml") if line.split("==")[0] in CPU_BUILDS]
    resolved = pip_dry_run([f"--extra-index-url {CPU_INDEX}", *pins], tmp_path)
    for line in pins:
        name, version = line.split("==")
        assert resolved[name] == version, f"{name}: resolved {resolved[name]}, pinned {version}"


# --- the committed results snapshot that Binder and Colab start from -------------------------------


@pytest.mark.slow
def test_snapshot_restores_what_the_analysis_notebooks_read(tmp_path):
    from pandas.testing import assert_frame_equal

    from vgcore import snapshot
    from vgcore.report.outputs import collect_profile
    from vgcore.results import load_run

    from _smoke_build import smoke_build

    b = smoke_build()
    archive = b.figures / "smoke" / "results.tar.gz"  # written by the build's snapshot rule
    rewritten = snapshot.write(b.results, "smoke", tmp_path / "results.tar.gz")
    assert rewritten.read_bytes() == archive.read_bytes(), "the archive is not deterministic"
    restored = tmp_path / "restored"
    runs = snapshot.restore(archive, restored)
    assert len(runs) == len(list((b.results / "smoke").glob("*/*/seed*/summary.json")))
    for table in ("summary", "epochs", "steps"):
        assert_frame_equal(collect_profile(restored, "smoke", table), collect_profile(b.results, "smoke", table))
    for run in runs:
        original = load_run(b.results / run.relative_to(restored))
        assert (load_run(run)["embeddings"][0] == original["embeddings"][0]).all()
    assert snapshot.restore(archive, restored) == [], "runs already present must be kept"


def test_committed_demo_snapshot_gives_the_committed_demo_tables(tmp_path):
    """Binder and Colab start from figures/demo/results.tar.gz: it must be the runs behind figures/demo."""
    from vgcore import snapshot
    from vgcore.report import analysis
    from vgcore.report.claims import claims_tables, format_claims
    from vgcore.report.outputs import ANALYSIS, collect_profile

    demo = ROOT / "figures" / "demo"
    archive = demo / "results.tar.gz"
    assert archive.exists(), "figures/demo/results.tar.gz is missing: `make demo` writes it"
    snapshot.restore(archive, tmp_path / "results")
    summary = collect_profile(tmp_path / "results", "demo", "summary")
    claims = claims_tables(summary, collect_profile(tmp_path / "results", "demo", "epochs"))
    tables = {
        "03_variance": analysis.mean_std_table(summary, analysis.VARIANCE_TABLE),
        "04_greediness": analysis.mean_std_table(summary, analysis.GREEDINESS_TABLE),
        "05_retrieval": analysis.mean_std_table(summary, analysis.RETRIEVAL_TABLE),
        "06_claims": format_claims(claims["claims"]),
        "06_gate": claims["gate"].round(4),
        "06_variants": claims["variants"],
    }
    declared = {item.name for items in ANALYSIS.values() for item in items if item.kind == "table"}
    assert set(tables) == declared - {"06_schedules"}  # the demo has no comparison profile
    for name, table in tables.items():
        (written, *_) = analysis.write_table(table, tmp_path / "tables" / name, "", f"{name}.ipynb")
        assert written.read_text() == (demo / "tables" / f"{name}.csv").read_text(), \
            f"figures/demo/results.tar.gz does not give figures/demo/tables/{name}.csv: rebuild with `make demo`"


# --- Colab and Binder in the notebooks: badges and the setup cell ---------------------------------

import nbformat  # noqa: E402

from vgcore.report import outputs  # noqa: E402

NOTEBOOKS = ROOT / "notebooks"
SLUG, BRANCH = "OWNER/vgcore", "main"  # the GitHub repository the badges and the Colab cell use


def _code_cells(name: str):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    return nb, [c for c in nb.cells if c.cell_type == "code"]


@pytest.mark.parametrize("name", outputs.NOTEBOOKS)
def test_notebook_opens_on_colab_and_binder_and_sets_up_first(name):
    nb, code = _code_cells(name)
    intro = nb.cells[0].source
    assert f"https://colab.research.google.com/github/{SLUG}/blob/{BRANCH}/notebooks/{name}.ipynb" in intro
    assert f"https://mybinder.org/v2/gh/{SLUG}/{BRANCH}?urlpath=lab/tree/notebooks/{name}.ipynb" in intro
    assert '"google.colab" in sys.modules' in code[0].source, "the first code cell is the Colab setup"
    assert "parameters" in code[1].metadata.get("tags", ()), "the parameters follow the setup cell"
    assert code[0].source == _code_cells(outputs.NOTEBOOKS[0])[1][0].source, "one setup cell for all notebooks"
    assert f'"https://github.com/{SLUG}"' in code[0].source


_RUN_SETUP = r"""
import os, subprocess, sys, types
calls = []
def fake_run(cmd, check=False, **kw):
    calls.append([str(c) for c in cmd])
    if cmd[:2] == ["git", "clone"]:
        os.makedirs(os.path.join(cmd[-1], "figures", "demo"))
        open(os.path.join(cmd[-1], "figures", "demo", "results.tar.gz"), "wb").close()
    return subprocess.CompletedProcess(cmd, 0)
subprocess.run = fake_run
if os.environ.get("FAKE_COLAB"):
    sys.modules["google.colab"] = types.ModuleType("google.colab")
exec(open(sys.argv[1]).read())
print(repr((os.getcwd(), calls)))
"""


def _run_setup(tmp_path, cwd, colab: bool):
    src = _code_cells("03_variance")[1][0].source.replace("/content/vgcore-repo", str(tmp_path / "content" / "repo"))
    (tmp_path / "setup_cell.py").write_text(src)
    (tmp_path / "driver.py").write_text(_RUN_SETUP)
    proc = subprocess.run([sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "setup_cell.py")], cwd=cwd,
                          env={**os.environ, **({"FAKE_COLAB": "1"} if colab else {})},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return eval(proc.stdout.strip().splitlines()[-1])


def test_setup_cell_outside_colab_installs_nothing(tmp_path):
    assert _run_setup(tmp_path, tmp_path, colab=False) == (str(tmp_path), [])
    # JupyterLab and Binder start the kernel in notebooks/: the cell moves to the repository root
    assert _run_setup(tmp_path, NOTEBOOKS, colab=False) == (str(ROOT), [])


def test_setup_cell_on_colab_clones_installs_and_restores_the_demo_results(tmp_path):
    repo = tmp_path / "content" / "repo"
    cwd, calls = _run_setup(tmp_path, tmp_path, colab=True)
    assert cwd == str(repo)
    assert calls[0] == ["git", "clone", "--depth=1", f"https://github.com/{SLUG}", str(repo)]
    assert calls[1][-4:] == ["pip", "install", "--quiet", f"{repo}[offline]"]
    assert calls[2][-4:] == ["vgcore", "snapshot", "restore", "figures/demo/results.tar.gz"]
