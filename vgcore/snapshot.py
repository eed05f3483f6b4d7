"""A compact copy of a profile's runs, committed beside its figures, for places that train nothing.

Binder (CPU-only, small) and Colab start the analysis notebooks (03-06) from the committed demo
results rather than from training: ``figures/<profile>/results.tar.gz`` holds, for every complete
run, what those notebooks read (``config.json``, ``summary.json``, ``epochs.csv``, ``steps.csv``)
and the final embeddings of the lowest seed (the PCA panels of 03_variance). Restoring it under
``results/`` gives the notebooks the same tables the build drew the committed figures from; the
executed ``02_train.ipynb`` of each run is left out.

The archive is deterministic (sorted members, zero mtimes, fixed owner), so rebuilding it from the
same runs leaves the committed file unchanged.

    python -m vgcore snapshot write  --results results --profile demo    # -> figures/demo/results.tar.gz
    python -m vgcore snapshot restore figures/demo/results.tar.gz --results results
"""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

from vgcore.io import atomic_open

FILES = ("config.json", "summary.json", "epochs.csv", "steps.csv")
EMBEDDINGS = "embeddings.npz"


def default_archive(profile: str, figures_root: str | os.PathLike = "figures") -> Path:
    return Path(figures_root) / profile / "results.tar.gz"


def _complete_runs(results_root: Path, profile: str) -> list[Path]:
    """The profile's own runs, each checked to be current and intact (vgcore.results.check_run)."""
    from vgcore import results

    runs = results.find_runs(results_root, profile)
    for run in runs:
        results.check_run(run)
    return runs


def write(results_root: str | os.PathLike, profile: str, out: str | os.PathLike | None = None) -> Path:
    """Write the snapshot of every complete own run of `profile` under `results_root` (variants are left
    out; a stale or corrupt run stops it, naming the run); returns its path."""
    root = Path(results_root)
    runs = _complete_runs(root, profile)
    if not runs:
        raise ValueError(f"no complete run of profile {profile!r} under {str(root)!r}")
    lowest_seed: dict[tuple[str, str], Path] = {}
    for run in runs:  # sorted, but seed10 < seed2 as text: compare numbers
        key = (run.parent.parent.name, run.parent.name)
        if key not in lowest_seed or int(run.name[4:]) < int(lowest_seed[key].name[4:]):
            lowest_seed[key] = run
    members = [run / name for run in runs for name in FILES if (run / name).exists()]
    members += [run / EMBEDDINGS for run in lowest_seed.values() if (run / EMBEDDINGS).exists()]
    out = Path(out) if out else default_archive(profile)
    out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(members):
            info = tarfile.TarInfo(path.relative_to(root).as_posix())
            data = path.read_bytes()
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    with atomic_open(out, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(buffer.getvalue())
    return out


def restore(archive: str | os.PathLike, results_root: str | os.PathLike = "results") -> list[Path]:
    """Unpack `archive` under `results_root`, skipping runs that are already there; returns the runs added."""
    root = Path(results_root)
    added: set[Path] = set()
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        for m in members:
            parts = Path(m.name).parts
            if not m.isfile() or len(parts) != 5 or ".." in parts or Path(m.name).is_absolute():
                raise ValueError(f"unexpected member {m.name!r} in {archive}: not <profile>/<dataset>/<loss>/seed<k>/<file>")
        for m in members:
            run = root / Path(m.name).parent
            if not (run / "summary.json").exists():  # a run trained here wins over the snapshot
                added.add(run)
        for m in members:
            if root / Path(m.name).parent in added:
                tar.extract(m, root, filter="data")
    return sorted(added)
