"""From mined negatives to training groups: the data a run trains on.

``load_training_data`` gives a run its dataset (subset and validation carved as configured);
``training_records`` its mined groups (from the mining cache); ``to_examples`` turns them into
``Example`` groups (a query, its positive, k negatives, each with its own queries), which
``clp_utils.training`` hands to sentence-transformers' trainer as dataset columns;
``false_in_batch_negatives`` measures why its batches keep a passage out of a batch twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from clp_utils.catalog import load_named
from clp_utils.data import RetrievalDataset
from clp_utils.mining import MinedSet, mine
from clp_utils.models import load_model
from clp_utils.train_config import VAL_SEED, TrainConfig


def load_training_data(config: TrainConfig) -> tuple[RetrievalDataset, RetrievalDataset | None]:
    """The in-domain dataset (subset, validation carved as configured) and the out-of-domain one."""
    ds = load_named(config.split).sized(config.passages, seed=0)
    ood = load_named(config.ood_split).sized(config.ood_passages, seed=0) \
        if config.ood_split else None
    return ds.with_validation(config.val_fraction, seed=VAL_SEED), ood


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
    kept = [r for r in records if len(r["neg"]) >= k]
    out = []
    for r in kept:
        neg_qs = [list(qs[:m]) + [""] * (m - len(qs[:m])) for qs in r["neg_q"][:k]]
        out.append(Example(r["query"], r["pos"], list(r["neg"][:k]), neg_qs,
                           [1.0 if t else 0.0 for slots in neg_qs for t in slots],
                           r.get("pos_id", ""), list(r.get("neg_ids", []))[:k]))
    return out, len(records) - len(kept)


def false_in_batch_negatives(examples: list[Example], batches: list[list[int]]) -> dict[str, float]:
    """How often batches hold false in-batch negatives: a query whose own positive also
    enters its batch through another group (as that group's positive or hard negative), so
    in-batch InfoNCE scores it as a negative. Returns the number of batches, the share of
    batches with at least one, their mean count per batch and the share of queries affected.
    """
    own = [e.pos_id or e.pos for e in examples]
    hits = [sum(any(own[i] in examples[j].passage_ids for j in batch if j != i) for i in batch)
            for batch in batches]
    return {"batches": len(batches),
            "share_of_batches_with_false_negative":
                float(np.mean([h > 0 for h in hits])) if hits else 0.0,
            "false_negatives_per_batch": float(np.mean(hits)) if hits else 0.0,
            "share_of_queries_affected": sum(hits) / max(1, sum(map(len, batches)))}


def queries_per_negative(config: TrainConfig, records: list[dict]) -> int:
    """m: 1 for the paper's variant, else the configured H* size (or the largest found)."""
    if config.variant == "paper":
        return 1
    if isinstance(config.mining.neg_queries, int):
        return config.mining.neg_queries
    return max((len(qs) for r in records for qs in r["neg_q"]), default=1)


def mined_groups(config: TrainConfig, ds: RetrievalDataset, model,
                 progress: bool = False) -> MinedSet:
    """The run's training queries (``select_queries``) of ``ds`` and their mined negatives,
    each with its own queries (first round; from the mining cache when present)."""
    train_split = ds.train()
    qids = select_queries(list(train_split.queries), config.train_queries, config.seed)
    return mine(model, train_split, config.mining, model_id=config.model,
                data_checksum=ds.checksum, query_ids=qids, progress=progress)


def training_records(config: TrainConfig, model=None, progress: bool = False) -> list[dict]:
    """The mined records a run trained on (``mined_groups`` of its data)."""
    ds, _ = load_training_data(config)
    return mined_groups(config, ds, model or load_model(config.model), progress).records
