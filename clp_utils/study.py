"""The ablation study: the paper's Table 2 rows (and extras) as configs, run and tabulated.

``study_profile(name)`` says what a profile trains; ``study_configs(profile)`` lists every
run; ``run_study`` trains (or reuses) them; ``results_frame`` collects their metrics;
``table2``, ``significance_table``, ``claims_table`` and ``forgetting_table`` aggregate over
seeds and test the differences two ways: per query (seed-averaged, permutation test, Holm
correction) and per seed (each seed's delta, a t-test over seeds).

Nothing is tuned on test queries. The cpu profile's budget, negatives, passage length and
per-policy learning rates come from ``configs/recipe_cpu.json``, written by ``make design``
(``clp_utils.design``) from learning curves and learning-rate grids scored on the
validation side carved from the training passages. The full profile's settings are fixed a
priori (the paper's and the field's defaults), not chosen by looking at any score.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from clp_utils import languages
from clp_utils.catalog import load_named
from clp_utils.evaluation import Run, bm25, convex, evaluate_run, rrf, zero_shot
from clp_utils.profiles import (
    ROW_ORDER,
    ZERO_SHOT,
    Cell,
    StudyProfile,
    TrackProfile,
    cells,
    get_profile,
)
from clp_utils.stats import comparison_table, holm, pair_seeds, verdict
from clp_utils.training import RunResult, TrainConfig, load_training_data, train

#: Published nDCG@5 on MIRACL dev (ko, fa, hi, average), Yu 2024, Table 2. Shown next to ours
#: for orientation only: different model, data, languages and metric cut-off.
PAPER_TABLE2 = {
    ZERO_SHOT: (64.36, 51.13, 52.35, 55.95),
    "random negatives": (59.61, 47.38, 51.78, 52.92),
    "ANCE negatives": (66.89, 50.88, 54.53, 57.43),
    "ANCE + CLP": (67.05, 52.39, 54.75, 58.06),
    "ANCE + CLP, intermediate only": (66.92, 55.10, 56.34, 59.45),
    "ANCE + CLP + MoE": (67.74, 55.56, 56.36, 59.89),
}
PAPER_COLUMN = "paper: MIRACL avg nDCG@5 (other model and data; orientation only)"


def study_profile(name: str) -> StudyProfile:
    """The study's runs in profile ``name`` (``profiles.get_profile(name).study``)."""
    return get_profile(name).study


def study_configs(profile: str | StudyProfile) -> list[Cell]:
    """Every cell (row, split, seed, config) of the profile (config None: zero-shot).

    ``profile`` is a profile name (the English study) or a ``StudyProfile`` (e.g. the
    multilingual track's, ``get_profile(name).track.study``).
    """
    return cells(study_profile(profile) if isinstance(profile, str) else profile)


def config_of(profile: str | StudyProfile, row: str, seed: int = 0,
              split: str | None = None) -> TrainConfig:
    """The config of one trained cell: ``row`` at ``seed`` on ``split`` (default: the
    profile's first split). Raises naming the rows the profile trains."""
    p = study_profile(profile) if isinstance(profile, str) else profile
    split = split or p.splits[0]
    for c in cells(p):
        if c.row == row and c.seed == seed and c.split == split and c.config is not None:
            return c.config
    raise KeyError(f"no trained cell ({row!r}, seed {seed}, {split!r}) in this profile; "
                   f"its rows: {list(p.rows)}")


@dataclass
class StudyRun:
    """One cell of the study: a row, a split, a seed and what it scored (metric -> qid -> value)."""

    row: str
    split: str
    seed: int
    result: RunResult | None  # None for zero-shot
    in_domain: dict[str, dict[str, float]]
    ood: dict[str, dict[str, float]] | None
    val: dict[str, dict[str, float]] | None = None
    test_run: Run | None = None  # the retrieved lists (qid -> docid -> score), for fusion
    val_run: Run | None = None

    def per_query(self, domain: str) -> dict[str, dict[str, float]] | None:
        """``in-domain`` (test), ``out-of-domain`` or ``validation`` per-query metrics."""
        sides = {"in-domain": self.in_domain, "out-of-domain": self.ood, "validation": self.val}
        return sides[domain]


def run_study(profile: str | StudyProfile, rows: Iterable[str] | None = None,
              progress: bool = True) -> list[StudyRun]:
    """Train (or reuse) every run of ``profile``; zero-shot rows evaluate the base model."""
    p = study_profile(profile) if isinstance(profile, str) else profile
    wanted = set(rows) if rows is not None else None
    runs = []
    for cell in study_configs(p):
        row, split, seed, config = cell.row, cell.split, cell.seed, cell.config
        if wanted is not None and row not in wanted:
            continue
        if config is None:
            runs.append(zero_shot_run(p, split, progress))
            continue
        res = train(config, progress=progress)
        runs.append(StudyRun(row, split, seed, res, res.in_domain.evaluation.per_query,
                             res.ood.evaluation.per_query if res.ood else None,
                             res.val.evaluation.per_query if res.val else None,
                             res.in_domain.run, res.val.run if res.val else None))
    return runs


def zero_shot_run(profile: str | StudyProfile, split: str, progress: bool = True) -> StudyRun:
    """The zero-shot row of ``split``: the base model on the data the profile's runs use
    (test, validation and out-of-domain sides), any split, trained on or not."""
    p = study_profile(profile) if isinstance(profile, str) else profile
    base = replace(p.base, split=split)
    ds, ood = load_training_data(base)
    zs = zero_shot(ds, base.model, progress=progress)
    zv = zero_shot(ds, base.model, progress=progress, side="val") if ds.has_validation else None
    zo = zero_shot(ood, base.model, progress=progress) if ood is not None else None
    return StudyRun(ZERO_SHOT, split, 0, None, zs.evaluation.per_query,
                    zo.evaluation.per_query if zo else None,
                    zv.evaluation.per_query if zv else None, zs.run, zv.run if zv else None)


DOMAINS = ("in-domain", "out-of-domain", "validation")


def results_frame(runs: list[StudyRun],
                  metrics: tuple[str, ...] = ("ndcg_cut_5", "ndcg_cut_10")) -> pd.DataFrame:
    """One row per (row, split, seed, domain) with the mean of each metric."""
    rows = []
    for r in runs:
        for domain in DOMAINS:
            per_query = r.per_query(domain)
            if per_query is None:
                continue
            rows.append({"row": r.row, "split": r.split, "seed": r.seed, "domain": domain,
                         "run_id": r.result.run_id if r.result else ZERO_SHOT,
                         **{m: float(np.mean(list(per_query[m].values()))) for m in metrics}})
    return pd.DataFrame(rows)


def _per_query_mean_over_seeds(runs: list[StudyRun], row: str, split: str, metric: str,
                               domain: str = "in-domain") -> dict[str, float]:
    """Per-query metric averaged over the row's seeds (one system per row)."""
    tables = [r.per_query(domain)[metric] for r in runs if r.row == row and r.split == split]
    qids = tables[0].keys()
    return {q: float(np.mean([t[q] for t in tables])) for q in qids}


def table2(runs: list[StudyRun], metric: str = "ndcg_cut_10", domain: str = "in-domain",
           paper_column: bool = True) -> pd.DataFrame:
    """Mean and standard deviation over seeds per row and split.

    ``paper_column`` adds the paper's published MIRACL average nDCG@5 beside the in-domain
    table (a different model, data and cut-off: orientation only, never a comparison).
    """
    df = results_frame(runs)
    df = df[df["domain"] == domain]
    order = [r for r in ROW_ORDER if r in set(df["row"])]
    order += [r for r in dict.fromkeys(df["row"]) if r not in order]
    out = []
    for split in dict.fromkeys(df["split"]):
        for row in order:
            vals = df[(df["row"] == row) & (df["split"] == split)]
            if not len(vals):
                continue
            entry = {"split": split, "row": row, "seeds": len(vals),
                     f"{metric} mean": vals[metric].mean(),
                     f"{metric} sd": vals[metric].std(ddof=1) if len(vals) > 1 else np.nan,
                     "ndcg_cut_5 mean": vals["ndcg_cut_5"].mean()}
            if paper_column and domain == "in-domain":
                # The paper reports percentages; shown as fractions, on our scale.
                entry[PAPER_COLUMN] = PAPER_TABLE2.get(row, (np.nan,) * 4)[3] / 100
            out.append(entry)
    return pd.DataFrame(out).set_index(["split", "row"])


def _seed_means(runs: list[StudyRun], row: str, split: str, metric: str,
                domain: str) -> dict[int, float]:
    return {r.seed: float(np.mean(list(r.per_query(domain)[metric].values())))
            for r in runs if r.row == row and r.split == split}


def seed_deltas(runs: list[StudyRun], row: str, ref: str, split: str, metric: str = "ndcg_cut_10",
                domain: str = "in-domain") -> dict[int, float]:
    """Each seed's ``row - ref`` mean difference (``stats.pair_seeds``)."""
    return pair_seeds(_seed_means(runs, ref, split, metric, domain),
                      _seed_means(runs, row, split, metric, domain))


def compare_rows(runs: list[StudyRun], pairs: list[tuple[str, str]], split: str,
                 metric: str = "ndcg_cut_10", domain: str = "in-domain",
                 n_permutations: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """``stats.comparison_table`` of study rows: per query (seed means) and per seed."""
    rows = {r for pair in pairs for r in pair}
    per_query = {r: _per_query_mean_over_seeds(runs, r, split, metric, domain) for r in rows}
    per_seed = {r: _seed_means(runs, r, split, metric, domain) for r in rows}
    return comparison_table(per_query, pairs, per_seed, metric, n_permutations, seed)


def significance_table(runs: list[StudyRun], metric: str = "ndcg_cut_10", domain: str = "in-domain",
                       n_permutations: int = 10_000, seed: int = 0,
                       refs: tuple[str, ...] = (ZERO_SHOT, "ANCE negatives")) -> pd.DataFrame:
    """Every row against each reference (zero-shot, ANCE + InfoNCE), per split and domain.

    Per query (seed means, permutation and t-test, Holm over the whole table) and per seed
    (each seed's delta, a t-test over seeds): ``stats.comparison_table``.
    """
    tables = []
    for split in dict.fromkeys(r.split for r in runs):
        rows = list(dict.fromkeys(x.row for x in runs if x.split == split and x.per_query(domain)))
        pairs = [(row, ref) for i, ref in enumerate(refs) if ref in rows for row in rows
                 if row != ref and row != ZERO_SHOT and row not in refs[:i]]
        if pairs:
            t = compare_rows(runs, pairs, split, metric, domain, n_permutations, seed)
            tables.append(t.assign(split=split))
    if not tables:
        return pd.DataFrame()
    df = pd.concat(tables, ignore_index=True).drop(columns=["_seed_values"])
    df["p Holm"] = holm(df["p (permutation)"].tolist())  # one family across splits
    df["significant (0.05)"] = df["p Holm"] < 0.05
    df["comparison"] = df["system"] + " vs " + df["reference"]
    return df.rename(columns={"system": "row", "reference": "ref"})


def per_query_deltas(runs: list[StudyRun], row: str, ref: str, split: str,
                     metric: str = "ndcg_cut_10", domain: str = "in-domain") -> pd.Series:
    """Per-query ``row - ref`` (seed-averaged), sorted, for delta plots."""
    a = _per_query_mean_over_seeds(runs, ref, split, metric, domain)
    b = _per_query_mean_over_seeds(runs, row, split, metric, domain)
    return pd.Series({q: b[q] - a[q] for q in a}).sort_values()


#: The paper's claims as (claim, claimed better row, claimed worse row).
CLAIMS = [
    ("fine-tuning with random negatives hurts", ZERO_SHOT, "random negatives"),
    ("ANCE negatives beat random negatives", "ANCE negatives", "random negatives"),
    ("CLP beats InfoNCE (ANCE + CLP > ANCE negatives)", "ANCE + CLP", "ANCE negatives"),
    ("training only the intermediate layers (own rate) beats full fine-tuning",
     "ANCE + CLP, intermediate only", "ANCE + CLP"),
    ("MoE intermediate layers beat plain intermediate-only", "ANCE + CLP + MoE",
     "ANCE + CLP, intermediate only"),
]


def claims_table(runs: list[StudyRun], metric: str = "ndcg_cut_10", n_permutations: int = 10_000,
                 seed: int = 0, split: str | None = None) -> pd.DataFrame:
    """Each claim of the paper tested on ``split`` (default: the first): delta (claimed better
    - worse) with its 95% CI, Holm p over the claims, each seed's delta, the seed-level p and
    the verdict (``stats.verdict``)."""
    split = split or runs[0].split
    present = {r.row for r in runs if r.split == split}
    claims = [(c, b, w) for c, b, w in CLAIMS if {b, w} <= present]
    if not claims:
        return pd.DataFrame()
    df = compare_rows(runs, [(b, w) for _, b, w in claims], split, metric, "in-domain",
                      n_permutations, seed)
    df.insert(0, "claim", [c for c, _, _ in claims])
    df.insert(1, "split", split)
    df["verdict"] = [verdict(r["delta"], r["p Holm"], r["_seed_values"], r["p (seeds)"])
                     for _, r in df.iterrows()]
    return df.drop(columns=["_seed_values", "system", "reference", "significant (0.05)"])


def forgetting_table(runs: list[StudyRun], metric: str = "ndcg_cut_10") -> pd.DataFrame:
    """Out-of-domain means over seeds with delta, Holm p and seed deltas against zero-shot
    (no paper column: the paper measured no forgetting)."""
    t = table2(runs, metric, domain="out-of-domain", paper_column=False)
    sig = significance_table(runs, metric, domain="out-of-domain", refs=(ZERO_SHOT,))
    if not len(sig):
        return t
    sig = sig.set_index(["split", "row"])[["delta", "p Holm", "seed deltas"]]
    return t.join(sig, how="left")


# --------------------------------------------------------------------------- hybrids with BM25

#: Convex weights of the dense side tried on validation (0 = BM25 alone, 1 = dense alone).
HYBRID_WEIGHTS = tuple(round(w, 2) for w in np.linspace(0.0, 1.0, 21))


def bm25_runs(profile: str | StudyProfile, split: str) -> dict[str, object]:
    """BM25's test and validation results on the dataset the profile's runs use."""
    p = study_profile(profile) if isinstance(profile, str) else profile
    ds, _ = load_training_data(replace(p.base, split=split))
    return {"test": bm25(ds), "val": bm25(ds, side="val")}


def hybrid_table(runs: list[StudyRun], profile: str | StudyProfile, split: str,
                 metric: str = "ndcg_cut_10", weights: tuple[float, ...] = HYBRID_WEIGHTS,
                 rrf_k: int = 60,
                 n_permutations: int = 10_000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """BM25 fused with every dense row: reciprocal rank fusion and a convex combination.

    The convex weight of each row is the one with the best mean validation ``metric`` over
    the row's seeds (validation queries, never test); RRF has no weight to choose. Returns
    (systems table: seeds, test mean and sd, chosen weight and its validation score;
    significance table: each hybrid against BM25 and against its own dense row, per query
    with Holm and per seed).
    """
    p = study_profile(profile) if isinstance(profile, str) else profile
    ds, _ = load_training_data(replace(p.base, split=split))
    qrels = {"test": ds.test().qrels, "val": ds.validation().qrels}
    sparse = bm25_runs(p, split)
    per_query: dict[str, dict[str, float]] = {"BM25": sparse["test"].evaluation.per_query[metric]}
    per_seed: dict[str, dict[int, float]] = {"BM25": {0: sparse["test"].metrics[metric]}}
    info = [{"system": "BM25", "kind": "sparse", "seeds": 1, "weight": np.nan}]
    pairs = []
    rows = [r for r in dict.fromkeys(x.row for x in runs if x.split == split)]
    for row in rows:
        members = [r for r in runs if r.row == row and r.split == split and r.val_run is not None]
        if not members:
            continue
        scores = {w: np.mean([evaluate_run(convex(r.val_run, sparse["val"].run, w), qrels["val"])
                              .mean[metric] for r in members]) for w in weights}
        best = max(scores, key=lambda w: (scores[w], -abs(w - 0.5)))
        systems = {f"{row} (dense)": lambda r: r.test_run,
                   f"{row} + BM25, RRF": lambda r: rrf([r.test_run, sparse["test"].run], rrf_k),
                   f"{row} + BM25, convex":
                       lambda r, w=best: convex(r.test_run, sparse["test"].run, w)}
        for name, make in systems.items():
            evals = {r.seed: evaluate_run(make(r), qrels["test"]).per_query[metric]
                     for r in members}
            per_query[name] = {q: float(np.mean([e[q] for e in evals.values()]))
                               for q in next(iter(evals.values()))}
            per_seed[name] = {s: float(np.mean(list(e.values()))) for s, e in evals.items()}
            kind = name.rsplit(", ", 1)[-1] if "+ BM25" in name else "dense"
            info.append({"system": name, "kind": kind, "seeds": len(members),
                         "weight": best if kind == "convex" else np.nan,
                         "val at weight": scores[best] if kind == "convex" else np.nan})
            if "+ BM25" in name:
                pairs += [(name, "BM25"), (name, f"{row} (dense)")]
    table = pd.DataFrame(info).set_index("system")
    table[f"{metric} mean"] = [float(np.mean(list(per_seed[s].values()))) for s in table.index]
    table[f"{metric} sd"] = [float(np.std(list(per_seed[s].values()), ddof=1))
                             if len(per_seed[s]) > 1 else np.nan for s in table.index]
    sig = comparison_table(per_query, pairs, per_seed, metric, n_permutations)
    return table, sig.drop(columns=["_seed_values"])


# --------------------------------------------------------------------------- many runs at once


def train_parallel(profile: str, workers: int, rows: Iterable[str] | None = None,
                   log_dir: Path | None = None, poll_seconds: float = 2.0) -> list[str]:
    """Train every run of ``profile`` with ``workers`` processes at a time (one per run).

    Meant for a GPU: a MiniLM run leaves most of an H100 idle (per-step overhead, not
    arithmetic, sets its time), so several processes share the device. Each process is
    ``python -m clp_utils.training --config <run>.json``; a finished run is reused, so the
    notebooks that follow read every run back. The caches the runs share (mined negatives,
    passage embeddings, the precision decision) are written with atomic renames: two
    processes computing the same entry write the same bytes, and a reader never sees half a
    file. Returns the labels of the runs; raises naming each failed run and its log.
    """
    import subprocess
    import sys
    import time
    from dataclasses import asdict

    from clp_utils.io import write_json
    from clp_utils.paths import RESULTS_DIR

    wanted = set(rows) if rows is not None else None
    configs = [c.config for c in study_configs(profile)
               if c.config is not None and (wanted is None or c.row in wanted)]
    log_dir = Path(log_dir or RESULTS_DIR / "parallel" / profile)
    log_dir.mkdir(parents=True, exist_ok=True)
    queue = list(enumerate(configs))
    running: dict[int, tuple[subprocess.Popen, Path, object]] = {}
    failed, done = [], []
    while queue or running:
        while queue and len(running) < workers:
            i, cfg = queue.pop(0)
            name = f"{i:03d}-{''.join(c if c.isalnum() else '-' for c in cfg.label)}-s{cfg.seed}"
            write_json(log_dir / f"{name}.json", asdict(cfg))
            log = open(log_dir / f"{name}.log", "w")  # noqa: SIM115 (closed when the run ends)
            proc = subprocess.Popen([sys.executable, "-m", "clp_utils.training", "--config",
                                     str(log_dir / f"{name}.json")],
                                    stdout=log, stderr=subprocess.STDOUT)
            running[i] = (proc, log_dir / f"{name}.log", log)
            print(f"[{profile}] started {name}", flush=True)
        time.sleep(poll_seconds)
        for i, (proc, path, log) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[i]
            (done if proc.returncode == 0 else failed).append((configs[i].label, path))
            print(f"[{profile}] {'finished' if proc.returncode == 0 else 'FAILED'} {path.stem} "
                  f"({len(done)} done, {len(failed)} failed, {len(queue) + len(running)} to go)",
                  flush=True)
    if failed:
        raise RuntimeError("runs failed: "
                           + "; ".join(f"{label} (log: {path})" for label, path in failed))
    return [label for label, _ in done]


# --------------------------------------------------------------------------- the multilingual track


def track_profile(name: str) -> TrackProfile:
    """Chapter 06's runs in profile ``name`` (``profiles.get_profile(name).track``)."""
    return get_profile(name).track


def zero_shot_runs(profile: str, models: Iterable[str] = ("me5-small", "minilm"),
                   progress: bool = True) -> dict[tuple[str, str], object]:
    """Zero-shot retrieval on Hindi and Persian: ``{(dataset, system): RetrievalResult}``.

    Systems: BM25 (Snowball stemmer of the language, ``languages.TOKEN_PATTERN`` words) and
    each dense model in ``models`` (``evaluation.zero_shot``, cached). The Hindi set is the
    profile's training subset, so these numbers pair with the fine-tuned runs.
    """
    from clp_utils.models import load_model

    tp = track_profile(profile)
    sets = {"hindi": load_named("hindi").sized(tp.hindi_passages),
            "persian": load_named("persian").sized(tp.persian_passages)}
    out = {(name, "BM25"): bm25(ds, languages.language(name), token_pattern=languages.TOKEN_PATTERN)
           for name, ds in sets.items()}
    for model_name in models:
        model = load_model(model_name)
        for name, ds in sets.items():
            out[(name, model_name)] = zero_shot(ds, model_name, model, progress=progress)
    return out


def zero_shot_tables(results: dict, metric: str = "ndcg_cut_10",
                     n_permutations: int = 10_000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(metrics table, significance table) of ``zero_shot_runs``' results.

    Significance: on each dataset, the first dense model against every other system, paired
    over the same test queries, Holm-corrected over the whole table (``stats.comparison_table``).
    """
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
        per_query = {s: results[(dataset, s)].evaluation.per_query[metric] for s in systems}
        pairs = [(dense[0], other) for other in systems if other != dense[0]]
        parts.append(comparison_table(per_query, pairs, None, metric, n_permutations)
                     .assign(dataset=dataset))
    if not parts:
        return table, pd.DataFrame()
    sig = pd.concat(parts, ignore_index=True)
    sig["p Holm"] = holm(sig["p (permutation)"].tolist())
    sig["significant (0.05)"] = sig["p Holm"] < 0.05
    sig["comparison"] = sig["system"] + " vs " + sig["reference"]
    return table, sig.drop(columns=["system", "reference"])


def run_track(profile: str, progress: bool = True) -> list[StudyRun]:
    """Train (or reuse) every Hindi run of the profile: ``run_study`` on the track's rows."""
    return run_study(track_profile(profile).study, progress=progress)


def trainable_parameters(runs: list[StudyRun]) -> pd.DataFrame:
    """Per trained row: the policy, trainable and total parameters (from each run's config)."""
    import json

    rows = {}
    for r in runs:
        if r.result is not None and r.row not in rows:
            info = json.loads((r.result.run_dir / "config.json").read_text())["params"]
            rows[r.row] = {**info, "trainable share": info["trainable"] / info["total"]}
    return pd.DataFrame.from_dict(rows, orient="index")


def summary_table(zero_shot_table: pd.DataFrame, runs: list[StudyRun],
                  metric: str = "ndcg_cut_10") -> pd.DataFrame:
    """Chapter 06 in one table (the README's): every Hindi system on the same test queries.

    BM25 and MiniLM zero-shot (from ``zero_shot_tables``), mE5-small zero-shot and each
    fine-tuned row (mean and sd over seeds, ``table2``), with the delta and the Holm p
    against mE5 zero-shot and against ANCE + InfoNCE, and each seed's delta.
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
        for ref, tag in ((ZERO_SHOT, "zero-shot"), ("ANCE negatives", "ANCE + InfoNCE")):
            key = f"{row} vs {ref}"
            if key in sig.index:
                entry[f"delta vs {tag}"] = sig.loc[key, "delta"]
                entry[f"Holm p vs {tag}"] = sig.loc[key, "p Holm"]
                entry[f"seed deltas vs {tag}"] = sig.loc[key, "seed deltas"]
        rows.append(entry)
    out = pd.DataFrame(rows).set_index("system")
    return out[["seeds", *[c for c in out.columns if c != "seeds"]]]
