"""The notebook build (workflow/Snakefile, vgcore.workflow): the DAG, bad input, resuming, retries."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from vgcore import workflow
from vgcore.config import get_profile
from vgcore.report import outputs, plots

from _smoke_build import ROOT, env, smoke_build

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def snakemake(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "workflow" / "Snakefile"),
           "--directory", str(cwd), "--cores", "2", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=timeout)


def job_counts(output: str) -> dict[str, int]:
    """{rule: jobs} from the table of `snakemake --dry-run --quiet rules`."""
    counts = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


def test_dry_run_of_the_demo_lists_the_whole_dag(tmp_path):
    proc = snakemake("--dry-run", "--quiet", "rules", "--config", "profile=demo", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    prof = get_profile("demo")
    counts = job_counts(proc.stdout + proc.stderr)
    assert counts["features"] == len(prof.datasets)
    assert counts["train"] == len(prof.datasets) * len(prof.seeds)  # one fused job per dataset x seed
    assert "train_notebook" not in counts
    assert all(counts[f"analysis_{nb}"] == 1 for nb in outputs.ANALYSIS)
    assert counts["index"] == 1 and counts["all"] == 1


@pytest.mark.parametrize(("config", "message"), [
    (["profile=nope"], "choose one of: smoke, demo, paper"),
    (["profile=smoke", "losses=triplet,hinge"], "unknown loss(s) ['hinge'] of profile 'smoke'; choose from: contrastive"),
    (["profile=demo", "datasets=cifar10"], "unknown dataset(s) ['cifar10'] of profile 'demo'; choose from: fashionmnist"),
    (["profile=smoke", "seeds=a"], "seeds must be non-negative integers"),
])
def test_bad_profile_loss_dataset_or_seed_stops_the_dag_naming_the_choices(tmp_path, config, message):
    proc = snakemake("--dry-run", "--config", *config, cwd=tmp_path)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr


@pytest.mark.parametrize(("config", "message"), [
    (["profile=smoke", "overrides=epochs=2"], "overrides change the runs: give results=... and figures=..."),
    (["profile=smoke", "results=r", "figures=f", "overrides=epochz=2"], "unknown config key(s) ['epochz']"),
    (["profile=smoke", "results=r", "figures=f", "overrides=loss_params.margn=0.1"], "unknown hyperparameter"),
])
def test_bad_overrides_stop_the_dag(tmp_path, config, message):
    proc = snakemake("--dry-run", "--config", *config, cwd=tmp_path)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr


def test_overrides_reach_every_job_of_the_dag(tmp_path):
    proc = snakemake("--dry-run", "--printshellcmds", "--config", "profile=smoke", "results=r", "figures=f",
                     "overrides=epochs=2 eval_train_size=16", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert "vgcore sweep --profile smoke --datasets synthetic --seeds 0" in out and "--set epochs=2 eval_train_size=16" in out
    assert out.count("-p overrides '{\"epochs\": 2, \"eval_train_size\": 16}'") == 2  # features, train's notebooks
    assert "--each loss contrastive triplet npair infonce arcface scl ccl" in out
    tag = workflow.build_tag({"epochs": 2, "eval_train_size": 16})  # the runs of overrides are a variant's
    assert f"--tag {tag}" in out and f"-p tag {tag}" in out and f"r/smoke/variants/{tag}/synthetic/ccl/seed0" in out
    assert out.count(f"-p variant {tag}") == len(outputs.ANALYSIS)  # the analysis notebooks read that variant


def test_the_cli_and_make_check_the_selection_before_starting_snakemake(capsys):
    from vgcore.__main__ import main

    assert main(["demo", "--losses", "triplet", "hinge", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "unknown loss(s) ['hinge']" in err and "triplet" in err
    assert main(["figures", "--profile", "nope", "--dry-run"]) == 2
    assert "unknown profile 'nope'; choose one of: smoke, demo, paper" in capsys.readouterr().err
    assert main(["paper", "--set", "epochs=2", "--dry-run"]) == 2
    assert "overrides change the runs" in capsys.readouterr().err
    assert main(["paper", "--set", "epochz=2", "--results", "r", "--figures", "f", "--dry-run"]) == 2
    assert "unknown config key(s) ['epochz']" in capsys.readouterr().err


def test_snakemake_command_carries_profile_and_selection():
    cmd = workflow.snakemake_command("smoke", jobs=3, losses="triplet,scl", seeds="0,4", directory="/x")
    assert cmd[1:3] == ["-m", "snakemake"]
    assert cmd[cmd.index("--cores") + 1] == "3" and cmd[cmd.index("--directory") + 1] == "/x"
    assert snakemake_config(cmd) == {"profile": "smoke", "results": "results", "figures": "figures",
                                     "losses": "triplet,scl", "seeds": "0,4"}
    with pytest.raises(ValueError, match="choose one of: smoke, demo, paper"):
        workflow.snakemake_command("huge")


def test_slurm_profile_is_a_valid_snakemake_profile():
    config = yaml.safe_load((ROOT / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
    assert config["executor"] == "slurm"
    assert config["retries"] >= 1 and config["rerun-incomplete"] is True
    assert {"runtime", "mem_mb"} <= set(config["default-resources"])
    assert "train" in config["set-resources"] and "features" in config["set-resources"]


# --- executing notebooks ---------------------------------------------------------------------

def tiny_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("print(x + 1)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def fake_kernel(root: Path, name: str, fail_times: int) -> Path:
    """A kernel spec whose first `fail_times` starts exit at once; later ones start ipykernel."""
    counter = root / f"{name}.starts"
    launcher = root / f"{name}.py"
    launcher.write_text(
        "import pathlib, runpy, sys\n"
        f"c = pathlib.Path({str(counter)!r})\n"
        "n = int(c.read_text()) + 1 if c.exists() else 1\n"
        "c.write_text(str(n))\n"
        f"if n <= {fail_times}:\n    sys.exit(1)\n"
        "sys.argv = ['ipykernel_launcher', *sys.argv[1:]]\n"
        "runpy.run_module('ipykernel_launcher', run_name='__main__')\n")
    spec = root / "kernels" / name
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, str(launcher), "-f", "{connection_file}"], "display_name": name,
        "language": "python"}))
    return counter


def test_a_kernel_that_fails_to_start_is_retried(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    counter = fake_kernel(tmp_path, "flaky", fail_times=1)
    out = workflow.execute(tiny_notebook(tmp_path / "in.ipynb"), tmp_path / "out.ipynb", {"x": 41}, kernel="flaky",
                        retries=2, start_timeout=60, log=lambda m: None)
    assert counter.read_text() == "2"
    assert nbformat.read(out, 4).cells[-1].outputs[0]["text"] == "42\n"


def test_execute_many_retries_a_kernel_that_fails_to_start(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    counter = fake_kernel(tmp_path, "flaky_many", fail_times=1)
    outs = workflow.execute_many([(tiny_notebook(tmp_path / "in.ipynb"), tmp_path / "o.ipynb", {"x": 41})],
                                 kernel="flaky_many", retries=2, start_timeout=60, log=lambda m: None)
    assert counter.read_text() == "2"
    assert nbformat.read(outs[0], 4).cells[-1].outputs[0]["text"] == "42\n"


def test_a_kernel_that_never_starts_fails_after_the_retries(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    counter = fake_kernel(tmp_path, "dead", fail_times=99)
    with pytest.raises(RuntimeError, match="(?i)kernel"):
        workflow.execute(tiny_notebook(tmp_path / "in.ipynb"), tmp_path / "out.ipynb", kernel="dead", retries=1,
                      start_timeout=30, log=lambda m: None)
    assert counter.read_text() == "2"


def test_execute_many_runs_each_notebook_in_one_kernel_with_a_clean_namespace(tmp_path):
    nb = tmp_path / "in.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 0", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import os\nprint(x, 'left' in dir(), os.getpid())\nleft = x")],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}), nb)
    outs = workflow.execute_many([(nb, tmp_path / f"out{i}.ipynb", {"x": i}) for i in range(3)], log=lambda m: None)
    printed = [nbformat.read(o, 4).cells[-1].outputs[0]["text"].split() for o in outs]
    assert [p[:2] for p in printed] == [["0", "False"], ["1", "False"], ["2", "False"]]  # no name leaks across
    assert len({p[2] for p in printed}) == 1  # one kernel process for all three


def test_execute_many_stops_at_the_first_failing_notebook_and_keeps_it(tmp_path):
    nb = tmp_path / "in.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 0", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("assert x != 1, 'bad x'")],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}), nb)
    outs = [tmp_path / f"out{i}.ipynb" for i in range(3)]
    with pytest.raises(Exception, match="bad x"):
        workflow.execute_many([(nb, o, {"x": i}) for i, o in enumerate(outs)], log=lambda m: None)
    assert outs[0].exists() and workflow.failed_copy(outs[1]).exists() and not outs[2].exists()
    from vgcore.__main__ import main

    assert main(["execute", str(nb), str(outs[0]), str(outs[1]), "--each", "x", "0"]) == 2  # one output per value


def test_a_failing_notebook_keeps_its_partial_output_and_is_not_retried(tmp_path):
    """Bad input through papermill: the notebook stops in its first cell, naming the valid losses."""
    out = tmp_path / "run" / "02_train.ipynb"
    proc = subprocess.run([sys.executable, "-m", "vgcore", "execute", str(ROOT / "notebooks" / "02_train.ipynb"),
                           str(out), "-p", "profile", "smoke", "-p", "dataset", "synthetic", "-p", "loss", "hinge",
                           "-p", "results_root", str(tmp_path / "results")],
                          cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "unknown loss 'hinge'; choose one of: contrastive, triplet" in proc.stderr
    partial = workflow.failed_copy(out)
    assert partial.exists() and "unknown loss 'hinge'" in partial.read_text()
    assert "retrying" not in proc.stderr


# --- the real smoke build ---------------------------------------------------------------------

@pytest.mark.slow
def test_smoke_build_makes_every_target_and_names_its_notebooks():
    b = smoke_build()
    prof = get_profile("smoke")
    runs = b.results / "smoke"
    for dataset in prof.datasets:
        assert (runs / dataset / "01_features.ipynb").exists()
        for loss in prof.losses:
            for seed in prof.seeds:
                run = runs / dataset / loss / f"seed{seed}"
                assert {"02_train.ipynb", "summary.json", "steps.csv", "epochs.csv"} <= {p.name for p in run.iterdir()}
    fig = b.figures / "smoke"
    expected = {*outputs.analysis_files(fig, profile="smoke"), fig / "README.md", *(fig / "notebooks" / f"{nb}.ipynb" for nb in outputs.ANALYSIS),
                *(outputs.manifest(fig, nb) for nb in outputs.ANALYSIS), fig / "results.tar.gz"}
    written = {p for p in fig.rglob("*") if p.is_file()}
    assert written == expected
    index = (fig / "README.md").read_text()
    for nb in outputs.ANALYSIS:
        for item in outputs.items(nb, "smoke"):
            row = next(line for line in index.splitlines() if f"`{item.name}`" in line and item.caption in line)
            assert f"notebooks/{nb}.ipynb" in row
    maker = {item.name: nb for nb, items in outputs.ANALYSIS.items() for item in items if item.kind == "table"}
    for table in fig.glob("tables/*.md"):
        assert f"notebooks/{maker[table.stem]}.ipynb" in table.read_text(), table.name


@pytest.mark.slow
def test_a_second_build_does_nothing_and_a_stale_run_reruns_only_what_depends_on_it():
    b = smoke_build()
    files = [p for p in (b.results.rglob("*"), b.figures.rglob("*")) for p in p if p.is_file()]
    before = {p: p.stat().st_mtime_ns for p in files}
    proc = b.snakemake()  # "Nothing to be done" and unchanged files prove no job ran
    assert "Nothing to be done" in proc.stdout + proc.stderr
    assert {p: p.stat().st_mtime_ns for p in files} == before

    # A changed run result makes the analysis stale, not the other runs. (Snakemake compares input
    # checksums too: a `touch` that leaves the content alone reruns nothing.)
    summary = b.results / "smoke" / "synthetic" / "triplet" / "seed0" / "summary.json"
    original = summary.read_text()
    try:
        summary.write_text(original.replace('"status"', '"note": "edited by the test",\n  "status"', 1))
        counts = job_counts(b.snakemake("--dry-run", "--quiet", "rules").stdout)
    finally:
        summary.write_text(original)
    assert all(counts.get(f"analysis_{nb}") == 1 for nb in outputs.ANALYSIS) and counts.get("index") == 1
    assert "train" not in counts and "features" not in counts


# --- paths in the build's shell commands -----------------------------------------------------

ODD = "odd dir ü;touch PWNED;x $(touch PWNED2) `touch PWNED3` it's \"q\""
"""A folder name with a space, non-ASCII letters and shell metacharacters."""


def shell_commands(output: str) -> list[list[list[str]]]:
    """Each "Shell command:" of a Snakemake log, as a shell would split it: a list of simple commands
    (split at ``;``, ``&&``, ``||``, ``|``, ``&``), each a list of words."""
    import shlex

    found = []
    for line in output.splitlines():
        if line.startswith("Shell command: ") and line != "Shell command: None":  # None: rule all
            lexer = shlex.shlex(line.removeprefix("Shell command: "), posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            commands, words = [], []
            for token in lexer:
                if token in (";", "&&", "||", "|", "&"):
                    commands.append(words)
                    words = []
                else:
                    words.append(token)
            found.append([*commands, words])
    return found


def test_odd_paths_reach_the_build_s_shell_commands_as_single_words(tmp_path):
    """Every path the build pastes into a shell command (results, figures, data and cache roots, the
    checkout's notebooks) arrives as one word, and no metacharacter in it starts another command."""
    import shutil

    checkout = tmp_path / ODD / "checkout"
    for part in ("vgcore", "workflow", "notebooks"):
        shutil.copytree(ROOT / part, checkout / part, ignore=shutil.ignore_patterns("__pycache__"))
    work = tmp_path / "work"
    work.mkdir()
    paths = {key: str(tmp_path / ODD / key) for key in ("results", "figures", "data_root", "cache_dir")}
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(checkout / "workflow" / "Snakefile"),
           "--directory", str(work), "--cores", "2", "--dry-run", "--printshellcmds",
           "--config", "profile=smoke", *(f"{k}={v}" for k, v in paths.items())]
    proc = subprocess.run(cmd, cwd=work, env={**env(), "PYTHONPATH": str(checkout)}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = shell_commands(proc.stdout + proc.stderr)
    # features, train, the analysis notebooks, and index and snapshot as shell commands too (not `run:`
    # blocks, which Snakemake runs in a child snakemake whose command line it does not shell-quote)
    assert len(jobs) == 4 + len(outputs.ANALYSIS)
    for job in jobs:
        programs = [words[0] for words in job if words[0] != "export"]
        assert programs and all(p.startswith("OMP_NUM_THREADS=") or p == sys.executable for p in programs), job
        words = [w for c in job for w in c]
        pairs = set(zip(words, words[1:], strict=False))
        if "index" in words:
            assert ("index", paths["figures"] + "/smoke") in pairs, job
            assert all(w.startswith(paths["results"] + "/smoke/analysis/") for w in words[words.index("--notebooks") + 1:])
            continue
        if "snapshot" in words:
            assert {("--results", paths["results"]), ("--out", paths["figures"] + "/smoke/results.tar.gz")} <= pairs
            continue
        notebooks = [w for w in words if w.endswith(".ipynb") and "/notebooks/" in w]
        assert notebooks and all(w.startswith(str(checkout / "notebooks") + "/") for w in notebooks), job
        if "sweep" in words:
            assert {("--results", paths["results"]), ("--data-root", paths["data_root"]),
                    ("--cache-dir", paths["cache_dir"])} <= pairs
        if "figures_root" in words:
            assert ("figures_root", paths["figures"]) in pairs and ("results_root", paths["results"]) in pairs
        if "dataset" in words:  # features and train: the notebooks that load data
            assert ("data_root", paths["data_root"]) in pairs and ("cache_dir", paths["cache_dir"]) in pairs
        outs = [w for w in words if w.endswith(".ipynb") and w not in notebooks]
        assert outs and all(w.startswith(paths["results"] + "/smoke/") for w in outs), job


def snakemake_config(cmd: list[str]) -> dict:
    """The config a snakemake command line gives its Snakefile (``--configfile`` then ``--config``)."""
    from snakemake.cli import parse_config

    config = json.loads(Path(cmd[cmd.index("--configfile") + 1]).read_text()) if "--configfile" in cmd else {}
    args = cmd[cmd.index("--config") + 1:]
    return {**config, **parse_config(args[:next((i for i, a in enumerate(args) if a.startswith("--")), len(args))])}


@pytest.mark.parametrize("path", [ODD, "with #hash", "key: value", "2024", "True", "[a]", "- a", " lead\ntwo'",
                                  "résultats", "results/custom"])
def test_the_cli_passes_results_and_figures_roots_to_snakemake_verbatim(path, tmp_path):
    """Snakemake parses ``--config key=value`` values as YAML (a ``#`` starts a comment, ``2024`` is a
    number) and hands them unquoted to the jobs it spawns: the roots must come out as given."""
    cmd = workflow.snakemake_command("smoke", results=path, figures=path + "-f", directory=tmp_path, extra=["--dry-run"])
    assert snakemake_config(cmd) == {"profile": "smoke", "results": path, "figures": path + "-f"}
    assert ("--configfile" in cmd) == (path not in ("résultats", "results/custom"))  # plain: on the command line


def test_a_root_with_a_brace_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"the figures root 'f \{x\}' has a brace"):
        workflow.snakemake_command("smoke", figures="f {x}")


def test_a_path_with_shell_metacharacters_runs_nothing(tmp_path):
    """A real job of the build (features, into a results root full of metacharacters) starts only
    vgcore: the kernel does not exist, so the job fails at once, and no marker file appears."""
    results = tmp_path / "r $(touch PWNED1) `touch PWNED2`;touch PWNED3;x"  # quotes balanced: bash would run it
    proc = snakemake("--until", "features", "--config", "profile=smoke", f"results={results}", "kernel=nokernel",
                     cwd=tmp_path)
    assert not list(tmp_path.rglob("PWNED*")) and not list(ROOT.glob("PWNED*"))
    assert proc.returncode != 0 and "No such kernel named nokernel" in proc.stdout + proc.stderr


# --- a killed or interrupted build ------------------------------------------------------------

def start(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    """``python -m vgcore ARGS`` in a session of its own (its process group gets a terminal's Ctrl-C),
    with SIGINT's default action even where the test runner was started with it ignored (a shell's
    ``cmd &`` does that, and Python then never raises KeyboardInterrupt)."""
    import signal

    return subprocess.Popen([sys.executable, "-m", "vgcore", *args], cwd=cwd, env=env(VGCORE_CACHE=str(cwd / "cache")),
                            stdout=subprocess.DEVNULL, stderr=log.open("w"), start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(condition, proc: subprocess.Popen, log: Path, deadline: float = 600) -> None:
    """Poll until `condition()` holds; fail if `proc` exits first (a fail-safe deadline, not a timing check)."""
    import time

    end = time.monotonic() + deadline
    while not condition():
        assert proc.poll() is None and time.monotonic() < end, log.read_text()[-3000:]
        time.sleep(0.2)


def test_a_running_build_s_lock_is_left_alone_and_a_stale_one_removed(tmp_path):
    locks = tmp_path / ".snakemake" / "locks"
    locks.mkdir(parents=True)
    (locks / "0.output.lock").write_text("results/smoke/synthetic/01_features.ipynb\n")
    said = []
    held = workflow.hold_build_lock(tmp_path)  # what the Snakefile does in every snakemake process
    assert not workflow.recover_stale_lock(tmp_path, log=said.append) and locks.is_dir() and not said
    import os

    os.close(held)  # the build's process is gone
    assert workflow.recover_stale_lock(tmp_path, log=said.append) and not locks.exists()
    assert len(said) == 1 and "recovered" in said[0] and str(locks) in said[0]


@pytest.mark.slow
def test_a_build_killed_with_sigkill_does_not_block_the_next_one(tmp_path):
    import os
    import signal

    build = ["figures", "--profile", "smoke", "--results", "r", "--figures", "f", "-j", "1"]
    log = tmp_path / "killed.log"
    proc = start(build, tmp_path, log)
    locks = tmp_path / ".snakemake" / "locks"
    wait_for(lambda: locks.is_dir() and any(locks.iterdir()), proc, log)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert any(locks.iterdir())  # what Snakemake left: it would refuse every build here ("--unlock")
    nxt = subprocess.run([sys.executable, "-m", "vgcore", *build, "--", "--touch"], cwd=tmp_path, env=env(),
                         capture_output=True, text=True, timeout=600)
    assert nxt.returncode == 0, nxt.stderr[-3000:]
    assert "cannot be locked" not in nxt.stderr
    assert [line for line in nxt.stderr.splitlines() if line.startswith("recovered ")] == [
        f"recovered {Path('.snakemake', 'locks')}: the build that held it was stopped and no build is running here"]


INTERRUPTED = "interrupted: what finished is kept; the same command resumes"


def test_ctrl_c_stops_a_sweep_with_one_line_and_leaves_nothing_half_written(tmp_path):
    import os
    import signal

    log = tmp_path / "sweep.log"
    proc = start(["sweep", "--profile", "smoke", "--losses", "triplet", "--results", "r", "--quiet", "--set", "epochs=100000"],
                 tmp_path, log)
    wait_for(lambda: any((tmp_path / "r").rglob(".tmp-seed0.*")), proc, log)  # training: its staging folder
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=300) == 130
    assert log.read_text().splitlines() == [INTERRUPTED]
    assert not [p for p in (tmp_path / "r").rglob("*") if p.name.startswith(".tmp-") or p.name == "seed0"]


@pytest.mark.slow
def test_ctrl_c_stops_a_build_with_one_line_and_the_next_build_is_not_blocked(tmp_path):
    import os
    import signal

    build = ["figures", "--profile", "smoke", "--results", "r", "--figures", "f", "-j", "1"]
    log = tmp_path / "build.log"
    proc = start(build, tmp_path, log)
    features = tmp_path / "r" / "smoke" / "synthetic" / "01_features.ipynb"
    wait_for(features.exists, proc, log)  # papermill has begun writing the first job's notebook
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=300) == 130
    # the build's own output ends with the one line; an orphaned Jupyter kernel may still say it is
    # shutting down after the build has exited (its "[IPKernelApp]" lines share the log)
    lines = [line for line in log.read_text().splitlines() if not line.startswith("[IPKernelApp]")]
    assert not any("Traceback" in line for line in lines) and lines[-1] == INTERRUPTED, "\n".join(lines[-20:])
    assert not features.exists()  # its job did not finish: no half-written notebook
    nxt = subprocess.run([sys.executable, "-m", "vgcore", *build, "--", "--touch"], cwd=tmp_path, env=env(),
                         capture_output=True, text=True, timeout=600)
    assert nxt.returncode == 0 and "cannot be locked" not in nxt.stderr and "recovered" not in nxt.stderr, nxt.stderr


# --- outputs edited since their notebook wrote them -------------------------------------------

def test_a_notebook_records_what_it_wrote_and_a_hand_edit_is_found(tmp_path):
    import hashlib

    import matplotlib.pyplot as plt
    import pandas as pd

    out = outputs.Outputs("05_retrieval", tmp_path, "smoke")
    out.table(pd.DataFrame({"loss": ["triplet"], "recall@1": [0.5]}), "05_retrieval")
    for item in outputs.ANALYSIS["05_retrieval"][1:]:
        out.figure(plt.figure(figsize=(plots.WIDTHS[item.width], 2)), item.name)
    out.finish()
    record = outputs.manifest(tmp_path, "05_retrieval").read_text().splitlines()
    files = outputs.analysis_files(tmp_path, "05_retrieval")
    assert record == [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(tmp_path).as_posix()}" for p in files]
    assert outputs.edited(tmp_path) == []

    csv = tmp_path / "tables" / "05_retrieval.csv"
    original = csv.read_bytes()
    csv.write_text(csv.read_text().replace("0.5", "0.9"))  # the .md and .tex still say 0.5
    said = []
    assert workflow.edited_outputs(tmp_path, log=said.append) == [csv]
    assert said == [f"{csv} is not what 05_retrieval wrote (edited since): rerunning 05_retrieval"]
    csv.write_bytes(original)
    (tmp_path / "05_tradeoff.png").unlink()  # a missing file is Snakemake's to rebuild, not an edit
    assert outputs.edited(tmp_path) == []


@pytest.mark.parametrize("profile", ["demo", "paper_schedule", "fair"])
def test_committed_builds_are_what_their_notebooks_wrote(profile):
    """figures/demo, figures/paper_schedule and figures/fair carry each analysis notebook's record of what it wrote,
    and every committed figure and table still has those bytes."""
    fig = ROOT / "figures" / profile
    for nb in outputs.ANALYSIS:
        names = [line.split("  ", 1)[1] for line in outputs.manifest(fig, nb).read_text().splitlines()]
        assert [fig / n for n in names] == outputs.analysis_files(fig, nb, profile=profile)
    assert outputs.edited(fig) == []


@pytest.mark.slow
def test_a_hand_edited_table_is_rebuilt_by_the_next_build():
    b = smoke_build()
    fig = b.figures / "smoke"
    csv, md = fig / "tables" / "03_variance.csv", fig / "tables" / "03_variance.md"
    original = csv.read_bytes()
    lines = original.decode().splitlines(keepends=True)
    lines[1] = ",".join([*lines[1].split(",")[:2], "123.456", *lines[1].split(",")[3:]])  # a new intra_var
    csv.write_text("".join(lines))  # the .md and .tex keep the old value
    try:
        proc = subprocess.run([sys.executable, "-m", "vgcore", "figures", "--profile", "smoke", "--results",
                               str(b.results), "--figures", str(b.figures), "-j", "2"], cwd=b.directory,
                              env=env(VGCORE_CACHE=str(b.cache)), capture_output=True, text=True, timeout=900)
    finally:
        rebuilt = csv.read_bytes()
        csv.write_bytes(original)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert rebuilt == original and "123.456" not in md.read_text()  # the notebook wrote it again
    assert [line for line in proc.stderr.splitlines() if "edited since" in line] == [
        f"{csv} is not what 03_variance wrote (edited since): rerunning 03_variance"]
    ran = set(re.findall(r"^(?:local)?rule (\w+):$", proc.stdout + proc.stderr, re.M))
    assert ran == {"analysis_03_variance", "index", "all"}
    assert outputs.edited(fig) == []
