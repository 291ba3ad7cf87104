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

import functools
import random
import time
from dataclasses import asdict, dataclass, replace

import torch

from clp_utils.batching import Example, load_training_data
from clp_utils.machinery.precision import cached_timings, cpu_hardware, decide
from clp_utils.machinery.runstore import is_finished
from clp_utils.models import load_model
from clp_utils.profiles import EXTRAS_PRIORITY, MAX_SEEDS, cells, get_profile
from clp_utils.retrieval import encode_batch_size, encode_passages, encode_queries
from clp_utils.train_config import TrainConfig
from clp_utils.training import ecosystem_loss, make_optimizer, prepare_model, train_step

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
class Rates:
    """What this machine does per second with the study's model, in the precision that runs."""

    step_seconds: dict[str, float]  # step shape (``step_shape``) -> seconds per optimizer step
    passages_per_second: float  # evaluation encoding of corpus passages
    queries_per_second: float  # evaluation encoding of queries
    precision: str  # what ``Precision.describe`` says ran


@dataclass(frozen=True)
class RunCost:
    """What one run does: optimizer steps of one shape, and the texts it encodes."""

    shape: str
    steps: int
    passages: int
    queries: int


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


def step_shape(config) -> str:
    """What sets a training step's cost: model, loss, policy, batch, negatives, lengths."""
    c, mc = config, config.mining
    return (f"{c.model}/{c.loss}/{c.policy}/b{c.batch_size}/k{mc.num_negatives}"
            f"/m{mc.neg_queries}/len{c.max_passage_len}/inbatch{int(c.in_batch)}")


def run_cost(config, passages: int, queries: int, available: int | None = None) -> RunCost:
    """The cost of one run of ``config`` that scores ``passages`` and ``queries``
    (``available``: the split's training queries, for a config that trains on all)."""
    n = config.train_queries if config.train_queries is not None else available
    steps = (n // config.batch_size) * config.epochs if n else 0
    return RunCost(step_shape(config), steps, passages, queries)


def estimate_seconds(costs: list[RunCost], rates: Rates) -> float:
    """Seconds the runs take at ``rates``: each run's steps at its shape's measured step time,
    plus the encoding of its passages and queries. (An estimate: mining, checkpoints and
    the steps' varying padding are left out.)"""
    return sum(c.steps * rates.step_seconds[c.shape] + c.passages / rates.passages_per_second
               + c.queries / rates.queries_per_second for c in costs)


def _data(config):
    """``batching.load_training_data(config)``, read once per plan for every config that
    shares the data (a plan looks at the same split a dozen times)."""
    c = config
    return _load_data(c.split, c.passages, c.val_fraction, c.ood_split, c.ood_passages)


@functools.lru_cache(maxsize=4)
def _load_data(split, passages, val_fraction, ood_split, ood_passages):

    return load_training_data(TrainConfig(split=split, passages=passages,
                                          val_fraction=val_fraction, ood_split=ood_split,
                                          ood_passages=ood_passages))


def _timing_examples(config, n: int, seed: int = 0):
    """``n`` training groups of real texts from the training split (no mining needed: a
    step's time depends on the texts' lengths, not on which passage is negative)."""

    ds, _ = _data(config)
    split = ds.train()
    rng = random.Random(seed)
    qids = rng.sample(sorted(split.queries), min(n, len(split.queries)))
    pids = sorted(split.corpus)
    queries = [q["text"] for q in split.queries.values()]
    k, m = config.mining.num_negatives, config.mining.neg_queries
    out = []
    for qid in qids:
        pos = next(iter(split.qrels.get(qid, {})), rng.choice(pids))
        negs = [split.corpus[p]["text"] for p in rng.sample(pids, k)]
        neg_qs = [[rng.choice(queries) for _ in range(m)] for _ in range(k)]
        out.append(Example(split.queries[qid]["text"], split.corpus[pos]["text"], negs, neg_qs,
                           [1.0] * (k * m)))
    return out, ds, m


def time_step(config, repeats: int = 2) -> float:
    """Seconds of one optimizer step of ``config`` here (forward, backward, AdamW and the
    loop's one host synchronisation, in the precision and attention kernel training uses),
    the fastest of ``repeats`` after one warm-up step (a single timed step after the warm-up
    read 2.9 s where the run's steps averaged 2.1 s: the first steps still allocate)."""

    examples, _, m = _timing_examples(config, config.batch_size)
    torch.manual_seed(config.seed)
    model, _ = prepare_model(config)
    precision = decide(config.bf16, str(model.device))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, config, model.device)
    st_loss = ecosystem_loss(model, config)
    model.train(config.dropout)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        parts = train_step(model, examples, config, m, optimizer, precision, st_loss)
        parts["loss"].item()  # the loop's one host synchronisation
        times.append(time.perf_counter() - t0)
    return min(times[1:])


def time_encoding(config, n: int = 192) -> tuple[float, float, str]:
    """(passages/s, queries/s, precision) of evaluation encoding of ``n`` test passages and
    queries of ``config``'s data with its base model, after a warm-up batch of each (a
    machine's first batches pay for kernel set-up that a run's thousands of texts do not)."""

    model = load_model(config.model)
    precision = decide(config.bf16, str(model.device))
    test = _data(config)[0].test()
    rng = random.Random(0)
    warm = encode_batch_size(model)
    passages = [test.corpus[p]["text"]
                for p in rng.sample(sorted(test.corpus), min(n + warm, len(test.corpus)))]
    queries = [q["text"] for q in rng.sample(list(test.queries.values()),
                                             min(n + warm, len(test.queries)))]
    rates = []
    for encode, texts in ((encode_passages, passages), (encode_queries, queries)):
        encode(model, texts[:warm], progress=False, bf16=precision.bf16)
        t0 = time.perf_counter()
        encode(model, texts[warm:], progress=False, bf16=precision.bf16)
        rates.append(len(texts[warm:]) / (time.perf_counter() - t0))
    return rates[0], rates[1], precision.describe()


def measure_rates(configs: list) -> Rates:
    """This machine's rates for ``configs``: one timed step per distinct step shape, and the
    encoding speed of the first config's model."""
    shapes = {}
    for cfg in configs:
        shapes.setdefault(step_shape(cfg), cfg)
    steps = {shape: time_step(cfg) for shape, cfg in shapes.items()}
    pps, qps, described = time_encoding(configs[0])
    return Rates(steps, pps, qps, described)


def study_run_configs(profile, seeds: int = 1) -> list:
    """The profile's trained configs with ``seeds`` seeds per row (``profile``: a
    ``StudyProfile``; zero-shot rows left out)."""
    sized = replace(profile, seeds=tuple(range(seeds)))
    return [c.config for c in cells(sized) if c.config is not None]


def config_cost(config) -> RunCost:
    """What one run of ``config`` does: its steps (every training query when it trains on
    all) and the texts its evaluation encodes (test corpus and queries, validation queries,
    the out-of-domain set)."""
    ds, ood = _data(config)
    passages = len(ds.test().corpus) + (len(ood.test().corpus) if ood else 0)
    queries = len(ds.test().queries) + (len(ood.test().queries) if ood else 0)
    if ds.has_validation:
        queries += len(ds.validation().queries)
    return run_cost(config, passages, queries, len(ds.train().queries))


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
            train_passages = len(_data(cfg)[0].train().corpus)
            costs.append(RunCost(cost.shape, 0, cost.passages + train_passages, cost.queries))
        costs.append(cost)
    return costs


def machine_rates(configs: list, use_cache: bool = True, refresh: bool = False) -> Rates:
    """``measure_rates`` remembered per machine (in the precision cache, keyed by the CPU and
    torch): a shape or model timed once on this machine is not timed again, so a chapter can
    say what a run will cost in a second instead of a minute. ``refresh`` times everything
    again and replaces what was remembered (``make study`` does, so that one noisy reading,
    e.g. taken while the machine was busy, does not decide forever)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = decide(configs[0].bf16, device)
    tag = f"rates/{device}/{precision.name}/{precision.attention}"

    def measure(entry: dict) -> dict:
        new = {}
        for cfg in configs:
            key = f"{tag}/step/{step_shape(cfg)}"
            if (refresh or key not in entry) and key not in new:
                new[key] = round(time_step(cfg), 4)
        enc = f"{tag}/encode/{configs[0].model}"
        if refresh or enc not in entry:
            pps, qps, described = time_encoding(configs[0])
            new[enc] = [round(pps, 2), round(qps, 2), described]
        return new

    entry = cached_timings(cpu_hardware(), use_cache, measure)
    steps = {step_shape(c): entry[f"{tag}/step/{step_shape(c)}"] for c in configs}
    pps, qps, described = entry[f"{tag}/encode/{configs[0].model}"]
    return Rates(steps, pps, qps, described)


@dataclass(frozen=True)
class Estimate:
    """What a list of runs costs here: seconds, optimizer steps, the precision that runs."""

    seconds: float
    steps: int
    precision: str


def estimate_cells(configs: list) -> Estimate:
    """The estimated cost of training and evaluating ``configs`` on this machine."""
    if not configs:
        return Estimate(0.0, 0, "nothing to run")
    costs = [config_cost(c) for c in configs]
    rates = machine_rates(configs)
    return Estimate(estimate_seconds(costs, rates), sum(c.steps for c in costs), rates.precision)


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
                spread: float = ESTIMATE_SPREAD, refresh: bool = False) -> ExtrasPlan:
    """Keep the extras rows, in priority order (the scale check, then the learning-rate
    control, ...), while the estimated training and evaluation of the ones not yet run here
    fit ``budget_seconds`` (with the estimate's ``spread``); the rest are left out and named."""
    study = get_profile("extras").study
    todo = [c for c in cells(study) if c.config is not None and not is_finished(c.config)]
    if not todo:
        return ExtrasPlan(EXTRAS_PRIORITY, (), 0.0, "every extras run has finished here")
    rates = rates or machine_rates(todo, refresh=refresh)
    kept, total = [], 0.0
    for row in EXTRAS_PRIORITY:
        cost = estimate_seconds([config_cost(c.config) for c in todo if c.row == row], rates)
        if (total + cost) / spread <= budget_seconds or not kept:
            kept.append(row)
            total += cost
    partners_cost = estimate_seconds([config_cost(c.config) for c in todo
                                      if c.row not in EXTRAS_PRIORITY], rates)
    total += partners_cost
    left = tuple(r for r in EXTRAS_PRIORITY if r not in kept)
    minutes = f"about {total / 60:.0f} min of runs here"
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
