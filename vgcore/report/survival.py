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
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from vgcore import config as config_module
from vgcore import tuning
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
from vgcore.results import STOP_COLUMNS

NOT_JUDGED_UNCONVERGED = "not judged: unconverged"
GROUPED_NPAIR = "npair_groups"
FAIR_VARIANTS = {"npair": GROUPED_NPAIR}
"""The fair build's variant rows: Sohn's one-group N-pair in the place of the grouped one the claims name."""
SURVIVAL_COLUMNS = ("claim", "dataset", "protocol", "paper_verdict", "fair_verdict", "changed", "survival")

PAPER_PROTOCOLS = ("demo", "paper_schedule")
"""The paper-protocol builds each fair verdict is set beside (their committed ``tables/06_claims.csv``)."""
TUNED_COLUMNS = ("dataset", "loss", "lr", "constant", "value", "trial", "validation map@r", "unconverged trials",
                 "at range edge")

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
    :func:`survival`, one row of :data:`SURVIVAL_COLUMNS`, on the datasets both builds ran."""
    gate = learned_gate(epochs)
    learned = learned_losses(gate)
    claims = fair_claims()
    checked = mark_unconverged(check_claims(summary, claims, learned=learned), summary, claims)
    ran = set(summary["dataset"])
    rows = [survival(compare_verdicts(table, format_claims(checked), (name, "fair")), name)
            .rename(columns={name: "paper_verdict", "fair": "fair_verdict"}).assign(protocol=name)
            .loc[lambda frame, both=ran & set(table["dataset"]): frame["dataset"].isin(both)]
            for name, table in (paper or {}).items() if not table.empty]
    table = (pd.concat(rows, ignore_index=True)[list(SURVIVAL_COLUMNS)] if rows
             else pd.DataFrame(columns=list(SURVIVAL_COLUMNS)))
    return {"gate": gate, "claims": checked, "members": member_verdicts(summary, claims, learned=learned),
            "variants": variant_table(summary, checked, learned=learned, claims=claims, variants=FAIR_VARIANTS),
            "survival": table}


def paper_tables(figures_root: str | os.PathLike = "figures") -> dict[str, pd.DataFrame]:
    """Each of :data:`PAPER_PROTOCOLS`' committed claims table (``<figures_root>/<profile>/tables/06_claims.csv``),
    by profile name; a missing one is named with the command that builds it."""
    out = {}
    for name in PAPER_PROTOCOLS:
        path = Path(figures_root) / name / "tables" / "06_claims.csv"
        if not path.is_file():
            build = "make demo" if name == "demo" else f"make figures PROFILE={name}"
            raise FileNotFoundError(f"{path} is missing: the fair verdicts are set beside the {name} build's; "
                                    f"restore it (git checkout {path}) or rebuild it ({build})")
        out[name] = pd.read_csv(path)
    return out


def tuned_table(profile, datasets: Sequence[str] | None = None, losses: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per dataset x loss (:data:`TUNED_COLUMNS`): the setting equal tuning chose
    (``vgcore/tuned/<profile>.json``, :func:`vgcore.train.tune.write_tuned`), its trial, its
    validation MAP@R, how many of its tuning runs reached the budget, and which of its values lie at
    an edge of the searched range (:func:`vgcore.tuning.at_edge`: the best setting may lie outside).
    A cell not tuned yet is refused, naming it."""
    stored = config_module.read_tuned(profile.name)
    rows = []
    for dataset in profile.datasets if datasets is None else datasets:
        for loss in profile.losses if losses is None else losses:
            entry = stored.get(dataset, {}).get(loss)
            if not entry:
                raise ValueError(f"{dataset}/{loss} is not tuned in {config_module.tuned_path(profile.name)}: run "
                                 f"`make fair` (python -m vgcore tune --profile {profile.name})")
            param = tuning.SEARCH_SPACE[loss].param
            rows.append({"dataset": dataset, "loss": loss, "lr": entry["lr"], "constant": param,
                         "value": entry["loss_params"][param], "trial": entry["trial"],
                         "validation map@r": entry["val_map@r"], "unconverged trials": entry["unconverged"],
                         "at range edge": ", ".join(tuning.at_edge(loss, entry))})
    return pd.DataFrame(rows, columns=list(TUNED_COLUMNS))


def convergence_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Every run's stop (:data:`vgcore.results.STOP_COLUMNS`), one row per dataset x loss x seed in
    the summary's dataset and loss order, seeds ascending."""
    missing = [c for c in STOP_COLUMNS if c not in summary.columns]
    if missing:
        raise ValueError(f"the runs carry no {', '.join(missing)}: they were not trained to convergence "
                         "(patience 0); the convergence table is the fair profile's")
    order = {k: {v: i for i, v in enumerate(dict.fromkeys(summary[k]))} for k in ("dataset", "loss")}
    table = summary[["dataset", "loss", "seed", *STOP_COLUMNS]]
    keys = table.assign(_d=table["dataset"].map(order["dataset"]), _l=table["loss"].map(order["loss"]))
    return table.loc[keys.sort_values(["_d", "_l", "seed"]).index].reset_index(drop=True)


def survival_summary(table: pd.DataFrame) -> str:
    """The survival table (:func:`fair_claims_tables`' ``survival``) in Markdown, one bullet per fate:
    how many of its checks (a claim on a dataset against one paper-protocol build) have it, and each
    claim on each dataset with the builds it is checked against. What the README says, generated."""
    lines = []
    for fate in (SURVIVES, DOES_NOT_SURVIVE, UNDECIDED):
        rows = table[table["survival"] == fate]
        items = [f"`{claim}` on {dataset} ({', '.join(group['protocol'])})"
                 for (claim, dataset), group in rows.groupby(["claim", "dataset"], sort=False)]
        lines.append(f"- **{fate}** ({len(rows)} of {len(table)} checks): {'; '.join(items) or 'none'}")
    return "\n".join(lines)
