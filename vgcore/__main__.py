"""Command line: ``python -m vgcore {list,run,sweep,demo,paper}``.

Examples::

    python -m vgcore list
    python -m vgcore run --profile demo --dataset fashionmnist --loss triplet --seed 0 epochs=3
    python -m vgcore sweep --profile demo                # resumes: complete runs are skipped
    python -m vgcore sweep --profile smoke loss_params.margin=0.3
    python -m vgcore demo -j 2                           # the notebook build (Snakemake): = make demo
    python -m vgcore figures --profile smoke --losses triplet scl --dry-run
"""

from __future__ import annotations

import argparse
import sys

from vgcore.config import PROFILES, get_profile, parse_overrides

DEFAULT_RESULTS = "results"


def _add_paths(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default=DEFAULT_RESULTS, help="results root (default: results/)")
    p.add_argument("--data-root", default=None, help="dataset root (default: $VGCORE_DATA or ./data)")
    p.add_argument("--cache-dir", default=None, help="feature cache (default: $VGCORE_CACHE or ./cache)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides, e.g. epochs=3 lr=1e-3 loss_params.margin=0.2")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vgcore", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="losses, datasets, backbones and profiles")

    run = sub.add_parser("run", help="train one (profile, dataset, loss, seed)")
    run.add_argument("--profile", default="demo")
    run.add_argument("--dataset", required=True)
    run.add_argument("--loss", required=True)
    run.add_argument("--seed", type=int, default=0)
    _add_paths(run)

    p = sub.add_parser("sweep", help="every dataset x loss x seed of a profile, skipping complete runs")
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
        p.add_argument("snakemake_args", nargs=argparse.REMAINDER,
                       help="after `--`: further snakemake options, e.g. -- --profile workflow/profiles/slurm")
    return parser


def _add_selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--datasets", nargs="+", default=None, help="subset of the profile's datasets")
    p.add_argument("--losses", nargs="+", default=None, help="subset of the profile's losses")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="seeds (default: the profile's)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except ValueError as err:  # bad input: say what is wrong and how to fix it, without a traceback
        print(f"error: {err}", file=sys.stderr)
        return 2


def _dispatch(args: argparse.Namespace) -> int:
    if args.command in ("demo", "paper", "figures"):
        return _build(args)
    from vgcore import train  # imported here so that `list` and `--help` stay fast

    if args.command == "list":
        from vgcore.backbones import BACKBONES
        from vgcore.data import DATASETS
        from vgcore.losses import LOSSES

        print("losses:    " + ", ".join(LOSSES))
        print("datasets:  " + ", ".join(DATASETS))
        print("backbones: " + ", ".join(BACKBONES))
        print("profiles:")
        for p in PROFILES.values():
            print(f"  {p.name:6s} {p.description}")
        return 0

    overrides = parse_overrides(args.overrides)
    paths = dict(data_root=args.data_root, cache_dir=args.cache_dir, progress=not args.quiet)
    if args.command == "run":
        config = get_profile(args.profile).config(args.dataset, args.loss, args.seed, **overrides)
        from vgcore.results import run_dir

        result = train.run(config, run_dir(args.results, config), **paths)
        print(f"wrote {result.path}")
        return 0

    profile = get_profile(args.profile)
    _check_subset("dataset", args.datasets, tuple(profile.datasets))
    _check_subset("loss", args.losses, profile.losses)
    configs = [c for c in profile.configs(**overrides)
               if (args.datasets is None or c.dataset in args.datasets)
               and (args.losses is None or c.loss in args.losses)]
    if args.seeds is not None:
        configs = [profile.config(c.dataset, c.loss, s, **overrides) for c in configs if c.seed == profile.seeds[0]
                   for s in args.seeds]
    if not configs:
        raise ValueError(f"the selection matches no run of profile {profile.name!r}; see `python -m vgcore list`")
    train.sweep(configs, args.results, **paths)
    from vgcore.results import collect

    table = collect(args.results, "summary", profile=profile.name)
    cols = ["dataset", "loss", "seed", "recall@1", "map@r", "intra_var", "inter_var", "active_ratio_mean"]
    print(table[[c for c in cols if c in table.columns]].to_string(index=False))
    return 0


def _build(args: argparse.Namespace) -> int:
    """Run the Snakemake notebook build (workflow/Snakefile) for a profile."""
    import subprocess

    from vgcore.build import snakemake_command

    profile = args.profile if args.command == "figures" else args.command
    extra = [a for a in (args.snakemake_args or []) if a != "--"] + (["--dry-run"] if args.dry_run else [])
    cmd = snakemake_command(profile, jobs=args.jobs, results=args.results, figures=args.figures,
                            datasets=args.datasets, losses=args.losses, seeds=args.seeds, extra=extra)
    try:
        import snakemake  # noqa: F401
    except ImportError:
        raise ValueError("the notebook build needs Snakemake: pip install 'vgcore[workflow]' (make setup does)") from None
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.call(cmd)


def _check_subset(what: str, chosen: list[str] | None, valid: tuple[str, ...]) -> None:
    unknown = sorted(set(chosen or ()) - set(valid))
    if unknown:
        raise ValueError(f"unknown {what}(s) {unknown} for this profile; choose from: {', '.join(valid)}")


if __name__ == "__main__":
    sys.exit(main())
