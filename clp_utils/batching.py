"""From mined negatives to batches: training groups, no-duplicate batches, false in-batch
negatives, and the data a run trains on.

``load_training_data`` gives a run its dataset (subset and validation carved as configured);
``training_records`` its mined groups (from the mining cache); ``to_examples`` turns them into
``Example`` groups (a query, its positive, k negatives, each with its own queries), and
``make_batches`` into the epoch's batches, in which no passage appears twice when in-batch
negatives are on (``no_duplicate_batches``; ``false_in_batch_negatives`` measures why).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from clp_utils.catalog import load_named
from clp_utils.data import RetrievalDataset
from clp_utils.mining import mine
from clp_utils.models import load_model
from clp_utils.train_config import VAL_SEED, TrainConfig


def load_training_data(config: TrainConfig) -> tuple[RetrievalDataset, RetrievalDataset | None]:
    """The in-domain dataset (subset, validation carved as configured) and the out-of-domain one."""
    ds = load_named(config.split).sized(config.passages, seed=0)
    ds = ds.with_validation(config.val_fraction, seed=VAL_SEED)
    ood = None
    if config.ood_split:
        ood = load_named(config.ood_split).sized(config.ood_passages, seed=0)
    return ds, ood



def select_queries(train_qids: list[str], n: int | None, seed: int) -> list[str]:
    """``n`` training queries sampled with ``seed`` (all, in sorted order, when ``n`` is None)."""
    qids = sorted(train_qids)
    if n is None or n >= len(qids):
        return qids
    rng = np.random.default_rng(seed)
    return [qids[i] for i in sorted(rng.choice(len(qids), n, replace=False))]


@dataclass
class Example:
    """One training group: a query, its positive, k negatives, each with m own-query slots."""

    query: str
    pos: str
    negs: list[str]
    neg_qs: list[list[str]]  # k lists of m texts ("" where masked)
    mask: list[float]  # k*m, j-major
    pos_id: str = ""
    neg_ids: list[str] = field(default_factory=list)

    @property
    def passage_ids(self) -> set[str]:
        """The passages this group puts into a batch (positive and negatives)."""
        return {self.pos_id or self.pos, *(self.neg_ids or self.negs)}


def to_examples(records: list[dict], k: int, m: int) -> tuple[list[Example], int]:
    """Training groups from mined records; records with fewer than k negatives are skipped."""
    out, short = [], 0
    for r in records:
        if len(r["neg"]) < k:
            short += 1
            continue
        neg_qs, mask = [], []
        for qs in r["neg_q"][:k]:
            slots = list(qs[:m]) + [""] * (m - len(qs[:m]))
            neg_qs.append(slots)
            mask += [1.0 if t else 0.0 for t in slots]
        out.append(Example(r["query"], r["pos"], list(r["neg"][:k]), neg_qs, mask,
                           r.get("pos_id", ""), list(r.get("neg_ids", []))[:k]))
    return out, short


def random_batches(n: int, batch_size: int, seed: int) -> list[list[int]]:
    """Plain shuffled batches (the last incomplete one dropped)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return [order[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def no_duplicate_batches(examples: list[Example], batch_size: int, seed: int) -> list[list[int]]:
    """Shuffled batches in which no passage appears twice among positives and negatives.

    sentence-transformers' ``NoDuplicatesBatchSampler`` rule on passage ids: walk a seeded
    permutation and put a group into the current batch unless one of its passages is
    already there; a group that collides waits for a later batch. Groups left over when no
    full batch can be formed are dropped. Why: with in-batch negatives, a passage that is
    query i's positive and also sits in the batch as another group's passage is scored as a
    negative of query i, pushing i away from its own passage (a false in-batch negative);
    SQuADShifts has ~5 questions per passage, so this happens often in plain batches.
    """
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(seed)).tolist()
    batches = []
    while len(order) >= batch_size:
        batch, used, rest = [], set(), []
        for i in order:
            ids = examples[i].passage_ids
            if len(batch) < batch_size and not ids & used:
                batch.append(i)
                used |= ids
            else:
                rest.append(i)
        if len(batch) < batch_size:
            break
        batches.append(batch)
        order = rest
    return batches


def false_in_batch_negatives(examples: list[Example], batches: list[list[int]]) -> dict[str, float]:
    """How often batches hold false in-batch negatives.

    A false in-batch negative is a (query, passage) pair where the passage is the query's
    own positive but also enters the batch through another group (as that group's positive
    or hard negative), so in-batch InfoNCE scores it as a negative of the query. Returns the
    share of batches with at least one, their mean count per batch, and the share of queries
    affected.
    """
    hits, affected, queries = [], 0, 0
    for batch in batches:
        count = 0
        for i in batch:
            others = [examples[j] for j in batch if j != i]
            own = examples[i].pos_id or examples[i].pos
            if any(own in e.passage_ids for e in others):
                count += 1
        hits.append(count)
        affected += count
        queries += len(batch)
    return {"batches": len(batches),
            "share_of_batches_with_false_negative":
                float(np.mean([h > 0 for h in hits])) if hits else 0.0,
            "false_negatives_per_batch": float(np.mean(hits)) if hits else 0.0,
            "share_of_queries_affected": affected / max(1, queries)}


def batch_report(config: TrainConfig) -> pd.DataFrame:
    """False in-batch negatives of the config's first-epoch batches, plain vs no-duplicate.

    Mines (or reads from the mining cache) the config's training groups and counts, for a
    plain shuffled batching and for ``no_duplicate_batches`` with the same seed, the share
    of batches holding a false in-batch negative, their number per batch and the share of
    queries affected.
    """
    records = training_records(config)
    examples, _ = to_examples(records, config.mining.num_negatives, 1)
    seed = config.seed * 1000
    plain = random_batches(len(examples), config.batch_size, seed)
    dedup = no_duplicate_batches(examples, config.batch_size, seed)
    return pd.DataFrame({"plain shuffled batches": false_in_batch_negatives(examples, plain),
                         "no-duplicate batches (used)":
                             false_in_batch_negatives(examples, dedup)}).T


def make_batches(examples: list[Example], config: TrainConfig, epoch: int) -> list[list[int]]:
    """The epoch's batches (global batch size; ranks slice them), seeded by seed and epoch."""
    seed = config.seed * 1000 + epoch
    if config.no_duplicates and config.in_batch:  # without in-batch negatives nothing collides
        return no_duplicate_batches(examples, config.batch_size, seed)
    return random_batches(len(examples), config.batch_size, seed)


def queries_per_negative(config: TrainConfig, records: list[dict]) -> int:
    """m: 1 for the paper's variant, else the configured H* size (or the largest found)."""
    if config.variant == "paper":
        return 1
    if isinstance(config.mining.neg_queries, int):
        return config.mining.neg_queries
    return max((len(qs) for r in records for qs in r["neg_q"]), default=1)


def training_records(config: TrainConfig, model=None, progress: bool = False) -> list[dict]:
    """The mined records a run trained on (first round), from the mining cache when present."""
    ds, _ = load_training_data(config)
    train_split = ds.train()
    qids = select_queries(list(train_split.queries), config.train_queries, config.seed)
    model = model or load_model(config.model)
    return mine(model, train_split, config.mining, model_id=config.model, data_checksum=ds.checksum,
                query_ids=qids, progress=progress).records


# --------------------------------------------------------------------------- the step
