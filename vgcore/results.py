"""The one results schema: how a run is written to disk and how many runs are read back.

A run lives in ``<root>/<profile>/<dataset>/<loss>/seed<k>/``:

- ``config.json``     the RunConfig (written first)
- ``steps.csv``       one row per training step: STEP_COLUMNS
- ``epochs.csv``      one row per (evaluated epoch, split): EPOCH_COLUMNS (epoch 0 = untrained head;
                      MAP@R, R-precision and NMI only where ``RunConfig.full_eval_at``, NaN elsewhere)
- ``embeddings.npz``  final evaluation embeddings (float16) and labels, compressed
- ``summary.json``    final metrics, convergence epochs, wall time, versions, config hash (written last)
- ``failure.json``    only when the run stopped on an error (then there is no summary.json)

Every file is written atomically (temporary file in the same folder, then ``os.replace``); a run
directory is complete only when ``summary.json`` exists and records the same config hash and
:data:`SCHEMA_VERSION`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vgcore.io import atomic_open, atomic_write_json
from vgcore.metrics.greediness import GREEDINESS_KEYS
from vgcore.metrics.retrieval import RETRIEVAL_KEYS
from vgcore.metrics.variance import VARIANCE_KEYS

RUN_ID_COLUMNS = ("profile", "dataset", "backbone", "loss", "seed")
STEP_COLUMNS = ("step", "epoch", "train_loss", *GREEDINESS_KEYS)
EPOCH_COLUMNS = ("epoch", "split", "train_loss", *VARIANCE_KEYS, *RETRIEVAL_KEYS)
TABLES = ("epochs", "steps", "summary")

SCHEMA_REVISION = 3
"""Bumped by hand when a column changes meaning. 2: steps.csv gained ``grad_effective_share``.
3: ``nmi`` from the torch k-means on the training device; ``map@r``, ``r_precision`` and ``nmi`` in
epochs.csv only at full-evaluation epochs (the final one by default), NaN at the others."""
SCHEMA_VERSION = f"{SCHEMA_REVISION}." + hashlib.sha256(
    json.dumps([STEP_COLUMNS, EPOCH_COLUMNS]).encode()).hexdigest()[:8]
"""Version of the files below: the revision and a digest of the column names, so that a run written
before a column was added (a new metric) or changed meaning counts as stale and is rerun."""


def run_dir(root: str | os.PathLike, config) -> Path:
    """``<root>/<profile>/<dataset>/<loss>/seed<k>`` for a RunConfig."""
    return Path(root) / config.profile / config.dataset / config.loss / f"seed{config.seed}"


def is_complete(path: str | os.PathLike, config_hash: str | None = None) -> bool:
    """True when ``summary.json`` exists (and, if a hash is given, records the same config hash and
    the current :data:`SCHEMA_VERSION`; a summary without a version is version 1)."""
    summary = Path(path) / "summary.json"
    if not summary.is_file():
        return False
    if config_hash is None:
        return True
    try:
        recorded = json.loads(summary.read_text())
    except (json.JSONDecodeError, OSError):
        return False
    return recorded.get("config_hash") == config_hash and recorded.get("schema_version", 1) == SCHEMA_VERSION


def start_run(path: str | os.PathLike, config) -> Path:
    """Clear whatever an earlier, unfinished or stale run left in `path` and write config.json."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for name in ("summary.json", "failure.json", "steps.csv", "epochs.csv", "embeddings.npz"):
        (path / name).unlink(missing_ok=True)
    for tmp in path.glob(".tmp-*"):  # left by a process killed in the middle of a write
        tmp.unlink()
    atomic_write_json(path / "config.json", config.to_dict())
    return path


def write_tables(path: str | os.PathLike, steps: pd.DataFrame, epochs: pd.DataFrame) -> None:
    """steps.csv and epochs.csv, in the schema's column order."""
    for name, frame, columns in (("steps.csv", steps, STEP_COLUMNS), ("epochs.csv", epochs, EPOCH_COLUMNS)):
        with atomic_open(Path(path) / name, "w") as f:
            frame.reindex(columns=columns).to_csv(f, index=False)


def write_embeddings(path: str | os.PathLike, z: np.ndarray, y: np.ndarray) -> None:
    with atomic_open(Path(path) / "embeddings.npz", "wb") as f:
        np.savez_compressed(f, z=z.astype(np.float16), y=y.astype(np.int64))


def load_run(path: str | os.PathLike) -> dict[str, Any]:
    """config, steps, epochs, summary (None if incomplete) and embeddings of one run directory."""
    path = Path(path)
    out: dict[str, Any] = {"config": json.loads((path / "config.json").read_text())}
    out["steps"] = pd.read_csv(path / "steps.csv") if (path / "steps.csv").exists() else None
    out["epochs"] = pd.read_csv(path / "epochs.csv") if (path / "epochs.csv").exists() else None
    out["summary"] = json.loads((path / "summary.json").read_text()) if is_complete(path) else None
    if (path / "embeddings.npz").exists():
        with np.load(path / "embeddings.npz") as npz:
            out["embeddings"] = (npz["z"].astype(np.float32), npz["y"])
    return out


def collect(root: str | os.PathLike, table: str = "epochs", profile: str | None = None) -> pd.DataFrame:
    """Every complete run under `root` as one tidy DataFrame.

    table="epochs": EPOCH_COLUMNS per run and epoch and split; "steps": STEP_COLUMNS per step;
    "summary": one row per run with the final metrics. Each row also carries RUN_ID_COLUMNS and
    ``config_hash``. Incomplete runs (no summary.json) are left out.
    """
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; choose one of: {', '.join(TABLES)}")
    root = Path(root)
    pattern = f"{profile}/*/*/seed*/summary.json" if profile else "*/*/*/seed*/summary.json"
    frames = []
    for summary_path in sorted(root.glob(pattern)):
        summary = json.loads(summary_path.read_text())
        ids = {k: summary["config"][k] for k in RUN_ID_COLUMNS} | {"config_hash": summary["config_hash"]}
        if table == "summary":
            frame = pd.DataFrame([{**ids, **summary["final"], **summary["convergence"],
                                   **summary["greediness_mean"], "wall_time_s": summary["wall_time_s"],
                                   "steps_per_s": summary["steps_per_s"]}])
        else:
            frame = pd.read_csv(summary_path.parent / f"{table}.csv")
            for k, v in reversed(ids.items()):
                frame.insert(0, k, v)
        frames.append(frame)
    columns = {"epochs": EPOCH_COLUMNS, "steps": STEP_COLUMNS}.get(table, ())
    if not frames:
        return pd.DataFrame(columns=[*RUN_ID_COLUMNS, "config_hash", *columns])
    return pd.concat(frames, ignore_index=True)
