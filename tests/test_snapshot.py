"""vgcore.snapshot on hand-made runs: only what the notebooks read, thinned, deterministic, small."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vgcore import snapshot
from vgcore.__main__ import main
from vgcore.config import get_profile
from vgcore.io import atomic_open
from vgcore.results import (
    SCHEMA_VERSION,
    STEP_COLUMNS,
    collect,
    embedding_sample,
    file_records,
    load_run,
    overrides_of,
    run_dir,
    seal,
    variant_name,
    write_embeddings,
)

from _ci import unavailable
from _smoke_build import env

ROOT = Path(__file__).resolve().parents[1]


def make_run(root: Path, dataset="synthetic", loss="triplet", seed=0, n_steps=250, wall=12.5, coarse=True,
             commit="a" * 40, recall=0.123456789012345, tag=None, run=None, **overrides) -> Path:
    """A complete run of profile demo: its own run, or with `overrides` a variant's (named `tag`), at
    its place or at `run` (a stale run, when the overrides put it elsewhere)."""
    rng = np.random.default_rng(seed)  # the same numbers for the same seed
    config = get_profile("demo").config(dataset, loss, seed, **overrides)
    run = run or run_dir(root, config, tag)
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    steps = pd.DataFrame({c: rng.random(n_steps) for c in STEP_COLUMNS})
    steps["step"], steps["epoch"] = np.arange(n_steps), np.arange(n_steps) // 50 + 1
    steps["has_positives"] = True
    steps.to_csv(run / "steps.csv", index=False)
    pd.DataFrame({"epoch": [0, 1], "split": ["test", "test"], "recall@1": [0.1, recall]}).to_csv(
        run / "epochs.csv", index=False)
    y = np.repeat(np.arange(20), 80)
    write_embeddings(run, rng.normal(size=(len(y), 8)), y, y // 5 if coarse else None)
    summary = {"status": "complete", "config": config.to_dict(), "config_hash": config.config_hash(),
               "schema_version": SCHEMA_VERSION, "files": file_records(run),
               "final": {"recall@1": 0.123456789012345}, "convergence": {}, "greediness_mean": {},
               "wall_time_s": wall, "steps_per_s": n_steps / wall, "n_steps": n_steps,
               "resolved": config.resolved(), "versions": {"torch": "2.14.1"},
               "git": {"commit": commit, "dirty": False}}
    (run / "summary.json").write_text(json.dumps(seal(summary)))
    if tag is not None:
        variant = run.parents[2]
        (variant / "variant.json").write_text(json.dumps({"profile": "demo", "name": tag, "tag": tag,
                                                          "overrides": {dataset: overrides_of(config)}}))
    return run


def test_thin_steps_is_block_means_of_k_steps_by_hand():
    steps = pd.DataFrame({"step": np.arange(10), "epoch": np.arange(10) // 4 + 1, "train_loss": np.arange(10.0),
                          "has_positives": [True] * 9 + [False]})
    thin = snapshot.thin_steps(steps, 4)
    assert thin["train_loss"].tolist() == [1.5, 5.5, 8.5]  # (0+1+2+3)/4, (4+..+7)/4, (8+9)/2
    assert thin["step"].tolist() == [1, 5, 9] and thin["epoch"].tolist() == [1, 2, 3]  # the middle row's
    assert thin["has_positives"].tolist() == [True, True, False]
    assert snapshot.step_block(250) == 5 and snapshot.step_block(60) == 1


def test_snapshot_keeps_what_the_notebooks_read_and_nothing_volatile(tmp_path):
    results = tmp_path / "results"
    for seed in (0, 1):
        make_run(results, seed=seed)
    make_run(results, dataset="fashionmnist", coarse=False)
    archive = snapshot.write(results, "demo", tmp_path / "snap.tar.gz")
    restored = tmp_path / "restored"
    snapshot.restore(archive, restored)
    for table in ("summary", "epochs"):
        a, b = collect(results, table), collect(restored, table)
        cols = [c for c in a.columns if c not in ("wall_time_s", "steps_per_s")]
        pd.testing.assert_frame_equal(a[cols], b[cols])  # exact: the tables come from these
    copy = load_run(restored / "demo" / "synthetic" / "triplet" / "seed0")
    assert len(copy["steps"]) == 50 and copy["summary"]["snapshot"]["steps_block"] == 5
    assert copy["summary"]["wall_time_s"] is None and copy["summary"]["git"] == {"commit": None, "dirty": None}
    assert copy["summary"]["versions"] == {"torch": "2.14.1"}, "package versions stay"
    original = load_run(results / "demo" / "synthetic" / "triplet" / "seed0")
    keep = embedding_sample(original["embeddings"][1], original["coarse"])
    assert len(keep) == 5 * 50, "superclass 0's five fine classes, 50 samples each"
    assert (copy["embeddings"][0] == original["embeddings"][0][keep]).all()
    assert (embedding_sample(copy["embeddings"][1], copy["coarse"]) == np.arange(len(keep))).all(), \
        "the figure draws every sample the snapshot kept: the same figure as from the full run"
    assert not (restored / "demo" / "synthetic" / "triplet" / "seed1" / "embeddings.npz").exists(), "lowest seed only"
    fashion = load_run(restored / "demo" / "fashionmnist" / "triplet" / "seed0")
    assert fashion["coarse"] is None and len(fashion["embeddings"][1]) == 10 * 50, "first ten classes"


def test_snapshot_bytes_change_only_when_a_number_does(tmp_path):
    a, b, c = (tmp_path / n for n in ("a", "b", "c"))
    make_run(a, wall=10.0, commit="a" * 40)
    make_run(b, wall=99.0, commit="b" * 40)  # same numbers, another rebuild: other timings and commit
    make_run(c, recall=0.5)  # one number differs
    sa, sb, sc = (snapshot.archive_bytes(snapshot.members(r, "demo")) for r in (a, b, c))
    assert sa == sb and sa != sc
    out = snapshot.write(a, "demo", tmp_path / "snap.tar.gz")
    os.utime(out, (1, 1))
    snapshot.write(b, "demo", out)
    assert out.stat().st_mtime == 1, "an archive with the same content is left untouched"


def test_restore_says_where_the_snapshot_should_be(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="figures/demo/results.tar.gz"):
        snapshot.restore(tmp_path / "missing.tar.gz", tmp_path)
    assert main(["snapshot", "restore", str(tmp_path / "missing.tar.gz"), "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith(f"error: no snapshot at {tmp_path}"), err


@pytest.mark.parametrize("escaping", ["../synthetic/triplet/seed0/summary.json",
                                      "/synthetic/triplet/seed1/summary.json"])
def test_restore_refuses_an_escaping_member_before_writing_anything(tmp_path, escaping):
    """A good run first, then a member outside the results folder (five parts, like a run's file): the
    whole archive is refused up front, so no partial run is left behind for the notebooks to read."""
    import io
    import re
    import tarfile

    archive = tmp_path / "evil.tar.gz"
    good = [f"demo/synthetic/triplet/seed0/{name}" for name in ("config.json", "epochs.csv", "summary.json")]
    with tarfile.open(archive, "w:gz") as tar:
        for name in [*good, escaping]:  # in this order: the good run would be written first
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"{}"))
    sandbox = tmp_path / "sandbox"
    results = sandbox / "results"
    results.mkdir(parents=True)
    with pytest.raises((ValueError, tarfile.TarError)) as err:  # TarError: the extraction filter's, too late
        snapshot.restore(archive, results)
    assert sorted(sandbox.rglob("*")) == [results], "the restore wrote a partial run before refusing the archive"
    assert issubclass(err.type, ValueError) and re.match(
        rf"unexpected member '{re.escape(escaping)}' in .*evil\.tar\.gz: .*<profile>/.*<dataset>/<loss>/seed<k>/<file>",
        str(err.value)), str(err.value)



# ------------------------------------------------------------------ what restore accepts


def _archive(tmp_path: Path, files: dict[str, bytes]) -> Path:
    out = tmp_path / "snap.tar.gz"
    out.write_bytes(snapshot.archive_bytes(files))
    return out


def _written(root: Path) -> list[str]:
    """The files under `root`, less the locks (which stay by design)."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.suffix != ".lock")


@pytest.mark.parametrize("name", [
    "evil/x/y/seed0/run.py",  # at the run layout, of no profile
    "demo/synthetic/triplet/seed0/run.py",  # in a run folder, not a run's file
    "demo/nodata/triplet/seed0/config.json",  # no such dataset
    "demo/synthetic/triplet/seedx/config.json",
    "demo/synthetic/triplet/seed0/config.json/x",
    "demo/variants/v1/notes.txt",
    "demo/variants/v2/variant.json",  # the record of a variant the archive holds no run of
])
def test_restore_refuses_what_no_run_holds_before_writing_anything(tmp_path, name):
    results = tmp_path / "results"
    make_run(results)
    files = snapshot.members(results, "demo") | {name: b"print('hello')\n"}
    with pytest.raises(ValueError, match=f"unexpected member '{re.escape(name)}'"):
        snapshot.restore(_archive(tmp_path, files), tmp_path / "restored")
    assert not (tmp_path / "restored").exists()


def test_restore_bounds_each_member_and_the_total(tmp_path):
    results = tmp_path / "results"
    run = make_run(results)
    files = snapshot.members(results, "demo")
    zeros = files | {"demo/synthetic/triplet/seed0/embeddings.npz": bytes(1 << 20)}  # 1 MiB, a few kB packed
    with pytest.raises(ValueError, match=r"demo/synthetic/triplet/seed0/embeddings.npz .*holds 1048576 bytes.* "
                                         r"limit of 65536"):
        snapshot.restore(_archive(tmp_path, zeros), tmp_path / "restored", max_member_bytes=1 << 16)
    assert not (tmp_path / "restored").exists()
    total = sum(map(len, files.values()))
    with pytest.raises(ValueError, match=f"more than {total - 1} bytes in all"):
        snapshot.restore(_archive(tmp_path, files), tmp_path / "restored", max_total_bytes=total - 1)
    assert not (tmp_path / "restored").exists()
    restored = snapshot.restore(_archive(tmp_path, files), tmp_path / "restored", max_total_bytes=total)
    assert restored == [tmp_path / "restored" / run.relative_to(results)]


def test_restore_lands_no_run_that_fails_its_check(tmp_path):
    results = tmp_path / "results"
    for seed in (0, 1):
        make_run(results, seed=seed)
    files = snapshot.members(results, "demo")
    files["demo/synthetic/triplet/seed1/summary.json"] = b'{"status": "comp'  # truncated
    with pytest.raises(ValueError, match=r"snap.tar.gz: demo/synthetic/triplet/seed1/summary.json is not valid JSON"):
        snapshot.restore(_archive(tmp_path, files), tmp_path / "restored")
    assert _written(tmp_path / "restored") == [], "not even the good run: the archive is refused whole"
    files = snapshot.members(results, "demo")
    files["demo/synthetic/triplet/seed0/epochs.csv"] += b"9,test,0.9\n"  # not what its summary recorded
    with pytest.raises(ValueError, match=r"demo/synthetic/triplet/seed0/epochs.csv is corrupt"):
        snapshot.restore(_archive(tmp_path, files), tmp_path / "restored")
    assert _written(tmp_path / "restored") == []


def test_restore_again_repairs_a_broken_run_and_keeps_an_intact_one(tmp_path):
    results = tmp_path / "results"
    for seed in (0, 1, 2):
        make_run(results, seed=seed)
    archive = snapshot.write(results, "demo", tmp_path / "snap.tar.gz")
    restored = tmp_path / "restored"
    runs = snapshot.restore(archive, restored)
    assert runs == [restored / "demo" / "synthetic" / "triplet" / f"seed{s}" for s in (0, 1, 2)]
    summary = runs[0] / "summary.json"
    summary.write_text(summary.read_text()[:40])  # truncated: the run is there but unreadable
    (runs[1] / "epochs.csv").write_text("epoch,split\n")  # edited
    os.utime(runs[2] / "steps.csv", (1, 1))
    assert snapshot.restore(archive, restored) == runs[:2]
    pd.testing.assert_frame_equal(collect(restored, "epochs"), collect(results, "epochs"))
    assert (runs[2] / "steps.csv").stat().st_mtime == 1, "an intact run is kept as it is"


def test_restore_moves_a_stale_run_to_its_variant_folder_and_puts_the_snapshots_in_place(tmp_path):
    results = tmp_path / "results"
    make_run(results)
    archive = snapshot.write(results, "demo", tmp_path / "snap.tar.gz")
    restored = tmp_path / "restored"
    own = restored / "demo" / "synthetic" / "triplet" / "seed0"
    make_run(restored, run=own, epochs=99)  # trained here before the profile changed
    assert snapshot.restore(archive, restored) == [own]
    assert collect(restored, "summary")["config_hash"].tolist() == collect(results, "summary")["config_hash"].tolist()
    stale = get_profile("demo").config("synthetic", "triplet", 0, epochs=99)
    moved = collect(restored, "summary", "demo", variant=variant_name(overrides_of(stale)))
    assert moved["config_hash"].tolist() == [stale.config_hash()], "kept, as a variant"


def test_restore_replaces_a_run_of_the_profiles_config_made_by_older_code(tmp_path, monkeypatch):
    from vgcore.losses.triplet import TripletLoss

    results = tmp_path / "results"
    make_run(results)
    archive = snapshot.write(results, "demo", tmp_path / "snap.tar.gz")
    own = tmp_path / "restored" / "demo" / "synthetic" / "triplet" / "seed0"
    with monkeypatch.context() as older:  # the same config, made before the loss's numerics changed
        older.setattr(TripletLoss, "numerics_version", TripletLoss.numerics_version - 1)
        make_run(tmp_path / "restored", run=own, recall=0.5)
    assert snapshot.restore(archive, tmp_path / "restored") == [own]
    restored = collect(tmp_path / "restored", "summary")
    assert restored["config_hash"].tolist() == collect(results, "summary")["config_hash"].tolist()
    assert not (tmp_path / "restored" / "demo" / "variants").exists(), "no variant: it was the profile's config"


def test_a_variants_snapshot_restores(tmp_path):
    results = tmp_path / "results"
    for seed in (0, 1):
        make_run(results, seed=seed, tag="three", epochs=3)
    archive = snapshot.write(results, "demo", tmp_path / "snap.tar.gz", variant="three")
    restored = tmp_path / "restored"
    assert len(snapshot.restore(archive, restored)) == 2
    for table in ("summary", "epochs"):
        a, b = (collect(r, table, "demo", variant="three") for r in (results, restored))
        pd.testing.assert_frame_equal(a.drop(columns=["wall_time_s", "steps_per_s"], errors="ignore"),
                                      b.drop(columns=["wall_time_s", "steps_per_s"], errors="ignore"))


def test_cli_restore_where_it_cannot_write_says_so_in_one_line(tmp_path, capsys):
    results = tmp_path / "results"
    make_run(results)
    archive = snapshot.write(results, "demo", tmp_path / "snap.tar.gz")
    (tmp_path / "file").write_text("")
    target = tmp_path / "file" / "results"  # under a regular file: no one can write there, root neither
    assert main(["snapshot", "restore", str(archive), "--results", str(target)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: cannot write under {target}") and "--results" in err


def test_cli_restore_into_a_read_only_folder_says_so_in_one_line(tmp_path):
    results = tmp_path / "results"
    make_run(results)
    archive = snapshot.write(results, "demo", tmp_path / "snap.tar.gz")
    target = tmp_path / "read-only"
    target.mkdir()
    target.chmod(0o555)
    prefix = []
    if os.geteuid() == 0:  # root writes anyway: drop the capability that lets it
        if shutil.which("setpriv") is None:
            unavailable("running as root without setpriv to drop CAP_DAC_OVERRIDE", "apt-get install util-linux")
        prefix = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    proc = subprocess.run([*prefix, sys.executable, "-m", "vgcore", "snapshot", "restore", str(archive),
                           "--results", str(target)], capture_output=True, text=True, env=env(), timeout=300)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(f"error: cannot write under {target}: Permission denied") and "--results" in proc.stderr
    assert list(target.iterdir()) == []


def test_cli_write_on_a_full_disk_says_so_in_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    results = tmp_path / "results"
    make_run(results)
    out = tmp_path / "figs" / "results.tar.gz"

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)  # where a full disk shows at the latest
    assert main(["snapshot", "write", "--results", str(results), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"error: cannot write {out}: No space left on device") and "free" in err
    assert _written(out.parent) == []


def test_write_removes_what_a_killed_write_left_and_git_ignores_it(tmp_path):
    results = tmp_path / "results"
    make_run(results)
    out = tmp_path / "figs" / "results.tar.gz"
    out.parent.mkdir()
    for _ in range(2):  # a new archive, then the same one (left untouched)
        leftover = out.parent / ".tmp-results.tar.gz.k1ll3d"
        leftover.write_bytes(b"half an archive")
        snapshot.write(results, "demo", out)
        assert sorted(p.name for p in out.parent.iterdir()) == ["results.tar.gz"]
    with atomic_open(out, "wb") as f:  # a write in progress is not a leftover
        f.write(b"x")
        (live,) = out.parent.glob(".tmp-results.tar.gz.*")
        snapshot.write(results, "demo", out)
        assert live.exists()
    ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", "figures/demo/.tmp-results.tar.gz.k1ll3d"],
                             cwd=ROOT)
    assert ignored.returncode == 0, "git does not ignore what a killed write leaves"


def test_restore_works_when_the_temp_folder_is_on_another_filesystem(tmp_path, monkeypatch):
    """Runs are staged inside the results folder: the last step is a rename, which cannot cross filesystems."""
    results, restored, other_fs = tmp_path / "results", tmp_path / "restored", tmp_path / "other_fs"
    make_run(results)
    archive = snapshot.write(results, "demo", tmp_path / "snap.tar.gz")
    other_fs.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(other_fs))
    rename = os.rename

    def same_fs_rename(src, dst):
        if (other_fs in Path(src).parents) != (other_fs in Path(dst).parents):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return rename(src, dst)

    monkeypatch.setattr("os.rename", same_fs_rename)
    assert snapshot.restore(archive, restored) == [restored / "demo" / "synthetic" / "triplet" / "seed0"]


def test_the_default_archive_is_figures_profile_results_tar_gz():
    """Where `snapshot write` puts it and the notebooks and `snapshot restore` look for it."""
    assert snapshot.default_archive("demo") == Path("figures") / "demo" / "results.tar.gz"
    assert snapshot.default_archive("paper", "/x") == Path("/x/paper/results.tar.gz")


def test_the_snapshots_steps_keep_four_significant_digits(tmp_path):
    import tarfile

    make_run(tmp_path / "results")
    archive = snapshot.write(tmp_path / "results", "demo", tmp_path / "snap.tar.gz")
    with tarfile.open(archive) as tar:
        (member,) = [m for m in tar.getmembers() if m.name.endswith("steps.csv")]
        text = tar.extractfile(member).read().decode()
    numbers = [cell for line in text.splitlines()[1:] for cell in line.split(",") if cell not in ("True", "False")]
    assert numbers and all(len(cell.lstrip("-").replace(".", "").lstrip("0").split("e")[0]) <= 4 for cell in numbers)
    assert any(len(cell.lstrip("-").replace(".", "").lstrip("0").split("e")[0]) == 4 for cell in numbers)
