"""No silent skip: a test whose dependency or data is missing goes through tests/_ci.py.

`require` and `unavailable` there skip on a developer's machine and fail under ``CI=true``, where
``.ci/run`` installs everything. Any other skip in tests/ (``pytest.importorskip``,
``pytest.mark.skipif``, ``pytest.mark.skip``, ``pytest.skip``) must be one of the by-design skips of
`BY_DESIGN`, which CI skips too, and PROTOCOL.md's "skips" row names every file that has one.
"""

from __future__ import annotations

import ast
import re

from _smoke_build import ROOT

TESTS = ROOT / "tests"
SKIP_NAMES = ("importorskip", "skip", "skipif")

# The condition of a by-design skip (skipif's first argument, or the `if` around pytest.skip) -> why
# CI skips it as well.
BY_DESIGN = {
    "not torch.cuda.is_available()": "needs a CUDA GPU; CI's machine has none",
    "not reachable(CPU_INDEX)": "needs download.pytorch.org; CI reaches PyPI only",
    "not in_ci()": "checks CI's own setup (the browser, the cluster): nothing to check elsewhere",
}


def skips(source: str) -> list[tuple[int, str, str | None]]:
    """Every skip in `source`: (line, the skip as written, its condition's source or None)."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "pytest":
            found += [(node.lineno, f"from pytest import {a.name}", None) for a in node.names if a.name in SKIP_NAMES]
        if not (isinstance(node, ast.Attribute) and node.attr in SKIP_NAMES
                and ast.unparse(node.value) in ("pytest", "pytest.mark")):
            continue
        parent = parents.get(node)
        if isinstance(parent, ast.Attribute):  # pytest.skip.Exception: not a skip
            continue
        condition = None
        if node.attr == "skipif" and isinstance(parent, ast.Call) and parent.func is node and parent.args:
            condition = ast.unparse(parent.args[0])
        elif node.attr == "skip" and ast.unparse(node.value) == "pytest":
            around = parent
            while around is not None and not isinstance(around, ast.If):
                around = parents.get(around)
            condition = ast.unparse(around.test) if around is not None else None
        found.append((node.lineno, ast.unparse(parent if isinstance(parent, ast.Call) else node)[:100], condition))
    return found


def test_a_missing_dependency_or_file_cannot_skip_silently():
    silent, used = [], set()
    for path in sorted(TESTS.rglob("*.py")):
        if path.name == "_ci.py":
            continue
        for line, text, condition in skips(path.read_text()):
            if condition in BY_DESIGN:
                used.add(condition)
            else:
                silent.append(f"{path.relative_to(ROOT)}:{line}: {text} (condition {condition})")
    assert not silent, ("skips that would pass CI without running the test; use require() or unavailable() "
                        "from tests/_ci.py, or, for a skip by design, add its condition and reason to "
                        "BY_DESIGN in tests/test_skips.py:\n" + "\n".join(silent))
    assert used == set(BY_DESIGN), f"allowed but used nowhere: {sorted(set(BY_DESIGN) - used)}"


def test_the_scan_finds_the_skips_that_hid_coverage_and_passes_the_ones_by_design():
    source = '''
import pytest
from pytest import importorskip
pml = pytest.importorskip("pytorch_metric_learning.losses")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

@pytest.mark.skipif(not faiss_available(), reason="faiss not installed")
def test_a(): ...

@pytest.mark.skipif(not (DIR / "t10k-labels-idx1-ubyte.gz").exists(), reason="not installed")
def test_b(): ...

@pytest.mark.skip(reason="later")
def test_c():
    with pytest.raises(pytest.skip.Exception):
        pass

def test_d():
    if not Path("/usr/share/datasets/x").is_file():
        pytest.skip("not installed")
    if not in_ci():
        pytest.skip("only checked under CI=true")
'''
    found = skips(source)
    assert [(line, condition) for line, _, condition in found if condition not in BY_DESIGN] == [
        (3, None), (4, None), (7, "not faiss_available()"),
        (10, "not (DIR / 't10k-labels-idx1-ubyte.gz').exists()"), (13, None),
        (20, "not Path('/usr/share/datasets/x').is_file()"),
    ]
    assert sorted(line for line, _, condition in found if condition in BY_DESIGN) == [5, 22]


def test_protocol_names_every_file_that_skips_by_design():
    row = next(line for line in (ROOT / "PROTOCOL.md").read_text().splitlines() if line.startswith("| skips |"))
    files = {path.name for path in TESTS.rglob("test_*.py")
             if any(condition in BY_DESIGN for _, _, condition in skips(path.read_text()))}
    named = set(re.findall(r"test_\w+\.py", row))
    assert files <= named, f"PROTOCOL.md's skips row does not name {sorted(files - named)}"
