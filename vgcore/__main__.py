"""The one command line: ``python -m vgcore <command>`` (also installed as ``vgcore``).

Examples::

    python -m vgcore list
    python -m vgcore run --profile demo --dataset fashionmnist --loss triplet --seed 0 epochs=3
    python -m vgcore sweep --profile demo                # resumes: complete runs are skipped
    python -m vgcore sweep --profile smoke loss_params.margin=0.3
    python -m vgcore demo -j 2                           # the notebook build (Snakemake): = make demo
    python -m vgcore figures --profile smoke --losses triplet scl --dry-run
    python -m vgcore snapshot restore figures/demo/results.tar.gz

Bad input (an unknown name, a malformed override, missing data) ends with one line on stderr and
exit code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys

from vgcore import registry
from vgcore.config import PROFILES, get_profile, parse_overrides, parse_value
from vgcore.errors import UserError

DEFAULT_RESULTS = "results"


def _add_paths(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default=DEFAULT_RESULTS, help="results root (default: results/)")
    p.add_argument("--data-root", default=None, help="dataset root (default: $VGCORE_DATA or ./data)")
    p.add_argument("--cache-dir", default=None, help="feature cache (default: $VGCORE_CACHE or ./cache)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. epochs=3 lr=1e-3 loss_params.margin=0.2")


def _add_selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--datasets", nargs="+", default=None, help="subset of the profile's datasets")
    p.add_argument("--losses", nargs="+", default=None, help="subset of the profile's losses")
    p.add_argument("--seeds", nargs="+", default=None, help="seeds (default: the profile's)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vgcore", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="losses, datasets, backbones and profiles")

    run = sub.add_parser("run", help="train one (profile, dataset, loss, seed)")
    run.add_argument("--profile", default="demo")
    run.add_argument("--dataset", required=True)
    run.add_argument("--loss", required=True)
    run.add_argument("--seed", type=int, default=0)
    _add_paths(run)

    p = sub.add_parser("sweep", help="every dataset x loss x seed of a profile, skipping complete runs; the "
                       "losses of a dataset x seed train together on one batch stream (same results as alone)")
    p.add_argument("--profile", default="demo")
    _add_selection(p)
    _add_paths(p)

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
        p.add_argument("--set", nargs="+", default=(), metavar="key=value", dest="overrides",
                       help="config overrides for every run (e.g. epochs=2 backbone_options.weights=random); "
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

    snap = sub.add_parser("snapshot", help="the compact copy of a profile's runs committed beside its figures")
    snap_sub = snap.add_subparsers(dest="snapshot_command", required=True)
    w = snap_sub.add_parser("write", help="write figures/<profile>/results.tar.gz from the complete runs")
    w.add_argument("--results", default=DEFAULT_RESULTS)
    w.add_argument("--profile", default="demo")
    w.add_argument("--out", default=None, help="default: figures/<profile>/results.tar.gz")
    r = snap_sub.add_parser("restore", help="unpack a snapshot under the results root (runs already there are kept)")
    r.add_argument("archive")
    r.add_argument("--results", default=DEFAULT_RESULTS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (UserError, ValueError) as err:  # bad input: say what is wrong and how to fix it
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2


def _list(args: argparse.Namespace) -> int:
    print("losses:    " + ", ".join(registry.names("loss")))
    print("datasets:  " + ", ".join(registry.names("dataset")))
    print("backbones: " + ", ".join(registry.names("backbone")))
    print("profiles:")
    for p in PROFILES.values():
        print(f"  {p.name:6s} {p.description}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from vgcore import train
    from vgcore.results import run_dir

    config = get_profile(args.profile).config(args.dataset, args.loss, args.seed, **parse_overrides(args.overrides))
    result = train.run(config, run_dir(args.results, config), **_paths(args))
    print(f"wrote {result.path}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from vgcore import train
    from vgcore.results import collect
    from vgcore.workflow import selection

    overrides = parse_overrides(args.overrides)
    profile = get_profile(args.profile)
    datasets, losses, seeds = selection(profile, args.datasets, args.losses, args.seeds)
    configs = [profile.config(d, loss, s, **overrides) for d in datasets for loss in losses for s in seeds]
    train.sweep(configs, args.results, **_paths(args))
    table = collect(args.results, "summary", profile=profile.name)
    cols = ["dataset", "loss", "seed", "recall@1", "map@r", "intra_var", "inter_var", "active_ratio_mean"]
    print(table[[c for c in cols if c in table.columns]].to_string(index=False))
    return 0


def _paths(args: argparse.Namespace) -> dict:
    return dict(data_root=args.data_root, cache_dir=args.cache_dir, progress=not args.quiet)


def _build(args: argparse.Namespace) -> int:
    """Run the Snakemake notebook build (workflow/Snakefile) for a profile."""
    import subprocess

    from vgcore.workflow import snakemake_command

    profile = args.profile if args.command == "figures" else args.command
    extra = [a for a in (args.snakemake_args or []) if a != "--"] + (["--dry-run"] if args.dry_run else [])
    cmd = snakemake_command(profile, jobs=args.jobs, results=args.results, figures=args.figures,
                            datasets=args.datasets, losses=args.losses, seeds=args.seeds, overrides=args.overrides,
                            extra=extra)
    try:
        import snakemake  # noqa: F401
    except ImportError:
        raise ValueError("the notebook build needs Snakemake: pip install 'vgcore[workflow]' (make setup does)") from None
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.call(cmd)


def _execute(args: argparse.Namespace) -> int:
    from vgcore.workflow import execute, execute_many

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
    from vgcore.report.outputs import write_index

    write_index(args.figures_dir, args.profile, get_profile(args.profile).description)
    return 0


def _snapshot(args: argparse.Namespace) -> int:
    from vgcore import snapshot

    if args.snapshot_command == "write":
        print(snapshot.write(args.results, args.profile, args.out))
    else:
        added = snapshot.restore(args.archive, args.results)
        print(f"restored {len(added)} runs under {args.results}")
    return 0


COMMANDS = {"list": _list, "run": _run, "sweep": _sweep, "demo": _build, "paper": _build, "figures": _build,
            "execute": _execute, "index": _index, "snapshot": _snapshot}


if __name__ == "__main__":
    sys.exit(main())
