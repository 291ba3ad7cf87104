"""Run profiles: one table of how big every chapter runs, chosen by one papermill parameter.

- ``smoke``: tiny subsets and a few steps; the whole notebook chain in minutes (the tests).
- ``cpu``: ``make study`` on 2 CPU cores, at the recipe ``make design`` chose on validation
  queries (``configs/recipe_cpu.json``), two seeds per row on every machine.
- ``quick``: the cpu profile with one seed, chosen by name: half the runs, no seed-level
  verdicts.
- ``extras``: the controls and checks a reviewer asks for and the scale check
  (``make study-extras``), at the cpu recipe, beside the cpu runs they are compared with.
- ``full``: every training query, two domains, three seeds, every extra row; for a GPU, its
  settings fixed a priori (the paper's and the field's), never chosen from a score.

``get_profile(name)`` returns a ``Profile``: the sizes of chapters 00-02 and 05, the study's
runs (``StudyProfile``, chapters 03-05) and the multilingual track's (``TrackProfile``, 06).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from clp_utils.base.paths import PROFILES
from clp_utils.catalog import load_named
from clp_utils.data import RetrievalDataset
from clp_utils.mining import MiningConfig
from clp_utils.recipe import Recipe
from clp_utils.train_config import TrainConfig

NAMES = PROFILES  # one list of profile names, kept where the figures folders are decided
#: The cpu profile's seeds (its design: two seeds per paper row); quick runs the first.
CPU_SEEDS = (0, 1)
#: The cpu profile's out-of-domain (forgetting) set: a new_wiki subset of this many passages
#: (easier to search than the whole split, so not comparable with chapter 00's scores).
CPU_OOD_PASSAGES = 500
#: The paper-recipe rows train on 1/PAPER_RECIPE_SHARE of the recipe's queries (one query
#: per device step with 4 negatives costs more per query than the study's batches).
PAPER_RECIPE_SHARE = 16
#: The Hindi track: every passage of the set (XQuAD Hindi has 240; None: all), and
#: 1/HINDI_SHARE of the English budget.
HINDI_PASSAGES = None
HINDI_SHARE = 8

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
#: Full fine-tuning at intermediate-only's rate: with INTERMEDIATE_FULL_RATE, the 2x2 of
#: policy (full, intermediate) by learning rate (each policy's own, the other's).
FULL_INTERMEDIATE_RATE = "ANCE + CLP, intermediate rate"
MOE_LEARNED = "ANCE + CLP + MoE, learned gate"
CLP_LAMBDA_05 = "ANCE + CLP, lambda=0.5"
SYMMETRIC = "ANCE + symmetric InfoNCE"
GIST = "ANCE + GIST (zero-shot guide)"
MNRL_HARDNESS = "ANCE + MNRL, hardness-weighted"
#: Rows beyond the paper (the full profile runs them all; ``make study-extras`` the controls).
EXTRA_ROWS = [
    INTERMEDIATE_FULL_RATE,
    FULL_INTERMEDIATE_RATE,
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
#: The scale check's central pair runs every seed (a scale verdict that is not a one-seed
#: reading); the intermediate-only scale row runs the first seed.
SCALE_CENTRAL = SCALE_ROWS[:2]
#: The controls and checks of ``make study-extras`` (cpu recipe): what a reviewer asks for.
CONTROL_ROWS = [INTERMEDIATE_FULL_RATE, FULL_INTERMEDIATE_RATE, CLP_LAMBDA_05,
                PAPER_RECIPE_RANDOM, SYMMETRIC, MOE_LEARNED, GIST, MNRL_HARDNESS]

#: Every row in the order tables show them.
ROW_ORDER = [*PAPER_ROWS, *EXTRA_ROWS, *ECOSYSTEM_ROWS, *PAPER_RECIPE_ROWS, *SCALE_ROWS]


@dataclass(frozen=True)
class Row:
    """What a study row changes in the profile's base config: a typed value, so no setting is
    read back from a row's name (the name is only its label)."""

    loss: str = "clp"
    policy: str | None = None  # None: the base config's
    train: dict = field(default_factory=dict)  # other TrainConfig fields (lam, moe_routing, ...)
    mining: dict = field(default_factory=dict)  # MiningConfig fields over the ANCE window
    rate: str | None = None  # the policy whose learning rate it trains with (None: its own)
    sizes: str = "base"  # "paper": the paper-recipe rows' epochs and queries; "scale": all queries


_PAPER_TRAIN = {k: v for k, v in PAPER_RECIPE.items() if k != "num_negatives"}
_PAPER_NEGATIVES = {"num_negatives": PAPER_RECIPE["num_negatives"]}
#: Every trained row of the study and what it changes; zero-shot trains nothing.
ROWS: dict[str, Row] = {
    RANDOM: Row(loss="infonce", mining={"strategy": "random"}),
    ANCE: Row(loss="infonce"),
    CLP: Row(),
    INTERMEDIATE: Row(policy="intermediate"),
    # the same policy at the full-fine-tuning rate: does the rate or the policy matter?
    INTERMEDIATE_FULL_RATE: Row(policy="intermediate", rate="full"),
    # and full fine-tuning at intermediate's rate: the 2x2 that separates policy from rate
    FULL_INTERMEDIATE_RATE: Row(policy="full", rate="intermediate"),
    MOE: Row(policy="moe", train={"moe_routing": "paper"}),
    MOE_LEARNED: Row(policy="moe", train={"moe_routing": "learned", "moe_balance": 0.01}),
    "ANCE + CLP, lambda=0": Row(train={"lam": 0.0}),
    "ANCE + CLP, lambda=0.05": Row(train={"lam": 0.05}),
    "ANCE + CLP, lambda=0.2": Row(train={"lam": 0.2}),
    CLP_LAMBDA_05: Row(train={"lam": 0.5}),
    "ANCE + CLP, pseudo queries": Row(mining={"pseudo_query": "first_sentence"}),
    "ANCE + CLP, LoRA": Row(policy="lora"),
    # InfoNCE both ways (query -> passage and passage -> query): the standard way to add a
    # passage-to-query term, the kind of term CLP's penalty is
    SYMMETRIC: Row(loss="infonce_symmetric"),
    # GISTEmbedLoss takes (anchor, positive, negative): one hard negative per query
    GIST: Row(loss="gist", mining={"num_negatives": 1}),
    MNRL_HARDNESS: Row(loss="mnrl_hardness"),
    # the paper's recipe trains at its own fixed rate, whatever the policy's
    PAPER_RECIPE_ANCE: Row(loss="infonce", train=_PAPER_TRAIN, mining=_PAPER_NEGATIVES,
                           sizes="paper"),
    PAPER_RECIPE_CLP: Row(train=_PAPER_TRAIN, mining=_PAPER_NEGATIVES, sizes="paper"),
    PAPER_RECIPE_RANDOM: Row(loss="infonce", train=_PAPER_TRAIN, sizes="paper",
                             mining={**_PAPER_NEGATIVES, "strategy": "random"}),
}
ROWS.update({SCALE_PREFIX + r: replace(ROWS[r], sizes="scale") for r in (ANCE, CLP, INTERMEDIATE)})


def row_config(row: str, base: TrainConfig, split: str, seed: int,
               lrs: dict[str, float] | None = None, paper_epochs: int = 1,
               paper_queries: int | None = None, scale_queries: int | None = None) -> TrainConfig:
    """The config of one study row (``base`` holds the profile's sizes, ``lrs`` its rates per
    policy, ``paper_epochs`` and ``paper_queries`` the size of the paper-recipe rows,
    ``scale_queries`` the scale check's training queries, None: every one)."""
    if row not in ROWS:
        raise ValueError(f"unknown study row {row!r}")
    spec = ROWS[row]
    policy = spec.policy or base.policy
    paper = {"epochs": paper_epochs, "train_queries": paper_queries or base.train_queries}
    sizes = {"base": {}, "paper": paper, "scale": {"train_queries": scale_queries}}[spec.sizes]
    mining = replace(base.mining, **{"strategy": "ance", "seed": seed, **spec.mining})
    settings = {"lr": (lrs or {}).get(spec.rate or policy, base.lr), **sizes, **spec.train}
    return replace(base, label=f"{split}-{row}", split=split, seed=seed, loss=spec.loss,
                   policy=policy, mining=mining, **settings)


@dataclass(frozen=True)
class StudyProfile:
    """What the study trains: splits, seeds, rows, the shared config and ``lrs``, each
    parameter policy's learning rate (``base.lr`` where a policy has none)."""

    splits: tuple[str, ...]
    seeds: tuple[int, ...]
    rows: tuple[str, ...]
    base: TrainConfig
    lrs: dict[str, float] = field(default_factory=dict)
    single_seed_rows: tuple[str, ...] = ()  # run with the first seed only
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


#: The rows of the cpu (and quick) profile: the paper's and its recipe's; the controls a
#: reviewer asks for run in the extras profile.
CPU_ROWS = (*PAPER_ROWS, PAPER_RECIPE_ANCE, PAPER_RECIPE_CLP)
#: The extras' rows, in the order they train (the scale check and the learning-rate control
#: first).
EXTRAS_PRIORITY = (*SCALE_ROWS, *CONTROL_ROWS)
#: The cpu rows the extras are compared with (reused: the same configs are the same runs);
#: only these are scored out of domain (no claim is made about the controls' forgetting).
EXTRAS_PARTNERS = (ZERO_SHOT, ANCE, CLP, INTERMEDIATE, MOE, PAPER_RECIPE_ANCE)
#: The sizes of chapters 01, 02 and 05 beyond the smoke profile.
_FULL_SIZES = dict(candidate_depth=200, projection="umap", toy_steps=400, toy_field_points=120,
                   toy_lams=(0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7), geometry_groups=200)


def _cpu(name: str, rows: tuple[str, ...], seeds: tuple[int, ...] = CPU_SEEDS,
         single_seed_rows: tuple[str, ...] = (),
         ood_rows: tuple[str, ...] | None = None) -> Profile:
    # 2 cores: every run is the recipe's (chosen on validation by `make design`), with the
    # same seeds on every machine; bf16 where the CPU computes it natively. The paper's own
    # recipe costs more per query at 4 negatives: a sixteenth of the budget's queries.
    # Checkpoints every 40 steps: a crash loses under a minute of training. Hindi (mE5-small):
    # the English recipe, not tuned for Hindi, on an eighth of the budget: a demonstration
    # whose verdicts chapter 06 reports as such.
    recipe = Recipe.load()
    study = StudyProfile(
        splits=(recipe.split,), seeds=seeds, rows=rows,
        base=recipe.train_config(ood_passages=CPU_OOD_PASSAGES, checkpoint_every=40),
        lrs=dict(recipe.lr), single_seed_rows=single_seed_rows, ood_rows=ood_rows,
        paper_queries=recipe.train_queries // PAPER_RECIPE_SHARE)
    track = TrackProfile(StudyProfile(
        splits=("hindi",), seeds=seeds, rows=(ZERO_SHOT, ANCE, CLP),
        base=recipe.train_config(model="me5-small", split="hindi", freeze_embeddings=True,
                                 passages=HINDI_PASSAGES, ood_split=None, checkpoint_every=40,
                                 train_queries=max(recipe.batch_size,
                                                   recipe.train_queries // HINDI_SHARE))),
        persian_passages=None)
    return Profile(name, passages=None, ood_passages=CPU_OOD_PASSAGES, mined_queries=400,
                   gradient_batches=6, study=study, track=track, **_FULL_SIZES)


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
                   gradient_batches=16, study=study, track=track, **_FULL_SIZES)


def get_profile(name: str) -> Profile:
    """The named profile; an unknown name lists the known ones."""
    builders = {
        "smoke": _smoke, "full": _full, "cpu": lambda: _cpu("cpu", CPU_ROWS),
        "quick": lambda: _cpu("quick", CPU_ROWS, CPU_SEEDS[:1]),
        # the scale check's intermediate-only row runs one seed
        "extras": lambda: _cpu(
            "extras", (*EXTRAS_PARTNERS, *EXTRAS_PRIORITY), ood_rows=EXTRAS_PARTNERS,
            single_seed_rows=tuple(r for r in SCALE_ROWS if r not in SCALE_CENTRAL))}
    if name not in builders:
        raise ValueError(f"unknown profile {name!r}; choose one of {list(NAMES)}")
    return builders[name]()


def load_split(split: str, profile: str | Profile, seed: int = 0) -> RetrievalDataset:
    """A dataset at the size a profile's chapters 00-01 use (``sized(passages, seed)``)."""
    p = get_profile(profile) if isinstance(profile, str) else profile
    return load_named(split).sized(p.passages, seed)
