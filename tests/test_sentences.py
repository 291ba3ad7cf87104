"""Every generated sentence about results, at its boundaries: the words follow the numbers.

Each test builds a small synthetic table with the columns the real tables have (the claims
tables of ``claims.claims_table``, ``results.forgetting_table``, ``hybrids.hybrid_table``,
``geometry.harm_gaps`` and ``geometry.cosine_shifts``), with verdicts, edge distances and
paper effects computed by ``clp_utils.stats`` and ``clp_utils.paper`` (never typed by hand),
and checks that a sentence's direction word, verdict word and limit words agree with the
numbers just inside and just beyond each limit. A boundary where the code's words contradict
its numbers was an ``xfail(strict=True)`` test that stated the bug, until the code was fixed.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from clp_utils import claims as C
from clp_utils import exercises as X
from clp_utils import geometry as G
from clp_utils import hybrids as H
from clp_utils import multilingual as M
from clp_utils import profiles as P
from clp_utils import results as R
from clp_utils import study as S
from clp_utils.costs import Estimate
from clp_utils.paper import claimed_difference
from clp_utils.stats import (
    EDGE_BAND,
    SMALLEST_EFFECT,
    VERDICTS,
    at_edge,
    bootstrap_replicates,
    edge_distance,
    excludes,
    verdict,
)

HELD, REVERSED, EQUIVALENT, INCONCLUSIVE, NO_VERDICT = VERDICTS
#: A Holm p that rejects, and one that does not.
REJECTS, KEEPS = 0.001, 0.5


# --------------------------------------------------------------------------- claims rows


def claim_row(claim: C.Claim, low: float, high: float, p_holm: float | None = None,
              seeds: int = 2, metric: str = "ndcg_cut_5", seed_term: str = "measured",
              split: str = "reddit") -> pd.Series:
    """One row of a claims table (``claims.CLAIM_COLUMNS``) for ``claim`` with interval
    ``[low, high]``; verdict, edge and paper columns computed as ``claims_table`` does."""
    if p_holm is None:
        p_holm = REJECTS if (low > 0 or high < 0) else KEEPS
    margin = claim.margin
    v = verdict(low, high, p_holm, margin, seed_term=seed_term)
    distance = edge_distance(low, high, v, margin)
    paper = claim.paper_effect
    delta = (low + high) / 2
    values = {"claim": claim.name, "metric": metric, "split": split, "better": claim.better,
              "worse": claim.worse, "n queries": 1986, "n passages": 407, "seeds": seeds,
              "seed term": seed_term, "delta": delta, "95% CI low": low, "95% CI high": high,
              "se": (high - low) / 3.92, "df": 50.0, "p": p_holm / 5, "p Holm": p_holm,
              "verdict": v, "margin": margin, "edge distance": distance,
              "at the edge": at_edge(distance), "MDE (80% power)": 0.02,
              "paper claimed": paper if paper is not None else np.nan,
              "excludes paper's effect": excludes(low, high, paper),
              "seed deltas": ", ".join(f"{delta + s:+.4f}" for s in (-0.001, 0.001)[:seeds]),
              "p (per query)": p_holm / 10}
    assert list(values) == C.CLAIM_COLUMNS
    return pd.Series(values)


def table_of(*rows: pd.Series) -> pd.DataFrame:
    return pd.DataFrame(list(rows)).reset_index(drop=True)


def names_winner(text: str, winner: str, loser: str) -> bool:
    """Whether ``text`` says in words that ``winner`` beats ``loser``."""
    return re.search(rf"{re.escape(winner)} (beats|leads|is ahead of|scores above) "
                     rf"{re.escape(loser)}", text) is not None


CLP_CLAIM = C.CLP_BEATS_INFONCE


def test_claim_sentence_sign_gives_the_verdict_and_a_reversal_names_the_winner():
    up = C.claim_sentence(claim_row(CLP_CLAIM, 0.02, 0.04))
    down = C.claim_sentence(claim_row(CLP_CLAIM, -0.04, -0.02))
    assert f": {HELD}." in up and "Reversed" not in up
    assert f": {REVERSED}." in down
    assert names_winner(down, CLP_CLAIM.worse, CLP_CLAIM.better)
    assert not names_winner(up, CLP_CLAIM.worse, CLP_CLAIM.better)
    assert "+0.0300 (95% CI +0.0200 to +0.0400)" in up
    assert "-0.0300 (95% CI -0.0400 to -0.0200)" in down


def test_claim_sentence_equivalent_only_inside_the_margin():
    m = CLP_CLAIM.margin
    inside = claim_row(CLP_CLAIM, -m + 1e-4, m - 1e-4)
    beyond = claim_row(CLP_CLAIM, -m + 1e-4, m + 1e-4)
    assert (inside["verdict"], beyond["verdict"]) == (EQUIVALENT, INCONCLUSIVE)
    said_inside, said_beyond = C.claim_sentence(inside), C.claim_sentence(beyond)
    assert f"inside +/-{m:.4f}" in said_inside and "is ruled out" in said_inside
    assert "is ruled out" not in said_beyond and "too wide" in said_beyond
    assert f"+/-{m:.4f}" in said_beyond
    # the claim has a paper step, so the size named is the paper's, not one nDCG point
    assert "the paper's step" in said_inside and "one nDCG point" not in said_inside


def test_claim_sentence_names_one_ndcg_point_where_the_paper_made_no_step():
    row = claim_row(C.CLP_BEATS_GIST, -0.005, 0.005)
    assert row["margin"] == SMALLEST_EFFECT and row["verdict"] == EQUIVALENT
    said = C.claim_sentence(row)
    assert "one nDCG point" in said and f"+/-{SMALLEST_EFFECT:.4f}" in said
    assert "paper's own step" not in said  # no step: nothing to rule out


def test_claim_sentence_interval_off_zero_but_not_after_holm_is_not_read_as_held():
    row = claim_row(CLP_CLAIM, 0.001, 0.03, p_holm=0.2)
    assert row["verdict"] == INCONCLUSIVE
    said = C.claim_sentence(row)
    assert f": {INCONCLUSIVE}." in said and f": {HELD}." not in said
    assert "excludes zero" in said and "Holm" in said
    assert "too wide" not in said  # it is not too wide: Holm held it back


def test_claim_sentence_edge_words_follow_edge_band():
    near = claim_row(CLP_CLAIM, EDGE_BAND / 2, 0.03)
    far = claim_row(CLP_CLAIM, EDGE_BAND * 1.5, 0.03)
    assert near["at the edge"] and not far["at the edge"]
    said_near, said_far = C.claim_sentence(near), C.claim_sentence(far)
    assert f"at the edge: {EDGE_BAND / 2:.4f} from reading otherwise" in said_near
    assert "at the edge" not in said_far
    assert f"It is {EDGE_BAND * 1.5:.4f} from reading otherwise" in said_far


def test_claim_sentence_paper_step_ruled_out_only_when_the_interval_excludes_it():
    step = claimed_difference(CLP_CLAIM.better, CLP_CLAIM.worse)
    assert step is not None
    covering = claim_row(CLP_CLAIM, step - 0.001, step + 0.001)
    missing = claim_row(CLP_CLAIM, step + 0.001, step + 0.02)
    said_cover, said_miss = C.claim_sentence(covering), C.claim_sentence(missing)
    assert f"{step:+.4f}" in said_cover and "does not rule it out" in said_cover
    assert said_miss.endswith("rules it out.") and "does not rule" not in said_miss
    # named with its setting and its metric
    assert "MIRACL" in said_miss and "nDCG@5)" in said_miss


def test_claim_sentence_names_metric_setting_seeds_and_the_declared_seed_term():
    row = claim_row(CLP_CLAIM, 0.02, 0.04, metric="ndcg_cut_10")
    said = C.claim_sentence(row, spread=0.003, setting="all-MiniLM-L6-v2 on SQuADShifts reddit")
    assert said.startswith(f"**{CLP_CLAIM.name}** (nDCG@10, all-MiniLM-L6-v2 on SQuADShifts "
                           "reddit)")
    assert "407 test passages and 2 seeds" in said and "seed-to-seed sd is 0.0030" in said
    one = claim_row(CLP_CLAIM, 0.02, 0.04, seeds=1, seed_term="declared")
    said_one = C.claim_sentence(one)
    assert "1 seed," in said_one and "seed component is declared" in said_one
    assert "seed by seed" not in said_one


def test_claim_sentence_one_seed_without_a_seed_term_reads_no_verdict():
    row = claim_row(CLP_CLAIM, 0.02, 0.04, seeds=1, seed_term="none")
    assert row["verdict"] == NO_VERDICT
    said = C.claim_sentence(row)
    assert "no verdict is read" in said
    assert f": {HELD}" not in said and "from reading otherwise" not in said


def test_summary_line_names_metric_verdict_interval_edge_and_paper_step():
    step = claimed_difference(CLP_CLAIM.better, CLP_CLAIM.worse)
    near = claim_row(CLP_CLAIM, EDGE_BAND / 2, step + 0.001)
    far = claim_row(CLP_CLAIM, step + 0.003, step + 0.02)
    said_near, said_far = C.summary_line(near), C.summary_line(far)
    assert said_near.startswith(f"{CLP_CLAIM.name}: {HELD} (nDCG@5 ")
    assert ", at the edge" in said_near and ", at the edge" not in said_far
    assert f"the paper's step, {step:+.4f}" in said_far
    assert said_far.endswith("is ruled out.") and said_near.endswith("is not ruled out.")


def test_summary_line_reversal_names_the_winner():
    said = C.summary_line(claim_row(CLP_CLAIM, -0.04, -0.02))
    assert REVERSED in said
    assert names_winner(said, CLP_CLAIM.worse, CLP_CLAIM.better)


def test_claim_sentences_reads_every_row_of_a_table():
    table = table_of(claim_row(CLP_CLAIM, 0.02, 0.04), claim_row(C.RANDOM_HURTS, -0.08, -0.06))
    said = C.claim_sentences(table)
    assert len(said) == 2 and f": {HELD}." in said[0] and f": {REVERSED}." in said[1]
    assert names_winner(said[1], C.RANDOM_HURTS.worse, C.RANDOM_HURTS.better)


def test_power_sentence_detectable_at_the_mde_boundary():
    rows = table_of(claim_row(C.ANCE_BEATS_RANDOM, 0.0, 0.02),
                    claim_row(CLP_CLAIM, 0.0, 0.02), claim_row(C.CLP_BEATS_GIST, 0.0, 0.02))
    steps = rows["paper claimed"].abs()
    rows.loc[0, "MDE (80% power)"] = steps[0] - 1e-4  # just detectable
    rows.loc[1, "MDE (80% power)"] = steps[1] + 1e-4  # just not
    said = C.power_sentence(C.power_table(rows), setting="MiniLM on reddit")
    can, cannot = said.split("It could not detect one for ")
    assert C.ANCE_BEATS_RANDOM.name in can and C.ANCE_BEATS_RANDOM.name not in cannot
    assert CLP_CLAIM.name in cannot and CLP_CLAIM.name not in can
    assert C.CLP_BEATS_GIST.name not in said  # the paper made no such step
    assert "With 2 seeds and 407 test passages (MiniLM on reddit), on nDCG@5" in said
    assert "No claim ran here" in C.power_sentence(C.power_table(rows.iloc[0:0]))


def test_power_sentence_none_detectable_says_so():
    rows = table_of(claim_row(CLP_CLAIM, 0.0, 0.02, seeds=1, seed_term="declared"))
    rows["MDE (80% power)"] = 1.0
    said = C.power_sentence(C.power_table(rows))
    assert "With 1 seed and" in said and "for none of its claims" in said
    assert f"It could not detect one for {CLP_CLAIM.name}" in said


def test_framing_sentence_numbers_come_from_the_profiles():
    study = P.get_profile("cpu").study
    said = C.framing_sentence()
    assert C.MODEL_NAMES.get(study.base.model, study.base.model) in said
    assert f"SQuADShifts {', '.join(study.splits)} with {study.base.train_queries} training " \
           f"queries per run and {len(study.seeds)} seeds" in said
    scale = len(P.get_profile("extras").study.seeds_of(C.SCALE_CLP))
    assert f"({scale} seeds, `make study-extras`)" in said
    assert "It does not test the paper's own model" in said


def test_scale_reading_holds_only_when_the_verdicts_agree():
    paper = table_of(claim_row(CLP_CLAIM, 0.02, 0.04))
    same = table_of(claim_row(C.SCALE_CLP_BEATS_INFONCE, 0.01, 0.03))
    other = table_of(claim_row(C.SCALE_CLP_BEATS_INFONCE, -0.005, 0.005, seeds=1,
                               seed_term="declared"))
    (said_same,) = C.scale_reading(same, paper)
    (said_other,) = C.scale_reading(other, paper)
    assert said_same.endswith("holds at scale.") and "2 seeds" in said_same
    assert f"{HELD} at the budget, {HELD} on every training query" in said_same
    assert said_other.endswith("changes with scale.")
    assert f"{EQUIVALENT} on every training query" in said_other
    assert "1 seed, seed component declared" in said_other
    assert C.scale_reading(same.iloc[0:0], paper) == []


def two_by_two(full: tuple[float, float], intermediate: tuple[float, float],
               interaction: tuple[float, float]) -> pd.DataFrame:
    return table_of(claim_row(C.POLICY_AT_FULL_RATE, *full),
                    claim_row(C.POLICY_AT_INTERMEDIATE_RATE, *intermediate),
                    claim_row(C.INTERACTION, *interaction))


def test_two_by_two_reading_verdict_words():
    shrinks = C.two_by_two_reading(two_by_two((0.02, 0.06), (0.0, 0.01), (-0.05, -0.01)))
    assert f"({REVERSED}). The policy's lead shrinks at intermediate's rate." in shrinks
    flat = C.two_by_two_reading(two_by_two((0.02, 0.04), (0.02, 0.04), (-0.004, 0.004)))
    assert "does not depend on the rate" in flat
    wide = C.two_by_two_reading(two_by_two((0.02, 0.04), (0.02, 0.04), (-0.02, 0.04)))
    assert "cannot say whether" in wide
    assert C.two_by_two_reading(table_of(claim_row(CLP_CLAIM, 0.0, 0.1))) is None


def test_two_by_two_reading_held_interaction_without_a_crossover():
    said = C.two_by_two_reading(two_by_two((0.01, 0.03), (0.05, 0.08), (0.02, 0.06)))
    assert said.count(f"({HELD})") == 3
    assert "Which policy leads depends on the rate" not in said


def test_alternatives_sentence_lists_each_clp_claim_with_its_verdict_and_sign():
    controls = table_of(claim_row(C.CLP_BEATS_GIST, 0.02, 0.04),
                        claim_row(C.CLP_BEATS_MNRL, -0.04, -0.02),
                        claim_row(C.LEARNED_GATE, 0.02, 0.04))
    said = C.alternatives_sentence(controls)
    assert f"{C.CLP_BEATS_GIST.name}: {HELD} (+0.0300)" in said
    assert f"{C.CLP_BEATS_MNRL.name}: {REVERSED} (-0.0300)" in said
    assert C.LEARNED_GATE.name not in said
    assert C.alternatives_sentence(controls.iloc[0:0]) is None


def test_alternatives_sentence_reversal_names_the_winner():
    said = C.alternatives_sentence(table_of(claim_row(C.CLP_BEATS_MNRL, -0.04, -0.02)))
    assert names_winner(said, C.CLP_BEATS_MNRL.worse, C.CLP_BEATS_MNRL.better)


def test_random_negatives_reading_direction_follows_the_verdict():
    # "random negatives hurt": better = zero-shot, worse = random; held means they hurt
    hurts = table_of(claim_row(C.RANDOM_HURTS, 0.02, 0.04))
    helps = table_of(claim_row(C.RANDOM_HURTS, -0.04, -0.02))
    recipe_helps = table_of(claim_row(C.RECIPE_RANDOM_HURTS, -0.05, -0.01))
    said = C.random_negatives_reading(hurts, recipe_helps, {})
    assert "random negatives hurt against zero-shot" in said and "they help" in said
    assert "cannot be the whole reason" not in said
    both = C.random_negatives_reading(helps, recipe_helps, {"the study's rows": (8000, 600.0, 2)})
    assert "random negatives help against zero-shot" in both
    assert "cannot be the whole reason" in both
    assert "the study's rows saw 8,000 training queries in 600 s on 2 threads" in both
    none = C.random_negatives_reading(table_of(claim_row(C.RANDOM_HURTS, -0.004, 0.004)),
                                      recipe_helps.iloc[0:0], {})
    assert "change nothing that matters" in none and "has not run here" in none


def test_claim_with_controls_names_each_control_or_its_command():
    paper = table_of(claim_row(CLP_CLAIM, 0.02, 0.04))
    controls = table_of(claim_row(C.LAMBDA_05, -0.04, -0.02))
    (line,) = C.claim_with_controls(paper, controls)
    assert line.startswith(f"- **{CLP_CLAIM.name}**: {HELD} at the budget (+0.0300")
    assert f"Control *{C.LAMBDA_05.name}*: {REVERSED} (-0.0300" in line
    assert f"Control *{C.CLP_BEATS_GIST.name}*: not run here (`make study-extras`)" in line


# --------------------------------------------------------------------------- forgetting


def forgetting(*intervals: tuple[float, float]) -> pd.DataFrame:
    """A ``forgetting_table`` (``figures/04_forgetting.csv``'s columns) with one zero-shot row
    and one fine-tuned row per interval, verdicts from ``stats.verdict``."""
    rows = [{"split": "reddit", "row": P.ZERO_SHOT, "seeds": 1, "ndcg_cut_10 mean": 0.88,
             "ndcg_cut_10 sd": np.nan, "ndcg_cut_5 mean": 0.87, "delta": np.nan,
             "95% CI low": np.nan, "95% CI high": np.nan, "p Holm": np.nan, "verdict": np.nan,
             "seed deltas": np.nan}]
    for i, (low, high) in enumerate(intervals):
        p_holm = REJECTS if (low > 0 or high < 0) else KEEPS
        delta = (low + high) / 2
        rows.append({"split": "reddit", "row": P.PAPER_ROWS[1 + i], "seeds": 2,
                     "ndcg_cut_10 mean": 0.88 + delta, "ndcg_cut_10 sd": 0.002,
                     "ndcg_cut_5 mean": 0.87 + delta, "delta": delta, "95% CI low": low,
                     "95% CI high": high, "p Holm": p_holm,
                     "verdict": verdict(low, high, p_holm), "seed deltas": f"{delta:+.4f}"})
    return pd.DataFrame(rows).set_index(["split", "row"])


def test_forgetting_sentence_a_resolved_gain_is_not_forgetting():
    said = R.forgetting_sentence(forgetting((0.005, 0.025), (-0.01, 0.02)))
    assert "2 fine-tuned rows score +0.0050 to +0.0150 against zero-shot" in said
    assert "1 of them resolved above it, 0 below it" in said
    assert "No forgetting at this budget" in said and "a gain" in said
    assert "forget:" not in said


def test_forgetting_sentence_a_resolved_loss_is_forgetting():
    said = R.forgetting_sentence(forgetting((0.005, 0.025), (-0.03, -0.001)))
    assert "1 of them resolved above it, 1 below it" in said
    assert "1 row(s) forget" in said and "No forgetting" not in said


def test_forgetting_sentence_nothing_resolved_says_neither():
    said = R.forgetting_sentence(forgetting((-0.001, 0.02), (-0.02, 0.001)))
    assert "0 of them resolved above it, 0 below it" in said
    assert "No forgetting is resolved at this budget, and no gain either" in said
    assert R.forgetting_sentence(forgetting()) is None


# --------------------------------------------------------------------------- hybrids


def hybrid_tables(metric: str = "ndcg_cut_10") -> tuple[pd.DataFrame, pd.DataFrame]:
    """A ``hybrid_table`` pair: the convex hybrid wins on validation, RRF on test (so a choice
    made on test would pick the other one), and BM25 beats every dense row on test."""
    table = pd.DataFrame(
        [("BM25", "sparse", 1, np.nan, 0.50, 0.42, np.nan),
         (f"{P.ZERO_SHOT} (dense)", "dense", 1, np.nan, 0.45, 0.30, np.nan),
         (f"{P.CLP} (dense)", "dense", 2, np.nan, 0.40, 0.35, 0.01),
         (f"{P.CLP} + BM25, RRF", "RRF", 2, np.nan, 0.52, 0.47, 0.01),
         (f"{P.CLP} + BM25, convex", "convex", 2, 0.4, 0.55, 0.44, 0.01)],
        columns=["system", "kind", "seeds", "weight", f"{metric} validation",
                 f"{metric} mean", f"{metric} sd"]).set_index("system")
    sig = pd.DataFrame([
        {"system": f"{P.CLP} + BM25, convex", "reference": "BM25", "delta": 0.02,
         "95% CI low": 0.005, "95% CI high": 0.035, "p Holm": 0.01, "verdict": HELD},
        {"system": f"{P.CLP} + BM25, RRF", "reference": "BM25", "delta": 0.05,
         "95% CI low": 0.03, "95% CI high": 0.07, "p Holm": 0.001, "verdict": HELD}])
    return table, sig


def test_best_hybrid_sentence_chooses_on_validation_and_reports_test():
    table, sig = hybrid_tables()
    said = H.best_hybrid_sentence("reddit", table, sig)
    assert f"is {P.CLP} + BM25, convex;" in said  # the validation winner, not test's RRF
    assert "scores 0.4400 against BM25's 0.4200 (difference +0.0200" in said
    assert "95% CI +0.0050 to +0.0350, Holm p 0.010: held" in said


def test_dense_vs_bm25_sentence_chooses_on_validation_and_gives_the_difference():
    table, _ = hybrid_tables()
    said = H.dense_vs_bm25_sentence(table)
    top = f"{P.ZERO_SHOT} (dense)"  # best dense row on validation; CLP's is better on test
    assert f"BM25 (0.4200) against the dense row chosen on validation queries ({top}, 0.3000)" \
        in said
    assert f"{0.30 - 0.42:+.4f}" in said


def test_dense_vs_bm25_sentence_says_which_leads():
    table, _ = hybrid_tables()
    said = H.dense_vs_bm25_sentence(table)
    assert names_winner(said, "BM25", f"{P.ZERO_SHOT} (dense)") or "dense minus BM25" in said


# --------------------------------------------------------------------------- geometry


def gap(label: str, est: float, low: float, high: float, word: str) -> dict:
    """A ``harm_gaps`` row (``geometry.GAP_COLUMNS``)."""
    claim = {c.label: c.claim for c in G.harm_family()}[label]
    return {"comparison": label, "claim": claim, "own minus matched control": est,
            "unadjusted": est, "95% CI low": low, "95% CI high": high, "p": 0.01,
            "p Holm": 0.04 if word in (HELD, REVERSED) else 0.6, "verdict": word,
            "seeds": 2, "seed values": f"{est - 0.001:+.4f}, {est + 0.001:+.4f}", "strata": 3}


REPAIR = f"{P.CLP} - {P.ANCE}"


def test_repair_reading_each_verdict_and_the_unadjusted_fallback():
    words = {HELD: "a measurable repair", REVERSED: "more harm than InfoNCE",
             EQUIVALENT: "a repair too small to matter", INCONCLUSIVE: "no measurable repair"}
    for word, reading in words.items():
        assert G.repair_reading(pd.Series(gap(REPAIR, 0.0, -0.01, 0.01, word))).startswith(
            reading)
    # an older table without a verdict: read from the interval, and said so
    for low, high, reading in ((1e-4, 0.02, "a measurable repair"),
                               (0.0, 0.02, "no measurable repair"),
                               (-0.02, -1e-4, "more harm than InfoNCE")):
        said = G.repair_reading(pd.Series({"95% CI low": low, "95% CI high": high}))
        assert said == f"{reading} (unadjusted interval)"


def test_repair_reading_one_seed_is_no_verdict():
    said = G.repair_reading(pd.Series(gap(REPAIR, 0.02, 0.01, 0.03, G.ONE_SEED)))
    assert "measurable repair" not in said and "no verdict" in said


def test_repair_reading_not_run_says_so():
    row = pd.Series(gap(REPAIR, np.nan, np.nan, np.nan, G.NOT_RUN))
    assert "not run" in G.repair_reading(row)


def harm_table(words: dict[str, str]) -> pd.DataFrame:
    """Every declared row of ``harm_family`` with the given verdicts (default: not run)."""
    rows = []
    for c in G.harm_family():
        word = words.get(c.label, G.NOT_RUN)
        est = {HELD: -0.03, REVERSED: 0.03}.get(word, 0.001) * c.sign * -1
        if word == G.NOT_RUN:
            rows.append({**gap(c.label, np.nan, np.nan, np.nan, word), "p Holm": np.nan})
        else:
            rows.append(gap(c.label, est, est - 0.01, est + 0.01, word))
    return pd.DataFrame(rows).set_index("comparison")


def test_harm_sentences_verdict_words_and_the_not_run_rows():
    words = {P.ANCE: HELD, P.CLP: INCONCLUSIVE, REPAIR: EQUIVALENT, P.RANDOM: "descriptive",
             f"{P.ANCE} - {P.RANDOM}": REVERSED, f"{P.CLP_LAMBDA_05} - {P.ANCE}": G.ONE_SEED}
    gaps = harm_table(words)
    lines = dict(zip(gaps.index, G.harm_sentences(gaps), strict=True))
    claim = gaps["claim"]
    assert lines[P.ANCE].startswith(f"- {claim[P.ANCE]}: holds. {P.ANCE}: -0.0300")
    assert ", Holm p 0.040;" in lines[P.ANCE]
    assert lines[P.CLP].startswith(f"- {claim[P.CLP]}: not shown, the interval is too wide")
    assert f"ruled out, the interval lies inside +/- {SMALLEST_EFFECT}" in lines[REPAIR]
    assert "reversed, the interval lies on the other side" in lines[f"{P.ANCE} - {P.RANDOM}"]
    assert "no verdict, one seed" in lines[f"{P.CLP_LAMBDA_05} - {P.ANCE}"]
    assert "a descriptive gap of" in lines[P.RANDOM]
    assert lines[P.CLP_LAMBDA_05] == f"- {claim[P.CLP_LAMBDA_05]}: not run in this profile."


def test_harm_sentences_reads_a_not_run_row_from_the_committed_family():
    gaps = harm_table({P.ANCE: HELD})
    committed = harm_table({P.CLP_LAMBDA_05: REVERSED})
    lines = dict(zip(gaps.index, G.harm_sentences(gaps, committed), strict=True))
    assert "reversed, the interval lies on the other side in `make study-extras`' own family" \
        in lines[P.CLP_LAMBDA_05]
    assert lines[P.CLP].endswith("not run in this profile.")


def similarities(excess: float, seeds: int = 2, records: int = 40, glob: float = 0.02,
                 noise: float = 0.01) -> pd.DataFrame:
    """``seed_similarities``-shaped cosines: CLP's ``neg_own`` moves by the global shift plus
    ``excess`` against zero-shot, its other cosines by the global shift alone."""
    rng = np.random.default_rng(0)
    rows = []
    for s in range(seeds):
        for q in range(records):
            base = rng.uniform(0.2, 0.5, 4)
            rows.append((P.ZERO_SHOT, s, f"q{q}", *base))
            shift = glob + rng.normal(0, noise, 4)
            moved = base + shift
            moved[2] += excess + rng.normal(0, noise)
            moved[3] = base[3] + glob + rng.normal(0, noise)
            rows.append((P.CLP, s, f"q{q}", *moved))
    return pd.DataFrame(rows, columns=["model", "seed", "qid", *G.COSINES, "q_all"])


@pytest.mark.parametrize(("excess", "word"), [(0.05, "above the global shift"),
                                              (-0.05, "below the global shift"),
                                              (0.0, "not distinguishable from the global "
                                                    "shift")])
def test_shift_sentences_excess_word_follows_its_interval(excess, word):
    shifts = G.cosine_shifts(similarities(excess), [(P.CLP, P.ZERO_SHOT)])
    row = shifts.loc[(f"{P.CLP} - {P.ZERO_SHOT}", "neg_own")]
    low, high = row["excess CI low"], row["excess CI high"]
    assert (low > 0, high < 0) == (excess > 0, excess < 0)  # the interval decides the word
    (line,) = G.shift_sentences(shifts, cosines=("neg_own",))
    assert line.startswith(f"- {P.CLP} - {P.ZERO_SHOT}, {G.COSINE_NAMES['neg_own']}: "
                           f"{row['shift']:+.4f}")
    assert f"(95% CI {low:+.4f} to {high:+.4f}), is {word}." in line
    assert f"global shift of {row['global shift']:+.4f}" in line
    assert len(G.shift_sentences(shifts)) == len(G.COSINES)


def test_shift_sentences_one_seed_reads_no_verdict():
    shifts = G.cosine_shifts(similarities(0.05, seeds=1), [(P.CLP, P.ZERO_SHOT)])
    (line,) = G.shift_sentences(shifts, cosines=("neg_own",))
    assert line.endswith(f"is {G.ONE_SEED}.") and "above" not in line


def test_what_survives_sorts_claims_by_verdict():
    words = {P.ANCE: HELD, P.CLP: INCONCLUSIVE, REPAIR: EQUIVALENT,
             f"{P.ANCE} - {P.RANDOM}": REVERSED, f"{P.CLP_LAMBDA_05} - {P.CLP}": G.ONE_SEED,
             P.RANDOM: "descriptive"}
    gaps = harm_table(words)
    claim = gaps["claim"]
    shifts = G.cosine_shifts(similarities(0.05), [(P.CLP, P.ZERO_SHOT)])
    lines = G.what_survives(gaps, shifts)
    assert lines[0] == ("What survives the zero-shot strata, the placebo and Holm's adjustment: "
                        f"{claim[P.ANCE]}.")
    assert f"Reversed: {claim[f'{P.ANCE} - {P.RANDOM}']}." in lines
    assert f"Ruled out as smaller than the smallest effect that matters: {claim[REPAIR]}." \
        in lines
    assert f"Not shown (an interval too wide): {claim[P.CLP]}." in lines
    assert f"No verdict with one seed: {claim[f'{P.CLP_LAMBDA_05} - {P.CLP}']}." in lines
    assert f"- {claim[P.CLP_LAMBDA_05]}: not run in this profile." in lines
    assert not any(claim[P.RANDOM] in line for line in lines)  # descriptive: no verdict
    excess = shifts.loc[(f"{P.CLP} - {P.ZERO_SHOT}", "neg_own"), "excess over global"]
    assert lines[-1].endswith(f"{P.CLP} - {P.ZERO_SHOT}: {excess:+.4f}, above the global "
                              "shift.")
    none = G.what_survives(harm_table({P.ANCE: INCONCLUSIVE}), shifts)
    assert none[0].endswith("none of the harm family's claims.")


# --------------------------------------------------------------------------- multilingual


def test_size_sentence_steps_sorted_by_the_half_width():
    rng = np.random.default_rng(0)
    passages = 100
    clusters = {f"q{i}": f"p{i // 2}" for i in range(2 * passages)}
    steps = {"ANCE negatives over zero-shot": claimed_difference(P.ANCE, P.ZERO_SHOT, "hi"),
             "ANCE + CLP over ANCE negatives": claimed_difference(P.CLP, P.ANCE, "hi")}
    small, large = sorted(steps, key=lambda k: abs(steps[k]))
    for passage_sd in (0.0, 0.05, 0.5):
        effect = rng.normal(0, passage_sd, passages)
        scores = {q: float(np.clip(0.5 + effect[int(c[1:])], 0, 1)) for q, c in clusters.items()}
        said = M.size_sentence("hindi", scores, clusters)
        assert said.startswith("hindi: 200 test questions on 100 passages")
        qids = sorted(scores)
        ids = pd.factorize(np.array([clusters[q] for q in qids]))[0]
        reps = bootstrap_replicates(np.array([[scores[q] for q in qids]]), ids)
        half = (np.quantile(reps, 0.975) - np.quantile(reps, 0.025)) / 2
        assert f"known to ±{half:.4f}" in said
        below_part = said.split("At least that large")[0]
        above_part = said.split("At least that large")[1] if "At least" in said else ""
        for name, step in steps.items():
            side = below_part if abs(step) < half else above_part
            assert f"{name} ({step:+.4f})" in side, (passage_sd, half, name)
        if abs(steps[small]) < half <= abs(steps[large]):
            assert "'inconclusive' is the expected verdict" in said and above_part
    assert passage_sd == 0.5 and "At least that large" not in said  # both steps below


# --------------------------------------------------------------------------- time estimates


def fake_estimate(monkeypatch, module, seconds: float) -> None:
    monkeypatch.setattr(module, "estimate_cells",
                        lambda configs: Estimate(seconds, 120 * len(configs), "float32"))


def plan_cells() -> list[P.Cell]:
    return [P.Cell(P.CLP, "reddit", s, None) for s in (0, 1)] + [P.Cell(P.ANCE, "reddit", 0,
                                                                        None)]


def test_training_plan_states_runs_rows_seeds_steps_and_minutes(monkeypatch):
    fake_estimate(monkeypatch, S, 36 * 60)
    said = S.training_plan(plan_cells(), smaller=S.SMALLER)
    assert said.startswith(f"About to train 3 run(s): 2 row(s) ({P.CLP}; {P.ANCE}), seed(s) "
                           "[0, 1], 360 optimizer steps in all, float32; estimated 36 min")
    assert said.endswith(f"{S.SMALLER}.")
    assert "within" not in said and "budget" not in said  # promises no budget it does not check
    fake_estimate(monkeypatch, S, 36 * 60 + 31)
    assert "estimated 37 min" in S.training_plan(plan_cells())


def test_training_plan_under_a_minute_is_not_zero_minutes(monkeypatch):
    fake_estimate(monkeypatch, S, 20)
    assert "estimated 0 min" not in S.training_plan(plan_cells())


def test_duration_under_a_minute_and_just_over(monkeypatch):
    monkeypatch.setattr(X, "is_finished", lambda config: False)
    key = next(e.key for e in X.EXERCISES if e.config is not None)
    fake_estimate(monkeypatch, X, 59.9)
    assert X.duration(key, "cpu").startswith("Takes under a minute here (120 optimizer steps")
    fake_estimate(monkeypatch, X, 60.0)
    assert X.duration(key, "cpu").startswith("Takes about 1 min here")
    fake_estimate(monkeypatch, X, 36 * 60)
    said = X.duration(key, "cpu")
    assert said.startswith("Takes about 36 min here") and "float32" in said
    monkeypatch.setattr(X, "is_finished", lambda config: True)
    assert "already trained" in X.duration(key, "cpu")
    untrained = next(e.key for e in X.EXERCISES if e.config is None)
    assert X.duration(untrained, "cpu").startswith("Takes seconds here")


def test_every_sentence_function_of_the_brief_is_covered():
    """The list this file covers, against the package's sentence-writing functions."""
    covered = {C.claim_sentence, C.claim_sentences, C.summary_line, C.power_sentence,
               C.framing_sentence, C.scale_reading, C.two_by_two_reading,
               C.alternatives_sentence, C.random_negatives_reading, C.claim_with_controls,
               R.forgetting_sentence, H.best_hybrid_sentence, H.dense_vs_bm25_sentence,
               G.repair_reading, G.what_survives, G.harm_sentences, G.shift_sentences,
               M.size_sentence, S.training_plan, X.duration}
    pattern = re.compile(r"(sentences?|reading)$|^(summary_line|training_plan|what_survives)$")
    found = {getattr(mod, n) for mod in (C, R, H, G, M, S) for n in dir(mod)
             if pattern.search(n) and callable(getattr(mod, n)) and not n.startswith("_")
             and getattr(getattr(mod, n), "__module__", "") == mod.__name__}
    assert found <= covered, sorted(f.__name__ for f in found - covered)
