"""Run profiles: one table of how big every chapter runs, chosen by one papermill parameter.

- ``smoke``: tiny subsets and a few steps; the whole notebook chain in minutes (the tests).
- ``cpu``: the default of ``make study``, for 2 CPU cores. Its training budget, negatives,
  training passage length and per-policy learning rates are the recipe that ``make design``
  chose on validation queries (``configs/recipe_cpu.json``). Two seeds per row, or the
  number in ``$CLP_SEEDS``: ``make study`` sets it from the machine (``clp_utils.budget``:
  one seed where two would not fit chapter 03's time target, e.g. without native bf16).
- ``full``: every training query, two domains, three seeds, every extra row; for a GPU. Its
  settings are fixed a priori (the paper's and the field's), never chosen from a score.

``get_profile(name)`` returns a ``Profile``: the sizes of chapters 00-02 and 05, the study's
runs (``StudyProfile``, chapters 03-05) and the multilingual track's (``TrackProfile``,
chapter 06). Every chapter and every language reads its sizes from here.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from clp_utils.catalog import load_named
from clp_utils.data import RetrievalDataset
from clp_utils.mining import MiningConfig
from clp_utils.paths import REPO_ROOT
from clp_utils.training import TrainConfig

RECIPE_PATH = REPO_ROOT / "configs" / "recipe_cpu.json"
#: The most seeds the cpu profile runs (its design: two seeds per paper row).
MAX_SEEDS = 2
#: Environment variable that pins the seeds for every chapter (``make study`` sets it).
SEEDS_ENV = "CLP_SEEDS"


def seeds_setting(default: int = MAX_SEEDS) -> int:
    """The number of seeds ``$CLP_SEEDS`` asks for (``default`` when it is unset).

    A value that is not a whole number from 1 to 10 is a ``ValueError`` naming the variable.
    """
    raw = os.environ.get(SEEDS_ENV, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= 10:
        raise ValueError(f"${SEEDS_ENV}={raw!r}: expected a whole number of seeds from 1 to 10")
    return int(raw)

NAMES = ("smoke", "cpu", "full")

ZERO_SHOT = "zero-shot"
#: The paper's six rows, in its order (the first is not trained).
PAPER_ROWS = [
    ZERO_SHOT,
    "random negatives",
    "ANCE negatives",
    "ANCE + CLP",
    "ANCE + CLP, intermediate only",
    "ANCE + CLP + MoE",
]
#: Rows beyond the paper (the full profile runs them all; the cpu profile some).
EXTRA_ROWS = [
    "ANCE + CLP, intermediate only, full rate",
    "ANCE + CLP + MoE, learned gate",
    "ANCE + CLP, lambda=0",
    "ANCE + CLP, lambda=0.05",
    "ANCE + CLP, lambda=0.2",
    "ANCE + CLP, lambda=0.5",
    "ANCE + CLP, pseudo queries",
    "ANCE + CLP, LoRA",
]
#: The ecosystem's answers to CLP's problem, at the same budget and seeds.
ECOSYSTEM_ROWS = ["ANCE + GIST (zero-shot guide)", "ANCE + MNRL, hardness-weighted"]
#: The official code's own recipe (batch 1 x accumulation 4, tau 0.02, no in-batch negatives).
PAPER_RECIPE_ROWS = ["paper recipe: ANCE + InfoNCE", "paper recipe: ANCE + CLP"]
#: Each paper-recipe row and the study row with the same loss, its comparison.
PAPER_RECIPE_COUNTERPARTS = dict(zip(PAPER_RECIPE_ROWS, ["ANCE negatives", "ANCE + CLP"],
                                     strict=True))


@dataclass(frozen=True)
class StudyProfile:
    """What the study trains: splits, seeds, rows, the shared config, per-policy rates.

    ``lrs`` maps a parameter policy (full, intermediate, moe, lora) to its learning rate; a
    row trains with its policy's rate (``base.lr`` where the policy has none).
    ``extra_seeds`` are the seeds of rows outside the paper's (default: ``seeds``).
    """

    splits: tuple[str, ...]
    seeds: tuple[int, ...]
    rows: tuple[str, ...]
    base: TrainConfig
    lrs: dict[str, float] = field(default_factory=dict)
    extra_seeds: tuple[int, ...] | None = None
    paper_rows: tuple[str, ...] = ()
    paper_epochs: int = 1  # epochs of the paper-recipe rows (the paper trained 2)
    paper_queries: int | None = None  # their training queries (None: the base config's)

    def seeds_of(self, row: str) -> tuple[int, ...]:
        """The seeds a row runs with."""
        if row in self.paper_rows or self.extra_seeds is None:
            return self.seeds
        return self.extra_seeds


@dataclass(frozen=True)
class TrackProfile:
    """Chapter 06: mE5-small on Hindi (``study``: split ``hindi``, rows, seeds, base config
    with frozen word embeddings; ``base.passages`` is the Hindi subset every Hindi number
    uses) and the Persian subset of the zero-shot comparison (None: all)."""

    study: StudyProfile
    persian_passages: int | None

    @property
    def hindi_passages(self) -> int | None:
        return self.study.base.passages


@dataclass(frozen=True)
class Profile:
    """Every chapter's sizes in one profile (``None`` means everything)."""

    name: str
    passages: int | None  # SQuADShifts passages per split (chapters 00, 01)
    ood_passages: int | None  # out-of-domain (new_wiki) passages of the study's runs
    mined_queries: int | None  # chapter 01: training queries whose negatives are examined
    candidate_depth: int  # chapter 01: ranks examined per query
    projection: str  # chapters 01, 05: "umap" (numba compiles it in every new process) or "pca"
    toy_steps: int  # chapter 02: gradient steps of the toy trajectories
    toy_field_points: int  # chapter 02: positions of the negative on the circle
    toy_lams: tuple[float, ...]  # chapter 02: the lambda sweep
    geometry_groups: int  # chapter 05: training groups measured
    gradient_batches: int  # chapters 04, 05: real batches of the gradient-share measurement
    study: StudyProfile
    track: TrackProfile


def load_recipe(path: Path | None = None) -> dict:
    """The cpu profile's recipe written by ``make design`` (a clear error when missing)."""
    path = Path(path or RECIPE_PATH)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `make design` to choose the cpu profile's "
                                "budget and learning rates on the validation split")
    recipe = json.loads(path.read_text(encoding="utf-8"))
    missing = {"split", "train_queries", "batch_size", "num_negatives", "max_passage_len",
               "lr"} - set(recipe)
    if missing:
        raise ValueError(f"{path}: recipe lacks {sorted(missing)}; rerun `make design`")
    return recipe


def recipe_config(recipe: dict, **overrides) -> TrainConfig:
    """The shared training config a recipe describes (its full-policy rate as ``lr``)."""
    settings = dict(
        split=recipe["split"], train_queries=recipe["train_queries"],
        batch_size=recipe["batch_size"], max_passage_len=recipe["max_passage_len"],
        attention_dropout=recipe.get("attention_dropout"),
        val_fraction=recipe.get("val_fraction", 0.1), lr=recipe["lr"]["full"],
        mining=MiningConfig(num_negatives=recipe["num_negatives"]))
    return TrainConfig(**{**settings, **overrides})


def _smoke() -> Profile:
    tiny = dict(train_queries=8, batch_size=4, max_query_len=16, max_passage_len=32,
                checkpoint_every=5, attention_dropout=0.0, no_duplicates=False,
                mining=MiningConfig(rank_min=2, rank_max=15, num_negatives=2))
    # every kind of row once, tiny, so that the test chain runs every code path
    rows = (*PAPER_ROWS, "ANCE + CLP, intermediate only, full rate", *ECOSYSTEM_ROWS,
            *PAPER_RECIPE_ROWS)
    study = StudyProfile(splits=("reddit",), seeds=(0,), rows=rows,
                         base=TrainConfig(passages=80, ood_passages=60, **tiny),
                         lrs={"intermediate": 1e-4, "moe": 1e-4}, paper_rows=tuple(PAPER_ROWS))
    track = TrackProfile(StudyProfile(
        splits=("hindi",), seeds=(0,), rows=(ZERO_SHOT, "ANCE negatives", "ANCE + CLP"),
        base=TrainConfig(model="me5-small", split="hindi", freeze_embeddings=True, passages=30,
                         ood_split=None, **tiny)), persian_passages=20)
    return Profile("smoke", passages=150, ood_passages=60, mined_queries=None, candidate_depth=100,
                   projection="pca", toy_steps=80, toy_field_points=36, toy_lams=(0.0, 0.1, 0.5),
                   geometry_groups=16, gradient_batches=2, study=study, track=track)


def _cpu() -> Profile:
    # 2 cores: the recipe's budget, negatives, training length and learning rates (chosen on
    # validation by `make design`); forgetting on a 500-passage new_wiki subset; bf16 where
    # the CPU computes it natively (TrainConfig.bf16="auto").
    recipe = load_recipe()
    # Every run is the recipe's on every machine; only how many seeds run is sized to it.
    seeds = tuple(range(seeds_setting()))
    # The paper's own recipe (one query per step x accumulation 4, 4 negatives, tau 0.02, lr
    # 1e-5) costs more per query at 4 negatives: a sixteenth of the budget's queries.
    # The 40-minute budget holds the paper's rows at two seeds and the paper recipe; rows
    # beyond them (e.g. intermediate-only at the full-fine-tuning rate) run in the full
    # profile. Checkpoints every 40 steps: a crash loses under a minute of training.
    study = StudyProfile(
        splits=(recipe["split"],), seeds=seeds, rows=(*PAPER_ROWS, *PAPER_RECIPE_ROWS),
        base=recipe_config(recipe, ood_passages=500, checkpoint_every=40), lrs=dict(recipe["lr"]),
        paper_rows=(*PAPER_ROWS, *PAPER_RECIPE_ROWS),
        paper_queries=recipe["train_queries"] // 16)
    # Hindi with mE5-small (12 layers): the English recipe's settings, not tuned for Hindi,
    # on a 600-passage subset, with an eighth of the English budget: a demonstration whose
    # verdicts chapter 06 reports as such.
    track = TrackProfile(StudyProfile(
        splits=("hindi",), seeds=seeds, rows=(ZERO_SHOT, "ANCE negatives", "ANCE + CLP"),
        base=recipe_config(recipe, model="me5-small", split="hindi", freeze_embeddings=True,
                           passages=600, ood_split=None, checkpoint_every=40,
                           train_queries=max(recipe["batch_size"], recipe["train_queries"] // 8)),
        paper_rows=tuple(PAPER_ROWS)), persian_passages=None)
    return Profile("cpu", passages=None, ood_passages=500, mined_queries=400, candidate_depth=200,
                   projection="umap", toy_steps=400, toy_field_points=120,
                   toy_lams=(0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7), geometry_groups=200,
                   gradient_batches=6, study=study, track=track)


def _full() -> Profile:
    # A GPU: every training query, both domains, 3 seeds, every extra row, 256 tokens,
    # 4 negatives, the model's own attention dropout. Rates fixed a priori: 2e-5 for full
    # fine-tuning (the paper's order), 1e-4 where a small part of the model trains
    # (intermediate, MoE, LoRA), the usual scale-up for partial fine-tuning.
    lrs = {"full": 2e-5, "intermediate": 1e-4, "moe": 1e-4, "lora": 1e-4}
    study = StudyProfile(
        splits=("reddit", "amazon"), seeds=(0, 1, 2),
        rows=tuple(PAPER_ROWS + EXTRA_ROWS + ECOSYSTEM_ROWS + PAPER_RECIPE_ROWS),
        base=TrainConfig(train_queries=None, batch_size=16, max_passage_len=256, lr=2e-5),
        lrs=lrs, paper_rows=tuple(PAPER_ROWS), paper_epochs=2)
    track = TrackProfile(StudyProfile(
        splits=("hindi",), seeds=(0, 1, 2), rows=tuple(PAPER_ROWS),
        base=TrainConfig(model="me5-small", split="hindi", freeze_embeddings=True,
                         train_queries=None, batch_size=16, max_passage_len=256,
                         ood_split="persian", lr=2e-5),
        lrs=lrs, paper_rows=tuple(PAPER_ROWS)), persian_passages=None)
    return Profile("full", passages=None, ood_passages=None, mined_queries=None,
                   candidate_depth=200, projection="umap", toy_steps=400, toy_field_points=120,
                   toy_lams=(0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7), geometry_groups=200,
                   gradient_batches=16, study=study, track=track)


def get_profile(name: str) -> Profile:
    """The named profile; an unknown name lists the known ones."""
    builders = {"smoke": _smoke, "cpu": _cpu, "full": _full}
    if name not in builders:
        raise ValueError(f"unknown profile {name!r}; choose one of {list(NAMES)}")
    return builders[name]()


def load_split(split: str, profile: str | Profile, seed: int = 0) -> RetrievalDataset:
    """A dataset at the size a profile's chapters 00-01 use (``sized(passages, seed)``)."""
    p = get_profile(profile) if isinstance(profile, str) else profile
    return load_named(split).sized(p.passages, seed)
