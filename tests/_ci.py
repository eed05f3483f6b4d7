"""Skips that would hide coverage: a skip on a developer's machine, a failure under CI.

CI (``.ci/run``, ``CI=true``) installs every extra and system package the tests use, so a missing
one there is a broken setup, not a reason to skip: a green CI means the test really ran. Tests that
cannot run in CI by design (no GPU, no internet) skip with their own reason and do not use this.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str, fix: str) -> None:
    """Skip with `reason` (also at module level); under CI=true fail, naming `fix`."""
    if in_ci():
        pytest.fail(f"CI=true but {reason} ({fix})", pytrace=False)
    pytest.skip(f"{reason} ({fix})", allow_module_level=True)


def require(module: str, fix: str) -> ModuleType:
    """``pytest.importorskip`` that fails under CI=true."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        unavailable(f"{module} cannot be imported ({err})", fix)
        raise  # unreachable: unavailable() skips or fails


DEV_EXTRA = "pip install -e '.[dev]'"
OFFLINE_EXTRA = "pip install -e '.[offline]'"
NOTEBOOKS_EXTRA = "pip install -e '.[notebooks]'"
