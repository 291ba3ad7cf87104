"""The claims the study tests, their Holm families, verdicts and generated sentences.

A claim says one row beats another (``Claim.better`` minus ``Claim.worse`` > 0). Each claim
belongs to one family (``FAMILIES``): ``paper``, the paper's five claims at the cpu recipe
(chapter 04); ``2x2``, policy by learning rate and their interaction, and ``controls``, the
controls and checks a reviewer asks for (both ``make study-extras``); ``hindi``, chapter 06's
two claims. Every claim is tested on nDCG@5 (``paper.METRIC``) and on nDCG@10, Holm once per
family and metric, by ``stats.comparison_table`` with the claim's own margin; a comparison
whose trained side ran one seed carries the seed sd pooled over the family's two-seed
comparisons (``pooled_seed_component``), stated in its sentence.
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
from clp_utils.plots import interval_text, number, read_table
from clp_utils.results import clusters_of, seed_scores, seed_spread
from clp_utils.stats import (
    SMALLEST_EFFECT,
    comparison_table,
    excludes,
    pooled_seed_component,
)
from clp_utils.study import StudyRun

#: How the study names its models in sentences.
MODEL_NAMES = {"minilm": "all-MiniLM-L6-v2", "me5-small": "multilingual-e5-small"}
METRIC_NAMES = {"ndcg_cut_5": "nDCG@5", "ndcg_cut_10": "nDCG@10"}


@dataclass(frozen=True)
class Claim:
    """``better`` beats ``worse`` in ``family``. ``paper_rows``: the paper's pair of Table 2
    rows for the same step, where it made one, in its column ``language``; ``plus``/``minus``:
    the rows summed on each side (default ``better``, ``worse``; four rows: the interaction)."""

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
_BY_NAME = {c.name: c for claims in FAMILIES.values() for c in claims}

CLAIM_COLUMNS = ["claim", "metric", "split", "better", "worse", "n queries", "n passages",
                 "seeds", "seed term", "delta", "95% CI low", "95% CI high", "se", "df", "p",
                 "p Holm", "verdict", "margin", "edge distance", "at the edge",
                 "MDE (80% power)", "paper claimed", "excludes paper's effect", "seed deltas",
                 "p (per query)"]


def setting_of(runs: list[StudyRun], split: str | None = None) -> str:
    """This study's setting in words, for a sentence: model and data of ``split``'s runs."""
    trained = [r for r in runs if r.result is not None and (split is None or r.split == split)]
    split = split or runs[0].split
    if not trained:
        return f"SQuADShifts {split}"
    model = trained[0].result.config.model
    data = "XQuAD Hindi" if split == "hindi" else f"SQuADShifts {split}"
    return f"{MODEL_NAMES.get(model, model)} on {data}"


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


def claims_table(runs: list[StudyRun], family: str = "paper", metric: str = METRIC,
                 split: str | None = None, seed: int = 0) -> pd.DataFrame:
    """The family's claims whose rows ran, tested on ``split`` (default: the runs' first).

    Holm counts the whole declared family (``FAMILIES[family]``): a claim whose rows did not
    run counts as untested (p = 1). Each claim is tested on the seeds all its trained rows
    ran; one that has one seed gets ``pooled_seed_component``. Columns: ``CLAIM_COLUMNS``.
    """
    declared = FAMILIES[family]
    split = split or runs[0].split
    present = {r.row for r in runs if r.split == split}
    claims = [c for c in declared if {*c.terms[0], *c.terms[1]} <= present]
    if not claims:
        return pd.DataFrame(columns=CLAIM_COLUMNS)
    per_seed, pairs = {}, []
    for i, c in enumerate(claims):
        plus, minus = c.terms
        trained = [{r.seed for r in runs if r.row == row and r.split == split}
                   for row in {*plus, *minus} if row != P.ZERO_SHOT]
        seeds = set.intersection(*trained) if trained else None
        # keyed by claim: a row in two claims may be tested on other seeds in each
        better, worse = (i, c.better), (i, c.worse)
        per_seed[better] = _side(runs, plus, split, metric, seeds)
        per_seed[worse] = _side(runs, minus, split, metric, seeds)
        pairs.append((better, worse))
    pooled, pooled_df = pooled_seed_component(per_seed, pairs)
    df = comparison_table(per_seed, pairs, clusters_of(runs, split), family_size=len(declared),
                          seed=seed, margins=[c.margin for c in claims],
                          seed_sd=pooled if pooled_df else None,
                          seed_df=pooled_df or None)
    df.insert(0, "claim", [c.name for c in claims])
    df.insert(1, "metric", metric)
    df.insert(2, "split", split)
    df["system"], df["reference"] = [c.better for c in claims], [c.worse for c in claims]
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
    ran = [t for t in tables if len(t)]
    out = pd.concat(ran, ignore_index=True) if ran else tables[0]
    out.attrs = tables[0].attrs
    return out


def is_true(value) -> bool:
    """A table's yes/no cell as a bool, whether it came from memory or back from a CSV."""
    return str(value) == "True"


def committed_claims(path: Path | None = None) -> pd.DataFrame:
    """The cpu profile's committed claims table (empty when ``make study`` has not run)."""
    path = Path(path or FIGURES_ROOT / "04_claims.csv")
    return read_table(path) if path.exists() else pd.DataFrame(columns=CLAIM_COLUMNS)


def _zero_side(r: pd.Series) -> int:
    """Which side of zero the row's 95% interval lies on: 1 above, -1 below, 0 across."""
    return 1 if r["95% CI low"] > 0 else -1 if r["95% CI high"] < 0 else 0


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def _metric_name(metric: object) -> str:
    return METRIC_NAMES.get(str(metric), str(metric))


def claim_sentence(r: pd.Series, spread: float | None = None, setting: str | None = None) -> str:
    """One claim's verdict as a sentence: metric and setting, the interval, the Holm p, the
    seeds (and a declared seed component), the margin, how near the verdict is to changing
    (``stats.edge_distance``), and what the interval says about the paper's own step."""
    seeds, verdict = int(r["seeds"]), r["verdict"]
    metric = _metric_name(r.get("metric", ""))
    where = f" ({metric}, {setting})" if setting else (f" ({metric})" if metric else "")
    text = (f"**{r['claim']}**{where}: {verdict}. Difference {interval_text(r)} over "
            f"{int(r['n passages'])} test passages and {_plural(seeds, 'seed')}, "
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
    size = ("an effect of one nDCG point" if math.isclose(margin, SMALLEST_EFFECT)
            else "an effect as large as the paper's step")
    held_back = verdict == "inconclusive" and _zero_side(r) != 0  # only Holm kept the word
    if verdict == "reversed":
        text += f" Reversed: {r['worse']} beats {r['better']} here, the opposite of the claim."
    if verdict == "equivalent":
        text += f" The interval lies inside +/-{margin:.4f}: {size} is ruled out."
    elif held_back:
        text += (" Its 95% interval excludes zero, but the test does not reject after Holm's "
                 "adjustment for the family's other claims: it reads held or reversed only "
                 "with a smaller family or more seeds.")
    elif verdict == "inconclusive":
        text += (f" The interval is too wide to tell {size} (+/-{margin:.4f}) from none.")
    elif str(verdict).startswith("one seed"):
        text += " With one seed and no declared seed component, no verdict is read."
    distance = r.get("edge distance")
    if not held_back and distance is not None and np.isfinite(distance):
        text += (" It is at the edge:" if is_true(r.get("at the edge")) else " It is")
        text += f" {distance:.4f} from reading otherwise."
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
    claim = _BY_NAME.get(r["claim"])
    return f"{claimed:+.4f} ({SETTINGS[claim.language if claim else 'avg']}, nDCG@5)"


def claim_sentences(table: pd.DataFrame, runs: list[StudyRun] | None = None) -> list[str]:
    """``claim_sentence`` for every row of a claims table (the larger seed spread of its two
    rows and the setting from ``runs``)."""
    spread = seed_spread(runs) if runs else pd.Series(dtype=float)
    return [claim_sentence(r, spread.reindex([r["better"], r["worse"]]).max(),
                           setting_of(runs, r["split"]) if runs else None)
            for _, r in table.iterrows()]


def power_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per claim of a claims table: the smallest effect it detects with 80% power (level 0.05
    before Holm), the paper's step, and whether an effect of the paper's size was detectable."""
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
    said = {flag: "; ".join(f"{r['claim']} (MDE {r['MDE (80% power)']:.4f} vs the paper's "
                            f"{r['paper claimed']:+.4f})" for _, r in power.iterrows()
                            if r["paper's step detectable"] is flag) for flag in (True, False)}
    where = f" ({setting})" if setting else ""
    return (f"With {_plural(int(power['seeds'].max()), 'seed')} and "
            f"{int(power['n passages'].max())} test passages{where}, on "
            f"{_metric_name(power['metric'].iloc[0])}, this design detects with 80% power an "
            f"effect the size of the paper's step for {said[True] or 'none of its claims'}. It "
            f"could not detect one for {said[False] or 'no claim'}: there a verdict other than "
            "held says little about an effect of the paper's size.")


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
    related control (``RELATED_CONTROLS``) says, from the families' tables on one metric; a
    control that has not run is named with the command that runs it."""
    by_name = controls.set_index("claim") if controls is not None and len(controls) else None
    lines = []
    for _, r in paper.iterrows():
        line = f"- **{r['claim']}**: {r['verdict']} at the budget ({interval_text(r)})."
        for name in RELATED_CONTROLS.get(r["claim"], []):
            if by_name is not None and name in by_name.index:
                c = by_name.loc[name]
                line += f" Control *{name}*: {c['verdict']} ({interval_text(c)})."
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
    text = (f"Intermediate-only minus full fine-tuning is {interval_text(at_full)} at full's "
            f"rate ({at_full['verdict']}) and {interval_text(at_int)} at intermediate's rate "
            f"({at_int['verdict']}); the difference between the two, the policy-by-rate "
            f"interaction, is {interval_text(inter)} ({inter['verdict']}). ")
    if inter["verdict"] != "held":
        return text + {"reversed": "The policy's lead shrinks at intermediate's rate.",
                       "equivalent": "The policy's lead does not depend on the rate here."}.get(
            inter["verdict"], "These cells cannot say whether the policy's lead depends on the "
            "rate.")
    full_side, int_side = _zero_side(at_full), _zero_side(at_int)
    if full_side * int_side < 0:
        return text + ("Which policy leads depends on the rate (by the two cells' 95% "
                       f"intervals): intermediate-only {'leads' if full_side > 0 else 'trails'} "
                       f"at full's rate and {'leads' if int_side > 0 else 'trails'} at its own; "
                       "neither the policy alone nor the rate alone explains the gain.")
    if full_side > 0 and int_side > 0:
        return text + ("Intermediate-only leads at both rates, and by more at its own rate: the "
                       "rate adds to the policy's lead.")
    return text + "The policy's lead grows at intermediate's rate."


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
    """A family of the extras (``controls`` or ``2x2``) on ``metric``: computed from ``runs``
    when its rows ran here, else read from the committed extras table; and where it came
    from (empty, with the command that fills it, when neither exists)."""
    table = claims_table(runs, family, metric)
    if len(table):
        return table, "computed from this profile's runs"
    stem = "04_claims_controls" if family == "controls" else "04_claims_2x2"
    path = Path(committed or EXTRAS_ROOT / f"{stem}.csv")
    if path.exists():
        read = read_table(path)
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
            at_scale, verdict = c.loc[scale], p.loc[budget, "verdict"]
            declared = (", seed component declared" if at_scale.get("seed term") == "declared"
                        else "")
            out.append(f"*{budget}*: {verdict} at the budget, {at_scale['verdict']} on every "
                       f"training query ({interval_text(at_scale)}, "
                       f"{_plural(int(at_scale['seeds']), 'seed')}{declared}): the verdict "
                       + ("holds at scale." if at_scale["verdict"] == verdict
                          else "changes with scale."))
    return out


def framing_sentence(profile: str = "cpu") -> str:
    """What the study tests and what it does not, in one sentence generated from the
    profiles: the paper's claims carried to the cpu profile's model, data and budget, plus
    the scale check; not the paper's own model, data and budget (the full profile)."""
    study = P.get_profile(profile).study
    base, scale = study.base, P.get_profile("extras").study
    model = MODEL_NAMES.get(base.model, base.model)
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
    """A claim in one line for "What we found": verdict and interval on its metric, whether it
    is at the edge, and whether the paper's step (named with its setting) is ruled out."""
    metric = _metric_name(r["metric"])
    text = f"{r['claim']}: {r['verdict']}{_winner(r)} ({metric} {interval_text(r)})"
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
    """What a row of "fine-tuning with random negatives hurts" says random negatives do
    (``against`` follows the verb): its verdict, else its interval's side of zero, if any."""
    said = {"held": "hurt", "reversed": "help", "equivalent": "change nothing that matters"}
    if r["verdict"] in said:
        return said[r["verdict"]] + against
    if side := _zero_side(r):
        return (f"{'help' if side < 0 else 'hurt'}{against} by their 95% interval, though not "
                "after Holm's adjustment")
    return f"may help or hurt{against} (unresolved)"


def random_negatives_reading(paper: pd.DataFrame, controls: pd.DataFrame,
                             budgets: dict[str, tuple[int, float, int]]) -> str | None:
    """Why random negatives help here when they hurt in the paper, from "random negatives
    hurts" (study recipe, in-batch negatives), its paper-recipe control (none) and the two
    recipes' ``budgets`` (label -> (training queries, seconds, threads)). None when the
    study's claim has not run."""
    p = paper.set_index("claim") if len(paper) else None
    if p is None or RANDOM_HURTS.name not in p.index:
        return None
    here = p.loc[RANDOM_HURTS.name]
    text = (f"With the study's recipe (in-batch negatives), random negatives "
            f"{_direction(here, ' against zero-shot')} ({interval_text(here)}).")
    c = controls.set_index("claim") if len(controls) else None
    if c is not None and RECIPE_RANDOM_HURTS.name in c.index:
        recipe = c.loc[RECIPE_RANDOM_HURTS.name]
        text += (f" With the paper's recipe (no in-batch negatives) they "
                 f"{_direction(recipe)} ({interval_text(recipe)}).")
        if recipe["verdict"] == here["verdict"] == "reversed":
            text += (" In-batch negatives cannot be the whole reason random negatives help "
                     "here: without them they help too.")
    else:
        text += " The paper's recipe with random negatives has not run here (`make study-extras`)."
    if budgets:
        text += " The two recipes also differ in budget: " + "; ".join(
            f"{label} saw {queries:,} training queries in {seconds:.0f} s on "
            f"{_plural(threads, 'thread')}"
            for label, (queries, seconds, threads) in budgets.items()) + "."
    return text
