"""How many seeds the cpu profile affords on this machine.

The cpu profile's recipe (``configs/recipe_cpu.json``) fixes what one run learns: its steps,
negatives, passage length and learning rates. It is the same on every machine, so a row
means the same thing wherever it ran. What a slower machine cannot afford is the number of
runs. On a CPU without native bf16 every step and every encoding runs in float32: twice as
slow per step on an AVX512 CPU with AMX, and slower still where only AVX2 exists. Two seeds
of every row then no longer fit chapter 03's time target.

``plan_seeds`` measures the machine at hand (a training step of each kind of run the profile
trains, and the encoding of corpus passages and queries, in the precision and attention
kernel ``precision.decide`` picks), estimates the seconds of chapter 03's runs (training and
evaluation) at 1, 2, ... seeds, and keeps the most seeds whose estimate fits
``RUNS_BUDGET_S``, allowing for the estimate's own spread (never fewer than one).
``make study`` pins the answer for every chapter through ``$CLP_SEEDS``. Set ``CLP_SEEDS``
yourself to override it, e.g. ``CLP_SEEDS=2 make study`` for the two-seed study on a slow
machine, which takes longer.

Fewer seeds weaken claims, not rows: with one seed the seed-level test is missing, so a claim
whose per-query test alone is significant reads "not resolved at this budget" (chapter 04).

Example (``python -m clp_utils.machinery.budget`` prints the same for the machine at hand)::

    plan = plan_seeds("cpu")
    plan.seeds, plan.estimates  # the seeds chosen; seconds estimated at 1 and 2 seeds
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from clp_utils.costs import (
    Rates,
    RunCost,
    config_cost,
    dataset_of,
    estimate_seconds,
    machine_rates,
)
from clp_utils.profiles import EXTRAS_PRIORITY, MAX_SEEDS, cells, get_profile
from clp_utils.runstore import is_finished

#: Chapter 03's runs (training and evaluation) should take at most this long: the study's
#: 40-minute target on 2 cores less about 10 minutes for the other chapters and chapter
#: 03's own figures. A target, chosen, not measured.
RUNS_BUDGET_S = 30 * 60
#: How far the estimate itself moves between runs on one machine: 23 to 33 minutes for the
#: same two-seed study on this project's 2-core Xeon within one day (the host's speed
#: varies). A seed is dropped only when even the fastest reading of the estimate, divided by
#: this, would exceed the budget, so noise cannot flip a machine between one and two seeds.
ESTIMATE_SPREAD = 1.4


@dataclass(frozen=True)
class SeedPlan:
    """The seeds chosen for this machine, the estimate behind it and the budget."""

    seeds: int
    estimates: dict[int, float]  # seeds -> estimated seconds of chapter 03's runs
    budget_seconds: float
    rates: Rates
    reason: str

    def record(self) -> dict:
        """A JSON-ready summary (``run.json``, the pipeline's log)."""
        return {**asdict(self), "estimates": {str(k): round(v, 1)
                                               for k, v in self.estimates.items()}}


def study_run_configs(profile, seeds: int = 1) -> list:
    """The profile's trained configs with ``seeds`` seeds per row (``profile``: a
    ``StudyProfile``; zero-shot rows left out)."""
    sized = replace(profile, seeds=tuple(range(seeds)))
    return [c.config for c in cells(sized) if c.config is not None]


def study_costs(profile, seeds: int) -> list[RunCost]:
    """The cost of chapter 03's runs with ``seeds`` seeds per row (``profile``: a
    ``StudyProfile``): every trained run, plus each split's zero-shot evaluation and the
    zero-shot encoding of its training passages for mining (step-free costs)."""
    costs, scored = [], set()
    for cfg in study_run_configs(profile, seeds):
        key = (cfg.split, cfg.passages, cfg.ood_split, cfg.ood_passages, cfg.val_fraction)
        cost = config_cost(cfg)
        if key not in scored:
            scored.add(key)
            # zero-shot: the same evaluation once, and the training passages mined over
            train_passages = len(dataset_of(cfg)[0].train().corpus)
            costs.append(RunCost(cost.shape, 0, cost.passages + train_passages, cost.queries))
        costs.append(cost)
    return costs


def plan_seeds(name: str = "cpu", budget_seconds: float = RUNS_BUDGET_S,
               max_seeds: int = MAX_SEEDS, rates: Rates | None = None,
               spread: float = ESTIMATE_SPREAD, refresh: bool = False) -> SeedPlan:
    """The most seeds (1..``max_seeds``) whose estimated chapter-03 runs fit the budget here,
    an estimate counting as fitting while ``estimate / spread <= budget``.

    ``rates`` default to ``machine_rates`` of the profile's runs on this machine: ``make study``
    measures them afresh (``refresh``) and remembers them, and ``make lab`` and a chapter run
    by hand plan from what it remembered, so all three plan the same seeds here.
    """
    profile = get_profile(name).study
    rates = rates or machine_rates(study_run_configs(profile), refresh=refresh)
    estimates = {s: estimate_seconds(study_costs(profile, s), rates)
                 for s in range(1, max_seeds + 1)}
    fits = [s for s, sec in estimates.items() if sec / spread <= budget_seconds]
    seeds = max(fits) if fits else 1
    est, budget = estimates[seeds] / 60, budget_seconds / 60
    allowed = f"the {budget:.0f}-minute budget (x{spread:g} for the estimate's spread)"
    if seeds == max_seeds:
        reason = f"{seeds} seeds fit: about {est:.0f} min of runs, within {allowed}"
    elif fits:
        reason = (f"{seeds} seed(s): {max_seeds} would take about "
                  f"{estimates[max_seeds] / 60:.0f} min of runs here, over {allowed}")
    else:
        reason = f"1 seed, and even that takes about {est:.0f} min of runs here, over {allowed}"
    return SeedPlan(seeds, estimates, budget_seconds, rates, reason)


#: ``make study-extras`` should take at most this long on a 2-core machine with native bf16.
EXTRAS_BUDGET_S = 75 * 60


@dataclass(frozen=True)
class ExtrasPlan:
    """Which extras rows fit the time target here, in priority order, and why."""

    rows: tuple[str, ...]
    left_out: tuple[str, ...]
    estimate_seconds: float
    reason: str

    def record(self) -> dict:
        return asdict(self)


def plan_extras(budget_seconds: float = EXTRAS_BUDGET_S, rates: Rates | None = None,
                spread: float = 1.0, refresh: bool = False) -> ExtrasPlan:
    """Keep the extras rows, in priority order (the scale check, then the learning-rate
    control, ...), while the estimated training and evaluation of the ones not yet run here
    fit ``budget_seconds``; the rest are left out and named.

    The target is a promise to the person waiting, so the estimate itself must fit
    (``spread`` 1.0). The seed plan's tolerance (``ESTIMATE_SPREAD``) exists to keep noise
    from flipping a machine between one and two seeds; applied here it let estimates above
    the target pass, and the rows then took about as long as estimated."""
    study = get_profile("extras").study
    todo = [c for c in cells(study) if c.config is not None and not is_finished(c.config)]
    if not todo:
        return ExtrasPlan(EXTRAS_PRIORITY, (), 0.0, "every extras run has finished here")
    rates = rates or machine_rates([c.config for c in todo], refresh=refresh)
    # the cpu rows the controls are compared with run first, whatever is kept (normally
    # `make study` has trained them and they cost nothing here)
    partners = [c for c in todo if c.row not in EXTRAS_PRIORITY]
    total = estimate_seconds([config_cost(c.config) for c in partners], rates)
    kept = []
    for row in EXTRAS_PRIORITY:
        cost = estimate_seconds([config_cost(c.config) for c in todo if c.row == row], rates)
        if (total + cost) / spread > budget_seconds and kept:
            break  # priority order: a cheaper row further down never jumps the queue
        kept.append(row)
        total += cost
    left = tuple(r for r in EXTRAS_PRIORITY if r not in kept)
    minutes = f"about {total / 60:.0f} min of runs here" + (
        f", {len(partners)} of them runs of `make study` not yet trained here" if partners else "")
    reason = (f"every extras row fits: {minutes}" if not left else
              f"{len(kept)} of {len(EXTRAS_PRIORITY)} rows fit the "
              f"{budget_seconds / 60:.0f}-minute target ({minutes}); left out, lowest "
              f"priority first: {', '.join(reversed(left))}")
    return ExtrasPlan(tuple(kept), left, total, reason)


def main(argv: list[str] | None = None) -> None:
    """``python -m clp_utils.machinery.budget`` prints this machine's rates and estimate;
    ``--seeds`` prints only the number of seeds the plan keeps (``make lab`` pins it)."""
    import argparse
    import contextlib
    import io
    import sys

    parser = argparse.ArgumentParser(prog="python -m clp_utils.machinery.budget",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", action="store_true", help="print the planned seeds only")
    args = parser.parse_args(argv)
    if args.seeds:
        with contextlib.redirect_stdout(io.StringIO()):  # progress and loading messages
            plan = plan_seeds()
        print(plan.seeds)
        print(f"seeds per row on this machine: {plan.reason}", file=sys.stderr)
        return
    plan = plan_seeds()
    print(plan.rates)
    for s, sec in plan.estimates.items():
        print(f"{s} seed(s): about {sec / 60:.1f} min of chapter 03's runs")
    print(f"plan: {plan.reason}")


if __name__ == "__main__":  # pragma: no cover
    main()
