"""The reproduction report: every headline number ``make study`` regenerated, set against
the committed value, OK or DIFF, in the spirit of Anserini's regression matrix.

``snapshot`` copies the committed headline tables before the chapters run; ``compare`` then
lists, for every number, the committed value, the new one, their difference, a tolerance and
OK or DIFF, and every changed verdict. The tolerance of a mean is what seeds and precision
allow:

    tolerance = Z * sqrt(sd_committed^2 / n_committed + sd_now^2 / n_now) + floor

with each row's seed-to-seed sd (the committed one standing in for a single seed), ``Z`` = 3,
and ``FLOOR`` (plus ``PRECISION_FLOOR`` across precisions); a claim's difference gets the
half-width of its committed 95% interval. Each row names what differs between the two runs
(seeds, precision, trainer, statistics, data from ``catalog.data_record``), so a DIFF reads
against its cause. A changed verdict is "expected" when the two intervals overlap and either
reading was at the edge of its verdict (``stats.at_edge``), "unexpected" otherwise.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from clp_utils.plots import format_frame, read_table
from clp_utils.sources import SOURCES
from clp_utils.stats import SMALLEST_EFFECT, VERDICTS, at_edge, edge_distance

#: The headline tables compared: (file stem, index columns, value columns, verdict column,
#: the datasets its numbers come from; a row naming one of them in its key reads that one).
HEADLINES = [
    ("04_table2", ["split", "row"], ["ndcg_cut_10 mean"], None, ("reddit", "new_wiki")),
    ("04_claims", ["claim", "metric"], ["delta"], "verdict", ("reddit",)),
    ("04_forgetting", ["split", "row"], ["ndcg_cut_10 mean"], "verdict",
     ("reddit", "new_wiki")),
    ("04_hybrid_reddit", ["system"], ["ndcg_cut_10 mean"], None, ("reddit",)),
    ("06_multilingual", ["system"], ["ndcg_cut_10 mean"], None, ("hindi", "persian")),
    ("06_claims", ["claim", "metric"], ["delta"], "verdict", ("hindi",)),
    ("04_claims_controls", ["claim", "metric"], ["delta"], "verdict", ("reddit", "new_wiki")),
    ("04_claims_2x2", ["claim", "metric"], ["delta"], "verdict", ("reddit",)),
]
Z = 3.0
#: What a record written before records named them had trained with (the study's own loop,
#: replaced by SentenceTransformerTrainer in issue 28) and read verdicts with.
EARLIER_TRAINER = "the study's own training loop"
EARLIER_STATISTICS = "two-level bootstrap, one margin (0.01), nDCG@10"
FLOOR = 0.002
PRECISION_FLOOR = 0.005
REPORT = "reproduction.md"


@dataclass(frozen=True)
class Machine:
    """What a run's numbers depend on besides the code: seeds per row, precision, data
    (``{dataset: {source, source_sha256, train_queries, test_queries}}``)."""

    seeds: int | None
    precision: str | None
    data: dict | None = None
    trainer: str | None = None
    statistics: str | None = None

    @classmethod
    def of(cls, record: dict | None) -> Machine:
        """What ``record`` (a ``run.json``) says; an older record's trainer and statistics."""
        machine = (record or {}).get("machine", {})
        trainer = machine.get("trainer") or (EARLIER_TRAINER if record else None)
        statistics = machine.get("statistics") or (EARLIER_STATISTICS if record else None)
        return cls((machine.get("seeds") or {}).get("seeds"),
                   (machine.get("precision") or {}).get("precision"),
                   (record or {}).get("data"), trainer, statistics)


def _short(name: str) -> str:
    return name.removeprefix("squadshifts/")


def _same_source(a: str, b: str) -> bool:
    """Two recorded source checksums name the same file (an earlier record keeps a prefix)."""
    n = min(len(a), len(b), 16)
    return a[:n] == b[:n]


def stale_data(record: dict | None) -> dict[str, str]:
    """``{dataset: source it read}`` for every dataset a run's record says it read from
    another file than the one committed now (``sources.SOURCES``); empty when all are today's."""
    stale = {}
    for name, entry in ((record or {}).get("data") or {}).items():
        src = SOURCES.get(_short(name))
        if src is None or not _same_source(src.sha256, entry["source_sha256"]):
            stale[_short(name)] = entry["source"]
    return stale


def data_changes(then: dict | None, now: dict | None) -> dict[str, str]:
    """``{dataset: what changed}`` between two runs' data records (empty when either run has
    none, or nothing changed). Datasets are named without the ``squadshifts/`` prefix."""
    if not then or not now:
        return {}
    out = {}
    for name in sorted(set(then) | set(now)):
        a, b = then.get(name), now.get(name)
        if a is None or b is None:
            out[_short(name)] = "dataset " + ("added" if a is None else "absent now")
            continue
        if _same_source(a["source_sha256"], b["source_sha256"]):
            continue
        parts = [f"source {a['source']} -> {b['source']}"]
        for side in ("test_queries", "train_queries"):
            if a.get(side) != b.get(side):
                parts.append(f"{side.replace('_', ' ')} {a.get(side):,} -> {b.get(side):,}")
        out[_short(name)] = ", ".join(parts)
    return out


def snapshot(figures: Path, into: Path) -> Path:
    """Copy the committed headline tables (and ``run.json``) of ``figures`` to ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    for name in [f"{stem}.csv" for stem, *_ in HEADLINES] + ["run.json"]:
        if (figures / name).exists():
            shutil.copy2(figures / name, into / name)
    return into


#: The metric every claim was tested on before claims carried a ``metric`` column.
EARLIER_CLAIM_METRIC = "ndcg_cut_10"


def _table(path: Path, index: list[str]) -> pd.DataFrame | None:
    if not path.exists():
        return None
    df = read_table(path)
    if "metric" in index and "claim" in df.columns and "metric" not in df.columns:
        df["metric"] = EARLIER_CLAIM_METRIC
    keep = [c for c in index if c in df.columns]
    return df.set_index(keep) if keep else None


def _cell(df: pd.DataFrame, key, column: str, default: float) -> float:
    """``df.loc[key, column]``, or ``default`` where it is absent or NaN."""
    if column in df.columns and key in df.index and pd.notna(df.loc[key, column]):
        return float(df.loc[key, column])
    return default


def tolerance(then: pd.DataFrame, now: pd.DataFrame, key, column: str,
              precision_differs: bool) -> float:
    """The tolerance of one number (see the module docstring)."""
    floor = FLOOR + (PRECISION_FLOOR if precision_differs else 0.0)
    if column == "delta":
        if {"95% CI low", "95% CI high"} <= set(then.columns):
            return float(then.loc[key, "95% CI high"] - then.loc[key, "95% CI low"]) / 2 + floor
        return floor
    sd = column.replace(" mean", " sd")
    sd_then, sd_now = _cell(then, key, sd, math.nan), _cell(now, key, sd, math.nan)
    sd_then = sd_now if math.isnan(sd_then) else sd_then
    sd_now = sd_then if math.isnan(sd_now) else sd_now
    if math.isnan(sd_then):
        return floor  # a single run on both sides (zero-shot, BM25): deterministic
    n_then, n_now = int(_cell(then, key, "seeds", 1)), int(_cell(now, key, "seeds", 1))
    return Z * math.sqrt(sd_then ** 2 / n_then + sd_now ** 2 / n_now) + floor


def compare(committed: Path, figures: Path, then_record: dict | None = None,
            now_record: dict | None = None) -> pd.DataFrame:
    """One row per headline number present in both folders (see the module docstring)."""
    then_m, now_m = Machine.of(then_record), Machine.of(now_record)
    precision_differs = bool(then_m.precision and now_m.precision
                             and then_m.precision != now_m.precision)
    seeds_differ = bool(then_m.seeds and now_m.seeds and then_m.seeds != now_m.seeds)
    causes = ", ".join(c for c, on in (("seeds", seeds_differ), ("precision", precision_differs))
                       if on)
    method = "; ".join(f"{name}: {a} -> {b}" for name, a, b in (
        ("trainer", then_m.trainer, now_m.trainer),
        ("statistics", then_m.statistics, now_m.statistics)) if a and b and a != b)
    changes = data_changes(then_m.data, now_m.data)
    rows = []
    for stem, index, columns, verdict, datasets in HEADLINES:
        then = _table(committed / f"{stem}.csv", index)
        now = _table(figures / f"{stem}.csv", index)
        if then is None or now is None:
            continue
        for key in then.index.intersection(now.index):
            parts = key if isinstance(key, tuple) else (key,)
            # the data change behind a row: the datasets its key names, else its table's
            named = [d for d in datasets if d in parts] or datasets
            data = "; ".join(f"data: {d} {changes[d]}" for d in named if d in changes)
            for column in columns:
                if column not in then.columns or column not in now.columns:
                    continue
                a, b = float(then.loc[key, column]), float(now.loc[key, column])
                tol = tolerance(then, now, key, column, precision_differs)
                ok = abs(b - a) <= tol or (math.isnan(a) and math.isnan(b))
                row = {"table": stem, "row": " / ".join(map(str, parts)),
                       "number": column, "committed": a, "now": b, "difference": b - a,
                       "tolerance": tol, "status": "OK" if ok else "DIFF",
                       "machine differs in": causes or "nothing",
                       "method differs in": method or "nothing",
                       "data differs in": data or "nothing"}
                if verdict and verdict in then.columns and verdict in now.columns:
                    v_then, v_now = then.loc[key, verdict], now.loc[key, verdict]
                    row["verdict committed"], row["verdict now"] = v_then, v_now
                    if v_then != v_now and not (pd.isna(v_then) and pd.isna(v_now)):
                        row["status"] = "VERDICT CHANGED (" + (
                            "expected" if verdict_change_expected(then.loc[key], now.loc[key])
                            else "unexpected") + ")"
                rows.append(row)
    return pd.DataFrame(rows)


def _near_edge(r: pd.Series) -> bool:
    """Whether a claim's reading was at the edge of its verdict (its own column, or computed
    from its interval for a table written before that column existed). A verdict word the
    study no longer uses ("not resolved at this budget") says nothing about an edge: False."""
    if "at the edge" in r.index and pd.notna(r["at the edge"]):
        return str(r["at the edge"]) == "True"
    if r["verdict"] not in VERDICTS:
        return False
    margin = float(r["margin"]) if "margin" in r.index and pd.notna(r["margin"]) else (
        SMALLEST_EFFECT)
    return at_edge(edge_distance(float(r["95% CI low"]), float(r["95% CI high"]),
                                 str(r["verdict"]), margin))


def verdict_change_expected(then: pd.Series, now: pd.Series) -> bool:
    """A changed verdict is expected when the two 95% intervals overlap and either reading
    was at the edge of its verdict; otherwise it is unexpected."""
    if not {"95% CI low", "95% CI high"} <= set(then.index) & set(now.index):
        return False
    overlap = (float(then["95% CI low"]) <= float(now["95% CI high"])
               and float(now["95% CI low"]) <= float(then["95% CI high"]))
    return overlap and (_near_edge(then) or _near_edge(now))


def summary(report: pd.DataFrame) -> str:
    """The report in a few lines of markdown: counts, then every number that is not OK."""
    if not len(report):
        return "No committed headline numbers to compare with (a first run of this profile)."
    counts = report["status"].value_counts()
    head = (f"{len(report)} headline numbers compared with the committed ones: "
            + ", ".join(f"{counts.get(s, 0)} {s}" for s in
                        ("OK", "DIFF", "VERDICT CHANGED (expected)",
                         "VERDICT CHANGED (unexpected)")) + ".")
    causes = set(report["machine differs in"]) - {"nothing"}
    if causes:
        head += (f" This run differs from the committed one in {', '.join(sorted(causes))}: "
                 "the tolerances allow for that, so a DIFF here is beyond what it explains.")
    method = sorted(set(report.get("method differs in", pd.Series(dtype=str))) - {"nothing"})
    if method:
        head += (" The method changed since the committed run (" + " | ".join(method) + "): "
                 "the tolerances do not allow for a new trainer (scores move) or new "
                 "statistics (intervals and verdicts move), so a DIFF may be the method's.")
    data = sorted(set(report.get("data differs in", pd.Series(dtype=str))) - {"nothing"})
    if data:
        head += (" The data changed under some rows (" + " | ".join(data) + "): the "
                 "tolerances do not allow for that, so a DIFF there may be the data's.")
    bad = report[report["status"] != "OK"]
    if not len(bad):
        return head
    return head + "\n\n" + format_frame(bad).to_markdown(index=False, disable_numparse=True)


#: A difference below every printed precision (4 decimals, p-values 3): the number did not move.
UNMOVED = 1e-6


def moved(report: pd.DataFrame) -> bool:
    """Whether the run moved anything the committed report explains: a first run (nothing to
    compare), a number that changed by more than ``UNMOVED`` or a status other than OK."""
    return (not len(report) or bool((report["status"] != "OK").any())
            or bool((report["difference"].abs() > UNMOVED).any()))


def write(report: pd.DataFrame, folder: Path) -> Path:
    """``reproduction.csv`` and ``reproduction.md`` (the summary, then every row)."""
    folder.mkdir(parents=True, exist_ok=True)
    report.to_csv(folder / "reproduction.csv", index=False)
    text = "# Reproduction report\n\n" + summary(report) + "\n"
    if len(report):
        text += ("\n## Every number\n\n"
                 + format_frame(report).to_markdown(index=False, disable_numparse=True) + "\n")
    (folder / REPORT).write_text(text, encoding="utf-8")
    return folder / REPORT


def read_record(folder: Path) -> dict | None:
    """The ``run.json`` in ``folder``, or None."""
    path = folder / "run.json"
    return json.loads(path.read_text()) if path.exists() else None


def training_sentence(training: dict) -> str:
    """A run record's ``training`` entry (``pipeline.training_record``) in one sentence
    (empty without one)."""
    if not training:
        return ""
    threads = "/".join(map(str, training["threads"])) or "?"
    return (f"Training its {training['runs']} runs took {training['seconds'] / 60:.0f} min, "
            f"summed from their logs ({threads} thread(s) per run); the chapter times include "
            "only the runs this run trained, and read the others back.")
