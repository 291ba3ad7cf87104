"""The ablation study: the paper's Table 2 rows (and extras) as configs, run and tabulated.

``study_configs(profile)`` lists every run of a profile; ``run_study`` trains (or reuses)
them; ``results_frame`` collects their metrics; ``table2``, ``significance_table`` and
``forgetting_table`` aggregate over seeds and test the differences, per query, with Holm
correction. Nothing is tuned on test queries: every hyperparameter below is fixed a priori
(the paper's, or the pilot's described in STUDY.md), not chosen by looking at test scores.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from clp_utils.evaluation import holm, paired_test, zero_shot
from clp_utils.mining import MiningConfig
from clp_utils.training import RunResult, TrainConfig, load_training_data, train

ZERO_SHOT = "zero-shot"
#: The paper's six rows, in its order (the first is not trained).
PAPER_ROWS = [
    ZERO_SHOT,
    "random negatives",
    "ANCE negatives",
    "ANCE + CLP",
    "ANCE + CLP, intermediate only",
    "ANCE + CLP + MoE",
]
EXTRA_ROWS = [
    "ANCE + CLP + MoE, learned gate",
    "ANCE + CLP, lambda=0",
    "ANCE + CLP, lambda=0.05",
    "ANCE + CLP, lambda=0.2",
    "ANCE + CLP, lambda=0.5",
    "ANCE + CLP, pseudo queries",
    "ANCE + CLP, LoRA",
]

#: Published nDCG@5 on MIRACL dev (ko, fa, hi, average), Yu 2024, Table 2. Shown next to ours
#: for reference only: different model, data and languages.
PAPER_TABLE2 = {
    ZERO_SHOT: (64.36, 51.13, 52.35, 55.95),
    "random negatives": (59.61, 47.38, 51.78, 52.92),
    "ANCE negatives": (66.89, 50.88, 54.53, 57.43),
    "ANCE + CLP": (67.05, 52.39, 54.75, 58.06),
    "ANCE + CLP, intermediate only": (66.92, 55.10, 56.34, 59.45),
    "ANCE + CLP + MoE": (67.74, 55.56, 56.36, 59.89),
}


@dataclass(frozen=True)
class StudyProfile:
    """What one profile trains: splits, seeds, rows and the shared training sizes."""

    splits: tuple[str, ...]
    seeds: tuple[int, ...]
    rows: tuple[str, ...]
    base: TrainConfig


STUDY_PROFILES = {
    "smoke": StudyProfile(
        splits=("reddit",), seeds=(0,), rows=tuple(PAPER_ROWS),
        base=TrainConfig(passages=80, ood_passages=60, train_queries=8, batch_size=4,
                         max_query_len=16, max_passage_len=32, checkpoint_every=5,
                         mining=MiningConfig(rank_min=2, rank_max=15, num_negatives=2)),
    ),
    # 2 cores: 12 steps of 16 queries per run, passages cut to 128 tokens while training
    # (evaluation embeds up to the model's 256); bf16 autocast where the CPU computes bf16
    # natively (TrainConfig.bf16="auto", clp_utils.precision), float32 elsewhere.
    "cpu": StudyProfile(
        splits=("reddit",), seeds=(0, 1), rows=tuple(PAPER_ROWS),
        base=TrainConfig(train_queries=192, batch_size=16, max_passage_len=128,
                         ood_passages=500),
    ),
    "full": StudyProfile(
        splits=("reddit", "amazon"), seeds=(0, 1, 2), rows=tuple(PAPER_ROWS + EXTRA_ROWS),
        base=TrainConfig(train_queries=None, batch_size=16, max_passage_len=256),
    ),
}


def row_config(row: str, base: TrainConfig, split: str, seed: int) -> TrainConfig:
    """The config of one study row (``base`` holds the profile's sizes)."""
    ance = replace(base.mining, strategy="ance", seed=seed)
    common = dict(label=f"{split}-{row}", split=split, seed=seed)
    clp = replace(base, **common, mining=ance, loss="clp")
    if row == "random negatives":
        return replace(base, **common, mining=replace(ance, strategy="random"), loss="infonce")
    if row == "ANCE negatives":
        return replace(base, **common, mining=ance, loss="infonce")
    if row == "ANCE + CLP":
        return clp
    if row == "ANCE + CLP, intermediate only":
        return replace(clp, policy="intermediate")
    if row == "ANCE + CLP + MoE":
        return replace(clp, policy="moe", moe_routing="paper")
    if row == "ANCE + CLP + MoE, learned gate":
        return replace(clp, policy="moe", moe_routing="learned", moe_balance=0.01)
    if row.startswith("ANCE + CLP, lambda="):
        return replace(clp, lam=float(row.split("=")[1]))
    if row == "ANCE + CLP, pseudo queries":
        return replace(clp, mining=replace(ance, pseudo_query="first_sentence"))
    if row == "ANCE + CLP, LoRA":
        return replace(clp, policy="lora", lr=1e-4)
    raise ValueError(f"unknown study row {row!r}")


def study_configs(profile: str) -> list[tuple[str, str, int, TrainConfig | None]]:
    """``(row, split, seed, config)`` for every run of the profile (config None: zero-shot)."""
    p = STUDY_PROFILES[profile]
    out = []
    for split in p.splits:
        for row in p.rows:
            if row == ZERO_SHOT:
                out.append((row, split, 0, None))
                continue
            out += [(row, split, s, row_config(row, p.base, split, s)) for s in p.seeds]
    return out


@dataclass
class StudyRun:
    """One cell of the study: a row, a split, a seed and what it scored."""

    row: str
    split: str
    seed: int
    result: RunResult | None  # None for zero-shot
    in_domain: dict[str, dict[str, float]]  # metric -> qid -> value
    ood: dict[str, dict[str, float]] | None


def run_study(profile: str, rows: Iterable[str] | None = None, progress: bool = True) -> list[StudyRun]:
    """Train (or reuse) every run of ``profile``; zero-shot rows evaluate the base model."""
    wanted = set(rows) if rows is not None else None
    runs = []
    for row, split, seed, config in study_configs(profile):
        if wanted is not None and row not in wanted:
            continue
        if config is None:
            base = STUDY_PROFILES[profile].base
            ds, ood = load_training_data(replace(base, split=split))
            zs = zero_shot(ds, base.model, progress=progress)
            zo = zero_shot(ood, base.model, progress=progress) if ood is not None else None
            runs.append(StudyRun(row, split, seed, None, zs.evaluation.per_query,
                                 zo.evaluation.per_query if zo else None))
            continue
        res = train(config, progress=progress)
        runs.append(StudyRun(row, split, seed, res, res.in_domain.evaluation.per_query,
                             res.ood.evaluation.per_query if res.ood else None))
    return runs


def results_frame(runs: list[StudyRun], metrics: tuple[str, ...] = ("ndcg_cut_5", "ndcg_cut_10")) -> pd.DataFrame:
    """One row per (row, split, seed, domain) with the mean of each metric."""
    rows = []
    for r in runs:
        for domain, per_query in (("in-domain", r.in_domain), ("out-of-domain", r.ood)):
            if per_query is None:
                continue
            rows.append({"row": r.row, "split": r.split, "seed": r.seed, "domain": domain,
                         "run_id": r.result.run_id if r.result else ZERO_SHOT,
                         **{m: float(np.mean(list(per_query[m].values()))) for m in metrics}})
    return pd.DataFrame(rows)


def _per_query_mean_over_seeds(runs: list[StudyRun], row: str, split: str, metric: str,
                               domain: str = "in-domain") -> dict[str, float]:
    """Per-query metric averaged over the row's seeds (one system per row)."""
    chosen = [r for r in runs if r.row == row and r.split == split]
    tables = [(r.in_domain if domain == "in-domain" else r.ood)[metric] for r in chosen]
    qids = tables[0].keys()
    return {q: float(np.mean([t[q] for t in tables])) for q in qids}


def table2(runs: list[StudyRun], metric: str = "ndcg_cut_10", domain: str = "in-domain") -> pd.DataFrame:
    """Mean and standard deviation over seeds per row and split, next to the paper's average."""
    df = results_frame(runs)
    df = df[df["domain"] == domain]
    order = [r for r in PAPER_ROWS + EXTRA_ROWS if r in set(df["row"])]
    out = []
    for split in dict.fromkeys(df["split"]):
        for row in order:
            vals = df[(df["row"] == row) & (df["split"] == split)]
            out.append({"split": split, "row": row, "seeds": len(vals),
                        f"{metric} mean": vals[metric].mean(),
                        f"{metric} std": vals[metric].std(ddof=1) if len(vals) > 1 else np.nan,
                        "ndcg_cut_5 mean": vals["ndcg_cut_5"].mean(),
                        "paper nDCG@5 avg (MIRACL)": PAPER_TABLE2.get(row, (np.nan,) * 4)[3]})
    return pd.DataFrame(out).set_index(["split", "row"])


def significance_table(runs: list[StudyRun], metric: str = "ndcg_cut_10", domain: str = "in-domain",
                       n_permutations: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """Every trained row vs zero-shot and vs ANCE + InfoNCE: paired tests with Holm correction.

    Per-query values are first averaged over each row's seeds; the Holm family is every
    comparison in the table (per split and domain).
    """
    out = []
    for split in dict.fromkeys(r.split for r in runs):
        rows = [r for r in dict.fromkeys(x.row for x in runs if x.split == split)]
        sys = {row: _per_query_mean_over_seeds(runs, row, split, metric, domain) for row in rows}
        for ref in (ZERO_SHOT, "ANCE negatives"):
            if ref not in sys:
                continue
            for row in rows:
                if row in (ref, ZERO_SHOT):
                    continue
                t = paired_test(sys[ref], sys[row], metric, n_permutations, seed)
                out.append({"split": split, "comparison": f"{row} vs {ref}", "n queries": t.n,
                            "delta": t.mean_delta, "p (permutation)": t.p_permutation,
                            "p (t-test)": t.p_ttest})
    df = pd.DataFrame(out)
    if len(df):
        df["p Holm (permutation)"] = holm(df["p (permutation)"].tolist())
        df["significant (0.05)"] = df["p Holm (permutation)"] < 0.05
    return df


def per_query_deltas(runs: list[StudyRun], row: str, ref: str, split: str,
                     metric: str = "ndcg_cut_10", domain: str = "in-domain") -> pd.Series:
    """Per-query ``row - ref`` (seed-averaged), sorted, for delta plots."""
    a = _per_query_mean_over_seeds(runs, ref, split, metric, domain)
    b = _per_query_mean_over_seeds(runs, row, split, metric, domain)
    return pd.Series({q: b[q] - a[q] for q in a}).sort_values()


#: The paper's claims as (better row, worse row) pairs: "better" should score higher.
CLAIMS = [
    ("fine-tuning with random negatives hurts", ZERO_SHOT, "random negatives"),
    ("ANCE negatives beat random negatives", "ANCE negatives", "random negatives"),
    ("CLP beats InfoNCE (ANCE + CLP > ANCE negatives)", "ANCE + CLP", "ANCE negatives"),
    ("training only the intermediate layers beats full fine-tuning", "ANCE + CLP, intermediate only", "ANCE + CLP"),
    ("MoE intermediate layers beat plain intermediate-only", "ANCE + CLP + MoE", "ANCE + CLP, intermediate only"),
]


def claims_table(runs: list[StudyRun], metric: str = "ndcg_cut_10", n_permutations: int = 10_000,
                 seed: int = 0) -> pd.DataFrame:
    """Each claim of the paper tested on the first split: delta (claimed better - worse), Holm p.

    Verdicts: ``held`` (right direction, Holm p < 0.05), ``not significant`` (either
    direction), ``reversed`` (wrong direction, Holm p < 0.05).
    """
    split = runs[0].split
    present = {r.row for r in runs if r.split == split}
    out = []
    for claim, better, worse in CLAIMS:
        if not {better, worse} <= present:
            continue
        a = _per_query_mean_over_seeds(runs, worse, split, metric)
        b = _per_query_mean_over_seeds(runs, better, split, metric)
        t = paired_test(a, b, metric, n_permutations, seed)
        out.append({"claim": claim, "split": split, "delta": t.mean_delta,
                    "p (permutation)": t.p_permutation, "p (t-test)": t.p_ttest})
    df = pd.DataFrame(out)
    if len(df):
        df["p Holm"] = holm(df["p (permutation)"].tolist())
        df["verdict"] = [
            "held" if p < 0.05 and d > 0 else "reversed" if p < 0.05 else "not significant"
            for d, p in zip(df["delta"], df["p Holm"], strict=True)
        ]
    return df
