"""Which of the paper's claims survive the fair comparison (PROTOCOL.md, Fair comparison, "Verdicts").

The fair build judges the same claims with the same rulebook (:mod:`vgcore.report.claims`), with two
differences its protocol brings:

- the claims that name Sohn's N-pair name the grouped reading (``npair_groups``) instead
  (:func:`fair_claims`): on P x K batches it is the N-pair that gives every sample a gradient;
- a claim on a dataset where a loss it names has a run that reached its budget without converging
  is not judged there (:func:`mark_unconverged`: "not judged: unconverged").

:func:`survival` then sets each claim's fair verdict beside its verdict under the paper's protocol:
it **survives** when both are positive (supported, or significant with size uncertain), it **does
not survive** when the fair verdict is negligible or contradicted (either size), and it is
**undecided** otherwise (inconclusive, not judged or not checked on a side). Descriptive, as every
claims table: no correction across claims, datasets or protocols.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pandas as pd

from vgcore.report.claims import (
    CLAIMS,
    CONTRADICTED,
    CONTRADICTED_UNCERTAIN,
    NEGLIGIBLE,
    SIGNIFICANT,
    SUPPORTED,
    Claim,
    check_claims,
    compare_verdicts,
    format_claims,
    learned_gate,
    learned_losses,
    member_verdicts,
    variant_table,
)

NOT_JUDGED_UNCONVERGED = "not judged: unconverged"
GROUPED_NPAIR = "npair_groups"
FAIR_VARIANTS = {"npair": GROUPED_NPAIR}
"""The fair build's variant rows: Sohn's one-group N-pair in the place of the grouped one the claims name."""
SURVIVAL_COLUMNS = ("claim", "dataset", "protocol", "paper_verdict", "fair_verdict", "changed", "survival")

SURVIVES = "survives"
DOES_NOT_SURVIVE = "does not survive"
UNDECIDED = "undecided"
POSITIVE = (SUPPORTED, SIGNIFICANT)
AGAINST = (NEGLIGIBLE, CONTRADICTED, CONTRADICTED_UNCERTAIN)


def fair_claims(claims: Sequence[Claim] = CLAIMS) -> list[Claim]:
    """The claims as the fair build judges them: ``npair`` replaced by ``npair_groups`` in each
    claim's group and rest (every other field unchanged)."""
    def swap(names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(GROUPED_NPAIR if n == "npair" else n for n in names)

    return [dataclasses.replace(c, group=swap(c.group), rest=swap(c.rest)) for c in claims]


def unconverged_losses(summary: pd.DataFrame) -> dict[str, set[str]]:
    """Dataset -> the losses with at least one run stopped by its budget (``converged`` False)."""
    if "converged" not in summary.columns:
        return {}
    flagged = summary[summary["converged"].astype("boolean").eq(False).fillna(False)]
    return {d: set(g["loss"]) for d, g in flagged.groupby("dataset")}


def mark_unconverged(verdicts: pd.DataFrame, summary: pd.DataFrame, claims: Sequence[Claim]) -> pd.DataFrame:
    """``verdicts`` (:func:`vgcore.report.claims.check_claims` of ``claims``) with the verdict of each
    row whose claim names a loss with an unconverged run on its dataset set to
    :data:`NOT_JUDGED_UNCONVERGED`, and the note naming those losses."""
    out = verdicts.copy()
    unconverged = unconverged_losses(summary)
    named = {c.key: set(c.group) | set(c.rest) for c in claims}
    for i, row in out.iterrows():
        bad = sorted(named.get(row["claim"], set()) & unconverged.get(row["dataset"], set()))
        if bad:
            out.at[i, "verdict"] = NOT_JUDGED_UNCONVERGED
            out.at[i, "note"] = f"unconverged runs of {', '.join(bad)} (budget reached before patience)"
    return out


def survives(paper: str, fair: str) -> str:
    """One claim's fate from its verdict under the paper's protocol and under the fair one."""
    if paper in POSITIVE and fair in POSITIVE:
        return SURVIVES
    if fair in AGAINST:
        return DOES_NOT_SURVIVE
    return UNDECIDED


def survival(compared: pd.DataFrame, paper: str, fair: str = "fair") -> pd.DataFrame:
    """``compared`` (:func:`vgcore.report.claims.compare_verdicts` with the columns ``paper`` and
    ``fair``) with a ``survival`` column (:func:`survives`)."""
    out = compared.copy()
    out["survival"] = [survives(p, f) for p, f in zip(out[paper], out[fair], strict=True)]
    return out


def fair_claims_tables(summary: pd.DataFrame, epochs: pd.DataFrame,
                       paper: dict[str, pd.DataFrame] | None = None) -> dict[str, pd.DataFrame]:
    """What the claims notebook reports for the fair build, from its collected runs.

    As :func:`vgcore.report.claims.claims_tables` (``gate``, ``claims``, ``members``, ``variants``)
    with :func:`fair_claims`, :func:`mark_unconverged` and Sohn's N-pair as the variant row, plus
    ``survival``: for each paper-protocol profile of ``paper`` (name -> its formatted claims table,
    ``tables/06_claims.csv``), each claim's verdict there beside the fair one and its
    :func:`survival`, one row of :data:`SURVIVAL_COLUMNS`."""
    gate = learned_gate(epochs)
    learned = learned_losses(gate)
    claims = fair_claims()
    checked = mark_unconverged(check_claims(summary, claims, learned=learned), summary, claims)
    rows = [survival(compare_verdicts(table, format_claims(checked), (name, "fair")), name)
            .rename(columns={name: "paper_verdict", "fair": "fair_verdict"}).assign(protocol=name)
            for name, table in (paper or {}).items() if not table.empty]
    table = (pd.concat(rows, ignore_index=True)[list(SURVIVAL_COLUMNS)] if rows
             else pd.DataFrame(columns=list(SURVIVAL_COLUMNS)))
    return {"gate": gate, "claims": checked, "members": member_verdicts(summary, claims, learned=learned),
            "variants": variant_table(summary, checked, learned=learned, claims=claims, variants=FAIR_VARIANTS),
            "survival": table}
