"""The notebook build behind `make demo` / `make paper`: papermill, Snakemake and selections.

- :func:`execute`: run one notebook through papermill, retrying only when the kernel fails to start;
  a notebook that fails in a cell is kept beside its target as ``<name>.failed.ipynb``, one
  interrupted (Ctrl-C) is deleted.
  :func:`execute_many`: several notebooks one after the other in one kernel (the per-run training
  notebooks of a fused job: a kernel start and the imports once, not once per run).
- :func:`snakemake_command`: the one command line `make demo`, `make paper` and
  ``python -m vgcore demo`` run (workflow/Snakefile).
- :func:`recover_stale_lock`: Snakemake's lock left by a killed build, removed when no build runs
  (every snakemake process of the Snakefile holds :data:`BUILD_LOCK`, :func:`hold_build_lock`).
- :func:`select` and :func:`parse_seeds`: a subset of a profile's datasets, losses or seeds, checked;
  the CLI, the Makefile and the Snakefile all go through them.
- :func:`prepare_runs`: before a build, what is in the selected runs' own folders: a run of another
  config is moved to its variant folder (so it is retrained, not drawn from, and not lost), a corrupt
  or older-schema run is named for Snakemake to rerun; :func:`edited_outputs`: a figure or table
  edited since its notebook wrote it, named for Snakemake to rerun.

``python -m vgcore execute IN OUT -p key value ...`` is what the Snakefile's rules call.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

KERNEL = "python3"

_KERNEL_START_MESSAGES = ("kernel died before replying", "kernel didn't respond", "kernel did not respond",
                          "timeout waiting for kernel", "failed to start the kernel", "kernel_info")


def is_kernel_start_failure(error: BaseException) -> bool:
    """True for the errors nbclient raises when a kernel does not come up (worth a retry).

    A cell that raises (papermill's PapermillExecutionError) or a missing kernel spec is not.
    """
    from jupyter_client.kernelspec import NoSuchKernel
    from papermill.exceptions import PapermillExecutionError

    if isinstance(error, PapermillExecutionError | NoSuchKernel):
        return False
    text = str(error).lower()
    return isinstance(error, RuntimeError | TimeoutError | OSError) and any(m in text for m in _KERNEL_START_MESSAGES)


def failed_copy(output: str | os.PathLike) -> Path:
    output = Path(output)
    return output.with_name(output.stem + ".failed.ipynb")


def execute(notebook: str | os.PathLike, output: str | os.PathLike, parameters: dict[str, Any] | None = None, *,
            kernel: str = KERNEL, retries: int = 2, start_timeout: float = 120, cwd: str | os.PathLike | None = None,
            progress: bool = False, log=print) -> Path:
    """Execute `notebook` with papermill into `output`; retry up to `retries` times if the kernel
    fails to start. On a failure in a cell the partial notebook (with the error) is kept as
    ``<output stem>.failed.ipynb`` (build tools delete failed targets) and the error is raised."""
    import papermill as pm

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries + 1):
        try:
            pm.execute_notebook(str(notebook), str(output), parameters=parameters or {}, kernel_name=kernel,
                                start_timeout=start_timeout, cwd=str(cwd) if cwd else None,
                                progress_bar=progress)
        except KeyboardInterrupt:  # stopped by the user: no half-written notebook is left
            output.unlink(missing_ok=True)
            raise
        except Exception as err:
            if is_kernel_start_failure(err) and attempt < retries:
                log(f"kernel failed to start for {notebook} (attempt {attempt + 1}/{retries + 1}): {err}; retrying")
                time.sleep(1 + 2 * attempt)
                continue
            _keep_failed(notebook, output, log)
            raise
        return _finish(output)
    raise AssertionError("unreachable")  # pragma: no cover


def _keep_failed(notebook, output: Path, log) -> None:
    """Keep the partial output of `notebook`, which failed, as ``<output stem>.failed.ipynb``."""
    if output.exists():
        shutil.copyfile(output, failed_copy(output))
        log(f"{notebook} failed; its partial output is in {failed_copy(output)}")


def _finish(output: Path) -> Path:
    """An executed notebook's last step: no stale ``.failed.ipynb`` beside it, its defaults cell collapsed."""
    failed_copy(output).unlink(missing_ok=True)
    hide_default_parameters(output)
    return output


def hide_default_parameters(path: str | os.PathLike) -> None:
    """Collapse the source of the ``parameters`` cell (the defaults) of an executed notebook: papermill's
    ``injected-parameters`` cell right after it holds the values that ran, and a reader should not see
    two parameter cells. Nothing else changes (nbval still re-executes both)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", ()):
            cell.metadata.setdefault("jupyter", {})["source_hidden"] = True
    nbformat.write(nb, path)


def execute_many(jobs, *, kernel: str = KERNEL, retries: int = 2, start_timeout: float = 120,
                 cwd: str | os.PathLike | None = None, log=print) -> list[Path]:
    """Execute several notebooks one after the other in ONE kernel: ``jobs`` is a list of
    ``(notebook, output, parameters)``.

    Starting a kernel and importing torch, pandas and matplotlib cost several seconds, more than a
    training notebook that only loads and plots its run; here they are paid once per call. Before
    each notebook the kernel's namespace is cleared (``%reset -f``) and its figures closed, so a
    notebook sees only what it defines (imported modules stay loaded). The kernel start is retried
    as in :func:`execute`; the first notebook that fails in a cell is kept as ``<name>.failed.ipynb``
    and stops the call (the later ones do not run)."""
    import papermill as pm
    from jupyter_client.manager import KernelManager

    km = None
    for attempt in range(retries + 1):
        km = KernelManager(kernel_name=kernel)
        try:
            km.start_kernel(cwd=str(cwd) if cwd else None)
            _run_in_kernel(km, "pass", start_timeout)  # waits until the kernel answers
            break
        except Exception as err:
            if km.has_kernel:
                km.shutdown_kernel(now=True)
            if is_kernel_start_failure(err) and attempt < retries:
                log(f"kernel failed to start (attempt {attempt + 1}/{retries + 1}): {err}; retrying")
                time.sleep(1 + 2 * attempt)
                continue
            raise
    done = []
    try:
        for notebook, output, parameters in jobs:
            _run_in_kernel(km, "%reset -f\nimport matplotlib.pyplot as _plt\n_plt.close('all')\ndel _plt", 60)
            output = Path(output)
            output.parent.mkdir(parents=True, exist_ok=True)
            try:
                pm.execute_notebook(str(notebook), str(output), parameters=parameters or {}, kernel_name=kernel,
                                    km=km, progress_bar=False)
            except KeyboardInterrupt:
                output.unlink(missing_ok=True)
                raise
            except Exception:
                _keep_failed(notebook, output, log)
                raise
            done.append(_finish(output))
    finally:
        km.shutdown_kernel(now=True)
    return done


def _run_in_kernel(km, code: str, timeout: float) -> None:
    """Run `code` in the kernel of `km` through a client of its own (papermill's client leaves a
    previous one unusable), raising if it does not answer within `timeout` seconds."""
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=timeout)
        reply = kc.execute_interactive(code, timeout=timeout, output_hook=lambda msg: None)
        if reply["content"]["status"] != "ok":
            raise RuntimeError(f"the kernel could not run {code!r}: {reply['content'].get('evalue')}")
    finally:
        kc.stop_channels()


def snakemake_command(profile: str, *, jobs: int | str = "all", results: str = "results", figures: str = "figures",
                      datasets=None, losses=None, seeds=None, overrides=(), directory: str | os.PathLike | None = None,
                      extra=()) -> list[str]:
    """The snakemake invocation of the build (profile, selections and overrides checked first).

    ``overrides``: ``key=value`` strings applied to every run (as on the ``run``/``sweep`` command
    line); they change the runs, so ``results`` and ``figures`` must then differ from the defaults.
    Values ``--config`` cannot carry verbatim (a path with ``#``, quotes or shell metacharacters) go
    in a JSON ``--configfile`` under `directory`/.snakemake/vgcore/."""
    from vgcore.config import get_profile, parse_overrides

    prof = get_profile(profile)
    chosen = selection(prof, datasets, losses, seeds)
    config = {"profile": profile, "results": check_root(results, "results"), "figures": check_root(figures, "figures")}
    if overrides:
        parsed = parse_overrides(list(overrides))
        if results == "results" or figures == "figures":
            raise ValueError("overrides change the runs: give results and figures roots apart from the profile's "
                             "(e.g. --results results/custom --figures figures/custom)")
        prof.config(chosen[0][0], chosen[1][0], chosen[2][0], **parsed)  # rejected options stop here
        config["overrides"] = " ".join(shlex.quote(o) for o in overrides)
    for key, given, values in zip(("datasets", "losses", "seeds"), (datasets, losses, seeds), chosen, strict=True):
        if given:
            config[key] = ",".join(map(str, values))
    directory = Path(directory or os.getcwd())
    plain = [f"{key}={value}" for key, value in config.items() if _is_plain(value)]
    verbatim = {key: value for key, value in config.items() if not _is_plain(value)}
    files = ["--configfile", str(_config_file(directory, verbatim))] if verbatim else []
    root = Path(__file__).resolve().parents[1]
    return [sys.executable, "-m", "snakemake", "--snakefile", str(root / "workflow" / "Snakefile"),
            "--directory", str(directory), "--cores", str(jobs), "--rerun-incomplete", "--printshellcmds",
            *files, "--config", *plain, *extra]


def check_root(path, what: str) -> str:
    """A results or figures root as a string; one with a brace is refused (Snakemake reads it as a wildcard)."""
    path = str(path)
    if "{" in path or "}" in path:
        raise ValueError(f"the {what} root {path!r} has a brace, which Snakemake reads as a wildcard; "
                         "choose a folder without { or }")
    return path


_PLAIN = re.compile(r"[\w./][\w./+=,@%-]*(?: [\w./+=,@%-]+)*")


def _is_plain(value: str) -> bool:
    """Whether ``--config key=value`` carries `value` verbatim: Snakemake strips quotes and parses the
    rest as YAML (a bare ``#`` starts a comment, ``2024`` is a number, ``a: b`` a mapping), and passes
    it on to the jobs it spawns without shell-quoting it."""
    try:
        float(value)
        return False
    except ValueError:
        return bool(_PLAIN.fullmatch(value)) and value not in ("True", "False")


def _config_file(directory: Path, config: dict) -> Path:
    """A JSON config file for ``--configfile`` under `directory`/.snakemake/vgcore/, named by its content."""
    from vgcore.io import atomic_write_text

    text = json.dumps(config, sort_keys=True, ensure_ascii=False) + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return atomic_write_text(directory / ".snakemake" / "vgcore" / f"config-{digest}.json", text)


BUILD_LOCK = Path(".snakemake", "vgcore", "build.lock")
"""Relative to a build's directory: every snakemake process of workflow/Snakefile there holds it shared."""


def hold_build_lock(directory: str | os.PathLike = ".") -> int | None:
    """Hold :data:`BUILD_LOCK` of `directory` shared until this process exits (the Snakefile calls it,
    so :func:`recover_stale_lock` knows whether any snakemake process of the build is alive). Returns
    its descriptor, or None on a filesystem without ``flock``."""
    import fcntl

    path = Path(directory) / BUILD_LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except OSError:
        os.close(fd)
        return None
    return fd


def recover_stale_lock(directory: str | os.PathLike = ".", log=print) -> bool:
    """Remove Snakemake's lock in `directory` (``.snakemake/locks``, what ``snakemake --unlock`` removes)
    when no snakemake process of the build holds :data:`BUILD_LOCK`: a build killed with SIGKILL (or
    a power loss) leaves it, and Snakemake then refuses every build there. Returns whether it did."""
    import fcntl

    locks = Path(directory) / ".snakemake" / "locks"
    if not locks.is_dir() or not any(locks.iterdir()):
        return False
    path = Path(directory) / BUILD_LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # a build is running here: its lock is live
        os.close(fd)
        return False
    try:
        shutil.rmtree(locks)
    finally:
        os.close(fd)
    log(f"recovered {locks}: the build that held it was stopped and no build is running here")
    return True


def build_tag(overrides: dict) -> str | None:
    """The variant folder of a build with `overrides` (parsed, nested): None without any, else the
    first 12 hex digits of their canonical JSON's sha256, the same for every dataset of the build."""
    from vgcore import results

    return results.variant_name(overrides) if overrides else None


def prepare_runs(profile, results_root: str | os.PathLike, datasets=None, losses=None, seeds=None, *,
                 overrides=(), dry_run: bool = False, log=print) -> list[Path]:
    """Check each selected run of `profile` under `results_root` before a build; return the
    ``summary.json`` files Snakemake must rerun (``--forcerun``).

    A complete run trained with another config than the profile gives now (a profile edited since,
    or results from before variants had their own folders) is moved to
    ``<profile>/variants/<digest>/`` (:func:`vgcore.results.set_aside`; with `dry_run` only reported
    and forced); a run whose files do not match its summary, or of an older results schema, is forced.
    ``overrides``: the build's ``key=value`` strings, applied to every run's config.
    """
    from vgcore import results
    from vgcore.config import flat_diff, parse_overrides
    from vgcore.identity import differences

    parsed = parse_overrides(list(overrides))
    tag = build_tag(parsed)
    forced = []
    for dataset, loss, seed in _cells(profile, datasets, losses, seeds):
        config = profile.config(dataset, loss, seed, **parsed)
        path, config_hash = results.run_dir(results_root, config, tag), config.config_hash()
        try:
            summary = results.read_summary(path)
        except results.RunIntegrityError as err:
            log(f"{err}: rerunning it")
            forced.append(path / "summary.json")
            continue
        if summary is None or results.is_current(path, config_hash):
            continue
        same_config = not flat_diff(summary.get("config") or {}, config.to_dict())
        if not same_config and tag is None:
            if dry_run:
                log(f"{path} holds a run of another config: the build would move it to its variant folder and retrain")
                forced.append(path / "summary.json")
                continue
            with results.run_lock(path, timeout=0):
                moved = results.set_aside(path)
            log(f"{path} held a run of another config: moved to {moved}; retraining")
        else:
            why = ("it holds a run of other settings" if not same_config
                   else f"it is of an older results schema ({summary.get('schema_version', 1)})"
                   if summary.get("schema_version", 1) != results.SCHEMA_VERSION
                   else "it was made under other values than the code gives its config now ("
                   + ("; ".join(differences(summary.get("resolved", {}), config.resolved())) or "another config hash") + ")"
                   if summary.get("config_hash") != config_hash
                   else "its files do not match its summary.json")
            log(f"{path}: {why}; rerunning it")
            forced.append(path / "summary.json")
    return forced


def edited_outputs(figures_dir: str | os.PathLike, log=print) -> list[Path]:
    """The figures and tables under `figures_dir` (``figures/<profile>``) that were changed since their
    notebook wrote them (:func:`vgcore.report.outputs.edited`), one line each: for ``--forcerun``."""
    from vgcore.report.outputs import edited

    found = edited(figures_dir)
    for path, notebook in found:
        log(f"{path} is not what {notebook} wrote (edited since): rerunning {notebook}")
    return [path for path, _ in found]


def _cells(profile, datasets, losses, seeds):
    chosen = selection(profile, datasets, losses, seeds)
    return [(d, loss, int(s)) for d in chosen[0] for loss in chosen[1] for s in chosen[2]]


def selection(profile, datasets=None, losses=None, seeds=None) -> tuple[list[str], list[str], list[int]]:
    """The chosen datasets, losses and seeds of a `Profile` (None or empty: all of the profile's)."""
    return (select(datasets, tuple(profile.datasets), "dataset", profile.name),
            select(losses, profile.losses, "loss", profile.name),
            parse_seeds(seeds, profile.seeds))


def select(chosen, valid, what: str, profile: str = "") -> list[str]:
    """`chosen` (a list, or a comma/space separated string; empty = all of `valid`) checked against `valid`."""
    if chosen is None or chosen == "" or chosen == []:
        return list(valid)
    if isinstance(chosen, str):
        chosen = chosen.replace(",", " ").split()
    chosen = [str(c) for c in chosen]
    unknown = [c for c in chosen if c not in [str(v) for v in valid]]
    if unknown:
        where = f" of profile {profile!r}" if profile else ""
        raise ValueError(f"unknown {what}(s) {unknown}{where}; choose from: {', '.join(map(str, valid))}")
    return chosen


def parse_seeds(chosen, default) -> list[int]:
    """Seeds from a list or a comma/space separated string (any non-negative integers; empty = `default`)."""
    if chosen is None or chosen == "" or chosen == []:
        return [int(s) for s in default]
    items = str(chosen).replace(",", " ").split() if isinstance(chosen, str | int) else list(chosen)
    try:
        out = [int(s) for s in items]
    except ValueError:
        out = [-1]
    if not out or min(out) < 0:
        raise ValueError(f"seeds must be non-negative integers (e.g. seeds=0,1,2), got {chosen!r}")
    return out


def dataset_spec(profile, dataset: str, **overrides: Any) -> str:
    """What a profile's features of `dataset` depend on (backbone and options), as canonical JSON."""
    config = profile.config(dataset, profile.losses[0], profile.seeds[0], **overrides)
    keys = ("dataset", "backbone", "backbone_options", "dataset_options")
    return json.dumps({k: getattr(config, k) for k in keys}, sort_keys=True, default=str)
