"""`make site` into a folder, shared by tests/test_site.py and the browser test."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from _smoke_build import ROOT


def build_site(out: Path) -> subprocess.CompletedProcess:
    """`make site SITE=out` with this interpreter's environment (`-o` keeps make from reinstalling it)."""
    venv = Path(sys.prefix)
    return subprocess.run(["make", "-s", "-o", str(venv / ".vgcore-installed"), "site", f"VENV={venv}", f"SITE={out}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
