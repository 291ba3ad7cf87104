"""Chapter 06's track: multilingual-e5-small on Hindi and Persian, zero-shot and fine-tuned.

``zero_shot_runs`` scores BM25 and the dense models on both languages; ``zero_shot_tables``
compares them (two-level bootstrap, which reduces to a passage bootstrap for single runs;
one Holm family: the zero-shot comparisons); ``run_track`` trains the Hindi rows of the
profile; ``summary_table`` is the chapter in one table; its claims are the ``hindi`` family
of ``clp_utils.claims``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from clp_utils import languages
from clp_utils.catalog import load_named
from clp_utils.evaluation import bm25, zero_shot
from clp_utils.models import load_model
from clp_utils.paper import claimed_difference
from clp_utils.profiles import ANCE, ZERO_SHOT, TrackProfile, get_profile
from clp_utils.results import comparison_holm, significance_table, table2
from clp_utils.stats import bootstrap_replicates, comparison_table
from clp_utils.study import SMALLER, StudyRun, run_study


def track_profile(name: str) -> TrackProfile:
    """Chapter 06's runs in profile ``name`` (``profiles.get_profile(name).track``)."""
    return get_profile(name).track


def zero_shot_runs(profile: str, models: Iterable[str] = ("me5-small", "minilm"),
                   progress: bool = True,
                   committed: bool = False) -> dict[tuple[str, str], object]:
    """Zero-shot retrieval on Hindi and Persian: ``{(dataset, system): RetrievalResult}`` for
    BM25 (Snowball stemmer, ``languages.TOKEN_PATTERN`` words) and each model in ``models``
    (``evaluation.zero_shot``, cached; ``committed``: missing results read from the committed
    ones), on the profile's subsets (the Hindi one is the fine-tuned runs').
    """
    tp = track_profile(profile)
    sets = {"hindi": load_named("hindi").sized(tp.hindi_passages),
            "persian": load_named("persian").sized(tp.persian_passages)}
    # a set's name is its Snowball (PyStemmer) language
    out = {(name, "BM25"): bm25(ds, name, token_pattern=languages.TOKEN_PATTERN)
           for name, ds in sets.items()}
    for model_name in models:
        model = None if committed else load_model(model_name)  # loaded on need otherwise
        for name, ds in sets.items():
            out[(name, model_name)] = zero_shot(ds, model_name, model, progress=progress,
                                                committed=committed)
    return out


def zero_shot_tables(results: dict,
                     metric: str = "ndcg_cut_10") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(metrics table, comparison table) of ``zero_shot_runs``' results: on each dataset the
    first dense model against every other system (passage bootstrap), Holm over the table."""
    table = pd.DataFrame([{"dataset": d, "system": s,
                           "test queries": len(r.evaluation.per_query[metric]), **r.metrics}
                          for (d, s), r in results.items()]).set_index(["dataset", "system"])
    table = table.sort_index(level="dataset", sort_remaining=False)
    parts = []
    for dataset in dict.fromkeys(d for d, _ in results):
        systems = [s for d, s in results if d == dataset]
        dense = [s for s in systems if s != "BM25"]
        if not dense:
            continue
        per_seed = {s: {0: results[(dataset, s)].evaluation.per_query[metric]} for s in systems}
        clusters = results[(dataset, dense[0])].evaluation.clusters
        pairs = [(dense[0], other) for other in systems if other != dense[0]]
        # zero-shot models and BM25 have no training seed: deterministic systems
        parts.append(comparison_table(per_seed, pairs, clusters, holm_family=False,
                                      seedless=set(systems)).assign(dataset=dataset))
    if not parts:
        return table, pd.DataFrame()
    sig = comparison_holm(pd.concat(parts, ignore_index=True))
    sig["comparison"] = sig["system"] + " vs " + sig["reference"]
    return table, sig.drop(columns=["system", "reference"])


#: The paper's Table 2 column of each multilingual set (MIRACL Hindi, Persian).
PAPER_COLUMN = {"hindi": ("hi", "Hindi"), "persian": ("fa", "Persian")}


def size_sentence(name: str, scores: Mapping[str, float], clusters: Mapping[str, str],
                  metric: str = "ndcg_cut_10") -> str:
    """What a test set of this size can show, in one sentence: from one run's per-query
    ``scores`` and each query's passage (``clusters``), the questions and passages, the 95%
    half-width of the mean over a passage bootstrap, and which of the paper's steps in the
    same language (MIRACL nDCG@5) are smaller than it (a paired difference is usually known
    more tightly than one mean: a step above it may be detectable, one far below is not).
    """
    qids = sorted(scores)
    ids = pd.factorize(np.array([clusters[q] for q in qids]))[0]
    reps = bootstrap_replicates(np.array([[scores[q] for q in qids]], dtype=float), ids)
    half = float(np.quantile(reps, 0.975) - np.quantile(reps, 0.025)) / 2
    code, language = PAPER_COLUMN[name]
    steps = {f"{a} over {b}": claimed_difference(a, b, code)
             for a, b in (("ANCE negatives", "zero-shot"), ("ANCE + CLP", "ANCE negatives"))}
    text = (f"{name}: {len(qids)} test questions on {int(ids.max()) + 1} passages; one "
            f"system's mean {metric} is known to ±{half:.4f} (95%, passages resampled).")
    below = [f"{k} ({v:+.4f})" for k, v in steps.items() if abs(v) < half]
    above = [f"{k} ({v:+.4f})" for k, v in steps.items() if abs(v) >= half]
    if below:
        text += (f" Smaller than that among the paper's {language} steps (MIRACL nDCG@5): "
                 + " and ".join(below) + "; a difference that small is beyond what this set "
                 "resolves, so 'inconclusive' is the expected verdict, not evidence of no "
                 "effect.")
    if above:
        text += (" At least that large: " + " and ".join(above) + f" (paper, {language}, MIRACL "
                 "nDCG@5).")
    return text


def run_track(profile: str, progress: bool = True, train: bool = True) -> list[StudyRun]:
    """Train (or reuse; ``train=False``: never train) every Hindi run of the profile."""
    return run_study(track_profile(profile).study, progress=progress,
                     smaller=SMALLER if profile == "cpu" else None, train=train)


def summary_table(zero_shot_table: pd.DataFrame, runs: list[StudyRun],
                  metric: str = "ndcg_cut_10") -> pd.DataFrame:
    """Chapter 06 in one table (the README's): BM25 and MiniLM zero-shot (from
    ``zero_shot_tables``), mE5-small zero-shot and each fine-tuned Hindi row (mean and sd over
    seeds), with the difference and its 95% interval against mE5 zero-shot and against ANCE +
    InfoNCE (intervals only: the track's tests are the ``hindi`` claims).
    """
    t2 = table2(runs, metric, paper_column=False).loc["hindi"]
    sig = significance_table(runs, metric).set_index("comparison")
    rows = [{"system": "BM25" if system == "BM25" else f"{system} zero-shot", "seeds": 1,
             f"{metric} mean": r[metric]}
            for system, r in zero_shot_table.loc["hindi"].iterrows()
            if system in ("BM25", "minilm")]
    for row, r in t2.iterrows():
        entry = {"system": "me5-small zero-shot" if row == ZERO_SHOT else f"me5-small, {row}",
                 "seeds": int(r["seeds"]), f"{metric} mean": r[f"{metric} mean"],
                 f"{metric} sd": r[f"{metric} sd"]}
        for ref, tag in ((ZERO_SHOT, "zero-shot"), (ANCE, "ANCE + InfoNCE")):
            key = f"{row} vs {ref}"
            if key in sig.index:
                s = sig.loc[key]
                entry[f"delta vs {tag}"] = s["delta"]
                entry[f"95% CI vs {tag}"] = f"{s['95% CI low']:+.4f} to {s['95% CI high']:+.4f}"
        rows.append(entry)
    out = pd.DataFrame(rows).set_index("system")
    return out[["seeds", *[c for c in out.columns if c != "seeds"]]]


def validation_table(runs: list[StudyRun], metric: str = "ndcg_cut_10") -> pd.DataFrame:
    """Each row's validation and test ``metric`` (mean over seeds): would the validation
    queries, carved from the training passages, have warned about a test result?"""
    out = []
    for row in dict.fromkeys(r.row for r in runs):
        members = [r for r in runs if r.row == row and r.val is not None]
        if not members:
            continue
        out.append({"row": row, "seeds": len(members),
                    f"validation {metric}": float(np.mean([np.mean(list(r.val[metric].values()))
                                                           for r in members])),
                    f"test {metric}": float(np.mean([np.mean(list(r.in_domain[metric].values()))
                                                     for r in members]))})
    return pd.DataFrame(out).set_index("row")


def tokenizer_table(models: dict[str, object], texts: list[str]) -> pd.DataFrame:
    """How each model's tokenizer cuts ``texts``: pieces per whitespace word and the share of
    unknown pieces (an English WordPiece vocabulary spells other scripts letter by letter)."""
    rows = []
    words = sum(len(t.split()) for t in texts)
    for name, model in models.items():
        tok = model.tokenizer
        ids = [i for t in texts for i in tok(t, add_special_tokens=False)["input_ids"]]
        unknown = tok.unk_token_id
        rows.append({"model": name, "pieces per word": len(ids) / max(1, words),
                     "unknown share": (sum(i == unknown for i in ids) / max(1, len(ids))
                                       if unknown is not None else 0.0)})
    return pd.DataFrame(rows).set_index("model")
