"""Frozen feature extractors and the on-disk feature cache.

The paper trains only a projection head on top of a frozen backbone, so the backbone's features
are computed once per (backbone, weights, preprocessing, dataset, content options, split) and cached:

    X, y = features("efficientnet_lite0", "fashionmnist", "train", backbone_options={"resolution": 96})

Backbones (all frozen: ``eval()``, ``requires_grad=False``, run under ``torch.inference_mode``), one
file each, registered in :mod:`vgcore.registry`: ``vit_b_32`` (the paper's), ``efficientnet_lite0``
(pretrained and offline), ``pixels`` (the standardised input). The cache is :mod:`vgcore.features.cache`.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch
from torch import nn

from vgcore import data as _data
from vgcore import registry
from vgcore.device import resolve_device
from vgcore.features.backbone import Backbone, BackboneSpec, BackboneUnavailableError, Preprocess
from vgcore.features.cache import (
    cache_key,
    cache_path,
    default_cache_dir,
    entry_lock,
    load_cached,
    save,
)
from vgcore.features.extraction import extract

__all__ = [
    "BACKBONES",
    "Backbone",
    "BackboneSpec",
    "BackboneUnavailableError",
    "Preprocess",
    "backbone_spec",
    "build_backbone",
    "cache_key",
    "cache_path",
    "default_cache_dir",
    "features",
]

BACKBONES: tuple[str, ...] = registry.names("backbone")


def backbone_spec(name: str, **options: Any) -> BackboneSpec:
    """The spec of backbone ``name`` with its options (``resolution``, ``weights``) resolved.

    ``weights``: ``None`` for the pretrained default, or ``"random"`` (untrained, for tests of
    the architecture only). ``resolution``: input size; ViT-B/32 takes only 224.
    """
    entry: Backbone = registry.load("backbone", name)
    entry.check_options(options)
    return entry.spec(**options)


def build_backbone(spec: BackboneSpec | str, device: torch.device | str | None = None) -> nn.Module:
    """Instantiate a frozen backbone (eval mode, no gradients) on ``device`` (default: CUDA if available)."""
    if isinstance(spec, str):
        spec = backbone_spec(spec)
    entry: Backbone = registry.load("backbone", spec.name)
    if entry.build is None:
        raise ValueError(f"{spec.name!r} has no network to build")
    model = entry.build(spec)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(resolve_device(device))


def features(
    backbone: str,
    dataset: str,
    split: str,
    root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    backbone_options: dict[str, Any] | None = None,
    dataset_options: dict[str, Any] | None = None,
    device: torch.device | str | None = None,
    batch_size: int = 256,
    progress: bool = True,
    recompute: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features ``X`` (float32 ``[N, D]``) and labels ``y`` (int64 ``[N]``) of one split.

    Computed once, then loaded from ``cache_dir`` (memory-mapped: well under a second). The
    cache key holds the backbone spec (weights, preprocessing: ``backbone_options``), the dataset
    with its declared content options (``dataset_options``, defaults filled in) and the split; any
    change recomputes. ``recompute=True`` ignores an existing cache file.
    """
    spec = backbone_spec(backbone, **(backbone_options or {}))
    split = _data.canonical_split(split)
    dataset_options = dict(dataset_options or {})
    key = cache_key(spec, dataset, split, _data.content_options(dataset, **dataset_options))
    path = cache_path(key, cache_dir)
    existed = path.is_file()
    if not recompute and existed:
        cached = load_cached(path, key)
        if cached is not None:
            return cached
    with entry_lock(path):  # one extraction per entry at a time; cleans what a killed one left
        if not recompute and not existed and path.is_file():  # written by another process meanwhile
            cached = load_cached(path, key)
            if cached is not None:
                return cached
        return _compute(spec, dataset, split, root, path, key, dataset_options, device, batch_size, progress)


def _compute(spec, dataset, split, root, path, key, dataset_options, device, batch_size, progress):
    t0 = time.perf_counter()
    dev = resolve_device(device)
    model = None if spec.name == "pixels" else build_backbone(spec, dev)  # fail fast
    data_split = _data.load_dataset(dataset, root, split, **dataset_options)
    if model is None:
        from vgcore.features.pixels import standardise

        train = data_split if split == "train" else _data.load_dataset(dataset, root, "train", **dataset_options)
        X = standardise(data_split, train)
    else:
        X = extract(model, spec, data_split, device=dev, batch_size=batch_size, progress=progress)
    y = data_split.labels.clone()
    save(path, key, X, y, num_classes=len(data_split.class_names), class_names=data_split.class_names,
         seconds=round(time.perf_counter() - t0, 3), device=str(dev))
    return X, y
