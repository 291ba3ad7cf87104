"""The reproduction report flags a drifted number and a changed verdict, and nothing else."""

from __future__ import annotations

import json

import pandas as pd

from clp_utils.machinery import report


def _write(folder, table2, claims, seeds=2, precision="bf16"):
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(table2).to_csv(folder / "04_table2.csv", index=False)
    pd.DataFrame(claims).to_csv(folder / "04_claims.csv", index=False)
    (folder / "run.json").write_text(json.dumps({"machine": {
        "seeds": {"seeds": seeds}, "precision": {"precision": precision}}}))


TABLE2 = {"split": ["reddit"] * 3, "row": ["zero-shot", "ANCE negatives", "ANCE + CLP"],
          "seeds": [1, 2, 2], "ndcg_cut_10 mean": [0.4317, 0.5100, 0.5103],
          "ndcg_cut_10 sd": [float("nan"), 0.002, 0.002]}
CLAIMS = {"claim": ["CLP beats InfoNCE", "ANCE beats random", "zero-shot (no test)",
                    "MoE beats intermediate"],
          "delta": [0.0003, 0.0081, 0.0, 0.030], "95% CI low": [-0.0034, -0.0010, 0.0, 0.020],
          "95% CI high": [0.0039, 0.0172, 0.0, 0.040],
          "verdict": ["equivalent", "inconclusive", float("nan"), "held"]}


def test_a_drifted_number_and_a_changed_verdict_are_flagged(tmp_path):
    _write(tmp_path / "committed", TABLE2, CLAIMS)
    drifted = {**TABLE2, "ndcg_cut_10 mean": [0.4317, 0.5300, 0.5108]}  # ANCE +0.02, CLP +0.0005
    # ANCE beats random: its committed interval was 0.0010 from excluding zero (at the edge)
    # and the two intervals overlap: an expected change. MoE: far from its edge, and the
    # new interval lies on the other side of zero: unexpected.
    changed = {**CLAIMS, "verdict": ["equivalent", "held", float("nan"), "reversed"],
               "delta": [0.0004, 0.0150, 0.0, -0.030],
               "95% CI low": [-0.0034, 0.0040, 0.0, -0.040],
               "95% CI high": [0.0039, 0.0260, 0.0, -0.020]}
    _write(tmp_path / "now", drifted, changed)
    rep = report.compare(tmp_path / "committed", tmp_path / "now",
                         report.read_record(tmp_path / "committed"),
                         report.read_record(tmp_path / "now"))
    status = rep.set_index(["table", "row"])["status"]
    assert status[("04_table2", "reddit / ANCE negatives")] == "DIFF"  # beyond 3 sd / sqrt(n)
    assert status[("04_table2", "reddit / ANCE + CLP")] == "OK"
    assert status[("04_table2", "reddit / zero-shot")] == "OK"
    assert status[("04_claims", "ANCE beats random / ndcg_cut_10")] == "VERDICT CHANGED (expected)"
    assert status[("04_claims", "MoE beats intermediate / ndcg_cut_10")] == (
        "VERDICT CHANGED (unexpected)")
    assert status[("04_claims", "CLP beats InfoNCE / ndcg_cut_10")] == "OK"
    # no verdict on either side (a table written before claims named their metric: nDCG@10)
    assert status[("04_claims", "zero-shot (no test) / ndcg_cut_10")] == "OK"
    text = report.summary(rep)
    assert "1 DIFF" in text and "1 VERDICT CHANGED (expected)" in text
    assert "1 VERDICT CHANGED (unexpected)" in text and "ANCE negatives" in text


def test_a_new_trainer_or_new_statistics_is_named_as_a_cause(tmp_path):
    _write(tmp_path / "committed", TABLE2, CLAIMS)
    _write(tmp_path / "now", TABLE2, CLAIMS)
    record = json.loads((tmp_path / "now" / "run.json").read_text())
    record["machine"].update(trainer="SentenceTransformerTrainer", statistics="Student-t seeds")
    (tmp_path / "now" / "run.json").write_text(json.dumps(record))
    rep = report.compare(tmp_path / "committed", tmp_path / "now",
                         report.read_record(tmp_path / "committed"),
                         report.read_record(tmp_path / "now"))
    method = set(rep["method differs in"])
    assert method == {f"trainer: {report.EARLIER_TRAINER} -> SentenceTransformerTrainer; "
                      f"statistics: {report.EARLIER_STATISTICS} -> Student-t seeds"}
    assert "The method changed since the committed run" in report.summary(rep)


def test_a_machine_of_another_kind_widens_the_tolerance_and_says_why(tmp_path):
    _write(tmp_path / "committed", TABLE2, CLAIMS)
    one_seed = {**TABLE2, "seeds": [1, 1, 1], "ndcg_cut_10 sd": [float("nan")] * 3,
                "ndcg_cut_10 mean": [0.4340, 0.5140, 0.5103]}
    _write(tmp_path / "now", one_seed, CLAIMS, seeds=1, precision="float32")
    rep = report.compare(tmp_path / "committed", tmp_path / "now",
                         report.read_record(tmp_path / "committed"),
                         report.read_record(tmp_path / "now"))
    assert set(rep["machine differs in"]) == {"seeds, precision"}
    row = rep.set_index("row").loc["reddit / ANCE negatives"]
    # one seed now: the committed sd stands in for it; float32 adds the precision floor
    expected = report.Z * (0.002 ** 2 / 2 + 0.002 ** 2 / 1) ** 0.5 + report.FLOOR \
        + report.PRECISION_FLOOR
    assert abs(row["tolerance"] - expected) < 1e-12 and row["status"] == "OK"
    assert "seeds, precision" in report.summary(rep)
    path = report.write(rep, tmp_path / "out")
    assert path.read_text().startswith("# Reproduction report")


def test_a_data_change_is_named_on_the_rows_it_touches(tmp_path):
    then_data = {"squadshifts/reddit": {"source": "bigbench-1.0.0.tar.gz:reddit_v1.0.json",
                                        "source_sha256": "db57c9269e4965fd",
                                        "train_queries": 7781, "test_queries": 1986},
                 "squadshifts/new_wiki": {"source": "data/sources/new_wiki_v1.0.json",
                                          "source_sha256": "1d50a0ca4cdab88d" + "0" * 48,
                                          "train_queries": 6322, "test_queries": 1616}}
    now_data = {**then_data, "squadshifts/reddit": {
        "source": "data/sources/reddit_v1.0.json", "source_sha256": "b4ac346dbf1816fd" + "1" * 48,
        "train_queries": 7808, "test_queries": 1995}}
    changes = report.data_changes(then_data, now_data)
    assert set(changes) == {"reddit"}  # new_wiki: same source (sha256 prefix), nothing to say
    assert "test queries 1,986 -> 1,995" in changes["reddit"]
    assert "train queries 7,781 -> 7,808" in changes["reddit"]
    assert report.data_changes(None, now_data) == {}
    _write(tmp_path / "committed", TABLE2 | {"split": ["reddit", "new_wiki", "reddit"]}, CLAIMS)
    _write(tmp_path / "now", TABLE2 | {"split": ["reddit", "new_wiki", "reddit"]}, CLAIMS)
    rep = report.compare(tmp_path / "committed", tmp_path / "now", {"data": then_data},
                         {"data": now_data})
    cause = rep.set_index("row")["data differs in"]
    assert cause["new_wiki / ANCE negatives"] == "nothing"  # its split's source is the same
    assert cause["reddit / zero-shot"].startswith("data: reddit source")
    assert cause["CLP beats InfoNCE / ndcg_cut_10"].startswith("data: reddit")  # read reddit
    assert "The data changed under some rows" in report.summary(rep)


def test_a_verdict_word_the_study_no_longer_uses_is_compared_not_raised_on(tmp_path):
    """A committed table from before the verdict words changed ("not resolved at this
    budget"): its edge cannot be judged, so only the new reading's edge decides."""
    old_word = "not resolved at this budget"
    _write(tmp_path / "committed", TABLE2, {**CLAIMS, "verdict": [
        old_word, old_word, float("nan"), "held"]})
    _write(tmp_path / "now", TABLE2, CLAIMS)
    rep = report.compare(tmp_path / "committed", tmp_path / "now",
                         report.read_record(tmp_path / "committed"),
                         report.read_record(tmp_path / "now"))
    status = rep.set_index(["table", "row"])["status"]
    # ANCE beats random now: inconclusive, its low bound 0.0010 from excluding zero: the edge
    assert status[("04_claims", "ANCE beats random / ndcg_cut_10")] == (
        "VERDICT CHANGED (expected)")
    # CLP beats InfoNCE now: equivalent, 0.0034 from its nearer bound crossing zero: no edge
    assert status[("04_claims", "CLP beats InfoNCE / ndcg_cut_10")] == (
        "VERDICT CHANGED (unexpected)")


def test_a_run_that_moves_nothing_keeps_the_report_that_explains_the_numbers(tmp_path):
    """Only a run that moved a number (or a first run) replaces the committed report."""
    _write(tmp_path / "committed", TABLE2, CLAIMS)
    _write(tmp_path / "now", TABLE2, CLAIMS)
    same = report.compare(tmp_path / "committed", tmp_path / "now",
                          report.read_record(tmp_path / "committed"),
                          report.read_record(tmp_path / "now"))
    assert len(same) and not report.moved(same)
    # within the tolerance (OK), but a number a reader sees has moved
    _write(tmp_path / "now", {**TABLE2, "ndcg_cut_10 mean": [0.4317, 0.5101, 0.5103]}, CLAIMS)
    within = report.compare(tmp_path / "committed", tmp_path / "now",
                            report.read_record(tmp_path / "committed"),
                            report.read_record(tmp_path / "now"))
    assert set(within["status"]) == {"OK"} and report.moved(within)
    assert report.moved(same.iloc[:0])  # a first run: nothing committed to compare with
