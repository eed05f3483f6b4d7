"""Running a built backbone over a split, with image decoding in a background thread."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from vgcore.data import Split
from vgcore.device import resolve_device
from vgcore.features.backbone import BackboneSpec


def prefetch(it: Iterable, depth: int = 2) -> Iterator:
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


def extract(
    model: nn.Module,
    spec: BackboneSpec,
    split: Split,
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
    dev = resolve_device(device)
    out = torch.empty(len(split), spec.dim, dtype=torch.float32)
    i = 0
    desc = f"{spec.name} {split.dataset}/{split.split}"
    with (
        torch.inference_mode(),
        tqdm(total=len(split), unit="img", desc=desc, disable=not progress) as bar,
    ):
        for images, _ in prefetch(split.batches(batch_size)):
            x = spec.preprocess(images, dev)
            f = model(x).float()
            out[i : i + len(f)] = f.cpu()
            i += len(f)
            bar.update(len(f))
    return out
