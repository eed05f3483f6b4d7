"""Faults injected into real training, for the tests of what a run does when something goes wrong."""

from __future__ import annotations


def nan_loss_at_call(monkeypatch, loss: str, call: int) -> None:
    """Make every `loss` that training builds (``vgcore.train.learner.make_loss``) return NaN from its
    `call`-th forward (1-based), once; the other losses of a fused group are left as they are."""
    from vgcore.train import learner

    real = learner.make_loss

    def poisoned(name, *args, **kwargs):
        built = real(name, *args, **kwargs)
        if name != loss:
            return built
        calls = {"n": 0}
        forward = built.forward

        def nan_at_call(z, y):
            out = forward(z, y)
            calls["n"] += 1
            return out * float("nan") if calls["n"] == call else out

        built.forward = nan_at_call
        return built

    monkeypatch.setattr(learner, "make_loss", poisoned)
