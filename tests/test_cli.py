"""The command line speaks one dialect (--set key=value), prints help without markup, puts the
cause of a build's failure first, and labels the sweep's progress (issue 26, item 6)."""

from __future__ import annotations

import subprocess

import pytest

from vgcore import results
from vgcore.__main__ import build_parser, main
from vgcore.config import get_profile


def _subcommands():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return parser, sub.choices


def test_help_has_no_restructuredtext_markup():
    parser, commands = _subcommands()
    pages = {"": parser.format_help(), **{name: p.format_help() for name, p in commands.items()}}
    marked = [name or "(top)" for name, text in pages.items() if "`" in text]
    assert not marked, f"--help of {marked} shows backticks"
    assert "python -m vgcore list" in pages[""]  # the examples stay


def test_run_and_sweep_take_set_like_the_builds_and_still_accept_positional_overrides(tmp_path, capsys):
    common = ["--profile", "smoke", "--datasets", "synthetic", "--losses", "triplet", "--seeds", "0",
              "--results", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"), "--quiet"]
    assert main(["sweep", *common, "--set", "epochs=1", "lr=2e-3"]) == 0
    capsys.readouterr()
    config = get_profile("smoke").config("synthetic", "triplet", 0, epochs=1, lr=2e-3)
    path = results.run_dir(tmp_path / "r", config)
    assert results.is_complete(path, config.config_hash())
    # the old form: the same runs (nothing retrained), and a note naming the new one
    before = (path / "summary.json").stat().st_mtime_ns
    assert main(["sweep", *common, "epochs=1", "lr=2e-3"]) == 0
    err = capsys.readouterr().err
    assert "--set epochs=1 lr=2e-3" in err
    assert (path / "summary.json").stat().st_mtime_ns == before
    args = build_parser().parse_args(["run", "--loss", "triplet", "--set", "epochs=2"])
    assert args.overrides == ["epochs=2"]


def test_an_offline_build_says_what_is_missing_first_and_starts_nothing(tmp_path, monkeypatch, capsys):
    """The paper build without its data: one line naming the dataset first, the ways to get it
    within the first lines, and Snakemake is never started."""
    from vgcore.data import fetch

    def offline(url, dest, md5):
        raise OSError(f"cannot reach {url} (offline)")

    monkeypatch.setattr(fetch, "fetch_file", offline)
    monkeypatch.setenv("VGCORE_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: pytest.fail("snakemake started"))
    code = main(["paper", "--datasets", "cub200", "--results", str(tmp_path / "r"), "--figures", str(tmp_path / "f")])
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    assert err[0].startswith("error: dataset 'cub200' not found"), err[:3]
    assert any(line.startswith("Ways to get it") for line in err[:15]), err
    assert len(err) < 30


def test_the_sweep_progress_names_each_loss_beside_its_recall():
    from vgcore.train.loop import recall_postfix

    assert recall_postfix(["triplet"], [0.8123]) == "R@1 0.812"
    assert recall_postfix(["contrastive", "scl"], [0.5, 0.71234]) == "R@1 contrastive 0.500 · scl 0.712"


def test_tune_refuses_a_profile_with_fixed_settings_and_writes_a_tuned_ones_choice(tmp_path, monkeypatch, capsys):
    import dataclasses
    import json

    from vgcore import __main__ as cli
    from vgcore import config as config_module

    assert main(["tune", "--profile", "smoke", "--results", str(tmp_path)]) == 2
    assert "not tuned" in capsys.readouterr().err
    smoke = get_profile("smoke")
    tuned = dataclasses.replace(smoke, tuned=True, settings={**smoke.settings, "epochs": 2, "val_size": 48,
                                                             "patience": 1})
    monkeypatch.setattr(cli, "get_profile", lambda name: tuned)
    monkeypatch.setattr(config_module, "tuned_path", lambda name: tmp_path / f"{name}.json")
    assert main(["tune", "--profile", "smoke", "--losses", "triplet", "--seeds", "100", "--results",
                 str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"), "--quiet"]) == 0
    out = capsys.readouterr().out
    choice = json.loads((tmp_path / "smoke.json").read_text())["synthetic"]["triplet"]
    assert f"trial {choice['trial']}: lr={choice['lr']:.3g}" in out and str(tmp_path / "smoke.json") in out
    assert (tmp_path / "r" / "smoke-tuning" / "synthetic" / "triplet" / "trial0" / "seed100" / "summary.json").exists()
