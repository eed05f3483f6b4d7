"""The layout's promises: one registry of names, complete; no hidden global state; cache keys from
declared content options only; a command line that starts without torch and reports bad input in
one line."""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import subprocess
import sys

import pytest
import torch

from vgcore import registry
from vgcore.data import DatasetSpec, content_options
from vgcore.features import Backbone, backbone_spec
from vgcore.features.cache import cache_key
from vgcore.losses import MetricLoss

from _smoke_build import ROOT, env


def _modules(package: str) -> list:
    pkg = importlib.import_module(package)
    return [importlib.import_module(f"{package}.{m.name}") for m in pkgutil.iter_modules(pkg.__path__)]


@pytest.mark.parametrize("kind", ["loss", "dataset", "backbone"])
def test_every_registry_line_resolves(kind):
    assert registry.names(kind), kind
    for name in registry.names(kind):
        assert registry.load(kind, name) is not None


SHARED_LOSS_MODULES = {"vgcore.losses.base", "vgcore.losses.pairwise", "vgcore.losses.pair_softmax"}


def test_every_loss_class_is_registered_and_variants_derive_from_their_loss():
    registered = {registry.load("loss", n) for n in registry.names("loss")}
    found = set()
    for mod in _modules("vgcore.losses"):
        classes = [obj for _, obj in inspect.getmembers(mod, inspect.isclass)
                   if issubclass(obj, MetricLoss) and obj.__module__ == mod.__name__]
        if mod.__name__ not in SHARED_LOSS_MODULES:
            assert classes, f"{mod.__name__} defines no loss"
            found |= set(classes)
    assert found == registered
    assert registry.PAPER_LOSSES == ("contrastive", "triplet", "npair", "infonce", "arcface", "scl", "ccl")
    for variant, base in registry.VARIANTS.items():
        assert issubclass(registry.load("loss", variant), registry.load("loss", base)), variant
    assert registry.VARIANTS["npair_groups"] == "npair"


def test_the_baseline_is_registered_but_neither_a_paper_loss_nor_a_variant_nor_in_a_default_list():
    from vgcore.config import DEMO_VARIANTS, PROFILES
    from vgcore.losses import LOSSES
    from vgcore.tuning import BASELINE

    assert registry.BASELINES == ("multisimilarity",) == (BASELINE,)
    assert set(registry.BASELINES) <= set(registry.names("loss"))
    assert not set(registry.BASELINES) & (set(registry.PAPER_LOSSES) | set(registry.VARIANTS) | set(registry.VARIANTS.values()))
    assert set(registry.names("loss")) == {*registry.PAPER_LOSSES, *registry.VARIANTS, *registry.BASELINES}
    assert LOSSES == registry.PAPER_LOSSES
    for name, profile in PROFILES.items():  # the paper's seven (the demo: and its four variants); the baseline
        if profile.tuned or name == "fair_custom":  # only in the fair comparison, beside the grouped N-pair
            assert profile.losses == (*registry.PAPER_LOSSES, "npair_groups", *registry.BASELINES)
        else:
            assert profile.losses in (registry.PAPER_LOSSES, (*registry.PAPER_LOSSES, *DEMO_VARIANTS)), name


@pytest.mark.parametrize(("package", "kind", "spec_type"), [
    ("vgcore.data", "dataset", DatasetSpec), ("vgcore.features", "backbone", Backbone)])
def test_every_module_with_a_spec_is_registered_under_its_name(package, kind, spec_type):
    specs = {mod.SPEC.name: mod.__name__ for mod in _modules(package) if isinstance(getattr(mod, "SPEC", None), spec_type)}
    assert sorted(specs) == sorted(registry.names(kind))
    for name, module in specs.items():
        assert {"dataset": registry.DATASETS, "backbone": registry.BACKBONES}[kind][name] == f"{module}:SPEC"


def test_unknown_names_list_the_choices():
    with pytest.raises(registry.UnknownNameError, match="unknown loss 'hinge'; choose one of: contrastive, triplet"):
        registry.load("loss", "hinge")
    with pytest.raises(ValueError, match="unknown registry"):
        registry.names("metric")


def test_dataset_readers_take_exactly_their_declared_content_options():
    for name in registry.names("dataset"):
        spec = registry.load("dataset", name)
        params = list(inspect.signature(spec.read).parameters)
        assert params[:2] == ["location", "split"] or params[:2] == ["folder", "split"], name
        assert sorted(params[2:]) == sorted(spec.content), name


# ------------------------------------------------------------------ cache keys


def test_cache_key_holds_declared_content_options_only(monkeypatch):
    spec = backbone_spec("pixels")
    base = cache_key(spec, "synthetic", "train", content_options("synthetic"))
    # download says how to obtain data, not what it is
    assert content_options("synthetic", download=False) == content_options("synthetic")
    # a new reader keyword that is not a declared content option leaves every key unchanged
    module = importlib.import_module("vgcore.data.synthetic")
    read = module.SPEC.read

    def read_with_progress(location, split, *, progress=True, **content):
        return read(location, split, **content)

    monkeypatch.setattr(module, "SPEC", DatasetSpec("synthetic", read_with_progress, content=module.SPEC.content))
    assert cache_key(spec, "synthetic", "train", content_options("synthetic")) == base
    # a changed content option changes the key
    assert cache_key(spec, "synthetic", "train", content_options("synthetic", noise=0.5)) != base
    with pytest.raises(ValueError, match="unknown option"):
        content_options("synthetic", progress=False)


# ------------------------------------------------------------------ global state


def test_building_configs_and_learners_and_the_diagnostics_leave_global_state_alone():
    from vgcore.config import get_profile
    from vgcore.metrics import greediness, variance
    from vgcore.train import make_learner

    threads = torch.get_num_threads()
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    for loss in ("arcface", "ccl", "triplet"):
        config = get_profile("smoke").config("synthetic", loss, 3)
        learner = make_learner(config, 16, 4, torch.device("cpu"))
    z = torch.nn.functional.normalize(learner.head(torch.randn(40, 16, generator=torch.Generator().manual_seed(1))))
    variance(z.detach(), torch.arange(40) % 4)
    z.retain_grad()
    learner.loss_fn(z, torch.arange(40) % 4).backward()
    greediness(learner.loss_fn.last, z.grad, learner.head.parameters())
    assert torch.rand(1) == expected  # nothing above drew from (or reseeded) the global generator
    assert torch.get_num_threads() == threads


def test_make_learner_draws_the_same_weights_whatever_the_global_state():
    from vgcore.config import get_profile
    from vgcore.train import make_learner

    config = get_profile("smoke").config("synthetic", "arcface", 5)
    torch.manual_seed(1)
    a = make_learner(config, 16, 4, torch.device("cpu"))
    torch.manual_seed(2)
    b = make_learner(config, 16, 4, torch.device("cpu"))
    for p, q in zip([*a.head.parameters(), *a.loss_fn.parameters()], [*b.head.parameters(), *b.loss_fn.parameters()],
                    strict=True):
        assert torch.equal(p, q)


# ------------------------------------------------------------------ the command line


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vgcore", *args], cwd=ROOT, env=env(), capture_output=True,
                          text=True, timeout=120)


def test_help_and_list_do_not_import_torch():
    code = ("import sys, runpy; sys.argv = ['vgcore', '--help']\n"
            "try:\n    runpy.run_module('vgcore', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "import vgcore.config, vgcore.registry, vgcore.workflow\n"
            "assert 'torch' not in sys.modules, 'torch was imported by config, registry or workflow'\n")
    proc = subprocess.run([sys.executable, "-c", code], env=env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "python -m vgcore" in proc.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["run", "--profile", "smoke", "--dataset", "synthetic", "--loss", "triplet", "--set", "dataset_options.bogus=1"],
     "unknown option(s) ['bogus'] for dataset 'synthetic'"),
    (["run", "--profile", "smoke", "--dataset", "synthetic", "--loss", "triplet", "--set", "loss_params.margn=1"],
     "unknown hyperparameter(s) ['margn'] for loss 'triplet'"),
    (["run", "--profile", "demo", "--dataset", "fashionmnist", "--loss", "triplet", "--set", "backbone_options.size=3"],
     "unknown backbone option(s) ['size'] for 'efficientnet_lite0'"),
    (["sweep", "--profile", "smoke", "--losses", "hinge"], "unknown loss(s) ['hinge']"),
    (["run", "--profile", "smoke", "--dataset", "synthetic", "--loss", "triplet", "--set", "epochs"], "key=value"),
    # issue 18.7 (these ended in tracebacks) and 18.2/18.8 (these were accepted)
    (["run", "--profile", "smoke", "--dataset", "synthetic", "--loss", "triplet", "--set", "lr=abc"],
     "lr must be a positive number"),
    (["run", "--profile", "smoke", "--dataset", "synthetic", "--loss", "triplet", "--set", "seed=-1"],
     "seed cannot be set as an override (key=value): choose seed with --seed"),
    (["sweep", "--profile", "smoke", "--set", "loss=scl"], "loss cannot be set as an override"),
    (["run", "--profile", "smoke", "--dataset", "synthetic", "--loss", "triplet", "--set", "profile=demo"],
     "profile cannot be set as an override"),
    (["run", "--profile", "smoke", "--dataset", "synthetic", "--loss", "triplet", "--set", "grad_threshold=abc"],
     "grad_threshold must be None"),
    (["run", "--profile", "smoke", "--dataset", "synthetic", "--loss", "triplet", "--set", "weight_decay=-1"],
     "weight_decay must be a number >= 0"),
    (["run", "--profile", "smoke", "--dataset", "synthetic", "--loss", "triplet", "--set", "diagnostics=no"],
     "diagnostics must be true or false"),
])
def test_bad_input_is_one_line_and_exit_code_2(args, message):
    proc = _cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_a_diverged_run_is_reported_without_a_traceback(tmp_path):
    """Issue 18.7: TrainingDivergedError's message was hidden under a traceback."""
    proc = _cli("run", "--profile", "smoke", "--dataset", "synthetic", "--loss", "triplet", "--results",
                str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"), "--quiet", "--set", "lr=1e30")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: 'triplet' on 'synthetic' (seed 0) diverged at step 1")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_debug_shows_the_traceback():
    proc = _cli("--debug", "run", "--profile", "smoke", "--dataset", "synthetic", "--loss", "triplet",
                "--set", "dataset_options.bogus=1")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_missing_data_is_reported_without_a_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "vgcore", "run", "--profile", "paper", "--dataset", "cifar10",
                           "--loss", "triplet", "--data-root", str(tmp_path / "none"), "--results", str(tmp_path / "r"),
                           "--set", "backbone=pixels", "dataset_options.download=false"],
                          cwd=tmp_path, env=env(**{"VGCORE_CACHE": str(tmp_path / "c")}), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "dataset 'cifar10' not found" in proc.stderr and "Ways to get it" in proc.stderr
    assert "Traceback" not in proc.stderr and not os.path.exists(tmp_path / "r")
