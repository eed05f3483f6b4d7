"""The one results schema: where a run lives, how it is written, how many runs are read back.

Where. A run whose config is its profile's own config for that cell lives in
``<root>/<profile>/<dataset>/<loss>/seed<k>/``. Any other run (an override, or a profile edited since)
is a *variant* and lives in ``<root>/<profile>/variants/<name>/<dataset>/<loss>/seed<k>/``, where
``<name>`` is a tag the user chose or the digest of how the run differs from its profile (its
``overrides``, recorded in ``summary.json`` and, per dataset, in ``variants/<name>/variant.json``;
a tag holds one set of overrides per dataset).
So no override can replace, or mix with, another config's runs.

What. A run directory holds:

- ``config.json``     the RunConfig
- ``steps.csv``       one row per training step: STEP_COLUMNS
- ``epochs.csv``      one row per (evaluated epoch, split): EPOCH_COLUMNS (epoch 0 = untrained head;
                      MAP@R, R-precision and NMI only where ``RunConfig.full_eval_at``, NaN elsewhere),
                      and one per (progress step, ``progress/*`` split) at the log-spaced steps
                      (``step`` counts the training steps done)
- ``embeddings.npz``  final evaluation embeddings (float16), labels and superclass labels (where the
                      dataset has them), compressed
- ``summary.json``    final metrics, convergence epochs, wall time, versions, the config and its
                      resolved identity (vgcore.identity: defaults filled in, numerics versions)
                      with their hash, overrides, the size and sha256 of every file above, and its
                      own seal (``summary_sha256``: the sha256 of the rest of it); written last
- ``failure.json``    only when the run stopped on an error (then there is no summary.json)

How. A run is trained in a hidden sibling ``.tmp-seed<k>.*`` and swapped into place only once it is
complete, under a per-run lock (``.seed<k>.lock`` beside it), so a failing, killed or concurrent
run never deletes a complete one; what a killed run left is cleaned (or, if complete, finished) by
the next writer. A run is complete when ``summary.json`` exists and its seal holds; it is current for
a config when it also records that config's identity hash (the config and what the code resolves for
it now) and :data:`SCHEMA_VERSION`, and its files match their recorded hashes.

Reading. :func:`collect` returns a profile's own runs (or one variant's), after checking that each
still is what its place says (same config as the profile gives now, same resolved identity as the
code gives now, current schema) and that its files and its summary are intact;
a stale or corrupt run is refused naming the run and the differing keys or the bad file
(``errors="skip"``: left out with a warning).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from vgcore.config import (
    CELL_KEYS,
    RunConfig,
    describe_diff,
    flat_diff,
    get_profile,
    identity_hash,
    set_dotted,
)
from vgcore.errors import UserError
from vgcore.io import (
    atomic_open,
    atomic_write_json,
    file_digest,
    file_lock,
    lock_path,
    plain_json,
    remove_orphans,
)
from vgcore.metrics.greediness import GREEDINESS_KEYS
from vgcore.metrics.hierarchy import HIERARCHY_KEYS
from vgcore.metrics.retrieval import RETRIEVAL_KEYS
from vgcore.metrics.variance import VARIANCE_KEYS

RUN_ID_COLUMNS = ("profile", "dataset", "backbone", "loss", "seed")
STEP_COLUMNS = ("step", "epoch", "train_loss", *GREEDINESS_KEYS)
EPOCH_COLUMNS = ("epoch", "step", "split", "train_loss", *VARIANCE_KEYS, *RETRIEVAL_KEYS, *HIERARCHY_KEYS)
PROBE_COLUMNS = ("batch", "fraction", "epoch", "batch_loss", *GREEDINESS_KEYS)
"""The ``probes`` table's columns: a run's readings on the fixed probe batches (``summary["probes"]``,
:mod:`vgcore.train.probes`), the batch's loss as ``batch_loss``."""
TABLES = ("epochs", "steps", "summary", "probes")
PROGRESS = "progress/"
"""Prefix of the epochs.csv splits evaluated at the log-spaced progress steps
(:func:`vgcore.metrics.convergence.progress_grid`), e.g. ``progress/validation``."""

SCHEMA_REVISION = 5
"""Bumped by hand when a column changes meaning. 2: steps.csv gained ``grad_effective_share``.
3: ``nmi`` from the torch k-means on the training device; ``map@r``, ``r_precision`` and ``nmi`` in
epochs.csv only at full-evaluation epochs (the final one by default), NaN at the others.
4: summary.json records the resolved identity (``resolved``) and is sealed (``summary_sha256``).
5: epochs.csv gained ``step`` and the ``progress/*`` splits (log-spaced steps), steps.csv
``adam_step_norm_mean``; summary ``val_convergence_step`` and ``early_intra_var``."""
SCHEMA_VERSION = f"{SCHEMA_REVISION}." + hashlib.sha256(
    json.dumps([STEP_COLUMNS, EPOCH_COLUMNS]).encode()).hexdigest()[:8]
"""Version of the files below: the revision and a digest of the column names, so that a run written
before a column was added (a new metric) or changed meaning counts as stale and is rerun."""


SEAL = "summary_sha256"
"""The key of ``summary.json`` that holds the sha256 of the rest of it (:func:`seal`)."""

VARIANTS = "variants"
"""The folder of a profile's variant runs: ``<root>/<profile>/variants/<name>/``."""
RUN_FILES = ("config.json", "steps.csv", "epochs.csv", "embeddings.npz")
"""The files ``summary.json`` records (size and sha256); ``embeddings.npz`` may be left out of a
snapshot, the others must be there."""
_OPTIONAL_FILES = ("embeddings.npz",)
_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]{0,63}")


class RunIntegrityError(UserError, ValueError):
    """A run's file is unreadable, missing or not what summary.json recorded; the message names it."""


class StaleRunError(UserError, ValueError):
    """A run was trained with another config than its place stands for; the message names the keys."""


class VariantConflictError(UserError, ValueError):
    """A tag already names a variant with other settings."""


# --- where a run lives --------------------------------------------------------------------------

def own_run_dir(root: str | os.PathLike, profile: str, dataset: str, loss: str, seed: int,
                variant: str | None = None) -> Path:
    """``<root>/<profile>/<dataset>/<loss>/seed<k>``: where a profile's own run of a cell lives (with
    `variant`, a tag or digest: that variant's run, under ``<profile>/variants/<variant>/``)."""
    base = Path(root) / profile
    if variant is not None:
        base = base / VARIANTS / variant_name({}, variant)
    return base / dataset / loss / f"seed{int(seed)}"


def profile_config(config: RunConfig | dict) -> dict[str, Any]:
    """The config (as a dict) that the run's profile gives for the run's cell now (for a profile
    without a complete config of its own, such as ``custom``, whose file is always an override: its
    settings as given)."""
    values = config.to_dict() if isinstance(config, RunConfig) else config
    profile = get_profile(values["profile"])
    cell = (values["dataset"], values["loss"], int(values["seed"]))
    try:
        return profile.config(*cell).to_dict()
    except UserError:
        return profile.cell(*cell)


def overrides_of(config: RunConfig | dict) -> dict[str, Any]:
    """How a run's config differs from its profile's config of the same cell, as dotted keys
    (``{"epochs": 40, "loss_params.margin": 0.3}``); empty for a profile's own run."""
    values = config.to_dict() if isinstance(config, RunConfig) else config
    return flat_diff(values, profile_config(values))


def variant_name(overrides: dict[str, Any], tag: str | None = None) -> str:
    """`tag`, or the first 12 hex digits of the sha256 of the overrides' canonical JSON."""
    if tag is not None:
        if not isinstance(tag, str) or not _TAG.fullmatch(tag):
            raise ValueError(f"tag {tag!r} is not a folder name: use letters, digits and . _ + = - "
                             "(at most 64, e.g. --tag margin0.3)")
        return tag
    return hashlib.sha256(_canonical(overrides).encode()).hexdigest()[:12]


def run_dir(root: str | os.PathLike, config: RunConfig, tag: str | None = None) -> Path:
    """Where `config`'s run lives under `root`: its profile's own folder when its config is the
    profile's, else ``<profile>/variants/<tag or digest>/<dataset>/<loss>/seed<k>``."""
    overrides = overrides_of(config)
    if not overrides:
        return own_run_dir(root, config.profile, config.dataset, config.loss, config.seed)
    return (Path(root) / config.profile / VARIANTS / variant_name(overrides, tag) / config.dataset / config.loss
            / f"seed{config.seed}")


def check_variant(root: str | os.PathLike, config: RunConfig, tag: str | None = None) -> Path | None:
    """The variant folder of `config` (None for a profile's own run), after checking that its
    ``variant.json`` records no other settings for the config's dataset (VariantConflictError naming
    the differing keys: a tag holds one set of overrides per dataset). Writes nothing."""
    overrides = overrides_of(config)
    if not overrides:
        return None
    folder = Path(root) / config.profile / VARIANTS / variant_name(overrides, tag)
    _check_record(folder, config.dataset, overrides)
    return folder


def _check_record(folder: Path, dataset: str, overrides: dict) -> dict:
    record_path = folder / "variant.json"
    record = _read_json(record_path) if record_path.exists() else {"overrides": {}}
    known = record["overrides"].get(dataset)
    if known is not None and _canonical(known) != _canonical(overrides):
        raise VariantConflictError(
            f"variant {folder.name!r} ({folder}) holds {dataset} runs with {describe_diff(known)}; this run has "
            f"{describe_diff(overrides)} (differing keys: {', '.join(sorted(_differing(known, overrides)))}). "
            "Choose another --tag.")
    return record


def _record_variant(path: Path, config: dict) -> None:
    """Record in ``variants/<name>/variant.json`` what the variant run at `path` overrides, per dataset
    (VariantConflictError when it records other settings)."""
    if len(path.parts) < 6 or path.parts[-5] != VARIANTS:
        return
    folder, overrides = path.parents[2], overrides_of(config)
    with file_lock(lock_path(folder), what=f"variant {folder}"):
        record = _check_record(folder, config["dataset"], overrides)
        if config["dataset"] not in record["overrides"]:
            tag = None if folder.name == variant_name(overrides) else folder.name
            record = {"profile": config["profile"], "name": folder.name, "tag": tag,
                      "overrides": {**record["overrides"], config["dataset"]: overrides}}
            atomic_write_json(folder / "variant.json", record)


# --- reading one run ----------------------------------------------------------------------------

def seal(summary: dict) -> dict:
    """`summary` as JSON values with :data:`SEAL` set to the sha256 of its canonical JSON without it."""
    body = plain_json({k: v for k, v in summary.items() if k != SEAL})
    return {**body, SEAL: _seal_digest(body)}


def _seal_digest(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def read_summary(path: str | os.PathLike) -> dict | None:
    """The run's ``summary.json`` (None when there is none); RunIntegrityError naming it when
    unreadable or when its seal (:data:`SEAL`, where recorded) does not match its content."""
    file = Path(path) / "summary.json"
    if not file.is_file():
        return None
    summary = _read_json(file)
    if not isinstance(summary, dict):
        raise RunIntegrityError(f"{file} holds no JSON object; rerun the run or restore it")
    if SEAL in summary and summary[SEAL] != _seal_digest({k: v for k, v in summary.items() if k != SEAL}):
        raise RunIntegrityError(f"{file} was edited after the run wrote it (its content no longer matches its "
                                f"{SEAL}); rerun the run or restore it")
    return summary


def is_complete(path: str | os.PathLike, config_hash: str | None = None) -> bool:
    """True when ``summary.json`` exists and reads (and, if a hash is given, records the same config
    hash and the current :data:`SCHEMA_VERSION`; a summary without a version is version 1)."""
    try:
        recorded = read_summary(path)
    except RunIntegrityError:
        return False
    if recorded is None:
        return False
    if config_hash is None:
        return True
    return recorded.get("config_hash") == config_hash and recorded.get("schema_version", 1) == SCHEMA_VERSION


def is_current(path: str | os.PathLike, config_hash: str) -> bool:
    """Complete for `config_hash` (see :func:`is_complete`) with every recorded file intact: what a
    sweep skips and the build reuses."""
    if not is_complete(path, config_hash):
        return False
    try:
        check_files(path, read_summary(path), required=RUN_FILES)
    except RunIntegrityError:
        return False
    return True


def file_records(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """``{name: {"bytes": size, "sha256": digest}}`` of the run files present in `path`."""
    path = Path(path)
    return {name: {"bytes": (path / name).stat().st_size, "sha256": file_digest(path / name)}
            for name in RUN_FILES if (path / name).is_file()}


def check_files(path: str | os.PathLike, summary: dict, required: Iterable[str] = ("config.json",)) -> None:
    """Check the run's files against the sizes and hashes its summary recorded.

    RunIntegrityError naming the first file that is missing (only those in `required`, and
    ``steps.csv``/``epochs.csv`` always) or differs. A summary written before hashes were recorded
    has nothing to check against.
    """
    path = Path(path)
    records = summary.get("files")
    if records is None:
        return
    must = set(required) | (set(RUN_FILES) - set(_OPTIONAL_FILES))
    for name, record in records.items():
        file = path / name
        if not file.is_file():
            if name in must:
                raise RunIntegrityError(f"{file} is missing (summary.json records it); rerun the run or restore it")
            continue
        size = file.stat().st_size
        if size != record["bytes"] or file_digest(file) != record["sha256"]:
            raise RunIntegrityError(
                f"{file} is corrupt: {size} bytes and another sha256 than the {record['bytes']} bytes summary.json "
                "recorded (truncated or edited); rerun the run or restore the file")


def load_run(path: str | os.PathLike) -> dict[str, Any]:
    """config, steps, epochs, summary (None if incomplete), embeddings ``(z, y)`` and ``coarse``
    (superclass labels or None) of one run directory; the files of a complete run are checked against
    its summary first (RunIntegrityError naming one)."""
    path = Path(path)
    summary = read_summary(path)
    if summary is not None:
        check_files(path, summary)
    out: dict[str, Any] = {"config": _read_json(path / "config.json")}
    out["steps"] = _read_csv(path / "steps.csv") if (path / "steps.csv").exists() else None
    out["epochs"] = _read_csv(path / "epochs.csv") if (path / "epochs.csv").exists() else None
    out["summary"] = summary
    if (path / "embeddings.npz").exists():
        with np.load(path / "embeddings.npz") as npz:
            out["embeddings"] = (npz["z"].astype(np.float32), npz["y"])
            out["coarse"] = npz["coarse"] if "coarse" in npz.files else None
    return out


# --- writing one run ----------------------------------------------------------------------------

@contextmanager
def run_lock(path: str | os.PathLike, timeout: float | None = None, log=None) -> Iterator[Path]:
    """Hold the lock of run directory `path` (``.<name>.lock`` beside it): one writer per run.

    Waits for another holder (telling `log` who it is), or after `timeout` seconds raises
    :class:`vgcore.io.LockBusyError` naming it. Also cleans what a killed writer of this run left.
    """
    path = Path(path)
    with file_lock(lock_path(path), what=f"run {path}", timeout=timeout, log=log):
        recover(path)
        yield path


def recover(path: str | os.PathLike) -> None:
    """Finish or clean what a killed writer of run `path` left (call it holding the run's lock).

    A writer is killed either while training (its hidden staging folder is incomplete: deleted) or
    in the middle of the swap (the old run moved to ``.old-*`` and the new complete one not yet in
    place: the new one is put in place, else the old one back).
    """
    path = Path(path)
    staged = sorted(path.parent.glob(f".tmp-{path.name}.*"))
    old = sorted(path.parent.glob(f".old-{path.name}.*"))
    if not path.exists():
        done = [s for s in staged if is_complete(s)]
        if done:
            os.rename(done[-1], path)
        elif old:
            os.rename(old[-1], path)
    remove_orphans(path.parent, path.name)
    for leftover in path.parent.glob(f".old-{path.name}.*"):
        shutil.rmtree(leftover, ignore_errors=True)


def start_run(path: str | os.PathLike, config) -> Path:
    """A fresh hidden staging folder beside run `path` with config.json in it; `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.parent / f".tmp-{path.name}.{secrets.token_hex(4)}"
    staging.mkdir()
    atomic_write_json(staging / "config.json", config.to_dict())
    return staging


def write_tables(path: str | os.PathLike, steps: pd.DataFrame, epochs: pd.DataFrame) -> None:
    """steps.csv and epochs.csv, in the schema's column order."""
    for name, frame, columns in (("steps.csv", steps, STEP_COLUMNS), ("epochs.csv", epochs, EPOCH_COLUMNS)):
        with atomic_open(Path(path) / name, "w") as f:
            frame.reindex(columns=columns).to_csv(f, index=False)


def write_embeddings(path: str | os.PathLike, z: np.ndarray, y: np.ndarray, coarse: np.ndarray | None = None) -> None:
    """``embeddings.npz``: ``z`` (float16), fine labels ``y`` and, for a dataset with superclasses, ``coarse``."""
    arrays = {"z": z.astype(np.float16), "y": y.astype(np.int64)}
    if coarse is not None:
        arrays["coarse"] = np.asarray(coarse).astype(np.int64)
    with atomic_open(Path(path) / "embeddings.npz", "wb") as f:
        np.savez_compressed(f, **arrays)


def embedding_sample(y: np.ndarray, coarse: np.ndarray | None = None, per_class: int = 50, max_classes: int = 10,
                     seed: int = 0) -> np.ndarray:
    """Sorted indices of the evaluation samples the embeddings figure draws (and the results
    snapshot keeps): with superclass labels, the fine classes of the lowest superclass (structure
    within one superclass); without, the first `max_classes` classes; at most `per_class` samples of
    each, drawn with a generator seeded by `seed`. A sample this returns gives itself back."""
    y = np.asarray(y)
    if len(y) == 0:
        return np.zeros(0, dtype=np.int64)
    if coarse is not None:
        coarse = np.asarray(coarse)
        classes = np.unique(y[coarse == coarse.min()])
    else:
        classes = np.unique(y)[:max_classes]
    rng = np.random.default_rng(seed)
    keep = []
    for c in classes:
        members = np.flatnonzero(y == c)
        if len(members) > per_class:
            members = rng.choice(members, per_class, replace=False)
        keep.append(members)
    return np.sort(np.concatenate(keep)).astype(np.int64)


def finish_run(staging: Path, path: str | os.PathLike, summary: dict) -> Path:
    """Record the files' hashes in `summary`, write summary.json into `staging`, put it in place.

    A complete run of another config already at `path` is first moved to its own variant folder
    (:func:`set_aside`); one of the same config (a rerun, an older schema, or one made under other
    resolved values: defaults or numerics versions of older code) is replaced. Call it holding the
    run's lock.
    """
    path = Path(path)
    summary = seal({**summary, "files": file_records(staging)})
    atomic_write_json(staging / "summary.json", summary)
    _record_variant(path, summary["config"])
    previous = _summary_or_none(path)
    if previous is not None and _canonical(previous.get("config")) != _canonical(summary["config"]):
        set_aside(path)
    _swap_in(staging, path)
    shutil.rmtree(failed_dir(path), ignore_errors=True)  # an earlier failed attempt is superseded
    return path


def keep_failed(staging: Path, path: str | os.PathLike, failure: dict) -> Path:
    """Write failure.json into `staging` and keep it where it harms nothing: at `path` when no
    complete run is there, else beside it in ``<name>.failed/``. Returns where it is."""
    path = Path(path)
    atomic_write_json(staging / "failure.json", failure)
    target = failed_dir(path) if is_complete(path) else path
    _swap_in(staging, target)
    return target


def failed_dir(path: str | os.PathLike) -> Path:
    """``<run>.failed``: where a failed attempt goes when a complete run is already at `path`."""
    path = Path(path)
    return path.with_name(path.name + ".failed")


def set_aside(path: str | os.PathLike, timeout: float = 0) -> Path:
    """Move the complete run at a profile's own `path`, trained with another config than the profile
    now gives, to its variant folder (``variants/<digest>/``); returns where it went.

    Call it holding `path`'s lock. A run of the same config already there makes this one a
    duplicate, which is dropped. RunIntegrityError when `path` is not a profile's own run folder.
    """
    path = Path(path)
    summary = _read_json(path / "summary.json")
    config = summary.get("config", {})
    root = path.parents[3] if len(path.parents) > 3 else None
    if root is None or not all(k in config for k in CELL_KEYS) or own_run_dir(
            root, config["profile"], config["dataset"], config["loss"], config["seed"]) != path:
        raise RunIntegrityError(f"{path} holds a complete run of another config; move it away or write elsewhere")
    overrides = overrides_of(config)
    if not overrides:
        raise RunIntegrityError(f"{path} holds a run of profile {config['profile']!r}'s own config: nothing to set aside")
    target = (root / config["profile"] / VARIANTS / variant_name(overrides) / config["dataset"] / config["loss"]
              / path.name)
    with run_lock(target, timeout=timeout):
        _record_variant(target, config)
        if is_complete(target, summary.get("config_hash")):
            shutil.rmtree(path)
        else:
            _swap_in(path, target)
    return target


def _swap_in(source: Path, target: Path) -> None:
    """Put folder `source` at `target`, replacing what is there; :func:`recover` finishes it if killed."""
    if target.exists():
        old = target.parent / f".old-{target.name}.{secrets.token_hex(4)}"
        os.rename(target, old)
        os.rename(source, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(source, target)


# --- reading many runs --------------------------------------------------------------------------

def find_runs(root: str | os.PathLike, profile: str, variant: str | None = None) -> list[Path]:
    """Run folders with a summary.json: a profile's own runs, or those of one of its variants."""
    base = Path(root) / profile
    if variant is not None:
        base = base / VARIANTS / variant_name({}, variant)
    found = sorted(p.parent for p in base.glob("*/*/seed*/summary.json"))
    return [p for p in found if variant is not None or p.parts[-3] != VARIANTS]


def variants(root: str | os.PathLike, profile: str) -> dict[str, dict]:
    """``{name: variant.json}`` of a profile's variants under `root`."""
    folder = Path(root) / profile / VARIANTS
    return {p.parent.name: _read_json(p) for p in sorted(folder.glob("*/variant.json"))}


def check_run(path: str | os.PathLike, table: str | None = None) -> dict:
    """The summary of the run at `path` after checking it is what its place stands for.

    StaleRunError when its config is not the one its profile (plus, in a variant folder, the
    variant's recorded overrides) gives now, naming the differing keys; RunIntegrityError when a
    file is unreadable or differs from its recorded hash (`table`'s CSV must be there).
    """
    path = Path(path)
    summary = read_summary(path)
    if summary is None:
        raise RunIntegrityError(f"{path} has no summary.json: the run is incomplete")
    config = summary.get("config")
    if not isinstance(config, dict) or not all(k in config for k in CELL_KEYS):
        raise RunIntegrityError(f"{path / 'summary.json'} records no config; rerun the run")
    cell = (config["profile"], config["dataset"], config["loss"], f"seed{config['seed']}")
    parts = path.parts
    in_variant = len(parts) >= 6 and parts[-5] == VARIANTS
    tail = (parts[-6], *parts[-3:]) if in_variant else parts[-4:]
    if tuple(tail) != cell:
        raise StaleRunError(f"{path} holds the run of another cell ({'/'.join(map(str, cell))}); move it back")
    try:
        reference = profile_config(config)
    except ValueError as err:
        raise StaleRunError(f"{path} is stale: profile {config['profile']!r} no longer has its cell ({err})") from None
    actual = flat_diff(config, reference)
    expected: dict | None = {}
    if in_variant:
        record_path = path.parents[2] / "variant.json"
        record = _read_json(record_path) if record_path.exists() else {}
        expected = record.get("overrides", {}).get(config["dataset"])
        if expected is None and variant_name(actual) == parts[-4]:
            expected = actual  # a digest-named variant is keyed by its overrides
    if expected is None or _canonical(actual) != _canonical(expected):
        where = f"variant {parts[-4]!r} of profile {config['profile']!r}" if in_variant else f"profile {config['profile']!r}"
        wanted = set_dotted(reference, expected or {})
        raise StaleRunError(
            f"{path} is stale: it was trained with another config than {where} gives now (differing keys: "
            f"{describe_diff(flat_diff(config, wanted), wanted, there='now')}). Rerun it: `python -m vgcore sweep "
            f"--profile {config['profile']}` (or the notebook build) moves a stale run out of the profile's folder "
            "to its variant folder and retrains it; or leave it out with errors='skip'")
    check_identity(path, summary)
    required = ("config.json",) + ((f"{table}.csv",) if table in ("epochs", "steps") else ())
    check_files(path, summary, required=required)
    return summary


def check_identity(path: str | os.PathLike, summary: dict) -> None:
    """StaleRunError when the run at `path` was made under another results schema or another
    resolved identity than its config gets from the code now (a changed default, a bumped numerics
    version: vgcore.identity), naming what changed; RunIntegrityError when its summary is unsealed."""
    from vgcore.identity import differences, resolved

    path = Path(path)
    rerun = "Rerun it (`python -m vgcore sweep` or the notebook build retrains it), or leave it out with errors='skip'"
    version = summary.get("schema_version", 1)
    if version != SCHEMA_VERSION:
        raise StaleRunError(f"{path} is stale: it was written under results schema {version}, the code now writes "
                            f"{SCHEMA_VERSION}. {rerun}")
    if SEAL not in summary:
        raise RunIntegrityError(f"{path / 'summary.json'} carries no {SEAL}; rerun the run or restore it")
    config = summary["config"]
    if summary.get("config_hash") == identity_hash(config):
        return
    changed = differences(summary.get("resolved", {}), resolved(config))
    raise StaleRunError(f"{path} is stale: it was made under other values than the code gives its config now ("
                        f"{'; '.join(changed) or 'a config hash computed another way'}). {rerun}")


def collect(root: str | os.PathLike, table: str = "epochs", profile: str | None = None, *,
            variant: str | None = None, errors: str = "raise") -> pd.DataFrame:
    """The runs under `root` as one tidy DataFrame: every profile's own runs, or one profile's
    (``profile=``), or one of its variants (``variant=`` a tag or digest).

    table="epochs": EPOCH_COLUMNS per run and epoch and split; "steps": STEP_COLUMNS per step;
    "summary": one row per run with the final metrics; "probes": PROBE_COLUMNS per probe reading.
    Each row also carries RUN_ID_COLUMNS and ``config_hash``. Incomplete runs (no summary.json) are left out. Each run is checked
    (:func:`check_run`): a stale or corrupt one raises (``errors="raise"``) or is left out with a
    warning naming it (``errors="skip"``).
    """
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; choose one of: {', '.join(TABLES)}")
    if errors not in ("raise", "skip"):
        raise ValueError(f"errors must be 'raise' or 'skip', got {errors!r}")
    if variant is not None and profile is None:
        raise ValueError("a variant belongs to a profile: pass profile= with variant=")
    from vgcore.config import PROFILES

    root = Path(root)
    profiles = [profile] if profile else [p for p in PROFILES if (root / p).is_dir()]
    paths = []
    for name in profiles:
        get_profile(name)
        for path in find_runs(root, name, variant):
            try:
                check_run(path, table)
            except (RunIntegrityError, StaleRunError) as err:
                if errors == "raise":
                    raise
                warnings.warn(f"left out: {err}", stacklevel=2)
                continue
            paths.append(path)
    return runs_frame(paths, table)


def runs_frame(paths: Iterable[str | os.PathLike], table: str = "summary") -> pd.DataFrame:
    """The given complete runs as one DataFrame (the columns of :func:`collect`), in that order."""
    frames = []
    for path in map(Path, paths):
        summary = read_summary(path)
        if summary is None:
            raise RunIntegrityError(f"{path} has no summary.json: the run is incomplete")
        ids = {k: summary["config"][k] for k in RUN_ID_COLUMNS} | {"config_hash": summary["config_hash"]}
        if table == "probes":
            readings = pd.DataFrame(summary.get("probes", []), columns=["batch", "fraction", "epoch", "loss",
                                                                        *GREEDINESS_KEYS])
            frame = readings.rename(columns={"loss": "batch_loss"})[list(PROBE_COLUMNS)]
            for k, v in reversed(ids.items()):
                frame.insert(0, k, v)
        elif table == "summary":
            frame = pd.DataFrame([{**ids, **summary["final"], **summary["convergence"], **summary.get("untrained", {}),
                                   **summary["greediness_mean"], **_stop_columns(summary),
                                   "wall_time_s": summary.get("wall_time_s"),
                                   "steps_per_s": summary.get("steps_per_s")}])
        else:
            frame = _read_csv(path / f"{table}.csv")
            for k, v in reversed(ids.items()):
                frame.insert(0, k, v)
        frames.append(frame)
    columns = {"epochs": EPOCH_COLUMNS, "steps": STEP_COLUMNS, "probes": PROBE_COLUMNS}.get(table, ())
    if not frames:
        return pd.DataFrame(columns=[*RUN_ID_COLUMNS, "config_hash", *columns])
    return pd.concat(frames, ignore_index=True)


STOP_COLUMNS = ("best_epoch", "stop_epoch", "stopped_by", "converged", "best_val_map@r")
"""The summary table's columns of a run trained to convergence (``summary["stopping"]``,
:mod:`vgcore.train.stopping`); absent from a table of runs with a fixed number of epochs."""


def _stop_columns(summary: dict) -> dict:
    stopping = summary.get("stopping")
    return {} if stopping is None else {k: stopping[k] for k in STOP_COLUMNS}


def runs_digest(config_hashes: Iterable[str]) -> str:
    """12 hex digits naming a set of runs by their config hashes (order and repeats do not matter):
    what figure captions carry, so a figure can be matched to the runs it was drawn from."""
    return hashlib.sha256(",".join(sorted(set(map(str, config_hashes)))).encode()).hexdigest()[:12]


# --- helpers ------------------------------------------------------------------------------------

def _differing(a: dict, b: dict) -> set[str]:
    return {k for k in set(a) | set(b) if _canonical(a.get(k)) != _canonical(b.get(k))}


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _summary_or_none(path: Path) -> dict | None:
    try:
        return read_summary(path)
    except RunIntegrityError:
        return None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunIntegrityError(f"{path} is not valid JSON ({err}); it is truncated or corrupt: rerun the run "
                                "or restore the file") from None
    except FileNotFoundError:
        raise RunIntegrityError(f"{path} is missing") from None


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise RunIntegrityError(f"{path} cannot be read ({err}); it is truncated or corrupt") from None
