"""What the analysis notebooks write: the declared figures and tables, the profile's runs, the index.

- :data:`ANALYSIS`: analysis notebook -> the figures and tables it writes under ``figures/<profile>/``
  (the Snakefile reads it to name its file targets; :class:`Outputs` checks that a notebook writes
  only what it declares). Adding a figure is one :class:`Item` line here and one cell in its notebook.
- :func:`collect_profile`: the runs of one profile as one table, failing with advice when none ran.
- :func:`write_index`: ``figures/<profile>/README.md``, every figure and table with its notebook.
- :func:`manifest` and :func:`edited`: the sha256 of every file an analysis notebook wrote, recorded
  when it finishes (``figures/<profile>/notebooks/<notebook>.sha256``); a file whose bytes no longer
  match (edited by hand) is what the build reruns its notebook for.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from vgcore.io import atomic_write_text, file_digest

NOTEBOOKS = ("01_features", "02_train", "03_variance", "04_greediness", "05_retrieval", "06_claims", "07_your_data")
"""The numbered notebooks in `notebooks/`, in order."""

YOUR_DATA = "07_your_data"
"""The notebook that runs the comparison on a user's features file (not part of a profile's build)."""

DESCRIPTIVE_NOTE = "descriptive: 95 % intervals per claim, no correction across claims, datasets or protocols"
"""The label of every claims table (re-exported by :mod:`vgcore.report.claims`): the intervals are per
claim, nothing is corrected for multiplicity."""


@dataclass(frozen=True)
class Item:
    """One figure (PNG + PDF) or table (CSV + Markdown + LaTeX) of an analysis notebook."""

    name: str
    kind: str  # "figure" or "table"
    caption: str
    width: str | None = None  # a figure's printed width, a key of vgcore.report.plots.WIDTHS ("column", "page")
    tuned: bool | None = None  # None: every profile's build writes it; True: only a tuned profile's; False: only an untuned one's

    def files(self, figures_dir: str | os.PathLike) -> list[Path]:
        d = Path(figures_dir)
        if self.kind == "figure":
            return [d / f"{self.name}.{ext}" for ext in ("png", "pdf")]
        return [d / "tables" / f"{self.name}.{ext}" for ext in ("csv", "md", "tex")]


def _fig(name: str, caption: str, width: str = "page", tuned: bool | None = None) -> Item:
    return Item(name, "figure", caption, width, tuned)


def _tab(name: str, caption: str, tuned: bool | None = None) -> Item:
    return Item(name, "table", caption, tuned=tuned)


ANALYSIS: dict[str, tuple[Item, ...]] = {
    "03_variance": (
        _tab("03_variance", "VARIANCE of the final test embeddings: mean ± std over seeds"),
        _fig("03_variance_bars", "intra- and inter-class variance and centroid-spacing unevenness per loss "
             "(mean ± std over seeds)"),
        _fig("03_intra_var_over_epochs", "intra-class variance of the test embeddings over training"),
        _fig("03_separation_vs_spacing", "mean centroid distance against its unevenness (CV)", "column"),
        _fig("03_embeddings_pca", "2-D PCA of the final test embeddings of the datasets with pictures, one panel "
             "per loss (lowest seed; a colour and a marker per class)"),
        _fig("03_similarity_distributions", "cosine similarities of positive (same-class) and negative test pairs "
             "per loss and dataset (lowest seed)"),
    ),
    "04_greediness": (
        _tab("04_greediness", "GREEDINESS over training: mean ± std over seeds"),
        _fig("04_active_ratio_over_training", "active ratio (loss terms and embedding gradients) per step"),
        _fig("04_grad_norm_over_training", "gradient norms (parameters, per-sample embeddings: scale-dependent) and "
             "each sample's share of Adam's step (scale-free) per step"),
        _fig("04_greediness_bars", "mean active ratios (loss terms, embedding gradients), effective share of moving "
             "samples and each sample's share of Adam's step per loss (mean ± std over seeds; constant ratios "
             "noted, not drawn)"),
        _tab("04_probes", "GREEDINESS on the fixed probe batches (one random, one P x K; the same samples for every "
             "loss) at 0, 25, 50, 75 and 100 % of each run's own training: mean ± std over seeds", tuned=True),
        _fig("04_probes", "the loss terms' active share, the effective share of moving samples and the mean "
             "per-sample gradient norm on the probe batches over each run's own training", tuned=True),
    ),
    "05_retrieval": (
        _tab("05_retrieval", "retrieval on the test split: Recall@K and MAP@R, mean ± std over seeds"),
        _fig("05_retrieval_bars", "Recall@1 and MAP@R per loss (mean ± std over seeds)", "column"),
        _fig("05_recall_over_epochs", "test Recall@1 over training"),
        _fig("05_validation_progress", "normalised validation progress (R_t - R_0) / (R_final - R_0) of Recall@1 at "
             "log-spaced training steps, per loss: one convergence yardstick for every loss"),
        _fig("05_tradeoff", "efficiency-granularity trade-off: share of the run's training steps to 90% of the "
             "validation Recall@1 gain against intra-class variance and Recall@1, per dataset (open: unconverged)"),
        _fig("05_training_curves", "every loss's normalised training loss above its validation Recall@1, per dataset"),
        _fig("05_per_class_recall", "Recall@1 of each class's test queries per loss (mean over seeds)"),
        _fig("05_gallery", "what each of the seven losses retrieves for the same random test queries (one per class; "
             "the first dataset with pictures, lowest seed): its four nearest test samples, wrong ones framed"),
        _fig("05_gallery_disagreement", "the test queries on which the seven losses' precision@4 differs most, "
             "with each loss's four nearest test samples (same dataset and seed as 05_gallery)"),
        _fig("05_gallery_stand_in", "the gallery of a dataset without pictures (the first such dataset, lowest seed): "
             "tiles marked with class and superclass, wrong ones framed, near misses (same superclass) dashed"),
    ),
    "06_claims": (
        _tab("06_claims", "each claim of the paper on each dataset where every loss it names learned: its verdict "
             "against the smallest effect of interest (supported, significant but size uncertain, negligible, "
             "inconclusive, contradicted), with the closest pair's paired difference, its 95% interval over seeds "
             f"and the smallest effect in the metric's units; {DESCRIPTIVE_NOTE}"),
        _tab("06_claims_members", "each member of a claim's group against the rest (its pairs combined by the "
             "weakest-pair rule): which member breaks a group claim; " + DESCRIPTIVE_NOTE),
        _tab("06_gate", "did every loss learn? final test Recall@1 (superclass_recall@1 where the heads learn superclasses "
             "only) against the untrained head, paired by seed"),
        _tab("06_variants", "which verdicts change when a loss is replaced by its named variant"),
        _tab("06_schedules", "verdicts of this profile beside those of its comparison profile (another schedule)",
             tuned=False),
        _fig("06_claims", "the claims' verdicts with the 95% interval of the closest pair"),
        _tab("06_survival", "each claim's verdict under the paper's protocol (the demo and paper-schedule builds) "
             "beside its fair verdict, and whether it survives (both positive), does not (fair negligible or "
             f"contradicted) or is undecided; {DESCRIPTIVE_NOTE}", tuned=True),
        _fig("06_survival", "each claim's verdict per dataset under each paper-protocol build and the fair one, "
             "the paper cells marked with the claim's fate", tuned=True),
        _tab("06_tuned", "the setting equal tuning chose per dataset and loss: learning rate, key constant, its "
             "trial and validation MAP@R, and how many of its tuning runs reached the budget", tuned=True),
        _tab("06_convergence", "every run's stop: best and last epoch, what stopped it (patience or the budget) "
             "and whether it converged", tuned=True),
    ),
}
"""Analysis notebook -> what it writes under ``figures/<profile>/`` (a profile writes :func:`items`)."""


def _is_tuned(profile: str) -> bool:
    from vgcore.config import PROFILES

    return profile in PROFILES and PROFILES[profile].tuned


def items(notebook: str, profile: str | None = None) -> tuple[Item, ...]:
    """The items of `notebook` that `profile`'s build writes (its :attr:`Item.tuned` matches whether
    the profile is tuned); every declared item when `profile` is None."""
    if profile is None:
        return ANALYSIS[notebook]
    tuned = _is_tuned(profile)
    return tuple(i for i in ANALYSIS[notebook] if i.tuned is None or i.tuned == tuned)


class Outputs:
    """Writes the declared figures and tables of one analysis notebook, naming the notebook.

    ``runs``: the runs the notebook draws from (a frame of :func:`collect_profile`, with its
    ``config_hash`` column); every caption and figure footer then names them by
    :func:`vgcore.results.runs_digest`, e.g. "profile smoke, runs 3f0c9a1b22de".
    """

    def __init__(self, notebook: str, figures_dir: str | os.PathLike, profile: str, runs=None):
        if notebook not in ANALYSIS:
            raise ValueError(f"unknown analysis notebook {notebook!r}; choose one of: {', '.join(ANALYSIS)}")
        self.notebook, self.dir, self.profile = notebook, Path(figures_dir), profile
        self.items = {(item.kind, item.name): item for item in items(notebook, profile)}
        self.written: list[Path] = []
        self.runs_digest = None
        if runs is not None:
            from vgcore.results import runs_digest

            self.runs_digest = runs_digest(runs["config_hash"])

    @property
    def source(self) -> str:
        """What a caption names: "profile smoke" (and ", runs <digest>" when the runs are known)."""
        return f"profile {self.profile}" + (f", runs {self.runs_digest}" if self.runs_digest else "")

    def _item(self, name: str, kind: str) -> Item:
        item = self.items.get((kind, name))
        if item is None:
            valid = [i.name for i in self.items.values() if i.kind == kind]
            raise ValueError(f"{self.notebook} declares no {kind} {name!r} (vgcore.report.outputs.ANALYSIS); "
                             f"declared: {', '.join(valid)}")
        return item

    def figure(self, fig, name: str) -> list[Path]:
        from vgcore.report.plots import WIDTHS, save_figure

        item = self._item(name, "figure")
        inches = fig.get_figwidth()
        if abs(inches - WIDTHS[item.width]) > 0.01:
            raise ValueError(f"{name} is drawn {inches:.2f} in wide, but declared {item.width} width "
                             f"({WIDTHS[item.width]} in) in vgcore.report.outputs.ANALYSIS: draw it with "
                             f"width={item.width!r} (its text sizes are checked at that width)")
        paths = save_figure(fig, self.dir / name, f"{self.notebook}.ipynb", self.profile, self.runs_digest)
        self.written += paths
        return paths

    def table(self, table, name: str) -> list[Path]:
        from vgcore.report.analysis import write_table

        item = self._item(name, "table")
        paths = write_table(table, self.dir / "tables" / name, f"{item.caption} ({self.source})",
                            f"{self.notebook}.ipynb")
        self.written += paths
        return paths

    def missing(self) -> list[Path]:
        """Declared files not written yet (empty at the end of a notebook that did its job)."""
        return [p for item in self.items.values() for p in item.files(self.dir) if p not in self.written]

    def finish(self) -> str:
        """The notebook's last step: fail naming every declared file it did not write; else record their
        sha256 (:func:`manifest`) and say in one line what it wrote where."""
        missing = self.missing()
        if missing:
            raise ValueError(f"{self.notebook} did not write {', '.join(str(p) for p in missing)}: every figure and "
                             "table declared in vgcore.report.outputs.ANALYSIS needs its cell")
        lines = [f"{file_digest(p)}  {p.relative_to(self.dir).as_posix()}\n"
                 for p in analysis_files(self.dir, self.notebook, profile=self.profile)]
        atomic_write_text(manifest(self.dir, self.notebook), "".join(lines))
        kinds = [item.kind for item in self.items.values()]
        figures, tables = kinds.count("figure"), kinds.count("table")
        return (f"{self.notebook} wrote {figures} figure{'s' * (figures != 1)} (PNG, PDF) and {tables} "
                f"table{'s' * (tables != 1)} (CSV, Markdown, LaTeX) to {self.dir}/")


def collect_profile(results_root: str | os.PathLike, profile: str, table: str = "summary", *,
                    variant: str | None = None, errors: str = "raise"):
    """`vgcore.results.collect` for one profile: its own runs only (or one variant's, when asked),
    each checked to be of the config the profile gives now; failing with advice when there is none.
    A stale or corrupt run raises naming it (``errors="skip"``: left out with a warning)."""
    from vgcore.config import get_profile
    from vgcore.results import collect

    get_profile(profile)
    frame = collect(results_root, table, profile=profile, variant=variant, errors=errors)
    if frame.empty:
        what = f"variant {variant!r} of profile {profile!r}" if variant else f"profile {profile!r}"
        raise ValueError(f"no complete run of {what} under {str(results_root)!r}; train first "
                         f"(`make demo`, `python -m vgcore sweep --profile {profile}` or notebook 02_train)")
    return frame


def _ranges(values) -> str:
    """``0-4`` for 0,1,2,3,4; ``0, 2, 5`` otherwise."""
    v = sorted(int(x) for x in values)
    return f"{v[0]}-{v[-1]}" if len(v) > 2 and v == list(range(v[0], v[-1] + 1)) else ", ".join(map(str, v))


def describe_runs(summary) -> str:
    """One line about a summary table: how many runs, of which datasets, losses and seeds."""
    if summary.empty:
        return "no runs"
    datasets, losses, seeds = (sorted(summary[c].unique()) for c in ("dataset", "loss", "seed"))
    profiles = ", ".join(sorted(summary["profile"].unique())) if "profile" in summary else "?"
    return (f"{len(summary)} runs of profile {profiles}: {len(datasets)} dataset{'s' * (len(datasets) != 1)} "
            f"({', '.join(datasets)}) x {len(losses)} losses x {len(seeds)} seed{'s' * (len(seeds) != 1)} "
            f"({_ranges(seeds)})")


def class_names(profile: str, dataset: str, data_root=None) -> list[str] | None:
    """The class names of a profile's dataset in its evaluation split, where the data is here without
    downloading (None otherwise, e.g. FashionMNIST on Binder: the figures then say "class k")."""
    from vgcore.config import get_profile
    from vgcore.data import DataNotFoundError, check_available, load_dataset

    prof = get_profile(profile)
    config = prof.config(dataset, prof.losses[0], prof.seeds[0])
    try:
        check_available(dataset, data_root, download=False)
        return list(load_dataset(dataset, data_root, config.eval_split, **config.dataset_options).class_names)
    except DataNotFoundError:
        return None


def picture_datasets(datasets) -> list[str]:
    """The datasets whose samples are pictures (:func:`vgcore.data.has_pictures`), in order; the first
    dataset alone where none are (a profile of generated sets, e.g. smoke, still gets its figures)."""
    from vgcore.data import has_pictures

    datasets = list(datasets)
    return [d for d in datasets if has_pictures(d)] or datasets[:1]


def lowest_seed_runs(summary, results_root: str | os.PathLike, profile: str, variant: str | None = None,
                     losses=None) -> dict[str, dict[str, dict]]:
    """dataset -> loss -> :func:`vgcore.results.load_run` of the lowest seed of `summary`'s runs (only
    `losses` where given): what the figures of one run per loss draw (PCA, similarities, galleries)."""
    from vgcore.results import load_run, own_run_dir

    first = summary[summary["seed"] == summary["seed"].min()]
    out: dict[str, dict[str, dict]] = {}
    for r in first.sort_values(["dataset"]).itertuples():
        if losses is None or r.loss in losses:
            out.setdefault(r.dataset, {})[r.loss] = load_run(own_run_dir(results_root, profile, r.dataset, r.loss,
                                                                         r.seed, variant))
    return out


def run_embeddings(summary, results_root: str | os.PathLike, profile: str, variant: str | None = None):
    """``(dataset, loss, seed, z, y)`` of every run of `summary`: its stored final embeddings and labels."""
    from vgcore.results import load_run, own_run_dir

    for r in summary.itertuples():
        z, y = load_run(own_run_dir(results_root, profile, r.dataset, r.loss, r.seed, variant))["embeddings"]
        yield r.dataset, r.loss, r.seed, z, y


def analysis_files(figures_dir: str | os.PathLike, notebook: str | None = None, *,
                   profile: str | None = None) -> list[Path]:
    """Every file the analysis notebooks (or one of them) write under `figures_dir` (for `profile`:
    :func:`items`; every declared file when None)."""
    names = [notebook] if notebook else list(ANALYSIS)
    return [p for nb in names for item in items(nb, profile) for p in item.files(figures_dir)]


def manifest(figures_dir: str | os.PathLike, notebook: str) -> Path:
    """``<figures_dir>/notebooks/<notebook>.sha256``: the sha256 of each file `notebook` wrote when it
    last finished, in ``sha256sum`` format (paths relative to `figures_dir`: ``sha256sum -c`` checks them there)."""
    return Path(figures_dir) / "notebooks" / f"{notebook}.sha256"


def edited(figures_dir: str | os.PathLike) -> list[tuple[Path, str]]:
    """The declared files under `figures_dir` whose bytes differ from what their notebook recorded
    (:func:`manifest`), each with that notebook. A missing file or manifest is not an edit."""
    found = []
    for notebook in ANALYSIS:
        record = manifest(figures_dir, notebook)
        declared = analysis_files(figures_dir, notebook)
        for line in record.read_text().splitlines() if record.is_file() else ():
            digest, _, name = line.partition("  ")
            path = Path(figures_dir) / name
            if path in declared and path.is_file() and file_digest(path) != digest:
                found.append((path, notebook))
    return found


def write_index(figures_dir: str | os.PathLike, profile: str, description: str = "") -> Path:
    """``<figures_dir>/README.md``: every figure and table, its caption and the notebook that made it.

    Only files that exist are linked (a declared item whose files are missing shows "(not built)"),
    so an index rewritten after a failed build links nothing that was deleted."""
    d = Path(figures_dir)
    lines = [f"# Figures and tables: profile `{profile}`", "",
             "Generated by the notebook build (`workflow/Snakefile`); do not edit by hand. "
             f"Rebuild with `make {'demo' if profile == 'demo' else 'paper' if profile == 'paper' else 'figures PROFILE=' + profile}`.",
             ""]
    if description:
        lines += [f"Profile `{profile}`: {description}.", ""]
    lines += ["| file | what it shows | notebook |", "| --- | --- | --- |"]
    for notebook in ANALYSIS:
        for item in items(notebook, profile):
            files = [p for p in item.files(d) if p.is_file()]  # never link a file that is not there
            links = " ".join(f"[{p.suffix[1:]}]({p.relative_to(d).as_posix()})" for p in files) or "(not built)"
            lines.append(f"| `{item.name}` {links} | {item.caption} | [`notebooks/{notebook}.ipynb`]"
                         f"(../../notebooks/{notebook}.ipynb) |")
    executed = sorted((d / "notebooks").glob("*.ipynb")) if (d / "notebooks").is_dir() else []
    if executed:
        lines += ["", "Executed analysis notebooks (with their outputs): "
                  + ", ".join(f"[{p.name}](notebooks/{p.name})" for p in executed) + "."]
    return atomic_write_text(d / "README.md", "\n".join(lines) + "\n")
