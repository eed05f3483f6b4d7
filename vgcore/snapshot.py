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

A variant's snapshot also holds its ``variant.json``. The executed ``02_train.ipynb`` of each run is
left out. The archive is deterministic (sorted
members, zero mtimes, fixed owner, no volatile field), so rebuilding it from runs with the same
numbers gives the same bytes, and :func:`write` leaves an existing file with the same content
untouched: git sees a change only when a number does.

:func:`restore` trusts nothing in an archive: it unpacks only what a run holds (:data:`RESTORED`
at the run layout of a known profile, dataset and loss, and a variant's ``variant.json``), at most
:data:`MAX_MEMBER_BYTES` a member and :data:`MAX_TOTAL_BYTES` in all, and puts a run in place only
once it passes the check of :func:`vgcore.results.collect`; anything else refuses the archive
before a run lands.

    python -m vgcore snapshot write  --results results --profile demo    # -> figures/demo/results.tar.gz
    python -m vgcore snapshot restore figures/demo/results.tar.gz --results results   # = make restore
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import math
import os
import re
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from vgcore import registry, results
from vgcore.config import PROFILES
from vgcore.errors import UserError
from vgcore.io import atomic_open, file_lock, lock_path, remove_orphans

FILES = ("config.json", "summary.json", "epochs.csv", "steps.csv")
EMBEDDINGS = "embeddings.npz"
RESTORED = (*results.RUN_FILES, "summary.json")
"""The files of a run that :func:`restore` unpacks (and a variant's ``variant.json``)."""
MAX_MEMBER_BYTES = 64 << 20
"""The most one member of an archive may unpack to in :func:`restore` (the demo's largest: 0.12 MB)."""
MAX_TOTAL_BYTES = 256 << 20
"""The most an archive may unpack to in all in :func:`restore` (the demo's: 3 MB)."""
MAX_STEP_ROWS = 60
"""At most this many rows of ``steps.csv`` per run in the snapshot (the 04 figures draw 60 bins)."""
VOLATILE = {"wall_time_s": None, "eval_time_s": None, "steps_per_s": None, "git": {"commit": None, "dirty": None}}
"""Summary fields that change on every rebuild without changing a number, and their snapshot value."""


class SnapshotError(UserError, ValueError):
    """An archive that :func:`restore` refuses; the message names the member or the run."""


class SnapshotNotFoundError(UserError, FileNotFoundError):
    """No archive where :func:`restore` was pointed."""


class SnapshotWriteError(UserError, OSError):
    """A snapshot or a restored run that could not be written (full disk, no permission); the message
    names the file and the fix."""


def default_archive(profile: str, figures_root: str | os.PathLike = "figures") -> Path:
    return Path(figures_root) / profile / "results.tar.gz"


def _complete_runs(results_root: Path, profile: str, variant: str | None = None) -> list[Path]:
    """The profile's own runs (or one variant's), each checked to be current and intact (vgcore.results.check_run)."""
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
    if variant is not None:  # what the variant overrides: its runs are checked against it
        record = runs[0].parents[2] / "variant.json"
        out[record.relative_to(root).as_posix()] = record.read_bytes()
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
    path. An existing archive with the same bytes is left untouched (not even its mtime changes); what a
    killed write left beside it (``.tmp-<name>.*``) is removed."""
    data = archive_bytes(members(results_root, profile, variant))
    out = Path(out) if out else default_archive(profile)
    try:
        remove_orphans(out.parent, out.name)
        if out.is_file() and out.read_bytes() == data:
            return out
        with atomic_open(out, "wb") as f:
            f.write(data)
    except OSError as err:
        fix = "free some space on its disk" if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else \
            "make its folder writable"
        raise SnapshotWriteError(f"cannot write {out}: {err.strerror or err}; {fix}, or write it elsewhere "
                                 "with --out FILE") from None
    return out


def restore(archive: str | os.PathLike, results_root: str | os.PathLike = "results", *,
            max_member_bytes: int = MAX_MEMBER_BYTES, max_total_bytes: int = MAX_TOTAL_BYTES, log=None) -> list[Path]:
    """Put the runs of `archive` under `results_root`; returns those put in place.

    The archive is read whole first: a member that is not a file a run holds (:func:`_run_of`), over
    `max_member_bytes`, or past `max_total_bytes` in all, refuses it before anything is written
    (SnapshotError naming the member). Its runs are unpacked into a staging folder and each checked
    as :func:`vgcore.results.collect` does; one that fails refuses the archive, no run landing. Then
    each run goes in place: a run already there that passes the check is kept (a run trained here
    wins), one that fails it is replaced (a stale one first moved to its variant folder, as a sweep
    does; `log` is told).
    """
    archive = Path(archive)
    if not archive.is_file():
        raise SnapshotNotFoundError(f"no snapshot at {archive}: the committed demo runs are "
                                    "figures/demo/results.tar.gz (in a clone of the repository; `make demo` writes it)")
    files = _read_members(archive, max_member_bytes, max_total_bytes)
    root = Path(results_root)
    try:
        return _put_in_place(files, archive, root, log or (lambda message: None))
    except OSError as err:
        where = f" ({err.filename})" if err.filename else ""
        raise SnapshotWriteError(f"cannot write under {root}: {err.strerror or err}{where}; restore into a folder "
                                 "you can write: --results DIR") from None


def _read_members(archive: Path, max_member_bytes: int, max_total_bytes: int) -> dict[str, bytes]:
    """Archive path -> content of every member, each checked (name, type, size) before it is read."""
    files: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for m in tar:  # one header at a time: an oversized member is refused before it is unpacked
                if not m.isfile() or _run_of(m.name) is None and _variant_of(m.name) is None:
                    raise SnapshotError(f"unexpected member {m.name!r} in {archive}: a snapshot holds only "
                                        f"<profile>/[variants/<name>/]<dataset>/<loss>/seed<k>/<file> of a known "
                                        f"profile, dataset and loss, <file> one of {', '.join(RESTORED)}")
                total += m.size
                if m.size > max_member_bytes:
                    raise SnapshotError(f"{archive}: member {m.name} holds {m.size} bytes, over the limit of "
                                        f"{max_member_bytes} a member (max_member_bytes); a snapshot's files are "
                                        "small: this is not a vgcore snapshot")
                if total > max_total_bytes:
                    raise SnapshotError(f"{archive} unpacks to more than {max_total_bytes} bytes in all (at member "
                                        f"{m.name}; max_total_bytes); a snapshot is small: this is not a vgcore snapshot")
                files[m.name] = tar.extractfile(m).read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise SnapshotError(f"{archive} is not a readable .tar.gz ({err}); fetch or write it again") from None
    runs = {_run_of(name) for name in files} - {None}
    for name in files:
        variant = _variant_of(name)
        if variant is not None and not any(run.startswith(f"{variant}/") for run in runs):
            raise SnapshotError(f"unexpected member {name!r} in {archive}: the record of a variant it holds no "
                                "run of")
    return files


def _run_of(name: str) -> str | None:
    """The run folder of archive member `name` (``<profile>/[variants/<name>/]<dataset>/<loss>/seed<k>``)
    when `name` is a file a run holds (:data:`RESTORED`) of a known profile, dataset and loss; else None."""
    parts = name.split("/")
    cell = [parts[0], *parts[3:]] if len(parts) == 7 and _is_variant(parts[:3]) else parts
    if (len(cell) == 5 and cell[0] in PROFILES and cell[1] in registry.names("dataset")
            and cell[2] in registry.names("loss") and re.fullmatch(r"seed(0|[1-9][0-9]*)", cell[3])
            and cell[4] in RESTORED):
        return "/".join(parts[:-1])
    return None


def _variant_of(name: str) -> str | None:
    """The variant folder ``<profile>/variants/<name>`` when archive member `name` is its ``variant.json``; else None."""
    parts = name.split("/")
    return "/".join(parts[:3]) if len(parts) == 4 and parts[3] == "variant.json" and _is_variant(parts[:3]) else None


def _is_variant(parts: list[str]) -> bool:
    """Whether `parts` name a variant folder: a known profile, ``variants``, a valid variant name."""
    try:
        return parts[0] in PROFILES and parts[1] == results.VARIANTS and bool(results.variant_name({}, parts[2]))
    except ValueError:
        return False


def _put_in_place(files: dict[str, bytes], archive: Path, root: Path, log) -> list[Path]:
    """Stage and check the archive's runs, then put each in place (see :func:`restore`)."""
    root.mkdir(parents=True, exist_ok=True)
    placed = []
    with file_lock(lock_path(root / "restore"), what=f"restore into {root}"):
        remove_orphans(root, "restore")  # what a killed restore left
        staging = Path(tempfile.mkdtemp(prefix=".tmp-restore.", dir=root))
        try:
            for name, data in files.items():
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                (staging / name).write_bytes(data)
            runs = sorted({_run_of(name) for name in files} - {None})
            summaries = {}
            for run in runs:
                try:
                    summaries[run] = results.check_run(staging / run)
                except (results.RunIntegrityError, results.StaleRunError) as err:
                    raise SnapshotError(f"{str(err).replace(f'{staging}/', f'{archive}: ')}. Nothing was restored: "
                                        "write the snapshot again (python -m vgcore snapshot write)") from None
            for run in runs:
                target = root / run
                with results.run_lock(target):
                    try:
                        results.check_run(target)
                        continue  # an intact run here wins
                    except results.StaleRunError as err:
                        if results.overrides_of(results.read_summary(target)["config"]):
                            log(f"moved the stale run {target} to {results.set_aside(target)}")
                        else:  # the profile's own config made by older code: a sweep would replace it too
                            log(f"replacing {target}: {err}")
                            shutil.rmtree(target)
                    except results.RunIntegrityError as err:
                        if target.exists():
                            log(f"replacing {target}: {err}")
                            shutil.rmtree(target)
                    results._record_variant(target, summaries[run]["config"])
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.rename(staging / run, target)
                placed.append(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return placed
