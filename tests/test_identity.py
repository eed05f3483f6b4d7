"""A run's identity (vgcore.identity): what decides its numbers, defaults and code versions included.

A run made under a loss default, an evaluation constant or a numerics version other than the code's
now is stale: the sweep retrains it, ``collect`` refuses it naming what changed. ``summary.json`` is
sealed, so an edited number is caught like an edited CSV. The fingerprint test keeps the declared
numerics versions honest (see :func:`test_numerics_versions_are_declared_with_the_numbers_they_make`).

Run ``python tests/test_identity.py --record`` after bumping a component's numerics version.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from vgcore import registry, results, train
from vgcore.config import get_profile
from vgcore.losses import make_loss
from vgcore.losses.triplet import TripletLoss

FINGERPRINTS = Path(__file__).with_name("numerics_fingerprints.json")


def _config(loss="triplet", **overrides):
    return get_profile("smoke").config("synthetic", loss, 0, **overrides)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real smoke run of the triplet loss (the profile's own config)."""
    root = tmp_path_factory.mktemp("results")
    config = _config()
    path = results.run_dir(root, config)
    train.run(config, path, cache_dir=root.parent / "cache", progress=False)
    return root, path


def _copy(trained, tmp_path):
    import shutil

    root, path = trained
    shutil.copytree(root, tmp_path / "results", ignore=shutil.ignore_patterns("*.lock"))
    return tmp_path / "results", tmp_path / "results" / path.relative_to(root)


def _margin_default(monkeypatch, value):
    """TripletLoss's default margin changed in the code (as an edit of vgcore/losses/triplet.py would)."""
    defaults = list(TripletLoss.__init__.__defaults__)
    assert defaults[0] == 0.2  # margin is the first keyword with a default
    monkeypatch.setattr(TripletLoss.__init__, "__defaults__", (value, *defaults[1:]))


def test_a_summary_records_the_resolved_loss_hyperparameters_and_versions(trained):
    summary = results.read_summary(trained[1])
    loss = summary["resolved"]["loss"]
    assert loss["params"]["margin"] == 0.2 and loss["params"]["reduction"] == "nonzero_mean"
    assert loss["numerics"] == TripletLoss.numerics_version
    assert summary["resolved"]["evaluation"]["recall_ks"] == [1, 2, 4, 8]
    assert summary["resolved"]["dataset"]["n_superclasses"] == 3  # the smoke profile's option
    assert summary["resolved"]["dataset"]["super_spread"] == 1.0  # a default it did not set


def test_a_changed_loss_default_makes_a_run_stale(trained, tmp_path, monkeypatch):
    root, path = _copy(trained, tmp_path)
    before = _config().config_hash()
    _margin_default(monkeypatch, 0.9)
    assert _config().config_hash() != before  # the config is the same; what it resolves to is not
    assert not results.is_current(path, _config().config_hash())
    with pytest.raises(results.StaleRunError, match=r"loss\.params\.margin: 0\.2 -> 0\.9"):
        results.collect(root, "summary", profile="smoke")
    # the sweep retrains it in place (same config: no variant), now under margin 0.9
    out = train.sweep([_config()], root, cache_dir=tmp_path / "cache", progress=False)
    assert not out.failures and out.paths == [path]
    assert results.read_summary(path)["resolved"]["loss"]["params"]["margin"] == 0.9
    assert len(results.collect(root, "summary", profile="smoke")) == 1


def test_the_build_reruns_a_run_made_under_an_old_default_in_place(trained, tmp_path, monkeypatch):
    """The notebook build's check (workflow.prepare_runs) forces the run, naming the change; it does not
    try to move a run of the profile's own config to a variant folder."""
    from vgcore import workflow

    root, path = _copy(trained, tmp_path)
    _margin_default(monkeypatch, 0.9)
    said = []
    forced = workflow.prepare_runs(get_profile("smoke"), root, losses=["triplet"], log=said.append)
    assert forced == [path / "summary.json"] and path.is_dir()
    assert "loss.params.margin: 0.2 -> 0.9" in said[0] and not (root / "smoke" / "variants").exists()


def test_a_bumped_numerics_version_makes_a_run_stale(trained, tmp_path, monkeypatch):
    root, path = _copy(trained, tmp_path)
    monkeypatch.setattr(TripletLoss, "numerics_version", TripletLoss.numerics_version + 1)
    assert not results.is_current(path, _config().config_hash())
    with pytest.raises(results.StaleRunError, match=r"loss\.numerics: 1 -> 2"):
        results.check_run(path)


def test_a_bumped_evaluation_version_makes_a_run_stale(trained, tmp_path, monkeypatch):
    from importlib import import_module

    root, path = _copy(trained, tmp_path)
    monkeypatch.setattr(import_module("vgcore.train.evaluate"), "NUMERICS_VERSION", 99)
    with pytest.raises(results.StaleRunError, match=r"evaluation\.numerics: 1 -> 99"):
        results.check_run(path)


def test_an_edited_number_in_summary_json_is_refused(trained, tmp_path):
    root, path = _copy(trained, tmp_path)
    summary = json.loads((path / "summary.json").read_text())
    summary["final"]["recall@1"] = 0.999
    (path / "summary.json").write_text(json.dumps(summary, indent=2))
    with pytest.raises(results.RunIntegrityError, match="edited"):
        results.collect(root, "summary", profile="smoke")
    assert not results.is_current(path, _config().config_hash())  # a sweep retrains it
    out = train.sweep([_config()], root, cache_dir=tmp_path / "cache", progress=False)
    assert not out.failures
    assert results.collect(root, "summary", profile="smoke")["recall@1"].item() != 0.999


def test_an_unsealed_summary_is_not_accepted(trained, tmp_path):
    root, path = _copy(trained, tmp_path)
    summary = json.loads((path / "summary.json").read_text())
    del summary[results.SEAL]
    (path / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(results.RunIntegrityError, match="carries no summary_sha256"):
        results.check_run(path)


# ------------------------------------------------------------------ the declared numerics versions


def _loss_numbers(name: str) -> list[float]:
    """Loss value, |dL/dz| summed and the active-term count on a fixed float64 batch."""
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(12, 6, generator=gen, dtype=torch.float64).requires_grad_(True)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        loss_fn = make_loss(name, num_classes=4, embedding_dim=6).double()
    loss = loss_fn(z, y)
    loss.backward()
    return [float(loss.detach()), float(z.grad.abs().sum()), float(loss_fn.last.n_active_terms)]


def _head_numbers() -> list[float]:
    from vgcore.train.head import ProjectionHead

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        head = ProjectionHead(6, 4).double()
    x = torch.linspace(-1, 1, 18, dtype=torch.float64).view(3, 6)
    return [float(v) for v in head(x).detach().flatten()]


def _sampler_numbers() -> list[float]:
    from vgcore.train.samplers import batch_indices

    labels = torch.arange(24) % 6
    out = []
    for sampler in ("random", "pk"):
        config = _config(sampler=sampler, batch_size=8, samples_per_class=2)
        out += [float(i) for batch in batch_indices(labels, config, torch.Generator().manual_seed(0)) for i in batch]
    return out


def _step_numbers() -> list[float]:
    """Three steps of a contrastive learner: each step's loss and GREEDINESS readings."""
    from vgcore.train.learner import make_learner, train_step

    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(16, 6, generator=gen), torch.arange(16) % 4
    learner = make_learner(_config("contrastive"), 6, 4, torch.device("cpu"))
    return [float(v) for _ in range(3) for v in train_step([learner], x, y)[0]]


def _evaluation_numbers() -> list[float]:
    from vgcore.train.evaluate import evaluate

    gen = torch.Generator().manual_seed(2)
    y = torch.arange(40) % 4
    z = torch.nn.functional.normalize(3 * torch.eye(8)[y] + torch.randn(40, 8, generator=gen), dim=1)
    return [float(v) for v in evaluate(z, y, y // 2).values()]


def _components():
    """Each versioned component: ``(name, declared version, function of its numbers, tolerance)``."""
    from importlib import import_module

    out = [(f"loss.{name}", registry.load("loss", name).numerics_version, lambda n=name: _loss_numbers(n), 1e-9)
           for name in registry.names("loss")]
    for name, fn, tol in (("head", _head_numbers, 1e-9), ("samplers", _sampler_numbers, 0.0),
                          ("learner", _step_numbers, 1e-4), ("evaluate", _evaluation_numbers, 1e-5)):
        out.append((name, import_module(f"vgcore.train.{name}").NUMERICS_VERSION, fn, tol))
    return out


def _same(a: list[float], b: list[float], tol: float) -> bool:
    return len(a) == len(b) and all((math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=tol, abs_tol=tol)
                                    for x, y in zip(a, b, strict=True))


def test_numerics_versions_are_declared_with_the_numbers_they_make():
    """A component whose numbers on a fixed input moved while its declared version stayed fails here:
    bump its version (its runs then rerun) and record the new numbers with
    ``python tests/test_identity.py --record``. Tolerances are far above any CPU's rounding (float64
    for losses and head; float32 steps at 1e-4) and far below what a changed formula moves."""
    recorded = json.loads(FINGERPRINTS.read_text())
    problems = []
    for name, version, numbers, tol in _components():
        entry = recorded.get(name)
        if entry is None:
            problems.append(f"{name}: no fingerprint recorded")
        elif entry["version"] != version:
            problems.append(f"{name}: declared version {version}, fingerprint of version {entry['version']} (record it)")
        elif not _same(numbers(), entry["numbers"], tol):
            problems.append(f"{name}: its numbers changed but its numerics version ({version}) did not: bump it")
    assert not problems, "; ".join(problems) + " (then: python tests/test_identity.py --record)"


def test_the_fingerprint_check_fails_when_a_loss_changes_its_numbers(monkeypatch):
    recorded = json.loads(FINGERPRINTS.read_text())["loss.triplet"]["numbers"]
    _margin_default(monkeypatch, 0.3)  # a changed constant inside the loss, version unchanged
    assert not _same(_loss_numbers("triplet"), recorded, 1e-9)


if __name__ == "__main__" and sys.argv[1:] == ["--record"]:
    FINGERPRINTS.write_text(json.dumps({name: {"version": version, "numbers": numbers()}
                                        for name, version, numbers, _ in _components()}, indent=1) + "\n")
    print(f"recorded {FINGERPRINTS}")


def test_the_resolved_step_names_its_optimizer_and_the_runs_grad_threshold():
    from vgcore.identity import resolved
    from vgcore.train.learner import NUMERICS_VERSION, UNIT_TOLERANCE

    step = resolved(_config(grad_threshold=0.25).to_dict())["step"]
    assert step == {"numerics": NUMERICS_VERSION, "optimizer": "Adam", "grad_threshold": 0.25,
                    "unit_tolerance": UNIT_TOLERANCE}


def test_the_committed_demo_runs_are_current_under_the_identity_rule():
    """Every run of figures/demo/results.tar.gz records the hash the code gives its config now: a change
    to the identity rule, a default or a version (which makes every finished run stale) shows here
    first, and is made on purpose only, with the demo rebuilt."""
    import io
    import tarfile

    from vgcore.config import identity_hash

    archive = Path(__file__).resolve().parents[1] / "figures" / "demo" / "results.tar.gz"
    with tarfile.open(archive, "r:gz") as tar:
        summaries = [json.load(io.BytesIO(tar.extractfile(m).read())) for m in tar.getmembers()
                     if m.name.endswith("/summary.json")]
    from vgcore.config import PROFILES

    demo = PROFILES["demo"]
    assert len(summaries) == len(demo.losses) * len(demo.seeds) * len(demo.datasets)  # 11 x 5 x 3 = 165
    stale = [s["config"]["loss"] for s in summaries if s["config_hash"] != identity_hash(s["config"])]
    assert not stale, f"{len(stale)} committed runs are stale under the code's identity rule: rebuild with make demo"
