"""Metrics equal trec_eval's definitions exactly; run files, fusion and significance tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from clp_utils.data import Split
from clp_utils.evaluation import METRICS, evaluate_run, save_evaluation
from clp_utils.retrieval import rank, read_trec, search, write_trec
from clp_utils.stats import holm, paired_test


def random_case(seed: int, n_q: int = 60, n_d: int = 150):
    rng = np.random.default_rng(seed)
    docs = [f"d{i:03d}" for i in range(n_d)]
    qrels, run = {}, {}
    for q in range(n_q):
        qid = f"q{q}"
        judged = rng.choice(n_d, size=rng.integers(1, 8), replace=False)
        # graded relevance with some judged non-relevant documents
        qrels[qid] = {docs[i]: int(rng.integers(0, 3)) for i in judged}
        qrels[qid][docs[judged[0]]] = int(rng.integers(1, 3))
        if q % 7 == 0:
            continue  # a judged query without results
        n_ret = int(rng.integers(5, 120))
        ret = rng.choice(n_d, size=n_ret, replace=False)
        # few distinct scores -> many ties, broken by docid
        scores = rng.integers(0, 6, size=n_ret).astype(float) / 4
        run[qid] = {docs[i]: float(s) for i, s in zip(ret, scores, strict=True)}
    run["q_unjudged"] = {docs[0]: 1.0}
    return qrels, run


def trec_reference(qrels, run):
    """trec_eval's definitions written out (independent of pytrec_eval, which the package
    calls): documents in trec_eval order, gains = relevance, ``-c`` zeros for queries without
    results, MRR@10 = reciprocal rank of the first relevant document in the first 10."""
    out = {m: {} for m in METRICS}
    for qid, rels in qrels.items():
        gains = [max(rels.get(d, 0), 0) for d, _ in rank(run.get(qid, {}))]
        num_rel = sum(1 for r in rels.values() if r > 0)
        ideal = sorted((r for r in rels.values() if r > 0), reverse=True)
        for k in (5, 10):
            dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains[:k]))
            idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal[:k]))
            out[f"ndcg_cut_{k}"][qid] = dcg / idcg if idcg else 0.0
        for k in (10, 100):
            out[f"recall_{k}"][qid] = sum(g > 0 for g in gains[:k]) / num_rel if num_rel else 0.0
        hits = np.cumsum([g > 0 for g in gains[:100]])
        precisions = [hits[i] / (i + 1) for i, g in enumerate(gains[:100]) if g > 0]
        out["map_cut_100"][qid] = sum(precisions) / num_rel if num_rel else 0.0
        first = next((i for i, g in enumerate(gains[:10]) if g > 0), None)
        out["mrr_10"][qid] = 1.0 / (first + 1) if first is not None else 0.0
    return out


@pytest.mark.parametrize("seed", range(5))
def test_metrics_equal_trec_eval_with_ties_and_missing_queries(seed):
    qrels, run = random_case(seed)
    qrels["q_no_relevant"] = {"d001": 0}  # judged, nothing relevant: every measure is 0
    run["q_no_relevant"] = {"d001": 1.0}
    ours = evaluate_run(run, qrels)
    ref = trec_reference(qrels, run)
    for m in METRICS:
        for qid in qrels:
            assert ours.per_query[m][qid] == pytest.approx(ref[m][qid], abs=1e-12), (m, qid)
        assert ours.mean[m] == pytest.approx(np.mean(list(ref[m].values())), abs=1e-12)
    # -c: the mean is over every judged query, including those without results
    assert len(ours.per_query["ndcg_cut_10"]) == len(qrels)
    assert any(q not in run for q in qrels)
    assert any(len(docs) > 10 and ours.per_query["mrr_10"][q] == 0.0
               and ours.per_query["recall_100"][q] > 0 for q, docs in run.items() if q in qrels)


def test_float32_scores_are_evaluated_as_their_floats():
    qrels = {"q": {"a": 1}}
    plain = evaluate_run({"q": {"a": 0.5, "b": 0.75}}, qrels)
    narrow = evaluate_run({"q": {"a": np.float32(0.5), "b": np.float32(0.75)}}, qrels)
    assert narrow.mean == plain.mean and plain.mean["mrr_10"] == 0.5


def test_tie_break_is_docid_descending():
    run = {"q": {"a": 1.0, "b": 1.0, "c": 1.0}}
    assert [d for d, _ in rank(run["q"])] == ["c", "b", "a"]
    # only "a" is relevant: trec_eval ranks it third
    ev = evaluate_run(run, {"q": {"a": 1}})
    assert ev.mean["mrr_10"] == pytest.approx(1 / 3)
    assert ev.mean["ndcg_cut_5"] == pytest.approx(1 / np.log2(4))


def test_hand_computed_example():
    run = {"q1": {"d1": 0.9, "d2": 0.8, "d3": 0.7}, "q2": {"x": 0.5}}
    qrels = {"q1": {"d2": 1, "d3": 2, "d9": 1}, "q2": {"y": 1}}
    ev = evaluate_run(run, qrels)
    dcg = 1 / np.log2(3) + 2 / np.log2(4)
    idcg = 2 / np.log2(2) + 1 / np.log2(3) + 1 / np.log2(4)
    assert ev.per_query["ndcg_cut_5"]["q1"] == pytest.approx(dcg / idcg)
    assert ev.per_query["recall_10"]["q1"] == pytest.approx(2 / 3)
    assert ev.per_query["map_cut_100"]["q1"] == pytest.approx((1 / 2 + 2 / 3) / 3)
    assert ev.per_query["mrr_10"]["q1"] == pytest.approx(1 / 2)
    assert ev.per_query["ndcg_cut_10"]["q2"] == 0.0
    assert ev.mean["mrr_10"] == pytest.approx(0.25)


def test_trec_file_round_trip_keeps_ranking(tmp_path):
    qrels, run = random_case(11)
    run = {q: {d: float(np.float32(s + 0.123456789)) for d, s in docs.items()}
           for q, docs in run.items()}
    write_trec(run, tmp_path / "run.trec", "t")
    back = read_trec(tmp_path / "run.trec")
    for qid in run:
        assert [d for d, _ in rank(back[qid])] == [d for d, _ in rank(run[qid])][:100]
    lines = (tmp_path / "run.trec").read_text().splitlines()
    first = lines[0].split()
    assert first[1] == "Q0" and first[3] == "1" and first[5] == "t"


def test_save_evaluation_writes_run_and_metrics(tmp_path):
    corpus = {f"d{i}": {"title": "", "text": f"t{i}"} for i in range(5)}
    split = Split("test", corpus, {"q1": {"text": "x", "answers": []}}, {"q1": {"d3": 1}})
    res = save_evaluation({"q1": {"d3": 0.9, "d1": 0.5}}, split, tmp_path / "r", "tag")
    import json

    meta = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert meta["run"] == "run.trec" and set(meta["metrics"]) == set(METRICS)
    assert meta["metrics"]["mrr_10"] == 1.0 == res.metrics["mrr_10"]
    assert (tmp_path / "r" / "per_query.csv").exists()
    with pytest.raises(ValueError, match="test or validation split"):
        save_evaluation({}, Split("train", corpus, {}, {}), tmp_path / "x", "t")


def test_exact_search_matches_numpy():
    rng = np.random.default_rng(0)
    d = rng.normal(size=(300, 16)).astype(np.float32)
    q = rng.normal(size=(7, 16)).astype(np.float32)
    scores, idx = search(q, d, k=10)
    ref = np.argsort(-(q @ d.T), axis=1)[:, :10]
    np.testing.assert_array_equal(idx, ref)
    np.testing.assert_allclose(scores, np.take_along_axis(q @ d.T, ref, 1), rtol=1e-5)


def test_paired_test_against_scipy_and_exact_enumeration():
    rng = np.random.default_rng(1)
    a = {f"q{i}": float(v) for i, v in enumerate(rng.random(40))}
    b = {q: v + 0.05 + rng.normal(0, 0.1) for q, v in a.items()}
    res = paired_test(a, b, n_permutations=20000, seed=3)
    qs = sorted(a)
    assert res.p_ttest == pytest.approx(
        stats.ttest_rel([b[q] for q in qs], [a[q] for q in qs]).pvalue)
    assert res.mean_delta == pytest.approx(np.mean([b[q] - a[q] for q in qs]))
    # the permutation p-value approximates the exact sign-flip p-value (small n: enumerate)
    small_a = {f"q{i}": 0.0 for i in range(10)}
    small_b = {f"q{i}": float(v)
               for i, v in enumerate([0.3, 0.1, -0.05, 0.2, 0.0, 0.15, -0.1, 0.25, 0.05, 0.1])}
    d = np.array(list(small_b.values()))
    signs = np.array(np.meshgrid(*[[-1, 1]] * 10)).reshape(10, -1).T
    exact = np.mean(np.abs((signs * d).mean(1)) >= abs(d.mean()) - 1e-15)
    approx = paired_test(small_a, small_b, n_permutations=40000, seed=0).p_permutation
    assert approx == pytest.approx(exact, abs=0.01)
    # same seed, same p-value; identical systems are not different
    assert paired_test(a, b, seed=3, n_permutations=20000).p_permutation == res.p_permutation
    assert paired_test(a, a).p_permutation == 1.0


def test_holm():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]


def test_rrf_matches_the_formula_with_trec_ties():
    from clp_utils.evaluation import rrf

    a = {"q": {"d1": 0.9, "d2": 0.8, "d3": 0.8}}  # d3 > d2 on the tie (id descending)
    b = {"q": {"d2": 5.0, "d4": 4.0}}
    fused = rrf([a, b], k=60)["q"]
    expect = {"d1": 1 / 61, "d3": 1 / 62, "d2": 1 / 63 + 1 / 61, "d4": 1 / 62}
    assert fused == pytest.approx(expect)
    assert [d for d, _ in rank(fused)] == ["d2", "d1", "d4", "d3"]  # d4 > d3 on the tie


def test_convex_fusion_normalises_per_query_and_spans_both_ends():
    from clp_utils.evaluation import convex

    dense = {"q": {"d1": 0.9, "d2": 0.5, "d3": 0.1}}
    sparse = {"q": {"d3": 30.0, "d4": 10.0}}
    fused = convex(dense, sparse, 0.25)["q"]
    # dense normalised: d1 1, d2 .5, d3 0; sparse: d3 1, d4 0; missing -> 0
    assert fused == pytest.approx({"d1": 0.25, "d2": 0.125, "d3": 0.75, "d4": 0.0})
    assert [d for d, _ in rank(convex(dense, sparse, 1.0)["q"])][:3] == ["d1", "d2", "d4"]
    assert rank(convex(dense, sparse, 0.0)["q"])[0][0] == "d3"
    assert convex({"q": {"d1": 2.0}}, {}, 0.5)["q"] == {"d1": 0.5}  # a constant list scores 1
    with pytest.raises(ValueError, match="weight"):
        convex(dense, sparse, 1.5)
