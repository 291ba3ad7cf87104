"""What a run costs on the machine at hand: step and encoding rates, measured and remembered.

``machine_rates`` times one optimizer step per step shape and the evaluation encoding speed,
in the precision and attention kernel training uses, once per machine (in the precision
cache), so ``estimate_cells`` says in a second how long a chapter's runs take here. The
estimate only informs: what a profile runs never depends on it.
"""

from __future__ import annotations

import functools
import random
import time
from dataclasses import dataclass

import torch

from clp_utils.base.precision import (
    autocast,
    cached_timings,
    cpu_hardware,
    decide,
    training_attention,
)
from clp_utils.batching import Example, load_training_data
from clp_utils.models import load_model
from clp_utils.retrieval import encode_batch_size, encode_passages, encode_queries
from clp_utils.train_config import TrainConfig
from clp_utils.training import prepare_model, step_loss, study_loss


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


def step_shape(config) -> str:
    """What sets a training step's cost: model, loss, policy, batch, negatives, lengths."""
    c, mc = config, config.mining
    return (f"{c.model}/{c.loss}/{c.policy}/b{c.batch_size}/k{mc.num_negatives}"
            f"/m{mc.neg_queries}/len{c.max_passage_len}/inbatch{int(c.in_batch)}")


def estimate_seconds(costs: list[RunCost], rates: Rates) -> float:
    """Seconds the runs take at ``rates``: steps at their shape's step time plus the encoding
    of passages and queries (mining, checkpoints and varying padding left out)."""
    return sum(c.steps * rates.step_seconds[c.shape] + c.passages / rates.passages_per_second
               + c.queries / rates.queries_per_second for c in costs)


_load_data = functools.lru_cache(maxsize=4)(load_training_data)


def dataset_of(config) -> tuple:
    """``batching.load_training_data(config)`` (in-domain, out-of-domain), cached for every
    config sharing the data (an estimate looks at the same split a dozen times)."""
    return _load_data(TrainConfig(split=config.split, passages=config.passages,
                                  val_fraction=config.val_fraction, ood_split=config.ood_split,
                                  ood_passages=config.ood_passages))


def _timing_examples(config, n: int, seed: int = 0):
    """``n`` training groups of real texts from the training split (no mining needed: a
    step's time depends on the texts' lengths, not on which passage is negative)."""
    split = dataset_of(config)[0].train()
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
    return out, m


def time_step(config, repeats: int = 2) -> float:
    """Seconds of one optimizer step of ``config`` here (forward, backward, fused AdamW, one
    host synchronisation; training's precision and attention kernel): the fastest of
    ``repeats`` after a warm-up step (the first steps still allocate)."""
    examples, m = _timing_examples(config, config.batch_size)
    torch.manual_seed(config.seed)
    model, _ = prepare_model(config)
    precision = decide(config.bf16, str(model.device))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay,
                                  fused=True)  # the trainer's adamw_torch_fused
    loss = study_loss(model, config, m)
    model.train()
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        with autocast(precision), training_attention(precision):
            parts = step_loss(model, examples, config, m, st_loss=loss)
        optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        optimizer.step()
        parts["loss"].item()  # the logged value's host synchronisation
        times.append(time.perf_counter() - t0)
    return min(times[1:])


def time_encoding(config, n: int = 192) -> tuple[float, float, str]:
    """(passages/s, queries/s, precision) of evaluation encoding of ``n`` test passages and
    queries of ``config``'s data with its base model, after a warm-up batch of each."""
    model = load_model(config.model)
    precision = decide(config.bf16, str(model.device))
    test = dataset_of(config)[0].test()
    rng = random.Random(0)
    warm = encode_batch_size(model)
    pools = ([test.corpus[p]["text"] for p in sorted(test.corpus)],
             [q["text"] for q in test.queries.values()])
    rates = []
    for encode, pool in zip((encode_passages, encode_queries), pools, strict=True):
        texts = rng.sample(pool, min(n + warm, len(pool)))
        encode(model, texts[:warm], progress=False, bf16=precision.bf16)
        # a set smaller than the warm-up batch plus n (the smoke profile's 30 Hindi passages)
        # is timed whole, a second time, rather than on nothing
        timed = texts[warm:] if len(texts) - warm >= warm else texts
        t0 = time.perf_counter()
        encode(model, timed, progress=False, bf16=precision.bf16)
        rates.append(len(timed) / (time.perf_counter() - t0))
    return rates[0], rates[1], precision.describe()


def config_cost(config) -> RunCost:
    """What one run of ``config`` does: its steps (every training query when it trains on
    all) and the texts its evaluation encodes (test corpus and queries, validation queries,
    the out-of-domain set)."""
    ds, ood = dataset_of(config)
    passages = len(ds.test().corpus) + (len(ood.test().corpus) if ood else 0)
    queries = len(ds.test().queries) + (len(ood.test().queries) if ood else 0)
    if ds.has_validation:
        queries += len(ds.validation().queries)
    n = config.train_queries if config.train_queries is not None else len(ds.train().queries)
    return RunCost(step_shape(config), (n // config.batch_size) * config.epochs, passages,
                   queries)


def machine_rates(configs: list, use_cache: bool = True) -> Rates:
    """This machine's rates for ``configs`` (one timed step per step shape, the encoding speed
    of the first config's model), remembered per machine (the precision cache, keyed by the
    CPU and torch): a shape or model timed once here is not timed again."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = decide(configs[0].bf16, device)
    tag = f"rates/{device}/{precision.name}/{precision.attention}"

    def measure(entry: dict) -> dict:
        new = {}
        for cfg in configs:
            key = f"{tag}/step/{step_shape(cfg)}"
            if key not in entry and key not in new:
                new[key] = round(time_step(cfg), 4)
        enc = f"{tag}/encode/{configs[0].model}"
        if enc not in entry or min(entry[enc][:2]) <= 0:  # none, or a reading of nothing
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
