"""The study's runs: every cell of a profile trained (or read back) and scored.

``run_study`` trains what is missing (saying first what and how long) and reads every cell
back as a ``StudyRun``: per-query metrics on the test, validation and out-of-domain queries,
the retrieved lists (for fusion) and each query's passage cluster (for ``clp_utils.stats``).
Their tables live in ``results``, ``claims`` and ``hybrids``. Nothing is tuned on test
queries: the settings are the profile's (``clp_utils.profiles``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import pandas as pd
from tqdm.auto import tqdm

from clp_utils.batching import load_training_data
from clp_utils.costs import estimate_cells
from clp_utils.evaluation import RetrievalResult, zero_shot
from clp_utils.profiles import ZERO_SHOT, Cell, StudyProfile, cells, get_profile
from clp_utils.retrieval import Run
from clp_utils.runstore import RunResult, committed_run, is_finished, load_run
from clp_utils.train_config import TrainConfig
from clp_utils.training import train as _train

DOMAINS = ("in-domain", "out-of-domain", "validation")


def study_profile(profile: str | StudyProfile) -> StudyProfile:
    """``get_profile(profile).study``, or a ``StudyProfile`` (e.g. a track's) as it is: every
    function here takes either."""
    return get_profile(profile).study if isinstance(profile, str) else profile


def study_configs(profile: str | StudyProfile) -> list[Cell]:
    """Every cell (row, split, seed, config) of the profile (config None: zero-shot)."""
    return cells(study_profile(profile))


def config_of(profile: str | StudyProfile, row: str, seed: int = 0,
              split: str | None = None) -> TrainConfig:
    """The config of one trained cell: ``row`` at ``seed`` on ``split`` (default: the
    profile's first split). Raises naming the rows the profile trains."""
    p = study_profile(profile)
    split = split or p.splits[0]
    for c in cells(p):
        if c.row == row and c.seed == seed and c.split == split and c.config is not None:
            return c.config
    raise KeyError(f"no trained cell ({row!r}, seed {seed}, {split!r}) in this profile; "
                   f"its rows: {list(p.rows)}")


@dataclass
class StudyRun:
    """One cell of the study: a row, a split, a seed and what it scored (metric -> qid -> value);
    the retrieved lists (``test_run``, ``val_run``) are read on first use."""

    row: str
    split: str
    seed: int
    result: RunResult | None  # None for zero-shot
    in_domain: dict[str, dict[str, float]]
    ood: dict[str, dict[str, float]] | None
    val: dict[str, dict[str, float]] | None = None
    test_result: RetrievalResult | None = None  # where the retrieved lists are, for fusion
    val_result: RetrievalResult | None = None
    clusters: dict[str, dict[str, str]] = field(default_factory=dict)  # domain -> qid -> cluster

    @property
    def test_run(self) -> Run | None:
        """The retrieved test lists (qid -> docid -> score)."""
        return self.test_result.run if self.test_result is not None else None

    @property
    def val_run(self) -> Run | None:
        """The retrieved validation lists."""
        return self.val_result.run if self.val_result is not None else None

    def per_query(self, domain: str) -> dict[str, dict[str, float]] | None:
        """``in-domain`` (test), ``out-of-domain`` or ``validation`` per-query metrics."""
        return dict(zip(DOMAINS, (self.in_domain, self.ood, self.val), strict=True))[domain]

    def clusters_of(self, domain: str) -> dict[str, str]:
        """Each query's passage cluster on ``domain`` (every query its own cluster when the
        run carries none, e.g. a synthetic run in a test)."""
        known = self.clusters.get(domain)
        if known:
            return known
        metrics = self.per_query(domain) or {}
        return {q: q for q in next(iter(metrics.values()), {})}


def _study_run(row: str, split: str, seed: int, result: RunResult | None,
               test: RetrievalResult, ood: RetrievalResult | None,
               val: RetrievalResult | None) -> StudyRun:
    sides = dict(zip(DOMAINS, (test, ood, val), strict=True))
    return StudyRun(row, split, seed, result, test.evaluation.per_query,
                    ood.evaluation.per_query if ood else None,
                    val.evaluation.per_query if val else None, test, val,
                    {d: r.evaluation.clusters for d, r in sides.items() if r is not None})


def missing_cells(profile: str | StudyProfile, rows: Iterable[str] | None = None) -> list[Cell]:
    """The trained cells of ``profile`` (optionally only ``rows``) without a finished run."""
    wanted = set(rows) if rows is not None else None
    return [c for c in study_configs(profile) if c.config is not None
            and (wanted is None or c.row in wanted) and not is_finished(c.config)]


#: How to run less on purpose, named where the cpu profile's runs are about to train.
SMALLER = ("to run less: `PROFILE=quick make study` or profile='quick' in the parameters cell: "
           "one seed, no seed-level verdicts")


def _minutes(seconds: float) -> str:
    return "under a minute" if seconds < 60 else f"{seconds / 60:.0f} min"


def training_plan(missing: list[Cell], smaller: str | None = None) -> str:
    """What ``run_study`` is about to train, in one paragraph: runs, rows, seeds, optimizer
    steps, the precision, the estimated minutes here (``costs.estimate_cells``: this
    machine's measured step and encoding rates) and, where given, how to run less."""
    est = estimate_cells([c.config for c in missing])
    rows = list(dict.fromkeys(c.row for c in missing))
    seeds = sorted({c.seed for c in missing})
    return (f"About to train {len(missing)} run(s): {len(rows)} row(s) ({'; '.join(rows)}), "
            f"seed(s) {seeds}, {est.steps} optimizer steps in all, {est.precision}; "
            f"estimated {_minutes(est.seconds)} on this machine (step and encoding rates "
            f"measured here). Each run shows a progress bar; a finished run is reused, an "
            f"interrupted one resumes from its checkpoint." + (f" {smaller}." if smaller else ""))


def run_study(profile: str | StudyProfile, rows: Iterable[str] | None = None,
              progress: bool = True, smaller: str | None = None, train: bool = True,
              models: bool = False) -> list[StudyRun]:
    """Train what is missing and read back every cell of ``profile`` (optionally only
    ``rows``), printing ``training_plan`` first (with ``SMALLER`` for the cpu profile, or
    ``smaller``); zero-shot rows evaluate the base model.

    With ``train=False`` (a chapter reopened by hand) a run missing here is read from the
    committed results; if some run is in neither place, or ``models`` asks for trained models
    not here, it stops with ``SystemExit`` saying what would train and how to ask for it."""
    p, wanted = study_profile(profile), set(rows) if rows is not None else None
    todo = [c for c in study_configs(p) if wanted is None or c.row in wanted]
    missing = missing_cells(p, rows)
    committed = {}
    if not train:
        committed = {c: committed_run(c.config) for c in missing}
        absent = [c for c in missing if committed[c] is None or models]
        if absent:
            raise SystemExit(
                f"{training_plan(absent)}\nNothing was trained: this chapter's parameter "
                f"`train` is False. Set train = True in the parameters cell (or run `make "
                f"study`) to train {'the models this chapter reads' if models else 'them'}.")
    elif missing:
        smaller = smaller or (SMALLER if profile == "cpu" else None)
        print(training_plan(missing, smaller), flush=True)
    runs = []
    for cell in tqdm(todo, desc="study cells", disable=not progress or not missing or not train):
        if cell.config is None:
            runs.append(zero_shot_run(p, cell.split, progress, committed=not train))
            continue
        found = committed.get(cell)
        res = load_run(found) if found else _train(cell.config, progress=progress)
        runs.append(_study_run(cell.row, cell.split, cell.seed, res, res.in_domain, res.ood,
                               res.val))
    return runs


def zero_shot_run(profile: str | StudyProfile, split: str, progress: bool = True,
                  committed: bool = False) -> StudyRun:
    """The zero-shot row of ``split``: the base model on the data the profile's runs use
    (test, validation and out-of-domain sides), any split, trained on or not. With
    ``committed``, results missing here are read from the committed ones."""
    base = replace(study_profile(profile).base, split=split)
    ds, ood = load_training_data(base)
    kw = {"progress": progress, "committed": committed}
    zs = zero_shot(ds, base.model, **kw)
    zv = zero_shot(ds, base.model, side="val", **kw) if ds.has_validation else None
    zo = zero_shot(ood, base.model, **kw) if ood is not None else None
    return _study_run(ZERO_SHOT, split, 0, None, zs, zo, zv)


def trainable_parameters(runs: list[StudyRun]) -> pd.DataFrame:
    """Per trained row: the policy, trainable and total parameters (from each run's record)."""
    rows = {}
    for r in runs:
        if r.result is not None and r.row not in rows:
            info = r.result.info["params"]
            rows[r.row] = {**info, "trainable share": info["trainable"] / info["total"]}
    return pd.DataFrame.from_dict(rows, orient="index")


def training_table(runs: list[StudyRun]) -> pd.DataFrame:
    """One row per trained cell: row, split, seed, run id, learning rate, trainable and total
    parameters, steps, training queries, the precision that ran, the threads that trained,
    training seconds and the validation nDCG@10 (from each run's record, through the run
    store's accessor)."""
    rows = []
    for r in runs:
        if r.result is None:
            continue
        info = r.result.info
        rows.append({"row": r.row, "split": r.split, "seed": r.seed, "run": r.result.run_id,
                     "lr": info["config"]["lr"], "trainable params": info["params"]["trainable"],
                     "total params": info["params"]["total"], "steps": info["steps"],
                     "training queries": info["steps"] * info["config"]["batch_size"],
                     "precision": info["precision"]["precision"],
                     # the seconds below are this many threads' (one, two cores shared)
                     "threads": info["precision"].get("hardware", {}).get("threads"),
                     "training seconds": float(r.result.log["seconds"].sum()),
                     "val nDCG@10": (r.result.val.metrics["ndcg_cut_10"] if r.result.val
                                     else float("nan"))})
    return pd.DataFrame(rows)


def step_logs(runs: list[StudyRun]) -> pd.DataFrame:
    """Every trained cell's ``log.csv`` (one row per optimizer step), with row and seed."""
    logs = [r.result.log.assign(row=r.row, seed=r.seed) for r in runs if r.result is not None]
    return pd.concat(logs, ignore_index=True) if logs else pd.DataFrame()


def recipe_budgets(runs: list[StudyRun], study_rows: tuple[str, ...],
                   recipe_rows: tuple[str, ...]) -> dict[str, tuple[int, float, int]]:
    """Median training queries, seconds and threads of the study's rows and of the
    paper-recipe rows (the first of ``recipe_rows`` that ran), for a sentence comparing the
    two budgets."""
    trained = training_table([r for r in runs if r.result is not None])
    out = {}
    for label, candidates in (("the study's rows", study_rows),
                              ("the paper-recipe rows", recipe_rows)):
        found = trained[trained["row"].isin(candidates)] if len(trained) else trained
        if len(found):
            out[label] = (int(found["training queries"].median()),
                          float(found["training seconds"].median()),
                          int(found["threads"].median()))
    return out
