"""Score and survivors of the last `mutmut run` (see `make mutate` and PROTOCOL.md, "Mutation testing").

Reads mutmut's per-file records under ``mutants/`` and writes to ``benchmarks/out/``:

- ``mutation_score.json``: per module and in total, how many mutants were killed, survived, had no
  test calling their function, timed out, ...; the score is killed (or timed out) over all mutants;
  with ``--sample`` (the draw ``mutation_sample.py`` wrote) only the sampled mutants count, and each
  package's score comes with its 95 % Wilson interval and how many of how many mutants it scored;
- ``mutation_survivors.md``: every mutant that no test killed (survived or no test), with the lines it
  changed, grouped by module, and why it is left: a device argument dropped or set to None (the
  same computation on the CPU, where this runs; the CUDA tests run on a GPU), or the reason
  PROTOCOL.md's "Mutation testing" gives for it by name; any other survivor is "unexplained".

    python benchmarks/mutation_report.py [--mutants mutants] [--out benchmarks/out] [--sample FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import Counter
from pathlib import Path

from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.stats import status_by_exit_code

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutation_sample import package  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOT_KILLED = ("survived", "no tests")
DEVICE_ARG = re.compile(r",?\s*device=[^,)]*")
# in PROTOCOL.md: `vgcore.module.x_function__mutmut_7` or `vgcore.module.x_function__mutmut_{7,9}`
NAMED = re.compile(r"`(vgcore\.[^`{]*__mutmut_)(?:\{([\d, ]+)\}|(\d+))`")


def explained_in_protocol(protocol: Path) -> set[str]:
    """Mutant names that PROTOCOL.md's "Mutation testing" section explains."""
    text = protocol.read_text()
    section = text[text.find("## Mutation testing"):]
    section = section[: section.find("\n## ", 1)] if "\n## " in section[1:] else section
    names = set()
    for prefix, many, one in NAMED.findall(section):
        names |= {f"{prefix}{n.strip()}" for n in (many.split(",") if many else [one])}
    return names


def _without_device(line: str) -> str:
    line = DEVICE_ARG.sub("", re.sub(r"\.to\([\w.]+\.device\)", ".to(None)", line))
    return re.sub(r",\s*\)", ")", re.sub(r"\(\s*,", "(", line)).replace(" ", "")


def why_left(name: str, diff: list[str], explained: set[str]) -> str:
    removed = [line[1:] for line in diff if line.startswith("-")]
    added = [line[1:] for line in diff if line.startswith("+")]
    if removed and [_without_device(x) for x in removed] == [_without_device(x) for x in added]:
        return "device argument: the same computation on the CPU"
    if name in explained:
        return "explained in PROTOCOL.md"
    return "unexplained"


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval for k successes in n trials."""
    if n == 0:
        return (0.0, 1.0)
    p, q = k / n, z * z / n
    centre, half = p + q / 2, z * math.sqrt(p * (1 - p) / n + q / (4 * n))
    return (max(0.0, (centre - half) / (1 + q)), min(1.0, (centre + half) / (1 + q)))


def records(mutants: Path) -> dict[str, dict[str, str]]:
    """{source path: {mutant name: status}} from mutmut's ``<file>.py.meta`` records."""
    out = {}
    for meta in sorted(mutants.rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if codes:
            source = meta.relative_to(mutants).as_posix().removesuffix(".meta")
            out[source] = {name: status_by_exit_code[code] for name, code in sorted(codes.items())}
    return out


def changed_lines(name: str, source: str) -> list[str]:
    try:
        diff = get_diff_for_mutant(name, path=source)
    except Exception as err:  # a record without its mutated source (e.g. a partial run)
        return [f"(no diff: {err})"]
    return [line for line in diff.splitlines()
            if line[:1] in "+-" and not line.startswith(("+++", "---"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", type=Path, default=ROOT / "mutants")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    parser.add_argument("--protocol", type=Path, default=ROOT / "PROTOCOL.md")
    parser.add_argument("--sample", type=Path, help="score only this draw (mutation_sample.json)")
    args = parser.parse_args(argv)
    explained = explained_in_protocol(args.protocol)
    by_file = records(args.mutants)
    draw = json.loads(args.sample.read_text()) if args.sample else None
    if draw:
        chosen = {name for names in draw["sample"].values() for name in names}
        by_file = {source: kept for source, statuses in by_file.items()
                   if (kept := {k: v for k, v in statuses.items()
                                if k in chosen and v != "not checked"})}
    if not by_file:
        raise SystemExit(f"no mutmut records under {args.mutants}: run `make mutate` first")
    modules = {source: Counter(statuses.values()) for source, statuses in by_file.items()}
    total = sum(modules.values(), Counter())

    def score(counts: Counter) -> float:
        n = sum(counts.values())
        return (counts["killed"] + counts["timeout"]) / n if n else float("nan")

    body, reasons = [], Counter()
    for source, statuses in by_file.items():
        left = [(name, status) for name, status in statuses.items() if status in NOT_KILLED]
        if not left:
            continue
        body += [f"## {source} ({len(left)} of {len(statuses)})", ""]
        for name, status in left:
            diff = changed_lines(name, source)
            reason = why_left(name, diff, explained)
            reasons[reason] += 1
            body.append(f"- `{name}` ({status}; {reason})")
            body += [f"      {line}" for line in diff]
        body.append("")

    summary = {
        "score": score(total),
        "counts": dict(total),
        "not_killed": dict(reasons),
        "modules": {source: {"score": score(c), **c} for source, c in modules.items()},
    }
    head_sample = []
    if draw:
        packages: dict[str, Counter] = {}
        for source, counts in modules.items():
            packages[package(source)] = packages.get(package(source), Counter()) + counts
        packages["all"] = total
        population = {**draw["population"], "all": sum(draw["population"].values())}
        summary["sample"] = {"seed": draw["seed"], "size": draw["size"], "packages": {}}
        for name, counts in packages.items():
            n, k = sum(counts.values()), counts["killed"] + counts["timeout"]
            low, high = wilson(k, n)
            summary["sample"]["packages"][name] = {
                "score": score(counts), "low": low, "high": high, "killed": k, "scored": n,
                "mutants": population[name]}
            head_sample.append(f"| {name} | {k} of {n} | {score(counts):.1%} | "
                               f"{low:.1%} to {high:.1%} | {population[name]} |")
        head_sample = ["", "| package | killed | score | 95 % interval | mutants |",
                       "| --- | --- | --- | --- | --- |", *head_sample, ""]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mutation_score.json").write_text(json.dumps(summary, indent=2) + "\n")
    head = ["# Mutants no test killed", "",
            f"Score {score(total):.1%}: {total['killed'] + total['timeout']} of {sum(total.values())} "
            f"killed; {', '.join(f'{n} {s}' for s, n in total.most_common())}.",
            f"Not killed: {', '.join(f'{n} {r}' for r, n in reasons.most_common()) or 'none'}.", ""]
    if draw:
        head[2:2] = [f"A random sample (seed {draw['seed']}) of {sum(total.values())} scored of the "
                     f"{draw['size']} drawn from {sum(draw['population'].values())} mutants.", ""]
        head[-1:-1] = head_sample
    (args.out / "mutation_survivors.md").write_text("\n".join(head + body))
    print(f"mutation score {score(total):.1%} ({dict(total)}); not killed: {dict(reasons)}; "
          f"{args.out / 'mutation_score.json'}, {args.out / 'mutation_survivors.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
