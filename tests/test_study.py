"""The study's statistics, verdicts, profiles and design choices, on synthetic runs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from clp_utils import claims as C
from clp_utils import hybrids as H
from clp_utils import profiles as P
from clp_utils import results as R
from clp_utils import stats as T
from clp_utils import study as S
from clp_utils.evaluation import RetrievalResult
from clp_utils.machinery.design import Curve, DesignPlan, best_lrs, choose_setting, value_at_seconds

QIDS = [f"q{i}" for i in range(300)]


def fake_run(row: str, seed: int, values: np.ndarray, split: str = "reddit") -> S.StudyRun:
    per_query = {m: dict(zip(QIDS, values.tolist(), strict=True))
                 for m in ("ndcg_cut_5", "ndcg_cut_10")}
    return S.StudyRun(row, split, seed, None, per_query, per_query, per_query)


def base_values(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.2, 0.8, len(QIDS))


def test_seed_scores_and_clusters_come_from_the_runs():
    a0, a1 = base_values(1), base_values(2)
    runs = [fake_run(S.ZERO_SHOT, 0, base_values(0)), fake_run("A", 0, a0), fake_run("A", 1, a1)]
    scores = R.seed_scores(runs, "A", "reddit", "ndcg_cut_10")
    assert sorted(scores) == [0, 1] and scores[1]["q3"] == pytest.approx(a1[3])
    assert R.clusters_of(runs, "reddit") == {q: q for q in QIDS}  # a synthetic run: singletons
    with pytest.raises(KeyError, match="no run of 'B'"):
        R.seed_scores(runs, "B", "reddit", "ndcg_cut_10")


def test_claims_table_on_synthetic_effects():
    rng = np.random.default_rng(0)
    zs = base_values(0)
    runs = [fake_run(S.ZERO_SHOT, 0, zs)]
    effects = {"random negatives": -0.05, "ANCE negatives": 0.08, "ANCE + CLP": 0.08,
               "ANCE + CLP, intermediate only": 0.08, "ANCE + CLP + MoE": 0.04}
    for row, eff in effects.items():
        for seed in (0, 1, 2):
            noise = rng.normal(0, 0.02, len(QIDS))
            runs.append(fake_run(row, seed, np.clip(zs + eff + noise, 0, 1)))
    claims = C.claims_table(runs).set_index("claim")
    v = claims["verdict"]
    assert v["fine-tuning with random negatives hurts"] == "held"
    assert v["ANCE negatives beat random negatives"] == "held"
    assert v["CLP beats InfoNCE (ANCE + CLP > ANCE negatives)"] == "equivalent"
    assert v["MoE intermediate layers beat plain intermediate-only"] == "reversed"
    row = claims.loc["ANCE negatives beat random negatives"]
    assert row["delta"] == pytest.approx(0.13, abs=0.01)
    assert row["95% CI low"] < row["delta"] < row["95% CI high"]
    # the paper's own step for this claim (57.43 - 52.92 points of nDCG@5) and whether the
    # interval rules it out (it does not: the interval lies above it)
    assert row["paper claimed"] == pytest.approx(0.0451)
    assert bool(row["excludes paper's effect"]) is True
    # one family of five: Holm multiplies the smallest p by 5
    assert claims["p Holm"].min() == pytest.approx(min(1.0, 5 * claims["p"].min()))
    sentences = C.claim_sentences(claims.reset_index(), runs)
    assert sentences[2].startswith("**CLP beats InfoNCE") and "equivalent" in sentences[2]


def test_a_family_counts_its_absent_members():
    zs = base_values(0)
    runs = [fake_run(S.ZERO_SHOT, 0, zs)] + [
        fake_run(row, s, np.clip(zs + 0.05, 0, 1)) for row in ("ANCE negatives", "ANCE + CLP")
        for s in (0, 1)]
    claims = C.claims_table(runs)
    assert list(claims["claim"]) == ["CLP beats InfoNCE (ANCE + CLP > ANCE negatives)"]
    assert claims["p Holm"].iloc[0] == pytest.approx(min(1.0, 5 * claims["p"].iloc[0]))
    lines = C.claim_with_controls(claims, None)
    assert "not run here (`make study-extras`)" in lines[0]


def test_table2_scales_the_paper_column_and_forgetting_has_none():
    runs = [fake_run(S.ZERO_SHOT, 0, base_values(0)), fake_run("ANCE negatives", 0, base_values(1)),
            fake_run("ANCE negatives", 1, base_values(2))]
    t2 = R.table2(runs)
    assert t2.loc[("reddit", S.ZERO_SHOT), R.PAPER_COLUMN] == pytest.approx(0.5595)
    assert t2.loc[("reddit", "ANCE negatives"), "seeds"] == 2
    sd = np.std([base_values(1).mean(), base_values(2).mean()], ddof=1)
    assert t2.loc[("reddit", "ANCE negatives"), "ndcg_cut_10 sd"] == pytest.approx(sd)
    forget = R.forgetting_table(runs)
    assert R.PAPER_COLUMN not in forget.columns and "verdict" in forget.columns


def test_significance_table_is_descriptive():
    runs = [fake_run(S.ZERO_SHOT, 0, base_values(0))]
    for row, eff in (("ANCE negatives", 0.05), ("ANCE + CLP", 0.051)):
        runs += [fake_run(row, s, np.clip(base_values(0) + eff, 0, 1)) for s in (0, 1)]
    sig = R.significance_table(runs)
    assert set(sig["comparison"]) == {"ANCE negatives vs zero-shot", "ANCE + CLP vs zero-shot",
                                      "ANCE + CLP vs ANCE negatives"}
    assert "p Holm" not in sig.columns and "verdict" not in sig.columns
    assert (sig["95% CI low"] <= sig["delta"]).all() and (sig["delta"] <= sig["95% CI high"]).all()


def test_recipe_drives_the_cpu_profile(tmp_path, monkeypatch):
    recipe = {"split": "reddit", "steps": 40, "train_queries": 640, "batch_size": 16,
              "num_negatives": 2, "max_passage_len": 96, "attention_dropout": 0.0,
              "val_fraction": 0.1,
              "lr": {"full": 7e-5, "intermediate": 3e-4, "moe": 2e-4, "lora": 1e-3}}
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe))
    from clp_utils import recipe as recipe_module

    monkeypatch.setattr(recipe_module, "RECIPE_PATH", path)
    configs = {(c.row, c.seed): c.config for c in S.study_configs("cpu")}
    full = configs[("ANCE negatives", 0)]
    assert ((full.train_queries, full.max_passage_len, full.mining.num_negatives, full.lr)
            == (640, 96, 2, 7e-5))
    assert configs[("ANCE + CLP, intermediate only", 1)].lr == 3e-4
    assert configs[("ANCE + CLP + MoE", 0)].lr == 2e-4
    # every row of the cpu profile runs with both seeds; the paper recipe on a sixteenth
    assert all({seed for (r, seed) in configs if r == row} == {0, 1}
               for row, _ in configs if row != "zero-shot")
    assert configs[("paper recipe: ANCE + CLP", 1)].train_queries == 640 // 16
    full_rate = P.row_config("ANCE + CLP, intermediate only, full rate", full, "reddit", 0,
                             lrs=recipe["lr"])
    assert full_rate.policy == "intermediate" and full_rate.lr == 7e-5
    path.write_text(json.dumps({"split": "reddit"}))
    with pytest.raises(ValueError, match="rerun `make design`"):
        S.study_configs("cpu")
    path.unlink()
    with pytest.raises(FileNotFoundError, match="make design"):
        S.study_configs("cpu")


def test_design_compares_curves_at_equal_time_and_picks_rates_on_validation():
    plan = DesignPlan(curves=(Curve(1, 128, 100), Curve(4, 128, 50)), train_seconds_per_run=60,
                      step_quantum=8)
    rows = []
    # 1 negative: 1 s/step, slow riser; 4 negatives: 2.5 s/step, faster per step
    for step in (10, 50, 100):
        rows.append({"curve": "1 neg, 128 tok", "train_seconds": step * 1.0,
                     "seconds_per_step": 1.0, "val_ndcg_cut_10": 0.40 + 0.001 * step})
    for step in (10, 20, 50):
        rows.append({"curve": "4 neg, 128 tok", "train_seconds": step * 2.5,
                     "seconds_per_step": 2.5, "val_ndcg_cut_10": 0.40 + 0.0015 * step})
    curves = pd.DataFrame(rows)
    assert value_at_seconds(curves[curves["curve"] == "1 neg, 128 tok"], 60) == pytest.approx(0.46)
    # at 60 s: 1 neg -> 0.46; 4 neg -> 24 steps -> 0.436
    best, steps, table = choose_setting(curves, plan)
    assert best == Curve(1, 128, 100) and steps == 56  # 60 s / 1 s, down to a multiple of 8
    grid = pd.DataFrame({"policy": ["full", "full", "moe", "moe"], "lr": [1e-5, 1e-4, 1e-4, 1e-3],
                         "val_ndcg_cut_10": [0.45, 0.50, 0.48, 0.47]})
    assert best_lrs(grid) == {"full": 1e-4, "moe": 1e-4}


def test_hybrid_table_picks_the_weight_on_validation_and_tests_against_bm25(monkeypatch,
                                                                              tmp_path):
    """A dense run that is right where BM25 is wrong and vice versa: fusion wins, and the
    convex weight comes from the validation queries."""
    from types import SimpleNamespace

    from clp_utils.evaluation import evaluate_run

    docs = [f"d{i}" for i in range(20)]
    qids = [f"q{i}" for i in range(40)]
    qrels = {"test": {q: {docs[i % 20]: 1} for i, q in enumerate(qids)},
             "val": {q: {docs[(i + 3) % 20]: 1} for i, q in enumerate(qids)}}

    def run(side, good):  # relevant doc ranked 1st on the `good` queries, 5th elsewhere
        out = {}
        for i, q in enumerate(qids):
            rel = next(iter(qrels[side][q]))
            others = [d for d in docs if d != rel]
            ranking = [rel, *others] if good(i) else [*others[:4], rel, *others[4:]]
            out[q] = {d: 1.0 - 0.01 * r for r, d in enumerate(ranking)}
        return out

    dense_good, sparse_good = (lambda i: i % 2 == 0), (lambda i: i % 3 != 0)
    result = lambda r, side: SimpleNamespace(run=r, evaluation=evaluate_run(r, qrels[side]),  # noqa: E731
                                              metrics=evaluate_run(r, qrels[side]).mean)
    sparse = {"test": result(run("test", sparse_good), "test"),
              "val": result(run("val", sparse_good), "val")}
    monkeypatch.setattr(H, "bm25_runs", lambda profile, split: sparse)
    fake_ds = SimpleNamespace(test=lambda: SimpleNamespace(qrels=qrels["test"]),
                              validation=lambda: SimpleNamespace(qrels=qrels["val"]))
    monkeypatch.setattr(H, "load_training_data", lambda config: (fake_ds, None))
    monkeypatch.setattr(H, "results_dir", lambda: tmp_path)  # where the table is kept
    runs = []
    for seed in (0, 1):
        t, v = run("test", dense_good), run("val", dense_good)
        pq = evaluate_run(t, qrels["test"]).per_query
        ev = evaluate_run(v, qrels["val"])
        runs.append(S.StudyRun("ANCE negatives", "reddit", seed, None, pq, None, ev.per_query,
                               RetrievalResult(tmp_path / f"t{seed}", t, None),
                               RetrievalResult(tmp_path / f"v{seed}", v, ev)))
    table, sig = H.hybrid_table(runs, "smoke", "reddit")
    assert table.loc["BM25", "ndcg_cut_10 mean"] == pytest.approx(
        sparse["test"].metrics["ndcg_cut_10"])
    best_w = table.loc["ANCE negatives + BM25, convex", "weight"]
    assert 0 <= best_w <= 1
    val_scores = {w: evaluate_run(H.convex(runs[0].val_run, sparse["val"].run, w), qrels["val"])
                  .mean["ndcg_cut_10"] for w in H.HYBRID_WEIGHTS}
    assert table.loc["ANCE negatives + BM25, convex", "ndcg_cut_10 validation"] == pytest.approx(
        max(val_scores.values()))
    convex_run = H.convex(runs[0].test_run, sparse["test"].run, best_w)
    assert table.loc["ANCE negatives + BM25, convex", "ndcg_cut_10 mean"] == pytest.approx(
        evaluate_run(convex_run, qrels["test"]).mean["ndcg_cut_10"])
    rrf_run = H.rrf([runs[0].test_run, sparse["test"].run], 60)
    assert table.loc["ANCE negatives + BM25, RRF", "ndcg_cut_10 mean"] == pytest.approx(
        evaluate_run(rrf_run, qrels["test"]).mean["ndcg_cut_10"])
    assert set(sig["reference"]) == {"BM25", "ANCE negatives (dense)"} and len(sig) == 4
    assert sig["p Holm"].tolist() == pytest.approx(T.holm(sig["p"].tolist()))  # its own family
    # reopened from committed results (no run files): the table stored beside the runs comes
    # back as it was computed, and a changed setting finds none
    from dataclasses import replace
    bare = [replace(r, test_result=RetrievalResult(r.test_result.run_dir, None, None),
                    val_result=RetrievalResult(r.val_result.run_dir, None, None)) for r in runs]
    again, sig_again = H.hybrid_table(bare, "smoke", "reddit")
    pd.testing.assert_frame_equal(again, table, check_dtype=False)
    pd.testing.assert_frame_equal(sig_again.reset_index(drop=True), sig.reset_index(drop=True),
                                  check_dtype=False)
    with pytest.raises(FileNotFoundError, match="make study"):
        H.hybrid_table(bare, "smoke", "reddit", rrf_k=10)
    # with one seed the "seed deltas" text is one signed number, and it comes back as text
    table1, sig1 = H.hybrid_table(runs[:1], "smoke", "reddit")
    assert sig1["seed deltas"].str.match(r"^[+-]\d\.\d{4}$").all()
    pd.testing.assert_frame_equal(H.hybrid_table(bare[:1], "smoke", "reddit")[1], sig1,
                                  check_dtype=False)
    # the hybrid a sentence reports is chosen on validation scores only: the selection
    # function is handed the validation column, never a test score
    seen = []
    monkeypatch.setattr(H, "choose_on_validation",
                        lambda v: seen.append(dict(v)) or max(v, key=v.get))
    H.best_hybrid_sentence("reddit", table, sig)
    fused = table[table["kind"].isin(["RRF", "convex"])]
    assert seen == [fused["ndcg_cut_10 validation"].to_dict()]


def test_the_reported_hybrid_is_the_validation_best_even_when_test_disagrees():
    table = pd.DataFrame({"kind": ["sparse", "RRF", "convex"],
                          "ndcg_cut_10 validation": [0.40, 0.50, 0.45],
                          "ndcg_cut_10 mean": [0.41, 0.44, 0.60]},
                         index=["BM25", "A + BM25, RRF", "A + BM25, convex"])
    sig = pd.DataFrame({"system": ["A + BM25, RRF", "A + BM25, convex"],
                        "reference": ["BM25", "BM25"], "delta": [0.03, 0.19],
                        "95% CI low": [0.01, 0.1], "95% CI high": [0.05, 0.3],
                        "p Holm": [0.01, 0.001], "verdict": ["held", "held"]})
    assert H.best_hybrid(table) == "A + BM25, RRF"  # the test mean would pick convex
    assert "chosen on validation queries is A + BM25, RRF" in H.best_hybrid_sentence(
        "reddit", table, sig)


def test_alternatives_sentence_names_every_clp_control_and_only_those():
    import pandas as pd

    from clp_utils.claims import alternatives_sentence

    controls = pd.DataFrame({"claim": ["CLP at lambda 0.5 beats InfoNCE", "CLP beats X",
                                       "a MoE gate that learns beats frozen routing"],
                             "verdict": ["equivalent", "held", "equivalent"],
                             "delta": [0.0006, 0.0255, 0.0004]})
    text = alternatives_sentence(controls)
    assert "CLP at lambda 0.5 beats InfoNCE: equivalent (+0.0006)" in text
    assert "CLP beats X: held (+0.0255)" in text and "MoE" not in text
    assert alternatives_sentence(controls.iloc[0:0]) is None


def _rows(effects: dict[str, float], seeds: dict[str, tuple[int, ...]], sd: float = 0.02,
          seed: int = 0) -> list[S.StudyRun]:
    rng = np.random.default_rng(seed)
    zs = base_values(0)
    runs = [fake_run(S.ZERO_SHOT, 0, zs)]
    for row, eff in effects.items():
        for s in seeds.get(row, (0, 1)):
            runs.append(fake_run(row, s, np.clip(zs + eff + rng.normal(0, sd, len(QIDS)), 0, 1)))
    return runs


def test_the_2x2_interaction_is_the_difference_of_the_policy_leads():
    effects = {P.CLP: 0.05, P.INTERMEDIATE: 0.09, P.INTERMEDIATE_FULL_RATE: 0.02,
               P.FULL_INTERMEDIATE_RATE: 0.01}
    runs = _rows(effects, {})
    grid = C.claims_table(runs, "2x2").set_index("claim")
    assert len(grid) == len(C.TWO_BY_TWO_CLAIMS)
    means = {row: np.mean([np.mean(list(r.in_domain["ndcg_cut_5"].values())) for r in runs
                           if r.row == row]) for row in effects}
    at_int = means[P.INTERMEDIATE] - means[P.FULL_INTERMEDIATE_RATE]
    at_full = means[P.INTERMEDIATE_FULL_RATE] - means[P.CLP]
    assert grid.loc[C.POLICY_AT_INTERMEDIATE_RATE.name, "delta"] == pytest.approx(at_int)
    assert grid.loc[C.INTERACTION.name, "delta"] == pytest.approx(at_int - at_full)
    assert grid["p Holm"].min() == pytest.approx(min(1.0, 5 * grid["p"].min()))
    text = C.two_by_two_reading(grid.reset_index())
    assert "interaction" in text and grid.loc[C.INTERACTION.name, "verdict"] in text


def test_a_one_seed_claim_borrows_the_familys_pooled_seed_component_or_reads_no_verdict():
    effects = {C.SCALE_ANCE: 0.05, C.SCALE_CLP: 0.05, C.SCALE_INTERMEDIATE: 0.05,
               P.ANCE: 0.05, P.CLP: 0.05}
    runs = _rows(effects, {C.SCALE_INTERMEDIATE: (0,)})
    controls = C.claims_table(runs, "controls").set_index("claim")
    one = controls.loc[C.SCALE_INTERMEDIATE_BEATS_FULL.name]
    assert one["seeds"] == 1 and one["seed term"] == "declared"
    assert controls.loc[C.SCALE_CLP_BEATS_INFONCE.name, "seed term"] == "measured"
    per_seed = {r: R.seed_scores(runs, r, "reddit", "ndcg_cut_5")
                for r in (C.SCALE_CLP, C.SCALE_ANCE, P.CLP, P.ANCE)}
    pooled, df = C.pooled_seed_component(per_seed, [(C.SCALE_CLP, C.SCALE_ANCE)])
    d = [np.mean([per_seed[C.SCALE_CLP][s][q] - per_seed[C.SCALE_ANCE][s][q] for q in QIDS])
         for s in (0, 1)]
    assert df == 1 and pooled == pytest.approx(np.std(d, ddof=1))
    # SCALE_CLP is also the worse row of the one-seed claim: its two seeds still pair 0-0, 1-1
    assert controls.loc[C.SCALE_CLP_BEATS_INFONCE.name, "delta"] == pytest.approx(np.mean(d))
    assert controls.loc[C.SCALE_CLP_BEATS_INFONCE.name, "seed deltas"] == ", ".join(
        f"{x:+.4f}" for x in d)
    # the same claim with no two-seed comparison in its family: no verdict
    alone = [r for r in runs if r.row in (S.ZERO_SHOT, C.SCALE_CLP, C.SCALE_INTERMEDIATE)
             and (r.row != C.SCALE_CLP or r.seed == 0)]
    lonely = C.claims_table(alone, "controls").set_index("claim")
    assert lonely.loc[C.SCALE_INTERMEDIATE_BEATS_FULL.name, "verdict"] == "one seed: no verdict"
    assert "no verdict" in C.claim_sentence(lonely.reset_index().iloc[0])


def test_claims_carry_the_paper_step_of_their_own_column_as_margin():
    from clp_utils.paper import claimed_difference

    hindi = {c.name: c for c in C.HINDI_CLAIMS}
    first = hindi["fine-tuning mE5-small on Hindi (ANCE + InfoNCE) beats zero-shot"]
    assert first.paper_effect == pytest.approx(claimed_difference(P.ANCE, P.ZERO_SHOT, "hi"))
    assert first.margin == pytest.approx(abs(first.paper_effect))
    assert C.CLP_BEATS_INFONCE.margin == pytest.approx(0.0063)  # 58.06 - 57.43 points
    assert C.CLP_BEATS_SYMMETRIC.margin == T.SMALLEST_EFFECT  # not a step of the paper
    runs = _rows({P.RANDOM: -0.05, P.ANCE: 0.08, P.CLP: 0.08}, {})
    both = C.claims_both_metrics(runs, "paper")
    assert set(both["metric"]) == {"ndcg_cut_5", "ndcg_cut_10"}
    assert set(both.groupby("metric").size()) == {3}
    sentence = C.claim_sentences(both.iloc[[0]], runs)[0]
    assert "nDCG@5" in sentence and "BGE-M3 on MIRACL, average of ko, fa, hi" in sentence


def test_power_names_what_the_design_could_detect():
    runs = _rows({P.RANDOM: -0.05, P.ANCE: 0.08, P.CLP: 0.08}, {})
    power = C.power_table(C.claims_table(runs, "paper"))
    for _, r in power.iterrows():
        assert r["paper's step detectable"] == (abs(r["paper claimed"]) >= r["MDE (80% power)"])
    text = C.power_sentence(power)
    for _, r in power.iterrows():
        assert r["claim"] in text
    assert "nDCG@5" in text


def test_the_framing_sentence_reads_the_profiles():
    text = C.framing_sentence("cpu")
    cpu = P.get_profile("cpu").study
    assert f"{cpu.base.train_queries} training queries per run" in text
    assert "all-MiniLM-L6-v2" in text and "BGE-M3" in text and "neither has run here" in text


def test_forgetting_sentence_calls_a_resolved_gain_no_forgetting():
    forget = pd.DataFrame({"delta": [0.014, 0.017, -0.001], "verdict": ["held", "held",
                                                                        "inconclusive"]})
    text = R.forgetting_sentence(forget)
    assert "+0.0140 to" not in text and "-0.0010 to +0.0170" in text
    assert "2 of them resolved above it, 0 below" in text and "No forgetting" in text
    worse = R.forgetting_sentence(forget.assign(verdict=["reversed", "held", "inconclusive"]))
    assert "1 row(s) forget" in worse and "No forgetting" not in worse
    assert R.forgetting_sentence(pd.DataFrame({"ndcg_cut_10 mean": [0.5]})) is None


def test_random_negatives_reading_follows_both_recipes():
    def table(name, verdict, delta):
        return pd.DataFrame({"claim": [name], "verdict": [verdict], "delta": [delta],
                             "95% CI low": [delta - 0.004], "95% CI high": [delta + 0.004]})
    paper = table(C.RANDOM_HURTS.name, "reversed", -0.06)
    both = C.random_negatives_reading(paper, table(C.RECIPE_RANDOM_HURTS.name, "reversed",
                                                   -0.0067),
                                      {"the study's rows": (1280, 107.0, 2),
                                       "the paper-recipe rows": (80, 17.0, 1)})
    assert "random negatives help against zero-shot" in both
    assert "cannot be the whole reason" in both
    assert "80 training queries in 17 s on 1 thread" in both
    hurt = C.random_negatives_reading(paper, table(C.RECIPE_RANDOM_HURTS.name, "held", 0.02), {})
    assert "they hurt" in hurt and "cannot be the whole reason" not in hurt
    assert "has not run here" in C.random_negatives_reading(paper, paper.iloc[0:0], {})


def test_the_dense_row_set_against_bm25_is_chosen_on_validation():
    table = pd.DataFrame({"kind": ["sparse", "dense", "dense"],
                          "ndcg_cut_10 validation": [0.40, 0.52, 0.47],
                          "ndcg_cut_10 mean": [0.60, 0.50, 0.55]},
                         index=["BM25", "A (dense)", "B (dense)"])
    text = H.dense_vs_bm25_sentence(table)
    assert "(A (dense), 0.5000): dense minus BM25 -0.1000" in text  # not B, higher on test


def test_an_interval_that_excludes_zero_but_not_after_holm_is_said_so():
    r = pd.Series({"claim": C.RANDOM_HURTS.name, "metric": "ndcg_cut_5", "verdict": "inconclusive",
                   "delta": -0.07, "95% CI low": -0.096, "95% CI high": -0.044, "seeds": 2,
                   "n passages": 407, "p Holm": 0.087, "seed deltas": "-0.0680, -0.0717",
                   "margin": 0.0303, "edge distance": 0.0, "at the edge": True,
                   "paper claimed": 0.0303, "excludes paper's effect": True})
    text = C.claim_sentence(r)
    assert "excludes zero, but the test does not reject after Holm" in text
    assert "too wide" not in text


def test_a_reversed_claim_says_which_row_won():
    r = pd.Series({"claim": C.RECIPE_RANDOM_HURTS.name, "metric": "ndcg_cut_5",
                   "better": P.ZERO_SHOT, "worse": P.PAPER_RECIPE_RANDOM, "verdict": "reversed",
                   "delta": -0.0067, "95% CI low": -0.0108, "95% CI high": -0.0029, "seeds": 2,
                   "n passages": 407, "p Holm": 0.01, "seed deltas": "-0.0060, -0.0074",
                   "margin": 0.0303, "edge distance": 0.0029, "at the edge": False,
                   "paper claimed": 0.0303, "excludes paper's effect": True})
    assert f"Reversed: {P.PAPER_RECIPE_RANDOM} beats {P.ZERO_SHOT} here" in C.claim_sentence(r)
