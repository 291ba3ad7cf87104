"""The study's tables from ``StudyRun``s: Table 2, descriptive comparisons, forgetting,
per-query deltas. Comparisons go through ``stats.comparison_table`` (intervals over seeds and
test passages); ``significance_table`` is descriptive (the tests are ``clp_utils.claims``),
``forgetting_table`` is one Holm family of its own (does fine-tuning forget?).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from clp_utils.paper import published
from clp_utils.profiles import ROW_ORDER, ZERO_SHOT
from clp_utils.stats import SeedScores, comparison_table, holm, verdict
from clp_utils.study import DOMAINS, StudyRun

PAPER_COLUMN = "paper: MIRACL avg nDCG@5 (other model and data; orientation only)"


def results_frame(runs: list[StudyRun],
                  metrics: tuple[str, ...] = ("ndcg_cut_5", "ndcg_cut_10")) -> pd.DataFrame:
    """One row per (row, split, seed, domain) with the mean of each metric."""
    return pd.DataFrame([{"row": r.row, "split": r.split, "seed": r.seed, "domain": domain,
                          "run_id": r.result.run_id if r.result else ZERO_SHOT,
                          **{m: float(np.mean(list(r.per_query(domain)[m].values())))
                             for m in metrics}}
                         for r in runs for domain in DOMAINS if r.per_query(domain) is not None])


def seed_scores(runs: list[StudyRun], row: str, split: str, metric: str,
                domain: str = "in-domain") -> SeedScores:
    """``{seed: {qid: value}}`` of one row (zero-shot: one key)."""
    found = {r.seed: r.per_query(domain)[metric] for r in runs
             if r.row == row and r.split == split and r.per_query(domain) is not None}
    if not found:
        raise KeyError(f"no run of {row!r} on {split} ({domain})")
    return found


def clusters_of(runs: list[StudyRun], split: str, domain: str = "in-domain") -> dict[str, str]:
    """Each query's passage cluster on ``split``/``domain``, from the runs' evaluations."""
    return {q: c for r in runs if r.split == split and r.per_query(domain) is not None
            for q, c in r.clusters_of(domain).items()}


def table2(runs: list[StudyRun], metric: str = "ndcg_cut_10", domain: str = "in-domain",
           paper_column: bool = True, language: str = "avg") -> pd.DataFrame:
    """Mean and standard deviation over seeds per row and split; ``paper_column``: the paper's
    published MIRACL nDCG@5 (``language``: "avg" or "hi") beside the in-domain table,
    orientation only (another model, data and cut-off), never a comparison."""
    df = results_frame(runs)
    df = df[df["domain"] == domain]
    order = [r for r in ROW_ORDER if r in set(df["row"])]
    order += [r for r in dict.fromkeys(df["row"]) if r not in order]
    out = []
    for split in dict.fromkeys(df["split"]):
        for row in order:
            vals = df[(df["row"] == row) & (df["split"] == split)]
            if not len(vals):
                continue
            entry = {"split": split, "row": row, "seeds": len(vals),
                     f"{metric} mean": vals[metric].mean(),
                     f"{metric} sd": vals[metric].std(ddof=1),
                     "ndcg_cut_5 mean": vals["ndcg_cut_5"].mean()}
            if paper_column and domain == "in-domain":  # the paper's percent, as a fraction
                entry[PAPER_COLUMN.replace("avg", language)] = published(row, language)
            out.append(entry)
    return pd.DataFrame(out).set_index(["split", "row"])


def compare_rows(runs: list[StudyRun], pairs: list[tuple[str, str]], split: str,
                 metric: str = "ndcg_cut_10", domain: str = "in-domain") -> pd.DataFrame:
    """``stats.comparison_table`` of study rows on ``split`` (two-level bootstrap per pair),
    no Holm: the caller's table is the family."""
    per_seed = {r: seed_scores(runs, r, split, metric, domain) for pair in pairs for r in pair}
    return comparison_table(per_seed, pairs, clusters_of(runs, split, domain),
                            holm_family=False, seedless={ZERO_SHOT})


def significance_table(runs: list[StudyRun], metric: str = "ndcg_cut_10",
                       domain: str = "in-domain",
                       refs: tuple[str, ...] = (ZERO_SHOT, "ANCE negatives")) -> pd.DataFrame:
    """Every row against each reference (zero-shot, ANCE + InfoNCE), per split: the difference
    and its 95% interval over seeds and passages; descriptive (no p-value, no verdict)."""
    tables = []
    for split in dict.fromkeys(r.split for r in runs):
        rows = list(dict.fromkeys(x.row for x in runs if x.split == split and x.per_query(domain)))
        pairs = [(row, ref) for i, ref in enumerate(refs) if ref in rows for row in rows
                 if row != ref and row != ZERO_SHOT and row not in refs[:i]]
        if pairs:
            tables.append(compare_rows(runs, pairs, split, metric, domain).assign(split=split))
    if not tables:
        return pd.DataFrame()
    df = pd.concat(tables, ignore_index=True).drop(columns=["p"])
    df["comparison"] = df["system"] + " vs " + df["reference"]
    return df.rename(columns={"system": "row", "reference": "ref"})


def forgetting_table(runs: list[StudyRun], metric: str = "ndcg_cut_10") -> pd.DataFrame:
    """Out-of-domain means over seeds, and each fine-tuned row against zero-shot: delta, 95%
    interval, Holm p over this table's rows and verdict (the paper measured no forgetting)."""
    t = table2(runs, metric, domain="out-of-domain", paper_column=False)
    parts = []
    for split in dict.fromkeys(r.split for r in runs):
        rows = [x for x in dict.fromkeys(r.row for r in runs if r.split == split
                                         and r.per_query("out-of-domain") is not None)
                if x != ZERO_SHOT]
        if rows and any(r.row == ZERO_SHOT and r.split == split for r in runs):
            parts.append(compare_rows(runs, [(row, ZERO_SHOT) for row in rows], split, metric,
                                      "out-of-domain").assign(split=split))
    if not parts:
        return t
    family = comparison_holm(pd.concat(parts, ignore_index=True))
    family = family.rename(columns={"system": "row"}).set_index(["split", "row"])
    return t.join(family[["delta", "95% CI low", "95% CI high", "p Holm", "verdict",
                          "seed deltas"]], how="left")


def comparison_holm(table: pd.DataFrame, family_size: int | None = None) -> pd.DataFrame:
    """Holm over the rows of a (concatenated) comparison table, and their verdicts."""
    out = table.copy()
    out["p Holm"] = holm(out["p"].tolist(), family_size)
    out["verdict"] = [verdict(r["95% CI low"], r["95% CI high"], r["p Holm"],
                              seed_term=r.get("seed term", "measured"))
                      for _, r in out.iterrows()]
    return out


def per_query_deltas(runs: list[StudyRun], row: str, ref: str, split: str,
                     metric: str = "ndcg_cut_10", domain: str = "in-domain") -> pd.Series:
    """Per-query ``row - ref`` (seed-averaged), sorted, for delta plots."""
    a, b = ([*seed_scores(runs, x, split, metric, domain).values()] for x in (ref, row))
    return pd.Series({q: float(np.mean([t[q] for t in b])) - float(np.mean([t[q] for t in a]))
                      for q in a[0]}).sort_values()


def seed_spread(runs: list[StudyRun], metric: str = "ndcg_cut_10",
                domain: str = "in-domain") -> pd.Series:
    """Each row's seed-to-seed standard deviation of its mean (NaN with one seed)."""
    frame = results_frame(runs)
    return frame[frame["domain"] == domain].groupby("row")[metric].std(ddof=1)


def forgetting_sentence(forget: pd.DataFrame) -> str | None:
    """What ``forgetting_table`` says in one sentence (None without comparisons): the range of
    the out-of-domain differences from zero-shot and how many are resolved on each side."""
    rows = forget.dropna(subset=["delta"]) if "delta" in forget else forget.iloc[0:0]
    if not len(rows):
        return None
    better = int((rows["verdict"] == "held").sum())
    worse = int((rows["verdict"] == "reversed").sum())
    text = (f"Out of domain, the {len(rows)} fine-tuned rows score {rows['delta'].min():+.4f} "
            f"to {rows['delta'].max():+.4f} against zero-shot; {better} of them resolved above "
            f"it, {worse} below it (Holm over this table). ")
    if worse == 0 and better > 0:
        text += "No forgetting at this budget: where a difference is resolved, it is a gain."
    elif worse == 0:
        text += "No forgetting is resolved at this budget, and no gain either."
    else:
        text += f"{worse} row(s) forget: their out-of-domain score falls after fine-tuning."
    return text
