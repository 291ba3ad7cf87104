"""The cpu profile's recipe: what ``make design`` chose on validation queries, typed.

``configs/recipe_cpu.json`` (``RECIPE_PATH``) holds the training budget, the number of
negatives, the training passage length, the attention dropout and each parameter policy's
learning rate that ``make design`` (``clp_utils.machinery.design``) chose from learning curves
and learning-rate grids scored on the validation side, plus the evidence (``why``, ``plan``,
``machine``, ``design_minutes``). ``Recipe.load`` reads and validates it;
``Recipe.train_config`` is the shared training config of every cpu-profile run.

Fixed before any run, not chosen on validation (``FIXED_A_PRIORI``): the temperature (0.05,
the field's scale 20), lambda (the paper's 0.1), the batch size (16), the ANCE window (ranks
3-30) and the training split (reddit).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from clp_utils.base.io import atomic_write
from clp_utils.base.paths import REPO_ROOT
from clp_utils.mining import MiningConfig
from clp_utils.policies import POLICIES
from clp_utils.train_config import TrainConfig

RECIPE_PATH = REPO_ROOT / "configs" / "recipe_cpu.json"
#: The settings of the cpu profile that no measurement chose (the docstring says why each).
FIXED_A_PRIORI = ("tau", "lam", "batch_size", "mining.rank_min", "mining.rank_max", "split")


@dataclass(frozen=True)
class Recipe:
    """The chosen settings and the evidence behind them (see the module docstring)."""

    split: str
    steps: int
    train_queries: int
    batch_size: int
    num_negatives: int
    max_passage_len: int
    lr: dict[str, float]
    attention_dropout: float | None = None
    val_fraction: float = 0.1
    why: dict[str, str] = field(default_factory=dict)
    plan: dict = field(default_factory=dict)
    machine: dict = field(default_factory=dict)
    design_minutes: float | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "train_queries", "batch_size", "num_negatives", "max_passage_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.train_queries != self.steps * self.batch_size:
            raise ValueError(f"train_queries ({self.train_queries}) must be steps x batch_size "
                             f"({self.steps} x {self.batch_size})")
        if set(self.lr) - set(POLICIES) or not self.lr.get("full"):
            raise ValueError(f"lr must give a rate for 'full' and only for {list(POLICIES)}; "
                             f"got {self.lr}")

    @classmethod
    def load(cls, path: Path | None = None) -> Recipe:
        """Read and validate the recipe (default ``RECIPE_PATH``); errors name the file and
        the command that rewrites it."""
        path = Path(path or RECIPE_PATH)
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: run `make design` to choose the cpu "
                                    "profile's budget and learning rates on the validation split")
        data = json.loads(path.read_text(encoding="utf-8"))
        try:  # a missing field is a TypeError naming it, a bad value a ValueError
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: {err}; rerun `make design`") from None

    def save(self, path: Path | None = None) -> None:
        """Write the recipe (atomically), as ``make design`` does."""
        with atomic_write(Path(path or RECIPE_PATH)) as fh:
            json.dump(asdict(self), fh, indent=2)
            fh.write("\n")

    def train_config(self, **overrides) -> TrainConfig:
        """The shared training config of the cpu profile's runs (the full policy's rate as
        ``lr``; each row's policy takes its own rate from ``lr``)."""
        settings = dict(
            split=self.split, train_queries=self.train_queries, batch_size=self.batch_size,
            max_passage_len=self.max_passage_len, attention_dropout=self.attention_dropout,
            val_fraction=self.val_fraction, lr=self.lr["full"],
            mining=MiningConfig(num_negatives=self.num_negatives))
        return TrainConfig(**{**settings, **overrides})
