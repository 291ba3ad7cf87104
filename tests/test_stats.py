"""The study's statistics on data with a known answer.

Simulated studies shaped like the reddit test set (407 passages, about 4.9 questions each,
two seeds per row): per-query differences with a passage effect shared by the questions of a
passage, a seed effect shared by every question of a seed, and per-question noise. With no
planted effect the two-level bootstrap must reject about alpha of the time (a binomial
interval around alpha), where the plain per-query test, which counts every question as
independent, rejects far more often; with a planted effect of twice the smallest effect of
interest it must find it in most studies; and a pair with no effect and a tight interval
must read "equivalent".
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from clp_utils import stats as T

#: Variance components of a per-query nDCG@10 difference between two fine-tuned rows:
#: passage effect sd, seed effect sd, per-question noise sd, as ``stats.variance_components``
#: estimated them from the cpu profile's runs (ANCE vs random negatives on reddit test, two
#: seeds; chapter 04 prints the same split for CLP vs InfoNCE).
PASSAGE_SD, SEED_SD, QUESTION_SD = 0.036, 0.0035, 0.10
STUDIES = 240
N_BOOT = 999


def cluster_sizes(rng: np.random.Generator, passages: int = 407, mean: float = 4.9) -> np.ndarray:
    return 1 + rng.poisson(mean - 1, passages)


def simulate(rng, effect: float, seeds: int = 2, passage_sd: float = PASSAGE_SD,
             seed_sd: float = SEED_SD, question_sd: float = QUESTION_SD):
    """(system, reference, clusters) of one simulated study: seed -> qid -> value."""
    sizes = cluster_sizes(rng)
    cluster = np.repeat(np.arange(len(sizes)), sizes)
    n = len(cluster)
    qids = [f"q{i}" for i in range(n)]
    base = rng.uniform(0.2, 0.8, n)  # the reference's scores; only differences matter
    passage = rng.normal(0, passage_sd, len(sizes))[cluster]
    system, reference = {}, {}
    for s in range(seeds):
        d = effect + passage + rng.normal(0, seed_sd) + rng.normal(0, question_sd, n)
        reference[s] = dict(zip(qids, base.tolist(), strict=True))
        system[s] = dict(zip(qids, (base + d).tolist(), strict=True))
    clusters = {q: f"p{c}" for q, c in zip(qids, cluster, strict=True)}
    return system, reference, clusters


def plain_p(system, reference) -> float:
    """The per-query t-test on seed-averaged scores, every question independent."""
    qids = sorted(reference[0])
    d = np.mean([[system[s][q] - reference[s][q] for q in qids] for s in system], axis=0)
    return float(sps.ttest_1samp(d, 0).pvalue)


def binomial_band(n: int, p: float = T.ALPHA, level: float = 0.99) -> tuple[float, float]:
    lo, hi = sps.binom.ppf([(1 - level) / 2, (1 + level) / 2], n, p)
    return lo / n, hi / n


def test_two_level_bootstrap_keeps_its_level_where_the_per_query_test_does_not():
    rng = np.random.default_rng(2024)
    clustered = plain = 0
    for i in range(STUDIES):
        system, reference, clusters = simulate(rng, effect=0.0)
        c = T.two_level_bootstrap(system, reference, clusters, n_boot=N_BOOT, seed=i,
                                  n_permutations=1)
        clustered += c.p < T.ALPHA
        plain += plain_p(system, reference) < T.ALPHA
    lo, hi = binomial_band(STUDIES)
    rate, plain_rate = clustered / STUDIES, plain / STUDIES
    message = (f"false-positive rate over {STUDIES} null studies: two-level bootstrap "
               f"{rate:.3f}, plain per-query t-test {plain_rate:.3f}; 99% binomial band around "
               f"alpha: [{lo:.3f}, {hi:.3f}]")
    print(message)
    assert lo <= rate <= hi, message
    assert plain_rate > hi, message  # the inflation the clustered test removes


def test_a_planted_effect_of_twice_the_smallest_effect_is_found():
    rng = np.random.default_rng(7)
    found = 0
    studies = 60
    for i in range(studies):
        system, reference, clusters = simulate(rng, effect=2 * T.SMALLEST_EFFECT)
        c = T.two_level_bootstrap(system, reference, clusters, n_boot=N_BOOT, seed=i,
                                  n_permutations=1)
        found += T.verdict(c.low, c.high, c.p) == "held"
    assert found / studies > 0.8, f"found in {found} of {studies} studies"


def test_no_effect_with_a_tight_interval_reads_equivalent():
    rng = np.random.default_rng(11)
    verdicts = []
    for i in range(40):
        system, reference, clusters = simulate(rng, effect=0.0, passage_sd=0.01, seed_sd=0.001,
                                               question_sd=0.02)
        c = T.two_level_bootstrap(system, reference, clusters, n_boot=N_BOOT, seed=i,
                                  n_permutations=1)
        verdicts.append(T.verdict(c.low, c.high, c.p))
    assert verdicts.count("equivalent") >= 36, verdicts


def test_seed_noise_widens_the_interval_and_one_seed_is_a_passage_bootstrap():
    rng = np.random.default_rng(3)
    system, reference, clusters = simulate(rng, effect=0.01, seed_sd=0.0)
    quiet = T.two_level_bootstrap(system, reference, clusters, n_boot=N_BOOT)
    shifted = {s: {q: v + (0.01 if s == 0 else -0.01) for q, v in scores.items()}
               for s, scores in system.items()}
    noisy = T.two_level_bootstrap(shifted, reference, clusters, n_boot=N_BOOT)
    assert noisy.delta == pytest.approx(quiet.delta)  # the shifts cancel in the mean
    assert noisy.high - noisy.low > 1.5 * (quiet.high - quiet.low)
    one = T.two_level_bootstrap({0: system[0]}, {0: reference[0]}, clusters, n_boot=N_BOOT)
    assert one.seeds == 1 and one.low < one.delta < one.high


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


@pytest.mark.parametrize("low, high, p, expected", [
    (0.02, 0.04, 0.001, "held"),
    (-0.04, -0.02, 0.001, "reversed"),
    (-0.004, 0.006, 0.4, "equivalent"),
    (-0.02, 0.015, 0.5, "inconclusive"),
    (0.002, 0.008, 0.01, "held"),  # real but small: held (the table marks it inside +/-delta)
    (0.02, 0.04, 0.2, "inconclusive"),  # the interval excludes 0 but Holm does not reject
])
def test_verdict_reads_the_interval(low, high, p, expected):
    assert T.verdict(low, high, p) == expected


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
