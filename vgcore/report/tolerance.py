"""What a rebuild on another machine may change in the committed tables, and the check that says so.

The same config and seed give the same bytes on one machine; another CPU may sum in another order
(vgcore/cpu.py pins x86-64 machines with AVX2 to one path; ARM and older CPUs keep theirs), and then
the last digits of a table move. Measured: an AVX-512 Xeon's rebuild of the demo moved no value by
more than 0.4 % of it, and a five-seed standard deviation by 0.004 (NMI of ``triplet_semihard``:
0.681 ± 0.006 against the committed 0.684 ± 0.002). The tolerance is 2.5 times that, and at least
five units of the last printed digit (a 3-decimal table can flip a last digit on any change):

    |a - b| <= max(RTOL * max(|a|, |b|), 5 * 10^-decimals)

A text cell (a verdict, a loss's name) must be equal, except a verdict whose committed interval has
an end within that tolerance of 0 or of +-delta (the smallest effect printed beside it, a claims
verdict's other boundaries): another machine may put it on either side, so it is reported as
fragile, not compared.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pandas as pd

RTOL = 0.01
"""Relative tolerance of a table value across machines (2.5 x the 0.4 % measured)."""
LAST_DIGITS = 5
"""Units of the last printed digit a value may move by, whatever its size."""
_NUMBER = re.compile(r"-?(?:\d+\.\d+|\d+|nan|inf)", re.IGNORECASE)
_INTERVAL = re.compile(r"\[\s*(\S+),\s*(\S+)\s*\]")
VERDICT_COLUMNS = ("verdict", "default_verdict", "variant_verdict", "changed", "learned", "breaks claim")
INTERVAL_COLUMNS = ("difference [95% CI]", "variant_ci")
EFFECT_COLUMNS = {"difference [95% CI]": "smallest effect", "variant_ci": "variant_smallest_effect"}
"""Interval column -> the column with the smallest effect delta beside it (its first number)."""


def tolerance(text: str) -> float:
    """The tolerance of one printed number: RTOL of it, at least LAST_DIGITS units of its last digit."""
    decimals = len(text.split(".")[1]) if "." in text else 0
    value = abs(float(text))
    return max(RTOL * value if math.isfinite(value) else 0.0, LAST_DIGITS * 10.0 ** -decimals)


def numbers_agree(a: str, b: str) -> bool:
    """Whether two cells hold the same numbers (in order) within their tolerance, and the same text
    around them ("0.681 ± 0.006" and "0.684 ± 0.002" agree)."""
    xs, ys = _NUMBER.findall(str(a)), _NUMBER.findall(str(b))
    if len(xs) != len(ys) or _NUMBER.sub("#", str(a)) != _NUMBER.sub("#", str(b)):
        return False
    for x, y in zip(xs, ys, strict=True):
        fx, fy = float(x), float(y)
        if math.isnan(fx) or math.isnan(fy):
            if not (math.isnan(fx) and math.isnan(fy)):
                return False
        elif abs(fx - fy) > max(tolerance(x), tolerance(y)):
            return False
    return True


def fragile(row: pd.Series) -> bool:
    """A row whose interval (a claims or variants table's) has an end within its tolerance of 0, or of
    +-delta where the row prints its smallest effect (:data:`EFFECT_COLUMNS`)."""
    for column in INTERVAL_COLUMNS:
        match = _INTERVAL.search(str(row.get(column, "")))
        if not match:
            continue
        found = _NUMBER.search(str(row.get(EFFECT_COLUMNS[column], "")))
        delta = abs(float(found.group())) if found else math.nan
        bounds = (0.0, delta, -delta) if math.isfinite(delta) else (0.0,)
        for end in match.groups():  # a relative delta moves with its rest mean: RTOL of it
            if any(abs(float(end) - bound) <= max(tolerance(end), RTOL * abs(bound)) for bound in bounds):
                return True
    return False


def compare_table(committed: str | os.PathLike, rebuilt: str | os.PathLike) -> list[str]:
    """Where a rebuilt CSV table differs from the committed one beyond the tolerance: one line per
    cell (row, column, both values); empty when they agree. Verdicts of fragile rows are skipped."""
    a, b = (pd.read_csv(p, dtype=str, keep_default_na=False) for p in (committed, rebuilt))
    name = Path(committed).name
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return [f"{name}: other columns or rows ({list(a.columns)} x {len(a)} against {list(b.columns)} x {len(b)})"]
    problems = []
    for i in range(len(a)):
        skip = VERDICT_COLUMNS if fragile(a.iloc[i]) else ()
        for column in a.columns:
            x, y = a.iloc[i][column], b.iloc[i][column]
            if x != y and column not in skip and not numbers_agree(x, y):
                problems.append(f"{name} row {i + 1}, {column}: committed {x!r}, rebuilt {y!r}")
    return problems


def compare_tables(committed: str | os.PathLike, rebuilt: str | os.PathLike) -> list[str]:
    """:func:`compare_table` over every CSV of the committed folder (a missing rebuilt one is a problem)."""
    problems = []
    for table in sorted(Path(committed).glob("*.csv")):
        other = Path(rebuilt) / table.name
        problems += compare_table(table, other) if other.is_file() else [f"{table.name}: not rebuilt"]
    return problems
