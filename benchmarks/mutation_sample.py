"""Score a seeded random sample of the mutants instead of all (`make mutate SAMPLE=200`).

Generates every mutant of ``[tool.mutmut]`` ``only_mutate`` under ``mutants/`` (as ``mutmut run``
does), draws ``--size`` of them with ``--seed``, in each package in proportion to its number of
mutants, writes the draw to ``benchmarks/out/mutation_sample.json`` and runs
``mutmut run --max-children <jobs> <names>`` on it. ``mutation_report.py --sample`` then scores
the sample per package. See PROTOCOL.md, "Mutation testing".

    python benchmarks/mutation_sample.py --size 200 [--seed 0] [--jobs 1] [--draw-only] [--root DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the package a mutated file belongs to, first match wins; the rest are top-level modules
PACKAGES = ("losses", "metrics", "report", "train", "data")
TOP_LEVEL = "results, io, config, identity, snapshot"


def package(source: str) -> str:
    """The package a mutated file (``vgcore/<package>/x.py`` or ``vgcore/x.py``) is reported under."""
    parts = Path(source).parts
    return parts[1] if len(parts) > 2 and parts[1] in PACKAGES else TOP_LEVEL


def generate() -> dict[str, list[str]]:
    """Write every mutant under ``mutants/``; {source path: its mutant names}."""
    from mutmut.__main__ import copy_also_copy_files, create_mutants
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.mutation.trampoline import set_mutant_under_test
    from mutmut.utils.file_utils import copy_src_dir, walk_mutatable_files

    set_mutant_under_test("mutant_generation")
    Path("mutants").mkdir(exist_ok=True)
    copy_src_dir()
    copy_also_copy_files()
    create_mutants(1)
    names = {}
    for path in walk_mutatable_files():
        data = SourceFileMutationData(path=path)
        data.load()
        names[path.as_posix()] = sorted(data.exit_code_by_key)
    return names


def draw(names: dict[str, list[str]], size: int, seed: int) -> dict[str, list[str]]:
    """``size`` mutants drawn without replacement, per package in proportion to its mutants."""
    by_package: dict[str, list[str]] = {}
    for source, keys in sorted(names.items()):
        by_package.setdefault(package(source), []).extend(keys)
    total = sum(len(keys) for keys in by_package.values())
    rng = random.Random(seed)
    shares = {p: size * len(keys) / total for p, keys in by_package.items()}
    counts = {p: int(share) for p, share in shares.items()}
    # largest remainders take the mutants that rounding down left over
    for p in sorted(shares, key=lambda p: counts[p] - shares[p])[: size - sum(counts.values())]:
        counts[p] += 1
    return {p: sorted(rng.sample(keys, min(counts[p], len(keys)))) for p, keys in sorted(by_package.items())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    parser.add_argument("--draw-only", action="store_true", help="generate and draw, run nothing")
    parser.add_argument("--root", type=Path, default=ROOT, help="the project whose [tool.mutmut] scope is mutated")
    args = parser.parse_args(argv)
    os.chdir(args.root)
    names = generate()
    sample = draw(names, args.size, args.seed)
    population = {}
    for source, keys in names.items():
        population[package(source)] = population.get(package(source), 0) + len(keys)
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"seed": args.seed, "size": sum(map(len, sample.values())),
              "population": dict(sorted(population.items())), "sample": sample}
    (args.out / "mutation_sample.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"drew {record['size']} of {sum(population.values())} mutants (seed {args.seed}): "
          + ", ".join(f"{p} {len(k)} of {population[p]}" for p, k in sample.items()))
    if args.draw_only:
        return 0
    chosen = [name for keys in sample.values() for name in keys]
    mutmut = Path(sys.executable).with_name("mutmut")
    return subprocess.call([str(mutmut), "run", "--max-children", str(args.jobs), *chosen])


if __name__ == "__main__":
    raise SystemExit(main())
