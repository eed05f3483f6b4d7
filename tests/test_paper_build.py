"""`make paper` end to end, offline: the paper profile's whole DAG on tiny copies of its five datasets.

The datasets are built in their official on-disk formats (tests/_formats.py) and found through
``$VGCORE_DATA`` (the build's processes take the miniature FashionMNIST and CIFAR-10 for the official
files, whose MD5s their readers check: ``_formats.trust_miniatures``); the backbone is the real ViT-B/32 architecture with random weights, asked for
explicitly (``backbone_options.weights=random``: the paper profile itself never falls back to it);
the profile is shrunk by overrides (2 epochs, batch 4) into results and figures roots of the test's
own, and to two of its losses to keep `make test` short. Every stage runs
as `make paper` runs it: features -> fused training per dataset x seed -> the per-run training
notebooks -> the analysis notebooks -> every declared figure and table.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from vgcore import results as vgresults
from vgcore.config import get_profile, parse_overrides
from vgcore.report import outputs
from vgcore.workflow import build_tag, snakemake_command

from _formats import make_paper_datasets, trust_miniatures
from _smoke_build import ROOT, env

OVERRIDES = ["epochs=2", "batch_size=4", "eval_train_size=8", "backbone_options.weights=random"]
LOSSES = ["npair", "scl"]


@pytest.mark.slow
def test_the_paper_dag_runs_offline_and_writes_every_declared_figure_and_table(tmp_path):
    data = make_paper_datasets(tmp_path / "data")
    results, figures, cache = tmp_path / "results", tmp_path / "figures", tmp_path / "cache"
    cmd = snakemake_command("paper", jobs=2, results=str(results), figures=str(figures), seeds="0",
                            losses=LOSSES, overrides=OVERRIDES, directory=tmp_path)
    environment = env(VGCORE_DATA=str(data), VGCORE_CACHE=str(cache))
    environment["PYTHONPATH"] = f"{trust_miniatures(data, tmp_path / 'hook')}{os.pathsep}{environment['PYTHONPATH']}"
    proc = subprocess.run(cmd, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]

    paper = get_profile("paper")
    tag = build_tag(parse_overrides(OVERRIDES))
    runs = results / "paper" / vgresults.VARIANTS / tag  # a build with overrides trains a variant of the profile
    for dataset in paper.datasets:
        assert (runs / dataset / "01_features.ipynb").is_file()
        for loss in LOSSES:
            run = runs / dataset / loss / "seed0"
            assert run == vgresults.run_dir(results, paper.config(dataset, loss, 0, **parse_overrides(OVERRIDES)), tag)
            assert {"02_train.ipynb", "summary.json", "steps.csv", "epochs.csv", "embeddings.npz"} <= {
                p.name for p in run.iterdir()}, run
            summary = json.loads((run / "summary.json").read_text())
            assert summary["config"]["backbone"] == "vit_b_32"
            assert summary["config"]["backbone_options"] == {"weights": "random"}
            assert summary["group_size"] == len(LOSSES)  # one fused job per dataset x seed
    # the features came from the ViT-B/32 architecture (768-d class token), untrained, as asked
    sidecars = [json.loads(p.read_text()) for p in cache.glob("*/*.json")]
    assert len(sidecars) == 2 * len(paper.datasets)
    assert all((s["backbone"], s["weights"], s["feature_dim"]) == ("vit_b_32", "random", 768) for s in sidecars)

    fig = figures / "paper"
    expected = {*outputs.analysis_files(fig, profile="paper"), fig / "README.md", fig / "results.tar.gz",
                *(fig / "notebooks" / f"{nb}.ipynb" for nb in outputs.ANALYSIS)}
    written = {p for p in fig.rglob("*") if p.is_file()}
    assert expected <= written, sorted(map(str, expected - written))
    assert all(p.stat().st_size > 0 for p in expected)
