"""Significance, as the study uses it: intervals that respect how queries cluster and how
seeds vary, one Holm family per question, and verdicts read from an interval.

A SQuADShifts test passage carries about five questions that succeed or fail together, and a
fine-tuned row is a random draw over training seeds: a per-query test on seed-averaged
scores ignores both (``tests/test_stats.py``: 30-65% false positives on simulated null
studies of the cpu design). So the interval of the mean over S paired seeds of system -
reference (``t_interval``) has a passage part, the bootstrap variance over resampled test
passages (Davison & Hinkley 1997, section 3.8) with C - 1 df, and a seed part, s^2 / S with
S - 1 df (s^2 also carries per-question noise: conservative by about 2.5e-6 beside a passage
part of 6e-6 at the cpu design).

With two or three seeds the seed part rests on one or two df: a bootstrap over seeds gave
8.5% and 15.5% false positives (seed sd of the difference 0.006, 0.01), one Welch t 6.3-12.8%
(its df comes from the same s^2 that, small by chance, makes the statistic large). Hence
Banerjee's (1961) combination, half-width sqrt(t_{C-1}^2 V_passage + t_{S-1}^2 s^2 / S)
(``half_width``), which covers at least 1 - alpha whatever the parts' ratio: over 1000 null
studies, 1.4-2.8% false positives with two seeds, 4.3-5.4% with one seed and the true seed
sd declared (bound 7.3%). The price is width: an 80%-power minimum detectable effect of
0.05-0.12 with two seeds, 0.015-0.034 with three, 0.013-0.029 with one seed declared (seed
sd 0.0035-0.01). With one seed and no declared seed sd the verdict is "one seed: no
verdict"; zero-shot against BM25 is ``seedless`` (no training seed exists).

Verdicts (``verdict``): held / reversed when the Holm-adjusted test rejects (Holm 1979),
equivalent when the 95% interval lies inside +/- the margin (Schuirmann 1987), else
inconclusive. A true effect at the margin reads "equivalent" in 1.8% (one seed, declared)
and 0.0% (two seeds) of 1000 simulated studies, no effect in 80% and 53% (margins 0.015 and
0.03). ``minimum_detectable_effect`` is exact for a t statistic; for the Banerjee interval
the tests find 59-63% detection where 60% is claimed.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

#: The smallest difference in nDCG@10 the study treats as mattering, declared before the
#: clustered analysis was run: one nDCG point, the granularity at which IR papers report
#: and claim gains, and 2-3x the seed-to-seed sd of a row at the cpu recipe. A difference
#: whose 95% interval lies inside +/- this is "equivalent": too small to matter here.
SMALLEST_EFFECT = 0.01
#: The level of every test and the complement of every interval's coverage.
ALPHA = 0.05
#: Passage bootstrap replicates per comparison: the passage variance's Monte Carlo error is
#: sqrt(2 / N_BOOT), 2% of it (the p-value is computed, not counted from replicates).
N_BOOT = 4000
#: The verdict words; the last is a comparison with one seed and no seed term (``verdict``).
VERDICTS = ("held", "reversed", "equivalent", "inconclusive", "one seed: no verdict")
#: Where the seed part of an interval comes from (``t_interval``).
SEED_TERMS = ("measured", "declared", "seedless", "none")
#: A verdict whose interval lies within this of changing its word is "at the edge"
#: (``edge_distance``): a fifth of ``SMALLEST_EFFECT``, and about how far a third seed moves a
#: two-seed mean at a seed sd of a difference of 0.005 (sd sqrt(1.5) / 3 * 0.005 = 0.002).
EDGE_BAND = 0.002

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
        return [(s, next(iter(ref))) for s in sorted(row)]
    if len(row) == 1:
        return [(next(iter(row)), s) for s in sorted(ref)]
    common = sorted(set(ref) & set(row))
    if not common:
        raise ValueError(f"no seed in common: {sorted(row)} vs {sorted(ref)}")
    return [(s, s) for s in common]


@dataclass(frozen=True)
class Interval:
    """The calibrated interval of a mean difference: a passage part and a seed part."""

    estimate: float
    se: float  # sqrt(passage_var + seed_var)
    df: float  # effective degrees of freedom (``effective_df``; inf: a normal interval)
    low: float
    high: float
    p: float  # two-sided p of estimate = 0, from the same combination (``p_value``)
    passage_var: float  # passage bootstrap variance of the seed-averaged mean
    seed_var: float  # s ** 2 / S (measured), seed_sd ** 2 (declared) or 0
    seed_term: str  # one of SEED_TERMS


@dataclass(frozen=True)
class Comparison(Interval):
    """System minus reference (``two_level_bootstrap``): its ``Interval`` and counts."""

    n_queries: int = 0
    n_clusters: int = 0
    seed_deltas: tuple[float, ...] = ()  # each paired seed's mean difference
    p_per_query: float = math.nan  # the plain per-query permutation p (no clusters, no seeds)

    @property
    def delta(self) -> float:
        return self.estimate

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
    """``n_boot`` replicates of the seed-averaged mean of ``d`` (S seeds x N queries), clusters
    (``cluster_ids``: 0..C-1 per query) drawn with replacement, each with all its queries."""
    rng = np.random.default_rng(seed)
    n_clusters = int(cluster_ids.max()) + 1
    sums = np.bincount(cluster_ids, weights=np.asarray(d, float).mean(0), minlength=n_clusters)
    sizes = np.bincount(cluster_ids, minlength=n_clusters).astype(float)
    drawn = rng.integers(0, n_clusters, size=(n_boot, n_clusters))
    return sums[drawn].sum(1) / sizes[drawn].sum(1)


def t_quantile(df: float, alpha: float = ALPHA) -> float:
    """The upper ``alpha / 2`` point of Student's t with ``df`` degrees of freedom (normal at
    ``df = inf``)."""
    q = alpha / 2
    return float(-special.ndtri(q) if math.isinf(df) else -special.stdtrit(df, q))


def half_width(parts: Sequence[tuple[float, float]], alpha: float = ALPHA) -> float:
    """Half the width of the ``1 - alpha`` interval of a sum of independent variance estimates,
    each ``(variance, degrees of freedom)`` (``inf``: known exactly): Banerjee's combination
    sqrt(sum_i t_{df_i} ** 2 * variance_i) (module docstring)."""
    return math.sqrt(sum(t_quantile(df, alpha) ** 2 * v for v, df in parts if v > 0))


def effective_df(parts: Sequence[tuple[float, float]], alpha: float = ALPHA) -> float:
    """The degrees of freedom of the one Student t whose quantile times the combined standard
    error gives ``half_width``: between the smallest and the largest of the parts' df."""
    total = sum(v for v, _ in parts)
    used = [df for v, df in parts if v > 0]
    if not total or not used:
        return math.inf
    target = half_width(parts, alpha) / math.sqrt(total)
    low, high = min(used), min(max(used), 1e9)
    if target <= t_quantile(high, alpha) * (1 + 1e-12):
        return max(used)
    if target >= t_quantile(low, alpha) * (1 - 1e-12):
        return low
    return math.exp(optimize.brentq(lambda x: t_quantile(math.exp(x), alpha) - target,
                                    math.log(low), math.log(high), rtol=1e-10))


def p_value(estimate: float, parts: Sequence[tuple[float, float]]) -> float:
    """The two-sided p of ``estimate = 0`` that matches ``half_width``: the smallest alpha
    whose interval excludes 0 (floored at 1e-150, beyond any reading)."""
    if estimate == 0:
        return 1.0
    if not sum(v for v, _ in parts):
        return 0.0
    floor = 1e-150
    if half_width(parts, floor) <= abs(estimate):
        return floor
    gap = lambda x: half_width(parts, math.exp(x)) - abs(estimate)  # noqa: E731
    return math.exp(optimize.brentq(gap, math.log(floor), 0.0, rtol=1e-10))


def t_interval(d: np.ndarray, cluster_ids: np.ndarray, n_boot: int = N_BOOT, seed: int = 0,
               *, seed_sd: float | None = None, seed_df: float | None = None,
               seedless: bool = False, alpha: float = ALPHA) -> Interval:
    """The study's interval for the mean of ``d`` (S paired seeds x N queries; module
    docstring): the passage part from ``bootstrap_replicates`` (times C / (C - 1), the
    bootstrap's shortfall for a mean of C clusters), the seed part measured (S >= 2), declared
    (``seed_sd`` with ``seed_df`` df, None: known), ``seedless`` or ``"none"`` (S == 1)."""
    d = np.asarray(d, dtype=float)
    n_seeds = d.shape[0]
    n_clusters = int(cluster_ids.max()) + 1
    if n_clusters < 2:
        raise ValueError("an interval over passages needs two or more passages")
    reps = bootstrap_replicates(d, cluster_ids, n_boot, seed)
    passage = float(reps.var(ddof=1)) * n_clusters / (n_clusters - 1)
    if n_seeds >= 2:
        if seedless:
            raise ValueError(f"seedless, yet {n_seeds} paired seeds")
        seed_var, seed_dof, term = float(d.mean(1).var(ddof=1)) / n_seeds, n_seeds - 1, "measured"
    elif seed_sd is not None:
        if seed_sd < 0 or (seed_df is not None and seed_df < 1):
            raise ValueError(f"a declared seed term needs seed_sd >= 0 and seed_df >= 1, got "
                             f"{seed_sd}, {seed_df}")
        seed_var, term = float(seed_sd) ** 2, "declared"
        seed_dof = math.inf if seed_df is None else float(seed_df)
    else:
        seed_var, seed_dof, term = 0.0, math.inf, "seedless" if seedless else "none"
    parts = [(passage, n_clusters - 1), (seed_var, seed_dof)]
    est = float(d.mean())
    half = half_width(parts, alpha)
    return Interval(est, math.sqrt(passage + seed_var), effective_df(parts, alpha), est - half,
                    est + half, p_value(est, parts), passage, seed_var, term)


def two_level_bootstrap(system: SeedScores, reference: SeedScores, clusters: Mapping[str, str],
                        n_boot: int = N_BOOT, seed: int = 0, n_permutations: int = 10_000,
                        *, seed_sd: float | None = None, seed_df: float | None = None,
                        seedless: bool = False) -> Comparison:
    """``system`` minus ``reference`` (each: seed -> qid -> value) on shared queries: the
    ``t_interval`` of the paired differences (the name stays from when both levels were
    bootstrapped; ``seed_sd``, ``seed_df``, ``seedless``: its one-seed options), each seed's
    mean difference and the plain per-query permutation p."""
    qids, d = delta_matrix(system, reference)
    missing = [q for q in qids if q not in clusters]
    if missing:
        raise ValueError(f"{len(missing)} queries have no cluster, e.g. {missing[:3]}")
    codes = {c: i for i, c in enumerate(sorted({clusters[q] for q in qids}))}
    ids = np.array([codes[clusters[q]] for q in qids])
    t = t_interval(d, ids, n_boot, seed, seed_sd=seed_sd, seed_df=seed_df, seedless=seedless)
    return Comparison(**vars(t), n_queries=len(qids), n_clusters=len(codes),
                      seed_deltas=tuple(float(x) for x in d.mean(1)),
                      p_per_query=sign_flip_p(d.mean(0), n_permutations, seed))


def pooled_seed_component(per_seed: dict, pairs: list[tuple[str, str]]) -> tuple[float, int]:
    """The seed sd of a difference pooled over the pairs with two or more paired seeds (the
    mean of their per-seed variances; degrees of freedom: the sum of S - 1). (nan, 0) when
    none has two seeds."""
    variances, df = [], 0
    for system, ref in pairs:
        _, d = delta_matrix(per_seed[system], per_seed[ref])
        if d.shape[0] > 1:
            variances.append(float(d.mean(1).var(ddof=1)) * (d.shape[0] - 1))
            df += d.shape[0] - 1
    return (math.sqrt(sum(variances) / df), df) if df else (float("nan"), 0)


def minimum_detectable_effect(se: float, df: float, power: float = 0.8,
                              alpha: float = ALPHA) -> float:
    """The smallest true difference that the two-sided t-test at level ``alpha`` rejects with
    probability ``power``, for an estimate of standard deviation ``se`` whose squared standard
    error has ``df`` degrees of freedom: exact under that model (noncentral t, both tails;
    ``df = inf``: normal), found by root search on the noncentrality."""
    if not alpha < power < 1:
        raise ValueError(f"power must lie in (alpha, 1), got {power}")
    if not math.isfinite(se) or se < 0:
        return math.nan
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    if math.isfinite(df):
        def reach(ncp: float) -> float:  # scipy's far tail can come back nan: it is ~0 there
            return float(np.nan_to_num(stats.nct.sf(crit, df, ncp))
                         + np.nan_to_num(stats.nct.cdf(-crit, df, ncp)))
    else:
        def reach(ncp: float) -> float:
            return float(stats.norm.sf(crit - ncp) + stats.norm.cdf(-crit - ncp))
    top = crit + float(stats.norm.ppf(power)) + 1
    while reach(top) < power:
        top *= 2
    return float(optimize.brentq(lambda x: reach(x) - power, 0.0, top, xtol=1e-10)) * se


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


def paired_test(a: Scores, b: Scores, metric: str = "ndcg_cut_10", n_permutations: int = 10_000,
                seed: int = 0) -> PairedTest:
    """Two-sided sign-flip permutation test (``sign_flip_p``) and paired t-test of B - A over
    shared queries, every query counted as independent (no clusters, no seeds)."""
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
    """Holm-Bonferroni adjusted p-values (same order as given). ``family_size``: the declared
    family's size when some members were not tested; they count as p = 1 (ranked last)."""
    m = max(len(pvalues), family_size or 0)
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted = [0.0] * len(pvalues)
    running = 0.0
    for rank_, i in enumerate(order):
        running = max(running, min(1.0, (m - rank_) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def verdict(low: float, high: float, p_holm: float, smallest: float = SMALLEST_EFFECT,
            alpha: float = ALPHA, *, seed_term: str = "measured") -> str:
    """Read a comparison (claimed better minus claimed worse) from its interval and test:
    ``one seed: no verdict`` when ``seed_term`` is ``"none"`` (the interval holds no seed
    variance); ``held`` / ``reversed`` when the Holm-adjusted test rejects 0 (the interval's
    sign says which); ``equivalent`` when the 95% interval lies inside +/- ``smallest`` (the
    margin); else ``inconclusive``."""
    held, reversed_, equivalent, inconclusive, no_verdict = VERDICTS
    if seed_term not in SEED_TERMS:
        raise ValueError(f"seed_term must be one of {SEED_TERMS}, got {seed_term!r}")
    if seed_term == "none":
        return no_verdict
    if p_holm < alpha and (low > 0 or high < 0):
        return held if low > 0 else reversed_
    if -smallest < low and high < smallest:
        return equivalent
    return inconclusive


def edge_distance(low: float, high: float, verdict: str, margin: float = SMALLEST_EFFECT
                  ) -> float:
    """How far the interval is from changing its verdict word (>= 0; nan without a verdict;
    Holm's adjustment aside): held, ``low``; reversed, ``-high``; equivalent or inconclusive,
    the smaller of the outer bound's distance to the margin and the shift that takes the
    nearer bound past 0 (0 when the interval excludes 0 and only Holm kept the word)."""
    if verdict not in VERDICTS:
        raise ValueError(f"not a verdict: {verdict!r}")
    outer, past_zero = max(abs(low), abs(high)), max(0.0, min(-low, high))
    held, reversed_, equivalent, inconclusive, no_verdict = VERDICTS
    return {held: low, reversed_: -high, equivalent: max(0.0, min(margin - outer, past_zero)),
            inconclusive: max(0.0, min(outer - margin, past_zero)), no_verdict: math.nan}[verdict]


def at_edge(distance: float) -> bool:
    """Whether a verdict lies within ``EDGE_BAND`` of changing (False without a verdict)."""
    return bool(distance < EDGE_BAND)


def excludes(low: float, high: float, effect: float | None) -> bool | None:
    """Whether the interval rules out ``effect`` (None when there is no effect to rule out)."""
    if effect is None or (isinstance(effect, float) and math.isnan(effect)):
        return None
    return not (low <= effect <= high)


def comparison_table(per_seed: Mapping[str, SeedScores], pairs: Sequence[tuple[str, str]],
                     clusters: Mapping[str, str], n_boot: int = N_BOOT, seed: int = 0,
                     family_size: int | None = None, holm_family: bool = True, *,
                     margins: Sequence[float] | None = None, seed_sd: float | None = None,
                     seed_df: float | None = None, seedless: Collection[str] = ()
                     ) -> pd.DataFrame:
    """Each ``(system, reference)`` pair of ``per_seed`` (system -> seed -> qid -> value) by
    ``two_level_bootstrap`` on ``clusters`` (qid -> cluster), delta = system - reference.

    ``margins``: each pair's smallest effect that matters (default ``SMALLEST_EFFECT``);
    ``seed_sd``, ``seed_df``: the declared seed term of every one-seed pair; ``seedless``:
    systems with no training seed (zero-shot, BM25), a pair of two of them needs none.
    Returns one row per pair: counts, delta, 95% interval, ``p``, ``seed deltas`` (text),
    ``p (per query)``, ``seed term``, ``se``, ``df``, ``MDE (80% power)`` and ``margin``;
    with ``holm_family`` (False: descriptive) also ``p Holm`` over ``family_size`` (a pair
    with seed term ``"none"`` counts as p = 1), ``verdict``, ``edge distance``, ``at the edge``.
    """
    margins = [SMALLEST_EFFECT] * len(pairs) if margins is None else list(margins)
    if len(margins) != len(pairs):
        raise ValueError(f"{len(margins)} margins for {len(pairs)} pairs")
    rows = []
    for (system, ref), margin in zip(pairs, margins, strict=True):
        c = two_level_bootstrap(per_seed[system], per_seed[ref], clusters, n_boot, seed,
                                seed_sd=seed_sd, seed_df=seed_df,
                                seedless=system in seedless and ref in seedless)
        rows.append({"system": system, "reference": ref, "n queries": c.n_queries,
                     "n passages": c.n_clusters, "seeds": c.seeds, "delta": c.delta,
                     "95% CI low": c.low, "95% CI high": c.high, "p": c.p,
                     "seed deltas": ", ".join(f"{v:+.4f}" for v in c.seed_deltas),
                     "p (per query)": c.p_per_query, "seed term": c.seed_term, "se": c.se,
                     "df": c.df, "MDE (80% power)": minimum_detectable_effect(c.se, c.df),
                     "margin": float(margin)})
    df = pd.DataFrame(rows)
    if len(df) and holm_family:
        tested = [1.0 if t == "none" else p for t, p in zip(df["seed term"], df["p"],
                                                             strict=True)]
        df["p Holm"] = holm(tested, family_size)
        df["verdict"] = [verdict(r["95% CI low"], r["95% CI high"], r["p Holm"], r["margin"],
                                 seed_term=r["seed term"]) for _, r in df.iterrows()]
        df["edge distance"] = [edge_distance(r["95% CI low"], r["95% CI high"], r["verdict"],
                                             r["margin"]) for _, r in df.iterrows()]
        df["at the edge"] = [at_edge(x) for x in df["edge distance"]]
    return df

