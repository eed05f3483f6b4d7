"""The notebook build on a real SLURM cluster: one node on this machine, the smoke profile's whole DAG.

`tests/cluster/slurm-local.sh` starts munged, slurmctld and slurmd (once for this module); the build
then runs the way a user runs it, `python -m vgcore figures --profile smoke ... -- --profile
workflow/profiles/slurm`, with the options a small node without accounting needs (`NODE_OPTIONS`).
In order, sharing one cluster and one working directory:

1. a build whose 02_train notebook raises for one loss: the build fails and names that job's SLURM
   log, which holds the error; the profile's retry resubmitted it once; the other jobs completed;
2. the notebook fixed, the same command again: only the failed job and what depends on it are
   submitted, and the build completes: every figure and table the Snakefile declares exists, and
   the scheduler ran every cluster rule instance of the DAG as exactly one COMPLETED job, with the
   profile's memory and time limit, and no GPU;
3. once more: nothing is submitted;
4. the GPU profile on this node without GPUs: SLURM refuses its first job at submission.

The build runs from a copy of vgcore/, workflow/ and notebooks/, so the injected failure never
touches the checkout. Needs root, Debian's slurm-wlm and munge, and the `cluster` extra
(snakemake-executor-plugin-slurm); without them the tests skip with the reason, except under CI
(`CI=true`, as `.ci/run` sets), where they fail: a green CI means the jobs went through SLURM.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
import yaml

from _ci import in_ci, unavailable
from _smoke_build import ROOT, env

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "tests" / "cluster" / "slurm-local.sh"
PROFILES = ROOT / "workflow" / "profiles"
COMMANDS = ("munged", "munge", "unmunge", "slurmctld", "slurmd", "sinfo", "sbatch", "squeue", "scancel", "scontrol")
FAILING_CELL = ("synthetic", 0, "ccl")  # dataset, seed, loss: its 02_train notebook raises in the first build
FAILING_JOB = f"rule_train_wildcards_{FAILING_CELL[0]}_{FAILING_CELL[1]}"  # the train job (one per dataset x seed) running it
FAILURE = "injected by tests/test_cluster.py"  # the message of the RuntimeError it raises
# What this one small node without slurmdbd needs on top of the profile, passed after `--` as a
# user would: few CPUs (the profile's 8 and 4 threads per job do not fit), no accounting (sacct
# cannot answer, squeue can), and jobs of seconds (the first status check after 1 s, not the
# plugin's 40; it waits 10 s longer after each check that finds no job finished).
NODE_OPTIONS = ("--max-threads", "1", "--slurm-status-command", "squeue",
                "--slurm-init-seconds-before-status-checks", "1")
BUILD_TIMEOUT = 900  # s; the smoke build takes 2-3 minutes on 2 idle cores, twice that on busy ones


def missing_requirements() -> str | None:
    """Why this machine cannot run the cluster, or None."""
    if os.geteuid() != 0:
        return "starting slurmd needs root"
    missing = [c for c in COMMANDS if not shutil.which(c)]
    if missing:
        return f"SLURM/MUNGE not installed ({', '.join(missing)} missing; Debian: apt-get install slurm-wlm munge)"
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return "snakemake-executor-plugin-slurm is not installed (pip install -e '.[cluster]')"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Job:
    comment: str  # the plugin's: rule_<rule>[_wildcards_<values>]
    state: str  # squeue's
    final: str | None  # jobcomp's record of the finished job (None while it runs)
    tres: str  # what it was given, e.g. cpu=1,mem=8000M,node=1,billing=1
    time_limit: str  # jobcomp's, in minutes


class Cluster:
    """A running slurm-local.sh cluster: its directory and the environment its clients need."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.ports = {"SLURMCTLD_PORT": str(_free_port()), "SLURMD_PORT": str(_free_port())}
        self.stale_link: Path | None = None  # the leftover link planted before `up`, if one was
        self.up_output = ""

    def script(self, action: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(SCRIPT), action, str(self.dir)], env={**os.environ, **self.ports},
                              capture_output=True, text=True, timeout=120)

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.dir / "slurm.conf")}

    def jobs(self) -> dict[int, Job]:
        """Every job the cluster ran or runs: squeue (finished ones too, MinJobAge) joined with jobcomp."""
        out = subprocess.run(["squeue", "--states=all", "--noheader", "--format=%i|%k|%T"], env={**os.environ, **self.env},
                             capture_output=True, text=True, timeout=60, check=True).stdout
        finished = {}
        comp = self.dir / "log" / "jobcomp.txt"
        for line in comp.read_text().splitlines() if comp.exists() else ():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            finished[int(fields["JobId"])] = (fields["JobState"], fields["Tres"], fields["TimeLimit"])
        jobs = {}
        for line in out.splitlines():
            jobid, comment, state = line.split("|")
            jobs[int(jobid)] = Job(comment, state, *finished.get(int(jobid), (None, "", "")))
        return jobs


CONF_LINK = Path("/run/slurm/conf")  # a configless slurmd's link to its copy of slurm.conf


def _plant_stale_conf_link(killed: Path) -> Path | None:
    """The link a killed cluster leaves (its target still on disk, as in a machine snapshot taken while
    a cluster ran: CI failed so at stop 29); None where a link is already there (`up` judges that one)."""
    if CONF_LINK.exists() or CONF_LINK.is_symlink():
        return None
    target = killed / "spool" / "conf-cache"
    target.mkdir(parents=True)
    CONF_LINK.parent.mkdir(parents=True, exist_ok=True)
    CONF_LINK.symlink_to(target)
    return target


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = missing_requirements()
    if reason:
        unavailable(reason, ".ci/run installs slurm-wlm, munge and the cluster extra")
    c = Cluster(tmp_path_factory.mktemp("slurm"))
    c.stale_link = _plant_stale_conf_link(tmp_path_factory.mktemp("killed-cluster"))
    t0 = time.perf_counter()
    up = c.script("up")
    c.up_output = up.stdout
    if up.returncode:
        c.script("down")
        pytest.fail(f"slurm-local.sh up failed ({up.returncode}):\n{up.stdout}\n{up.stderr}", pytrace=False)
    print(f"cluster up in {time.perf_counter() - t0:.1f} s: {up.stdout.strip()}")
    yield c
    down = c.script("down")
    assert down.returncode == 0, down.stderr


@dataclass
class Build:
    """One `python -m vgcore figures` invocation and the jobs the scheduler got from it."""

    proc: subprocess.CompletedProcess
    seconds: float
    jobs: dict[int, Job]  # the jobs submitted during this invocation

    @property
    def output(self) -> str:
        return self.proc.stdout + self.proc.stderr

    def tail(self) -> str:
        return f"exit {self.proc.returncode} after {self.seconds:.0f} s:\n{self.output[-6000:]}"


class Workspace:
    """A copy of the code the build needs, and the directory the build runs in."""

    def __init__(self, base: Path, cluster: Cluster):
        self.checkout = base / "checkout"
        for part in ("vgcore", "workflow", "notebooks"):  # copy2 keeps the modification times
            shutil.copytree(ROOT / part, self.checkout / part, ignore=shutil.ignore_patterns("__pycache__"))
        self.work = base / "work"
        self.work.mkdir()
        self.cluster = cluster
        self.notebook = self.checkout / "notebooks" / "02_train.ipynb"

    def env(self) -> dict[str, str]:
        e = env(VGCORE_CACHE=str(self.work / "cache"), **self.cluster.env)
        e["PYTHONPATH"] = os.pathsep.join([str(self.checkout), e["PYTHONPATH"]])  # the copy's vgcore first
        return e

    def vgcore_figures(self, *snakemake_args: str) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "vgcore", "figures", "--profile", "smoke", "--results", "results",
               "--figures", "figures", "-j", "2", "--", *snakemake_args]
        return subprocess.run(cmd, cwd=self.work, env=self.env(), capture_output=True, text=True, timeout=BUILD_TIMEOUT)

    def build(self, profile: str = "slurm") -> Build:
        """The smoke build through the SLURM profile (of the copy) on the cluster."""
        before = set(self.cluster.jobs())
        t0 = time.perf_counter()
        proc = self.vgcore_figures("--profile", str(self.checkout / "workflow" / "profiles" / profile), *NODE_OPTIONS)
        seconds = time.perf_counter() - t0
        jobs = {i: j for i, j in self.cluster.jobs().items() if i not in before}
        return Build(proc, seconds, jobs)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, cluster):
    return Workspace(tmp_path_factory.mktemp("cluster-build"), cluster)


@dataclass(frozen=True)
class Dag:
    jobs: dict[str, set[str]]  # {rule: the comments the plugin gives its jobs, rule_<rule>[_wildcards_<values>]}
    outputs: tuple[Path, ...]  # every file the Snakefile declares

    @property
    def failing(self) -> str:
        """The comment of the training job made to fail."""
        return FAILING_JOB


@pytest.fixture(scope="module")
def dag(workspace) -> Dag:
    """The DAG as a dry run of the same command lists it."""
    proc = workspace.vgcore_figures("--dry-run")
    assert proc.returncode == 0, proc.stderr[-4000:]
    jobs, outputs = [], []  # jobs: [rule, wildcard values]
    for line in proc.stdout.splitlines():
        if m := re.match(r"^rule (\w+):$", line):
            jobs.append([m[1], []])
        elif jobs and (m := re.match(r"^\s+wildcards: (.+)$", line)):
            jobs[-1][1] = [kv.split("=", 1)[1] for kv in m[1].split(", ")]
        elif jobs and (m := re.match(r"^\s+output: (.+)$", line)):
            outputs += [workspace.work / p for p in m[1].split(", ")]
    rules: dict[str, set[str]] = {}
    for rule, values in jobs:
        rules.setdefault(rule, set()).add(f"rule_{rule}" + (f"_wildcards_{'_'.join(values)}" if values else ""))
    assert {"features", "train", "index", "all"} <= set(rules), proc.stdout[-3000:]
    assert FAILING_JOB in rules["train"], rules["train"]
    return Dag(rules, tuple(outputs))


def inject_failure(notebook: Path) -> None:
    """A cell after the parameters that raises for FAILING_CELL (the other runs' notebooks run as before)."""
    nb = nbformat.read(notebook, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(
        f"if (dataset, seed, loss) == {FAILING_CELL!r}:\n    raise RuntimeError({FAILURE!r})"))
    nbformat.write(nb, notebook)


@pytest.fixture(scope="module")
def failed_build(workspace, dag) -> Build:
    original = workspace.notebook.read_bytes()
    stat = workspace.notebook.stat()
    inject_failure(workspace.notebook)
    try:
        return workspace.build()
    finally:  # the fix: the notebook as it was, content and timestamp (the completed runs stay current)
        workspace.notebook.write_bytes(original)
        os.utime(workspace.notebook, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.fixture(scope="module")
def fixed_build(workspace, failed_build) -> Build:
    return workspace.build()


@pytest.fixture(scope="module")
def repeated_build(workspace, fixed_build) -> Build:
    return workspace.build()


def _profile(name: str = "slurm") -> dict:
    return yaml.safe_load((PROFILES / name / "config.yaml").read_text())


# ---------------------------------------------------------------------------------------------
# the tests, in the order they run
# ---------------------------------------------------------------------------------------------


def test_a_failing_job_is_reported_with_its_slurm_log(workspace, failed_build, dag):
    b = failed_build
    print(f"build with a failing job: {b.seconds:.0f} s, {len(b.jobs)} SLURM jobs")
    assert b.proc.returncode != 0, b.tail()
    assert "Error in rule train" in b.output, b.tail()
    failed = sorted(i for i, j in b.jobs.items() if j.comment == dag.failing)
    # the profile resubmits a failed job `retries` times; each attempt is one job that FAILED
    assert len(failed) == 1 + _profile()["retries"], (failed, b.tail())
    assert all(b.jobs[i].state == "FAILED" and b.jobs[i].final == "FAILED" for i in failed), b.jobs
    for jobid in failed:  # the build names each attempt's log, and the log holds the notebook's error
        m = re.search(rf"^\s+log: (\S+/slurm_logs/rule_train/{FAILING_CELL[0]}_{FAILING_CELL[1]}/{jobid}\.log)", b.output, re.M)
        assert m, f"the build does not name the log of SLURM job {jobid}:\n{b.tail()}"
        log = Path(m[1]).read_text(errors="replace")
        assert f"RuntimeError: {FAILURE}" in log, m[1]
    partial = re.search(r"its partial output is in (\S+\.failed\.ipynb)$", log, re.M)  # the last attempt's
    assert partial and FAILURE in (workspace.work / partial[1]).read_text(), log[-3000:]
    others = {j.comment: j.final for i, j in b.jobs.items() if i not in failed}
    assert any(c.startswith("rule_features_") for c in others), others
    assert set(others.values()) == {"COMPLETED"}, others


def test_the_rerun_after_the_fix_submits_only_the_failed_job_and_its_dependants(failed_build, fixed_build, dag):
    b = fixed_build
    print(f"rerun after the fix: {b.seconds:.0f} s, {len(b.jobs)} SLURM jobs")
    assert b.proc.returncode == 0, b.tail()
    analyses = {c for rule, comments in dag.jobs.items() if rule.startswith("analysis_") for c in comments}
    assert analyses, dag
    assert sorted(j.comment for j in b.jobs.values()) == sorted({dag.failing, *analyses}), b.tail()
    assert {j.final for j in b.jobs.values()} == {"COMPLETED"}, b.jobs
    submitted = re.findall(r"submitted with SLURM jobid (\d+)", b.output)
    assert sorted(map(int, submitted)) == sorted(b.jobs), b.tail()


def test_the_build_made_every_declared_figure_and_table(workspace, dag, fixed_build):
    figures = workspace.work / "figures" / "smoke"
    declared = [p for p in dag.outputs if p.is_relative_to(figures)]
    assert {".png", ".pdf", ".csv", ".md", ".tex"} <= {p.suffix for p in declared}, declared
    missing = [str(p) for p in dag.outputs if not p.is_file() or p.stat().st_size == 0]
    assert not missing, missing


def test_every_cluster_rule_instance_ran_as_one_completed_slurm_job(failed_build, fixed_build, dag):
    jobs = {**failed_build.jobs, **fixed_build.jobs}
    # the Snakefile's local rules (cheap bookkeeping) run in the snakemake process; all the notebooks go to SLURM
    local = set(re.findall(r"^localrule (\w+):$", failed_build.output + fixed_build.output, re.M))
    assert local and not any(r in ("features", "train") or r.startswith("analysis_") for r in local), local
    expected = sorted(c for rule, comments in dag.jobs.items() if rule not in local for c in comments)
    completed = sorted(j.comment for j in jobs.values() if j.final == "COMPLETED")
    assert completed == expected
    not_completed = {j.comment for j in jobs.values() if j.final != "COMPLETED"}
    assert not_completed == {dag.failing}, not_completed
    # what the scheduler gave each job: one CPU (--max-threads 1), the profile's memory and time, no GPU
    resources = _profile()["set-resources"]
    for job in jobs.values():
        tres = dict(kv.split("=", 1) for kv in job.tres.split(","))
        assert tres["cpu"] == "1" and tres["node"] == "1" and tres["mem"].endswith("M"), job
        assert not any("gpu" in k for k in tres), job
        rule = next((r for r in resources if job.comment.startswith(f"rule_{r}_wildcards_")), None)
        if rule:
            assert tres["mem"] == f"{resources[rule]['mem_mb']}M", (job, resources[rule])
            assert job.time_limit == str(resources[rule]["runtime"]), (job, resources[rule])


def test_a_second_invocation_submits_nothing(repeated_build):
    b = repeated_build
    print(f"second invocation: {b.seconds:.0f} s")
    assert b.proc.returncode == 0, b.tail()
    assert "Nothing to be done" in b.output, b.tail()
    assert not b.jobs and "submitted with SLURM jobid" not in b.output, b.tail()


def test_the_gpu_profile_asks_the_scheduler_for_a_gpu(cluster, tmp_path_factory):
    """This node has no GPU: SLURM refuses the GPU profile's first job (features) at submission."""
    w = Workspace(tmp_path_factory.mktemp("gpu-build"), cluster)
    b = w.build("slurm-gpu")
    assert b.proc.returncode != 0 and not b.jobs, b.tail()
    assert "Error in rule features" in b.output and "--gpus=1" in b.output, b.tail()
    assert "Invalid generic resource (gres) specification" in b.output, b.tail()


def test_a_conf_link_left_by_a_killed_cluster_does_not_block_the_next_one(cluster):
    # Where a link was there already, `up` succeeded only by finding its slurmd gone and removing it.
    assert f"removed {CONF_LINK} -> {cluster.stale_link or ''}" in cluster.up_output
    assert CONF_LINK.resolve() != cluster.stale_link  # the new slurmd's own copy replaced it


def test_the_gpu_profile_is_the_cpu_profile_plus_gpus():
    cpu, gpu = _profile("slurm"), _profile("slurm-gpu")
    gpu_rules = {rule for rule, res in gpu["set-resources"].items() if res.pop("gpu", None) == 1}
    assert gpu_rules == {"features", "train"}
    assert gpu == cpu
    assert not any("gpu" in str(k) for res in cpu["set-resources"].values() for k in res)
    assert "gpu" not in cpu["default-resources"] and "gpu" not in gpu["default-resources"]


def test_cluster_script_explains_why_it_cannot_start(tmp_path):
    """Without root or SLURM it names what is missing; with both, a taken port stops it before any daemon."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = subprocess.run(["bash", str(SCRIPT), "up", str(tmp_path / "c")], capture_output=True, text=True,
                              env={**os.environ, "SLURMCTLD_PORT": str(port)}, timeout=60)
    assert proc.returncode == 1
    if os.geteuid() != 0:
        assert "must run as root" in proc.stderr
    elif any(not shutil.which(c) for c in COMMANDS):
        assert "not installed:" in proc.stderr
    else:
        assert f"TCP port {port} is taken" in proc.stderr
    assert not (tmp_path / "c" / "run").exists(), "nothing should have started"


def test_cluster_check_cannot_silently_skip_in_ci():
    """Under CI the cluster's requirements must be there (the fixtures fail rather than skip)."""
    if not in_ci():
        pytest.skip("only checked under CI=true")
    assert missing_requirements() is None, missing_requirements()
