"""What decides a run: ``TrainConfig``, every field checked at construction.

A run is one ``TrainConfig`` (``clp_utils.training.train``); its id hashes the fields that
determine its numbers (``science``; ``runstore.run_id``). A bad value fails at construction
with a message naming the field, before any mining or training starts (the command line
turns it into one line and exit code 2).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields

from clp_utils.base.precision import normalize_setting
from clp_utils.catalog import DATASETS, known_dataset
from clp_utils.losses import DEFAULT_TAU, VARIANTS
from clp_utils.mining import MiningConfig
from clp_utils.moe import ROUTINGS
from clp_utils.policies import POLICIES

LOSSES = ("infonce", "clp", "infonce_symmetric", "gist", "mnrl_hardness")
SCHEDULES = ("linear", "constant")
#: Fields that do not change a run's numbers: how it is named and how often it checkpoints.
BOOKKEEPING = ("label", "checkpoint_every")
#: The validation side's seed: one split for every run and seed of a dataset.
VAL_SEED = 0


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a run, and its bookkeeping (``BOOKKEEPING``: the label that
    names it for people, the checkpoint interval), stored with it but not hashed."""

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
    # "auto": bf16 autocast only where the hardware computes bf16 natively (machinery.precision)
    bf16: bool | str = "auto"
    attention_dropout: float | None = None  # None: the model's own (MiniLM: 0.1)
    no_duplicates: bool = True  # no passage twice among a batch's positives and negatives
    checkpoint_every: int = 10
    dropout: bool = True  # False: every dropout at 0 (to compare 1 vs N processes exactly)
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
        norm = normalize_setting(self.bf16)  # ValueError names the accepted values
        object.__setattr__(self, "bf16", "auto" if norm == "auto" else norm == "true")
        _validate(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Inverse of ``dataclasses.asdict`` (unknown keys are an error)."""
        if unknown := set(d) - {f.name for f in fields(cls)}:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**d)


def science(config: TrainConfig) -> dict:
    """The fields that determine a run's numbers (every field but ``BOOKKEEPING``)."""
    return {k: v for k, v in asdict(config).items() if k not in BOOKKEEPING}


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


def _validate(c: TrainConfig) -> None:
    for name in ("label", "model", "split"):
        if not isinstance(getattr(c, name), str):
            raise TypeError(f"{name} must be a string, got {getattr(c, name)!r}")
    if not c.model or not c.split:
        raise ValueError("model and split must not be empty")
    for name in ("split", "ood_split"):
        value = getattr(c, name)
        if isinstance(value, str) and not known_dataset(value):
            raise ValueError(f"{name} must be one of {list(DATASETS)} or 'miracl-<language>', "
                             f"got {value!r}")
    for name, options in (("loss", LOSSES), ("variant", VARIANTS), ("policy", POLICIES),
                          ("moe_routing", ROUTINGS), ("schedule", SCHEDULES)):
        if getattr(c, name) not in options:
            raise ValueError(f"{name} must be one of {list(options)}, got {getattr(c, name)!r}")
    for name in ("in_batch", "no_duplicates", "dropout", "freeze_embeddings", "test_eval"):
        if not isinstance(getattr(c, name), bool):
            raise TypeError(f"{name} must be true or false, got {getattr(c, name)!r}")
    for name in ("passages", "train_queries", "ood_passages"):
        _number(name, getattr(c, name), integer=True, lo=1, optional=True)
    for name in ("moe_experts", "lora_rank", "epochs", "batch_size", "max_query_len",
                 "max_passage_len", "checkpoint_every"):
        _number(name, getattr(c, name), integer=True, lo=1)
    _number("seed", c.seed, integer=True, lo=0)
    _number("moe_top_k", c.moe_top_k, integer=True, lo=1, hi=c.moe_experts)
    for name in ("tau", "lr"):
        _number(name, getattr(c, name), lo=0.0, lo_open=True)
    for name, hi in (("lam", 1.0), ("warmup_ratio", 1.0), ("weight_decay", None),
                     ("moe_balance", None), ("hardness_strength", None)):
        _number(name, getattr(c, name), lo=0.0, hi=hi)
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
