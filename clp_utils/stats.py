"""Significance, as the study uses it: paired per-query tests, Holm, seeds, verdicts.

- ``paired_test``: two-sided sign-flip permutation test (seeded) and paired t-test over the
  per-query deltas of two systems scored on the same queries.
- ``holm``: Holm-Bonferroni adjustment of a family of p-values.
- ``seed_test``: a t-test over per-seed deltas (does the effect beat the seed spread?).
- ``verdict``: "held" / "reversed" only when the per-query and the per-seed views agree.
- ``comparison_table``: the one table builder every chapter uses: each (system, reference)
  pair tested per query (Holm over the table) and, where seeds exist, per seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats


@dataclass
class PairedTest:
    """A paired comparison of system B against system A on the same queries."""

    metric: str
    mean_a: float
    mean_b: float
    mean_delta: float
    p_permutation: float
    p_ttest: float
    deltas: dict[str, float]  # qid -> B - A

    @property
    def n(self) -> int:
        return len(self.deltas)


def paired_test(
    a: Mapping[str, float],
    b: Mapping[str, float],
    metric: str = "ndcg_cut_10",
    n_permutations: int = 10_000,
    seed: int = 0,
) -> PairedTest:
    """Two-sided sign-flip permutation test and paired t-test of B - A over shared queries.

    The permutation p-value is ``(1 + #{|mean(s * d)| >= |mean(d)|}) / (1 + n_permutations)``
    with random signs ``s``, so it is never 0.
    """
    qids = sorted(set(a) & set(b))
    if len(qids) != len(a) or len(qids) != len(b):
        raise ValueError(f"the two systems were scored on different queries ({len(a)} vs {len(b)})")
    d = np.array([b[q] - a[q] for q in qids])
    observed = abs(d.mean())
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(n_permutations, len(d)))
    null = np.abs((signs * d).mean(axis=1))
    p_perm = (1 + int(np.sum(null >= observed - 1e-15))) / (1 + n_permutations)
    p_t = (
        float(stats.ttest_rel([b[q] for q in qids], [a[q] for q in qids]).pvalue)
        if d.any()
        else 1.0
    )
    return PairedTest(
        metric,
        float(np.mean([a[q] for q in qids])),
        float(np.mean([b[q] for q in qids])),
        float(d.mean()),
        p_perm,
        1.0 if math.isnan(p_t) else p_t,
        dict(zip(qids, d.tolist(), strict=True)),
    )


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank_, i in enumerate(order):
        running = max(running, min(1.0, (m - rank_) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def seed_test(deltas: Iterable[float]) -> float:
    """Two-sided one-sample t-test of per-seed deltas against 0 (``nan`` with one seed).

    With 2-3 seeds this test has little power: it passes only when the effect is large
    against the seed-to-seed spread, which is exactly what it is here to check.
    """
    d = np.asarray(list(deltas), dtype=float)
    if len(d) < 2:
        return float("nan")
    if np.allclose(d, d[0]):
        return 0.0 if d[0] != 0 else 1.0
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def pair_seeds(ref: Mapping[int, float], row: Mapping[int, float]) -> dict[int, float]:
    """Each seed's ``row - ref`` mean difference; seeds pair by number, and a reference (or
    row) with a single run (zero-shot, BM25) pairs with every seed of the other."""
    if len(ref) == 1:
        (only,) = ref.values()
        return {s: v - only for s, v in sorted(row.items())}
    if len(row) == 1:
        (only,) = row.values()
        return {s: only - v for s, v in sorted(ref.items())}
    return {s: row[s] - ref[s] for s in sorted(set(ref) & set(row))}


VERDICTS = ("held", "reversed", "not distinguishable", "not resolved at this budget")


def verdict(delta: float, p_query_holm: float, seed_deltas: Iterable[float], p_seeds: float,
            alpha: float = 0.05) -> str:
    """``held`` / ``reversed`` only when the per-query test (Holm) and the seed-level view
    agree: both significant, every seed's delta on the same side. ``not distinguishable``
    when neither is significant; ``not resolved at this budget`` when they disagree."""
    per_seed = np.asarray(list(seed_deltas), dtype=float)
    query_sig = p_query_holm < alpha
    seeds_sig = bool(len(per_seed) > 1 and p_seeds < alpha
                     and np.all(np.sign(per_seed) == np.sign(delta)))
    if query_sig and seeds_sig:
        return "held" if delta > 0 else "reversed"
    if not query_sig and not seeds_sig:
        return "not distinguishable"
    return "not resolved at this budget"


def comparison_table(
    per_query: Mapping[str, Mapping[str, float]],
    pairs: Sequence[tuple[str, str]],
    per_seed: Mapping[str, Mapping[int, float]] | None = None,
    metric: str = "ndcg_cut_10",
    n_permutations: int = 10_000,
    seed: int = 0,
) -> pd.DataFrame:
    """Each ``(system, reference)`` pair, tested per query and (given ``per_seed``) per seed.

    Args:
        per_query: system -> {qid: value} (a system with seeds: the per-query seed mean).
        pairs: the comparisons, ``(system, reference)``: delta is system - reference.
        per_seed: system -> {seed: mean value}; adds each seed's delta and the seed-level p.
        metric, n_permutations, seed: passed to ``paired_test``.

    Returns:
        One row per pair: ``system, reference, n queries, delta``, its 95% CI over queries,
        ``p (permutation)``, ``p (t-test)``, ``p Holm`` (Holm over the whole table),
        ``significant (0.05)``, and with seeds ``seed deltas`` (text), ``p (seeds)``.
    """
    rows = []
    for system, ref in pairs:
        t = paired_test(per_query[ref], per_query[system], metric, n_permutations, seed)
        d = np.array(list(t.deltas.values()))
        half = 1.96 * d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else float("nan")
        row = {"system": system, "reference": ref, "n queries": t.n, "delta": t.mean_delta,
               "95% CI low": t.mean_delta - half, "95% CI high": t.mean_delta + half,
               "p (permutation)": t.p_permutation, "p (t-test)": t.p_ttest}
        if per_seed is not None:
            deltas = pair_seeds(per_seed[ref], per_seed[system])
            row["seed deltas"] = ", ".join(f"{v:+.4f}" for v in deltas.values())
            row["p (seeds)"] = seed_test(deltas.values())
            row["_seed_values"] = list(deltas.values())
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(df):
        df["p Holm"] = holm(df["p (permutation)"].tolist())
        df["significant (0.05)"] = df["p Holm"] < 0.05
    return df
