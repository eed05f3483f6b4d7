"""One real run of the notebook build on the smoke profile, shared by the notebook and workflow tests.

`smoke_build()` runs the Snakefile (features -> 7 training notebooks -> 4 analysis notebooks ->
figure index) into a temporary directory once per test session and returns its paths.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def env(**extra: str) -> dict[str, str]:
    """The environment for subprocesses: this checkout's vgcore first on the path."""
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    out.update(extra)
    return out


@dataclass(frozen=True)
class SmokeBuild:
    directory: Path
    results: Path
    figures: Path
    cache: Path
    log: str

    def snakemake(self, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
        from vgcore.workflow import snakemake_command

        cmd = snakemake_command("smoke", jobs=2, results=str(self.results), figures=str(self.figures),
                                directory=self.directory, extra=extra)
        proc = subprocess.run(cmd, cwd=ROOT, env=env(VGCORE_CACHE=str(self.cache)), capture_output=True,
                              text=True, timeout=900)
        if check and proc.returncode:
            raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
        return proc


@functools.cache
def smoke_build() -> SmokeBuild:
    tmp = Path(tempfile.mkdtemp(prefix="vgcore-smoke-build-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    build = SmokeBuild(tmp, tmp / "results", tmp / "figures", tmp / "cache", "")
    proc = build.snakemake()
    return SmokeBuild(tmp, build.results, build.figures, build.cache, proc.stdout + proc.stderr)


PYTHON = sys.executable
