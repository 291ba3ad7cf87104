"""The paper's published numbers, in one place (Yu 2024, arXiv 2412.17364, Table 2).

Everything the study says about the paper's results reads these constants; a chapter's prose
may quote a number only if it is one of ``PUBLISHED_NUMBERS`` or a declared constant
(``tests/test_narrative.py``).
"""

from __future__ import annotations

#: Published nDCG@5 (points) on MIRACL dev: (Korean, Persian, Hindi, average of the three).
TABLE2 = {
    "zero-shot": (64.36, 51.13, 52.35, 55.95),
    "random negatives": (59.61, 47.38, 51.78, 52.92),
    "ANCE negatives": (66.89, 50.88, 54.53, 57.43),
    "ANCE + CLP": (67.05, 52.39, 54.75, 58.06),
    "ANCE + CLP, intermediate only": (66.92, 55.10, 56.34, 59.45),
    "ANCE + CLP + MoE": (67.74, 55.56, 56.36, 59.89),
}
LANGUAGES = ("ko", "fa", "hi", "avg")
#: Queries of MIRACL dev per language (the paper's test sets): 213 + 632 + 350 = 1,195.
DEV_QUERIES = {"ko": 213, "fa": 632, "hi": 350}
#: FlagEmbedding's reported BGE-M3 dense nDCG@10 on MIRACL dev (its own protocol).
BGE_M3_NDCG10 = {"ko": 69.9, "fa": 60.9, "hi": 59.5}
#: The official code's training settings (a FlagEmbedding fork).
OFFICIAL_CODE = dict(tau=0.02, lam=0.1, lr=1e-5, batch_size=1, accumulation=4, epochs=2,
                     query_len=128, passage_len=512, negatives=4)


def published(row: str, language: str = "avg") -> float:
    """A Table 2 entry as a fraction (nDCG@5 / 100); NaN for a row the paper did not run."""
    values = TABLE2.get(row)
    return values[LANGUAGES.index(language)] / 100 if values else float("nan")


def column(language: str) -> dict[str, float]:
    """Every row of one Table 2 column as fractions of nDCG@5, in the table's order."""
    return {row: published(row, language) for row in TABLE2}


def claimed_difference(better: str, worse: str, language: str = "avg") -> float | None:
    """The paper's own difference between two of its rows (fraction of nDCG@5), e.g. ANCE
    over random +0.0451 on the average; None when either row is not in its table."""
    if better not in TABLE2 or worse not in TABLE2:
        return None
    return round(published(better, language) - published(worse, language), 6)


#: The paper's metric: every claim is tested on it (nDCG@5 on MIRACL dev), nDCG@10 beside it.
METRIC = "ndcg_cut_5"
METRICS = ("ndcg_cut_5", "ndcg_cut_10")
#: Where a step of Table 2 comes from, per column (a sentence names it with the step).
SETTINGS = {"ko": "BGE-M3 on MIRACL Korean", "fa": "BGE-M3 on MIRACL Persian",
            "hi": "BGE-M3 on MIRACL Hindi", "avg": "BGE-M3 on MIRACL, average of ko, fa, hi"}
#: The paper's steps this study tests: (better row, worse row, Table 2 column). Each step's
#: equivalence margin is the step's own size on the paper's metric, declared here beside it
#: from the published table alone (no score of this study enters): "equivalent" then reads
#: "an effect as large as the paper's is ruled out".
STEPS = (("zero-shot", "random negatives", "avg"), ("ANCE negatives", "random negatives", "avg"),
         ("ANCE + CLP", "ANCE negatives", "avg"),
         ("ANCE + CLP, intermediate only", "ANCE + CLP", "avg"),
         ("ANCE + CLP + MoE", "ANCE + CLP, intermediate only", "avg"),
         ("ANCE negatives", "zero-shot", "hi"), ("ANCE + CLP", "ANCE negatives", "hi"))


def step_margin(better: str, worse: str, language: str = "avg") -> float | None:
    """The declared equivalence margin of a paper step (``STEPS``): the size of the paper's
    own difference on its metric; None for a step the paper did not publish."""
    if (better, worse, language) not in STEPS:
        return None
    return abs(claimed_difference(better, worse, language))


#: Every number the paper publishes that the prose may quote (and the differences of its
#: Table 2 entries, which the chapters cite as its claimed steps).
PUBLISHED_NUMBERS = frozenset(abs(float(n)) for n in (
    *(v for row in TABLE2.values() for v in row),
    *(round(a - b, 2) for a_row in TABLE2.values() for b_row in TABLE2.values()
      for a, b in zip(a_row, b_row, strict=True)),
    *DEV_QUERIES.values(), sum(DEV_QUERIES.values()), *BGE_M3_NDCG10.values(),
    *OFFICIAL_CODE.values()))
