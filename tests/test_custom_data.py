"""Your own features through the comparison: the `custom` dataset (a .npz/.npy file), the `custom`
profile, `--features` on the command line and `python -m vgcore diagnose`."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch
from _your_data import write_small_features

from vgcore import data
from vgcore.__main__ import main
from vgcore.config import get_profile
from vgcore.data.custom import FeatureFileError, heldout_mask, load_file
from vgcore.metrics import retrieval_metrics, superclass_metrics, variance

from _smoke_build import env


@pytest.fixture
def feats(tmp_path):
    path = tmp_path / "my_features.npz"
    write_small_features(path)
    return path


def config(path, **options):
    return get_profile("custom").config("custom", "triplet", 0, dataset_options={"path": str(path), **options},
                                        epochs=2, batch_size=32)


# ------------------------------------------------------------------ reading the file


def test_shared_split_holds_out_half_of_every_class_with_contiguous_labels(feats):
    train, test = (data.load_dataset("custom", split=s, path=str(feats)) for s in ("train", "test"))
    assert len(train) == len(test) == 72 and train.num_classes == test.num_classes == 12
    assert train.class_names == [f"class{s}{f}" for s in range(3) for f in range(4)]  # sorted names
    assert torch.equal(torch.bincount(test.labels), torch.full((12,), 6))
    assert train.kind == "vectors" and train.images.dtype == torch.float32 and train.images.shape == (72, 8)
    assert torch.equal(train.coarse_labels, train.labels // 4)  # class{s}{f} lies in superclass s
    # the rows are the file's, in file order
    x = np.load(feats)["features"]
    assert np.array_equal(np.concatenate([train.images.numpy(), test.images.numpy()]).sum(0).round(3),
                          x.sum(0).round(3))


def test_disjoint_split_and_the_files_own_split(tmp_path, feats):
    test = data.load_dataset("custom", split="test", path=str(feats), class_split="disjoint")
    assert test.class_names == [f"class{s}{f}" for s in (1, 2) for f in range(4)][2:]  # the second half
    arrays = dict(np.load(feats))
    arrays["split"] = np.where(np.arange(144) % 3 == 0, "test", "train")
    np.savez(tmp_path / "own_split.npz", **arrays)
    own = data.load_dataset("custom", split="test", path=str(tmp_path / "own_split.npz"))
    assert len(own) == 48 and np.allclose(own.images.numpy(), arrays["features"][::3])


def test_npy_features_with_a_labels_file(tmp_path, feats):
    arrays = np.load(feats)
    np.save(tmp_path / "x.npy", arrays["features"])
    np.save(tmp_path / "y.npy", np.arange(144) // 12)
    split = data.load_dataset("custom", split="train", path=str(tmp_path / "x.npy"), labels_path=str(tmp_path / "y.npy"))
    assert split.num_classes == 12 and split.coarse_labels is None


def _write(tmp_path, name="bad.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


X = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
Y = np.arange(20) % 4


@pytest.mark.parametrize("arrays, message", [
    ({"features": X}, "bad.npz has no array 'labels' (it has: 'features'); save the file as np.savez"),
    ({"X": X, "labels": Y}, "bad.npz has no array 'features' (it has: 'X', 'labels')"),
    ({"features": X, "labels": Y, "superclass": Y}, "array(s) ['superclass'] that vgcore does not read"),
    ({"features": X, "labels": Y[:15]}, "bad.npz: 'labels' has shape (15,) but 'features' has 20 rows"),
    ({"features": X, "labels": np.zeros(20, int)}, "bad.npz: 'labels' holds a single class"),
    ({"features": np.where(np.arange(20)[:, None] == 7, np.nan, X), "labels": Y},
     "bad.npz: 'features' has 1 row(s) with NaN or inf (first: row 7); drop or fix those rows"),
    ({"features": X[:, 0], "labels": Y}, "'features' must be a non-empty 2-D numeric array"),
    ({"features": X, "labels": Y, "split": np.array(["train"] * 19 + ["val"])}, "'split' must give 'train' or 'test'"),
    ({"features": X, "labels": Y, "superclasses": np.arange(20) // 10}, "class '0' has samples in several 'superclasses'"),
    ({"features": X, "labels": Y, "split": np.array(["train"] * 19 + ["test"])},
     "the test split (the file's 'split') has 1 samples in 1 class(es)"),
])
def test_bad_files_are_named_with_the_key_and_the_fix_before_training(tmp_path, arrays, message):
    path = _write(tmp_path, **arrays)
    with pytest.raises(FeatureFileError) as err:
        config(path)
    assert message in str(err.value)


def test_missing_file_npy_without_labels_and_no_file(tmp_path):
    with pytest.raises(FeatureFileError, match="features file .*nope.npz not found"):
        config(tmp_path / "nope.npz")
    np.save(tmp_path / "x.npy", X)
    with pytest.raises(FeatureFileError, match="x.npy holds the features alone and no labels were given: pass"):
        config(tmp_path / "x.npy")
    with pytest.raises(FeatureFileError, match="no features file given: pass --features my.npz"):
        get_profile("custom").config("custom", "triplet", 0)


def _truncated(tmp_path):
    """Half of a good .npz: what an interrupted copy leaves."""
    write_small_features(tmp_path / "whole.npz")
    data = (tmp_path / "whole.npz").read_bytes()
    (tmp_path / "bad.npz").write_bytes(data[: len(data) // 2])


def _huge(tmp_path, shape=(10**6, 10**6)):
    """A 1 kB .npz whose 'features' header claims 10^12 float32 values (4 TB)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    labels = io.BytesIO()
    np.save(labels, Y)
    with zipfile.ZipFile(tmp_path / "bad.npz", "w") as z:
        z.writestr("features.npy", header.getvalue() + bytes(64))
        z.writestr("labels.npy", labels.getvalue())
    return tmp_path / "bad.npz"


@pytest.mark.parametrize("make, message", [
    pytest.param(_truncated, "bad.npz could not be read as a NumPy file (File is not a zip file): it is truncated "
                 "or corrupt", id="truncated"),
    pytest.param(_huge, "bad.npz: 'features' is 1000000 x 1000000 float32 (4 TB), over the limit of 8 GB: save fewer "
                 "rows or dimensions, or raise the limit with VGCORE_MAX_ARRAY_GB=4000 (", id="huge"),
])
@pytest.mark.parametrize("command", [("run", "--loss", "triplet", "--features", "bad.npz"),
                                     ("sweep", "--features", "bad.npz"),
                                     ("diagnose", "bad.npz"),
                                     ("diagnose", "good.npz", "--features", "bad.npz")], ids=" ".join)
def test_cli_a_broken_or_huge_file_is_one_line(tmp_path, monkeypatch, capsys, make, message, command):
    make(tmp_path)
    write_small_features(tmp_path / "good.npz")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VGCORE_MAX_ARRAY_GB", raising=False)
    assert main([*command, "--results", "res"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"error: {message}"), err
    assert not (tmp_path / "res").exists()


def test_an_array_over_the_limit_is_refused_before_it_is_loaded(tmp_path, feats, monkeypatch):
    monkeypatch.setenv("VGCORE_MAX_ARRAY_GB", "0.000001")  # 1 kB; 'features' is 144 x 8 float32 = 4.6 kB
    with pytest.raises(FeatureFileError, match=r"my_features.npz: 'features' is 144 x 8 float32 \(4.61 kB\), over the "
                                               r"limit of 1 kB: .* VGCORE_MAX_ARRAY_GB=0.01 \("):
        config(feats)
    monkeypatch.setenv("VGCORE_MAX_ARRAY_GB", "0.01")
    assert config(feats).dataset_options["sha256"] == load_file(feats).sha256
    monkeypatch.setenv("VGCORE_MAX_ARRAY_GB", "lots")
    with pytest.raises(FeatureFileError, match="VGCORE_MAX_ARRAY_GB='lots' is not a number of GB"):
        load_file(feats)
    monkeypatch.setenv("VGCORE_MAX_ARRAY_GB", "1e12")  # no limit: what no machine can hold is still one line
    with pytest.raises(FeatureFileError, match="bad.npz does not fit in memory"):
        load_file(_huge(tmp_path, shape=(10**9, 10**9)))


# ------------------------------------------------------------------ configs, caches, runs


def test_the_config_pins_the_files_content(tmp_path, feats):
    first = config(feats)
    assert first.dataset_options["sha256"] == load_file(feats).sha256 and first.dataset_options["path"] == str(feats)
    assert config(feats).config_hash() == first.config_hash()
    arrays = dict(np.load(feats))
    arrays["features"] = arrays["features"] + 1.0
    np.savez(feats, **arrays)
    assert config(feats).config_hash() != first.config_hash()  # a changed file is a changed config: it reruns
    with pytest.raises(FeatureFileError, match="changed since this config was made"):
        config(feats, sha256=first.dataset_options["sha256"])


def test_a_run_on_your_features(tmp_path, feats):
    from vgcore import train

    result = train.run(config(feats), tmp_path / "run", cache_dir=tmp_path / "cache", progress=False)
    assert result.summary["status"] == "complete" and len(result.steps) == 2 * (72 // 32)
    cached = sorted((tmp_path / "cache" / "custom").glob("*.json"))
    assert len(cached) == 2  # train and test features, keyed by the file's digest
    assert json.loads(cached[0].read_text())["dataset_options"]["sha256"] == load_file(feats).sha256


def _cli(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "vgcore", *args], cwd=tmp_path, env=env(VGCORE_CACHE=str(tmp_path / "c")),
                          capture_output=True, text=True, timeout=600)


def test_cli_rejects_a_bad_file_in_one_line_before_any_run(tmp_path):
    _write(tmp_path, features=X)
    proc = _cli(tmp_path, "sweep", "--features", "bad.npz", "--results", "res")
    assert proc.returncode == 2 and proc.stderr.startswith("error: bad.npz has no array 'labels'")
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "res").exists()
    proc = _cli(tmp_path, "sweep", "--profile", "demo", "--features", "bad.npz")
    assert proc.returncode == 2 and "not 'demo'" in proc.stderr


def _custom_run(root, feats, seed, recall, **settings):
    """A complete `custom` run of triplet on `feats` made by hand (what diagnose reads), its final Recall@1 `recall`."""
    import pandas as pd

    from vgcore import results
    from vgcore.report.diagnose import DIAGNOSE_METRICS, configs_for

    (config,) = configs_for(feats, losses=["triplet"], seeds=[seed], **settings)
    path = results.run_dir(root, config)
    staging = results.start_run(path, config)
    results.write_tables(staging, pd.DataFrame(columns=results.STEP_COLUMNS),
                         pd.DataFrame({"epoch": [0, 1], "split": ["test", "test"], "recall@1": [0.1, recall]}))
    final = {key: recall for key in (*DIAGNOSE_METRICS, "superclass_recall@1", "fine_errors_in_superclass")}
    return results.finish_run(staging, path, {
        "status": "complete", "config": config.to_dict(), "config_hash": config.config_hash(),
        "schema_version": results.SCHEMA_VERSION, "final": final, "convergence": {}, "greediness_mean": {}})


def test_diagnose_compares_one_configuration_a_row_and_only_runs_that_pass_their_check(tmp_path, feats):
    from vgcore.report.diagnose import YOURS, diagnose

    res = tmp_path / "res"
    for seed, recall in ((0, 0.2), (1, 0.4)):
        _custom_run(res, feats, seed, recall, epochs=2, batch_size=32)
    _custom_run(res, feats, 0, 0.9, epochs=40, batch_size=32)
    broken = _custom_run(res, feats, 1, 0.0, epochs=40, batch_size=32)
    (broken / "epochs.csv").write_text("epoch,split\n")  # edited since: fails its check
    arrays = np.load(feats)
    np.savez(tmp_path / "mine.npz", features=arrays["features"], labels=arrays["labels"])
    out = diagnose(tmp_path / "mine.npz", features=feats, results_root=res)
    rows = out.table.set_index("embeddings")["recall@1"].to_dict()
    assert list(rows) == [YOURS, "triplet (epochs=2)", "triplet (epochs=40)"]
    assert (rows["triplet (epochs=2)"], rows["triplet (epochs=40)"]) == ("0.300 ± 0.141", "0.900")
    assert out.n_runs == 3
    text = str(out)
    assert f"left out: {broken / 'epochs.csv'} is corrupt" in text
    assert "triplet (epochs=2): 2 seeds, triplet (epochs=40): 1 seed" in text


@pytest.mark.slow
def test_sweep_then_diagnose_your_embeddings_beside_the_seven_losses(tmp_path, feats):
    proc = _cli(tmp_path, "sweep", "--features", str(feats), "--results", "res", "--quiet", "--set", "epochs=2", "batch_size=32",
                "--losses", "triplet", "contrastive", "--seeds", "0", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count(" custom ") == 4
    # "your" embeddings: a fixed random projection of the same samples, in the file's order
    arrays = np.load(feats)
    z = arrays["features"] @ np.random.default_rng(1).normal(size=(8, 6))
    np.savez(tmp_path / "mine.npz", features=z.astype(np.float32), labels=arrays["labels"])
    proc = _cli(tmp_path, "diagnose", "mine.npz", "--features", str(feats), "--results", "res")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "evaluated on the 72 test rows of my_features.npz, as the seven losses' runs" in proc.stdout
    rows = {line.split("|")[1].strip(): line for line in proc.stdout.splitlines() if line.startswith("| ")}
    assert set(rows) == {"embeddings", "your embeddings", "triplet", "contrastive"}
    # our row is variance / retrieval / superclass structure of exactly those test rows
    test = heldout_mask(load_file(feats), "shared", 0.5, 0)
    codes = np.unique(arrays["labels"], return_inverse=True)[1]
    expected = {**variance(z[test].astype(np.float32), codes[test]),
                **retrieval_metrics(z[test].astype(np.float32), codes[test], nmi=False),
                **superclass_metrics(z[test].astype(np.float32), codes[test], arrays["superclasses"][test])}
    header = [c.strip() for c in rows["embeddings"].split("|")[2:-1]]
    mine = [c.strip() for c in rows["your embeddings"].split("|")[2:-1]]
    for key, value in zip(header, mine, strict=True):
        assert value == f"{expected[key]:.3f}", key
    assert "±" in rows["triplet"]
    # without the runs' features: every row, and a hint to train the losses
    proc = _cli(tmp_path, "diagnose", "mine.npz")
    assert proc.returncode == 0 and "all 144 rows of mine.npz" in proc.stdout
