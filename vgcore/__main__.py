"""The one command line: ``python -m vgcore <command>`` (also installed as ``vgcore``).

Examples::

    python -m vgcore list
    python -m vgcore run --profile demo --dataset fashionmnist --loss triplet --seed 0 --set epochs=3
    python -m vgcore sweep --profile demo                # resumes: complete runs are skipped
    python -m vgcore sweep --profile smoke --set loss_params.margin=0.3
    python -m vgcore sweep --features my.npz             # your features (profile custom) through the 7 losses
    python -m vgcore tune --profile fair                 # the fair comparison's equal tuning (= first half of make fair)
    python -m vgcore tune --features my.npz              # the same tuning on your features, then:
    python -m vgcore sweep --features my.npz --profile fair   # tuned, converged losses on them (profile fair_custom)
    python -m vgcore diagnose my_embeddings.npz --features my.npz   # your embeddings beside those runs
    python -m vgcore sweep --profile smoke --tag margin0.3 --set loss_params.margin=0.3   # a variant, kept apart
    python -m vgcore demo -j 2                           # the notebook build (Snakemake): = make demo
    python -m vgcore figures --profile smoke --losses triplet scl --dry-run
    python -m vgcore snapshot restore                    # the committed demo runs -> results/ (= make restore)
    python -m vgcore notebooks check                     # the notebook conventions (vgcore.notebooks)
    python -m vgcore repo https://github.com/me/vgcore   # the repository address, everywhere (= make repo URL=...)

Config overrides are ``--set key=value ...`` for every command (``run`` and ``sweep`` still accept
them as bare ``key=value`` words, with a note). Bad input (an unknown name, a malformed override,
missing data, a diverged run) ends with its message on stderr and exit code 2; ``--debug`` shows the
traceback instead. Ctrl-C ends with one line and
exit code 130. A sweep in which some runs failed
trains the others, lists the failures and exits with 1.

Runs whose config differs from the profile's (any override) live in
``results/<profile>/variants/<tag or digest>/``, never in the profile's own folders.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vgcore import registry, your_features
from vgcore.config import PROFILES, get_profile, parse_overrides, parse_value
from vgcore.cpu import pin_code_path
from vgcore.errors import UserError
from vgcore.pool import parse_jobs

DEFAULT_RESULTS = "results"


class _Parser(argparse.ArgumentParser):
    """Help as plain text: the docstrings' reStructuredText backticks are dropped."""

    def format_help(self) -> str:
        return super().format_help().replace("`", "")

    def format_usage(self) -> str:
        return super().format_usage().replace("`", "")


def _add_tuned(p: argparse.ArgumentParser, losses_help: str) -> None:
    """The options of the commands that work on a tuned profile (tune, sensitivity)."""
    p.add_argument("--profile", default="fair", help="a tuned profile (default: fair)")
    p.add_argument("--datasets", nargs="+", default=None, help="subset of the profile's datasets")
    p.add_argument("--losses", nargs="+", default=None, help=losses_help)
    p.add_argument("--data-root", default=None, help="dataset root (default: $VGCORE_DATA or ./data)")
    p.add_argument("--cache-dir", default=None, help="feature cache (default: $VGCORE_CACHE or ./cache)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_features(p: argparse.ArgumentParser) -> None:
    p.add_argument("--features", default=None, metavar="FILE",
                   help="your own features: a .npz with 'features' [N, D] and 'labels' [N] (optional "
                        "'superclasses', 'split'), or a .npy with --labels; implies --profile custom, or with "
                        "--profile fair the fair protocol at the settings `tune --features` chose")
    p.add_argument("--labels", default=None, metavar="FILE", help="the labels .npy of a --features .npy")


def _add_paths(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default=DEFAULT_RESULTS, help="results root (default: results/)")
    p.add_argument("--data-root", default=None, help="dataset root (default: $VGCORE_DATA or ./data)")
    p.add_argument("--cache-dir", default=None, help="feature cache (default: $VGCORE_CACHE or ./cache)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--tag", default=None,
                   help="name of the variant folder for runs that differ from the profile "
                        "(default: a digest of how they differ); runs of the profile's own config ignore it")
    _add_set(p, "config overrides, e.g. --set epochs=3 lr=1e-3 loss_params.margin=0.2 "
                "(not profile, dataset, loss or seed: use the options)")
    p.add_argument("positional_overrides", nargs="*", metavar="key=value", help=argparse.SUPPRESS)


def _add_set(p: argparse.ArgumentParser, helptext: str) -> None:
    p.add_argument("--set", nargs="+", default=[], metavar="key=value", dest="overrides", help=helptext)


def _merge_positional(args: argparse.Namespace) -> None:
    """run/sweep's older form, bare key=value words: taken as --set, with a note naming the new form."""
    old = getattr(args, "positional_overrides", None)
    if old:
        print(f"note: bare key=value overrides are the older form; write --set {' '.join(old)}", file=sys.stderr)
        args.overrides = [*args.overrides, *old]


def _add_selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--datasets", nargs="+", default=None, help="subset of the profile's datasets")
    p.add_argument("--losses", nargs="+", default=None, help="subset of the profile's losses")
    p.add_argument("--seeds", nargs="+", default=None, help="seeds (default: the profile's)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m vgcore", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="losses, datasets, backbones and profiles")

    run = sub.add_parser("run", help="train one (profile, dataset, loss, seed)")
    run.add_argument("--profile", default=None, help="default: demo (custom with --features)")
    run.add_argument("--dataset", default=None, help="required unless --features is given")
    run.add_argument("--loss", required=True)
    run.add_argument("--seed", type=int, default=0)
    _add_features(run)
    _add_paths(run)

    p = sub.add_parser("sweep", help="every dataset x loss x seed of a profile, skipping complete runs; the "
                       "losses of a dataset x seed train together on one batch stream (same results as alone)")
    p.add_argument("--profile", default=None, help="default: demo (custom with --features)")
    _add_selection(p)
    _add_features(p)
    _add_paths(p)

    t = sub.add_parser("tune", help="the fair comparison's equal tuning (PROTOCOL.md): every trial of every loss, "
                       "trained fused per dataset x tuning seed to its own stop, scored on validation MAP@R; the "
                       "choice per dataset and loss goes to vgcore/tuned/<profile>.json, which the profile reads")
    _add_tuned(t, "subset of the profile's losses")
    t.add_argument("--seeds", nargs="+", type=int, default=None, help="tuning seeds (default: vgcore.tuning.TUNING_SEEDS, 100)")
    t.add_argument("--results", default=DEFAULT_RESULTS, help="results root; trials go to <results>/<profile>-tuning/")
    t.add_argument("--features", default=None, metavar="FILE",
                   help="tune on your own features (as sweep --features reads them); the choice goes to "
                        "<results>/fair_custom-tuning/tuned.json, keyed by the file's digest")
    t.add_argument("--labels", default=None, metavar="FILE", help="the labels .npy of a --features .npy")
    _add_set(t, "with --features: config overrides of every trial, e.g. --set dataset_options.class_split=disjoint")
    t.add_argument("-j", "--jobs", default="all",
                   help="worker processes (an integer or all, the default: one per core); each group of trials is cut "
                        "into one chunk per worker, every trial at one CPU thread, so the scores do not depend on it")

    se = sub.add_parser("sensitivity", help="structure or constants (PROTOCOL.md, Fair comparison, Sensitivity): each "
                        "loss's key constant at 5 values of its tuning range, trained as variants of a tuned profile "
                        "(seeds 0-2), every fair verdict judged again -> figures/sensitivity/<profile>/")
    _add_tuned(se, "the losses whose constant moves (default: all of the profile's)")
    se.add_argument("--results", default=DEFAULT_RESULTS, help="results root (its fair build's runs; default: results/)")
    se.add_argument("--figures", default="figures", help="figures root; the build goes to <figures>/sensitivity/<profile>/")

    d = sub.add_parser("diagnose", help="VARIANCE, retrieval and superclass structure of embeddings you trained, "
                       "beside the seven losses' runs on the same features")
    d.add_argument("embeddings", help="a .npz with 'features' (your embeddings [N, D]) and 'labels' [N] "
                   "(optional 'superclasses', 'split'), or a .npy with --labels")
    d.add_argument("--labels", default=None, metavar="FILE", help="the labels .npy of an embeddings .npy")
    d.add_argument("--features", default=None, metavar="FILE",
                   help="the features file the seven losses were trained on (sweep --features FILE)")
    d.add_argument("--features-labels", default=None, metavar="FILE", help="the labels .npy of a --features .npy")
    d.add_argument("--results", default=DEFAULT_RESULTS, help="results root (default: results/)")
    d.add_argument("--nmi", action="store_true", help="also NMI (k-means; slower)")

    for name, helptext in (("demo", "the notebook build of the demo profile (= make demo)"),
                           ("paper", "the notebook build of the paper profile (= make paper)"),
                           ("figures", "the notebook build of any profile (= make figures PROFILE=...)")):
        p = sub.add_parser(name, help=helptext + ": features -> training notebooks -> analysis notebooks "
                           "-> figures/<profile>/, through workflow/Snakefile (only missing or stale outputs rerun)")
        if name == "figures":
            p.add_argument("--profile", required=True)
        _add_selection(p)
        p.add_argument("-j", "--jobs", default="all", help="parallel jobs / cores (default: all cores)")
        p.add_argument("--results", default=DEFAULT_RESULTS, help="results root (default: results/)")
        p.add_argument("--figures", default="figures", help="figures root (default: figures/)")
        p.add_argument("--dry-run", action="store_true", help="print what would run, run nothing")
        _add_set(p, "config overrides for every run (e.g. --set epochs=2 backbone_options.weights=random); "
                    "they change the runs, so give --results and --figures apart from the defaults")
        p.add_argument("snakemake_args", nargs=argparse.REMAINDER,
                       help="after `--`: further snakemake options, e.g. -- --profile workflow/profiles/slurm")

    ex = sub.add_parser("execute", help="run one notebook through papermill (what the Snakefile's rules call); "
                        "with --each, run it once per value of one parameter, all in one kernel")
    ex.add_argument("notebook")
    ex.add_argument("output", nargs="+", help="the executed notebook (one per --each value)")
    ex.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="a parameter (VALUE parsed as JSON where it parses, else a string)")
    ex.add_argument("--each", nargs="+", default=None, metavar=("NAME", "VALUE"),
                    help="NAME V1 V2 ...: execute once per value, into the outputs in the same order, in one kernel")
    ex.add_argument("--retries", type=int, default=2, help="retries when the kernel fails to start")
    ex.add_argument("--kernel", default="python3")

    idx = sub.add_parser("index", help="write figures/<profile>/README.md (every figure and table, its notebook)")
    idx.add_argument("figures_dir")
    idx.add_argument("profile")
    idx.add_argument("--notebooks", nargs="+", default=(), metavar="IPYNB",
                     help="executed analysis notebooks to copy into <figures_dir>/notebooks/ first")

    snap = sub.add_parser("snapshot", help="the compact copy of a profile's runs committed beside its figures")
    snap_sub = snap.add_subparsers(dest="snapshot_command", required=True)
    w = snap_sub.add_parser("write", help="write figures/<profile>/results.tar.gz from the complete runs")
    w.add_argument("--results", default=DEFAULT_RESULTS)
    w.add_argument("--profile", default="demo")
    w.add_argument("--out", default=None, help="default: figures/<profile>/results.tar.gz")
    w.add_argument("--variant", default=None, help="the runs of this variant folder instead of the profile's own")
    r = snap_sub.add_parser("restore", help="unpack a snapshot's runs under the results root, each checked first "
                            "(intact runs already there are kept, broken ones replaced)")
    r.add_argument("archive", nargs="?", default="figures/demo/results.tar.gz",
                   help="default: figures/demo/results.tar.gz, the committed demo runs")
    r.add_argument("--results", default=DEFAULT_RESULTS)

    nbs = sub.add_parser("notebooks", help="check or fix the conventions of the committed notebooks (vgcore.notebooks)")
    nbs.add_argument("action", choices=("check", "fix"))
    nbs.add_argument("paths", nargs="*", help="notebooks (.py or .ipynb; default: every one in notebooks/)")

    repo = sub.add_parser("repo", help="print the repository address, or set it in pyproject.toml, every badge and "
                          "every notebook's setup cell")
    repo.add_argument("url", nargs="?", help="https://github.com/<owner>/<name>")

    lock = sub.add_parser("lock", help="print the exact installed versions of vgcore's dependencies (constraints.txt)")
    lock.add_argument("--extras", default="dev,notebooks,offline,workflow,cluster,docs",
                      help="comma-separated extras to include")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _merge_positional(args)
    pin_code_path()  # before torch loads: x86 machines take one code path (vgcore/cpu.py)
    try:
        return COMMANDS[args.command](args)
    except (UserError, ValueError) as err:  # bad input: say what is wrong and how to fix it
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: what finished is kept, nothing half-written is left
        if args.debug:
            raise
        print("interrupted: what finished is kept; the same command resumes", file=sys.stderr)
        return 130


def _require(modules: tuple[str, ...], what: str, extras: str) -> None:
    """A one-line error naming the extras to install when any of `modules` is missing (a core install:
    `pip install vgcore` has none of the notebook or workflow packages)."""
    from importlib.util import find_spec

    missing = [m for m in modules if find_spec(m) is None]
    if missing:
        raise ValueError(f"{what} needs {', '.join(missing)}: pip install 'vgcore[{extras}]' (make setup does)")


def _list(args: argparse.Namespace) -> int:
    print("losses:    " + ", ".join(registry.names("loss")))
    print("datasets:  " + ", ".join(registry.names("dataset")))
    print("backbones: " + ", ".join(registry.names("backbone")))
    print("profiles:")
    for p in PROFILES.values():
        print(f"  {p.name:6s} {p.description}")
    return 0


def _with_features(args: argparse.Namespace) -> tuple[str, dict]:
    """The profile and the overrides, with --features / --labels as the custom dataset's file."""
    overrides = parse_overrides(args.overrides)
    if args.features is None:
        if args.labels is not None:
            raise ValueError("--labels goes with --features (the labels of a features .npy)")
        return args.profile or "demo", overrides
    if args.profile in ("fair", your_features.PROFILE):  # the file and its tuning: your_features.configs
        return your_features.PROFILE, overrides
    if args.profile not in (None, "custom"):
        raise ValueError(f"--features trains on your file with profile 'custom' (or 'fair': the fair protocol), not "
                         f"{args.profile!r}; drop --profile, or pass --profile custom or --profile fair")
    files = {"path": args.features, **({"labels_path": args.labels} if args.labels else {})}
    overrides["dataset_options"] = {**overrides.get("dataset_options", {}), **files}
    return "custom", overrides


def _run(args: argparse.Namespace) -> int:
    from vgcore import results, train

    profile, overrides = _with_features(args)
    dataset = args.dataset or ("custom" if args.features else None)
    if dataset is None:
        raise ValueError("run needs --dataset (or --features FILE for your own features)")
    if profile == your_features.PROFILE:
        config, = your_features.configs(args.features, args.results, labels_path=args.labels, losses=[args.loss],
                                        seeds=[args.seed], overrides=overrides)
    else:
        config = get_profile(profile).config(dataset, args.loss, args.seed, **overrides)
    results.check_variant(args.results, config, args.tag)
    result = train.run(config, results.run_dir(args.results, config, args.tag), **_paths(args))
    print(f"wrote {result.path}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from vgcore import results, train
    from vgcore.workflow import selection

    name, overrides = _with_features(args)
    profile = get_profile(name)
    datasets, losses, seeds = selection(profile, args.datasets, args.losses, args.seeds)
    if name == your_features.PROFILE:
        configs = your_features.configs(args.features, args.results, labels_path=args.labels, losses=losses,
                                        seeds=seeds, overrides=overrides)
    else:
        configs = [profile.config(d, loss, s, **overrides) for d in datasets for loss in losses for s in seeds]
    done = train.sweep(configs, args.results, tag=args.tag, **_paths(args))
    table = results.runs_frame([p for p in done.paths if p not in done.failures], "summary")  # this sweep's runs only
    cols = ["dataset", "loss", "seed", "recall@1", "map@r", "intra_var", "inter_var", "active_ratio_mean"]
    print(table[[c for c in cols if c in table.columns]].to_string(index=False))
    folders = sorted({str(p.parents[2]) for p in done.paths})
    print(f"runs in {', '.join(folders)}")
    if done.failures:
        print(f"{len(done.failures)} of {len(done.paths)} runs failed (the others are complete):", file=sys.stderr)
        for path, error in done.failures.items():
            print(f"  {path}: {error.splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


def _tuned_selection(args: argparse.Namespace, what: str):
    """The tuned profile of ``--profile`` and its ``--datasets`` / ``--losses`` selection; an untuned
    profile is refused, saying what `what` needs."""
    from vgcore.workflow import selection

    profile = get_profile(args.profile)
    if not profile.tuned:
        raise UserError(f"profile {profile.name!r} is not tuned (its settings are fixed); {what} needs a profile "
                        "whose settings come from its tuning: --profile fair")
    datasets, losses, _ = selection(profile, args.datasets, args.losses, None)
    return profile, datasets, losses


def _tune(args: argparse.Namespace) -> int:
    from vgcore import tuning
    from vgcore.train import tune

    seeds = tuple(args.seeds) if args.seeds else tuning.TUNING_SEEDS
    if args.features is not None:
        chosen, path = _tune_features(args, seeds)
    else:
        if args.overrides or args.labels:
            raise UserError("--set and --labels go with --features (a tuning of your features); the fair build's "
                            "tuning follows PROTOCOL.md as it stands")
        profile, datasets, losses = _tuned_selection(args, "tuning")
        frame = tune.tune(profile, args.results, datasets=datasets, losses=losses, seeds=seeds,
                          data_root=args.data_root, cache_dir=args.cache_dir, progress=not args.quiet,
                          jobs=parse_jobs(args.jobs))
        chosen = tune.picks(frame)
        path = tune.write_tuned(profile, chosen)
    for dataset, entries in chosen.items():
        for loss, entry in entries.items():
            params = ", ".join(f"{k}={v:.4g}" for k, v in entry["loss_params"].items())
            print(f"{dataset:14s} {loss:18s} trial {entry['trial']}: lr={entry['lr']:.3g} {params}  "
                  f"validation MAP@R {entry['val_map@r']:.4f}"
                  + (f"  ({entry['unconverged']} tuning runs unconverged)" if entry["unconverged"] else ""))
    print(f"tuned settings in {path}")
    return 0


def _tune_features(args: argparse.Namespace, seeds: tuple[int, ...]):
    """``tune --features``: the fair tuning on the user's file; ``({"custom": choice}, where it went)``."""
    from vgcore.workflow import selection

    if args.profile != "fair" or args.datasets:
        raise UserError("--features tunes your file under the fair protocol: drop --profile and --datasets")
    _, losses, _ = selection(get_profile(your_features.PROFILE), None, args.losses, None)
    chosen = your_features.tune(args.features, args.results, labels_path=args.labels, losses=losses, seeds=seeds,
                                overrides=parse_overrides(args.overrides), data_root=args.data_root,
                                cache_dir=args.cache_dir, progress=not args.quiet, jobs=parse_jobs(args.jobs))
    return {"custom": chosen}, your_features.tuned_path(args.results)


def _sensitivity(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vgcore import results, tuning
    from vgcore.report.sensitivity import write_build
    from vgcore.train import tune

    profile, datasets, losses = _tuned_selection(args, "the sensitivity build (it moves the tuned constants)")
    seeds = [s for s in tuning.SENSITIVITY_SEEDS if s in profile.seeds]
    own = results.collect(args.results, "summary", profile.name)
    if own.empty or not own["dataset"].isin(datasets).any():
        raise UserError(f"no runs of profile {profile.name!r} under {args.results}/: the sensitivity build moves the "
                        f"constants of that build's runs; build it first (`make fair`, or python -m vgcore tune "
                        f"--profile {profile.name} then python -m vgcore figures --profile {profile.name})")
    done = tune.sensitivity(profile, args.results, datasets=datasets, losses=losses, seeds=seeds,
                            data_root=args.data_root, cache_dir=args.cache_dir, progress=not args.quiet)
    if done.failures:
        for path, error in done.failures.items():
            print(f"  {path}: {error.splitlines()[0]}", file=sys.stderr)
        raise UserError(f"{len(done.failures)} sensitivity runs failed; the others are complete (rerun to retry)")
    out = Path(args.figures) / "sensitivity" / profile.name
    paths = write_build(args.results, out, profile.name, datasets, losses, seeds)
    print(f"wrote {len(paths)} files to {out}/")
    return 0


def _diagnose(args: argparse.Namespace) -> int:
    from vgcore.report.diagnose import diagnose

    print(diagnose(args.embeddings, labels_path=args.labels, features=args.features,
                   features_labels=args.features_labels, results_root=args.results, nmi=args.nmi))
    return 0


def _paths(args: argparse.Namespace) -> dict:
    return dict(data_root=args.data_root, cache_dir=args.cache_dir, progress=not args.quiet)


def _build(args: argparse.Namespace) -> int:
    """Run the Snakemake notebook build (workflow/Snakefile) for a profile."""
    import shlex
    import subprocess

    from vgcore.workflow import edited_outputs, prepare_runs, recover_stale_lock, snakemake_command

    profile = args.profile if args.command == "figures" else args.command
    extra = [a for a in (args.snakemake_args or []) if a != "--"] + (["--dry-run"] if args.dry_run else [])
    cmd = snakemake_command(profile, jobs=args.jobs, results=args.results, figures=args.figures,
                            datasets=args.datasets, losses=args.losses, seeds=args.seeds, overrides=args.overrides,
                            extra=extra)
    _require(("snakemake", "papermill"), "the notebook build", "notebooks,workflow")
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if not args.dry_run:
        _check_data(get_profile(profile), args.datasets, args.overrides)
    forced = prepare_runs(get_profile(profile), args.results, args.datasets, args.losses, args.seeds,
                          overrides=args.overrides, dry_run=args.dry_run, log=log)
    forced += edited_outputs(Path(args.figures) / profile, log=log)
    if forced:
        cmd += ["--forcerun", *map(str, forced)]
    if not args.dry_run:
        recover_stale_lock(log=log)
    print("+ " + shlex.join(cmd), file=sys.stderr, flush=True)
    proc = subprocess.Popen(cmd)
    try:
        code, interrupted = proc.wait(), False
    except KeyboardInterrupt:  # Ctrl-C reached snakemake too (one process group): it stops its jobs and unlocks
        code, interrupted = proc.wait(), True
    figures = Path(args.figures) / profile
    if code and not args.dry_run and (figures / "README.md").exists():
        # a failed build deletes its failed targets: the index must not link them
        from vgcore.report.outputs import write_index

        write_index(figures, profile, get_profile(profile).description)
    if interrupted:
        raise KeyboardInterrupt
    return code


def _check_data(profile, datasets, overrides) -> None:
    """Each selected dataset is on disk (or fetched now), before Snakemake starts: a missing one
    ends the build with its one-line cause and the ways to get it, not under the jobs' tracebacks."""
    from vgcore.data import check_available
    from vgcore.workflow import selection

    for dataset in selection(profile, datasets, None, None)[0]:
        config = profile.config(dataset, profile.losses[0], profile.seeds[0], **parse_overrides(list(overrides)))
        check_available(dataset, download=config.dataset_options.get("download", True))


def _execute(args: argparse.Namespace) -> int:
    from vgcore.workflow import execute, execute_many

    _require(("papermill",), "executing a notebook", "notebooks")
    params = {name: parse_value(value) for name, value in args.parameter}
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    if args.each is not None and (len(args.each) < 2 or len(args.each) - 1 != len(args.output)):
        raise ValueError(f"--each NAME V1 V2 ... needs one output per value: got {max(len(args.each) - 1, 0)} "
                         f"value(s) and {len(args.output)} output(s)")
    if args.each is None and len(args.output) != 1:
        raise ValueError(f"one output per notebook run: got {len(args.output)}; use --each NAME V1 V2 ... for several")
    try:
        if args.each is None:
            execute(args.notebook, args.output[0], params, kernel=args.kernel, retries=args.retries, log=log)
        else:
            name, values = args.each[0], [parse_value(v) for v in args.each[1:]]
            execute_many([(args.notebook, out, {**params, name: v}) for out, v in zip(args.output, values, strict=True)],
                         kernel=args.kernel, retries=args.retries, log=log)
    except Exception as err:  # the notebook's own traceback is in the output; keep this short
        if args.debug:
            raise
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 0


def _index(args: argparse.Namespace) -> int:
    import shutil

    from vgcore.report.outputs import write_index

    for notebook in args.notebooks:
        (Path(args.figures_dir) / "notebooks").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(notebook, Path(args.figures_dir) / "notebooks" / Path(notebook).name)
    write_index(args.figures_dir, args.profile, get_profile(args.profile).description)
    return 0


def _snapshot(args: argparse.Namespace) -> int:
    from vgcore import snapshot

    if args.snapshot_command == "write":
        print(snapshot.write(args.results, args.profile, args.out, variant=args.variant))
    else:
        added = snapshot.restore(args.archive, args.results, log=print)
        print(f"restored {len(added)} runs under {args.results}")
    return 0


def _notebooks(args: argparse.Namespace) -> int:
    from vgcore import notebooks

    _require(("jupytext", "nbformat"), "`vgcore notebooks`", "notebooks")
    if args.action == "fix":
        paths = args.paths or sorted(str(p) for p in (notebooks.ROOT / "notebooks").glob("*.py"))
        for path in paths:
            for written in notebooks.fix(path):
                print(f"wrote {written}")
        return 0
    found = notebooks.check(args.paths or None)
    for path, issues in found.items():
        for issue in issues:
            print(f"{path}: {issue}", file=sys.stderr)
    if found:
        print("fix with `python -m vgcore notebooks fix <notebook>` (see vgcore/notebooks.py)", file=sys.stderr)
    return 1 if found else 0


def _repo(args: argparse.Namespace) -> int:
    from vgcore import notebooks

    if not args.url:
        print(notebooks.repository_url())
        return 0
    for path in notebooks.set_repository(args.url):
        print(f"updated {path}")
    return 0


def _lock(args: argparse.Namespace) -> int:
    from vgcore.provenance import lock_file

    sys.stdout.write(lock_file(tuple(e for e in args.extras.split(",") if e)))
    return 0


COMMANDS = {"list": _list, "run": _run, "sweep": _sweep, "tune": _tune, "sensitivity": _sensitivity,
            "diagnose": _diagnose, "demo": _build, "paper": _build, "figures": _build, "execute": _execute, "index": _index, "snapshot": _snapshot, "notebooks": _notebooks,
            "repo": _repo, "lock": _lock}


if __name__ == "__main__":
    sys.exit(main())
