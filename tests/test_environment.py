"""The package metadata (pyproject.toml), the lock (constraints.txt) and the environment files agree.

pyproject.toml declares compatible ranges (so `pip install vgcore` keeps a user's own torch); the
exact versions behind figures/demo are in constraints.txt, which `make setup` and environment.yml
install with, and binder/environment.yml writes out (with the CPU-only torch).
"""

import os
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from vgcore.__main__ import build_parser
from vgcore.provenance import read_lock

from _ci import require

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "constraints.txt"
BINDER = ROOT / "binder"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CPU_BUILDS = ("torch", "torchvision")  # pinned `==<version>+cpu` on Binder
NOTEBOOK_BUILD = ("notebooks", "offline", "workflow")  # the extras environment.yml installs: `python -m vgcore demo` runs
BINDER_EXTRAS = ("notebooks", "offline")  # JupyterLab and the notebooks on the committed demo runs (no build)


def _pyproject_requirements() -> tuple[dict[str, Requirement], dict[str, dict[str, Requirement]]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {canonicalize_name(Requirement(r).name): Requirement(r) for r in project["dependencies"]}
    extras = {extra: {canonicalize_name(Requirement(r).name): Requirement(r) for r in reqs}
              for extra, reqs in project["optional-dependencies"].items()}
    return runtime, extras


def pip_section(path: Path = ROOT / "environment.yml") -> list[str]:
    """The lines of the one pip section of a conda environment file."""
    env = yaml.safe_load(path.read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, f"{path.relative_to(ROOT)} must have exactly one pip section"
    return pip_sections[0]


def _environment_pip_requirements(path: Path = ROOT / "environment.yml") -> dict[str, Requirement]:
    reqs = {}
    for line in pip_section(path):
        if line.startswith("-"):  # pip options such as `-e .`, `-c FILE` or `--extra-index-url URL`
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement as err:  # pragma: no cover - the assertion message is the point
            pytest.fail(f"{path.name} pip line {line!r} is not a requirement: {err}")
        reqs[canonicalize_name(req.name)] = req
    return reqs


def test_library_dependencies_are_compatible_ranges_not_pins():
    """`pip install vgcore` must not replace a user's torch: no exact pins, a lower bound on each."""
    runtime, _ = _pyproject_requirements()
    pinned = [str(r) for r in runtime.values() if any(s.operator in ("==", "===") for s in r.specifier)]
    assert not pinned, f"pyproject.toml pins runtime dependencies exactly: {pinned}; pin them in constraints.txt"
    unbounded = [str(r) for r in runtime.values() if not any(s.operator in (">=", ">", "~=") for s in r.specifier)]
    assert not unbounded, f"runtime dependencies without a lower bound: {unbounded}"


def test_lock_pins_every_declared_dependency_inside_its_range():
    runtime, extras = _pyproject_requirements()
    lock = read_lock(LOCK)
    declared = {**runtime, **{n: r for group in extras.values() for n, r in group.items()}}
    missing = sorted(set(declared) - set(lock))
    assert not missing, f"constraints.txt lacks {missing}: regenerate it with `make lock`"
    outside = {n: (lock[n], str(r.specifier)) for n, r in declared.items() if not r.specifier.contains(lock[n])}
    assert not outside, f"locked versions outside the pyproject ranges: {outside}"
    assert lock["torch"] == "2.14.1" and lock["torchvision"] == "0.29.1", "DESIGN.md's torch and torchvision"


def test_the_installed_environment_is_the_locked_one():
    """The tests (and `make demo`) run in the environment `make setup` made from the lock."""
    lock = read_lock(LOCK)
    differ = {}
    for name, version in lock.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # an extra this environment was not made with (e.g. cluster)
        if installed != version:
            differ[name] = (installed, version)
    assert not differ, f"installed != locked (installed, locked): {differ}; run `make setup`, or `make lock` after " \
                       "an intended upgrade (then rebuild figures/demo)"


def _extras_default(text: str, pattern: str) -> set[str]:
    (found,) = re.findall(pattern, text, flags=re.M)
    return set(found.split(","))


def test_setup_installs_under_the_lock():
    makefile = (ROOT / "Makefile").read_text()
    assert "-c constraints.txt -e '.[$(EXTRAS)]'" in makefile
    assert "download.pytorch.org/whl/cpu" in makefile, "make setup TORCH=cpu: the CPU-only torch"


def test_setup_ci_and_lock_install_every_extra_the_tests_and_the_notebook_build_need():
    """`pip install vgcore` is the core only: `make setup`, CI and `make lock` name the extras."""
    _, extras = _pyproject_requirements()
    setup = _extras_default((ROOT / "Makefile").read_text(), r"^EXTRAS \?= (\S+)$")
    assert setup == {"dev", "docs", *NOTEBOOK_BUILD}, f"make setup installs {sorted(setup)}"
    ci = _extras_default((ROOT / ".ci" / "run").read_text(), r'EXTRAS="\$\{EXTRAS:-([^}]+)\}"')
    assert ci == setup | {"cluster"}, f".ci/run installs {sorted(ci)}"
    lock = _extras_default((ROOT / "Makefile").read_text(), r"vgcore lock --extras (\S+) ")
    assert lock == set(extras) == set(build_parser().parse_args(["lock"]).extras.split(",")), \
        "make lock and `vgcore lock` lock every extra"


def test_environment_installs_the_notebook_build_under_the_lock():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert pip_section() == ["-c constraints.txt", f"-e .[{','.join(NOTEBOOK_BUILD)}]"], \
        "environment.yml: the lock, then vgcore with the extras the notebook build needs"
    assert "python=3.11" in env["dependencies"]


# --- Binder: binder/environment.yml writes out the lock's pins, with CPU-only torch ------------------------


def test_binder_environment_pins_are_the_lock_with_cpu_torch():
    runtime, extras = _pyproject_requirements()
    lock, binder = read_lock(LOCK), _environment_pip_requirements(BINDER / "environment.yml")
    expected = set(runtime).union(*(extras[e] for e in BINDER_EXTRAS))
    assert set(binder) == expected, f"binder/environment.yml should pin exactly {sorted(expected)}"
    for name, req in binder.items():
        (pin,) = req.specifier
        want = f"{lock[name]}+cpu" if name in CPU_BUILDS else lock[name]
        assert pin.operator == "==" and pin.version == want, f"binder pins {req}, the lock {name}=={want}"
    binder_env = yaml.safe_load((BINDER / "environment.yml").read_text())
    top_env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert [d for d in binder_env["dependencies"] if isinstance(d, str)] == \
        [d for d in top_env["dependencies"] if isinstance(d, str)], "conda packages (python, pip) differ"


def test_binder_environment_finds_the_cpu_wheels_and_postbuild_installs_vgcore_under_the_lock():
    options = [line for line in pip_section(BINDER / "environment.yml") if line.startswith("-")]
    assert options == [f"--extra-index-url {CPU_INDEX}"], options
    post = BINDER / "postBuild"
    assert os.access(post, os.X_OK), "binder/postBuild must be executable"
    commands = [line.strip() for line in post.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert f"python -m pip install --no-cache-dir -c constraints.txt -e '.[{','.join(BINDER_EXTRAS)}]'" in commands
    assert "python -m vgcore snapshot restore figures/demo/results.tar.gz --results results" in commands


def test_a_missing_test_dependency_skips_here_and_fails_under_ci(monkeypatch):
    """tests/_ci.py: the skips that would hide coverage (PML, faiss, EfficientNet, the browser)."""
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="no_such_module_vgcore.*the fix"):
        require("no_such_module_vgcore", "the fix")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true but no_such_module_vgcore.*the fix"):
        require("no_such_module_vgcore", "the fix")
    assert require("json", "the fix").dumps([]) == "[]"
