"""The on-disk feature cache: a key per (backbone spec, dataset, content options, split).

``<cache_dir>/<dataset>/<split>__<backbone>__<hash>.pt`` holds ``{"X", "y", "key", "sha256"}``,
with a ``.json`` sidecar listing the key fields. ``cache_dir`` defaults to ``$VGCORE_CACHE``, else
``./cache``. Writes are atomic (temporary file + ``os.replace``) and serialised by a lock per entry
(``.<file>.lock``), so a killed extraction never leaves a corrupt cache file, two processes never
extract the same features at once, and the next writer deletes what a killed one left. ``sha256`` is
the content hash of ``X`` and ``y``, checked on every load: a file that fails to load, or whose
content does not match its hash (bit rot, an edit, a cache written before hashes were recorded), is
recomputed with a warning naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from vgcore.features.backbone import BackboneSpec
from vgcore.io import atomic_save_tensor, atomic_write_json, file_lock, lock_path, remove_orphans

CACHE_FORMAT = 1  # bump when the cache layout or the extraction code changes what is stored


def default_cache_dir() -> Path:
    """``$VGCORE_CACHE`` if set, else ``./cache``."""
    return Path(os.environ.get("VGCORE_CACHE") or "cache").expanduser()


def cache_key(
    spec: BackboneSpec, dataset: str, split: str, options: dict[str, Any]
) -> dict[str, Any]:
    """Every field that determines the cached features (and nothing that does not)."""
    return {
        "format": CACHE_FORMAT,
        **spec.key(),
        "dataset": dataset,
        "dataset_options": dict(sorted(options.items())),
        "split": split,
    }


def _canonical(key: dict[str, Any]) -> str:
    return json.dumps(key, sort_keys=True, separators=(",", ":"), default=str)


def _digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical(key).encode()).hexdigest()[:16]


def cache_path(key: dict[str, Any], cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the features for ``key`` live (the ``.json`` sidecar sits next to it)."""
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return base / key["dataset"] / f"{key['split']}__{key['backbone']}__{_digest(key)}.pt"


def content_hash(X: torch.Tensor, y: torch.Tensor) -> str:
    """sha256 of the features' and labels' dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for t in (X, y):
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(memoryview(t.contiguous().numpy()).cast("B"))
    return h.hexdigest()


def load_cached(path: Path, key: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The cached ``(X, y)`` when the file loads, holds `key` and matches its content hash; else None
    (a warning names a file whose content does not match)."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if blob.get("key") != _canonical(key):
            return None
        X, y = blob["X"], blob["y"]
        if X.dtype != torch.float32 or y.dtype != torch.int64 or X.shape[0] != y.shape[0]:
            return None
    except Exception:  # truncated or foreign file: recompute and overwrite
        return None
    if blob.get("sha256") != content_hash(X, y):
        reason = "has no content hash (written by an older vgcore)" if "sha256" not in blob else \
            "does not match its content hash (corrupt or edited)"
        warnings.warn(f"feature cache {path} {reason}: recomputing it", stacklevel=3)
        return None
    return X, y


@contextmanager
def entry_lock(path: Path):
    """The lock of one cache entry: held while it is checked, computed and written."""
    with file_lock(lock_path(path), what=f"feature cache {path}",
                   log=lambda m: print(m, flush=True)):
        for name in (path.name, path.with_suffix(".json").name):  # what a killed writer left
            remove_orphans(path.parent, name)
        yield


def save(path: Path, key: dict[str, Any], X: torch.Tensor, y: torch.Tensor, **info: Any) -> None:
    """Write the features (with their content hash) and their sidecar (the key, sizes and ``info``), each atomically."""
    digest = content_hash(X, y)
    atomic_save_tensor({"X": X, "y": y, "key": _canonical(key), "sha256": digest}, path)
    atomic_write_json(path.with_suffix(".json"), {
        **key, "file": path.name, "n": int(X.shape[0]), "feature_dim": int(X.shape[1]), "sha256": digest, **info,
        "torch": torch.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
