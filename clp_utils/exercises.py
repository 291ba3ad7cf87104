"""The chapters' "try this" exercises: a parameter change, the question it answers, and a
solution with the outcome the project measured.

Each chapter ends with two exercises. ``task(key)`` says what to change and what it answers;
``attempt(key, profile, run)`` does it at the profile's size (a tiny run in the smoke
profile, so the test chain executes every exercise; in the cpu profile a trained exercise is
the run ``make study-extras`` trained, read back, or it says how long it would take);
``solution(key)`` states what the project measured, read from the committed figures (the
cpu profile's, or the extras' for the controls), and what to conclude from it. Nothing in a
solution is typed by hand: a solution whose measurement is not committed says which command
produces it.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from clp_utils import claims as C
from clp_utils import profiles as P
from clp_utils.base.paths import EXTRAS_ROOT, FIGURES_ROOT
from clp_utils.claims import Claim, claim_sentence
from clp_utils.geometry import repair_reading
from clp_utils.paper import METRIC
from clp_utils.study import config_of
from clp_utils.train_config import TrainConfig
from clp_utils.training import train

EXTRAS = EXTRAS_ROOT


@dataclass(frozen=True)
class Exercise:
    """One exercise: its chapter, the change, the question, what trains (if anything) and
    where its measured answer lives."""

    key: str
    title: str
    change: str
    question: str
    config: Callable[[str], TrainConfig] | None = None  # the run it trains, per profile
    answer: Callable[[], str] | None = None  # the measured outcome and what it means


def _read(path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.exists() else None


def _from_table(path, command: str, text: Callable[[pd.DataFrame], str]) -> Callable[[], str]:
    """An answer read from a committed table: ``text(table)``, or which command makes it."""
    def answer() -> str:
        table = _read(path)
        return _missing(path, command) if table is None else text(table)
    return answer


def _missing(path, command: str) -> str:
    return f"Not measured yet: {path.relative_to(FIGURES_ROOT.parent)} is absent (`{command}`)."


def _control(claim: Claim) -> Callable[[], str]:
    """The sentence of one claim of the extras (its family's table, on the paper's metric)."""
    def answer(table: pd.DataFrame) -> str:
        if "metric" in table.columns:
            table = table[table["metric"] == METRIC]
        if claim.name not in set(table["claim"]):
            return (f"Not measured yet: {claim.name!r} is not in the {claim.family} table "
                    "(`make study-extras`).")
        return claim_sentence(table.set_index("claim").loc[claim.name].rename(claim.name)
                              .to_frame().T.reset_index(names="claim").iloc[0])
    stem = "04_claims_2x2" if claim.family == "2x2" else "04_claims_controls"
    return _from_table(EXTRAS / f"{stem}.csv", "make study-extras", answer)


def _negatives_answer(table: pd.DataFrame) -> str:
    curves = table[table["kind"] == "curve at the time budget"].set_index("setting")
    one, four = (curves.loc[f"{k} neg, 128 tok", "val_ndcg_cut_10"] for k in (1, 4))
    better = "1 negative" if one >= four else "4 negatives"
    return (f"At the same training time, the design's learning curves reached validation "
            f"nDCG@10 {one:.4f} with 1 negative and {four:.4f} with 4: {better} per query "
            "scores higher at equal cost on two cores (one curve each, so a small difference "
            "is a weak signal; the design chose on it). 4 negatives make each step slower, and "
            "with in-batch negatives a query already meets many passages per step.")


def _window_answer(table: pd.DataFrame) -> str:
    t = table.set_index("configuration")
    a, b = (t.loc[c, "fn_rate_negatives"] for c in ("ANCE 3-30", "ANCE 1-30"))
    return (f"Negatives containing an answer: {a:.1%} from ranks 3-30, {b:.1%} from ranks "
            "1-30. The passages the model ranks at the very top are the likeliest false "
            "negatives, which is why mined windows start below them.")


def _toy_answer(column: str, lam: float, tau: float, versus: tuple[float, float]) -> Callable:
    def answer(table: pd.DataFrame) -> str:
        t = table.set_index(["tau", "lambda"])
        here, there = t.loc[(tau, lam)], t.loc[versus]
        return (f"At tau {tau} and lambda {lam}: margin {here['margin']:.3f}, cos(n, q*) "
                f"{here['neg_to_its_query']:.3f}; at tau {versus[0]} and lambda {versus[1]}: "
                f"margin {there['margin']:.3f}, cos(n, q*) {there['neg_to_its_query']:.3f}. "
                + ("Raising lambda keeps the negative nearer its own query and costs q "
                   "margin: a trade, not a free gain." if column == "lambda" else
                   "The higher temperature pushes the negative further from q (a larger "
                   "margin) and from its own query too: lambda means something only with tau."))
    return _from_table(FIGURES_ROOT / "02_lambda_tradeoff.csv", "make study", answer)


def _harm_answer(table: pd.DataFrame) -> str:
    t = table.set_index("comparison")
    rows = [r for r in t.index if P.CLP_LAMBDA_05 in r and " - " in r]
    if not rows:
        return "Not measured yet: the lambda 0.5 runs are absent (`make study-extras`)."
    r = t.loc[rows[0]]
    return (f"{rows[0]}: the own-query gap moves by {r['own minus matched control']:+.4f} "
            f"(95% CI {r['95% CI low']:+.4f} to {r['95% CI high']:+.4f}): {repair_reading(r)} "
            "of the harm to the negatives' own queries at five times the paper's lambda.")


def _overlap_answer(table: pd.DataFrame) -> str:
    bands = table.set_index("overlap band")
    low, high = bands["BM25 - dense"].iloc[0], bands["BM25 - dense"].iloc[-1]
    return (f"Question by question, BM25's lead over the dense model is {low:+.3f} nDCG@10 "
            f"for the questions sharing the fewest words with their passage and {high:+.3f} "
            "for those sharing the most: "
            + ("the more a question reuses its passage's words, the more exact term matching "
               "wins." if high > low else "overlap does not explain BM25's lead here.")
            + " Across the splits' averages the two move less together: a split's overlap "
              "is one cause of BM25's lead among several (its domain, its vocabulary).")


def _cutoff_answer(table: pd.DataFrame) -> str:
    flips = []
    for split, part in table.groupby("split"):
        at5 = part.set_index("system")["ndcg_cut_5"].idxmax()
        at10 = part.set_index("system")["ndcg_cut_10"].idxmax()
        if at5 != at10:
            flips.append(split)
    return ("No split changes its winner between nDCG@5 and nDCG@10: the cut-off moves every "
            "number, not the ranking of systems." if not flips else
            f"The winner changes on {', '.join(flips)}: the cut-off matters there.")




def _validation_text(t: pd.DataFrame) -> str:
    t = t.set_index("row")
    zs = t.loc[P.ZERO_SHOT, "validation ndcg_cut_10"]
    worse = [r for r in t.index if r != P.ZERO_SHOT and t.loc[r, "validation ndcg_cut_10"] < zs]
    return (f"On the validation queries mE5-small zero-shot scores {zs:.4f}; "
            + (f"{', '.join(worse)} score below it there too: validation would have warned "
               "before any test query was seen." if worse else
               "every fine-tuned row scores above it there: validation would not have "
               "warned, so the drop on test is not visible before testing."))


def _tokenizer_text(t: pd.DataFrame) -> str:
    t = t.set_index("model")
    parts = [f"{m}: {t.loc[m, 'pieces per word']:.1f} pieces per Hindi word, "
             f"{t.loc[m, 'unknown share']:.1%} unknown pieces" for m in t.index]
    return ("; ".join(parts) + ". An English WordPiece vocabulary spells Hindi out letter by "
            "letter, which is why MiniLM retrieves almost nothing there.")


def _trained_on_answer(table: pd.DataFrame) -> str:
    t = table.set_index(["row", "group"])["change"]
    parts = [f"{row}: {t[(row, g)]:+.4f} for {g}" for row, g in t.index]
    return ("Mean change in nDCG@10 (fine-tuned minus zero-shot) per group: " + "; ".join(parts)
            + ". Queries the run trained on gain the most: training pulls their passage back, "
              "which is why the harm analysis sets them apart.")


def _trained(row: str) -> Callable[[str], TrainConfig]:
    return lambda profile: config_of(profile if profile == "smoke" else "extras", row)


def _figure(stem: str, text: Callable[[pd.DataFrame], str],
            command: str = "make study") -> Callable[[], str]:
    """An answer read from the cpu profile's committed table ``figures/<stem>.csv``."""
    return _from_table(FIGURES_ROOT / f"{stem}.csv", command, text)


EXERCISES = [
    Exercise("00a", "Lexical overlap and BM25's lead",
             "compare the overlap table above, across splits and by overlap band",
             "Is BM25's lead over the dense model largest where questions reuse their "
             "passage's words?", None, _figure("00_overlap_bands", _overlap_answer)),
    Exercise("00b", "nDCG@5 instead of nDCG@10",
             "metric = 'ndcg_cut_5' in the parameters cell (the bar chart reads it)",
             "Does any split change its winner with the cut-off?", None,
             _figure("00_baselines", _cutoff_answer)),
    Exercise("01a", "Four negatives per query",
             "MiningConfig(num_negatives=4) in the training config, not the recipe's 1",
             "At equal training time on two cores, do more hard negatives per query help?",
             None, _figure("03_validation", _negatives_answer, "make design")),
    Exercise("01b", "Mine from rank 1",
             "MiningConfig(rank_min=1): let the negatives start right below the positive",
             "How many more false negatives does the top of the ranking bring?",
             None, _figure("01_false_negatives", _window_answer)),
    Exercise("02a", "Lambda 0.5", "lam = 0.5 (the slider in JupyterLab)",
             "Where does the negative come to rest, and what does q pay for it?",
             None, _toy_answer("lambda", 0.5, 0.02, (0.02, 0.1))),
    Exercise("02b", "Temperature 0.05", "tau = 0.05 (the slider in JupyterLab)",
             "How much further does InfoNCE alone push the negative?",
             None, _toy_answer("tau", 0.0, 0.05, (0.02, 0.0))),
    Exercise("03a", "Intermediate-only at full fine-tuning's rate",
             "policy='intermediate' with the full policy's learning rate",
             "Is intermediate-only's lead the policy, or its ten times higher rate?",
             _trained(P.INTERMEDIATE_FULL_RATE), _control(C.POLICY_AT_FULL_RATE)),
    Exercise("03b", "Random negatives without in-batch negatives",
             "the paper's recipe (in_batch=False, tau 0.02, batch 4) with random negatives",
             "Do random negatives hurt where they are nearly the only negatives, as in the "
             "paper?", _trained(P.PAPER_RECIPE_RANDOM), _control(C.RECIPE_RANDOM_HURTS)),
    Exercise("04a", "CLP at lambda 0.5", "lam=0.5 in the ANCE + CLP row",
             "With the penalty at five times the paper's weight, does CLP beat InfoNCE?",
             _trained(P.CLP_LAMBDA_05), _control(C.LAMBDA_05)),
    Exercise("04b", "Symmetric InfoNCE", "loss='infonce_symmetric' (passage-to-query added)",
             "Does CLP beat the standard way of adding a passage-to-query term?",
             _trained(P.SYMMETRIC), _control(C.CLP_BEATS_SYMMETRIC)),
    Exercise("05a", "The harm at lambda 0.5", "the own-query analysis on the lambda 0.5 runs",
             "Does a five times stronger penalty change how the negatives' own queries fare?",
             _trained(P.CLP_LAMBDA_05),
             _from_table(EXTRAS / "05_harm_gaps.csv", "make study-extras", _harm_answer)),
    Exercise("05b", "Queries the run also trained on",
             "read the own queries that were also training queries (table above)",
             "How much does training on a query protect its passage?", None,
             _figure("05_own_query_retrieval", _trained_on_answer)),
    Exercise("06a", "Would validation have warned?",
             "read the validation scores of the Hindi runs (table above)",
             "Does fine-tuning hurt mE5-small on Hindi validation queries too?", None,
             _figure("06_validation", _validation_text)),
    Exercise("06b", "MiniLM's vocabulary on Hindi",
             "tokenize Hindi test passages with each model's tokenizer (table above)",
             "Why does an English model retrieve almost nothing in Hindi?", None,
             _figure("06_tokenizer", _tokenizer_text)),
]
BY_KEY = {e.key: e for e in EXERCISES}


def exercises_of(chapter: str) -> list[Exercise]:
    """A chapter's exercises (``chapter``: "00" .. "06")."""
    return [e for e in EXERCISES if e.key.startswith(chapter)]


def task(key: str) -> str:
    """The exercise as a student reads it: title, change, question."""
    e = BY_KEY[key]
    return f"Exercise {e.key}: {e.title}. Change: {e.change}. Question: {e.question}"


def attempt(key: str, profile: str, run: bool = False) -> str:
    """Do the exercise at ``profile``'s size when ``run`` (the smoke chain runs every one);
    otherwise say what it would train. A run the extras already trained is read back."""
    e = BY_KEY[key]
    if e.config is None:
        return f"{task(key)}\nNothing to train: make the change above and rerun the cells."
    config = e.config(profile)
    if not run:
        return (f"{task(key)}\nSet run_exercises = True to train it here ({config.label}, "
                f"{config.train_queries or 'all'} training queries); a run `make study-extras` "
                "trained is read back at once.")
    result = train(config, progress=True)
    return (f"{task(key)}\nTrained here ({profile}): test nDCG@10 "
            f"{result.metrics.get('ndcg_cut_10', float('nan')):.4f}.")


def solution(key: str) -> str:
    """What the project measured for this exercise, and what to conclude."""
    e = BY_KEY[key]
    if e.answer is None:
        return f"Solution {key}: see the cells above."
    try:
        return f"Solution {key}: {e.answer()}"
    except (KeyError, ValueError) as err:  # a committed table from before this exercise
        return (f"Solution {key}: the committed table does not hold this measurement yet "
                f"({err}); `make study` (and `make study-extras`) regenerate it.")


@dataclass(frozen=True)
class Folded:
    """A solution that stays folded until the reader opens it: an HTML ``<details>`` in
    JupyterLab and in the book (folded even right after the cell runs), plain text elsewhere."""

    text: str

    def _repr_html_(self) -> str:
        body = html.escape(self.text.split(": ", 1)[1]) if ": " in self.text else self.text
        return (f"<details><summary><b>{html.escape(self.text.split(':', 1)[0])}</b> "
                f"(click to unfold)</summary><p>{body}</p></details>")

    def __repr__(self) -> str:
        return self.text


def folded_solution(key: str) -> Folded:
    """``solution(key)``, folded (the last expression of an exercise's solution cell)."""
    return Folded(solution(key))
