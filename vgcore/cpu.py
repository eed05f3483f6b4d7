"""The CPU code path of the numeric libraries, pinned so that x86-64 machines compute the same bytes.

torch picks its vectorised kernels by the CPU it runs on (``ATEN_CPU_CAPABILITY``: default, avx2,
avx512) and so does MKL, behind torch's float32 matrix products on x86 (``MKL_CBWR``: its
conditional numerical reproducibility branch). An AVX-512 machine then sums in another order than
an AVX2 one, and the last digits of a table move (up to 0.4 % of a value on the demo, measured on an
AVX-512 Xeon against the committed build). The command line (``python -m vgcore ...``, so every
build, sweep and notebook it starts) pins both to AVX2 on an x86-64 CPU that has it, unless the
variable is already set. ARM machines and x86 CPUs without AVX2 keep their own path: a rebuild there
agrees with the committed tables within the tolerance of :mod:`vgcore.report.tolerance`, not byte for
byte. No torch import here: the pin must come before torch is loaded.
"""

from __future__ import annotations

import os
import platform
from collections.abc import MutableMapping
from pathlib import Path

PINNED = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}
"""The variables the command line sets, and their values."""


def cpu_flags(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> set[str]:
    """The instruction-set flags of the first CPU in `cpuinfo` (empty where there is no such file)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return set(value.split())
    return set()


def pin_code_path(environ: MutableMapping[str, str] = os.environ, *, machine: str | None = None,
                  cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> dict[str, str]:
    """Set :data:`PINNED` in `environ` where unset, on an x86-64 CPU with AVX2; returns what it set."""
    arch = (machine or platform.machine()).lower()
    if arch not in ("x86_64", "amd64") or "avx2" not in cpu_flags(cpuinfo):
        return {}
    added = {key: value for key, value in PINNED.items() if key not in environ}
    environ.update(added)
    return added
