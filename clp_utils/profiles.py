"""Run profiles: one table of how big every chapter runs, chosen by one papermill parameter.

- ``smoke``: tiny subsets and a few steps; the whole notebook chain in minutes (the tests).
- ``cpu``: the default of ``make study``, for 2 CPU cores. Its training budget, negatives,
  training passage length and per-policy learning rates are the recipe that ``make design``
  chose on validation queries (``configs/recipe_cpu.json``). Two seeds per row, or the
  number in ``$CLP_SEEDS``: ``make study`` sets it from the machine (``clp_utils.machinery.budget``:
  one seed where two would not fit chapter 03's time target, e.g. without native bf16).
- ``extras``: the controls and checks a reviewer asks for (``make study-extras``), at the cpu
  recipe: intermediate-only at full's rate, CLP at lambda 0.5, the paper recipe with random
  negatives, symmetric InfoNCE, the MoE gate that learns, GIST, hardness-weighted MNRL (two
  seeds each), and the scale check (three rows on every training query, one seed), beside the
  cpu profile's runs they are compared with.
- ``full``: every training query, two domains, three seeds, every extra row; for a GPU. Its
  settings are fixed a priori (the paper's and the field's), never chosen from a score.

``get_profile(name)`` returns a ``Profile``: the sizes of chapters 00-02 and 05, the study's
runs (``StudyProfile``, chapters 03-05) and the multilingual track's (``TrackProfile``,
chapter 06). Every chapter and every language reads its sizes from here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from clp_utils.catalog import load_named
from clp_utils.data import RetrievalDataset
from clp_utils.mining import MiningConfig
from clp_utils.recipe import Recipe
from clp_utils.train_config import TrainConfig

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

NAMES = ("smoke", "cpu", "extras", "full")
#: The cpu profile's out-of-domain (forgetting) set: a new_wiki subset of this many passages.
#: A smaller corpus is easier to search, so its zero-shot score is higher than chapter 00's
#: on the whole split; the two are not comparable.
CPU_OOD_PASSAGES = 500
#: The paper-recipe rows train on 1/PAPER_RECIPE_SHARE of the recipe's queries (one query
#: per device step with 4 negatives costs more per query than the study's batches).
PAPER_RECIPE_SHARE = 16
#: The Hindi track: every passage of the set (XQuAD Hindi has 240; None: all), and
#: 1/HINDI_SHARE of the English budget.
HINDI_PASSAGES = None
HINDI_SHARE = 8
#: Seeds of the extras profile's rows (the scale check: one).
EXTRAS_SEEDS = 2

# --------------------------------------------------------------------------- row names
# Every row of the study by name: the notebooks and the package refer to these constants.
ZERO_SHOT = "zero-shot"
RANDOM = "random negatives"
ANCE = "ANCE negatives"
CLP = "ANCE + CLP"
INTERMEDIATE = "ANCE + CLP, intermediate only"
MOE = "ANCE + CLP + MoE"
#: The paper's six rows, in its order (the first is not trained).
PAPER_ROWS = [ZERO_SHOT, RANDOM, ANCE, CLP, INTERMEDIATE, MOE]

INTERMEDIATE_FULL_RATE = "ANCE + CLP, intermediate only, full rate"
MOE_LEARNED = "ANCE + CLP + MoE, learned gate"
CLP_LAMBDA_05 = "ANCE + CLP, lambda=0.5"
SYMMETRIC = "ANCE + symmetric InfoNCE"
GIST = "ANCE + GIST (zero-shot guide)"
MNRL_HARDNESS = "ANCE + MNRL, hardness-weighted"
#: Rows beyond the paper (the full profile runs them all; ``make study-extras`` the controls).
EXTRA_ROWS = [
    INTERMEDIATE_FULL_RATE,
    MOE_LEARNED,
    "ANCE + CLP, lambda=0",
    "ANCE + CLP, lambda=0.05",
    "ANCE + CLP, lambda=0.2",
    CLP_LAMBDA_05,
    "ANCE + CLP, pseudo queries",
    "ANCE + CLP, LoRA",
    SYMMETRIC,
]
#: The ecosystem's answers to CLP's problem, at the same budget and seeds.
ECOSYSTEM_ROWS = [GIST, MNRL_HARDNESS]

# --------------------------------------------------------------------------- the paper's recipe
#: The official code's own recipe: one query per device step with gradient accumulation 4
#: (4 independent queries per update, no in-batch negatives; the same objective, tested),
#: tau 0.02, lr 1e-5, lambda 0.1, the paper's group of 1 positive + 4 negatives.
PAPER_RECIPE = dict(tau=0.02, lr=1e-5, lam=0.1, batch_size=4, in_batch=False, num_negatives=4)
PAPER_RECIPE_ANCE = "paper recipe: ANCE + InfoNCE"
PAPER_RECIPE_CLP = "paper recipe: ANCE + CLP"
PAPER_RECIPE_RANDOM = "paper recipe: random negatives"
#: Rows trained with the official code's recipe.
PAPER_RECIPE_ROWS = [PAPER_RECIPE_ANCE, PAPER_RECIPE_CLP, PAPER_RECIPE_RANDOM]
#: Each paper-recipe row and the study row with the same loss and negatives, its comparison.
PAPER_RECIPE_COUNTERPARTS = {PAPER_RECIPE_ANCE: ANCE, PAPER_RECIPE_CLP: CLP,
                             PAPER_RECIPE_RANDOM: RANDOM}

#: The scale check: a row trained on every training query (one epoch at the recipe).
SCALE_PREFIX = "scale: "
SCALE_ROWS = [SCALE_PREFIX + r for r in (ANCE, CLP, INTERMEDIATE)]
#: The controls and checks of ``make study-extras`` (cpu recipe): what a reviewer asks for.
CONTROL_ROWS = [INTERMEDIATE_FULL_RATE, CLP_LAMBDA_05, PAPER_RECIPE_RANDOM, SYMMETRIC,
                MOE_LEARNED, GIST, MNRL_HARDNESS]

#: Every row in the order tables show them.
ROW_ORDER = [*PAPER_ROWS, *EXTRA_ROWS, *ECOSYSTEM_ROWS, *PAPER_RECIPE_ROWS, *SCALE_ROWS]


def row_config(row: str, base: TrainConfig, split: str, seed: int,
               lrs: dict[str, float] | None = None, paper_epochs: int = 1,
               paper_queries: int | None = None, scale_queries: int | None = None) -> TrainConfig:
    """The config of one study row (``base`` holds the profile's sizes, ``lrs`` its rates,
    ``paper_epochs`` and ``paper_queries`` the size of the paper-recipe rows).

    A ``"scale: <row>"`` row is ``<row>`` trained on ``scale_queries`` training queries
    (None: every training query of the split).
    """
    if row.startswith(SCALE_PREFIX):
        inner = row_config(row[len(SCALE_PREFIX):], base, split, seed, lrs)
        return replace(inner, label=f"{split}-{row}", train_queries=scale_queries)
    ance = replace(base.mining, strategy="ance", seed=seed)
    common = dict(label=f"{split}-{row}", split=split, seed=seed)
    clp = replace(base, **common, mining=ance, loss="clp")
    if row == RANDOM:
        config = replace(base, **common, mining=replace(ance, strategy="random"), loss="infonce")
    elif row == ANCE:
        config = replace(base, **common, mining=ance, loss="infonce")
    elif row == CLP:
        config = clp
    elif row == INTERMEDIATE:
        config = replace(clp, policy="intermediate")
    elif row == INTERMEDIATE_FULL_RATE:
        # the same policy at the full-fine-tuning rate: does the rate or the policy matter?
        return replace(clp, policy="intermediate", lr=(lrs or {}).get("full", base.lr))
    elif row == MOE:
        config = replace(clp, policy="moe", moe_routing="paper")
    elif row == MOE_LEARNED:
        config = replace(clp, policy="moe", moe_routing="learned", moe_balance=0.01)
    elif row.startswith("ANCE + CLP, lambda="):
        config = replace(clp, lam=float(row.split("=")[1]))
    elif row == "ANCE + CLP, pseudo queries":
        config = replace(clp, mining=replace(ance, pseudo_query="first_sentence"))
    elif row == "ANCE + CLP, LoRA":
        config = replace(clp, policy="lora")
    elif row == SYMMETRIC:
        # InfoNCE both ways (query -> passage and passage -> query): the standard way to add
        # a passage-to-query term, the kind of term CLP's penalty is
        config = replace(base, **common, mining=ance, loss="infonce_symmetric")
    elif row == GIST:
        # GISTEmbedLoss takes (anchor, positive, negative): one hard negative per query
        config = replace(base, **common, loss="gist", mining=replace(ance, num_negatives=1))
    elif row == MNRL_HARDNESS:
        config = replace(base, **common, mining=ance, loss="mnrl_hardness")
    elif row in PAPER_RECIPE_ROWS:
        loss = "clp" if row == PAPER_RECIPE_CLP else "infonce"
        strategy = "random" if row == PAPER_RECIPE_RANDOM else "ance"
        r = PAPER_RECIPE
        return replace(base, **common, loss=loss, lam=r["lam"], tau=r["tau"], lr=r["lr"],
                       batch_size=r["batch_size"], in_batch=r["in_batch"], epochs=paper_epochs,
                       train_queries=paper_queries or base.train_queries,
                       mining=replace(ance, strategy=strategy, num_negatives=r["num_negatives"]))
    else:
        raise ValueError(f"unknown study row {row!r}")
    if lrs and config.policy in lrs:
        config = replace(config, lr=lrs[config.policy])
    return config


@dataclass(frozen=True)
class StudyProfile:
    """What the study trains: splits, seeds, rows, the shared config, per-policy rates.

    ``lrs`` maps a parameter policy (full, intermediate, moe, lora) to its learning rate; a
    row trains with its policy's rate (``base.lr`` where the policy has none).
    ``single_seed_rows`` run with the first seed only (the scale check: one long run).
    ``ood_rows`` limits the out-of-domain (forgetting) evaluation to those rows.
    """

    splits: tuple[str, ...]
    seeds: tuple[int, ...]
    rows: tuple[str, ...]
    base: TrainConfig
    lrs: dict[str, float] = field(default_factory=dict)
    single_seed_rows: tuple[str, ...] = ()
    ood_rows: tuple[str, ...] | None = None  # rows scored out of domain too (None: all)
    paper_epochs: int = 1  # epochs of the paper-recipe rows (the paper trained 2)
    paper_queries: int | None = None  # their training queries (None: the base config's)
    scale_queries: int | None = None  # training queries of the scale-check rows (None: all)

    def seeds_of(self, row: str) -> tuple[int, ...]:
        """The seeds a row runs with."""
        return self.seeds[:1] if row in self.single_seed_rows else self.seeds


@dataclass(frozen=True)
class Cell:
    """One cell of the study: a row, a split, a seed and its config (None: zero-shot)."""

    row: str
    split: str
    seed: int
    config: TrainConfig | None


def cells(study: StudyProfile) -> list[Cell]:
    """Every cell a study profile trains or evaluates, split by split, row by row."""
    out = []
    for split in study.splits:
        for row in study.rows:
            if row == ZERO_SHOT:
                out.append(Cell(row, split, 0, None))
                continue
            base = study.base
            if study.ood_rows is not None and row not in study.ood_rows:
                base = replace(base, ood_split=None, ood_passages=None)
            out += [Cell(row, split, s, row_config(row, base, split, s, study.lrs,
                                                    study.paper_epochs, study.paper_queries,
                                                    study.scale_queries))
                    for s in study.seeds_of(row)]
    return out


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


def _smoke() -> Profile:
    tiny = dict(train_queries=8, batch_size=4, max_query_len=16, max_passage_len=32,
                checkpoint_every=5, attention_dropout=0.0, no_duplicates=False,
                mining=MiningConfig(rank_min=2, rank_max=15, num_negatives=2))
    # every kind of row once, tiny, so that the test chain runs every code path (the paper's
    # rows, the controls of `make study-extras` and one scale-check row: the others differ
    # from it only in their row)
    rows = (*PAPER_ROWS, *CONTROL_ROWS, PAPER_RECIPE_ANCE, PAPER_RECIPE_CLP, SCALE_ROWS[1])
    study = StudyProfile(splits=("reddit",), seeds=(0,), rows=rows,
                         base=TrainConfig(passages=80, ood_passages=60, **tiny),
                         lrs={"intermediate": 1e-4, "moe": 1e-4}, scale_queries=16)
    track = TrackProfile(StudyProfile(
        splits=("hindi",), seeds=(0,), rows=(ZERO_SHOT, ANCE, CLP),
        base=TrainConfig(model="me5-small", split="hindi", freeze_embeddings=True, passages=30,
                         ood_split=None, **tiny)), persian_passages=20)
    return Profile("smoke", passages=150, ood_passages=60, mined_queries=None, candidate_depth=100,
                   projection="pca", toy_steps=80, toy_field_points=36, toy_lams=(0.0, 0.1, 0.5),
                   geometry_groups=16, gradient_batches=2, study=study, track=track)


def _cpu_study(recipe: Recipe, rows: tuple[str, ...], seeds: tuple[int, ...],
               single_seed_rows: tuple[str, ...] = (),
               ood_rows: tuple[str, ...] | None = None) -> StudyProfile:
    # 2 cores: the recipe's budget, negatives, training length and learning rates (chosen on
    # validation by `make design`); forgetting on a 500-passage new_wiki subset; bf16 where
    # the CPU computes it natively (TrainConfig.bf16="auto"). The paper's own recipe (one
    # query per step x accumulation 4, 4 negatives) costs more per query at 4 negatives: a
    # sixteenth of the budget's queries. Checkpoints every 40 steps: a crash loses under a
    # minute of training.
    return StudyProfile(
        splits=(recipe.split,), seeds=seeds, rows=rows,
        base=recipe.train_config(ood_passages=CPU_OOD_PASSAGES, checkpoint_every=40),
        lrs=dict(recipe.lr), single_seed_rows=single_seed_rows, ood_rows=ood_rows,
        paper_queries=recipe.train_queries // PAPER_RECIPE_SHARE)


def _cpu_profile(name: str, study: StudyProfile, track: TrackProfile) -> Profile:
    return Profile(name, passages=None, ood_passages=CPU_OOD_PASSAGES, mined_queries=400,
                   candidate_depth=200,
                   projection="umap", toy_steps=400, toy_field_points=120,
                   toy_lams=(0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7), geometry_groups=200,
                   gradient_batches=6, study=study, track=track)


def _hindi_track(recipe: Recipe, seeds: tuple[int, ...]) -> TrackProfile:
    # Hindi with mE5-small (12 layers): the English recipe's settings, not tuned for Hindi,
    # on the whole (small) XQuAD Hindi set, with an eighth of the English budget: a
    # demonstration whose verdicts chapter 06 reports as such.
    return TrackProfile(StudyProfile(
        splits=("hindi",), seeds=seeds, rows=(ZERO_SHOT, ANCE, CLP),
        base=recipe.train_config(model="me5-small", split="hindi", freeze_embeddings=True,
                                 passages=HINDI_PASSAGES, ood_split=None, checkpoint_every=40,
                                 train_queries=max(recipe.batch_size,
                                                   recipe.train_queries // HINDI_SHARE))),
        persian_passages=None)


def _cpu() -> Profile:
    # Every run is the recipe's on every machine; only how many seeds run is sized to it.
    # The 40-minute budget holds the paper's rows and its recipe; the controls a reviewer
    # asks for run in `make study-extras` (the "extras" profile).
    recipe = Recipe.load()
    seeds = tuple(range(seeds_setting()))
    rows = (*PAPER_ROWS, PAPER_RECIPE_ANCE, PAPER_RECIPE_CLP)
    return _cpu_profile("cpu", _cpu_study(recipe, rows, seeds), _hindi_track(recipe, seeds))


def _extras() -> Profile:
    # `make study-extras`: the controls and the scale check at the cpu recipe, two seeds each
    # (the scale check one), beside the cpu profile's runs they are compared with (reused:
    # the same configs are the same runs). The controls are scored in domain only (no claim
    # about their forgetting), which saves each run the out-of-domain encoding. Rows in order
    # of priority: the scale check and the learning-rate control first.
    recipe = Recipe.load()
    seeds = tuple(range(seeds_setting(EXTRAS_SEEDS)))
    partners = (ZERO_SHOT, ANCE, CLP, INTERMEDIATE, MOE, PAPER_RECIPE_ANCE)
    study = _cpu_study(recipe, (*partners, *extras_rows()), seeds,
                       single_seed_rows=tuple(SCALE_ROWS), ood_rows=partners)
    return _cpu_profile("extras", study, _hindi_track(recipe, seeds))


#: Environment variable naming the extras rows that fit this machine's time target
#: (``make study-extras`` sets it from ``budget.plan_extras``; unset: every row).
EXTRAS_ENV = "CLP_EXTRAS_ROWS"
#: The extras' rows, in order of priority: what the time target keeps first.
EXTRAS_PRIORITY = (*SCALE_ROWS, *CONTROL_ROWS)


def extras_rows() -> tuple[str, ...]:
    """The extras rows to run: ``$CLP_EXTRAS_ROWS`` (rows separated by ";") or all of them,
    always in ``EXTRAS_PRIORITY`` order. An unknown row name is a ``ValueError``."""
    raw = os.environ.get(EXTRAS_ENV, "").strip()
    if not raw:
        return EXTRAS_PRIORITY
    wanted = [r.strip() for r in raw.split(";") if r.strip()]
    unknown = sorted(set(wanted) - set(EXTRAS_PRIORITY))
    if unknown:
        raise ValueError(f"${EXTRAS_ENV}: unknown rows {unknown}; known: {list(EXTRAS_PRIORITY)}")
    return tuple(r for r in EXTRAS_PRIORITY if r in wanted)


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
        lrs=lrs, paper_epochs=2)
    track = TrackProfile(StudyProfile(
        splits=("hindi",), seeds=(0, 1, 2), rows=tuple(PAPER_ROWS),
        base=TrainConfig(model="me5-small", split="hindi", freeze_embeddings=True,
                         train_queries=None, batch_size=16, max_passage_len=256,
                         ood_split="persian", lr=2e-5),
        lrs=lrs), persian_passages=None)
    return Profile("full", passages=None, ood_passages=None, mined_queries=None,
                   candidate_depth=200, projection="umap", toy_steps=400, toy_field_points=120,
                   toy_lams=(0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7), geometry_groups=200,
                   gradient_batches=16, study=study, track=track)


def get_profile(name: str) -> Profile:
    """The named profile; an unknown name lists the known ones."""
    builders = {"smoke": _smoke, "cpu": _cpu, "extras": _extras, "full": _full}
    if name not in builders:
        raise ValueError(f"unknown profile {name!r}; choose one of {list(NAMES)}")
    return builders[name]()


def load_split(split: str, profile: str | Profile, seed: int = 0) -> RetrievalDataset:
    """A dataset at the size a profile's chapters 00-01 use (``sized(passages, seed)``)."""
    p = get_profile(profile) if isinstance(profile, str) else profile
    return load_named(split).sized(p.passages, seed)
