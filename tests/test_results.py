"""Results that can be trusted after any mistake, crash or concurrent run (issue 18).

Where runs live (a profile's own runs apart from every variant), what reading them checks (config
hash, file hashes), what writing them guarantees (validated first, swapped in complete, one writer
per run), and a property test over random command sequences interrupted at random points.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vgcore import results, train, workflow
from vgcore.__main__ import main
from vgcore.config import get_profile
from vgcore.io import LockBusyError
from vgcore.report.outputs import Outputs, collect_profile, write_index

ROOT = Path(__file__).resolve().parents[1]
SMOKE = get_profile("smoke")


def cfg(loss="triplet", seed=0, **overrides):
    return SMOKE.config("synthetic", loss, seed, **overrides)


def cli(*args: str) -> int:
    return main([*args[:1], "--quiet", *args[1:]])


def tree(path: Path) -> dict[str, bytes]:
    """Every file under `path` (relative name -> bytes), lock files left out."""
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.suffix != ".lock"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def own_run(tmp_path, cache):
    """A complete run of the smoke profile's own config (triplet, seed 0) under tmp_path/results."""
    config = cfg()
    path = results.run_dir(tmp_path / "results", config)
    train.run(config, path, cache_dir=cache, progress=False)
    return tmp_path / "results", path


# --- 1 and 2: runs keyed by what they are ---------------------------------------------------------

def test_a_sweep_with_overrides_leaves_the_profiles_runs_alone(tmp_path, cache, own_run):
    """Issue 18.1/18.2: `sweep --profile smoke epochs=...` (or the README's loss_params.margin=0.3)
    neither replaces the profile's own runs nor is drawn by the build as "profile smoke"."""
    root, own = own_run
    before = tree(own)
    assert cli("sweep", "--profile", "smoke", "--losses", "triplet", "--seeds", "0", "--results", str(root),
               "--cache-dir", str(cache), "epochs=4") == 0
    assert cli("sweep", "--profile", "smoke", "--losses", "triplet", "--seeds", "0", "--results", str(root),
               "--cache-dir", str(cache), "loss_params.margin=0.3") == 0
    assert tree(own) == before, "the profile's own run was rewritten by a sweep with overrides"
    variants = results.variants(root, "smoke")
    assert sorted((v["overrides"]["synthetic"] for v in variants.values()), key=str) == [
        {"epochs": 4}, {"loss_params.margin": 0.3}]
    for name in variants:
        (run,) = results.find_runs(root, "smoke", name)
        assert json.loads((run / "summary.json").read_text())["overrides"] == variants[name]["overrides"]["synthetic"]
    summary = collect_profile(root, "smoke")
    assert summary["config_hash"].tolist() == [cfg().config_hash()]  # the profile's run, not a variant's
    assert collect_profile(root, "smoke", variant=next(n for n, v in variants.items()
                                                       if "epochs" in v["overrides"]["synthetic"]))["config_hash"].tolist() \
        == [cfg(epochs=4).config_hash()]


def test_the_build_draws_nothing_from_runs_of_other_settings(tmp_path, cache):
    """Issue 18.1: after `sweep epochs=...` the build finds no run of the profile (so it trains them)
    instead of drawing tables labelled "profile smoke" from the other runs."""
    root = tmp_path / "results"
    assert cli("sweep", "--profile", "smoke", "--losses", "triplet", "--seeds", "0", "--results", str(root),
               "--cache-dir", str(cache), "epochs=4") == 0
    with pytest.raises(ValueError, match="no complete run of profile 'smoke'"):
        collect_profile(root, "smoke")
    assert results.collect(root, "summary").empty


def test_a_stale_run_in_the_profiles_folder_is_refused_naming_the_keys(own_run, cache):
    """Issue 18.1: a run of other settings in the profile's own folder (results from before variants
    had their own folders, or a profile edited since) is refused by collect, naming run and keys."""
    root, own = own_run
    stale = train.run(cfg(epochs=2), root / "elsewhere", cache_dir=cache, progress=False)
    shutil.rmtree(own)
    shutil.copytree(stale.path, own)
    with pytest.raises(results.StaleRunError, match=r"seed0 is stale.*epochs=2 \(now: 3\)"):
        collect_profile(root, "smoke")
    with pytest.warns(UserWarning, match="epochs=2"):
        assert results.collect(root, "summary", "smoke", errors="skip").empty


def test_the_build_moves_a_stale_run_to_its_variant_folder_and_retrains_it(own_run, cache):
    """Issue 18.1: before the notebook build, a stale own run is moved (not lost, not drawn from) and
    named for Snakemake to rerun only in a dry run; a corrupt one is forced."""
    root, own = own_run
    stale = train.run(cfg(epochs=2), root / "elsewhere", cache_dir=cache, progress=False)
    shutil.rmtree(own)
    shutil.copytree(stale.path, own)
    logs = []
    assert workflow.prepare_runs(SMOKE, root, losses=["triplet"], seeds=[0], dry_run=True, log=logs.append) \
        == [own / "summary.json"]
    assert (own / "summary.json").exists()  # a dry run moves nothing
    assert workflow.prepare_runs(SMOKE, root, losses=["triplet"], seeds=[0], log=logs.append) == []
    assert not own.exists()
    moved = results.run_dir(root, cfg(epochs=2))
    assert results.is_current(moved, cfg(epochs=2).config_hash()), "the stale run was lost"
    assert "moved to" in logs[-1]

    train.run(cfg(), own, cache_dir=cache, progress=False)
    (own / "epochs.csv").write_text("epoch,split\n0,test\n")
    assert workflow.prepare_runs(SMOKE, root, losses=["triplet"], seeds=[0], log=logs.append) == [own / "summary.json"]


def test_profile_dataset_loss_and_seed_are_not_overrides():
    """Issue 18.2/18.7: `profile=demo` filed smoke runs under demo/; `loss=scl`, `seed=-1` ended in a
    TypeError traceback."""
    for bad, option in (("profile=demo", "--profile"), ("loss=scl", "--loss"), ("seed=-1", "--seed")):
        with pytest.raises(ValueError, match=f"cannot be set as an override.*{option}"):
            SMOKE.config("synthetic", "triplet", 0, **{bad.split("=")[0]: bad.split("=")[1]})


def test_a_tag_names_one_set_of_settings(tmp_path, cache):
    root = tmp_path / "results"
    assert cli("run", "--profile", "smoke", "--dataset", "synthetic", "--loss", "triplet", "--results", str(root),
               "--cache-dir", str(cache), "--tag", "short", "epochs=1") == 0
    assert results.is_current(root / "smoke" / "variants" / "short" / "synthetic" / "triplet" / "seed0",
                              cfg(epochs=1).config_hash())
    with pytest.raises(results.VariantConflictError, match="differing keys: epochs"):
        results.check_variant(root, cfg(epochs=2), "short")
    with pytest.raises(ValueError, match="not a folder name"):
        results.run_dir(root, cfg(epochs=2), "../up")


def test_a_tag_conflict_names_only_the_keys_that_differ(tmp_path):
    folder = tmp_path / "smoke" / "variants" / "short"
    folder.mkdir(parents=True)
    record = {"profile": "smoke", "name": "short", "tag": "short",
              "overrides": {"synthetic": {"epochs": 1, "lr": 0.5, "batch_size": 16}}}
    (folder / "variant.json").write_text(json.dumps(record))
    with pytest.raises(results.VariantConflictError, match=r"\(differing keys: epochs, lr\)\. Choose another"):
        results.check_variant(tmp_path, cfg(epochs=2, lr=0.25, batch_size=16), "short")


def test_settings_that_fail_late_are_refused_before_anything_is_written(own_run, cache):
    """Issue 18.2: weight_decay=-1, grad_threshold=abc, a batch larger than the data or a too-small
    eval split used to clear a complete run (only config.json left, no failure.json)."""
    root, own = own_run
    before = tree(own)
    for bad in ({"weight_decay": -1}, {"grad_threshold": "abc"}, {"lr": "abc"}, {"diagnostics": "no"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            cfg(**bad)
    for bad, message in (({"batch_size": 1000}, "exceeds the 96 training samples"),
                         ({"eval_size": 2}, "cannot evaluate synthetic/test")):
        with pytest.raises(ValueError, match=message):
            train.run(cfg(**bad), own, cache_dir=cache, progress=False)
    assert tree(own) == before


class Killed(BaseException):
    """Stands for the process being killed (not caught by `except Exception`)."""


def test_a_run_killed_mid_training_leaves_the_complete_run_and_no_debris(own_run, cache, monkeypatch):
    """Issue 18.2: a complete run is replaced only once its replacement is complete."""
    root, own = own_run
    before = tree(own)
    real, calls = train.graph.train_step, []

    def dying_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(train.graph, "train_step", dying_step)
    with pytest.raises(Killed):
        train.run(cfg(), own, cache_dir=cache, progress=False)
    assert tree(own) == before
    assert [p.name for p in own.parent.iterdir() if p.name.startswith(".tmp-")], "the test must leave a staging folder"
    monkeypatch.setattr(train.graph, "train_step", real)
    train.run(cfg(), own, cache_dir=cache, progress=False)
    assert tree(own).keys() == before.keys()
    assert not [p for p in own.parent.iterdir() if p.name.startswith((".tmp-", ".old-"))], "debris was not cleaned"


def test_a_kill_in_the_middle_of_the_swap_is_finished_by_the_next_writer(own_run):
    root, own = own_run
    before = tree(own)
    old = own.parent / f".old-{own.name}.dead"
    os.rename(own, old)  # killed right after moving the complete run aside
    with results.run_lock(own):  # what the next writer does first
        pass
    assert tree(own) == before


# --- 3: one writer per run, and a sweep reports its own runs -----------------------------------------

def test_a_run_being_written_is_waited_for_or_its_holder_named(own_run, cache):
    root, own = own_run
    with results.run_lock(own):
        with pytest.raises(LockBusyError, match=rf"run {own} is in use by pid {os.getpid()}"):
            train.run(cfg(), own, cache_dir=cache, progress=False, lock_timeout=0)


@pytest.mark.slow
def test_two_concurrent_sweeps_with_different_settings_keep_their_runs_and_tables(tmp_path, cache):
    """Issue 18.3: two sweeps on one results root (epochs=5 and epochs=2) both used to write the same
    folders; the second's table showed the first one's numbers."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = [sys.executable, "-m", "vgcore", "sweep", "--profile", "smoke", "--losses", "triplet", "contrastive",
            "--results", str(tmp_path / "results"), "--cache-dir", str(cache), "--quiet"]
    procs = {e: subprocess.Popen([*base, "--set", f"epochs={e}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for e in (5, 2)}
    out = {e: p.communicate(timeout=600) for e, p in procs.items()}
    cols = ["dataset", "loss", "seed", "recall@1", "map@r", "intra_var", "inter_var", "active_ratio_mean"]
    for epochs, proc in procs.items():
        assert proc.returncode == 0, out[epochs][1]
        runs = [results.run_dir(tmp_path / "results", cfg(loss, epochs=epochs)) for loss in ("triplet", "contrastive")]
        for run in runs:
            summary = json.loads((run / "summary.json").read_text())
            assert summary["config"]["epochs"] == epochs and results.is_current(run, summary["config_hash"])
        table = results.runs_frame(runs, "summary")[cols].to_string(index=False)
        assert table in out[epochs][0], f"epochs={epochs}: its table does not show its own runs"


# --- 6: corruption is detected and named ----------------------------------------------------------

def test_a_truncated_summary_or_table_is_named_not_used(own_run):
    """Issue 18.6: a truncated summary.json ended collect in a bare JSONDecodeError; a truncated
    epochs.csv silently gave 4 rows."""
    root, own = own_run
    epochs = (own / "epochs.csv").read_bytes()
    (own / "epochs.csv").write_bytes(epochs[: len(epochs) // 3])
    with pytest.raises(results.RunIntegrityError, match=rf"{own / 'epochs.csv'} is corrupt"):
        results.collect(root, "epochs", "smoke")
    with pytest.warns(UserWarning, match="epochs.csv is corrupt"):
        assert results.collect(root, "epochs", "smoke", errors="skip").empty
    assert not results.is_current(own, cfg().config_hash())  # a sweep reruns it
    (own / "epochs.csv").write_bytes(epochs)
    summary = (own / "summary.json").read_text()
    (own / "summary.json").write_text(summary[: len(summary) // 2])
    with pytest.raises(results.RunIntegrityError, match=rf"{own / 'summary.json'} is not valid JSON"):
        results.collect(root, "summary", "smoke")


# --- 5 and 8: failures are recorded, the sweep goes on ---------------------------------------------

def test_a_diverging_run_is_recorded_and_the_sweep_goes_on(tmp_path, cache, capsys):
    """Issue 18.8: the sweep stopped at the first diverging run and skipped the rest."""
    root = tmp_path / "results"
    configs = [cfg("contrastive", epochs=1), cfg("triplet", lr=1e30, epochs=1), cfg("scl", epochs=1)]
    done = train.sweep(configs, root, cache_dir=cache, progress=False)
    bad = results.run_dir(root, configs[1])
    assert list(done.failures) == [bad] and "diverged at step" in done.failures[bad]
    assert json.loads((bad / "failure.json").read_text())["step"] >= 1
    for config in configs[::2]:
        assert results.is_current(results.run_dir(root, config), config.config_hash())
    code = cli("sweep", "--profile", "smoke", "--losses", "triplet", "--results", str(root), "--cache-dir",
               str(cache), "lr=1e30", "epochs=1")
    err = capsys.readouterr().err
    assert code == 1 and "1 of 1 runs failed" in err and "diverged at step" in err


# --- 8: the figures index -------------------------------------------------------------------------

def test_the_figures_index_links_only_files_that_exist(tmp_path):
    """Issue 18.8: after a failed rebuild figures/<profile>/README.md linked figures that were deleted."""
    fig = tmp_path / "smoke"
    (fig / "tables").mkdir(parents=True)
    for ext in ("csv", "md", "tex"):
        (fig / "tables" / f"05_retrieval.{ext}").write_text("x")
    index = write_index(fig, "smoke").read_text()
    assert "(tables/05_retrieval.md)" in index
    assert "03_variance_bars.png" not in index and "`03_variance_bars` (not built)" in index


# --- the property: whatever happens, no figure from another config, no complete run lost --------------

OVERRIDES = ([], [], [], ["epochs=1"], ["epochs=2"], ["lr=0.005", "epochs=1"], ["loss_params.margin=0.3", "epochs=1"])
CELLS = [("triplet", 0), ("contrastive", 0), ("triplet", 1)]


class Interrupted(BaseException):
    """A kill at a random point: raised from os.rename, os.replace or a training step."""


def interrupt_at(monkeypatch, k: int, steps: bool = True):
    """Make the k-th call of os.rename / os.replace (/ train_step) raise Interrupted."""
    count = [0]

    def wrap(fn):
        def hooked(*args, **kwargs):
            count[0] += 1
            if count[0] == k:
                raise Interrupted
            return fn(*args, **kwargs)
        return hooked

    monkeypatch.setattr(os, "rename", wrap(os.rename))
    monkeypatch.setattr(os, "replace", wrap(os.replace))
    if steps:
        monkeypatch.setattr(train.graph, "train_step", wrap(train.graph.train_step))
    return count


def complete_runs(root: Path) -> dict[str, set[Path]]:
    """config hash -> folders holding a complete run of it (hidden staging and set-aside folders too)."""
    found: dict[str, set[Path]] = {}
    for summary in root.rglob("summary.json"):
        record = results.read_summary(summary.parent)
        results.check_files(summary.parent, record, required=results.RUN_FILES)
        found.setdefault(record["config_hash"], set()).add(summary.parent)
    return found


def figures(root: Path, out: Path) -> str | None:
    """What the analysis notebooks do: the profile's runs -> a table whose caption names them."""
    try:
        summary = collect_profile(root, "smoke")
    except results.StaleRunError:  # refused, naming the run: fine, as long as nothing is drawn from it
        return None
    except ValueError as err:
        assert "no complete run" in str(err)
        return None
    for row in summary.itertuples():
        assert row.config_hash == SMOKE.config(row.dataset, row.loss, row.seed).config_hash(), \
            f"drawn from a run of another config: {row}"
    outputs = Outputs("05_retrieval", out, "smoke", runs=summary)
    (md, *_) = [p for p in outputs.table(summary[["loss", "seed", "recall@1"]], "05_retrieval") if p.suffix == ".md"]
    return md.read_text().splitlines()[0]


@pytest.mark.parametrize("seed", [0, 1])
def test_random_commands_interrupted_anywhere_lose_no_run_and_draw_no_figure_from_another_config(
        tmp_path, cache, monkeypatch, seed):
    rng = random.Random(seed)
    root, seen = tmp_path / "results", set()
    for _ in range(8):
        command = rng.choice(["sweep", "sweep", "sweep", "run", "run", "figures", "legacy"])
        overrides = list(rng.choice(OVERRIDES))
        cells = rng.sample(CELLS, rng.randint(1, 2))
        tag = rng.choice([None, None, "t"])
        with monkeypatch.context() as m:
            if command != "figures" and rng.random() < 0.6:
                interrupt_at(m, rng.randint(1, 25))
            try:
                if command == "sweep":
                    losses, seeds = sorted({c[0] for c in cells}), sorted({str(c[1]) for c in cells})
                    code = cli("sweep", "--profile", "smoke", "--losses", *losses, "--seeds", *seeds,
                               "--results", str(root), "--cache-dir", str(cache),
                               *(["--tag", tag] if tag else []), *(["--set", *overrides] if overrides else []))
                elif command == "run":
                    (loss, s), = cells[:1]
                    code = cli("run", "--profile", "smoke", "--dataset", "synthetic", "--loss", loss, "--seed", str(s),
                               "--results", str(root), "--cache-dir", str(cache), *(["--tag", tag] if tag else []),
                               *(["--set", *overrides] if overrides else []))
                elif command == "legacy":  # a variant's run copied into the profile's folder, as before issue 18
                    variant_runs = [p for n in results.variants(root, "smoke") for p in results.find_runs(root, "smoke", n)]
                    for run in variant_runs[:1]:
                        own = results.own_run_dir(root, "smoke", "synthetic", run.parent.name, int(run.name[4:]))
                        if not own.exists():
                            shutil.copytree(run, own)
                    code = 0
                else:
                    caption = figures(root, tmp_path / "figures")
                    code = 0
            except Interrupted:
                code = None
        assert code in (0, 2, None), f"{command} {overrides} failed with {code}"
        now = complete_runs(root)
        assert seen <= set(now), f"complete runs lost after {command} {overrides}: {seen - set(now)}"
        seen |= set(now)
        if command in ("sweep", "run") and code == 0:  # what it was asked for is current where it belongs
            for loss, s in cells if command == "sweep" else cells[:1]:
                config = SMOKE.config("synthetic", loss, s, **_parse(overrides))
                assert results.is_current(results.run_dir(root, config, tag), config.config_hash())
        if command == "figures" and caption is not None:
            own = [SMOKE.config("synthetic", loss, s).config_hash() for loss, s in CELLS
                   if results.is_current(results.own_run_dir(root, "smoke", "synthetic", loss, s),
                                         SMOKE.config("synthetic", loss, s).config_hash())]
            assert caption.endswith(f"(profile smoke, runs {results.runs_digest(own)})")
    for debris in [p for p in root.rglob(".*-seed*") if p.is_dir() and p.name.startswith((".tmp-", ".old-"))]:
        with results.run_lock(debris.parent / debris.name[5:].rsplit(".", 1)[0]):  # what its next writer does first
            pass
    final = complete_runs(root)
    assert seen <= set(final)
    assert all(not p.name.startswith(".") for paths in final.values() for p in paths), "debris left after recovery"
    for paths in final.values():
        for path in paths:
            try:
                results.check_run(path)  # each is what its place says ...
            except results.StaleRunError:  # ... but a legacy copy, which the next sweep of its cell sets aside
                assert path.parts[-5] != results.VARIANTS


def test_a_kill_at_any_write_of_a_replacement_loses_neither_run(tmp_path, cache, monkeypatch):
    """The riskiest write: a run replacing a stale one in the profile's folder (the stale one is moved to
    its variant folder, the new one swapped in). Killed at each rename/replace in turn, then recovered
    by the next writer: both runs survive, each where it belongs."""
    template = tmp_path / "template"
    stale = train.run(cfg(epochs=2), template / "elsewhere", cache_dir=cache, progress=False)
    own_rel = results.own_run_dir("", "smoke", "synthetic", "triplet", 0)
    shutil.copytree(stale.path, template / own_rel)
    shutil.rmtree(stale.path)
    with monkeypatch.context() as m:
        calls = interrupt_at(m, 0, steps=False)
        shutil.copytree(template, tmp_path / "probe")
        train.run(cfg(), tmp_path / "probe" / own_rel, cache_dir=cache, progress=False)
    n_calls = calls[0]
    assert n_calls >= 6
    wanted = {cfg().config_hash(), cfg(epochs=2).config_hash()}
    for k in range(1, n_calls + 1):
        root = tmp_path / f"k{k}"
        shutil.copytree(template, root)
        with monkeypatch.context() as m, pytest.raises(Interrupted):
            interrupt_at(m, k, steps=False)
            train.run(cfg(), root / own_rel, cache_dir=cache, progress=False)
        assert cfg(epochs=2).config_hash() in complete_runs(root), f"killed at write {k}: the stale run was lost"
        for folder in (root / own_rel, results.run_dir(root, cfg(epochs=2))):
            with results.run_lock(folder):  # the next writer of each
                pass
        train.run(cfg(), root / own_rel, cache_dir=cache, progress=False, skip_current=True)
        found = complete_runs(root)
        assert wanted <= set(found), f"killed at write {k}: {wanted - set(found)} lost"
        for paths in found.values():
            for path in paths:
                results.check_run(path)


def _parse(overrides):
    from vgcore.config import parse_overrides

    return parse_overrides(overrides)


def test_runs_digest_names_a_set_of_runs():
    assert results.runs_digest(["b", "a", "a"]) == results.runs_digest(["a", "b"]) != results.runs_digest(["a"])
    assert len(results.runs_digest([])) == 12 and np.all([c in "0123456789abcdef" for c in results.runs_digest(["x"])])
