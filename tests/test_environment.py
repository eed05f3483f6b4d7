"""The conda environment (environment.yml) and the package metadata (pyproject.toml) agree."""

import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

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


def _environment_pip_requirements() -> dict[str, Requirement]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml must have exactly one pip section"
    reqs = {}
    for line in pip_sections[0]:
        if line.startswith("-"):  # pip options such as `-e .`
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
