"""Structure or constants? How each fair verdict fares when one loss's key constant moves
(PROTOCOL.md, Fair comparison, "Sensitivity").

For each loss L and each value of its constant (:func:`vgcore.tuning.sensitivity_values`), the fair
runs of the sensitivity seeds are taken with L's runs replaced by those trained at that value, and
every claim that names L is judged again by the same rules (:func:`vgcore.report.survival.fair_claims`,
the learned-heads gate, the unconverged flag). A verdict *holds* at a value when it falls in the same
class as the fair verdict on the same seeds (:func:`verdict_class`: for the claim, negligible, against
it, or open). A claim whose verdicts hold across every value of its losses' constants comes from the
losses' form; one that changes inside the range comes from the constants.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from vgcore import results, tuning
from vgcore.report.claims import (
    CONTRADICTED,
    CONTRADICTED_UNCERTAIN,
    NEGLIGIBLE,
    NOT_CHECKED,
    SIGNIFICANT,
    SUPPORTED,
    Claim,
    check_claims,
    learned_gate,
    learned_losses,
)
from vgcore.report.survival import fair_claims, mark_unconverged

SENSITIVITY_COLUMNS = ("claim", "dataset", "loss", "param", "point", "value", "fair_verdict", "verdict", "holds")


def verdict_class(verdict: str) -> str:
    """``for`` (supported, significant), ``negligible``, ``against`` (contradicted, either size) or
    ``open`` (inconclusive, not judged, not checked): the classes a verdict must stay in to hold."""
    if verdict in (SUPPORTED, SIGNIFICANT):
        return "for"
    if verdict == NEGLIGIBLE:
        return "negligible"
    if verdict in (CONTRADICTED, CONTRADICTED_UNCERTAIN):
        return "against"
    return "open"


def _verdicts(summary: pd.DataFrame, epochs: pd.DataFrame, claims: Sequence[Claim]) -> pd.DataFrame:
    learned = learned_losses(learned_gate(epochs))
    return mark_unconverged(check_claims(summary, claims, learned=learned), summary, claims)


def sensitivity_verdicts(summary: pd.DataFrame, epochs: pd.DataFrame,
                         moved: Mapping[tuple[str, int], tuple[pd.DataFrame, pd.DataFrame]],
                         claims: Sequence[Claim] | None = None,
                         seeds: Sequence[int] = tuning.SENSITIVITY_SEEDS) -> pd.DataFrame:
    """One row of :data:`SENSITIVITY_COLUMNS` per claim, dataset, loss it names and constant value.

    ``summary``/``epochs``: the fair build's own runs (collected tables); ``moved``: ``(loss, point)``
    -> the ``(summary, epochs)`` of that loss's runs with its constant at the ``point``-th value.
    Only ``seeds`` are used on both sides. ``fair_verdict`` is the verdict of the own runs on those
    seeds; a claim not judged at a value reads "not checked" there."""
    claims = list(claims if claims is not None else fair_claims())
    own_s, own_e = summary[summary["seed"].isin(seeds)], epochs[epochs["seed"].isin(seeds)]
    fair = _verdicts(own_s, own_e, claims).set_index(["claim", "dataset"])["verdict"]
    rows = []
    for (loss, point), (moved_s, moved_e) in sorted(moved.items()):
        named = [c for c in claims if loss in c.group or loss in c.rest]
        if not named:
            continue
        swap_s = pd.concat([own_s[own_s["loss"] != loss], moved_s[moved_s["seed"].isin(seeds)]], ignore_index=True)
        swap_e = pd.concat([own_e[own_e["loss"] != loss], moved_e[moved_e["seed"].isin(seeds)]], ignore_index=True)
        judged = _verdicts(swap_s, swap_e, named).set_index(["claim", "dataset"])["verdict"]
        axis = tuning.SEARCH_SPACE[loss]
        for claim in named:
            for (key, dataset), base in fair.items():
                if key != claim.key:
                    continue
                verdict = judged.get((key, dataset), NOT_CHECKED)
                rows.append({"claim": key, "dataset": dataset, "loss": loss, "param": axis.param, "point": point,
                             "value": tuning.sensitivity_values(loss)[point], "fair_verdict": base,
                             "verdict": verdict, "holds": verdict_class(verdict) == verdict_class(base)})
    return pd.DataFrame(rows, columns=list(SENSITIVITY_COLUMNS))


def stability(table: pd.DataFrame) -> pd.DataFrame:
    """Per claim, dataset and loss constant: the share of its values under which the fair verdict
    holds (``share_holds``, 0-1) and the number of values (``values``)."""
    grouped = table.groupby(["claim", "dataset", "loss", "param"], sort=False)["holds"]
    return grouped.agg(share_holds="mean", values="size").reset_index()


def moved_runs(results_root: str | os.PathLike, profile: str, datasets: Sequence[str], losses: Sequence[str],
               seeds: Sequence[int]) -> dict[tuple[str, int], tuple[pd.DataFrame, pd.DataFrame]]:
    """``(loss, point)`` -> the ``(summary, epochs)`` of `loss`'s sensitivity runs with its constant at
    the ``point``-th value (the variant :func:`vgcore.tuning.sensitivity_tag` of `profile`), on
    `datasets` and `seeds`; a value whose runs are missing is refused, naming the command that trains it."""
    out = {}
    for loss in losses:
        for point in range(len(tuning.SENSITIVITY_POINTS)):
            tag = tuning.sensitivity_tag(loss, point)
            tables = [results.collect(results_root, table, profile, variant=tag) for table in ("summary", "epochs")]
            keep = [t[t["dataset"].isin(datasets) & t["seed"].isin(seeds)] for t in tables]
            have = set(zip(keep[0]["dataset"], keep[0]["seed"], strict=True))
            missing = sorted({(d, s) for d in datasets for s in seeds} - have)
            if missing:
                raise FileNotFoundError(f"{profile} variant {tag!r} has no run of {loss} on "
                                        f"{', '.join(f'{d} seed {s}' for d, s in missing)}: train it with "
                                        f"`python -m vgcore sensitivity --profile {profile}`")
            out[(loss, point)] = (keep[0], keep[1])
    return out


def write_build(results_root: str | os.PathLike, figures_dir: str | os.PathLike, profile: str,
                datasets: Sequence[str], losses: Sequence[str],
                seeds: Sequence[int] = tuning.SENSITIVITY_SEEDS) -> list[Path]:
    """The sensitivity build under `figures_dir` from trained runs: ``tables/sensitivity`` (every claim,
    dataset, loss constant and value: :func:`sensitivity_verdicts`), ``tables/stability``
    (:func:`stability`) and the figure ``stability`` (:func:`vgcore.report.plots.stability_grid`)."""
    from vgcore.report import plots
    from vgcore.report.analysis import write_table

    summary = results.collect(results_root, "summary", profile)
    epochs = results.collect(results_root, "epochs", profile)
    summary, epochs = (t[t["dataset"].isin(datasets)] for t in (summary, epochs))
    table = sensitivity_verdicts(summary, epochs, moved_runs(results_root, profile, datasets, losses, seeds),
                                 seeds=seeds)
    share = stability(table)
    d = Path(figures_dir)
    command = f"python -m vgcore sensitivity --profile {profile}"
    source = (f"{profile} runs of seeds {', '.join(map(str, seeds))}, one loss's constant moved at a time "
              f"over {len(tuning.SENSITIVITY_POINTS)} values of its tuning range")
    paths = write_table(table, d / "tables" / "sensitivity", f"each fair verdict judged again with one loss's "
                        f"constant moved ({source}); holds: same class as the fair verdict", command)
    paths += write_table(share, d / "tables" / "stability", "the share of each loss constant's values under "
                         f"which each fair verdict holds ({source})", command)
    plots.use_style()
    paths += plots.save_figure(plots.stability_grid(share, width="page"), d / "stability", command, profile,
                               results.runs_digest(summary["config_hash"]))
    return paths
