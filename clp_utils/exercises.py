"""The chapters' "try this" exercises, write-code checks and questionnaires.

Each chapter ends with two exercises: ``task(key)`` says what to change and what it answers;
``attempt(key, profile, run)`` starts with how long it takes here (``duration``) and does it
at the profile's size (the smoke chain runs every one; in the cpu profile a run that
``make study-extras`` trained is read back); ``solution(key)`` states what the project
measured, read from the committed figures (the extras' for the controls), or which command
produces it: nothing in a solution is typed by hand. Each chapter also has one write-code
exercise (``check(key, fn)``: the student's function against the package's on a few inputs)
and a questionnaire on its own results (``folded_answer(key)``, read from committed tables).
"""

from __future__ import annotations

import functools
import html
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

from clp_utils import claims as C
from clp_utils import profiles as P
from clp_utils.base.paths import FIGURES_ROOT
from clp_utils.batching import Example, false_in_batch_negatives
from clp_utils.claims import Claim, claim_sentence
from clp_utils.costs import estimate_cells
from clp_utils.evaluation import evaluate_run
from clp_utils.geometry import repair_reading
from clp_utils.losses import clp_penalty
from clp_utils.mining import contains_answer
from clp_utils.models import model_path
from clp_utils.multilingual import tokenizer_table
from clp_utils.paper import METRIC
from clp_utils.plots import interval_text, read_table
from clp_utils.results import forgetting_sentence
from clp_utils.runstore import is_finished
from clp_utils.stats import paired_test
from clp_utils.study import config_of
from clp_utils.train_config import TrainConfig
from clp_utils.training import train


@dataclass(frozen=True)
class Exercise:
    """One exercise: its chapter, the change, the question, what trains (if anything) and
    where its measured answer lives."""

    key: str
    title: str
    change: str
    question: str
    answer: Callable[[], str]  # the measured outcome and what it means
    config: Callable[[str], TrainConfig] | None = None  # the run it trains, per profile
    after: str = ""  # what reads the trained run, where that is not this cell


def _read(stem: str) -> pd.DataFrame | None:
    path = FIGURES_ROOT / f"{stem}.csv"
    return read_table(path) if path.exists() else None


def _missing(stem: str, command: str) -> str:
    return f"Not measured yet: {FIGURES_ROOT.name}/{stem}.csv is absent (`{command}`)."


def _figure(stem: str, text: Callable[[pd.DataFrame], str],
            command: str = "make study") -> Callable[[], str]:
    """An answer read from the committed table ``figures/<stem>.csv``: ``text(table)``, or
    which command makes the table."""
    def answer() -> str:
        table = _read(stem)
        return _missing(stem, command) if table is None else text(table)
    return answer


def _each(t: pd.DataFrame, row: Callable[[pd.Series], str], lead: str = "") -> str:
    return lead + "; ".join(row(r) for _, r in t.iterrows()) + "."


def _control(claim: Claim) -> Callable[[], str]:
    """The sentence of one claim of the extras (its family's table, on the paper's metric)."""
    def answer(table: pd.DataFrame) -> str:
        if "metric" in table.columns:
            table = table[table["metric"] == METRIC]
        rows = table[table["claim"] == claim.name]
        if rows.empty:
            return (f"Not measured yet: {claim.name!r} is not in the {claim.family} table "
                    "(`make study-extras`).")
        return claim_sentence(rows.iloc[0])
    stem = "04_claims_2x2" if claim.family == "2x2" else "04_claims_controls"
    return _figure(f"extras/{stem}", answer, "make study-extras")


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
        rest = t.columns[t.columns.str.startswith("resting angle")][0]
        return (f"At tau {tau} and lambda {lam}: margin {here['margin']:.3f}, cos(n, q*) "
                f"{here['neg_to_its_query']:.3f}, the negative rests at {here[rest]}° (q, p, q* "
                f"held); at tau {versus[0]} and lambda {versus[1]}: margin "
                f"{there['margin']:.3f}, cos(n, q*) {there['neg_to_its_query']:.3f}, resting "
                f"angle {there[rest]}°. "
                + ("Raising lambda keeps the negative nearer its own query and costs q "
                   "margin: a trade, not a free gain." if column == "lambda" else
                   "The higher temperature pushes the negative further from q (a larger "
                   "margin) and from its own query too: lambda means something only with tau."))
    return _figure("02_lambda_tradeoff", answer)


def _harm_answer(table: pd.DataFrame) -> str:
    t = table.set_index("comparison")
    rows = [r for r in t.index if P.CLP_LAMBDA_05 in r and " - " in r]
    if not rows:
        return "Not measured yet: the lambda 0.5 runs are absent (`make study-extras`)."
    r = t.loc[rows[0]]
    return (f"{rows[0]}: the own-query gap moves by "
            f"{interval_text(r, 'own minus matched control')}: {repair_reading(r)} of the harm "
            "to the negatives' own queries at five times the paper's lambda.")


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
    flips = [split for split, part in table.groupby("split")
             if part.set_index("system")[["ndcg_cut_5", "ndcg_cut_10"]].idxmax().nunique() > 1]
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
    return _each(t, lambda r: f"{r['model']}: {r['pieces per word']:.1f} pieces per Hindi word, "
                 f"{r['unknown share']:.1%} unknown pieces") + (
        " An English WordPiece vocabulary spells Hindi out letter by letter, which is why "
        "MiniLM retrieves almost nothing there.")


def _trained_on_answer(t: pd.DataFrame) -> str:
    return _each(t, lambda r: f"{r['row']}: {r['change']:+.4f} for {r['group']}",
                 "Mean change in nDCG@10 (fine-tuned minus zero-shot) per group: ") + (
        " Queries the run trained on gain the most: training pulls their passage back, which is "
        "why the harm analysis sets them apart.")


def _trained(row: str) -> Callable[[str], TrainConfig]:
    return lambda profile: config_of(profile if profile == "smoke" else "extras", row)


EXERCISES = [
    Exercise("00a", "Lexical overlap and BM25's lead",
             "compare the overlap table above, across splits and by overlap band",
             "Is BM25's lead over the dense model largest where questions reuse their "
             "passage's words?", _figure("00_overlap_bands", _overlap_answer)),
    Exercise("00b", "nDCG@5 instead of nDCG@10",
             "metric = 'ndcg_cut_5' in the parameters cell (the bar chart reads it)",
             "Does any split change its winner with the cut-off?",
             _figure("00_baselines", _cutoff_answer)),
    Exercise("01a", "Four negatives per query",
             "read the 1- and 4-negative curves of the design (figures/03_validation.csv; "
             "chapter 03 draws them, `make design` re-makes them in about an hour)",
             "At equal training time on two cores, do more hard negatives per query help?",
             _figure("03_validation", _negatives_answer, "make design")),
    Exercise("01b", "Mine from rank 1",
             "compare the window from rank 1 with the study's window in the table above "
             "(MiningConfig(rank_min=1) makes that row)",
             "How many more false negatives do ranks 1-2 bring, and is that worth skipping "
             "them for?", _figure("01_false_negatives", _window_answer)),
    Exercise("02a", "Lambda 0.5", "lam = 0.5 (the slider in JupyterLab)",
             "Where does the negative come to rest, and what does q pay for it?",
             _toy_answer("lambda", 0.5, 0.02, (0.02, 0.1))),
    Exercise("02b", "Temperature 0.05", "tau = 0.05 (the slider in JupyterLab)",
             "How much further does InfoNCE alone push the negative?",
             _toy_answer("tau", 0.0, 0.05, (0.02, 0.0))),
    Exercise("03a", "Intermediate-only at full fine-tuning's rate",
             "policy='intermediate' with the full policy's learning rate",
             "Is intermediate-only's lead the policy, or its ten times higher rate?",
             _control(C.POLICY_AT_FULL_RATE), config=_trained(P.INTERMEDIATE_FULL_RATE)),
    Exercise("03b", "Random negatives without in-batch negatives",
             "the paper's recipe (in_batch=False, tau 0.02, batch 4) with random negatives",
             "Do random negatives hurt where they are nearly the only negatives, as in the "
             "paper?", _control(C.RECIPE_RANDOM_HURTS), config=_trained(P.PAPER_RECIPE_RANDOM)),
    Exercise("04a", "CLP at lambda 0.5", "lam=0.5 in the ANCE + CLP row",
             "With the penalty at five times the paper's weight, does CLP beat InfoNCE?",
             _control(C.LAMBDA_05), config=_trained(P.CLP_LAMBDA_05)),
    Exercise("04b", "Symmetric InfoNCE", "loss='infonce_symmetric' (passage-to-query added)",
             "Does CLP beat the standard way of adding a passage-to-query term?",
             _control(C.CLP_BEATS_SYMMETRIC), config=_trained(P.SYMMETRIC)),
    Exercise("05a", "The harm at lambda 0.5", "the own-query analysis on the lambda 0.5 runs",
             "Does a five times stronger penalty change how the negatives' own queries fare?",
             _figure("extras/05_harm_gaps", _harm_answer, "make study-extras"),
             config=_trained(P.CLP_LAMBDA_05),
             after="The own-query analysis of the lambda 0.5 runs is this chapter on the extras "
             "profile (profile = 'extras', or `make study-extras`): its harm family holds "
             "them."),
    Exercise("05b", "Queries the run also trained on",
             "read the own queries that were also training queries (table above)",
             "How much does training on a query protect its passage?",
             _figure("05_own_query_retrieval", _trained_on_answer)),
    Exercise("06a", "Would validation have warned?",
             "read the validation scores of the Hindi runs (table above)",
             "Does fine-tuning hurt mE5-small on Hindi validation queries too?",
             _figure("06_validation", _validation_text)),
    Exercise("06b", "MiniLM's vocabulary on Hindi",
             "tokenize Hindi test passages with each model's tokenizer (table above)",
             "Why does an English model retrieve almost nothing in Hindi?",
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


def duration(key: str, profile: str) -> str:
    """How long the exercise takes here: seconds for one that reads tables or runs the toy
    or whose run is already trained, else ``costs.estimate_cells`` of the run it trains."""
    e = BY_KEY[key]
    if e.config is None:
        return "Takes seconds here (it reads tables or runs the toy)."
    config = e.config(profile)
    if is_finished(config):
        return "Takes seconds here: its run is already trained, and is read back."
    est = estimate_cells([config])
    took = "under a minute" if est.seconds < 60 else f"about {est.seconds / 60:.0f} min"
    return (f"Takes {took} here ({est.steps} optimizer steps, {est.precision}; step and "
            "encoding rates measured on this machine).")


def attempt(key: str, profile: str, run: bool = False) -> str:
    """Do the exercise at ``profile``'s size when ``run`` (the smoke chain runs every one);
    otherwise say what it would train. Either way it starts with ``duration``. A run the
    extras already trained is read back."""
    e, took = BY_KEY[key], duration(key, profile)
    if e.config is None:
        return f"{took}\n{task(key)}\nNothing to train: make the change above and rerun the cells."
    config = e.config(profile)
    if not run:
        return (f"{took}\n{task(key)}\nSet run_exercises = True to train it here "
                f"({config.label}, {config.train_queries or 'all'} training queries); a run "
                "`make study-extras` trained is read back at once. " + e.after).rstrip()
    result = train(config, progress=True)
    return (f"{took}\n{task(key)}\nTrained here ({profile}): test nDCG@10 "
            f"{result.metrics.get('ndcg_cut_10', float('nan')):.4f}. " + e.after).rstrip()


def solution(key: str) -> str:
    """What the project measured for this exercise, and what to conclude."""
    return _answered(f"Solution {key}", BY_KEY[key].answer)


def _answered(label: str, answer: Callable[[], str]) -> str:
    try:
        return f"{label}: {answer()}"
    except (KeyError, ValueError, IndexError) as err:  # a table from before this question
        return (f"{label}: the committed table does not hold this measurement yet "
                f"({err}); `make study` (and `make study-extras`) regenerate it.")


@dataclass(frozen=True)
class Folded:
    """A solution that stays folded until the reader opens it: an HTML ``<details>`` in
    JupyterLab and in the book (folded even right after the cell runs), plain text elsewhere."""

    text: str

    def _repr_html_(self) -> str:
        label, _, body = self.text.partition(": ")  # "Solution 00a: ..."
        return (f"<details><summary><b>{html.escape(label)}</b> (click to unfold; read from "
                "the committed tables of the cpu profile and its extras, whatever profile ran "
                f"here)</summary><p>{html.escape(body)}</p></details>")

    def __repr__(self) -> str:
        return self.text


def folded_solution(key: str) -> Folded:
    """``solution(key)``, folded (the last expression of an exercise's solution cell)."""
    return Folded(solution(key))


# --------------------------------------------------------------------------- write the code


@dataclass(frozen=True)
class Check:
    """A write-code exercise: the task, named inputs, the package's answer to each, and
    ``student(fn, *args)``: the student's output in the form ``reference`` returns."""

    task: str
    cases: Callable[[], list[tuple[str, tuple]]]
    reference: Callable[..., object]
    student: Callable[..., object] = lambda fn, *args: fn(*args)


def _flat(x) -> np.ndarray:
    if isinstance(x, tuple | list):
        return np.concatenate([_flat(v) for v in x]) if x else np.zeros(0)
    return np.asarray(x.detach() if isinstance(x, torch.Tensor) else x, dtype=float).ravel()


def _gap(got, want, tol: float = 1e-9) -> str | None:
    """``None`` when ``got`` is ``want`` (numbers within ``tol``, NaN where it is NaN), else
    how they differ."""
    if isinstance(want, list) and all(isinstance(w, str) for w in want):
        return None if list(got) == want else f"you return {list(got)!r}, the package {want!r}"
    g, w = _flat(got), _flat(want)
    if g.shape == w.shape and np.allclose(g, w, rtol=0, atol=tol, equal_nan=True):
        return None
    worst = np.nanmax(np.abs(g - w), initial=0.0) if g.shape == w.shape else float("nan")
    return (f"you return {np.round(g, 6).tolist()}, the package {np.round(w, 6).tolist()} "
            f"(largest difference {worst:.3g}; NaN marks a missing value)")


def _tensors(mask: bool = False) -> list[tuple[str, tuple]]:
    """Hard negatives (k, d) and their own queries (k, m, d), float64, not unit length, and
    with ``mask`` a (k, m) validity of the query slots."""
    out = []
    for k, m, d in ((1, 1, 3), (2, 2, 5), (3, 2, 8)):
        g = torch.Generator().manual_seed(100 * k + 10 * m + d)
        args = (3 * torch.randn(k, d, generator=g, dtype=torch.float64),
                torch.randn(k, m, d, generator=g, dtype=torch.float64))
        valid = (torch.rand(k, m, generator=g) < 0.6) | (torch.arange(k * m) == 0).reshape(k, m)
        out.append((f"k={k} negatives, m={m} own queries, d={d}", args + (valid,) * mask))
    return out


def _autograd_penalty(negs: torch.Tensor, own: torch.Tensor) -> tuple:
    negs = negs.detach().clone().requires_grad_(True)
    (penalty := clp_penalty(negs[None], own[None])).backward()
    return penalty.detach(), negs.grad


def _cosines(fn, negs, own, valid) -> tuple:
    """The student's cosines (NaN where masked) and the penalty their mean makes."""
    cos = torch.as_tensor(_flat(fn(negs, own, valid))).reshape(valid.shape)
    return cos, 1.0 - torch.nanmean(cos)


def _groups(*spec: str) -> list[Example]:
    """Training groups from "pos neg neg ..." strings (passage ids stand in for texts)."""
    return [Example(f"q{i}", (ids := s.split())[0], ids[1:], [[""]] * len(ids[1:]),
                    [0.0] * len(ids[1:]), ids[0], ids[1:]) for i, s in enumerate(spec)]


@functools.cache
def _minilm_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path("minilm"), local_files_only=True)


_TOKENIZED = {"Hindi": ["भारत की राजधानी नई दिल्ली है।", "हिन्दी भारत की एक प्रमुख भाषा है।"],
              "English": ["The capital of India is New Delhi.", "Hindi is a major language."]}
CHECKS = {
    "00c": Check(
        "nDCG@10 of one ranked list by hand, against pytrec_eval (evaluation.evaluate_run)",
        lambda: [("one relevant at rank 2", (["d3", "d1", "d7", "d2"], {"d1": 1})),
                 ("graded, one beyond the cut-off",
                  ([f"d{i}" for i in range(12)], {"d2": 2, "d5": 1, "d11": 1})),
                 ("a relevant passage never retrieved", (["d1", "d2", "d3"], {"d2": 1, "d9": 2}))],
        lambda ranking, rel: evaluate_run(
            {"q": {d: float(len(ranking) - i) for i, d in enumerate(ranking)}},
            {"q": rel}).per_query["ndcg_cut_10"]["q"]),
    "01c": Check(
        "drop the candidate negatives that contain an answer (mining.contains_answer)",
        lambda: [("a city", (["He moved to Paris in 1920.", "A Parisian cafe.",
                              "PARIS   is big.", "Nothing here."], ["Paris"])),
                 ("answers with punctuation", (["It cost $5 then.", "It cost $50.",
                                                "The U.S. army", "US troops"], ["$5", "U.S."]))],
        lambda cands, answers: [c for c in cands if not contains_answer(c, answers)]),
    "02c": Check("the CLP penalty of one query's negatives and its gradient in closed form, "
                 "against losses.clp_penalty and autograd", _tensors, _autograd_penalty),
    "03c": Check(
        "false in-batch negatives per batch (batching.false_in_batch_negatives)",
        lambda: [("four groups, batches of two", (_groups("p1 p2", "p2 p3", "p1 p4", "p5 p1"),
                                                  [[0, 1], [0, 2], [1, 3], [2, 3]])),
                 ("six groups, batches of three",
                  (_groups(*(f"p{i % 4} p{(i + 1) % 5} p{(i + 3) % 6}" for i in range(6))),
                   [[0, 1, 2], [3, 4, 5], [0, 4, 5]]))],
        lambda ex, b: [false_in_batch_negatives(ex, b)[k] for k in (
            "share_of_batches_with_false_negative", "false_negatives_per_batch",
            "share_of_queries_affected")],
        lambda fn, ex, b: (lambda n: [np.mean(n > 0), n.mean(), n.sum() / sum(map(len, b))])(
            np.asarray(fn(ex, b), dtype=float))),
    "04c": Check(
        "the mean per-query change and the share of queries improved (stats.paired_test)",
        lambda: [("three queries", ({"q1": 0.5, "q2": 0.2, "q3": 0.9},
                                    {"q1": 0.6, "q2": 0.1, "q3": 1.0})),
                 ("a tie is not an improvement", ({"q1": 0.5, "q2": 0.2, "q3": 0.9, "q4": 0.3},
                                                  {"q1": 0.5, "q2": 0.7, "q3": 0.4, "q4": 0.35}))],
        lambda a, b: (lambda t: (t.mean_delta, np.mean([d > 0 for d in t.deltas.values()])))(
            paired_test(a, b, n_permutations=99))),
    "05c": Check(
        "each hard negative's cosine to its own queries (NaN where masked); their mean gives "
        "losses.clp_penalty", lambda: _tensors(mask=True),
        lambda negs, own, valid: (torch.where(valid, torch.cosine_similarity(
            negs[:, None], own, dim=-1), torch.nan), clp_penalty(negs[None], own[None],
                                                                 valid[None].double())),
        _cosines),
    "06c": Check(
        "a tokenizer's pieces per word (multilingual.tokenizer_table)",
        lambda: [(f"MiniLM on {lang}", (_minilm_tokenizer(), texts))
                 for lang, texts in _TOKENIZED.items()],
        lambda tok, texts: tokenizer_table({"m": SimpleNamespace(tokenizer=tok)}, texts)
        .loc["m", "pieces per word"]),
}


def check(key: str, fn: Callable) -> str:
    """Run the student's ``fn`` on exercise ``key``'s inputs against the package's answer;
    an ``AssertionError`` names the first input where they differ and by how much."""
    c = CHECKS[key]
    cases = c.cases()
    for label, args in cases:
        gap = _gap(c.student(fn, *args), c.reference(*args))
        assert gap is None, f"Exercise {key} ({c.task}), input '{label}': {gap}"
    return (f"correct: {getattr(fn, '__name__', 'your function')} matches the package on "
            f"{len(cases)} inputs ({'; '.join(label for label, _ in cases)}).")


# --------------------------------------------------------------------------- questionnaires


@dataclass(frozen=True)
class Question:
    """A question on a chapter's own results, and its answer (read from committed tables)."""

    key: str
    text: str
    answer: Callable[[], str]


def _q(key: str, text: str, stem: str | None, answer: Callable, command: str = "make study"
       ) -> Question:
    """A question answered from ``figures/<stem>.csv`` (or, without a stem, by ``answer()``)."""
    return Question(key, text, _figure(stem, answer, command) if stem else answer)


def _verdicts(t: pd.DataFrame) -> str:
    """Each claim's verdict on each metric the table tests it on (the paper's nDCG@5 first)."""
    return _each(t, lambda r: f"{r['claim']} ({r['split']}"
                 + (f", {r['metric']}" if "metric" in r.index else "")
                 + f"): {r['verdict']}, {interval_text(r)}")


def _fn_filter(t: pd.DataFrame) -> str:
    t = t.set_index("configuration")
    a, f = t.loc["ANCE 3-30"], t.loc["ANCE 3-30 + answer filter"]
    return (f"{a['fn_rate_negatives']:.1%} of ANCE's negatives from ranks 3-30 contain an answer "
            f"({t.loc['random', 'fn_rate_negatives']:.1%} of random ones); the answer filter "
            f"drops {f['dropped']:.0f} of {f['candidates examined']:.0f} candidates and leaves "
            f"{f['fn_rate_negatives']:.1%}.")


def _tradeoff(t: pd.DataFrame) -> str:
    t = t[t["tau"] == t["tau"].min()].set_index("lambda")
    lo, hi = t.loc[t.index.min()], t.loc[t.index.max()]
    return (f"At tau {t['tau'].iloc[0]}, from lambda {lo.name} to {hi.name} cos(n, q*) goes "
            f"from {lo['neg_to_its_query']:.3f} to {hi['neg_to_its_query']:.3f} and q's margin "
            f"from {lo['margin']:.3f} to {hi['margin']:.3f}: the pull is bought with margin.")


def _curve(t: pd.DataFrame) -> str:
    c = t[t["curve"] == t["curve"].iloc[0]].sort_values("step")
    a, b = c.iloc[0], c.iloc[-1]
    return (f"Curve '{a['curve']}': validation nDCG@10 {a['val_ndcg_cut_10']:.4f} at step "
            f"{a['step']}, {b['val_ndcg_cut_10']:.4f} at step {b['step']}.")


def _queries() -> str:
    hindi, main = _read("06_claims"), _read("04_claims")
    if hindi is None or main is None:
        return _missing("06_claims", "make study")
    return (f"{hindi['n queries'].max():.0f} Hindi test queries, {main['n queries'].max():.0f} "
            "in chapter 04: wider intervals, so a small effect stays inconclusive on Hindi.")


QUESTIONS = [_q(*q) for q in [
    ("00q1", "On which splits does BM25 beat the zero-shot dense model on nDCG@10, and by how "
     "much?", "00_baselines", lambda t: _each(
         t.pivot(index="split", columns="system", values="ndcg_cut_10").reset_index(),
         lambda r: f"{r['split']}: {r['BM25'] - r.drop(['split', 'BM25']).iloc[0]:+.3f}",
         "BM25 minus the dense model: ")),
    ("00q2", "Does BM25 lead most on the split whose questions reuse their passage's words "
     "most?", "00_lexical_overlap", lambda t: _each(t, lambda r: f"{r['split']}: overlap "
     f"{r['query terms in the positive']:.1%}, BM25 lead {r['BM25 - dense']:+.3f}")),
    ("00q3", "How often does each system find the positive in its top-100?", "00_baselines",
     lambda t: _each(t.groupby("system")["recall_100"].mean().reset_index(),
                     lambda r: f"{r['system']} {r['recall_100']:.1%}", "Mean recall@100: ")),
    ("01q1", "How many of ANCE's negatives contain an answer, and what does the answer filter "
     "leave?", "01_false_negatives", _fn_filter),
    ("01q2", "Which rank window holds the most answer-bearing candidates before filtering?",
     "01_false_negatives_by_window", lambda t: _each(t.drop_duplicates("window"), lambda r:
     f"ranks {r['window']}: {r['fn_rate_before']:.1%}", "Candidates containing an answer: ")),
    ("01q3", "Why do mined windows start below the top of the ranking?", None,
     lambda: "The passages ranked right below the positive are the likeliest to answer the "
     "query too (false negatives): pushing them away teaches the model to rank answers low."),
    ("02q1", "At the paper's temperature, how far does raising lambda move the negative toward "
     "its own query, and what does q's margin pay?", "02_lambda_tradeoff", _tradeoff),
    ("02q2", "With InfoNCE alone, which temperature leaves the larger margin?",
     "02_lambda_tradeoff", lambda t: _each(t[t["lambda"] == 0], lambda r:
     f"tau {r['tau']}: margin {r['margin']:.3f}", "Lambda 0: ")),
    ("02q3", "Is the penalty divided by the temperature, and why does it matter?", None,
     lambda: "No: InfoNCE's gradient carries 1/tau, the penalty's does not, so the lower the "
     "temperature the weaker a given lambda is against InfoNCE's push: lambda means something "
     "only together with tau."),
    ("03q1", "How often do shuffled batches hold a false in-batch negative, and the batches "
     "the study uses?", "03_false_in_batch_negatives", lambda t: _each(t, lambda r:
     f"{r.iloc[0]}: {r['share_of_batches_with_false_negative']:.1%} of batches")),
    ("03q2", "How much does validation nDCG@10 rise along the first learning curve?",
     "03_learning_curve", _curve, "make design"),
    ("03q3", "How long does each row train, and what does the penalty cost?", "03_parameters",
     lambda t: _each(t, lambda r: f"{r['row']}: {r['training seconds (mean)']:.0f} s"
                     + (f" on {r['threads']:.0f} thread(s)" if "threads" in r.index else ""))
     + " The penalty also encodes each negative's own queries at every step."),
    ("04q1", "Which of the paper's claims hold here, and with what verdict?", "04_claims",
     _verdicts),
    ("04q2", "Which row scores highest on each split?", "04_table2", lambda t: _each(
        t.loc[t.groupby("split")["ndcg_cut_10 mean"].idxmax()],
        lambda r: f"{r['split']}: {r['row']} ({r['ndcg_cut_10 mean']:.4f})")),
    ("04q3", "Does fine-tuning cost out-of-domain quality?", "04_forgetting",
     lambda t: forgetting_sentence(t) or "No fine-tuned row was scored out of domain."),
    ("05q1", "How does a hard negative's cosine to its own queries move with fine-tuning, with "
     "and without CLP, beyond the shift of every query-passage cosine?", "05_cosine_shifts",
     lambda t: _each(t[t["cosine"] == "neg_own"], lambda r: f"{r['pair']}: "
                     f"{interval_text(r, 'shift')}, global shift {r['global shift']:+.4f}, excess "
                     f"{r['excess over global']:+.4f} ({r['specific']})",
                     "cos(negative, its own queries): ")),
    ("05q2", "Does fine-tuning pull positives in and push hard negatives away?", "05_cosines",
     lambda t: _each(t, lambda r: f"{r['model']}: q_pos {r['q_pos']:.3f}, q_neg "
                     f"{r['q_neg']:.3f}")),
    ("05q3", "Do the negatives' own queries lose against matched controls, and does CLP shrink "
     "the loss?", "05_harm_gaps", lambda t: _each(
         t.dropna(subset=["own minus matched control"]), lambda r: f"{r['comparison']}: "
         f"{interval_text(r, 'own minus matched control')}" + (
             f", {r['verdict']} (Holm p {r['p Holm']:.3f})" if pd.notna(r.get("p Holm"))
             else f", {r['verdict']}" if "verdict" in r.index else ""),
         "Own minus matched control: ")),
    ("06q1", "How do BM25, MiniLM and mE5-small rank zero-shot on Hindi and Persian?",
     "06_zero_shot", lambda t: _each(t.sort_values(["dataset", "ndcg_cut_10"]), lambda r:
     f"{r['dataset']} {r['system']} {r['ndcg_cut_10']:.4f}", "Zero-shot nDCG@10: ")),
    ("06q2", "Does fine-tuning mE5-small on Hindi help, and does CLP beat InfoNCE there?",
     "06_claims", _verdicts),
    ("06q3", "How many test queries decide the Hindi comparisons, against chapter 04's?", None,
     _queries)]]
QUESTIONS_BY_KEY = {q.key: q for q in QUESTIONS}


def questions_of(chapter: str) -> list[Question]:
    """A chapter's questionnaire (``chapter``: "00" .. "06")."""
    return [q for q in QUESTIONS if q.key.startswith(chapter)]


def folded_answer(key: str) -> Folded:
    """The answer to question ``key``, folded, read from the committed tables now."""
    return Folded(_answered(f"Answer {key}", QUESTIONS_BY_KEY[key].answer))
