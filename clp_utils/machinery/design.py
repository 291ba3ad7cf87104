"""Design of the cpu profile: learning curves and learning-rate grids, on validation only.

The cpu profile's budget, negatives, training passage length and per-policy learning rates
are chosen here on the validation queries carved from the training passages (no run sees a
test query: ``test_eval=False``). ``make design`` trains learning curves, picks the one best
after ``train_seconds_per_run`` (equal compute, not equal steps) and the budget that time
buys, runs a learning-rate grid per policy's study row, checks the speed levers, and writes
``configs/recipe_cpu.json`` and ``figures/03_learning_curve.*``, ``figures/03_validation.*``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from clp_utils.base.paths import configure, figures_dir, from_environment, results_dir
from clp_utils.base.precision import decide
from clp_utils.batching import load_training_data
from clp_utils.evaluation import evaluate_run
from clp_utils.mining import MiningConfig
from clp_utils.models import load_model
from clp_utils.plots import save_figure, save_table
from clp_utils.profiles import row_config
from clp_utils.recipe import RECIPE_PATH, Recipe
from clp_utils.retrieval import retrieve
from clp_utils.train_config import TrainConfig
from clp_utils.training import train


def design_runs() -> Path:
    """Where the design's runs are stored (apart from the study's; reused by config hash)."""
    return results_dir() / "design" / "runs"


@dataclass(frozen=True)
class Curve:
    """One learning curve: a number of negatives, a training passage length, a length."""

    num_negatives: int
    max_passage_len: int
    steps: int

    @property
    def label(self) -> str:
        return f"{self.num_negatives} neg, {self.max_passage_len} tok"


@dataclass(frozen=True)
class DesignPlan:
    """What ``make design`` measures (sizes here; every choice comes from the measurements)."""

    split: str = "reddit"
    base: TrainConfig = field(default_factory=lambda: TrainConfig(
        split="reddit", train_queries=None, batch_size=16, ood_split=None, test_eval=False,
        attention_dropout=0.0, mining=MiningConfig(num_negatives=1), checkpoint_every=50))
    curves: tuple[Curve, ...] = (Curve(1, 128, 256), Curve(2, 128, 160), Curve(4, 128, 112),
                                 Curve(1, 256, 160))
    curve_points: tuple[int, ...] = (16, 32, 64, 96, 128, 160, 192, 256)
    curve_lr: float = 5e-5
    train_seconds_per_run: float = 90.0  # what chapter 03 affords per run
    step_quantum: int = 8  # the budget is rounded down to a multiple of this many steps
    grid: dict[str, tuple[float, ...]] = field(default_factory=lambda: {
        "full": (3e-5, 1e-4, 3e-4), "intermediate": (1e-4, 3e-4, 1e-3),
        "moe": (1e-4, 3e-4, 1e-3), "lora": (3e-4, 1e-3, 3e-3)})
    seed: int = 0


#: The study row that trains each policy (the grid trains the row, not a stand-in).
POLICY_ROWS = {"full": "ANCE negatives", "intermediate": "ANCE + CLP, intermediate only",
               "moe": "ANCE + CLP + MoE", "lora": "ANCE + CLP, LoRA"}


def _val(res) -> dict[str, float]:
    """A design run's validation nDCG@10 and recall@100."""
    return {f"val_{m}": res.val.metrics[m] for m in ("ndcg_cut_10", "recall_100")}


def learning_curves(plan: DesignPlan, progress: bool = True) -> pd.DataFrame:
    """Train each curve's run (ANCE + InfoNCE, full policy, constant rate; or reuse it) and
    return its validation points: ``curve``, ``num_negatives``, ``max_passage_len``,
    ``step``, ``train_queries``, ``train_seconds`` (cumulative, evaluation excluded),
    ``val_ndcg_cut_10``, ``val_recall_100``, ``seconds_per_step`` (median) and ``run``."""
    rows = []
    for curve in plan.curves:
        config = replace(
            plan.base, label=f"curve-{curve.num_negatives}neg-{curve.max_passage_len}tok",
            split=plan.split, loss="infonce", policy="full", lr=plan.curve_lr,
            schedule="constant", train_queries=curve.steps * plan.base.batch_size,
            max_passage_len=curve.max_passage_len,
            mining=replace(plan.base.mining, num_negatives=curve.num_negatives),
            val_at=tuple(p for p in plan.curve_points if p <= curve.steps), seed=plan.seed)
        res = train(config, root=design_runs(), progress=progress)
        log = res.log
        log["train_seconds"] = log["seconds"].cumsum()
        points = log.dropna(subset=["val_ndcg_cut_10"])
        if not len(points) or points["step"].iloc[-1] != log["step"].iloc[-1]:
            # the run's own final validation is the curve's last point (a no-duplicate
            # batching may end a step or two before the last requested point)
            last = pd.Series({**log.iloc[-1], **_val(res)})
            points = pd.concat([points, last.to_frame().T], ignore_index=True)
        for _, r in points.iterrows():
            rows.append({"curve": curve.label, "num_negatives": curve.num_negatives,
                         "max_passage_len": curve.max_passage_len, "step": int(r["step"]),
                         "train_queries": int(r["step"]) * plan.base.batch_size,
                         "train_seconds": float(r["train_seconds"]),
                         **{m: float(r[m]) for m in ("val_ndcg_cut_10", "val_recall_100")},
                         "seconds_per_step": float(log["seconds"].median()), "run": res.run_id})
    return pd.DataFrame(rows)


def value_at_seconds(points: pd.DataFrame, seconds: float) -> float:
    """A curve's validation nDCG@10 after ``seconds`` of training (linear interpolation;
    the last point where the curve stops earlier, the first where it starts later)."""
    p = points.sort_values("train_seconds")
    return float(np.interp(seconds, p["train_seconds"], p["val_ndcg_cut_10"]))


def choose_setting(curves: pd.DataFrame, plan: DesignPlan) -> tuple[Curve, int, pd.DataFrame]:
    """The curve that is best after ``train_seconds_per_run``, the budget in steps (a multiple
    of ``step_quantum``, at least one) and the table of each curve's value at that time."""
    rows = []
    for c in plan.curves:
        pts = curves[curves["curve"] == c.label]
        rows.append({"curve": c.label, "seconds_per_step": pts["seconds_per_step"].iloc[0],
                     "val_ndcg_cut_10_at_budget": value_at_seconds(
                         pts, plan.train_seconds_per_run)})
    table = pd.DataFrame(rows)
    i = int(table["val_ndcg_cut_10_at_budget"].to_numpy().argmax())
    steps = (int(plan.train_seconds_per_run / float(table["seconds_per_step"].iloc[i]))
             // plan.step_quantum * plan.step_quantum)
    return plan.curves[i], max(steps, plan.step_quantum), table


def lr_grid(plan: DesignPlan, base: TrainConfig, progress: bool = True) -> pd.DataFrame:
    """Validation nDCG@10 of each policy's study row at each learning rate of the grid."""
    rows = []
    for policy, lrs in plan.grid.items():
        for lr in lrs:
            config = replace(row_config(POLICY_ROWS[policy], base, plan.split, plan.seed), lr=lr,
                             label=f"grid-{policy}-{lr:g}")
            res = train(config, root=design_runs(), progress=progress)
            rows.append({"policy": policy, "row": POLICY_ROWS[policy], "lr": lr, **_val(res),
                         "run": res.run_id})
    return pd.DataFrame(rows)


def best_lrs(grid: pd.DataFrame) -> dict[str, float]:
    """Each policy's learning rate with the best validation nDCG@10."""
    best = grid.loc[grid.groupby("policy", sort=False)["val_ndcg_cut_10"].idxmax()]
    return {r.policy: float(r.lr) for r in best.itertuples()}


def lever_checks(plan: DesignPlan, base: TrainConfig, lr: float,
                 progress: bool = True) -> pd.DataFrame:
    """Validation nDCG@10 with and without each speed lever (same data, seed and budget)."""
    rows = []
    ds, _ = load_training_data(replace(base, split=plan.split))
    val = ds.validation()
    model = load_model(base.model)
    auto = decide("auto", model.device)
    for bf16 in (False, True):
        if bf16 and not auto.bf16:
            continue  # no native bf16 here: the comparison would only measure emulation
        t0 = time.perf_counter()
        mean = evaluate_run(retrieve(model, val, progress=False, bf16=bf16), val.qrels).mean
        rows.append({"lever": "encoding precision (zero-shot)",
                     "setting": "bf16" if bf16 else "float32",
                     "val_ndcg_cut_10": mean["ndcg_cut_10"], "val_recall_100": mean["recall_100"],
                     "seconds": time.perf_counter() - t0})
    chosen = replace(base, loss="infonce", lr=lr, label="lever")
    variants = [("attention dropout", "0 (recipe)", chosen),
                ("attention dropout", "model's own (0.1)", replace(chosen, attention_dropout=None))]
    if auto.bf16:
        variants += [("training precision", "float32", replace(chosen, bf16=False))]
    for lever, setting, config in variants:
        res = train(config, root=design_runs(), progress=progress)
        rows.append({"lever": lever, "setting": setting, **_val(res),
                     "seconds": float(res.log["seconds"].sum()), "run": res.run_id})
    return pd.DataFrame(rows)


def plot_curves(curves: pd.DataFrame, budget_seconds: float, budget_queries: int | None = None,
                marks: pd.DataFrame | None = None):
    """Validation nDCG@10 against training queries and against training seconds; ``marks``
    (``train_queries``, ``train_seconds``, ``val_ndcg_cut_10``, ``label``) adds points such as
    the study's finished runs."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    panels = (("train_queries", budget_queries, "training queries (16 per step)",
               "A: per query trained on"),
              ("train_seconds", budget_seconds, "training seconds (evaluation excluded)",
               "B: per second of training (what a CPU pays)"))
    for ax, (x, budget, xlabel, title) in zip(axes, panels, strict=True):
        sns.lineplot(data=curves, x=x, y="val_ndcg_cut_10", hue="curve", marker="o", ax=ax)
        if budget is not None:
            ax.axvline(budget, color="grey", ls="--", lw=1)
            ax.text(budget, ax.get_ylim()[0], " budget", color="grey", va="bottom", fontsize=8)
        if marks is not None and len(marks):
            ax.scatter(marks[x], marks["val_ndcg_cut_10"], color="black", marker="*", s=90,
                       zorder=5, label=marks["label"].iloc[0])
        ax.set_xlabel(xlabel)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("validation nDCG@10")
    fig.suptitle("Learning curves: ANCE + InfoNCE, full fine-tuning, constant learning rate")
    return fig


def curve_slopes(curves: pd.DataFrame, per: int = 1000) -> pd.Series:
    """Each learning curve's change in validation nDCG@10 per ``per`` training queries
    between its last two points: is it still rising where the budget stops?"""
    last = curves.sort_values("train_queries").groupby("curve").tail(2)
    return last.groupby("curve").apply(
        lambda d: ((d["val_ndcg_cut_10"].iloc[-1] - d["val_ndcg_cut_10"].iloc[0])
                   / max(1, d["train_queries"].iloc[-1] - d["train_queries"].iloc[0]) * per),
        include_groups=False)


def run_design(plan: DesignPlan | None = None, progress: bool = True,
               figures: Path | None = None, recipe_path: Path = RECIPE_PATH) -> Recipe:
    """Run every design experiment (the study's config: the chosen curve and budget, linear
    decay), write the figures and the recipe; returns the recipe."""
    plan = plan or DesignPlan()
    figures = Path(figures or figures_dir())
    t0 = time.perf_counter()
    curves = learning_curves(plan, progress)
    save_table(curves.drop(columns=["run"]), "03_learning_curve", figures, floatfmt=".4f")
    curve, steps, at_budget = choose_setting(curves, plan)
    base = replace(plan.base, split=plan.split, train_queries=steps * plan.base.batch_size,
                   max_passage_len=curve.max_passage_len, schedule="linear", val_at=(),
                   mining=replace(plan.base.mining, num_negatives=curve.num_negatives))
    grid = lr_grid(plan, base, progress)
    lrs = best_lrs(grid)
    levers = lever_checks(plan, base, lrs["full"], progress)
    fig = plot_curves(curves, plan.train_seconds_per_run, steps * plan.base.batch_size)
    save_figure(fig, "03_learning_curve", figures)

    table = pd.concat([
        at_budget.assign(kind="curve at the time budget",
                         choice=lambda d: d["curve"] == curve.label)
        .rename(columns={"val_ndcg_cut_10_at_budget": "val_ndcg_cut_10", "curve": "setting"}),
        grid.assign(kind="learning rate",
                    setting=lambda d: d["policy"] + " @ " + d["lr"].map("{:g}".format),
                    choice=lambda d: [lrs[p] == lr
                                      for p, lr in zip(d["policy"], d["lr"], strict=True)]),
        levers.assign(kind=lambda d: d["lever"], choice=False),
    ], ignore_index=True)[["kind", "setting", "val_ndcg_cut_10", "choice"]]
    save_table(table.set_index(["kind", "setting"]), "03_validation", figures, floatfmt=".4f",
               caption="Every choice of the cpu profile, scored on validation queries "
                       "(never on test): the curves at the time budget, the learning-rate "
                       "grid per policy, and the speed levers.")
    recipe = Recipe(
        split=plan.split, steps=steps, train_queries=steps * plan.base.batch_size,
        batch_size=plan.base.batch_size, num_negatives=curve.num_negatives,
        max_passage_len=curve.max_passage_len, attention_dropout=plan.base.attention_dropout,
        val_fraction=plan.base.val_fraction, lr=lrs,
        why={
            "budget": f"{plan.train_seconds_per_run:g} s of training per run / "
                      f"{at_budget.set_index('curve')['seconds_per_step'][curve.label]:.2f}"
                      f" s per step, rounded down to a multiple of {plan.step_quantum}",
            "setting": f"'{curve.label}' has the best validation nDCG@10 after "
                       f"{plan.train_seconds_per_run:g} s of training among "
                       + ", ".join(c.label for c in plan.curves),
            "lr": "best validation nDCG@10 of each policy's study row over the grid "
                  + json.dumps({k: list(v) for k, v in plan.grid.items()}),
        },
        plan={"curve_lr": plan.curve_lr, "curves": [asdict(c) for c in plan.curves],
              "train_seconds_per_run": plan.train_seconds_per_run, "seed": plan.seed},
        machine=decide("auto", "cpu").record(),
        design_minutes=round((time.perf_counter() - t0) / 60, 1))
    recipe.save(recipe_path)
    return recipe


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m clp_utils.machinery.design",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    configure(**from_environment())  # the command line's edge
    recipe = run_design(progress=not args.no_progress)
    print(json.dumps({k: getattr(recipe, k) for k in ("steps", "num_negatives",
                                                      "max_passage_len", "lr", "design_minutes")},
                     indent=2))


if __name__ == "__main__":
    main()
