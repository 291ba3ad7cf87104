"""What to deploy: BM25, a dense row, or both fused (reciprocal rank and convex fusion).

``hybrid_table`` fuses every dense row of a split with BM25 and tests each hybrid against
BM25 and against its own dense row (``stats.comparison_table``: two-level bootstrap over
seeds and test passages). Its comparisons form one Holm family of their own (the question:
does fusing with BM25 help?). The convex weight is chosen per row on validation queries,
never on test ones; RRF has nothing to choose.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from clp_utils.batching import load_training_data
from clp_utils.evaluation import bm25, convex, evaluate_run, rrf
from clp_utils.profiles import StudyProfile, get_profile
from clp_utils.results import clusters_of
from clp_utils.stats import comparison_table
from clp_utils.study import StudyRun

#: Convex weights of the dense side tried on validation (0 = BM25 alone, 1 = dense alone).
HYBRID_WEIGHTS = tuple(round(w, 2) for w in np.linspace(0.0, 1.0, 21))
RRF_K = 60


def bm25_runs(profile: str | StudyProfile, split: str) -> dict[str, object]:
    """BM25's test and validation results on the dataset the profile's runs use."""
    p = get_profile(profile).study if isinstance(profile, str) else profile
    ds, _ = load_training_data(replace(p.base, split=split))
    return {"test": bm25(ds), "val": bm25(ds, side="val")}


def best_weight(members: list[StudyRun], sparse_val, qrels, metric: str,
                weights: tuple[float, ...]) -> tuple[float, float]:
    """The convex weight with the best mean validation ``metric`` over the row's seeds (ties:
    the weight nearest 0.5), and that score."""
    scores = {w: float(np.mean([evaluate_run(convex(r.val_run, sparse_val, w), qrels)
                                .mean[metric] for r in members])) for w in weights}
    best = max(scores, key=lambda w: (scores[w], -abs(w - 0.5)))
    return best, scores[best]


def hybrid_table(runs: list[StudyRun], profile: str | StudyProfile, split: str,
                 metric: str = "ndcg_cut_10", weights: tuple[float, ...] = HYBRID_WEIGHTS,
                 rrf_k: int = RRF_K) -> tuple[pd.DataFrame, pd.DataFrame]:
    """BM25 fused with every dense row of ``split``.

    Returns (systems table: seeds, test mean and sd, chosen weight and its validation score;
    comparison table: each hybrid against BM25 and against its own dense row, Holm over this
    table).
    """
    p = get_profile(profile).study if isinstance(profile, str) else profile
    ds, _ = load_training_data(replace(p.base, split=split))
    qrels = {"test": ds.test().qrels, "val": ds.validation().qrels}
    sparse = bm25_runs(p, split)
    per_seed = {"BM25": {0: sparse["test"].evaluation.per_query[metric]}}
    info = [{"system": "BM25", "kind": "sparse", "seeds": 1, "weight": np.nan}]
    pairs = []
    for row in dict.fromkeys(x.row for x in runs if x.split == split):
        members = [r for r in runs if r.row == row and r.split == split and r.val_run is not None]
        if not members:
            continue
        best, at_best = best_weight(members, sparse["val"].run, qrels["val"], metric, weights)
        systems = {f"{row} (dense)": lambda r: r.test_run,
                   f"{row} + BM25, RRF": lambda r: rrf([r.test_run, sparse["test"].run], rrf_k),
                   f"{row} + BM25, convex":
                       lambda r, w=best: convex(r.test_run, sparse["test"].run, w)}
        for name, make in systems.items():
            per_seed[name] = {r.seed: evaluate_run(make(r), qrels["test"]).per_query[metric]
                              for r in members}
            kind = name.rsplit(", ", 1)[-1] if "+ BM25" in name else "dense"
            info.append({"system": name, "kind": kind, "seeds": len(members),
                         "weight": best if kind == "convex" else np.nan,
                         "val at weight": at_best if kind == "convex" else np.nan})
            if "+ BM25" in name:
                pairs += [(name, "BM25"), (name, f"{row} (dense)")]
    table = pd.DataFrame(info).set_index("system")
    means = {s: [float(np.mean(list(v.values()))) for v in per_seed[s].values()]
             for s in table.index}
    table[f"{metric} mean"] = [float(np.mean(means[s])) for s in table.index]
    table[f"{metric} sd"] = [float(np.std(means[s], ddof=1)) if len(means[s]) > 1 else np.nan
                             for s in table.index]
    sig = comparison_table(per_seed, pairs, clusters_of(runs, split))
    return table, sig


def best_hybrid_sentence(split: str, table: pd.DataFrame, sig: pd.DataFrame,
                         metric: str = "ndcg_cut_10") -> str:
    """The best hybrid of ``split`` against BM25, as one generated sentence."""
    fused = table[table["kind"].isin(["RRF", "convex"])]
    best = fused[f"{metric} mean"].idxmax()
    vs = sig[(sig["system"] == best) & (sig["reference"] == "BM25")].iloc[0]
    return (f"{split}: the best hybrid is {best} at {fused.loc[best, f'{metric} mean']:.4f} "
            f"against BM25's {table.loc['BM25', f'{metric} mean']:.4f} (difference "
            f"{vs['delta']:+.4f}, 95% CI {vs['95% CI low']:+.4f} to {vs['95% CI high']:+.4f}, "
            f"Holm p {vs['p Holm']:.4f}: {vs['verdict']}).")
