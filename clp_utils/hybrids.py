"""What to deploy: BM25, a dense row, or both fused (reciprocal rank and convex fusion).

``hybrid_table`` fuses every dense row of a split with BM25 and tests each hybrid against
BM25 and against its own dense row (``stats.comparison_table``: two-level bootstrap over
seeds and test passages). Its comparisons form one Holm family of their own (the question:
does fusing with BM25 help?). The convex weight is chosen per row on validation queries,
never on test ones; RRF has nothing to choose. The hybrid a sentence reports as "the best"
is chosen the same way (``choose_on_validation``): its test score is read after the choice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np
import pandas as pd

from clp_utils.base.io import atomic_dir, stable_hash
from clp_utils.base.paths import results_dir
from clp_utils.batching import load_training_data
from clp_utils.evaluation import bm25, committed_dir, convex, evaluate_run, rrf
from clp_utils.plots import number, read_table
from clp_utils.profiles import ZERO_SHOT, StudyProfile, get_profile
from clp_utils.results import clusters_of
from clp_utils.stats import comparison_table
from clp_utils.study import StudyRun

#: Convex weights of the dense side tried on validation (0 = BM25 alone, 1 = dense alone).
HYBRID_WEIGHTS = tuple(round(w, 2) for w in np.linspace(0.0, 1.0, 21))
RRF_K = 60
#: Where each hybrid table is kept beside the runs it fused, keyed by those runs (ids), the
#: split and the settings: ``make study`` commits it with the results (``machinery.publish``),
#: so a reopened chapter shows the same table without the run files it was fused from.
MEMO = "hybrids"


def bm25_runs(profile: str | StudyProfile, split: str) -> dict[str, object]:
    """BM25's test and validation results on the dataset the profile's runs use."""
    p = get_profile(profile).study if isinstance(profile, str) else profile
    ds, _ = load_training_data(replace(p.base, split=split))
    return {"test": bm25(ds), "val": bm25(ds, side="val")}


def hybrid_table(runs: list[StudyRun], profile: str | StudyProfile, split: str,
                 metric: str = "ndcg_cut_10", weights: tuple[float, ...] = HYBRID_WEIGHTS,
                 rrf_k: int = RRF_K) -> tuple[pd.DataFrame, pd.DataFrame]:
    """BM25 fused with every dense row of ``split``.

    Returns (systems table: seeds, validation mean, test mean and sd, the convex weight: the
    best mean validation ``metric`` over the row's seeds, ties to the weight nearest 0.5;
    comparison table: each hybrid against BM25 and against its own dense row, Holm over this
    table).
    """
    here = [r for r in runs if r.split == split and r.val_result is not None]
    key = stable_hash([[r.row, r.seed, r.test_result.run_dir.name, r.val_result.run_dir.name]
                       for r in here] + [split, metric, list(weights), rrf_k])
    if not all(r.test_result.has_run and r.val_result.has_run for r in here):
        for root in (results_dir(), committed_dir()):  # reopened from committed results
            if (root / MEMO / key / "comparisons.csv").exists():
                return (read_table(root / MEMO / key / "systems.csv", index_col="system"),
                        read_table(root / MEMO / key / "comparisons.csv", index_col=0))
        raise FileNotFoundError(f"{split}: the hybrids need the runs' run files, which are not "
                                f"here, and no stored table {key} exists in "
                                f"{results_dir() / MEMO} or {committed_dir() / MEMO}; "
                                "`make study` makes both")
    p = get_profile(profile).study if isinstance(profile, str) else profile
    ds, _ = load_training_data(replace(p.base, split=split))
    qrels = {"test": ds.test().qrels, "val": ds.validation().qrels}
    sparse = bm25_runs(p, split)
    per_seed = {"BM25": {0: sparse["test"].evaluation.per_query[metric]}}
    info = [{"system": "BM25", "kind": "sparse", "seeds": 1, "weight": np.nan,
             f"{metric} validation": sparse["val"].evaluation.mean[metric]}]
    pairs = []
    for row in dict.fromkeys(x.row for x in runs if x.split == split):
        members = [r for r in here if r.row == row]
        if not members:
            continue
        fuse = {"dense": lambda run, side: run,
                "RRF": lambda run, side: rrf([run, sparse[side].run], rrf_k),
                **{w: lambda run, side, w=w: convex(run, sparse[side].run, w) for w in weights}}
        val = {k: float(np.mean([evaluate_run(f(r.val_run, "val"), qrels["val"]).mean[metric]
                                 for r in members])) for k, f in fuse.items()}
        best = max(weights, key=lambda w: (val[w], -abs(w - 0.5)))
        fuse["convex"], val["convex"] = fuse[best], val[best]
        for kind in ("dense", "RRF", "convex"):
            name = f"{row} (dense)" if kind == "dense" else f"{row} + BM25, {kind}"
            per_seed[name] = {r.seed: evaluate_run(fuse[kind](r.test_run, "test"), qrels["test"])
                              .per_query[metric] for r in members}
            info.append({"system": name, "kind": kind, "seeds": len(members),
                         "weight": best if kind == "convex" else np.nan,
                         f"{metric} validation": val[kind]})
            if kind != "dense":
                pairs += [(name, "BM25"), (name, f"{row} (dense)")]
    table = pd.DataFrame(info).set_index("system")
    means = {s: [float(np.mean(list(v.values()))) for v in per_seed[s].values()]
             for s in table.index}
    table[f"{metric} mean"] = [float(np.mean(means[s])) for s in table.index]
    table[f"{metric} sd"] = [float(np.std(means[s], ddof=1)) if len(means[s]) > 1 else np.nan
                             for s in table.index]
    # BM25 and anything built from the zero-shot model alone have no training seed
    seedless = {"BM25"} | {name for name in per_seed if name.startswith(f"{ZERO_SHOT} ")}
    sig = comparison_table(per_seed, pairs, clusters_of(runs, split), seedless=seedless)
    with atomic_dir(results_dir() / MEMO / key) as folder:  # both tables or neither
        table.to_csv(folder / "systems.csv")
        sig.to_csv(folder / "comparisons.csv")
    return table, sig



def choose_on_validation(validation: Mapping[str, float]) -> str:
    """The system with the best validation score (ties: the first). It receives validation
    scores only, so no choice here can look at a test query."""
    return max(validation, key=validation.get)


def best_hybrid(table: pd.DataFrame, metric: str = "ndcg_cut_10") -> str:
    """The fused system of a ``hybrid_table`` chosen on validation queries."""
    fused = table[table["kind"].isin(["RRF", "convex"])]
    return choose_on_validation(fused[f"{metric} validation"].to_dict())


def best_hybrid_sentence(split: str, table: pd.DataFrame, sig: pd.DataFrame,
                         metric: str = "ndcg_cut_10") -> str:
    """The hybrid chosen on validation queries (``best_hybrid``) against BM25 on the test
    queries, as one generated sentence."""
    best = best_hybrid(table, metric)
    vs = sig[(sig["system"] == best) & (sig["reference"] == "BM25")].iloc[0]
    return (f"{split}: the hybrid chosen on validation queries is {best}; on the test queries it "
            f"scores {table.loc[best, f'{metric} mean']:.4f} against BM25's "
            f"{table.loc['BM25', f'{metric} mean']:.4f} (difference {vs['delta']:+.4f}, 95% CI "
            f"{vs['95% CI low']:+.4f} to {vs['95% CI high']:+.4f}, Holm p "
            f"{number(vs['p Holm'], 'p')}: {vs['verdict']}).")


def dense_vs_bm25_sentence(table: pd.DataFrame, metric: str = "ndcg_cut_10") -> str:
    """BM25 against the dense row chosen on validation queries (``choose_on_validation``),
    on the test queries, in one sentence from a ``hybrid_table``."""
    dense = table[table["kind"] == "dense"]
    top = choose_on_validation(dense[f"{metric} validation"].to_dict())
    bm25_mean, top_mean = table.loc["BM25", f"{metric} mean"], table.loc[top, f"{metric} mean"]
    lead = "BM25 leads" if bm25_mean > top_mean else "the dense row leads" \
        if top_mean > bm25_mean else "a tie"
    return (f"BM25 ({bm25_mean:.4f}) against the dense row chosen on validation queries ({top}, "
            f"{top_mean:.4f}): dense minus BM25 {top_mean - bm25_mean:+.4f}, {lead}.")
