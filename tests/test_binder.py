"""The pip sections of environment.yml and binder/environment.yml install: `pip install --dry-run`.

pip resolves each pip section as a fresh environment would (``--ignore-installed``), with whatever
index pip is configured with (on our machines the local wheel mirror of pip.conf, in the cloud PyPI),
and the resolved set must satisfy every pin. The top-level file's ``-e .`` is resolved as this
checkout, so vgcore's own dependencies are resolved together with the pins.

Binder's CPU wheels: binder/environment.yml pins ``torch==2.14.1+cpu`` from
https://download.pytorch.org/whl/cpu. Where that index cannot be reached (our offline CI), the dry
run drops the index option and the ``+cpu`` local labels and resolves the same public versions with
everything else, so a conflict between the Binder pins and the rest is still caught; a separate test
then skips, saying so. Where the index is reachable, the file's lines are resolved exactly as written.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from functools import cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from test_environment import (
    BINDER,
    CPU_BUILDS,
    CPU_INDEX,
    LOCK,
    ROOT,
    pip_section,
)

from vgcore.provenance import read_lock


@cache
def reachable(index: str) -> bool:
    try:
        with urllib.request.urlopen(f"{index}/torch/", timeout=10) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def dry_run_lines(env_file: Path) -> tuple[list[str], list[Requirement]]:
    """The pip section as a requirements file for the dry run, and the requirements to check after it."""
    lines, checks = [], []
    for line in pip_section(env_file):
        if line.startswith(("--extra-index-url", "--index-url")):
            if reachable(line.split()[1]):
                lines.append(line)
            continue
        if line.startswith("-e ."):  # relative to the environment file, as conda runs pip there
            lines.append(str(env_file.parent.resolve()) + line[len("-e ."):])
            continue
        if line.startswith("-c "):  # the lock, relative to the environment file
            lines.append(f"-c {(env_file.parent / line[3:]).resolve()}")
            continue
        req = Requirement(line)
        if any(Version(s.version).local for s in req.specifier) and not reachable(CPU_INDEX):
            req = Requirement(str(req).replace("+cpu", ""))  # the same public version, from the configured index
        lines.append(str(req))
        checks.append(req)
    return lines, checks


def pip_dry_run(lines: list[str], tmp_path: Path) -> dict[str, str]:
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("\n".join(lines) + "\n")
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--disable-pip-version-check", "--no-input", "--report", str(report), "-r", str(reqs)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"pip could not resolve:\n{reqs.read_text()}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    installed = json.loads(report.read_text())["install"]
    return {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in installed}


@pytest.mark.slow
@pytest.mark.parametrize("env_file", [ROOT / "environment.yml", BINDER / "environment.yml"],
                         ids=["environment.yml", "binder/environment.yml"])
def test_pip_section_resolves(env_file, tmp_path):
    lines, checks = dry_run_lines(env_file)
    resolved = pip_dry_run(lines, tmp_path)
    for req in checks:
        name = canonicalize_name(req.name)
        assert name in resolved, f"{req} is not in the resolved set"
        assert req.specifier.contains(resolved[name], prereleases=True), f"{name} {resolved[name]} does not satisfy {req}"
    lock = read_lock(LOCK)
    if any(line.startswith("-e .") for line in pip_section(env_file)):
        assert "vgcore" in resolved, "the editable vgcore was not resolved"
        # environment.yml installs under the lock: every resolved package at its locked version
        differ = {n: (v, lock[n]) for n, v in resolved.items() if n in lock and Version(v).public != lock[n]}
        assert not differ, f"resolved != locked: {differ}"
    for name in CPU_BUILDS:  # CUDA or CPU build: the public version of the lock
        assert Version(resolved[name]).public == lock[name], (name, resolved[name], lock[name])


@pytest.mark.slow
def test_cpu_index_serves_binders_torch(tmp_path):
    if not reachable(CPU_INDEX):
        pytest.skip(f"{CPU_INDEX} is not reachable (offline): the +cpu wheels are checked where it is; "
                    "test_pip_section_resolves checked the same public versions with everything else")
    pins = [line for line in pip_section(BINDER / "environment.yml") if line.split("==")[0] in CPU_BUILDS]
    resolved = pip_dry_run([f"--extra-index-url {CPU_INDEX}", *pins], tmp_path)
    for line in pins:
        name, version = line.split("==")
        assert resolved[name] == version, f"{name}: resolved {resolved[name]}, pinned {version}"


# --- the committed results snapshot that Binder and Colab start from -------------------------------


@pytest.mark.slow
def test_snapshot_restores_what_the_analysis_notebooks_read(tmp_path):
    import numpy as np
    from pandas.testing import assert_frame_equal

    from vgcore import snapshot
    from vgcore.report.outputs import collect_profile
    from vgcore.results import embedding_sample, load_run

    from _smoke_build import smoke_build

    b = smoke_build()
    archive = b.figures / "smoke" / "results.tar.gz"  # written by the build's snapshot rule
    rewritten = snapshot.write(b.results, "smoke", tmp_path / "results.tar.gz")
    assert rewritten.read_bytes() == archive.read_bytes(), "the archive is not deterministic"
    restored = tmp_path / "restored"
    runs = snapshot.restore(archive, restored)
    assert len(runs) == len(list((b.results / "smoke").glob("*/*/seed*/summary.json")))
    timings = ["wall_time_s", "steps_per_s"]  # left out of the snapshot: they change on every rebuild
    full, back = collect_profile(b.results, "smoke", "summary"), collect_profile(restored, "smoke", "summary")
    assert_frame_equal(back.drop(columns=timings), full.drop(columns=timings))
    assert back[timings].isna().all().all()
    assert_frame_equal(collect_profile(restored, "smoke", "epochs"), collect_profile(b.results, "smoke", "epochs"))
    steps = collect_profile(restored, "smoke", "steps")
    assert steps.groupby(["dataset", "loss", "seed"]).size().max() <= snapshot.MAX_STEP_ROWS
    for run in runs:
        original, copy = load_run(b.results / run.relative_to(restored)), load_run(run)
        if "embeddings" in copy:
            keep = embedding_sample(original["embeddings"][1], original["coarse"])
            assert (copy["embeddings"][0] == original["embeddings"][0][keep]).all()
            assert (copy["coarse"] == original["coarse"][keep]).all()
        k = copy["summary"]["snapshot"]["steps_block"]
        np.testing.assert_allclose(copy["steps"]["train_loss"].to_numpy(),
                                   snapshot.thin_steps(original["steps"], k)["train_loss"].to_numpy(), rtol=1e-3)
    assert snapshot.restore(archive, restored) == [], "runs already present must be kept"


def test_committed_demo_snapshot_is_small():
    """At most 25 kB a run (22 kB when the demo had 90 runs and when it had 165) and 5 MB in all."""
    import tarfile

    archive = ROOT / "figures" / "demo" / "results.tar.gz"
    size = archive.stat().st_size
    with tarfile.open(archive, "r:gz") as tar:
        runs = sum(m.name.endswith("/summary.json") for m in tar.getmembers())
    assert size <= 25_000 * runs and size <= 5_000_000, \
        f"figures/demo/results.tar.gz is {size / 1e6:.1f} MB for {runs} runs: rebuild it with `make demo` " \
        "(vgcore.snapshot keeps only what the notebooks read)"


def test_committed_demo_snapshot_gives_the_committed_demo_tables(tmp_path):
    """Binder and Colab start from figures/demo/results.tar.gz: it must be the runs behind figures/demo."""
    from vgcore import snapshot
    from vgcore.report import analysis
    from vgcore.report.claims import claims_tables, format_claims, format_members
    from vgcore.report.outputs import ANALYSIS, collect_profile, items

    demo = ROOT / "figures" / "demo"
    archive = demo / "results.tar.gz"
    assert archive.exists(), "figures/demo/results.tar.gz is missing: `make demo` writes it"
    snapshot.restore(archive, tmp_path / "results")
    summary = collect_profile(tmp_path / "results", "demo", "summary")
    claims = claims_tables(summary, collect_profile(tmp_path / "results", "demo", "epochs"))
    tables = {
        "03_variance": analysis.mean_std_table(summary, analysis.VARIANCE_TABLE),
        "04_greediness": analysis.mean_std_table(summary, analysis.GREEDINESS_TABLE),
        "05_retrieval": analysis.mean_std_table(summary, analysis.RETRIEVAL_TABLE),
        "06_claims": format_claims(claims["claims"]),
        "06_claims_members": format_members(claims["members"]),
        "06_gate": claims["gate"].round(4),
        "06_variants": claims["variants"],
    }
    declared = {item.name for nb in ANALYSIS for item in items(nb, "demo") if item.kind == "table"}
    assert set(tables) == declared - {"06_schedules"}  # the demo has no comparison profile
    for name, table in tables.items():
        (written, *_) = analysis.write_table(table, tmp_path / "tables" / name, "", f"{name}.ipynb")
        assert written.read_text() == (demo / "tables" / f"{name}.csv").read_text(), \
            f"figures/demo/results.tar.gz does not give figures/demo/tables/{name}.csv: rebuild with `make demo`"
