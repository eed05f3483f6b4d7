"""What every backbone shares: preprocessing, the spec that keys its features, and its entry.

A backbone is one file in this package declaring ``SPEC = Backbone(name, spec, build)``: ``spec(**options)``
resolves its options (``resolution``, ``weights``) into a :class:`BackboneSpec` (everything that
determines its features, hence the cache key), and ``build(spec)`` makes the frozen network
(None for ``pixels``, which has none).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from vgcore.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's ImageNet weights (ViT-B/32)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BackboneUnavailableError(UserError, RuntimeError):
    """The backbone's weights or code cannot be obtained. The message names the offline option."""


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


@dataclass(frozen=True)
class Backbone:
    """One frozen feature extractor: ``spec(**options)`` -> :class:`BackboneSpec`; ``build(spec)`` -> network."""

    name: str
    spec: Callable[..., BackboneSpec]
    build: Callable[[BackboneSpec], nn.Module] | None = None

    def check_options(self, options: dict[str, Any]) -> None:
        """ValueError naming the options that ``spec`` does not take (nothing is built)."""
        accepted = list(inspect.signature(self.spec).parameters)
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ValueError(f"unknown backbone option(s) {unknown} for {self.name!r}; it accepts: "
                             f"{', '.join(accepted) or 'none'}")


def weights_id(weights: str | None, default: str) -> str:
    if weights in (None, "default", default):
        return default
    if weights == "random":
        return "random"
    raise ValueError(f"weights must be None (pretrained) or 'random', got {weights!r}")
