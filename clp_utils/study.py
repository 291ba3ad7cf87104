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

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from clp_utils.evaluation import holm, paired_test, zero_shot
from clp_utils.mining import MiningConfig
from clp_utils.paths import REPO_ROOT
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
#: Rows beyond the paper (the full profile runs them all; the cpu profile some).
EXTRA_ROWS = [
    "ANCE + CLP, intermediate only, full rate",
    "ANCE + CLP + MoE, learned gate",
    "ANCE + CLP, lambda=0",
    "ANCE + CLP, lambda=0.05",
    "ANCE + CLP, lambda=0.2",
    "ANCE + CLP, lambda=0.5",
    "ANCE + CLP, pseudo queries",
    "ANCE + CLP, LoRA",
]

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
RECIPE_PATH = REPO_ROOT / "configs" / "recipe_cpu.json"


@dataclass(frozen=True)
class StudyProfile:
    """What one profile trains: splits, seeds, rows, the shared config, per-policy rates.

    ``lrs`` maps a parameter policy (full, intermediate, moe, lora) to its learning rate;
    a row trains with its policy's rate (``base.lr`` where the policy has none).
    ``extra_seeds`` are the seeds of rows outside the paper's (default: ``seeds``).
    """

    splits: tuple[str, ...]
    seeds: tuple[int, ...]
    rows: tuple[str, ...]
    base: TrainConfig
    lrs: dict[str, float] = field(default_factory=dict)
    extra_seeds: tuple[int, ...] | None = None

    def seeds_of(self, row: str) -> tuple[int, ...]:
        if row in PAPER_ROWS or self.extra_seeds is None:
            return self.seeds
        return self.extra_seeds


def load_recipe(path: Path = RECIPE_PATH) -> dict:
    """The cpu profile's recipe written by ``make design`` (a clear error when missing)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `make design` to choose the cpu profile's "
                                "budget and learning rates on the validation split")
    recipe = json.loads(path.read_text(encoding="utf-8"))
    missing = {"split", "train_queries", "batch_size", "num_negatives", "max_passage_len",
               "lr"} - set(recipe)
    if missing:
        raise ValueError(f"{path}: recipe lacks {sorted(missing)}; rerun `make design`")
    return recipe


def recipe_config(recipe: dict, **overrides) -> TrainConfig:
    """The shared training config a recipe describes (its full-policy rate as ``lr``)."""
    return TrainConfig(
        split=recipe["split"], train_queries=recipe["train_queries"],
        batch_size=recipe["batch_size"], max_passage_len=recipe["max_passage_len"],
        attention_dropout=recipe.get("attention_dropout"),
        val_fraction=recipe.get("val_fraction", 0.1), lr=recipe["lr"]["full"],
        mining=MiningConfig(num_negatives=recipe["num_negatives"]), **overrides)


def study_profile(name: str) -> StudyProfile:
    """The named profile: ``smoke`` (minutes), ``cpu`` (2 cores, from the recipe), ``full``."""
    if name == "smoke":
        return StudyProfile(
            splits=("reddit",), seeds=(0,), rows=tuple(PAPER_ROWS),
            base=TrainConfig(passages=80, ood_passages=60, train_queries=8, batch_size=4,
                             max_query_len=16, max_passage_len=32, checkpoint_every=5,
                             attention_dropout=0.0, no_duplicates=False,
                             mining=MiningConfig(rank_min=2, rank_max=15, num_negatives=2)),
            lrs={"intermediate": 1e-4, "moe": 1e-4},
        )
    if name == "cpu":
        # 2 cores: the budget, negatives, training passage length and learning rates are
        # the recipe's (validation-chosen); out-of-domain forgetting on a 500-passage new_wiki
        # subset; bf16 where the CPU computes it natively (TrainConfig.bf16="auto").
        recipe = load_recipe()
        return StudyProfile(
            splits=(recipe["split"],), seeds=(0, 1),
            rows=tuple(PAPER_ROWS) + ("ANCE + CLP, intermediate only, full rate",),
            base=recipe_config(recipe, ood_passages=500), lrs=dict(recipe["lr"]), extra_seeds=(0,),
        )
    if name == "full":
        # A GPU: every training query, both domains, 3 seeds, every extra row, 256 tokens,
        # 4 negatives, attention dropout as the model has it. Rates fixed a priori: 2e-5 for
        # full fine-tuning (the paper's order), 1e-4 where only a small part of the model
        # trains (intermediate, MoE, LoRA), the usual scale-up for partial fine-tuning.
        return StudyProfile(
            splits=("reddit", "amazon"), seeds=(0, 1, 2), rows=tuple(PAPER_ROWS + EXTRA_ROWS),
            base=TrainConfig(train_queries=None, batch_size=16, max_passage_len=256, lr=2e-5),
            lrs={"full": 2e-5, "intermediate": 1e-4, "moe": 1e-4, "lora": 1e-4},
        )
    raise ValueError(f"unknown profile {name!r}; choose one of ['smoke', 'cpu', 'full']")


def row_config(row: str, base: TrainConfig, split: str, seed: int,
               lrs: dict[str, float] | None = None) -> TrainConfig:
    """The config of one study row (``base`` holds the profile's sizes, ``lrs`` its rates)."""
    ance = replace(base.mining, strategy="ance", seed=seed)
    common = dict(label=f"{split}-{row}", split=split, seed=seed)
    clp = replace(base, **common, mining=ance, loss="clp")
    if row == "random negatives":
        config = replace(base, **common, mining=replace(ance, strategy="random"), loss="infonce")
    elif row == "ANCE negatives":
        config = replace(base, **common, mining=ance, loss="infonce")
    elif row == "ANCE + CLP":
        config = clp
    elif row == "ANCE + CLP, intermediate only":
        config = replace(clp, policy="intermediate")
    elif row == "ANCE + CLP, intermediate only, full rate":
        # the same policy at the full-fine-tuning rate: does the rate or the policy matter?
        return replace(clp, policy="intermediate", lr=(lrs or {}).get("full", base.lr))
    elif row == "ANCE + CLP + MoE":
        config = replace(clp, policy="moe", moe_routing="paper")
    elif row == "ANCE + CLP + MoE, learned gate":
        config = replace(clp, policy="moe", moe_routing="learned", moe_balance=0.01)
    elif row.startswith("ANCE + CLP, lambda="):
        config = replace(clp, lam=float(row.split("=")[1]))
    elif row == "ANCE + CLP, pseudo queries":
        config = replace(clp, mining=replace(ance, pseudo_query="first_sentence"))
    elif row == "ANCE + CLP, LoRA":
        config = replace(clp, policy="lora")
    else:
        raise ValueError(f"unknown study row {row!r}")
    if lrs and config.policy in lrs:
        config = replace(config, lr=lrs[config.policy])
    return config


def study_configs(profile: str) -> list[tuple[str, str, int, TrainConfig | None]]:
    """``(row, split, seed, config)`` for every run of the profile (config None: zero-shot)."""
    p = study_profile(profile)
    out = []
    for split in p.splits:
        for row in p.rows:
            if row == ZERO_SHOT:
                out.append((row, split, 0, None))
                continue
            out += [(row, split, s, row_config(row, p.base, split, s, p.lrs))
                    for s in p.seeds_of(row)]
    return out


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

    def per_query(self, domain: str) -> dict[str, dict[str, float]] | None:
        """``in-domain`` (test), ``out-of-domain`` or ``validation`` per-query metrics."""
        return {"in-domain": self.in_domain, "out-of-domain": self.ood, "validation": self.val}[domain]


def run_study(profile: str, rows: Iterable[str] | None = None, progress: bool = True) -> list[StudyRun]:
    """Train (or reuse) every run of ``profile``; zero-shot rows evaluate the base model."""
    wanted = set(rows) if rows is not None else None
    runs = []
    for row, split, seed, config in study_configs(profile):
        if wanted is not None and row not in wanted:
            continue
        if config is None:
            base = replace(study_profile(profile).base, split=split)
            ds, ood = load_training_data(base)
            zs = zero_shot(ds, base.model, progress=progress)
            zv = zero_shot(ds, base.model, progress=progress, side="val") if ds.has_validation else None
            zo = zero_shot(ood, base.model, progress=progress) if ood is not None else None
            runs.append(StudyRun(row, split, seed, None, zs.evaluation.per_query,
                                 zo.evaluation.per_query if zo else None,
                                 zv.evaluation.per_query if zv else None))
            continue
        res = train(config, progress=progress)
        runs.append(StudyRun(row, split, seed, res, res.in_domain.evaluation.per_query,
                             res.ood.evaluation.per_query if res.ood else None,
                             res.val.evaluation.per_query if res.val else None))
    return runs


DOMAINS = ("in-domain", "out-of-domain", "validation")


def results_frame(runs: list[StudyRun], metrics: tuple[str, ...] = ("ndcg_cut_5", "ndcg_cut_10")) -> pd.DataFrame:
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
    order = [r for r in PAPER_ROWS + EXTRA_ROWS if r in set(df["row"])]
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


def seed_deltas(runs: list[StudyRun], row: str, ref: str, split: str, metric: str = "ndcg_cut_10",
                domain: str = "in-domain") -> dict[int, float]:
    """Each seed's ``row - ref`` mean difference (seeds paired by number; a single-run
    reference such as zero-shot is subtracted from every seed)."""
    def means(name: str) -> dict[int, float]:
        return {r.seed: float(np.mean(list(r.per_query(domain)[metric].values())))
                for r in runs if r.row == name and r.split == split}

    a, b = means(ref), means(row)
    if len(a) == 1:
        (only,) = a.values()
        return {s: v - only for s, v in sorted(b.items())}
    if len(b) == 1:
        (only,) = b.values()
        return {s: only - v for s, v in sorted(a.items())}
    shared = sorted(set(a) & set(b))
    return {s: b[s] - a[s] for s in shared}


def seed_test(deltas: Iterable[float]) -> float:
    """Two-sided one-sample t-test of per-seed deltas against 0 (``nan`` with one seed).

    With 2-3 seeds this test has little power: it passes only when the effect is large
    against the seed-to-seed spread, which is exactly what it is here to check.
    """
    d = np.asarray(list(deltas), dtype=float)
    if len(d) < 2:
        return float("nan")
    if np.allclose(d, d[0]):
        return 0.0 if d[0] != 0 else 1.0
    return float(stats.ttest_1samp(d, 0.0).pvalue)


def compare(runs: list[StudyRun], row: str, ref: str, split: str, metric: str = "ndcg_cut_10",
            domain: str = "in-domain", n_permutations: int = 10_000, seed: int = 0) -> dict:
    """``row`` against ``ref`` both ways: per query (seed means) and per seed."""
    a = _per_query_mean_over_seeds(runs, ref, split, metric, domain)
    b = _per_query_mean_over_seeds(runs, row, split, metric, domain)
    t = paired_test(a, b, metric, n_permutations, seed)
    d = np.array(list(t.deltas.values()))
    half = 1.96 * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else np.nan
    per_seed = seed_deltas(runs, row, ref, split, metric, domain)
    return {"n queries": t.n, "delta": t.mean_delta, "95% CI low": t.mean_delta - half,
            "95% CI high": t.mean_delta + half, "p (permutation)": t.p_permutation,
            "p (t-test)": t.p_ttest, "seed deltas": per_seed,
            "p (seeds)": seed_test(per_seed.values())}


def _format_seeds(per_seed: dict[int, float]) -> str:
    return ", ".join(f"{v:+.4f}" for v in per_seed.values())


def significance_table(runs: list[StudyRun], metric: str = "ndcg_cut_10", domain: str = "in-domain",
                       n_permutations: int = 10_000, seed: int = 0,
                       refs: tuple[str, ...] = (ZERO_SHOT, "ANCE negatives")) -> pd.DataFrame:
    """Every row against each reference: per-query paired tests with Holm correction, and
    each seed's delta with a t-test over seeds.

    Per-query values are first averaged over each row's seeds; the Holm family is every
    comparison in the table. This is the study's one significance-table builder (chapter
    04's in-domain and forgetting tables and chapter 06's multilingual table use it).
    """
    out = []
    for split in dict.fromkeys(r.split for r in runs):
        rows = list(dict.fromkeys(x.row for x in runs if x.split == split))
        for ref in refs:
            if ref not in rows:
                continue
            for row in rows:
                if row == ref or (ref != ZERO_SHOT and row == ZERO_SHOT) or row in refs[:refs.index(ref)]:
                    continue
                c = compare(runs, row, ref, split, metric, domain, n_permutations, seed)
                out.append({"split": split, "comparison": f"{row} vs {ref}", "row": row, "ref": ref,
                            **{k: v for k, v in c.items() if k != "seed deltas"},
                            "seed deltas": _format_seeds(c["seed deltas"])})
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
VERDICTS = ("held", "reversed", "not distinguishable", "not resolved at this budget")


def verdict(delta: float, p_query_holm: float, seed_deltas_: Iterable[float], p_seeds: float,
            alpha: float = 0.05) -> str:
    """``held`` / ``reversed`` only when the per-query test (Holm) and the seed-level view
    agree: both significant, every seed's delta on the same side. ``not distinguishable``
    when neither is significant; ``not resolved at this budget`` when they disagree."""
    per_seed = np.asarray(list(seed_deltas_), dtype=float)
    query_sig = p_query_holm < alpha
    seeds_sig = bool(len(per_seed) > 1 and p_seeds < alpha
                     and np.all(np.sign(per_seed) == np.sign(delta)))
    if query_sig and seeds_sig:
        return "held" if delta > 0 else "reversed"
    if not query_sig and not seeds_sig:
        return "not distinguishable"
    return "not resolved at this budget"


def claims_table(runs: list[StudyRun], metric: str = "ndcg_cut_10", n_permutations: int = 10_000,
                 seed: int = 0, split: str | None = None) -> pd.DataFrame:
    """Each claim of the paper tested on ``split`` (default: the first): delta (claimed better
    - worse) with its 95% CI, Holm p over the claims, each seed's delta, the seed-level p and
    the verdict (see ``verdict``)."""
    split = split or runs[0].split
    present = {r.row for r in runs if r.split == split}
    out = []
    for claim, better, worse in CLAIMS:
        if not {better, worse} <= present:
            continue
        c = compare(runs, better, worse, split, metric, "in-domain", n_permutations, seed)
        out.append({"claim": claim, "split": split, **c})
    df = pd.DataFrame(out)
    if len(df):
        df["p Holm"] = holm(df["p (permutation)"].tolist())
        df["verdict"] = [verdict(r["delta"], r["p Holm"], r["seed deltas"].values(), r["p (seeds)"])
                         for _, r in df.iterrows()]
        df["seed deltas"] = df["seed deltas"].map(_format_seeds)
    return df


def forgetting_table(runs: list[StudyRun], metric: str = "ndcg_cut_10") -> pd.DataFrame:
    """Out-of-domain means over seeds with delta, Holm p and seed deltas against zero-shot
    (no paper column: the paper measured no forgetting)."""
    t = table2(runs, metric, domain="out-of-domain", paper_column=False)
    sig = significance_table(runs, metric, domain="out-of-domain", refs=(ZERO_SHOT,))
    if not len(sig):
        return t
    sig = sig.set_index(["split", "row"])[["delta", "p Holm (permutation)", "seed deltas"]]
    return t.join(sig, how="left")


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
    configs = [cfg for row, _, _, cfg in study_configs(profile)
               if cfg is not None and (wanted is None or row in wanted)]
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
                                     str(log_dir / f"{name}.json")], stdout=log, stderr=subprocess.STDOUT)
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
        raise RuntimeError("runs failed: " + "; ".join(f"{label} (log: {path})" for label, path in failed))
    return [label for label, _ in done]
