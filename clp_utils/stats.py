"""Significance, as the study uses it: intervals that respect how queries cluster and how
seeds vary, one Holm family per question, and verdicts read from an interval.

Why not a plain per-query test: a SQuADShifts test passage carries about five questions,
and questions on one passage tend to succeed or fail together; and a fine-tuned row is a
random draw over training seeds. A test that treats every question as independent, on the
seed-averaged scores, ignores both and is too sure of itself (``tests/test_stats.py``
measures how much on simulated studies).

- ``passage_clusters``: each test query's cluster, the passage(s) it is judged relevant to.
- ``two_level_bootstrap``: the study's comparison of two systems. A hierarchical bootstrap
  (Davison & Hinkley 1997, section 3.8; Field & Welsh 2007): each replicate draws the seeds
  with replacement, then the test passages with replacement (every question of a drawn
  passage comes along), and recomputes the mean difference. Its percentile interval and its
  p-value (the replicates centred on the estimate, as a null) carry both sources of variance.
  With S seeds the seed level is widened by sqrt(S / (S - 1)), the usual small-sample
  correction of a bootstrap of S values (with two seeds, plain resampling would halve
  the seed-to-seed variance).
- ``paired_test``: the plain per-query sign-flip permutation and t-test, kept as a column
  beside the clustered interval (it is what a reader of most IR papers expects to see).
- ``holm``: Holm-Bonferroni adjustment (Holm 1979) of one family of p-values.
- ``verdict``: held / reversed (the Holm-adjusted test rejects, and the sign says which), else
  equivalent (the 95% interval lies inside +/- ``SMALLEST_EFFECT``: two one-sided tests,
  Schuirmann 1987), else inconclusive.
- ``comparison_table``: the one table builder every chapter uses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

#: The smallest difference in nDCG@10 the study treats as mattering, declared before the
#: clustered analysis was run: one nDCG point, the granularity at which IR papers report
#: and claim gains, and 2-3x the seed-to-seed sd of a row at the cpu recipe. A difference
#: whose 95% interval lies inside +/- this is "equivalent": too small to matter here.
SMALLEST_EFFECT = 0.01
#: The level of every test and the complement of every interval's coverage.
ALPHA = 0.05
#: Every interval's coverage.
CONFIDENCE = 1 - ALPHA
#: Bootstrap replicates per comparison (a p-value's resolution is 1 / (N_BOOT + 1)).
N_BOOT = 4000
VERDICTS = ("held", "reversed", "equivalent", "inconclusive")

Scores = Mapping[str, float]  # qid -> value of one system on one seed
SeedScores = Mapping[int, Scores]  # seed -> per-query values (one key for a seed-free system)


def passage_clusters(qrels: Mapping[str, Mapping[str, int]]) -> dict[str, str]:
    """Each query's cluster: its relevant passage ids, sorted and joined (in SQuAD-style data
    every question has one relevant passage, so the cluster is that passage)."""
    return {q: "|".join(sorted(d for d, rel in docs.items() if rel > 0)) or f"<none:{q}>"
            for q, docs in qrels.items()}


def pair_seeds(ref: Mapping[int, object], row: Mapping[int, object]) -> list[tuple[int, int]]:
    """Which seed of ``row`` meets which seed of ``ref``: by number when both have several
    (seed s of two rows shares its training queries and negatives); a system with a single
    run (zero-shot, BM25) meets every seed of the other. Returns ``(row seed, ref seed)``."""
    if len(ref) == 1:
        (only,) = ref
        return [(s, only) for s in sorted(row)]
    if len(row) == 1:
        (only,) = row
        return [(only, s) for s in sorted(ref)]
    common = sorted(set(ref) & set(row))
    if not common:
        raise ValueError(f"no seed in common: {sorted(row)} vs {sorted(ref)}")
    return [(s, s) for s in common]


@dataclass(frozen=True)
class Comparison:
    """System minus reference, with a two-level (seeds, then passages) bootstrap interval."""

    delta: float
    low: float
    high: float
    p: float  # two-sided bootstrap p-value of delta = 0
    n_queries: int
    n_clusters: int
    seed_deltas: tuple[float, ...]  # each paired seed's mean difference
    p_per_query: float  # the plain per-query permutation p (ignores clusters and seeds)

    @property
    def seeds(self) -> int:
        return len(self.seed_deltas)


def delta_matrix(system: SeedScores, reference: SeedScores) -> tuple[list[str], np.ndarray]:
    """(qids, S x N per-query differences) over paired seeds and shared queries."""
    pairs = pair_seeds(reference, system)
    qids = sorted(set.intersection(*(set(v) for v in (*system.values(), *reference.values()))))
    sizes = {len(v) for v in (*system.values(), *reference.values())}
    if sizes != {len(qids)}:
        raise ValueError(f"the two systems were scored on different queries ({sorted(sizes)} "
                         f"queries, {len(qids)} shared)")
    d = np.array([[system[s][q] - reference[r][q] for q in qids] for s, r in pairs])
    return qids, d


def bootstrap_replicates(d: np.ndarray, cluster_ids: np.ndarray, n_boot: int = N_BOOT,
                         seed: int = 0) -> np.ndarray:
    """``n_boot`` replicates of the mean of ``d`` (S seeds x N queries): seeds drawn with
    replacement (their deviations from the seed mean widened by sqrt(S / (S - 1))), then
    clusters drawn with replacement, each bringing all its queries.

    ``cluster_ids``: an integer cluster per query (0..C-1).
    """
    rng = np.random.default_rng(seed)
    n_seeds = d.shape[0]
    n_clusters = int(cluster_ids.max()) + 1
    sums = np.zeros((n_seeds, n_clusters))
    for s in range(n_seeds):
        sums[s] = np.bincount(cluster_ids, weights=d[s], minlength=n_clusters)
    sizes = np.bincount(cluster_ids, minlength=n_clusters).astype(float)
    if n_seeds > 1:
        centre = sums.mean(0)
        sums = centre + math.sqrt(n_seeds / (n_seeds - 1)) * (sums - centre)
        seed_w = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=n_boot) / n_seeds
        per_cluster = seed_w @ sums  # (B, C): the drawn seeds' mean sum per cluster
    else:
        per_cluster = np.broadcast_to(sums[0], (n_boot, n_clusters))
    cluster_w = rng.multinomial(n_clusters, np.full(n_clusters, 1 / n_clusters), size=n_boot)
    return (cluster_w * per_cluster).sum(1) / (cluster_w @ sizes)


def two_level_bootstrap(system: SeedScores, reference: SeedScores, clusters: Mapping[str, str],
                        n_boot: int = N_BOOT, seed: int = 0,
                        n_permutations: int = 10_000) -> Comparison:
    """Compare ``system`` with ``reference`` (each: seed -> qid -> value) on shared queries.

    The estimate is the mean over paired seeds and queries of system - reference. The 95%
    interval is the percentile interval of the two-level bootstrap
    (``bootstrap_replicates``); the p-value is the share of replicates, centred on the
    estimate, at least as far from it as the estimate is from 0 (a bootstrap test of 0).
    Also returns each seed's mean difference and the plain per-query permutation p.
    """
    qids, d = delta_matrix(system, reference)
    missing = [q for q in qids if q not in clusters]
    if missing:
        raise ValueError(f"{len(missing)} queries have no cluster, e.g. {missing[:3]}")
    codes = {c: i for i, c in enumerate(sorted({clusters[q] for q in qids}))}
    ids = np.array([codes[clusters[q]] for q in qids])
    reps = bootstrap_replicates(d, ids, n_boot, seed)
    est = float(d.mean())
    low, high = np.quantile(reps, [ALPHA / 2, 1 - ALPHA / 2])
    extreme = int(np.sum(np.abs(reps - est) >= abs(est) - 1e-15))
    p = (1 + extreme) / (1 + n_boot) if est != 0 else 1.0
    flat = dict(zip(qids, d.mean(0).tolist(), strict=True))
    plain = sign_flip_p(np.array(list(flat.values())), n_permutations, seed)
    return Comparison(est, float(low), float(high), min(1.0, p), len(qids), len(codes),
                      tuple(float(x) for x in d.mean(1)), plain)


@dataclass(frozen=True)
class Components:
    """Standard deviations of the parts of a per-query difference between two systems."""

    passage: float  # shared by the questions of one passage
    seed: float  # shared by every question of one seed
    question: float  # each question of each seed on its own

    @property
    def intraclass(self) -> float:
        """The share of a seed-averaged question's variance that its passage shares (ICC)."""
        total = self.passage ** 2 + self.question ** 2
        return self.passage ** 2 / total if total else 0.0


def variance_components(system: SeedScores, reference: SeedScores,
                        clusters: Mapping[str, str]) -> Components:
    """Method-of-moments estimates of ``Components`` from paired seeds (two or more):
    the question part from the between-seed spread of each question (seed shifts removed),
    the passage part from a one-way analysis of variance of the seed-averaged questions by
    passage, the seed part from the spread of the seeds' mean differences beyond what the
    question noise explains. The simulations of ``tests/test_stats.py`` use these numbers."""
    qids, d = delta_matrix(system, reference)
    n_seeds, n = d.shape
    if n_seeds < 2:
        raise ValueError("variance components need two or more paired seeds")
    shifts = d.mean(1, keepdims=True)
    resid = d - shifts
    question = float(np.mean(resid.var(axis=0, ddof=1)))
    avg = resid.mean(0)
    groups: dict[str, list[float]] = {}
    for q, v in zip(qids, avg, strict=True):
        groups.setdefault(clusters[q], []).append(float(v))
    sizes = np.array([len(g) for g in groups.values()], dtype=float)
    means = np.array([np.mean(g) for g in groups.values()])
    k = len(groups)
    within = sum(float(np.sum((np.array(g) - np.mean(g)) ** 2)) for g in groups.values())
    msw = within / max(1, n - k)
    msb = float(np.sum(sizes * (means - avg.mean()) ** 2)) / max(1, k - 1)
    n0 = (n - float(np.sum(sizes ** 2)) / n) / max(1, k - 1)
    passage = max(0.0, (msb - msw) / n0)
    seed = max(0.0, float(shifts.var(ddof=1)) - question / n)
    return Components(math.sqrt(passage), math.sqrt(seed), math.sqrt(question))


def sign_flip_p(d: np.ndarray, n_permutations: int = 10_000, seed: int = 0) -> float:
    """Two-sided sign-flip permutation p of mean(d) = 0, ``(1 + #extreme) / (1 + n)``."""
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(n_permutations, len(d)))
    null = np.abs((signs * d).mean(axis=1))
    return (1 + int(np.sum(null >= abs(d.mean()) - 1e-15))) / (1 + n_permutations)


@dataclass
class PairedTest:
    """A plain paired comparison of system B against system A on the same queries."""

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


def paired_test(a: Scores, b: Scores, metric: str = "ndcg_cut_10", n_permutations: int = 10_000,
                seed: int = 0) -> PairedTest:
    """Two-sided sign-flip permutation test and paired t-test of B - A over shared queries,
    every query counted as independent (no clusters, no seeds).

    The permutation p-value is ``(1 + #{|mean(s * d)| >= |mean(d)|}) / (1 + n_permutations)``
    with random signs ``s``, so it is never 0.
    """
    qids = sorted(set(a) & set(b))
    if len(qids) != len(a) or len(qids) != len(b):
        raise ValueError(f"the two systems were scored on different queries ({len(a)} vs {len(b)})")
    d = np.array([b[q] - a[q] for q in qids])
    p_t = (float(stats.ttest_rel([b[q] for q in qids], [a[q] for q in qids]).pvalue)
           if d.any() else 1.0)
    return PairedTest(metric, float(np.mean([a[q] for q in qids])),
                      float(np.mean([b[q] for q in qids])), float(d.mean()),
                      sign_flip_p(d, n_permutations, seed), 1.0 if math.isnan(p_t) else p_t,
                      dict(zip(qids, d.tolist(), strict=True)))


def holm(pvalues: Sequence[float], family_size: int | None = None) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given).

    ``family_size``: the declared family's size when some of its members were not tested in
    this run; they count as p = 1 (ranked last), which can only raise the others' values.
    """
    m = max(len(pvalues), family_size or 0)
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted = [0.0] * len(pvalues)
    running = 0.0
    for rank_, i in enumerate(order):
        running = max(running, min(1.0, (m - rank_) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def verdict(low: float, high: float, p_holm: float, smallest: float = SMALLEST_EFFECT,
            alpha: float = ALPHA) -> str:
    """Read a comparison (claimed better minus claimed worse) from its interval and test:

    - ``held`` / ``reversed``: the Holm-adjusted test rejects 0; the sign of the interval says
      which way;
    - ``equivalent``: not that, and the whole 95% interval lies inside +/- ``smallest``
      (two one-sided tests at level alpha / 2 each): any effect is too small to matter;
    - ``inconclusive``: neither (the interval is too wide to say).
    """
    held, reversed_, equivalent, inconclusive = VERDICTS
    if p_holm < alpha and (low > 0 or high < 0):
        return held if low > 0 else reversed_
    if -smallest < low and high < smallest:
        return equivalent
    return inconclusive


def excludes(low: float, high: float, effect: float | None) -> bool | None:
    """Whether the interval rules out ``effect`` (None when there is no effect to rule out)."""
    if effect is None or (isinstance(effect, float) and math.isnan(effect)):
        return None
    return not (low <= effect <= high)


def comparison_table(per_seed: Mapping[str, SeedScores], pairs: Sequence[tuple[str, str]],
                     clusters: Mapping[str, str], n_boot: int = N_BOOT, seed: int = 0,
                     family_size: int | None = None, holm_family: bool = True) -> pd.DataFrame:
    """Each ``(system, reference)`` pair by ``two_level_bootstrap``, Holm over the table.

    Args:
        per_seed: system -> seed -> qid -> value (a seed-free system has one seed).
        pairs: the comparisons, ``(system, reference)``: delta is system - reference.
        clusters: qid -> cluster (``passage_clusters`` of the test qrels).
        family_size: the declared family's size, when some members are absent (``holm``).
        holm_family: False for a descriptive table (no Holm column, no verdict).

    Returns:
        One row per pair: ``system, reference, n queries, n passages, seeds, delta``, its 95%
        interval over seeds and passages, ``p`` (bootstrap), ``seed deltas`` (text),
        ``p (per query)`` (plain permutation, for comparison), and with ``holm_family``
        ``p Holm`` and ``verdict``.
    """
    rows = []
    for system, ref in pairs:
        c = two_level_bootstrap(per_seed[system], per_seed[ref], clusters, n_boot, seed)
        rows.append({"system": system, "reference": ref, "n queries": c.n_queries,
                     "n passages": c.n_clusters, "seeds": c.seeds, "delta": c.delta,
                     "95% CI low": c.low, "95% CI high": c.high, "p": c.p,
                     "seed deltas": ", ".join(f"{v:+.4f}" for v in c.seed_deltas),
                     "p (per query)": c.p_per_query})
    df = pd.DataFrame(rows)
    if len(df) and holm_family:
        df["p Holm"] = holm(df["p"].tolist(), family_size)
        df["verdict"] = [verdict(r["95% CI low"], r["95% CI high"], r["p Holm"])
                         for _, r in df.iterrows()]
    return df


def seed_test(deltas: Iterable[float]) -> float:
    """Two-sided one-sample t-test of per-seed deltas against 0 (``nan`` with one seed).

    Kept for readers who want the seed-level view alone; with 2-3 seeds it has one or two
    degrees of freedom, which is why verdicts no longer rest on it.
    """
    d = np.asarray(list(deltas), dtype=float)
    if len(d) < 2:
        return float("nan")
    if np.allclose(d, d[0]):
        return 0.0 if d[0] != 0 else 1.0
    return float(stats.ttest_1samp(d, 0.0).pvalue)
