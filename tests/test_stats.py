"""The study's statistics on data with a known answer.

Simulated studies shaped like the reddit test set (407 passages, about 4.9 questions each):
per-query differences with a passage effect shared by the questions of a passage, a seed
effect shared by every question of a seed, and per-question noise. The rates below are
checked against a binomial bound: an observed rate may exceed its nominal value by at most
the 99.9% point of a binomial count of ``STUDIES`` draws at that value (about 2.2 points at
alpha, 3.7 points at a power of 0.6), so a calibrated method fails one of the file's ~14
rate checks by chance in under 2% of seedings, while the miscalibrations the statistics were
rebuilt to remove (8.5-15.5% false positives, module docstring) exceed it.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from scipy import stats as sps

from clp_utils import stats as T

#: Variance components of a per-query nDCG@10 difference between two fine-tuned rows:
#: passage effect sd, seed effect sd, per-question noise sd, as ``stats.variance_components``
#: estimated them from the cpu profile's runs (ANCE vs random negatives on reddit test, two
#: seeds; chapter 04 prints the same split for CLP vs InfoNCE).
PASSAGE_SD, SEED_SD, QUESTION_SD = 0.036, 0.0035, 0.10
#: Plausible seed sds of a difference between two rows, low to high (module docstring).
SEED_SDS = (0.0035, 0.006, 0.01)
STUDIES = 1000
#: Passage bootstrap replicates in the simulations: the passage variance's Monte Carlo error
#: (sqrt(2 / 200) = 10% of it) is small beside the seed term's one or two df.
N_BOOT = 200


def cluster_sizes(rng: np.random.Generator, passages: int = 407, mean: float = 4.9) -> np.ndarray:
    return 1 + rng.poisson(mean - 1, passages)


def simulate_arrays(rng, effect: float, seeds: int = 2, seed_sd: float = SEED_SD,
                    passage_sd: float = PASSAGE_SD, question_sd: float = QUESTION_SD,
                    sizes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(seeds x queries differences, each query's passage) of one simulated study."""
    sizes = cluster_sizes(rng) if sizes is None else sizes
    cluster = np.repeat(np.arange(len(sizes)), sizes)
    d = (effect + rng.normal(0, passage_sd, len(sizes))[cluster]
         + rng.normal(0, seed_sd, (seeds, 1)) + rng.normal(0, question_sd, (seeds, len(cluster))))
    return d, cluster


def simulate(rng, effect: float, seeds: int = 2, **kwargs):
    """(system, reference, clusters) of one simulated study: seed -> qid -> value."""
    d, cluster = simulate_arrays(rng, effect, seeds, **kwargs)
    qids = [f"q{i}" for i in range(d.shape[1])]
    base = rng.uniform(0.2, 0.8, d.shape[1])  # the reference's scores; only differences matter
    reference = {s: dict(zip(qids, base.tolist(), strict=True)) for s in range(seeds)}
    system = {s: dict(zip(qids, (base + d[s]).tolist(), strict=True)) for s in range(seeds)}
    clusters = {q: f"p{c}" for q, c in zip(qids, cluster, strict=True)}
    return system, reference, clusters


def upper_bound(n: int, p: float) -> float:
    """The highest rate a method with true rate ``p`` shows in ``n`` studies (99.9%)."""
    return float(sps.binom.ppf(0.999, n, p)) / n


def band(n: int, p: float) -> tuple[float, float]:
    lo, hi = sps.binom.ppf([0.0005, 0.9995], n, p)
    return lo / n, hi / n


def expected_parts(sizes: np.ndarray, seeds: int, seed_sd: float, declared: bool
                   ) -> list[tuple[float, float]]:
    """The passage and seed parts a study of these cluster sizes reports on average, from the
    simulation's own components: the variance of a seed-averaged clustered mean, and the
    expected s ** 2 / S of the seeds' means (or the declared seed_sd ** 2 with one seed)."""
    n = sizes.sum()
    passage = PASSAGE_SD ** 2 * float(np.sum(sizes ** 2)) / n ** 2 + QUESTION_SD ** 2 / (n * seeds)
    if declared:
        return [(passage, len(sizes) - 1), (seed_sd ** 2, math.inf)]
    return [(passage, len(sizes) - 1), ((seed_sd ** 2 + QUESTION_SD ** 2 / n) / seeds, seeds - 1)]


@pytest.mark.parametrize("seeds", [1, 2])
@pytest.mark.parametrize("seed_sd", SEED_SDS)
def test_false_positive_rate_at_no_effect(seeds, seed_sd):
    """With no effect the interval excludes 0 at most alpha of the time: two measured seeds,
    or one seed with its seed sd declared (equal to the truth); the plain per-query test on
    the seed-averaged scores, every question independent, does not keep its level."""
    rng = np.random.default_rng(2024 + int(1e4 * seed_sd) + seeds)
    found = plain = 0
    for i in range(STUDIES):
        d, cluster = simulate_arrays(rng, 0.0, seeds, seed_sd)
        t = T.t_interval(d, cluster, N_BOOT, i, seed_sd=seed_sd if seeds == 1 else None)
        found += T.verdict(t.low, t.high, t.p, seed_term=t.seed_term) in ("held", "reversed")
        plain += sps.ttest_1samp(d.mean(0), 0).pvalue < T.ALPHA
    rate, plain_rate, bound = found / STUDIES, plain / STUDIES, upper_bound(STUDIES, T.ALPHA)
    message = (f"S={seeds}, seed sd {seed_sd}: false positives {rate:.3f} (bound {bound:.3f}), "
               f"plain per-query t-test {plain_rate:.3f}")
    print(message)
    assert rate <= bound, message
    assert plain_rate > bound, message  # the inflation that clusters and seeds remove


@pytest.mark.parametrize("seeds, margin", [(1, 0.015), (2, 0.03)])
def test_false_equivalence_at_the_margin(seeds, margin):
    """A true effect exactly at the margin reads "equivalent" at most alpha of the time,
    where the same design with no effect reads "equivalent" often (so the check can fail).
    The margins are wide enough for the seed sd 0.0035 design to reach equivalence at all."""
    rng = np.random.default_rng(77 + seeds)
    counts = {}
    for effect in (0.0, margin):
        hits = 0
        for i in range(STUDIES):
            d, cluster = simulate_arrays(rng, effect, seeds, SEED_SD)
            t = T.t_interval(d, cluster, N_BOOT, i, seed_sd=SEED_SD if seeds == 1 else None)
            hits += T.verdict(t.low, t.high, t.p, margin, seed_term=t.seed_term) == "equivalent"
        counts[effect] = hits / STUDIES
    bound = upper_bound(STUDIES, T.ALPHA)
    message = (f"S={seeds}, margin {margin}: 'equivalent' at effect 0 {counts[0.0]:.3f}, at the "
               f"margin {counts[margin]:.3f} (bound {bound:.3f})")
    print(message)
    assert counts[margin] <= bound, message
    assert counts[0.0] > 0.4, message


@pytest.mark.parametrize("seeds, seed_sd", [(1, 0.006), (2, 0.006), (3, 0.01)])
def test_power_at_the_minimum_detectable_effect(seeds, seed_sd):
    """Plant the effect that ``minimum_detectable_effect`` says is found 60% of the time by a
    study of this design (its se and df from the simulation's components, not from any
    simulated study): the share of studies that find it matches."""
    rng = np.random.default_rng(31 + seeds)
    sizes = cluster_sizes(rng)
    parts = expected_parts(sizes, seeds, seed_sd, declared=seeds == 1)
    se, df = math.sqrt(sum(v for v, _ in parts)), T.effective_df(parts)
    effect = T.minimum_detectable_effect(se, df, power=0.6)
    found = 0
    for i in range(STUDIES):
        d, cluster = simulate_arrays(rng, effect, seeds, seed_sd, sizes=sizes)
        t = T.t_interval(d, cluster, N_BOOT, i, seed_sd=seed_sd if seeds == 1 else None)
        found += t.p < T.ALPHA
    lo, hi = band(STUDIES, 0.6)
    message = (f"S={seeds}, seed sd {seed_sd}: planted {effect:.4f} (se {se:.4f}, df {df:.2f}), "
               f"found in {found / STUDIES:.3f} of studies (band [{lo:.3f}, {hi:.3f}])")
    print(message)
    assert lo <= found / STUDIES <= hi, message


def test_minimum_detectable_effect_against_closed_forms_and_a_simulation():
    z = sps.norm.ppf(1 - T.ALPHA / 2)
    # normal: power = P(Z > z - mde) + P(Z < -z - mde); the second tail is ~1e-6 at 80%
    assert T.minimum_detectable_effect(1.0, math.inf) == pytest.approx(
        z + sps.norm.ppf(0.8), abs=1e-4)
    assert T.minimum_detectable_effect(0.003, math.inf, power=0.5) == pytest.approx(
        0.003 * z, rel=1e-4)
    # with few df, the rejection rate of (Z + mde / se) / sqrt(chi2_df / df) at the t point
    rng = np.random.default_rng(0)
    for df in (1.3, 4.0):
        mde = T.minimum_detectable_effect(0.004, df, power=0.7)
        stat = (rng.normal(size=400_000) + mde / 0.004) / np.sqrt(rng.chisquare(df, 400_000) / df)
        assert np.mean(np.abs(stat) > sps.t.ppf(1 - T.ALPHA / 2, df)) == pytest.approx(
            0.7, abs=0.005)
    assert T.minimum_detectable_effect(0.004, 2.0) > T.minimum_detectable_effect(0.004, 20.0)


def test_interval_is_banerjees_combination_and_p_inverts_it():
    rng = np.random.default_rng(1)
    d, cluster = simulate_arrays(rng, 0.004, seeds=3, seed_sd=0.003)
    t = T.t_interval(d, cluster, 2000, 0)
    c = cluster.max() + 1
    s2 = np.var(d.mean(1), ddof=1) / 3
    half = math.sqrt(sps.t.ppf(0.975, c - 1) ** 2 * t.passage_var + sps.t.ppf(0.975, 2) ** 2 * s2)
    assert t.seed_var == pytest.approx(s2) and t.seed_term == "measured"
    assert (t.low, t.high) == pytest.approx((d.mean() - half, d.mean() + half))
    assert t.se == pytest.approx(math.sqrt(t.passage_var + s2))
    assert 2 < t.df < c - 1
    assert sps.t.ppf(0.975, t.df) * t.se == pytest.approx(half, rel=1e-6)
    parts = [(t.passage_var, c - 1), (s2, 2)]
    assert T.half_width(parts, t.p) == pytest.approx(abs(d.mean()), rel=1e-6)


def test_passage_variance_is_the_cluster_bootstrap_of_the_seed_averaged_mean():
    """Against the linearised variance of a ratio mean over resampled clusters: the sum of the
    clusters' squared residual sums over N ** 2, times C / (C - 1)."""
    rng = np.random.default_rng(4)
    d, cluster = simulate_arrays(rng, 0.0, seeds=2)
    avg = d.mean(0)
    resid = np.bincount(cluster, weights=avg - avg.mean())
    c = len(resid)
    analytic = float(np.sum(resid ** 2)) / len(avg) ** 2 * c / (c - 1)
    assert T.t_interval(d, cluster, 8000, 0).passage_var == pytest.approx(analytic, rel=0.05)


def test_one_seed_needs_a_seed_term_or_no_seed_at_all():
    rng = np.random.default_rng(9)
    trained, both, clusters = simulate(rng, 0.05, seeds=2)
    system, reference = {0: trained[0]}, {0: both[0]}
    per_seed = {"a": system, "b": reference}
    base = dict(n_boot=500, seed=3)
    none = T.comparison_table(per_seed, [("a", "b")], clusters, **base).iloc[0]
    assert none["seed term"] == "none" and none["verdict"] == "one seed: no verdict"
    assert none["p Holm"] == 1.0 and math.isnan(none["edge distance"])
    assert not none["at the edge"]
    free = T.comparison_table(per_seed, [("a", "b")], clusters, seedless={"a", "b"},
                              **base).iloc[0]
    assert free["seed term"] == "seedless" and free["verdict"] == "held"
    declared = T.comparison_table(per_seed, [("a", "b")], clusters, seed_sd=0.01, **base).iloc[0]
    assert declared["seed term"] == "declared"
    assert declared["se"] ** 2 == pytest.approx(free["se"] ** 2 + 0.01 ** 2)
    few = T.two_level_bootstrap(system, reference, clusters, 500, 3, seed_sd=0.01, seed_df=3)
    assert few.df < declared["df"] and few.high - few.low > declared["95% CI high"] - declared[
        "95% CI low"]
    # a single run against two seeds of a trained row: two paired seeds, measured
    c = T.two_level_bootstrap(trained, reference, clusters, 500, 3)
    assert c.seeds == 2 and c.seed_term == "measured" and c.df < 400
    with pytest.raises(ValueError, match="seedless"):
        T.two_level_bootstrap(trained, {0: reference[0], 1: reference[0]}, clusters, 500,
                              seedless=True)


def test_comparison_table_margins_power_and_edges():
    rng = np.random.default_rng(12)
    system, reference, clusters = simulate(rng, 0.0, seeds=3, seed_sd=0.001, passage_sd=0.01,
                                           question_sd=0.02)
    per_seed = {"a": system, "b": reference}
    table = T.comparison_table(per_seed, [("a", "b"), ("a", "b")], clusters, 500, 0,
                               margins=[0.001, 0.05])
    assert table["margin"].tolist() == [0.001, 0.05]
    assert table["verdict"].tolist() == ["inconclusive", "equivalent"]
    for _, r in table.iterrows():
        assert r["MDE (80% power)"] == pytest.approx(T.minimum_detectable_effect(r["se"], r["df"]))
        assert r["edge distance"] == pytest.approx(
            T.edge_distance(r["95% CI low"], r["95% CI high"], r["verdict"], r["margin"]))
    assert table["at the edge"].tolist() == [T.at_edge(x) for x in table["edge distance"]]
    plain = T.comparison_table(per_seed, [("a", "b")], clusters, n_boot=500, seed=0,
                               family_size=3, holm_family=False)
    assert "verdict" not in plain.columns and plain["margin"].tolist() == [T.SMALLEST_EFFECT]
    with pytest.raises(ValueError, match="margins"):
        T.comparison_table(per_seed, [("a", "b")], clusters, margins=[0.01, 0.02])


def test_pooled_seed_component_against_a_direct_computation():
    rng = np.random.default_rng(5)
    per_seed, pairs, measured = {}, [], []
    for i, seeds in enumerate((2, 3, 2, 1)):
        per_seed[f"s{i}"], per_seed[f"r{i}"], _ = simulate(rng, 0.0, seeds=seeds, seed_sd=0.006)
        pairs.append((f"s{i}", f"r{i}"))
        if seeds > 1:
            system, reference = per_seed[f"s{i}"], per_seed[f"r{i}"]
            measured.append([statistics.fmean(system[s][q] - reference[s][q] for q in system[s])
                             for s in system])
    dof = sum(len(x) - 1 for x in measured)
    direct = math.sqrt(sum((len(x) - 1) * statistics.variance(x) for x in measured) / dof)
    assert T.pooled_seed_component(per_seed, pairs) == (pytest.approx(direct), 4)
    pooled, none = T.pooled_seed_component(per_seed, pairs[-1:])  # no pair with two seeds
    assert math.isnan(pooled) and none == 0


@pytest.mark.parametrize("low, high, word, margin, distance, edge", [
    (0.003, 0.02, "held", 0.01, 0.003, False),
    (0.001, 0.02, "held", 0.01, 0.001, True),
    (-0.03, -0.012, "reversed", 0.01, 0.012, False),
    (-0.004, 0.006, "equivalent", 0.01, 0.004, False),
    (-0.004, 0.009, "equivalent", 0.01, 0.001, True),  # almost past the margin
    (-0.0005, 0.008, "equivalent", 0.01, 0.0005, True),  # almost real but small (held)
    (-0.001, 0.03, "inconclusive", 0.01, 0.001, True),  # one small shift from held
    (-0.02, 0.012, "inconclusive", 0.01, 0.01, False),
    (-0.011, 0.009, "inconclusive", 0.01, 0.001, True),  # almost equivalent
    (0.02, 0.04, "inconclusive", 0.01, 0.0, True),  # excludes 0; only Holm held it back
])
def test_edge_distance_by_hand(low, high, word, margin, distance, edge):
    assert T.edge_distance(low, high, word, margin) == pytest.approx(distance)
    assert T.at_edge(T.edge_distance(low, high, word, margin)) is edge


def test_edge_distance_is_the_move_that_changes_the_word():
    """Shifting a decisive interval by just under its distance keeps the word, by just over
    changes it (Holm p set to reject exactly when the interval excludes 0)."""
    def word(low, high, margin):
        return T.verdict(low, high, 0.0 if low > 0 or high < 0 else 1.0, margin)

    for low, high, margin, direction in [(0.004, 0.03, 0.01, -1), (-0.025, -0.006, 0.01, 1),
                                         (-0.002, 0.003, 0.01, 1), (-0.006, 0.006, 0.01, 1),
                                         (-0.001, 0.03, 0.01, 1)]:
        w = word(low, high, margin)
        dist = T.edge_distance(low, high, w, margin)
        for step, same in ((dist - 1e-9, True), (dist + 1e-9, False)):
            moved = word(low + direction * step, high + direction * step, margin)
            assert (moved == w) is same, (low, high, w, moved)
    assert math.isnan(T.edge_distance(0, 1, "one seed: no verdict", 0.01))
    with pytest.raises(ValueError, match="not a verdict"):
        T.edge_distance(0, 1, "maybe", 0.01)


def test_seed_noise_widens_the_interval_and_one_seed_is_a_passage_interval():
    rng = np.random.default_rng(3)
    system, reference, clusters = simulate(rng, effect=0.01, seed_sd=0.0)
    quiet = T.two_level_bootstrap(system, reference, clusters, n_boot=N_BOOT)
    shifted = {s: {q: v + (0.01 if s == 0 else -0.01) for q, v in scores.items()}
               for s, scores in system.items()}
    noisy = T.two_level_bootstrap(shifted, reference, clusters, n_boot=N_BOOT)
    assert noisy.delta == pytest.approx(quiet.delta)  # the shifts cancel in the mean
    assert noisy.high - noisy.low > 1.5 * (quiet.high - quiet.low)
    one = T.two_level_bootstrap({0: system[0]}, {0: reference[0]}, clusters, n_boot=N_BOOT)
    assert one.seeds == 1 and one.low < one.delta < one.high and one.seed_term == "none"


def test_bootstrap_replicates_against_a_hand_computed_case():
    """Two clusters, one seed: each replicate is the mean over the drawn clusters' questions;
    with clusters {a: [1, 1], b: [4]} the only possible means are 1, 4 and 2."""
    d = np.array([[1.0, 1.0, 4.0]])
    reps = T.bootstrap_replicates(d, np.array([0, 0, 1]), n_boot=2000, seed=0)
    assert set(np.round(reps, 9)) <= {1.0, 4.0, 2.0}
    # P(both draws a) = 1/4 -> 1; P(both b) = 1/4 -> 4; else (a, b) -> (1 + 1 + 4) / 3 = 2
    assert np.mean(reps == 1.0) == pytest.approx(0.25, abs=0.03)
    assert np.mean(np.isclose(reps, 2.0)) == pytest.approx(0.5, abs=0.03)


def test_variance_components_recover_the_simulated_ones():
    rng = np.random.default_rng(5)
    system, reference, clusters = simulate(rng, effect=0.0, seeds=8, seed_sd=0.004)
    c = T.variance_components(system, reference, clusters)
    assert c.question == pytest.approx(QUESTION_SD, rel=0.05)
    assert c.passage == pytest.approx(PASSAGE_SD, rel=0.2)
    assert c.seed == pytest.approx(0.004, rel=0.6)
    assert 0 < c.intraclass < 1


def test_pairing_of_seeds():
    assert T.pair_seeds({0: 1}, {0: 1, 1: 1}) == [(0, 0), (1, 0)]  # single reference
    assert T.pair_seeds({0: 1, 1: 1}, {5: 1}) == [(5, 0), (5, 1)]  # single system
    assert T.pair_seeds({0: 1, 1: 1, 2: 1}, {1: 1, 2: 1}) == [(1, 1), (2, 2)]
    with pytest.raises(ValueError, match="no seed in common"):
        T.pair_seeds({0: 1, 1: 1}, {2: 1, 3: 1})


@pytest.mark.parametrize("low, high, p, margin, term, expected", [
    (0.02, 0.04, 0.001, 0.01, "measured", "held"),
    (-0.04, -0.02, 0.001, 0.01, "measured", "reversed"),
    (-0.004, 0.006, 0.4, 0.01, "measured", "equivalent"),
    (-0.02, 0.015, 0.5, 0.01, "measured", "inconclusive"),
    (0.002, 0.008, 0.01, 0.01, "measured", "held"),  # real but small: held
    (0.02, 0.04, 0.2, 0.01, "measured", "inconclusive"),  # excludes 0, Holm does not reject
    (-0.02, 0.015, 0.5, 0.03, "declared", "equivalent"),  # a wider declared margin
    (0.02, 0.04, 0.001, 0.01, "none", "one seed: no verdict"),
    (0.02, 0.04, 0.001, 0.01, "seedless", "held"),
])
def test_verdict_reads_the_interval(low, high, p, margin, term, expected):
    assert T.verdict(low, high, p, margin, seed_term=term) == expected


def test_holm_counts_absent_members_of_a_declared_family():
    p = [0.01, 0.04]
    assert T.holm(p) == pytest.approx([0.02, 0.04])
    assert T.holm(p, family_size=5) == pytest.approx([0.05, 0.16])
    assert T.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_excludes_the_papers_effect():
    assert T.excludes(-0.003, 0.002, 0.0063) is True
    assert T.excludes(-0.003, 0.008, 0.0063) is False
    assert T.excludes(-0.003, 0.008, None) is None


def test_passage_clusters_from_qrels():
    qrels = {"q1": {"d1": 1}, "q2": {"d1": 1}, "q3": {"d2": 1, "d3": 1}, "q4": {"d9": 0}}
    c = T.passage_clusters(qrels)
    assert c["q1"] == c["q2"] == "d1" and c["q3"] == "d2|d3" and c["q4"].startswith("<none")
