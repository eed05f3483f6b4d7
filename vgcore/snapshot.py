"""A compact copy of a profile's runs, committed beside its figures, for places that train nothing.

Binder (CPU-only, small), Colab and a fresh clone (``make restore``) start the notebooks from the
committed demo runs rather than from training: ``figures/<profile>/results.tar.gz`` holds, for every
complete run, what the notebooks read, and nothing else:

- ``config.json``, ``epochs.csv``: as written (every table of the analysis notebooks comes from
  these and the summary, so the restored runs give the committed tables exactly);
- ``summary.json``: as written, less what changes on every rebuild without changing a number: the
  wall time and speed (``None``) and the git commit (``None``; the commit of the snapshot is the one
  that committed it). The package versions stay. A ``snapshot`` entry says what was thinned;
- ``steps.csv``: block means of ``k`` consecutive steps, ``k`` the smallest that leaves at most
  :data:`MAX_STEP_ROWS` rows, at 4 significant digits (only the per-step figures read it, and they
  bin steps at least as coarsely);
- ``embeddings.npz`` of the lowest seed of each dataset x loss: only the samples the embeddings
  figure draws (:func:`vgcore.results.embedding_sample`), so the figure is the same from the
  snapshot as from the full runs.

The executed ``02_train.ipynb`` of each run is left out. The archive is deterministic (sorted
members, zero mtimes, fixed owner, no volatile field), so rebuilding it from runs with the same
numbers gives the same bytes, and :func:`write` leaves an existing file with the same content
untouched: git sees a change only when a number does.

    python -m vgcore snapshot write  --results results --profile demo    # -> figures/demo/results.tar.gz
    python -m vgcore snapshot restore figures/demo/results.tar.gz --results results   # = make restore
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import os
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd

from vgcore.io import atomic_open

FILES = ("config.json", "summary.json", "epochs.csv", "steps.csv")
EMBEDDINGS = "embeddings.npz"
MAX_STEP_ROWS = 60
"""At most this many rows of ``steps.csv`` per run in the snapshot (the 04 figures draw 60 bins)."""
VOLATILE = {"wall_time_s": None, "eval_time_s": None, "steps_per_s": None, "git": {"commit": None, "dirty": None}}
"""Summary fields that change on every rebuild without changing a number, and their snapshot value."""


def default_archive(profile: str, figures_root: str | os.PathLike = "figures") -> Path:
    return Path(figures_root) / profile / "results.tar.gz"


def _complete_runs(results_root: Path, profile: str, variant: str | None = None) -> list[Path]:
    """The profile's own runs (or one variant's), each checked to be current and intact (vgcore.results.check_run)."""
    from vgcore import results

    runs = results.find_runs(results_root, profile, variant)
    for run in runs:
        results.check_run(run)
    return runs


def step_block(n_steps: int, max_rows: int = MAX_STEP_ROWS) -> int:
    """The number of consecutive steps one snapshot row averages: the smallest leaving <= `max_rows` rows."""
    return max(1, math.ceil(n_steps / max_rows))


def thin_steps(steps: pd.DataFrame, k: int) -> pd.DataFrame:
    """Block means of `k` consecutive rows of a ``steps.csv`` table: ``step`` and ``epoch`` of the
    block's middle row, booleans all-true, every other column its mean (NaN when all are NaN)."""
    if k <= 1 or steps.empty:
        return steps.copy()
    n = len(steps)
    block = np.arange(n) // k
    starts = np.arange(0, n, k)
    middle = starts + np.minimum((k - 1) // 2, np.minimum(k, n - starts) - 1)
    out = {}
    for col in steps.columns:
        series = steps[col]
        if col in ("step", "epoch"):
            out[col] = series.iloc[middle].to_numpy()
        elif series.dtype == bool:
            out[col] = series.groupby(block).all().to_numpy()
        else:
            out[col] = pd.to_numeric(series, errors="coerce").groupby(block).mean().to_numpy()
    return pd.DataFrame(out, columns=list(steps.columns))


def _summary_bytes(path: Path, k: int, n_embedded: int | None, files: dict[str, bytes]) -> bytes:
    """The run's summary for the snapshot: volatile fields blanked, what was thinned said, the
    size and sha256 of each file as the snapshot holds it, sealed again (so a restored run passes
    the integrity checks of vgcore.results, and a thinned file is never taken for the original)."""
    from vgcore.results import seal

    summary = json.loads(path.read_text())
    summary.update(VOLATILE)
    summary["snapshot"] = {"steps_block": k, "embedded_samples": n_embedded}
    if "files" in summary:
        summary["files"] = {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                            for name, data in sorted(files.items())}
    return (json.dumps(seal(summary), indent=2, sort_keys=False) + "\n").encode()


def _steps_bytes(path: Path, k: int) -> bytes:
    steps = thin_steps(pd.read_csv(path), k)
    return steps.to_csv(index=False, float_format="%.4g").encode()


def _embedding_bytes(path: Path) -> tuple[bytes, int]:
    from vgcore.results import embedding_sample

    with np.load(path) as npz:
        arrays = {name: npz[name] for name in npz.files}
    keep = embedding_sample(arrays["y"], arrays.get("coarse"))
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{name: a[keep] for name, a in arrays.items()})
    return _zero_zip_times(buffer.getvalue()), len(keep)


def _zero_zip_times(data: bytes) -> bytes:
    """numpy's zip members carry the current time: rewrite them with a fixed one (same bytes each time)."""
    import zipfile

    src, out = zipfile.ZipFile(io.BytesIO(data)), io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            fixed = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            fixed.compress_type, fixed.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
            dst.writestr(fixed, src.read(info.filename))
    return out.getvalue()


def members(results_root: str | os.PathLike, profile: str, variant: str | None = None) -> dict[str, bytes]:
    """Archive path -> content of every file the snapshot of `profile` (or of one of its variants)
    holds (see the module docstring)."""
    root = Path(results_root)
    runs = _complete_runs(root, profile, variant)
    if not runs:
        what = f"variant {variant!r} of profile {profile!r}" if variant else f"profile {profile!r}"
        raise ValueError(f"no complete run of {what} under {str(root)!r}")
    lowest_seed: dict[tuple[str, str], Path] = {}
    for run in runs:  # sorted, but seed10 < seed2 as text: compare numbers
        key = (run.parent.parent.name, run.parent.name)
        if key not in lowest_seed or int(run.name[4:]) < int(lowest_seed[key].name[4:]):
            lowest_seed[key] = run
    out: dict[str, bytes] = {}
    for run in runs:
        rel = run.relative_to(root).as_posix()
        n_steps = len(pd.read_csv(run / "steps.csv")) if (run / "steps.csv").exists() else 0
        k = step_block(n_steps)
        n_embedded = None
        files: dict[str, bytes] = {}
        if run in lowest_seed.values() and (run / EMBEDDINGS).exists():
            files[EMBEDDINGS], n_embedded = _embedding_bytes(run / EMBEDDINGS)
        for name in FILES:
            path = run / name
            if path.exists() and name != "summary.json":
                files[name] = _steps_bytes(path, k) if name == "steps.csv" else path.read_bytes()
        if (run / "summary.json").exists():
            files["summary.json"] = _summary_bytes(run / "summary.json", k, n_embedded,
                                                   {n: d for n, d in files.items() if n != "summary.json"})
        out.update({f"{rel}/{name}": data for name, data in files.items()})
    return dict(sorted(out.items()))


def archive_bytes(files: dict[str, bytes]) -> bytes:
    """A deterministic .tar.gz of `files` (sorted, zero mtimes, owner root, mode 644, no gzip name/time)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(files[name]), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(files[name]))
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=9) as gz:
        gz.write(buffer.getvalue())
    return out.getvalue()


def write(results_root: str | os.PathLike, profile: str, out: str | os.PathLike | None = None, *,
          variant: str | None = None) -> Path:
    """Write the snapshot of every complete own run of `profile` under `results_root` (variants are left
    out, or only `variant`'s runs are in; a stale or corrupt run stops it, naming the run); returns its
    path. An existing archive with the same bytes is left untouched (not even its mtime changes)."""
    data = archive_bytes(members(results_root, profile, variant))
    out = Path(out) if out else default_archive(profile)
    if out.is_file() and out.read_bytes() == data:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out, "wb") as f:
        f.write(data)
    return out


def restore(archive: str | os.PathLike, results_root: str | os.PathLike = "results") -> list[Path]:
    """Unpack `archive` under `results_root`, skipping runs that are already there; returns the runs added."""
    archive = Path(archive)
    if not archive.is_file():
        raise FileNotFoundError(f"no snapshot at {archive}: the committed demo runs are figures/demo/results.tar.gz "
                                "(in a clone of the repository; `make demo` writes it)")
    root = Path(results_root)
    added: set[Path] = set()
    with tarfile.open(archive, "r:gz") as tar:
        entries = tar.getmembers()
        for m in entries:
            parts = Path(m.name).parts
            if not m.isfile() or len(parts) != 5 or ".." in parts or Path(m.name).is_absolute():
                raise ValueError(f"unexpected member {m.name!r} in {archive}: not <profile>/<dataset>/<loss>/seed<k>/<file>")
        for m in entries:
            run = root / Path(m.name).parent
            if not (run / "summary.json").exists():  # a run trained here wins over the snapshot
                added.add(run)
        for m in entries:
            if root / Path(m.name).parent in added:
                tar.extract(m, root, filter="data")
    return sorted(added)
