"""The claims the study tests, their Holm families, verdicts and generated sentences.

A claim says one row beats another (``Claim.better`` minus ``Claim.worse`` > 0). Each claim
belongs to one family, and Holm adjusts each family once, so a comparison has one p-value
wherever it is shown:

- ``paper``: the paper's five claims (Table 2's steps), tested at the cpu recipe by
  ``make study`` (chapter 04);
- ``controls``: the controls and checks a reviewer asks for (``make study-extras``): the
  learning-rate confound of intermediate-only, CLP at lambda 0.5, the paper's recipe with
  random negatives, the baselines CLP must beat, the gate that learns, and the scale check;
- ``hindi``: chapter 06's two claims on Hindi with multilingual-e5-small.

Each claim's interval comes from ``stats.two_level_bootstrap`` (seeds, then test passages)
and its verdict from ``stats.verdict``: held, reversed, equivalent (the whole interval inside
+/- ``stats.SMALLEST_EFFECT``) or inconclusive. Where the paper claimed a difference for the
same comparison (``paper.claimed_difference``; MIRACL average nDCG@5, another metric and other
data, but the size a reader has in mind), the table says whether the interval excludes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from clp_utils import profiles as P
from clp_utils.base.paths import EXTRAS_ROOT, FIGURES_ROOT
from clp_utils.paper import claimed_difference
from clp_utils.results import compare_rows, seed_spread
from clp_utils.stats import SMALLEST_EFFECT, excludes
from clp_utils.study import StudyRun


@dataclass(frozen=True)
class Claim:
    """``better`` beats ``worse`` (in the family ``family``); ``paper_rows`` names the
    paper's own pair of Table 2 rows for the same step, when it made one."""

    name: str
    better: str
    worse: str
    family: str
    paper_rows: tuple[str, str] | None = None

    @property
    def paper_effect(self) -> float | None:
        """The paper's claimed difference for this step (fraction of nDCG@5), or None."""
        return claimed_difference(*self.paper_rows) if self.paper_rows else None


def _paper(name: str, better: str, worse: str, paper_rows=None) -> Claim:
    return Claim(name, better, worse, "paper", paper_rows or (better, worse))


PAPER_CLAIMS = [
    _paper("fine-tuning with random negatives hurts", P.ZERO_SHOT, P.RANDOM),
    _paper("ANCE negatives beat random negatives", P.ANCE, P.RANDOM),
    _paper("CLP beats InfoNCE (ANCE + CLP > ANCE negatives)", P.CLP, P.ANCE),
    _paper("training only the intermediate layers (own rate) beats full fine-tuning",
           P.INTERMEDIATE, P.CLP),
    _paper("MoE intermediate layers beat plain intermediate-only", P.MOE, P.INTERMEDIATE),
]

SCALE_CLP = P.SCALE_PREFIX + P.CLP
SCALE_ANCE = P.SCALE_PREFIX + P.ANCE
SCALE_INTERMEDIATE = P.SCALE_PREFIX + P.INTERMEDIATE
CONTROL_CLAIMS = [
    Claim("at every training query, CLP beats InfoNCE", SCALE_CLP, SCALE_ANCE, "controls",
          (P.CLP, P.ANCE)),
    Claim("at every training query, intermediate-only (own rate) beats full fine-tuning",
          SCALE_INTERMEDIATE, SCALE_CLP, "controls", (P.INTERMEDIATE, P.CLP)),
    Claim("intermediate-only beats full fine-tuning at the same (full) rate",
          P.INTERMEDIATE_FULL_RATE, P.CLP, "controls", (P.INTERMEDIATE, P.CLP)),
    Claim("intermediate-only gains from its own, higher rate", P.INTERMEDIATE,
          P.INTERMEDIATE_FULL_RATE, "controls"),
    Claim("CLP at lambda 0.5 beats InfoNCE", P.CLP_LAMBDA_05, P.ANCE, "controls",
          (P.CLP, P.ANCE)),
    Claim("with the paper's recipe, fine-tuning with random negatives hurts", P.ZERO_SHOT,
          P.PAPER_RECIPE_RANDOM, "controls", (P.ZERO_SHOT, P.RANDOM)),
    Claim("with the paper's recipe, ANCE negatives beat random negatives", P.PAPER_RECIPE_ANCE,
          P.PAPER_RECIPE_RANDOM, "controls", (P.ANCE, P.RANDOM)),
    Claim("CLP beats symmetric InfoNCE (a passage-to-query term without CLP)", P.CLP,
          P.SYMMETRIC, "controls"),
    Claim("a MoE gate that learns beats the paper's frozen routing", P.MOE_LEARNED, P.MOE,
          "controls"),
    Claim("CLP beats GISTEmbedLoss (zero-shot guide)", P.CLP, P.GIST, "controls"),
    Claim("CLP beats hardness-weighted MNRL", P.CLP, P.MNRL_HARDNESS, "controls"),
]

HINDI_CLAIMS = [
    Claim("fine-tuning mE5-small on Hindi (ANCE + InfoNCE) beats zero-shot", P.ANCE,
          P.ZERO_SHOT, "hindi"),
    Claim("CLP beats InfoNCE on Hindi", P.CLP, P.ANCE, "hindi", (P.CLP, P.ANCE)),
]

FAMILIES = {"paper": PAPER_CLAIMS, "controls": CONTROL_CLAIMS, "hindi": HINDI_CLAIMS}

CLAIM_COLUMNS = ["claim", "split", "better", "worse", "n queries", "n passages", "seeds",
                 "delta", "95% CI low", "95% CI high", "p", "p Holm", "verdict",
                 "inside ±delta", "paper claimed", "excludes paper's effect", "seed deltas",
                 "p (per query)"]


def claim_of(name: str) -> Claim:
    """A claim by its name (any family)."""
    for claims in FAMILIES.values():
        for c in claims:
            if c.name == name:
                return c
    raise KeyError(f"no claim named {name!r}")


def claims_table(runs: list[StudyRun], family: str = "paper", metric: str = "ndcg_cut_10",
                 split: str | None = None, seed: int = 0) -> pd.DataFrame:
    """The family's claims whose rows ran, tested on ``split`` (default: the runs' first).

    Holm counts the whole declared family (``FAMILIES[family]``): a claim whose rows did not
    run counts as untested (p = 1), which can only raise the others' adjusted p-values.
    Columns: ``CLAIM_COLUMNS``.
    """
    declared = FAMILIES[family]
    split = split or runs[0].split
    present = {r.row for r in runs if r.split == split}
    claims = [c for c in declared if {c.better, c.worse} <= present]
    if not claims:
        return pd.DataFrame(columns=CLAIM_COLUMNS)
    df = compare_rows(runs, [(c.better, c.worse) for c in claims], split, metric,
                      family_size=len(declared), seed=seed)
    df.insert(0, "claim", [c.name for c in claims])
    df.insert(1, "split", split)
    df = df.rename(columns={"system": "better", "reference": "worse"})
    df["inside ±delta"] = (df["95% CI low"] > -SMALLEST_EFFECT) & (df["95% CI high"]
                                                                    < SMALLEST_EFFECT)
    df["paper claimed"] = [c.paper_effect if c.paper_effect is not None else np.nan
                           for c in claims]
    df["excludes paper's effect"] = [excludes(lo, hi, c.paper_effect) for c, lo, hi
                                     in zip(claims, df["95% CI low"], df["95% CI high"],
                                            strict=True)]
    return df[CLAIM_COLUMNS]


def is_true(value) -> bool:
    """A table's yes/no cell as a bool, whether it came from memory or back from a CSV."""
    return value is True or isinstance(value, np.bool_) and bool(value) or str(value) == "True"


def committed_claims(path: Path | None = None) -> pd.DataFrame:
    """The cpu profile's committed claims table (empty when ``make study`` has not run)."""
    path = Path(path or FIGURES_ROOT / "04_claims.csv")
    return pd.read_csv(path) if path.exists() else pd.DataFrame(columns=CLAIM_COLUMNS)


def _fmt_interval(r: pd.Series) -> str:
    return f"{r['delta']:+.4f} (95% CI {r['95% CI low']:+.4f} to {r['95% CI high']:+.4f})"


def claim_sentence(r: pd.Series, spread: float | None = None) -> str:
    """One claim's verdict as a sentence: the interval, the Holm p, the seeds, what the
    interval says about the smallest effect of interest and the paper's own effect."""
    seeds = int(r["seeds"])
    text = (f"**{r['claim']}**: {r['verdict']}. Difference {_fmt_interval(r)} over "
            f"{int(r['n passages'])} test passages and {seeds} seed{'s' if seeds != 1 else ''}, "
            f"Holm p {r['p Holm']:.4f}")
    if seeds > 1:
        text += f"; seed by seed {r['seed deltas']}"
        if spread is not None and np.isfinite(spread) and spread > 0:
            text += f" (the rows' seed-to-seed sd is {spread:.4f})"
    text += ". "
    if r["verdict"] == "equivalent":
        text += (f"Any effect is smaller than {SMALLEST_EFFECT} either way: too small to matter "
                 "here. ")
    elif r["verdict"] == "inconclusive":
        text += (f"The interval is too wide to tell an effect from none at +/-{SMALLEST_EFFECT}. ")
    elif is_true(r["inside ±delta"]):
        text += f"Real, but smaller than {SMALLEST_EFFECT}. "
    claimed = r["paper claimed"]
    if isinstance(claimed, float) and not math.isnan(claimed):
        rules_out = is_true(r["excludes paper's effect"])
        text += (f"The paper's own step for this claim was {claimed:+.4f} (MIRACL nDCG@5): "
                 + ("this interval rules it out." if rules_out
                    else "this interval does not rule it out."))
    return text.strip()


def claim_sentences(table: pd.DataFrame, runs: list[StudyRun] | None = None) -> list[str]:
    """``claim_sentence`` for every row of a claims table (seed spread from ``runs``)."""
    spread = seed_spread(runs) if runs else pd.Series(dtype=float)
    out = []
    for _, r in table.iterrows():
        sds = [spread.get(row, np.nan) for row in (r["better"], r["worse"])]
        finite = [s for s in sds if np.isfinite(s)]
        out.append(claim_sentence(r, max(finite) if finite else None))
    return out


#: For each paper claim, the controls that bear on it (chapter 04 reads them together).
RELATED_CONTROLS = {
    PAPER_CLAIMS[0].name: [CONTROL_CLAIMS[5].name],
    PAPER_CLAIMS[1].name: [CONTROL_CLAIMS[6].name],
    PAPER_CLAIMS[2].name: [CONTROL_CLAIMS[0].name, CONTROL_CLAIMS[4].name,
                           CONTROL_CLAIMS[7].name, CONTROL_CLAIMS[9].name,
                           CONTROL_CLAIMS[10].name],
    PAPER_CLAIMS[3].name: [CONTROL_CLAIMS[1].name, CONTROL_CLAIMS[2].name,
                           CONTROL_CLAIMS[3].name],
    PAPER_CLAIMS[4].name: [CONTROL_CLAIMS[8].name],
}


def claim_with_controls(paper: pd.DataFrame, controls: pd.DataFrame | None) -> list[str]:
    """Chapter 04's reading of each paper claim: its verdict at the budget, then what each
    related control (and the scale check) says, from the two families' tables. A control
    that has not run is named with the command that runs it."""
    by_name = controls.set_index("claim") if controls is not None and len(controls) else None
    lines = []
    for _, r in paper.iterrows():
        line = f"- **{r['claim']}**: {r['verdict']} at the budget ({_fmt_interval(r)})."
        for name in RELATED_CONTROLS.get(r["claim"], []):
            if by_name is not None and name in by_name.index:
                c = by_name.loc[name]
                line += f" Control *{name}*: {c['verdict']} ({_fmt_interval(c)})."
            else:
                line += f" Control *{name}*: not run here (`make study-extras`)."
        lines.append(line)
    return lines


def intermediate_reading(controls: pd.DataFrame) -> str | None:
    """Is the intermediate-only gain the policy or the rate? One sentence from the controls
    (None when they have not run)."""
    t = controls.set_index("claim") if len(controls) else None
    same_rate, own_rate = CONTROL_CLAIMS[2].name, CONTROL_CLAIMS[3].name
    if t is None or same_rate not in t.index or own_rate not in t.index:
        return None
    a, b = t.loc[same_rate], t.loc[own_rate]
    policy = a["verdict"] == "held"
    rate = b["verdict"] == "held"
    if rate and not policy:
        reading = "the gain is the rate, not the policy"
    elif policy and not rate:
        reading = "the gain is the policy itself, not its higher rate"
    elif policy and rate:
        reading = "both the policy and its higher rate contribute"
    else:
        reading = "neither the policy at full's rate nor the higher rate alone is resolved"
    return (f"At full's learning rate, intermediate-only minus full fine-tuning is "
            f"{_fmt_interval(a)} ({a['verdict']}); its own rate over full's rate adds "
            f"{_fmt_interval(b)} ({b['verdict']}): {reading}.")


def alternatives_sentence(controls: pd.DataFrame) -> str | None:
    """CLP against every alternative loss of the controls family, in one sentence (None when
    the controls have not run)."""
    if not len(controls):
        return None
    vs = controls[controls["claim"].str.startswith("CLP")]
    return ("CLP against the alternatives a reviewer asks for: " + "; ".join(
        f"{r['claim']}: {r['verdict']} ({r['delta']:+.4f})" for _, r in vs.iterrows()) + ".")


def controls_table(runs: list[StudyRun], metric: str = "ndcg_cut_10",
                   committed: Path | None = None) -> tuple[pd.DataFrame, str]:
    """The controls family: computed from ``runs`` when their rows ran in this profile (the
    extras and smoke profiles), else read from the committed extras table. Returns the table
    and where it came from (empty with the command that fills it when neither exists)."""
    table = claims_table(runs, "controls", metric)
    if len(table):
        return table, "computed from this profile's runs"
    path = Path(committed or EXTRAS_ROOT / "04_claims_controls.csv")
    if path.exists():
        return pd.read_csv(path), f"read from {path.relative_to(FIGURES_ROOT.parent)}"
    return table, "not run yet: `make study-extras` trains the controls"


def scale_reading(controls: pd.DataFrame, paper: pd.DataFrame) -> list[str]:
    """Does each verdict at the cpu budget still hold on every training query? One sentence
    per scale-checked claim (empty when the scale check has not run)."""
    if not len(controls) or not len(paper):
        return []
    c, p = controls.set_index("claim"), paper.set_index("claim")
    pairs = [(CONTROL_CLAIMS[0].name, PAPER_CLAIMS[2].name),
             (CONTROL_CLAIMS[1].name, PAPER_CLAIMS[3].name)]
    out = []
    for scale, budget in pairs:
        if scale in c.index and budget in p.index:
            same = c.loc[scale, "verdict"] == p.loc[budget, "verdict"]
            out.append(f"*{budget}*: {p.loc[budget, 'verdict']} at the budget, "
                       f"{c.loc[scale, 'verdict']} on every training query "
                       f"({_fmt_interval(c.loc[scale])}, one seed): the verdict "
                       + ("holds at scale." if same else "changes with scale."))
    return out
