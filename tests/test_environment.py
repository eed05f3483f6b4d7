"""The conda environment (environment.yml) and the package metadata (pyproject.toml) agree."""

import os
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from _ci import require

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_requirements() -> tuple[dict[str, Requirement], dict[str, Requirement]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = {canonicalize_name(Requirement(r).name): Requirement(r) for r in project["dependencies"]}
    extras = {
        canonicalize_name(Requirement(r).name): Requirement(r)
        for group in project["optional-dependencies"].values()
        for r in group
    }
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
        if line.startswith("-"):  # pip options such as `-e .` or `--extra-index-url URL`
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement as err:  # pragma: no cover - the assertion message is the point
            pytest.fail(f"environment.yml pip line {line!r} is not a requirement: {err}")
        reqs[canonicalize_name(req.name)] = req
    return reqs


def test_environment_has_every_runtime_dependency_with_the_same_pin():
    runtime, _ = _pyproject_requirements()
    env = _environment_pip_requirements()
    missing = sorted(set(runtime) - set(env))
    assert not missing, f"environment.yml lacks runtime dependencies of pyproject.toml: {missing}"
    differing = {n: (str(runtime[n].specifier), str(env[n].specifier)) for n in runtime if runtime[n].specifier != env[n].specifier}
    assert not differing, f"pins differ (pyproject, environment.yml): {differing}"


def test_environment_extras_use_the_pyproject_pins():
    runtime, extras = _pyproject_requirements()
    env = _environment_pip_requirements()
    unknown = sorted(set(env) - set(runtime) - set(extras))
    assert not unknown, f"environment.yml names packages pyproject.toml does not declare: {unknown}"
    differing = {n: (str(extras[n].specifier), str(env[n].specifier)) for n in env if n in extras and extras[n].specifier != env[n].specifier}
    assert not differing, f"pins differ (pyproject extras, environment.yml): {differing}"


def test_environment_installs_the_package_itself():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert "-e ." in pip, "environment.yml must install vgcore itself (`-e .`) so notebooks can import it"
    assert "python=3.11" in env["dependencies"]


def test_torch_pins_are_exact():
    runtime, _ = _pyproject_requirements()
    assert str(runtime["torch"].specifier) == "==2.14.1"
    assert str(runtime["torchvision"].specifier) == "==0.29.1"


# --- Binder: binder/environment.yml is the top-level one with CPU-only torch -------------------------

BINDER = ROOT / "binder"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
CPU_BUILDS = ("torch", "torchvision")  # pinned `==<version>+cpu` on Binder


def test_top_level_environment_has_no_pip_options_but_the_editable_install():
    options = [line for line in pip_section() if line.startswith("-")]
    assert options == ["-e ."], f"unexpected pip options in environment.yml: {options}"


def test_binder_environment_is_the_top_level_one_with_cpu_torch():
    top, binder = _environment_pip_requirements(), _environment_pip_requirements(BINDER / "environment.yml")
    assert sorted(binder) == sorted(top), "binder/environment.yml and environment.yml name different packages"
    for name, req in top.items():
        if name in CPU_BUILDS:
            (pin,) = req.specifier
            assert pin.operator == "==", f"{name} must be pinned exactly"
            assert str(binder[name].specifier) == f"=={pin.version}+cpu", \
                f"Binder's {name} must be the CPU build of the same version: =={pin.version}+cpu"
        else:
            assert binder[name].specifier == req.specifier, f"pins differ for {name}: {req} vs {binder[name]}"
    binder_env = yaml.safe_load((BINDER / "environment.yml").read_text())
    top_env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert [d for d in binder_env["dependencies"] if isinstance(d, str)] == \
        [d for d in top_env["dependencies"] if isinstance(d, str)], "conda packages (python, pip) differ"


def test_binder_environment_finds_the_cpu_wheels_and_postbuild_installs_vgcore():
    options = [line for line in pip_section(BINDER / "environment.yml") if line.startswith("-")]
    assert options == [f"--extra-index-url {CPU_INDEX}"], options
    post = BINDER / "postBuild"
    assert os.access(post, os.X_OK), "binder/postBuild must be executable"
    commands = [line.strip() for line in post.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert "python -m pip install --no-cache-dir -e ." in commands, "postBuild must install vgcore itself"


def test_a_missing_test_dependency_skips_here_and_fails_under_ci(monkeypatch):
    """tests/_ci.py: the skips that would hide coverage (PML, faiss, EfficientNet, the browser)."""
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="no_such_module_vgcore.*the fix"):
        require("no_such_module_vgcore", "the fix")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true but no_such_module_vgcore.*the fix"):
        require("no_such_module_vgcore", "the fix")
    assert require("json", "the fix").dumps([]) == "[]"
