"""The notebook build behind `make demo` / `make paper` (driven by workflow/Snakefile).

- `NOTEBOOKS` and `ANALYSIS`: which notebook makes which figure and table (the Snakefile reads
  them to name its file targets; `Outputs` checks that a notebook writes only what it declares).
- `execute`: run one notebook through papermill, retrying only when the kernel fails to start; a
  notebook that fails in a cell is kept beside its target as ``<name>.failed.ipynb``.
- `write_index`: ``figures/<profile>/README.md``, listing every figure and table with its notebook.
- `snakemake_command`: the one command line `make demo`, `make paper` and ``python -m vgcore demo``
  run.

``python -m vgcore.build execute IN OUT -p key value ...`` is what the Snakefile's rules call.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NOTEBOOKS = ("01_features", "02_train", "03_variance", "04_greediness", "05_retrieval", "06_claims")
"""The numbered notebooks in `notebooks/`, in order."""

KERNEL = "python3"


@dataclass(frozen=True)
class Item:
    """One figure (PNG + PDF) or table (CSV + Markdown + LaTeX) of an analysis notebook."""

    name: str
    kind: str  # "figure" or "table"
    caption: str

    def files(self, figures_dir: str | os.PathLike) -> list[Path]:
        d = Path(figures_dir)
        if self.kind == "figure":
            return [d / f"{self.name}.{ext}" for ext in ("png", "pdf")]
        return [d / "tables" / f"{self.name}.{ext}" for ext in ("csv", "md", "tex")]


def _fig(name: str, caption: str) -> Item:
    return Item(name, "figure", caption)


def _tab(name: str, caption: str) -> Item:
    return Item(name, "table", caption)


ANALYSIS: dict[str, tuple[Item, ...]] = {
    "03_variance": (
        _tab("03_variance", "VARIANCE of the final test embeddings: mean ± std over seeds"),
        _fig("03_variance_bars", "intra- and inter-class variance and centroid-spacing unevenness per loss"),
        _fig("03_intra_var_over_epochs", "intra-class variance of the test embeddings over training"),
        _fig("03_separation_vs_spacing", "mean centroid distance against its unevenness (CV)"),
        _fig("03_embeddings_pca", "2-D PCA of the final test embeddings, one panel per loss (seed 0)"),
    ),
    "04_greediness": (
        _tab("04_greediness", "GREEDINESS over training: mean ± std over seeds"),
        _fig("04_active_ratio_over_training", "active ratio (loss terms and embedding gradients) per step"),
        _fig("04_grad_norm_over_training", "gradient norms (parameters, per-sample embeddings) per step"),
        _fig("04_greediness_bars", "mean active ratio and gradient norm per loss"),
    ),
    "05_retrieval": (
        _tab("05_retrieval", "retrieval on the test split: Recall@K and MAP@R, mean ± std over seeds"),
        _fig("05_retrieval_bars", "Recall@1 and MAP@R per loss"),
        _fig("05_recall_over_epochs", "test Recall@1 over training"),
        _fig("05_tradeoff", "efficiency-granularity trade-off: convergence speed against intra-class "
             "variance and Recall@1"),
    ),
    "06_claims": (
        _tab("06_claims", "each claim of the paper on each dataset: holds or not, with seed mean and std"),
        _fig("06_claims", "the claims as a grid: green holds, red does not"),
    ),
}
"""Analysis notebook -> what it writes under ``figures/<profile>/``."""


class Outputs:
    """Writes the declared figures and tables of one analysis notebook, naming the notebook."""

    def __init__(self, notebook: str, figures_dir: str | os.PathLike, profile: str):
        if notebook not in ANALYSIS:
            raise ValueError(f"unknown analysis notebook {notebook!r}; choose one of: {', '.join(ANALYSIS)}")
        self.notebook, self.dir, self.profile = notebook, Path(figures_dir), profile
        self.items = {(item.kind, item.name): item for item in ANALYSIS[notebook]}
        self.written: list[Path] = []

    def _item(self, name: str, kind: str) -> Item:
        item = self.items.get((kind, name))
        if item is None:
            valid = [i.name for i in self.items.values() if i.kind == kind]
            raise ValueError(f"{self.notebook} declares no {kind} {name!r} (vgcore.build.ANALYSIS); "
                             f"declared: {', '.join(valid)}")
        return item

    def figure(self, fig, name: str) -> list[Path]:
        from vgcore.plots import save_figure

        self._item(name, "figure")
        paths = save_figure(fig, self.dir / name, f"{self.notebook}.ipynb", self.profile)
        self.written += paths
        return paths

    def table(self, table, name: str) -> list[Path]:
        from vgcore.analysis import write_table

        item = self._item(name, "table")
        paths = write_table(table, self.dir / "tables" / name, f"{item.caption} (profile {self.profile})",
                            f"{self.notebook}.ipynb")
        self.written += paths
        return paths

    def missing(self) -> list[Path]:
        """Declared files not written yet (empty at the end of a notebook that did its job)."""
        return [p for item in self.items.values() for p in item.files(self.dir) if p not in self.written]


def collect_profile(results_root: str | os.PathLike, profile: str, table: str = "summary"):
    """`vgcore.results.collect` for one profile, failing with advice when there is no complete run."""
    from vgcore.config import get_profile
    from vgcore.results import collect

    get_profile(profile)
    frame = collect(results_root, table, profile=profile)
    if frame.empty:
        raise ValueError(f"no complete run of profile {profile!r} under {results_root!r}; train first "
                         f"(`make demo`, `python -m vgcore sweep --profile {profile}` or notebook 02_train)")
    return frame


def analysis_files(figures_dir: str | os.PathLike, notebook: str | None = None) -> list[Path]:
    """Every file the analysis notebooks (or one of them) write under `figures_dir`."""
    names = [notebook] if notebook else list(ANALYSIS)
    return [p for nb in names for item in ANALYSIS[nb] for p in item.files(figures_dir)]


# ---------------------------------------------------------------------------------------------
# executing notebooks
# ---------------------------------------------------------------------------------------------

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
    partial = failed_copy(output)
    for attempt in range(retries + 1):
        try:
            pm.execute_notebook(str(notebook), str(output), parameters=parameters or {}, kernel_name=kernel,
                                start_timeout=start_timeout, cwd=str(cwd) if cwd else None,
                                progress_bar=progress)
        except Exception as err:
            if is_kernel_start_failure(err) and attempt < retries:
                log(f"kernel failed to start for {notebook} (attempt {attempt + 1}/{retries + 1}): {err}; retrying")
                time.sleep(1 + 2 * attempt)
                continue
            if output.exists():
                shutil.copyfile(output, partial)
                log(f"{notebook} failed; its partial output is in {partial}")
            raise
        partial.unlink(missing_ok=True)
        return output
    raise AssertionError("unreachable")  # pragma: no cover


# ---------------------------------------------------------------------------------------------
# the figure index and the snakemake command
# ---------------------------------------------------------------------------------------------

def write_index(figures_dir: str | os.PathLike, profile: str, description: str = "") -> Path:
    """``<figures_dir>/README.md``: every figure and table, its caption and the notebook that made it."""
    d = Path(figures_dir)
    lines = [f"# Figures and tables: profile `{profile}`", "",
             "Generated by the notebook build (`workflow/Snakefile`); do not edit by hand. "
             f"Rebuild with `make {'demo' if profile == 'demo' else 'paper' if profile == 'paper' else 'figures PROFILE=' + profile}`.",
             ""]
    if description:
        lines += [f"Profile `{profile}`: {description}.", ""]
    lines += ["| file | what it shows | notebook |", "| --- | --- | --- |"]
    for notebook, items in ANALYSIS.items():
        for item in items:
            files = item.files(d)
            links = " ".join(f"[{p.suffix[1:]}]({p.relative_to(d).as_posix()})" for p in files)
            lines.append(f"| `{item.name}` {links} | {item.caption} | [`notebooks/{notebook}.ipynb`]"
                         f"(../../notebooks/{notebook}.ipynb) |")
    executed = sorted((d / "notebooks").glob("*.ipynb")) if (d / "notebooks").is_dir() else []
    if executed:
        lines += ["", "Executed analysis notebooks (with their outputs): "
                  + ", ".join(f"[{p.name}](notebooks/{p.name})" for p in executed) + "."]
    path = d / "README.md"
    d.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def snakemake_command(profile: str, *, jobs: int | str = "all", results: str = "results", figures: str = "figures",
                      datasets=None, losses=None, seeds=None, directory: str | os.PathLike | None = None,
                      extra=()) -> list[str]:
    """The snakemake invocation of the build (profile and selections checked first)."""
    from vgcore.config import get_profile

    prof = get_profile(profile)
    config = [f"profile={profile}", f"results={results}", f"figures={figures}"]
    if datasets:
        config.append("datasets=" + ",".join(select(datasets, tuple(prof.datasets), "dataset", profile)))
    if losses:
        config.append("losses=" + ",".join(select(losses, prof.losses, "loss", profile)))
    if seeds:
        config.append("seeds=" + ",".join(str(s) for s in parse_seeds(seeds, prof.seeds)))
    root = Path(__file__).resolve().parents[1]
    return [sys.executable, "-m", "snakemake", "--snakefile", str(root / "workflow" / "Snakefile"),
            "--directory", str(directory or os.getcwd()), "--cores", str(jobs), "--rerun-incomplete", "--printshellcmds",
            "--config", *config, *extra]


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


def dataset_spec(profile, dataset: str) -> str:
    """What a profile's features of `dataset` depend on (backbone and options), as canonical JSON."""
    config = profile.config(dataset, profile.losses[0], profile.seeds[0])
    keys = ("dataset", "backbone", "backbone_options", "dataset_options")
    return json.dumps({k: getattr(config, k) for k in keys}, sort_keys=True, default=str)


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vgcore.build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("execute", help="run a notebook through papermill (retrying a kernel that fails to start)")
    ex.add_argument("notebook")
    ex.add_argument("output")
    ex.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="a parameter (VALUE parsed as JSON where it parses, else a string)")
    ex.add_argument("--retries", type=int, default=2)
    ex.add_argument("--kernel", default=KERNEL)
    idx = sub.add_parser("index", help="write figures/<profile>/README.md")
    idx.add_argument("figures_dir")
    idx.add_argument("profile")
    args = parser.parse_args(argv)
    if args.command == "execute":
        params = {name: _parse_value(value) for name, value in args.parameter}
        try:
            execute(args.notebook, args.output, params, kernel=args.kernel, retries=args.retries,
                    log=lambda m: print(m, file=sys.stderr))
        except Exception as err:  # the notebook's own traceback is in the output; keep this short
            print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
            return 1
        return 0
    from vgcore.config import get_profile

    write_index(args.figures_dir, args.profile, get_profile(args.profile).description)
    return 0


if __name__ == "__main__":
    sys.exit(main())
