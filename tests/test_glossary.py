"""The glossary names only what exists: verdict words the code emits, table columns a
committed table or the code has. (That every ``clp_utils.module.name`` it cites exists is
``tests/test_readme.py::test_every_package_name_the_docs_cite_exists``.)"""

from __future__ import annotations

import csv
import re

from clp_utils import geometry as G
from clp_utils import stats
from clp_utils.base.paths import REPO_ROOT

GLOSSARY = (REPO_ROOT / "book" / "glossary.md").read_text(encoding="utf-8")
#: Every verdict word a table or sentence can carry: the claims' (``stats.VERDICTS``) and the
#: harm family's extra readings (``geometry.NOT_RUN`` and its descriptive rows), and the
#: marker a verdict near its edge carries (``claims.summary_line``: ", at the edge").
EMITTED = {*stats.VERDICTS, G.NOT_RUN, "descriptive", "at the edge"}
#: A backticked name that reads as a table column: lower case words, digits, underscores,
#: spaces and a parenthesis; no path, call, assignment or chapter stem.
COLUMN_LIKE = re.compile(r"^[a-z][a-z0-9_]*(?: [a-z0-9_()%@]+)*$")
#: Backticked names that are commands or packages, not columns.
NOT_COLUMNS = {"trec_eval", "bm25s", "make design"}


def paragraphs() -> list[str]:
    return [" ".join(p.split()) for p in GLOSSARY.split("\n\n")]


def verdict_words() -> set[str]:
    """The words the glossary gives as verdicts: an italic or quoted phrase in a paragraph
    that speaks of a verdict, or any quoted phrase with the word verdict in it."""
    found = set()
    for p in paragraphs():
        phrases = re.findall(r'(?<![\w*])\*([a-z][a-z :-]*)\*(?!\*)|"([a-z][a-z :-]*)"', p)
        for italic, quoted in phrases:
            phrase = italic or quoted
            if "verdict" in phrase or (italic and "verdict" in p):
                found.add(phrase)
    return found


def committed_columns() -> set[str]:
    cols = set()
    for path in (REPO_ROOT / "figures").rglob("*.csv"):
        with path.open(encoding="utf-8") as fh:
            cols.update(next(csv.reader(fh), []))
    return cols


def code_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8")
                     for p in sorted((REPO_ROOT / "clp_utils").rglob("*.py")))


def test_the_glossary_names_verdicts_and_the_finder_finds_them():
    words = verdict_words()
    assert {"equivalent", "one seed: no verdict"} <= words  # what the glossary reads today


def test_every_verdict_word_of_the_glossary_is_one_the_code_emits():
    unknown = sorted(verdict_words() - EMITTED)
    assert not unknown, f"glossary verdict words the code never emits: {unknown}"


def test_every_column_the_glossary_quotes_exists_in_a_table_or_the_code():
    names = {n for n in re.findall(r"`([^`\n]+)`", GLOSSARY)
             if COLUMN_LIKE.match(n) and not re.match(r"\d\d_", n) and n not in NOT_COLUMNS}
    assert {"p (per query)", "ndcg_cut_10", "fn_rate_candidates"} <= names  # the finder works
    columns, code = committed_columns(), code_text()
    missing = sorted(n for n in names
                     if n not in columns and f'"{n}"' not in code and f"'{n}'" not in code
                     and not re.search(rf"\b{re.escape(n)}\b", code))
    assert not missing, f"glossary names no table or code has: {missing}"
