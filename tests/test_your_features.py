"""The fair protocol on a user's own features (vgcore.your_features): `tune --features F`, then
`sweep --features F --profile fair`, then `diagnose --features F` beside the tuned, converged runs."""

import json

import numpy as np
import pytest

from vgcore import results, tuning, your_features
from vgcore.__main__ import main
from vgcore.config import get_profile
from vgcore.report.diagnose import custom_runs, diagnose
from vgcore.train import tune as tune_module

FAST = {"epochs": 2, "patience": 1}
"""The fair protocol's rules at a test's scale: a budget of 2 epochs, patience 1."""


def write_features(path, n_classes: int = 12, per_class: int = 40, seed: int = 0, **arrays) -> None:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), per_class)
    centres = rng.normal(size=(n_classes, 16))
    x = centres[labels] + rng.normal(size=(labels.size, 16))
    np.savez(path, features=x.astype(np.float32), labels=labels, **arrays)


@pytest.fixture(scope="module")
def tuned_file(tmp_path_factory):
    """A features file tuned (two losses) and swept at the tuned settings (seeds 0, 1)."""
    root = tmp_path_factory.mktemp("yours")
    write_features(root / "f.npz")
    chosen = your_features.tune(root / "f.npz", root / "r", losses=["triplet", "scl"], overrides=FAST,
                                cache_dir=root / "c", progress=False)
    assert main(["sweep", "--features", str(root / "f.npz"), "--profile", "fair", "--losses", "triplet", "scl",
                 "--seeds", "0", "1", "--results", str(root / "r"), "--cache-dir", str(root / "c"), "--quiet",
                 "--set", "epochs=2", "patience=1"]) == 0
    return root, chosen


def test_the_fair_sweep_on_a_file_not_yet_tuned_names_the_tuning_to_run(tmp_path, capsys):
    write_features(tmp_path / "f.npz")
    assert main(["sweep", "--features", str(tmp_path / "f.npz"), "--profile", "fair",
                 "--results", str(tmp_path / "r"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "no fair tuning" in err and f"python -m vgcore tune --features {tmp_path / 'f.npz'}" in err
    assert not (tmp_path / "r").exists()  # nothing trained


def test_the_tuning_picks_each_losss_best_trial_and_keys_it_by_the_files_digest(tuned_file):
    root, chosen = tuned_file
    sha = your_features.digest(root / "f.npz")
    assert json.loads(your_features.tuned_path(root / "r").read_text()) == {sha: chosen}
    profile = get_profile(your_features.PROFILE)
    settings = {**your_features.cell(root / "f.npz"), **FAST}
    frame = tune_module.scores(profile, root / "r", datasets=["custom"], losses=["triplet", "scl"],
                               overrides=settings)
    assert len(frame) == 2 * tuning.N_POINTS and frame["map@r"].notna().all()
    for loss, entry in chosen.items():
        own = frame[frame["loss"] == loss]
        best = own.loc[own["map@r"].idxmax()]  # no tie at 4 decimals here, so the highest wins outright
        assert entry["trial"] == best["trial"] and entry["lr"] == best["lr"]
        assert entry["loss_params"][best["param"]] == best["value"]
        trial = tune_module.trial_configs(profile, "custom", loss, 100, **settings)[entry["trial"]]
        assert tune_module.trial_dir(root / "r", trial, entry["trial"]).parent.parent.parent.name == f"custom-{sha}"
        assert trial.eval_split == "validation" and trial.data_seed == 100


def test_the_reporting_runs_train_at_the_tuned_settings_under_the_fair_rules(tuned_file):
    root, chosen = tuned_file
    runs, left_out = custom_runs(root / "r", root / "f.npz")
    assert left_out == [] and sorted(runs["loss"]) == ["scl", "scl", "triplet", "triplet"]
    for path in runs["path"]:
        config = json.loads((path / "config.json").read_text())
        assert config["profile"] == "fair_custom"
        entry = chosen[config["loss"]]
        assert (config["lr"], config["loss_params"]) == (entry["lr"], {**config["loss_params"], **entry["loss_params"]})
        assert config["sampler"] == "pk_distinct" and config["data_seed"] == config["seed"]
        assert config["dataset_options"].get("seed", 0) == 0  # every seed is tested on the file's same test rows
        summary = results.read_summary(path)
        assert summary["stopping"]["stopped_by"] in ("patience", "budget")
    assert set(runs["configuration"]) <= {"fair", "fair, 2/2 unconverged", "fair, 1/2 unconverged"}


def test_a_changed_file_is_not_tuned_and_diagnose_leaves_out_runs_of_an_older_tuning(tuned_file, tmp_path):
    root, chosen = tuned_file
    write_features(tmp_path / "f.npz", seed=1)  # same shape, other content: another digest
    with pytest.raises(your_features.NotTunedError, match="no fair tuning for triplet"):
        your_features.configs(tmp_path / "f.npz", root / "r", losses=["triplet"])
    path = your_features.tuned_path(root / "r")
    record = json.loads(path.read_text())
    sha = your_features.digest(root / "f.npz")
    try:
        changed = json.loads(json.dumps(record))
        changed[sha]["triplet"]["lr"] *= 2
        path.write_text(json.dumps(changed))
        runs, left_out = custom_runs(root / "r", root / "f.npz")
        assert sorted(runs["loss"]) == ["scl", "scl"]
        assert len(left_out) == 2 and all("no longer chooses" in reason for reason in left_out)
    finally:
        path.write_text(json.dumps(record))


def test_diagnose_sets_your_embeddings_beside_the_fair_runs(tuned_file):
    root, _ = tuned_file
    data = np.load(root / "f.npz")
    np.savez(root / "emb.npz", features=data["features"][:, :8], labels=data["labels"])
    report = diagnose(root / "emb.npz", features=root / "f.npz", results_root=root / "r")
    names = list(report.table["embeddings"])
    assert names[0] == "your embeddings"
    assert {n.split(" (")[0] for n in names[1:]} == {"triplet", "scl"}
    assert all("(fair" in n for n in names[1:])
    assert report.n_runs == 4


@pytest.mark.parametrize("class_split", ["shared", "disjoint"])
def test_the_validation_split_and_the_pk_batch_come_from_the_files_classes(tmp_path, class_split):
    write_features(tmp_path / "f.npz", n_classes=20, per_class=30)
    cell = your_features.cell(tmp_path / "f.npz", class_split=class_split)
    if class_split == "disjoint":
        # 10 unseen test classes: tuned on unseen classes too, every 4th of the 10 trained held out, 7 left with
        # 30 rows each: B = min(256, 210 / 2) = 105, P = min(7, 105 / 4) = 7, K = 2 floor(105 / 14) = 14, cap 2 floor(30 / 4)
        assert (cell["val_split"], cell["val_size"]) == ("classes", 0)
        assert (cell["batch_size"], cell["samples_per_class"]) == (7 * 14, 14)
    else:
        # the test classes are the training classes: min(2000, 20 %) of the 300 training rows held out;
        # B = min(256, 240 / 2) = 120, P = min(20, 30) = 20, K = 2 floor(120 / 40) = 6 = the cap 2 floor(15 / 4)
        assert (cell["val_split"], cell["val_size"]) == ("rows", 60)
        assert (cell["batch_size"], cell["samples_per_class"]) == (20 * 6, 6)
    assert cell["dataset_options"] == {"class_split": class_split, "path": str(tmp_path / "f.npz")}


def test_a_class_too_small_for_a_pk_batch_is_refused_with_the_way_out(tmp_path):
    write_features(tmp_path / "f.npz", per_class=6)  # 3 training rows a class
    with pytest.raises(your_features.UserError, match="a class has 3 training rows.*custom profile"):
        your_features.cell(tmp_path / "f.npz")


def test_the_guides_fair_commands_are_the_ones_this_file_runs():
    from test_readme import _own_model_blocks

    from vgcore.__main__ import build_parser

    _, bash = _own_model_blocks()
    commands = [line.split("#")[0].split() for line in bash[1].splitlines()]
    assert all(c[:3] == ["python", "-m", "vgcore"] for c in commands)
    parsed = [build_parser().parse_args(c[3:]) for c in commands]
    assert [p.command for p in parsed] == ["tune", "sweep", "diagnose"]
    assert parsed[0].features == parsed[1].features == parsed[2].features and parsed[1].profile == "fair"


def test_set_overrides_reach_the_runs_without_losing_the_file_or_its_tuning(tuned_file):
    root, chosen = tuned_file
    configs = your_features.configs(root / "f.npz", root / "r", losses=["triplet"], seeds=[0],
                                    overrides={"dataset_options": {"class_split": "disjoint"}, "epochs": 3})
    (config,) = configs
    assert config.dataset_options["class_split"] == "disjoint" and config.dataset_options["path"].endswith("f.npz")
    assert (config.epochs, config.lr) == (3, chosen["triplet"]["lr"])
    (mine,) = your_features.configs(root / "f.npz", root / "r", losses=["triplet"], seeds=[0], overrides={"lr": 0.5})
    assert mine.lr == 0.5 and mine.loss_params["margin"] == chosen["triplet"]["loss_params"]["margin"]
