"""Train one configured run: mine, fine-tune, evaluate; resumable, reusable, torchrun-ready.

``train(config)`` is the study's single entry point (``python -m clp_utils.training`` is the
same from the shell, and ``torchrun --nproc_per_node N -m clp_utils.training ...`` runs it on
several processes). A run lives in ``results/runs/<run-id>/``, where the run id is a hash of
the config and the data checksum, so a finished run is reused and a changed parameter never
reuses a stale one:

    config.json     the config, the data checksum, parameter counts, mining summary
    log.csv         per step: loss, its two parts, learning rate, MoE routing statistics
    checkpoint.pt   the latest state (model, optimizer, scheduler, RNG, log), while training
    model/          the fine-tuned model (reloads with plain ``SentenceTransformer(path)``)
    run.trec, metrics.json, per_query.csv          in-domain test evaluation
    ood/run.trec, ood/metrics.json, ...            out-of-domain (forgetting) evaluation

The loop is plain PyTorch rather than ``SentenceTransformerTrainer``: it has to re-mine
between epochs, log routing statistics per step and resume bit-for-bit after a kill, and each
of those is a few lines here. The losses are the sentence-transformers losses of
``clp_utils.losses``' functional core, so the same objective also drops into the trainer.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from clp_utils.data import DATA_DIR, RetrievalDataset
from clp_utils.evaluation import RetrievalResult, evaluate_model, evaluate_run, read_trec
from clp_utils.io import atomic_dir, atomic_write, stable_hash, write_json
from clp_utils.losses import DEFAULT_TAU, VARIANTS, clp_loss, info_nce
from clp_utils.mining import MiningConfig, mine
from clp_utils.models import load_model
from clp_utils.paths import RESULTS_DIR
from clp_utils.policies import apply_policy, merge_lora
from clp_utils.precision import (
    Precision,
    autocast,
    decide,
    enable_tf32,
    normalize_setting,
    training_attention,
)

LOSSES = ("infonce", "clp", "infonce_symmetric", "gist", "mnrl_hardness")
POLICIES = ("full", "intermediate", "moe", "lora")
SCHEDULES = ("linear", "constant")
#: The validation side's seed: one split for every run and seed of a dataset.
VAL_SEED = 0


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a run. ``label`` names it for people and is not hashed.

    Every field is checked at construction (type and range), so a bad value fails at once
    with a message naming the field, before any mining or training starts.
    """

    label: str = ""
    model: str = "minilm"
    split: str = "reddit"
    passages: int | None = None  # keep a subset of the split's passages (smoke profile)
    train_queries: int | None = None  # training queries sampled with the seed; None = all
    mining: MiningConfig = field(default_factory=MiningConfig)
    loss: str = "clp"  # "infonce" | "clp" | "infonce_symmetric" | "gist" | "mnrl_hardness"
    variant: str = "paper"  # CLP penalty: "paper" (mean) | "sum" (published formula)
    lam: float = 0.1
    tau: float = DEFAULT_TAU
    in_batch: bool = True
    hardness_strength: float = 5.0  # loss="mnrl_hardness": EmbeddingGemma's alpha
    policy: str = "full"  # "full" | "intermediate" | "moe" | "lora"
    moe_experts: int = 2
    moe_top_k: int = 1
    moe_routing: str = "paper"  # "paper" | "learned"
    moe_balance: float = 0.0
    lora_rank: int = 8
    seed: int = 0
    epochs: int = 1
    batch_size: int = 16
    lr: float = 2e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    schedule: str = "linear"  # after warmup: "linear" decay to 0 | "constant" (learning curves)
    max_query_len: int = 64
    max_passage_len: int = 256
    # "auto": bf16 autocast only where the hardware computes bf16 natively (clp_utils.precision)
    bf16: bool | str = "auto"
    attention_dropout: float | None = None  # None: the model's own (MiniLM: 0.1)
    no_duplicates: bool = True  # no passage twice among a batch's positives and negatives
    remine_each_epoch: bool = False  # ANCE rounds: re-mine with the current model
    checkpoint_every: int = 10
    dropout: bool = True  # False trains in eval mode (used to compare 1 vs N processes exactly)
    freeze_embeddings: bool = False  # word embeddings fixed (saves memory with big vocabularies)
    val_fraction: float = 0.1  # train passages carved out for validation (by passage, VAL_SEED)
    val_at: tuple[int, ...] = ()  # steps at which the validation queries are scored in training
    test_eval: bool = True  # False: score validation only (design runs never see test queries)
    ood_split: str | None = "new_wiki"
    ood_passages: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.mining, dict):
            object.__setattr__(self, "mining", MiningConfig(**self.mining))
        if isinstance(self.val_at, list):
            object.__setattr__(self, "val_at", tuple(self.val_at))
        object.__setattr__(self, "bf16", _bf16_setting(self.bf16))
        _validate(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Inverse of ``dataclasses.asdict`` (unknown keys are an error)."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**d)


def _bf16_setting(value) -> bool | str:
    norm = normalize_setting(value)  # ValueError names the accepted values
    return "auto" if norm == "auto" else norm == "true"


def _number(name: str, value, *, integer: bool = False, lo: float | None = None,
            hi: float | None = None, lo_open: bool = False, hi_open: bool = False,
            optional: bool = False) -> None:
    """Type and range check of one numeric field; raises naming the field."""
    if value is None and optional:
        return
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        want = "an integer" if integer else "a number"
        raise TypeError(f"{name} must be {want}{' or None' if optional else ''}, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and (value >= hi if hi_open else value > hi):
        raise ValueError(f"{name} must be {'<' if hi_open else '<='} {hi}, got {value!r}")


def _choice(name: str, value, options) -> None:
    if value not in options:
        raise ValueError(f"{name} must be one of {list(options)}, got {value!r}")


def _validate(c: TrainConfig) -> None:
    for name in ("label", "model", "split"):
        if not isinstance(getattr(c, name), str):
            raise TypeError(f"{name} must be a string, got {getattr(c, name)!r}")
    if not c.model or not c.split:
        raise ValueError("model and split must not be empty")
    _choice("loss", c.loss, LOSSES)
    _choice("variant", c.variant, VARIANTS)
    _choice("policy", c.policy, POLICIES)
    _choice("moe_routing", c.moe_routing, ("paper", "learned"))
    _choice("schedule", c.schedule, SCHEDULES)
    for name in ("in_batch", "no_duplicates", "remine_each_epoch", "dropout", "freeze_embeddings",
                 "test_eval"):
        if not isinstance(getattr(c, name), bool):
            raise TypeError(f"{name} must be true or false, got {getattr(c, name)!r}")
    for name in ("passages", "train_queries", "ood_passages"):
        _number(name, getattr(c, name), integer=True, lo=1, optional=True)
    for name in ("moe_experts", "lora_rank", "epochs", "batch_size", "max_query_len",
                 "max_passage_len", "checkpoint_every"):
        _number(name, getattr(c, name), integer=True, lo=1)
    _number("seed", c.seed, integer=True, lo=0)
    _number("moe_top_k", c.moe_top_k, integer=True, lo=1, hi=c.moe_experts)
    _number("lam", c.lam, lo=0.0, hi=1.0)
    _number("tau", c.tau, lo=0.0, lo_open=True)
    _number("lr", c.lr, lo=0.0, lo_open=True)
    _number("warmup_ratio", c.warmup_ratio, lo=0.0, hi=1.0)
    _number("weight_decay", c.weight_decay, lo=0.0)
    _number("moe_balance", c.moe_balance, lo=0.0)
    _number("hardness_strength", c.hardness_strength, lo=0.0)
    if c.loss in ("infonce_symmetric", "gist", "mnrl_hardness") and not c.in_batch:
        raise ValueError(f"loss {c.loss!r} scores in-batch negatives: it needs in_batch=true")
    if c.loss == "gist" and c.mining.num_negatives != 1:
        raise ValueError("loss 'gist' takes one hard negative per query (GISTEmbedLoss's "
                         "(anchor, positive, negative) columns); got "
                         f"num_negatives={c.mining.num_negatives}")
    _number("attention_dropout", c.attention_dropout, lo=0.0, hi=1.0, hi_open=True, optional=True)
    _number("val_fraction", c.val_fraction, lo=0.0, hi=1.0, hi_open=True)
    for step in c.val_at:
        _number("val_at", step, integer=True, lo=1)
    if not c.test_eval and c.val_fraction == 0:
        raise ValueError("test_eval=False scores validation only: it needs val_fraction > 0")
    if c.ood_split is not None and not isinstance(c.ood_split, str):
        raise TypeError(f"ood_split must be a string or None, got {c.ood_split!r}")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if c.batch_size % world:
        raise ValueError(f"batch_size {c.batch_size} is not divisible by the world size {world}")


@dataclass
class RunResult:
    """A finished run: where it lives and its evaluations (test, validation, out-of-domain)."""

    run_id: str
    run_dir: Path
    config: TrainConfig
    in_domain: RetrievalResult | None  # None for a validation-only run (test_eval=False)
    ood: RetrievalResult | None
    val: RetrievalResult | None = None

    @property
    def metrics(self) -> dict[str, float]:
        """Test metrics (empty for a validation-only run)."""
        return self.in_domain.metrics if self.in_domain is not None else {}


# --------------------------------------------------------------------------- data


def load_training_data(config: TrainConfig) -> tuple[RetrievalDataset, RetrievalDataset | None]:
    """The in-domain dataset (subset, validation carved as configured) and the out-of-domain one."""
    from clp_utils.catalog import load_named

    ds = load_named(config.split).sized(config.passages, seed=0)
    ds = ds.with_validation(config.val_fraction, seed=VAL_SEED)
    ood = None
    if config.ood_split:
        ood = load_named(config.ood_split).sized(config.ood_passages, seed=0)
    return ds, ood


def run_id(config: TrainConfig, data_checksum: str, precision: Precision | None = None) -> str:
    """``<label>-<hash of config, data and precision>``; the label is not part of the hash.

    Every field of the config enters the hash with its value, defaults included: editing a
    default of ``TrainConfig`` (or ``MiningConfig``) gives every affected run a new id, so a
    run trained under the old value is never read back as if it had the new one. (Hashing
    only the non-default fields, as this function once did, let a changed default reuse
    stale runs.) With ``precision``, the hash holds what ran (bf16 or not, the attention
    kernel) instead of the setting, so ``bf16="auto"`` and an explicit ``bf16=True`` on a
    bf16 machine are the same run.
    """
    key = {k: v for k, v in asdict(config).items() if k != "label"}
    key["bf16"] = precision.bf16 if precision is not None else config.bf16
    if precision is not None:
        key["attention"] = precision.attention
    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in (config.label or config.loss))
    return f"{slug}-{stable_hash([key, data_checksum])}"


def check_same_config(stored: TrainConfig, wanted: TrainConfig, run_dir: Path) -> None:
    """Refuse to reuse a run folder whose stored config differs from the one asked for
    (labels aside): a finished run is never read back for another config."""
    a, b = asdict(replace(stored, label="")), asdict(replace(wanted, label=""))
    if a != b:
        diff = sorted(k for k in a if a[k] != b.get(k))
        raise RuntimeError(f"{run_dir / 'config.json'}: the run stored here was trained with "
                           f"other values of {diff} than the config asked for; delete the "
                           "folder to retrain it")


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


def embed(model, texts: list[str], max_len: int, kind: str = "query") -> torch.Tensor:
    """Sentence embeddings with gradients, truncated to ``max_len`` tokens.

    ``kind`` picks the model's own prompt (``"query"`` or ``"passage"``/``"document"``), so a
    model like multilingual-e5 trains with the same "query: "/"passage: " prefixes it is
    evaluated with.
    """
    return model(features(model, texts, max_len, kind))["sentence_embedding"]


def features(model, texts: list[str], max_len: int, kind: str = "query") -> dict[str, torch.Tensor]:
    """Tokenised inputs on the model's device, with the model's own prompt for ``kind``."""
    prompts = getattr(model, "prompts", None) or {}
    names = ("query",) if kind == "query" else ("passage", "document")
    prefix = next((prompts[n] for n in names if prompts.get(n)), "")
    model.max_seq_length = max_len
    # preprocess(prompt=...) is what encode(prompt_name=...) does, so training sees the exact
    # inputs evaluation sees.
    out = model.preprocess(texts, prompt=prefix or None)
    return {k: v.to(model.device) for k, v in out.items() if isinstance(v, torch.Tensor)}


def ecosystem_loss(model, config: TrainConfig, gather: bool = False):
    """The sentence-transformers loss behind ``loss="infonce_symmetric"``, ``"gist"`` or
    ``"mnrl_hardness"`` (else None).

    - ``infonce_symmetric``: ``MultipleNegativesRankingLoss`` (scale ``1/tau``) with
      ``directions=("query_to_doc", "doc_to_query")`` and ``partition_mode="per_direction"``:
      InfoNCE from each query over the batch's passages plus InfoNCE from each positive
      passage over the batch's queries, averaged. The passage-to-query term is the field's
      standard way to pull passages toward their queries, the kind of term CLP's penalty is.

    - ``gist``: ``GISTEmbedLoss`` with the zero-shot model as guide (frozen): an in-batch
      candidate the guide scores above the query's own positive is masked as a likely false
      negative. Temperature ``tau``; otherwise sentence-transformers' defaults.
    - ``mnrl_hardness``: ``MultipleNegativesRankingLoss`` (scale ``1/tau``) with hardness
      weighting of the explicit hard negatives, ``hardness_strength * stop_grad(cos)`` added to
      their logits (EmbeddingGemma's ``hard_negatives`` mode).
    Both answer the problem CLP answers (hard negatives that are not really negative) with
    the ecosystem's tools, so they run beside CLP at the same budget.
    """
    from sentence_transformers.sentence_transformer import losses as st_losses

    if config.loss == "infonce_symmetric":
        return st_losses.MultipleNegativesRankingLoss(
            model, scale=1.0 / config.tau, directions=("query_to_doc", "doc_to_query"),
            partition_mode="per_direction", gather_across_devices=gather)
    if config.loss == "mnrl_hardness":
        return st_losses.MultipleNegativesRankingLoss(
            model, scale=1.0 / config.tau, hardness_mode="hard_negatives",
            hardness_strength=config.hardness_strength, gather_across_devices=gather)
    if config.loss == "gist":
        guide = load_model(config.model, device=str(model.device))
        guide.eval()
        guide.requires_grad_(False)
        return st_losses.GISTEmbedLoss(model, guide, temperature=config.tau,
                                       gather_across_devices=gather)
    return None


def step_loss(model, batch: list[Example], config: TrainConfig, m: int, gather: bool,
              st_loss=None) -> dict[str, torch.Tensor]:
    """Forward passes of one (local) batch and the configured loss with its parts.

    ``st_loss`` is the run's ``ecosystem_loss`` (built once per run) for the
    sentence-transformers losses.
    """
    b, k = len(batch), len(batch[0].negs)
    queries = [e.query for e in batch]
    if config.loss == "gist":
        # GISTEmbedLoss embeds each column itself (model and guide): anchor, positive, negative.
        cols = [features(model, queries, config.max_query_len),
                features(model, [e.pos for e in batch], config.max_passage_len, "passage"),
                features(model, [e.negs[0] for e in batch], config.max_passage_len, "passage")]
        contrastive = st_loss(cols, None)
        return {"loss": contrastive, "contrastive": contrastive,
                "penalty": torch.zeros((), device=contrastive.device, dtype=contrastive.dtype)}
    passages = [e.pos for e in batch] + [n for e in batch for n in e.negs]
    docs = embed(model, passages, config.max_passage_len, kind="passage")
    pos, negs = docs[:b], docs[b:].reshape(b, k, -1)
    if config.loss == "clp":
        # Queries and the negatives' own queries are short: one forward pass for both.
        own = [t for e in batch for slots in e.neg_qs for t in slots]
        emb = embed(model, queries + own, config.max_query_len)
        q, nq = emb[:b], emb[b:].reshape(b, k, m, -1)
        mask = torch.tensor([e.mask for e in batch], device=q.device)
        out = clp_loss(q, pos, negs, nq, mask, lam=config.lam, tau=config.tau,
                       variant=config.variant, in_batch=config.in_batch, gather=gather)
        parts = {"loss": out.total, "contrastive": out.contrastive, "penalty": out.penalty}
    else:
        q = embed(model, queries, config.max_query_len)
        if config.loss in ("mnrl_hardness", "infonce_symmetric"):
            # the columns as the trainer passes them: query, positive, negative 1..k
            contrastive = st_loss.compute_loss_from_embeddings([q, pos, *negs.unbind(1)], None)
        else:
            contrastive = info_nce(q, pos, negs, tau=config.tau, in_batch=config.in_batch,
                                   gather=gather)
        # The penalty is logged as 0 on the loss's device and dtype (a CPU zero broke
        # torch.stack of the logged parts on CUDA).
        parts = {"loss": contrastive, "contrastive": contrastive,
                 "penalty": torch.zeros((), device=contrastive.device, dtype=contrastive.dtype)}
    if config.policy == "moe" and config.moe_balance > 0:
        from clp_utils.moe import moe_balance_loss

        balance = moe_balance_loss(model)
        parts["loss"] = parts["loss"] + balance
        parts["balance"] = balance
    return parts


# --------------------------------------------------------------------------- the loop


def _distributed() -> tuple[int, int]:
    """(rank, world size); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if world > 1:
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def prepare_model(config: TrainConfig, device: str | None = None):
    """Load the base model and apply the parameter policy; returns (model, counts)."""
    model = load_model(config.model, device=device)
    kwargs = {}
    if config.policy == "moe":
        kwargs = dict(num_experts=config.moe_experts, top_k=config.moe_top_k,
                      routing=config.moe_routing, seed=config.seed, balance_coef=config.moe_balance)
    elif config.policy == "lora":
        kwargs = dict(r=config.lora_rank)
    counts = apply_policy(model, config.policy, **kwargs)
    if config.freeze_embeddings:
        from clp_utils.moe import transformer_module
        from clp_utils.policies import count_parameters

        transformer_module(model).auto_model.get_input_embeddings().requires_grad_(False)
        counts = count_parameters(model, config.policy + "+frozen-embeddings")
    if config.attention_dropout is not None:
        set_attention_dropout(model, config.attention_dropout)
    return model, counts


def set_attention_dropout(model, p: float) -> int:
    """Set the dropout on attention probabilities of every self-attention module to ``p``.

    Why it matters on a CPU: with attention dropout, scaled-dot-product attention cannot use
    its fused (flash) kernel and falls back to the math path, which materialises and masks
    the full attention matrix, the more so the longer the passages (``make design`` scores
    the setting on validation queries; ``bench/step_profile.py`` shows where a step goes).
    Returns the number of modules changed. The saved model's config is not touched.
    """
    changed = 0
    for module in model.modules():
        name = type(module).__name__
        drop = getattr(module, "dropout", None)
        attention = name.endswith(("SelfAttention", "CrossAttention"))
        if attention and isinstance(drop, torch.nn.Dropout):
            drop.p = p
            changed += 1
    if not changed:
        raise ValueError("attention_dropout is set but the model has no attention dropout "
                         "to change")
    return changed


def make_optimizer(params: list[torch.nn.Parameter], config: TrainConfig,
                   device: torch.device | str) -> torch.optim.AdamW:
    """The run's AdamW (``config.lr``, ``config.weight_decay``) over the trainable ``params``.

    Fused where it can be (float32 parameters on a CPU or CUDA device): the same update in
    one pass over the parameters; the per-tensor loop cost a noticeable share of a short CPU
    step.
    """
    fused = (torch.device(device).type in ("cpu", "cuda")
             and all(p.dtype == torch.float32 for p in params))
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay,
                             fused=fused or None)


def train_step(model, batch: list[Example], config: TrainConfig, m: int,
               optimizer: torch.optim.Optimizer, precision: Precision, st_loss=None,
               world: int = 1) -> dict[str, torch.Tensor]:
    """One optimizer step of a (local) batch: the loss in the run's precision and attention
    kernel, backward, gradients averaged over ``world`` processes, the update. Returns the
    loss's parts (not yet synchronised to the host). ``clp_utils.budget`` times this."""
    with autocast(precision), training_attention(precision):
        parts = step_loss(model, batch, config, m, gather=world > 1, st_loss=st_loss)
    optimizer.zero_grad(set_to_none=True)
    parts["loss"].backward()
    if world > 1:
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                dist.all_reduce(p.grad)
                p.grad /= world
    optimizer.step()
    return parts


def _routing_columns(model) -> dict[str, float]:
    from clp_utils.moe import routing_stats

    row = {}
    for i, s in enumerate(routing_stats(model)):
        row[f"L{i}_expert0_load"] = s.load[0] if s.load else float("nan")
        row[f"L{i}_load_entropy"] = s.load_entropy
    return row


def train(
    config: TrainConfig,
    root: Path | None = None,
    progress: bool = True,
    stop_after_steps: int | None = None,
    device: str | None = None,
) -> RunResult:
    """Mine, fine-tune and evaluate ``config``; reuse the run if it already finished.

    Args:
        config: the run.
        root: folder of runs (default ``results/runs``).
        progress: progress bars.
        stop_after_steps: raise ``KeyboardInterrupt`` after this many optimizer steps in this
            call (used by the resume test to simulate a kill); the checkpoint survives.
        device: torch device (default: sentence-transformers' choice).
    """
    rank, world = _distributed()
    root = Path(root or RESULTS_DIR / "runs")
    ds, ood = load_training_data(config)
    if device is None and world > 1 and torch.cuda.is_available():
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    precision = decide(config.bf16, dev)
    enable_tf32()
    rid = run_id(config, ds.checksum + (ood.checksum if ood else ""), precision)
    run_dir = root / rid
    if (run_dir / "metrics.json").exists():
        done = load_run(run_dir)
        check_same_config(done.config, config, run_dir)
        return done

    torch.manual_seed(config.seed)
    model, counts = prepare_model(config, device)
    eval_len = model.max_seq_length
    train_split = ds.train()
    qids = select_queries(list(train_split.queries), config.train_queries, config.seed)
    # Every policy leaves the model equal to the base model at step 0 (MoE experts are copies,
    # LoRA's B is zero), so the base model's cached embeddings serve the first mining round.
    mined = mine(model, train_split, config.mining, model_id=config.model,
                 data_checksum=ds.checksum, query_ids=qids, progress=progress and rank == 0)
    m = queries_per_negative(config, mined.records)
    examples, short = to_examples(mined.records, config.mining.num_negatives, m)
    first_batches = make_batches(examples, config, 0)
    steps_per_epoch = len(first_batches)
    if steps_per_epoch == 0:
        raise ValueError(f"no full batch of {config.batch_size} from {len(examples)} usable "
                         "training "
                         f"groups (no_duplicates={config.no_duplicates})")
    total_steps = steps_per_epoch * config.epochs

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, config, model.device)
    from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

    warmup = math.ceil(config.warmup_ratio * total_steps)
    scheduler = (get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
                 if config.schedule == "linear"
                 else get_constant_schedule_with_warmup(optimizer, warmup))

    info = {"run_id": rid, "config": asdict(config), "data_checksum": ds.checksum,
            "data_counts": ds.counts(), "params": asdict(counts), "mining": mined.summary,
            "usable_groups": len(examples), "skipped_short_groups": short,
            "queries_per_negative": m, "steps": total_steps, "world_size": world,
            "precision": precision.record(),
            "batches": false_in_batch_negatives(examples, first_batches)}
    if rank == 0:
        write_json(run_dir / "config.json", info)

    step, log = 0, []
    ckpt = run_dir / "checkpoint.pt"
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        step, log, examples = state["step"], state["log"], [Example(**e) for e in state["examples"]]
        print(f"resuming {rid} at step {step}/{total_steps}")

    from clp_utils.moe import moe_layers, record_routing

    has_moe = bool(moe_layers(model))
    st_loss = ecosystem_loss(model, config, gather=world > 1)
    model.train(config.dropout)
    done_this_call = 0
    bar = tqdm(total=total_steps, initial=step, desc=rid, disable=not progress or rank != 0)
    for epoch in range(step // steps_per_epoch, config.epochs):
        if config.remine_each_epoch and epoch > 0 and step == epoch * steps_per_epoch:
            # ANCE round: negatives from the model as it is now (not cached: in-memory weights).
            model.max_seq_length = eval_len
            with autocast(precision):
                fresh = mine(model, train_split, config.mining, model_id=None, query_ids=qids,
                             cache_dir=None, progress=False)
            examples, _ = to_examples(fresh.records, config.mining.num_negatives, m)
            model.train(config.dropout)
        batches = first_batches if epoch == 0 else make_batches(examples, config, epoch)
        batches = batches[:steps_per_epoch]
        for b, idx in enumerate(batches):
            if epoch * steps_per_epoch + b < step:
                continue  # done before the resume
            local = config.batch_size // world
            batch = [examples[i] for i in idx[rank * local:(rank + 1) * local]]
            t0 = time.perf_counter()
            with record_routing(model) if has_moe else nullcontext():
                parts = train_step(model, batch, config, m, optimizer, precision, st_loss,
                                   world)
            scheduler.step()
            step += 1
            # The one host synchronisation per step: the logged values.
            values = torch.stack([v.detach().float() for v in parts.values()])
            if world > 1:
                dist.all_reduce(values)  # log the global batch's loss, not this rank's share
                values /= world
            row = {"step": step, "epoch": epoch, "lr": scheduler.get_last_lr()[0],
                   "seconds": round(time.perf_counter() - t0, 3),
                   **dict(zip(parts, values.tolist(), strict=True))}
            if has_moe:
                row.update(_routing_columns(model))
            if step in config.val_at and rank == 0:
                row.update(_validation_point(model, ds, eval_len, precision))
                model.train(config.dropout)
            log.append(row)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
            done_this_call += 1
            if rank == 0:
                _write_log(run_dir / "log.csv", log)
                if step % config.checkpoint_every == 0 or step == total_steps:
                    _save_checkpoint(ckpt, model, optimizer, scheduler, step, log, examples)
            if (stop_after_steps is not None and done_this_call >= stop_after_steps
                    and step < total_steps):
                bar.close()
                raise KeyboardInterrupt(f"stopped after {done_this_call} steps (simulated kill)")
    bar.close()

    model.eval()
    model.max_seq_length = eval_len
    if config.policy == "lora":
        merge_lora(model)
    if rank != 0:
        dist.barrier()
        return None  # type: ignore[return-value]
    with atomic_dir(run_dir / "model") as tmp:
        model.save(str(tmp))
    result = evaluate_run_dirs(model, rid, run_dir, ds, ood, progress, precision,
                               test=config.test_eval)
    ckpt.unlink(missing_ok=True)
    if world > 1:
        dist.barrier()
    return RunResult(rid, run_dir, config, *result)


def _validation_point(model, ds: RetrievalDataset, eval_len: int, precision: Precision) -> dict:
    """Validation nDCG@10 (and recall@100) of the model as it is now, for learning curves."""
    from clp_utils.evaluation import retrieve

    model.eval()
    train_len, model.max_seq_length = model.max_seq_length, eval_len
    val = ds.validation()
    run = retrieve(model, val, progress=False, bf16=precision.bf16)
    model.max_seq_length = train_len
    mean = evaluate_run(run, val.qrels).mean
    return {"val_ndcg_cut_10": mean["ndcg_cut_10"], "val_recall_100": mean["recall_100"]}


def evaluate_run_dirs(model, rid: str, run_dir: Path, ds: RetrievalDataset,
                      ood: RetrievalDataset | None, progress: bool = True,
                      precision: Precision | None = None, test: bool = True):
    """Evaluate test (``run_dir``), validation (``run_dir/val``) and out-of-domain
    (``run_dir/ood``); metrics files last, so a finished run is one with ``metrics.json``.

    Test and validation share one encoding of the corpus (validation searches its non-test
    part). Returns ``(test, ood, val)`` results (``None`` where a side does not exist).
    With ``test=False`` only validation is scored (no test or out-of-domain query is even
    embedded) and ``metrics.json`` in ``run_dir`` only marks the run as finished.
    """
    from clp_utils.evaluation import retrieve_splits, save_evaluation

    bf16 = precision.bf16 if precision is not None else "auto"

    def qrels_file(d: RetrievalDataset) -> Path | None:
        path = DATA_DIR / "squadshifts" / d.name / "qrels" / "test.tsv"
        return path if path.exists() else None  # a subset writes its own qrels

    if not test:
        if not ds.has_validation:
            raise ValueError("test_eval=False needs a validation side (val_fraction > 0)")
        val = ds.validation()
        runs = retrieve_splits(model, {"val": val}, progress=progress, bf16=bf16)
        val_res = save_evaluation(runs["val"], val, run_dir / "val", rid)
        write_json(run_dir / "metrics.json", {"run": None, "qrels": None, "metrics": {},
                                              "validation_only": True})
        return None, None, val_res
    ood_res = None
    if ood is not None:
        ood_res = evaluate_model(model, ood.test(), run_dir / "ood", rid,
                                 qrels_path=qrels_file(ood), progress=progress, bf16=bf16)
    sides = {"test": ds.test()}
    if ds.has_validation:
        sides["val"] = ds.validation()
    # model_id=rid caches the corpus embeddings: chapter 05 reuses them (own-query retrieval)
    runs = retrieve_splits(model, sides, model_id=rid, progress=progress, bf16=bf16)
    val_res = None
    if "val" in runs:
        val_res = save_evaluation(runs["val"], sides["val"], run_dir / "val", rid)
    in_res = save_evaluation(runs["test"], sides["test"], run_dir, rid, qrels_file(ds))
    return in_res, ood_res, val_res


def _write_log(path: Path, log: list[dict]) -> None:
    columns = list(dict.fromkeys(k for row in log for k in row))
    with atomic_write(path) as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(log)


def _save_checkpoint(path: Path, model, optimizer, scheduler, step, log, examples) -> None:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(), "step": step,
             "log": log, "examples": [asdict(e) for e in examples]}
    with atomic_write(path, "wb") as fh:
        torch.save(state, fh)


def load_run(run_dir: Path) -> RunResult:
    """Read a finished run back (no model is loaded)."""
    run_dir = Path(run_dir)
    info = json.loads((run_dir / "config.json").read_text())
    config = TrainConfig.from_dict(info["config"])

    def read(d: Path) -> RetrievalResult | None:
        if not (d / "metrics.json").exists():
            return None
        meta = json.loads((d / "metrics.json").read_text())
        if meta.get("run") is None:  # a validation-only run: no test evaluation exists
            return None
        qrels_path = Path(meta["qrels"])
        if not qrels_path.is_absolute():
            from clp_utils.paths import REPO_ROOT

            qrels_path = REPO_ROOT / qrels_path
        qrels = _read_qrels_any(qrels_path)
        run = read_trec(d / "run.trec")
        return RetrievalResult(d, run, evaluate_run(run, qrels))

    return RunResult(info["run_id"], run_dir, config, read(run_dir), read(run_dir / "ood"),
                     read(run_dir / "val"))


def _read_qrels_any(path: Path) -> dict[str, dict[str, int]]:
    """Read BEIR (``qid docid score`` with header) or TREC (``qid 0 docid rel``) qrels."""
    qrels: dict[str, dict[str, int]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if not parts or parts[0] == "query-id":
            continue
        qid, docid, rel = (parts[0], parts[2], parts[3]) if len(parts) == 4 else parts
        qrels.setdefault(qid, {})[docid] = int(rel)
    return qrels


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> None:
    """``python -m clp_utils.training --config run.json [--set key=value ...]``."""
    parser = argparse.ArgumentParser(prog="python -m clp_utils.training",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, help="JSON file with TrainConfig fields")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override fields (values parsed as JSON when they parse)")
    parser.add_argument("--root", type=Path, default=None)
    args = parser.parse_args(argv)
    d = json.loads(args.config.read_text()) if args.config else {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            d[key] = json.loads(value)
        except json.JSONDecodeError:
            d[key] = value
    try:
        config = TrainConfig.from_dict(d)
    except (TypeError, ValueError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    result = train(config, root=args.root)
    if result is not None:
        print(json.dumps({"run_id": result.run_id, "metrics": result.metrics}, indent=2))


if __name__ == "__main__":
    main()


__all__ = ["TrainConfig", "RunResult", "train", "load_run", "run_id", "replace"]
