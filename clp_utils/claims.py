"""The claims the study tests, their Holm families, verdicts and generated sentences.

A claim says one row beats another (``Claim.better`` minus ``Claim.worse`` > 0; a contrast of
several rows for the 2x2's interaction). Each claim belongs to one family, and Holm adjusts
each family once per metric, so a comparison has one p-value wherever it is shown:

- ``paper``: the paper's five claims (Table 2's steps), at the cpu recipe (chapter 04);
- ``2x2``: policy (full, intermediate-only) by learning rate (each policy's own, the
  other's), and their interaction (``make study-extras``);
- ``controls``: the controls and checks a reviewer asks for (``make study-extras``): CLP at
  lambda 0.5, the paper's recipe with random negatives, the baselines CLP must beat, the gate
  that learns, and the scale check;
- ``hindi``: chapter 06's two claims on Hindi with multilingual-e5-small.

Every claim is tested on the paper's metric (nDCG@5, ``paper.METRIC``) and on nDCG@10, each
metric its own Holm family. A claim's interval comes from ``stats.comparison_table``
(passages by bootstrap, seeds as a Student-t term), its verdict from ``stats.verdict`` with
the claim's own margin: the paper's step on the paper's metric where the paper made the step
(``paper.STEPS``), else ``stats.SMALLEST_EFFECT``. A comparison whose trained side ran one
seed carries a declared seed component: the seed sd pooled over the family's two-seed
comparisons, stated in its sentence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from clp_utils import profiles as P
from clp_utils.base.paths import EXTRAS_ROOT, FIGURES_ROOT
from clp_utils.paper import METRIC, METRICS, SETTINGS, claimed_difference, step_margin
from clp_utils.plots import number
from clp_utils.results import clusters_of, seed_scores, seed_spread
from clp_utils.stats import SMALLEST_EFFECT, comparison_table, delta_matrix, excludes
from clp_utils.study import StudyRun

#: How the study names its models in sentences.
MODEL_NAMES = {"minilm": "all-MiniLM-L6-v2", "me5-small": "multilingual-e5-small"}


@dataclass(frozen=True)
class Claim:
    """``better`` beats ``worse`` (in the family ``family``); ``paper_rows`` names the
    paper's own pair of Table 2 rows for the same step, when it made one, in Table 2's
    column ``language``. ``plus``/``minus``: the rows whose per-query scores are summed on
    each side (default: ``better`` and ``worse`` themselves); a contrast of four rows is the
    2x2's interaction."""

    name: str
    better: str
    worse: str
    family: str
    paper_rows: tuple[str, str] | None = None
    language: str = "avg"
    plus: tuple[str, ...] = ()
    minus: tuple[str, ...] = ()

    @property
    def terms(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The rows summed on each side: (better side, worse side)."""
        return self.plus or (self.better,), self.minus or (self.worse,)

    @property
    def paper_effect(self) -> float | None:
        """The paper's claimed difference for this step (fraction of nDCG@5), or None."""
        return claimed_difference(*self.paper_rows, self.language) if self.paper_rows else None

    @property
    def margin(self) -> float:
        """The equivalence margin: the paper's own step where it made one (``paper.STEPS``),
        else ``stats.SMALLEST_EFFECT``."""
        step = step_margin(*self.paper_rows, self.language) if self.paper_rows else None
        return step if step is not None else SMALLEST_EFFECT


def _paper(name: str, better: str, worse: str) -> Claim:
    return Claim(name, better, worse, "paper", (better, worse))


RANDOM_HURTS = _paper("fine-tuning with random negatives hurts", P.ZERO_SHOT, P.RANDOM)
ANCE_BEATS_RANDOM = _paper("ANCE negatives beat random negatives", P.ANCE, P.RANDOM)
CLP_BEATS_INFONCE = _paper("CLP beats InfoNCE (ANCE + CLP > ANCE negatives)", P.CLP, P.ANCE)
INTERMEDIATE_BEATS_FULL = _paper(
    "training only the intermediate layers (own rate) beats full fine-tuning", P.INTERMEDIATE,
    P.CLP)
MOE_BEATS_INTERMEDIATE = _paper("MoE intermediate layers beat plain intermediate-only", P.MOE,
                                P.INTERMEDIATE)
PAPER_CLAIMS = [RANDOM_HURTS, ANCE_BEATS_RANDOM, CLP_BEATS_INFONCE, INTERMEDIATE_BEATS_FULL,
                MOE_BEATS_INTERMEDIATE]

# the 2x2: policy (full = the ANCE + CLP row, intermediate-only) by learning rate
_I_OWN, _I_FULL = P.INTERMEDIATE, P.INTERMEDIATE_FULL_RATE
_F_OWN, _F_INT = P.CLP, P.FULL_INTERMEDIATE_RATE
POLICY_AT_FULL_RATE = Claim("at full's rate, intermediate-only beats full fine-tuning", _I_FULL,
                            _F_OWN, "2x2", (P.INTERMEDIATE, P.CLP))
POLICY_AT_INTERMEDIATE_RATE = Claim(
    "at intermediate's rate, intermediate-only beats full fine-tuning", _I_OWN, _F_INT, "2x2",
    (P.INTERMEDIATE, P.CLP))
RATE_FOR_INTERMEDIATE = Claim("intermediate-only gains from its own, higher rate", _I_OWN,
                              _I_FULL, "2x2")
RATE_FOR_FULL = Claim("full fine-tuning gains from intermediate's higher rate", _F_INT, _F_OWN,
                      "2x2")
INTERACTION = Claim(
    "policy by rate interaction (intermediate-only's lead at intermediate's rate minus its "
    "lead at full's rate)", "intermediate-only's lead at intermediate's rate",
    "intermediate-only's lead at full's rate", "2x2", plus=(_I_OWN, _F_OWN),
    minus=(_F_INT, _I_FULL))
TWO_BY_TWO_CLAIMS = [POLICY_AT_FULL_RATE, POLICY_AT_INTERMEDIATE_RATE, RATE_FOR_INTERMEDIATE,
                     RATE_FOR_FULL, INTERACTION]

SCALE_CLP = P.SCALE_PREFIX + P.CLP
SCALE_ANCE = P.SCALE_PREFIX + P.ANCE
SCALE_INTERMEDIATE = P.SCALE_PREFIX + P.INTERMEDIATE
SCALE_CLP_BEATS_INFONCE = Claim("at every training query, CLP beats InfoNCE", SCALE_CLP,
                                SCALE_ANCE, "controls", (P.CLP, P.ANCE))
SCALE_INTERMEDIATE_BEATS_FULL = Claim(
    "at every training query, intermediate-only (own rate) beats full fine-tuning",
    SCALE_INTERMEDIATE, SCALE_CLP, "controls", (P.INTERMEDIATE, P.CLP))
LAMBDA_05 = Claim("CLP at lambda 0.5 beats InfoNCE", P.CLP_LAMBDA_05, P.ANCE, "controls",
                  (P.CLP, P.ANCE))
RECIPE_RANDOM_HURTS = Claim("with the paper's recipe, fine-tuning with random negatives hurts",
                            P.ZERO_SHOT, P.PAPER_RECIPE_RANDOM, "controls",
                            (P.ZERO_SHOT, P.RANDOM))
RECIPE_ANCE_BEATS_RANDOM = Claim("with the paper's recipe, ANCE negatives beat random negatives",
                                 P.PAPER_RECIPE_ANCE, P.PAPER_RECIPE_RANDOM, "controls",
                                 (P.ANCE, P.RANDOM))
CLP_BEATS_SYMMETRIC = Claim("CLP beats symmetric InfoNCE (a passage-to-query term without CLP)",
                            P.CLP, P.SYMMETRIC, "controls")
LEARNED_GATE = Claim("a MoE gate that learns beats the paper's frozen routing", P.MOE_LEARNED,
                     P.MOE, "controls")
CLP_BEATS_GIST = Claim("CLP beats GISTEmbedLoss (zero-shot guide)", P.CLP, P.GIST, "controls")
CLP_BEATS_MNRL = Claim("CLP beats hardness-weighted MNRL", P.CLP, P.MNRL_HARDNESS, "controls")
CONTROL_CLAIMS = [SCALE_CLP_BEATS_INFONCE, SCALE_INTERMEDIATE_BEATS_FULL, LAMBDA_05,
                  RECIPE_RANDOM_HURTS, RECIPE_ANCE_BEATS_RANDOM, CLP_BEATS_SYMMETRIC,
                  LEARNED_GATE, CLP_BEATS_GIST, CLP_BEATS_MNRL]

HINDI_CLAIMS = [
    Claim("fine-tuning mE5-small on Hindi (ANCE + InfoNCE) beats zero-shot", P.ANCE,
          P.ZERO_SHOT, "hindi", (P.ANCE, P.ZERO_SHOT), "hi"),
    Claim("CLP beats InfoNCE on Hindi", P.CLP, P.ANCE, "hindi", (P.CLP, P.ANCE), "hi"),
]

FAMILIES = {"paper": PAPER_CLAIMS, "2x2": TWO_BY_TWO_CLAIMS, "controls": CONTROL_CLAIMS,
            "hindi": HINDI_CLAIMS}

CLAIM_COLUMNS = ["claim", "metric", "split", "better", "worse", "n queries", "n passages",
                 "seeds", "seed term", "delta", "95% CI low", "95% CI high", "se", "df", "p",
                 "p Holm", "verdict", "margin", "edge distance", "at the edge",
                 "MDE (80% power)", "paper claimed", "excludes paper's effect", "seed deltas",
                 "p (per query)"]


def claim_of(name: str) -> Claim:
    """A claim by its name (any family)."""
    for claims in FAMILIES.values():
        for c in claims:
            if c.name == name:
                return c
    raise KeyError(f"no claim named {name!r}")


def setting_of(runs: list[StudyRun], split: str | None = None) -> str:
    """This study's setting in words, for a sentence: model, data, split and training size."""
    trained = [r for r in runs if r.result is not None and (split is None or r.split == split)]
    split = split or runs[0].split
    if not trained:
        return f"SQuADShifts {split}"
    config = trained[0].result.config
    model = MODEL_NAMES.get(config.model, config.model)
    data = "XQuAD Hindi" if split == "hindi" else f"SQuADShifts {split}"
    return f"{model} on {data}"


def _side(runs: list[StudyRun], rows: tuple[str, ...], split: str, metric: str,
          seeds: set[int] | None) -> dict[int, dict[str, float]]:
    """The per-query sum of ``rows``' scores, per seed (a one-run row, zero-shot, joins every
    seed); restricted to ``seeds`` when given."""
    scores = [seed_scores(runs, r, split, metric) for r in rows]
    multi = [set(s) for s in scores if len(s) > 1]
    wanted = set.intersection(*multi) if multi else {0}
    if seeds is not None:
        wanted &= seeds
    out = {}
    for s in sorted(wanted):
        parts = [t[s] if s in t else next(iter(t.values())) for t in scores]
        out[s] = {q: float(sum(p[q] for p in parts)) for q in parts[0]}
    return out


def _seed_restriction(runs: list[StudyRun], claim: Claim, split: str) -> set[int] | None:
    """The seeds every trained row of the claim ran (None: no trained row)."""
    rows = {r for side in claim.terms for r in side}
    seeds = [{r.seed for r in runs if r.row == row and r.split == split} for row in rows
             if row != P.ZERO_SHOT]
    return set.intersection(*seeds) if seeds else None


def pooled_seed_component(per_seed: dict, pairs: list[tuple[str, str]]) -> tuple[float, int]:
    """The seed sd of a difference pooled over the pairs with two or more paired seeds (the
    mean of their per-seed variances; degrees of freedom: the sum of S - 1). (nan, 0) when
    none has two seeds."""
    variances, df = [], 0
    for system, ref in pairs:
        _, d = delta_matrix(per_seed[system], per_seed[ref])
        if d.shape[0] > 1:
            variances.append(float(d.mean(1).var(ddof=1)) * (d.shape[0] - 1))
            df += d.shape[0] - 1
    return (math.sqrt(sum(variances) / df), df) if df else (float("nan"), 0)


def claims_table(runs: list[StudyRun], family: str = "paper", metric: str = METRIC,
                 split: str | None = None, seed: int = 0) -> pd.DataFrame:
    """The family's claims whose rows ran, tested on ``split`` (default: the runs' first).

    Holm counts the whole declared family (``FAMILIES[family]``): a claim whose rows did not
    run counts as untested (p = 1), which can only raise the others' adjusted p-values. A
    claim whose trained rows share one seed gets the seed component pooled over the
    family's two-seed comparisons (``pooled_seed_component``). Columns: ``CLAIM_COLUMNS``.
    """
    declared = FAMILIES[family]
    split = split or runs[0].split
    present = {r.row for r in runs if r.split == split}
    claims = [c for c in declared if {r for side in c.terms for r in side} <= present]
    if not claims:
        return pd.DataFrame(columns=CLAIM_COLUMNS)
    per_seed, pairs = {}, []
    for c in claims:
        seeds = _seed_restriction(runs, c, split)
        plus, minus = c.terms
        per_seed[c.better] = _side(runs, plus, split, metric, seeds)
        per_seed[c.worse] = _side(runs, minus, split, metric, seeds)
        pairs.append((c.better, c.worse))
    pooled, pooled_df = pooled_seed_component(per_seed, pairs)
    df = comparison_table(per_seed, pairs, clusters_of(runs, split), family_size=len(declared),
                          seed=seed, margins=[c.margin for c in claims],
                          seed_sd=pooled if pooled_df else None,
                          seed_df=pooled_df or None)
    df.insert(0, "claim", [c.name for c in claims])
    df.insert(1, "metric", metric)
    df.insert(2, "split", split)
    df = df.rename(columns={"system": "better", "reference": "worse"})
    df["paper claimed"] = [c.paper_effect if c.paper_effect is not None else np.nan
                           for c in claims]
    df["excludes paper's effect"] = [excludes(lo, hi, c.paper_effect) for c, lo, hi
                                     in zip(claims, df["95% CI low"], df["95% CI high"],
                                            strict=True)]
    df.attrs["pooled seed sd"] = (pooled, pooled_df)
    return df[CLAIM_COLUMNS]


def claims_both_metrics(runs: list[StudyRun], family: str = "paper",
                        split: str | None = None) -> pd.DataFrame:
    """``claims_table`` on the paper's metric and on nDCG@10, one above the other (each metric
    its own Holm family)."""
    tables = [claims_table(runs, family, m, split) for m in METRICS]
    out = pd.concat([t for t in tables if len(t)], ignore_index=True) if any(
        len(t) for t in tables) else tables[0]
    out.attrs = tables[0].attrs
    return out


def is_true(value) -> bool:
    """A table's yes/no cell as a bool, whether it came from memory or back from a CSV."""
    return value is True or isinstance(value, np.bool_) and bool(value) or str(value) == "True"


def committed_claims(path: Path | None = None) -> pd.DataFrame:
    """The cpu profile's committed claims table (empty when ``make study`` has not run)."""
    path = Path(path or FIGURES_ROOT / "04_claims.csv")
    return pd.read_csv(path) if path.exists() else pd.DataFrame(columns=CLAIM_COLUMNS)


def _fmt_interval(r: pd.Series) -> str:
    return f"{r['delta']:+.4f} (95% CI {r['95% CI low']:+.4f} to {r['95% CI high']:+.4f})"


METRIC_NAMES = {"ndcg_cut_5": "nDCG@5", "ndcg_cut_10": "nDCG@10"}


def _edge_words(r: pd.Series) -> str:
    """How near the verdict is to changing word (``stats.edge_distance``)."""
    distance = r.get("edge distance")
    if distance is None or not np.isfinite(distance):
        return ""
    if is_true(r.get("at the edge")):
        return f" It is at the edge: {distance:.4f} from reading otherwise."
    return f" It is {distance:.4f} from reading otherwise."


def claim_sentence(r: pd.Series, spread: float | None = None, setting: str | None = None) -> str:
    """One claim's verdict as a sentence: metric and setting, the interval, the Holm p, the
    seeds (and a declared seed component), the margin, how near the verdict is to changing,
    and what the interval says about the paper's own step (named with its setting)."""
    seeds = int(r["seeds"])
    metric = METRIC_NAMES.get(str(r.get("metric", "")), str(r.get("metric", "")))
    where = f" ({metric}, {setting})" if setting else (f" ({metric})" if metric else "")
    text = (f"**{r['claim']}**{where}: {r['verdict']}. Difference {_fmt_interval(r)} over "
            f"{int(r['n passages'])} test passages and {seeds} seed{'s' if seeds != 1 else ''}, "
            f"Holm p {number(r['p Holm'], 'p')}")
    if seeds > 1:
        text += f"; seed by seed {r['seed deltas']}"
        if spread is not None and np.isfinite(spread) and spread > 0:
            text += f" (the rows' seed-to-seed sd is {spread:.4f})"
    text += "."
    if r.get("seed term") == "declared":
        text += (" One seed: the seed component is declared, the seed sd pooled over this "
                 "family's two-seed comparisons.")
    margin = float(r.get("margin", SMALLEST_EFFECT))
    paper_margin = not math.isclose(margin, SMALLEST_EFFECT)
    size = ("an effect as large as the paper's step" if paper_margin
            else "an effect of one nDCG point")
    if r["verdict"] == "reversed":
        text += f" Reversed: {r['worse']} beats {r['better']} here, the opposite of the claim."
    if r["verdict"] == "equivalent":
        text += f" The interval lies inside +/-{margin:.4f}: {size} is ruled out."
    elif r["verdict"] == "inconclusive" and (r["95% CI low"] > 0 or r["95% CI high"] < 0):
        text += (" Its 95% interval excludes zero, but the test does not reject after Holm's "
                 "adjustment for the family's other claims: it reads held or reversed only "
                 "with a smaller family or more seeds.")
    elif r["verdict"] == "inconclusive":
        text += (f" The interval is too wide to tell {size} (+/-{margin:.4f}) from none.")
    elif str(r["verdict"]).startswith("one seed"):
        text += " With one seed and no declared seed component, no verdict is read."
    if not (r["verdict"] == "inconclusive" and (r["95% CI low"] > 0 or r["95% CI high"] < 0)):
        text += _edge_words(r)
    if step := _paper_step(r):
        text += (f" The paper's own step for this claim was {step}: this interval "
                 + ("rules it out." if is_true(r["excludes paper's effect"])
                    else "does not rule it out."))
    return text.strip()


def _paper_step(r: pd.Series) -> str | None:
    """The paper's step for a claims-table row with its setting, e.g. "+0.0063 (BGE-M3 on
    MIRACL, average of ko, fa, hi, nDCG@5)"; None where the paper made no such step."""
    claimed = r["paper claimed"]
    if not isinstance(claimed, float) or math.isnan(claimed):
        return None
    language = claim_of(r["claim"]).language if _known(r["claim"]) else "avg"
    return f"{claimed:+.4f} ({SETTINGS[language]}, nDCG@5)"


def _known(name: str) -> bool:
    try:
        claim_of(name)
    except KeyError:
        return False
    return True


def claim_sentences(table: pd.DataFrame, runs: list[StudyRun] | None = None) -> list[str]:
    """``claim_sentence`` for every row of a claims table (seed spread and setting from
    ``runs``)."""
    spread = seed_spread(runs) if runs else pd.Series(dtype=float)
    out = []
    for _, r in table.iterrows():
        sds = [spread.get(row, np.nan) for row in (r["better"], r["worse"])]
        finite = [s for s in sds if np.isfinite(s)]
        setting = setting_of(runs, r["split"]) if runs else None
        out.append(claim_sentence(r, max(finite) if finite else None, setting))
    return out


def power_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per claim of a claims table: the smallest effect this design detects with 80% power
    (``stats.minimum_detectable_effect`` at the claim's standard error and degrees of
    freedom, level 0.05 before Holm, which can only raise it), next to the paper's step on
    its own metric, and whether an effect of the paper's size was detectable."""
    out = table[["claim", "metric", "seeds", "n passages", "se", "df", "MDE (80% power)",
                 "paper claimed"]].copy()
    out["paper's step detectable"] = [
        (bool(abs(step) >= mde) if np.isfinite(step) and np.isfinite(mde) else None)
        for step, mde in zip(out["paper claimed"], out["MDE (80% power)"], strict=True)]
    return out


def power_sentence(power: pd.DataFrame, setting: str | None = None) -> str:
    """Which of the paper's steps this design could have detected (80% power), from
    ``power_table`` on one metric."""
    if not len(power):
        return "No claim ran here: no power to state."
    metric = METRIC_NAMES.get(str(power["metric"].iloc[0]), str(power["metric"].iloc[0]))
    seeds = int(power["seeds"].max())
    can = [f"{r['claim']} (MDE {r['MDE (80% power)']:.4f} vs the paper's "
           f"{r['paper claimed']:+.4f})" for _, r in power.iterrows()
           if r["paper's step detectable"] is True]
    cannot = [f"{r['claim']} (MDE {r['MDE (80% power)']:.4f} vs the paper's "
              f"{r['paper claimed']:+.4f})" for _, r in power.iterrows()
              if r["paper's step detectable"] is False]
    where = f" ({setting})" if setting else ""
    text = (f"With {seeds} seed{'s' if seeds != 1 else ''} and "
            f"{int(power['n passages'].max())} test passages{where}, on {metric}, this design "
            "detects with 80% power an effect the size of the paper's step for ")
    text += ("; ".join(can) if can else "none of its claims")
    text += ". It could not detect one for " + ("; ".join(cannot) if cannot else "no claim")
    text += ": there a verdict other than held says little about an effect of the paper's size."
    return text


#: For each paper claim, the controls that bear on it (chapter 04 reads them together).
RELATED_CONTROLS = {
    RANDOM_HURTS.name: [RECIPE_RANDOM_HURTS.name],
    ANCE_BEATS_RANDOM.name: [RECIPE_ANCE_BEATS_RANDOM.name],
    CLP_BEATS_INFONCE.name: [SCALE_CLP_BEATS_INFONCE.name, LAMBDA_05.name,
                             CLP_BEATS_SYMMETRIC.name, CLP_BEATS_GIST.name, CLP_BEATS_MNRL.name],
    INTERMEDIATE_BEATS_FULL.name: [SCALE_INTERMEDIATE_BEATS_FULL.name, POLICY_AT_FULL_RATE.name,
                                   POLICY_AT_INTERMEDIATE_RATE.name, INTERACTION.name],
    MOE_BEATS_INTERMEDIATE.name: [LEARNED_GATE.name],
}


def claim_with_controls(paper: pd.DataFrame, controls: pd.DataFrame | None) -> list[str]:
    """Chapter 04's reading of each paper claim: its verdict at the budget, then what each
    related control (the 2x2 and the scale check among them) says, from the families'
    tables on one metric. A control that has not run is named with the command that runs it."""
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


def two_by_two_reading(table: pd.DataFrame) -> str | None:
    """The 2x2 of policy by rate in one sentence, claiming no more than its cells show (None
    when it has not run): the policy's lead at each rate, and their difference (the
    interaction) with its verdict."""
    t = table.set_index("claim") if len(table) else None
    names = [POLICY_AT_FULL_RATE.name, POLICY_AT_INTERMEDIATE_RATE.name, INTERACTION.name]
    if t is None or any(n not in t.index for n in names):
        return None
    at_full, at_int, inter = (t.loc[n] for n in names)
    text = (f"Intermediate-only minus full fine-tuning is {_fmt_interval(at_full)} at full's "
            f"rate ({at_full['verdict']}) and {_fmt_interval(at_int)} at intermediate's rate "
            f"({at_int['verdict']}); the difference between the two, the policy-by-rate "
            f"interaction, is {_fmt_interval(inter)} ({inter['verdict']}). ")
    if inter["verdict"] == "held":
        # which side of zero each cell's interval lies on (0: it straddles zero)
        full_side, int_side = (int(np.sign(r["95% CI low"])) if r["95% CI low"] > 0
                               else -1 if r["95% CI high"] < 0 else 0 for r in (at_full, at_int))
        if full_side * int_side < 0:
            text += ("Which policy leads depends on the rate (by the two cells' 95% intervals): "
                     f"intermediate-only {'leads' if full_side > 0 else 'trails'} at full's rate "
                     f"and {'leads' if int_side > 0 else 'trails'} at its own; neither the "
                     "policy alone nor the rate alone explains the gain.")
        elif full_side > 0 and int_side > 0:
            text += ("Intermediate-only leads at both rates, and by more at its own rate: the "
                     "rate adds to the policy's lead.")
        else:
            text += "The policy's lead grows at intermediate's rate."
    elif inter["verdict"] == "reversed":
        text += "The policy's lead shrinks at intermediate's rate."
    elif inter["verdict"] == "equivalent":
        text += "The policy's lead does not depend on the rate here."
    else:
        text += "These cells cannot say whether the policy's lead depends on the rate."
    return text


def alternatives_sentence(controls: pd.DataFrame) -> str | None:
    """CLP against every alternative loss of the controls family, in one sentence (None when
    the controls have not run)."""
    if not len(controls):
        return None
    vs = controls[controls["claim"].str.startswith("CLP")]
    return ("CLP against the alternatives a reviewer asks for: " + "; ".join(
        f"{r['claim']}: {r['verdict']} ({r['delta']:+.4f}){_winner(r)}"
        for _, r in vs.iterrows()) + ".")


def controls_table(runs: list[StudyRun], metric: str = METRIC, family: str = "controls",
                   committed: Path | None = None) -> tuple[pd.DataFrame, str]:
    """A family of the extras (``controls`` or ``2x2``): computed from ``runs`` when its rows
    ran in this profile (the extras and smoke profiles), else read from the committed extras
    table. Returns the table (on ``metric``) and where it came from (empty with the command
    that fills it when neither exists)."""
    table = claims_table(runs, family, metric)
    if len(table):
        return table, "computed from this profile's runs"
    stem = "04_claims_controls" if family == "controls" else "04_claims_2x2"
    path = Path(committed or EXTRAS_ROOT / f"{stem}.csv")
    if path.exists():
        read = pd.read_csv(path)
        if "metric" in read:
            read = read[read["metric"] == metric].reset_index(drop=True)
        return read, f"read from {path.relative_to(FIGURES_ROOT.parent)}"
    return table, "not run yet: `make study-extras` trains the controls"


def scale_reading(controls: pd.DataFrame, paper: pd.DataFrame) -> list[str]:
    """Does each verdict at the cpu budget still hold on every training query? One sentence
    per scale-checked claim (empty when the scale check has not run)."""
    if not len(controls) or not len(paper):
        return []
    c, p = controls.set_index("claim"), paper.set_index("claim")
    pairs = [(SCALE_CLP_BEATS_INFONCE.name, CLP_BEATS_INFONCE.name),
             (SCALE_INTERMEDIATE_BEATS_FULL.name, INTERMEDIATE_BEATS_FULL.name)]
    out = []
    for scale, budget in pairs:
        if scale in c.index and budget in p.index:
            seeds = int(c.loc[scale, "seeds"])
            same = c.loc[scale, "verdict"] == p.loc[budget, "verdict"]
            out.append(f"*{budget}*: {p.loc[budget, 'verdict']} at the budget, "
                       f"{c.loc[scale, 'verdict']} on every training query "
                       f"({_fmt_interval(c.loc[scale])}, {seeds} seed{'s' if seeds != 1 else ''}"
                       + (", seed component declared" if c.loc[scale].get("seed term")
                          == "declared" else "")
                       + "): the verdict " + ("holds at scale." if same
                                              else "changes with scale."))
    return out


def framing_sentence(profile: str = "cpu") -> str:
    """What the study tests and what it does not, in one sentence generated from the
    profiles: the paper's claims carried to the cpu profile's model, data and budget, plus
    the scale check; not the paper's own model, data and budget (the full profile)."""
    study = P.get_profile(profile).study
    base = study.base
    model = MODEL_NAMES.get(base.model, base.model)
    scale = P.get_profile("extras").study
    return (f"This study tests whether the paper's claims carry over to another model, data "
            f"and budget: {model} fine-tuned on SQuADShifts {', '.join(study.splits)} with "
            f"{base.train_queries} training queries per run and {len(study.seeds)} seeds on 2 "
            f"CPU cores, plus a scale check on every training query "
            f"({len(scale.seeds_of(SCALE_CLP))} seeds, `make study-extras`). It does not test "
            f"the paper's own model, data and budget ({SETTINGS['avg'].split(',')[0]} Korean, "
            "Persian and Hindi on GPUs: `configs/miracl/`), nor the full profile (every "
            "training query of two splits, three seeds, a GPU); neither has run here, so its "
            "verdicts speak to how far the claims generalise, not to the paper's numbers.")


def summary_line(r: pd.Series) -> str:
    """A claim in one line for "What we found": verdict and interval on its metric, how near
    the verdict is to changing, and whether the paper's step (named with its setting) is
    ruled out."""
    metric = METRIC_NAMES.get(str(r["metric"]), str(r["metric"]))
    text = f"{r['claim']}: {r['verdict']}{_winner(r)} ({metric} {_fmt_interval(r)})"
    if is_true(r.get("at the edge")):
        text += ", at the edge"
    if step := _paper_step(r):
        text += (f"; the paper's step, {step}, is "
                 + ("ruled out" if is_true(r["excludes paper's effect"]) else "not ruled out"))
    return text + "."


def _winner(r: pd.Series) -> str:
    """", <worse> beats <better>" for a reversed claim (which row won), else nothing."""
    return f", {r['worse']} beats {r['better']}" if r.get("verdict") == "reversed" else ""


def _direction(r: pd.Series, against: str = "") -> str:
    """What a row of "fine-tuning with random negatives hurts" says random negatives do (with
    ``against``, e.g. " against zero-shot", after the verb): its verdict, or, for an
    inconclusive one whose interval excludes zero, the interval's side and that it does not
    survive Holm's adjustment."""
    said = {"held": "hurt", "reversed": "help", "equivalent": "change nothing that matters"}
    if r["verdict"] in said:
        return said[r["verdict"]] + against
    if r["95% CI high"] < 0 or r["95% CI low"] > 0:
        side = "help" if r["95% CI high"] < 0 else "hurt"
        return f"{side}{against} by their 95% interval, though not after Holm's adjustment"
    return f"may help or hurt{against} (unresolved)"


def random_negatives_reading(paper: pd.DataFrame, controls: pd.DataFrame,
                             budgets: dict[str, tuple[int, float, int]]) -> str | None:
    """Why random negatives help here when they hurt in the paper, from the two claims "random
    negatives hurts" (study recipe, in-batch negatives) and its paper-recipe control (no
    in-batch negatives), and the two recipes' budgets (``budgets``: label -> (training
    queries, training seconds, threads that trained)). None when the study's claim has not
    run."""
    p = paper.set_index("claim") if len(paper) else None
    if p is None or RANDOM_HURTS.name not in p.index:
        return None
    here = p.loc[RANDOM_HURTS.name]
    text = (f"With the study's recipe (in-batch negatives), random negatives "
            f"{_direction(here, ' against zero-shot')} ({_fmt_interval(here)}).")
    c = controls.set_index("claim") if len(controls) else None
    if c is not None and RECIPE_RANDOM_HURTS.name in c.index:
        recipe = c.loc[RECIPE_RANDOM_HURTS.name]
        text += (f" With the paper's recipe (no in-batch negatives) they "
                 f"{_direction(recipe)} ({_fmt_interval(recipe)}).")
        if recipe["verdict"] == here["verdict"] == "reversed":
            text += (" In-batch negatives cannot be the whole reason random negatives help "
                     "here: without them they help too.")
    else:
        text += " The paper's recipe with random negatives has not run here (`make study-extras`)."
    if budgets:
        text += " The two recipes also differ in budget: " + "; ".join(
            f"{label} saw {queries:,} training queries in {seconds:.0f} s on {threads} "
            f"thread{'s' if threads != 1 else ''}"
            for label, (queries, seconds, threads) in budgets.items()) + "."
    return text
