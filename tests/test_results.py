"""vgcore.results.is_complete as the sweep sees it: which run directories count as done.

Behaviour only (PROTOCOL.md, Training, "completeness"): a run written by ``train.run`` is complete
for its own config hash; a different config, a summary.json that cannot be read, or a run whose
summary.json is missing is not, so a sweep reruns it. The run is a real one-epoch smoke run, so
these tests hold whatever the summary records besides the hash and the schema version.
"""

import json
import shutil

import pytest

from vgcore import results, train
from vgcore.config import get_profile


def _config(**overrides):
    return get_profile("smoke").config("synthetic", "contrastive", 0, **{"epochs": 1, **overrides})


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    config = _config()
    train.run(config, results.run_dir(root, config), cache_dir=root / "cache", progress=False)
    return results.run_dir(root, config), config


@pytest.fixture
def run_copy(finished_run, tmp_path):
    path, config = finished_run
    shutil.copytree(path, tmp_path / "run")
    return tmp_path / "run", config


def test_a_finished_run_is_complete_for_its_own_config(run_copy):
    path, config = run_copy
    assert results.is_complete(path, config.config_hash())
    assert results.is_complete(path)


@pytest.mark.parametrize("change", [{"epochs": 2}, {"lr": 0.5}, {"loss_params": {"margin": 0.7}}])
def test_a_run_of_another_config_is_not_complete(run_copy, change):
    path, config = run_copy
    other = _config(**change)
    assert other.config_hash() != config.config_hash()
    assert not results.is_complete(path, other.config_hash())
    assert not results.is_complete(path, "")


@pytest.mark.parametrize("content", ["truncated", "", "{", "\x00\x01 not json"])
def test_an_unreadable_summary_is_not_complete(run_copy, content):
    path, config = run_copy
    full = (path / "summary.json").read_text()
    (path / "summary.json").write_text(full[: len(full) // 2] if content == "truncated" else content)
    assert not results.is_complete(path, config.config_hash())


def test_a_summary_that_is_a_directory_is_not_complete(run_copy):
    path, config = run_copy
    (path / "summary.json").unlink()
    (path / "summary.json").mkdir()
    assert not results.is_complete(path, config.config_hash())
    assert not results.is_complete(path)


def test_a_run_without_summary_is_not_complete(run_copy, tmp_path):
    path, config = run_copy
    (path / "summary.json").unlink()
    assert not results.is_complete(path, config.config_hash())
    assert not results.is_complete(path)
    assert not results.is_complete(tmp_path / "never-ran", config.config_hash())


def test_a_summary_of_another_schema_version_is_not_complete(run_copy):
    path, config = run_copy
    summary = json.loads((path / "summary.json").read_text())
    summary["schema_version"] = results.SCHEMA_VERSION + "-older"
    (path / "summary.json").write_text(json.dumps(summary))
    assert not results.is_complete(path, config.config_hash())
