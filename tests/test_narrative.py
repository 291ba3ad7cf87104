"""What the chapters say by hand holds no number a run measures.

A number in a markdown cell of a chapter, or in the README outside its generated results
section, must be one of the paper's published numbers (``clp_utils.paper.PUBLISHED_NUMBERS``)
or a declared constant of the study (a module-level constant, a dataclass default, a profile
or recipe value of ``clp_utils``). Anything a run measures is printed by a code cell, so it
changes with the run; a typed number would silently go stale (as "+1.48" and "213 queries"
once did).

Not numbers of the study, and skipped: code (inline and fenced), links' targets, math
sub/superscripts, years of citations, version strings, arXiv ids, file and chapter names
("00_baselines", "chapter 04"), list markers, and small counts from 0 to 10 ("two seeds",
"step 3").
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import pkgutil
import re

import nbformat
import pytest

import clp_utils
from clp_utils.base.paths import REPO_ROOT
from clp_utils.paper import PUBLISHED_NUMBERS
from clp_utils.profiles import get_profile

NUMBER = re.compile(r"(?<![\w.@/-])[-+−]?(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(%?)(?![\w.]*\w)")
SKIP = [
    re.compile(r"```.*?```", re.S),  # fenced code
    re.compile(r"`[^`]*`"),  # inline code
    re.compile(r"\]\([^)]*\)"),  # a link's target
    re.compile(r"[_^]\{?[\w*+-]+\}?"),  # math subscripts and superscripts
    re.compile(r"\b(?:19|20)\d\d[a-z]?\b"),  # years
    re.compile(r"\b\d+\.\d+\.\d+\b"),  # versions
    re.compile(r"arXiv \d+\.\d+|Python \d+\.\d+"),
    re.compile(r"\b\d\d_\w+"),  # chapter file names
    re.compile(r"(?i)\b(?:chapters?|issue|step|figure)s? \d+(?:[-–]\d+)?"),
    re.compile(r"^\s*(?:#+ \d+|\d+\.|[-*] )", re.M),  # headings' numbers, list markers
    re.compile(r"@\d+|nDCG@\d+|top-\d+|\d+-D\b"),  # cut-offs, top-k, 2-D
    re.compile(r"\b\d+-\d+\b"),  # ranges such as the 3-30 rank window
]


def _numbers_in(value, out: set[float]) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        out.add(abs(float(value)))
    elif isinstance(value, dict):
        for v in value.values():
            _numbers_in(v, out)
    elif isinstance(value, list | tuple | set | frozenset):
        for v in value:
            _numbers_in(v, out)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            _numbers_in(getattr(value, f.name), out)


@functools.cache
def declared_numbers() -> frozenset[float]:
    """Every number the study declares: module constants and dataclass defaults of
    ``clp_utils``, the profiles' sizes, the recipe, and the paper's published numbers."""
    out = {float(n) for n in PUBLISHED_NUMBERS}
    for info in pkgutil.walk_packages(clp_utils.__path__, "clp_utils."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if name.isupper():
                _numbers_in(value, out)
            if dataclasses.is_dataclass(value) and isinstance(value, type) \
                    and value.__module__ == module.__name__:
                for f in dataclasses.fields(value):
                    if f.default is not dataclasses.MISSING:
                        _numbers_in(f.default, out)
                    elif f.default_factory is not dataclasses.MISSING:
                        _numbers_in(f.default_factory(), out)
    for profile in ("smoke", "cpu", "extras", "full"):
        _numbers_in(get_profile(profile), out)
    _numbers_in(json.loads((REPO_ROOT / "configs" / "recipe_cpu.json").read_text()), out)
    return frozenset(round(x, 9) for x in out)


def value_of(number: str) -> float:
    """A number as the prose writes it ("1,195", "−3.03", "95%") as a value (0.95)."""
    raw = number.replace(",", "").replace("−", "-").lstrip("+-")
    return round(float(raw.rstrip("%")) / (100 if raw.endswith("%") else 1), 9)


def prose_numbers(text: str) -> list[str]:
    """The numbers a passage of markdown states, code and the skipped forms removed."""
    for pattern in SKIP:
        text = pattern.sub(" ", text)
    found = []
    for m in NUMBER.finditer(text):
        value = value_of(m.group(0))
        if value <= 10 and float(value).is_integer() and not m.group(0).endswith("%"):
            continue
        found.append(m.group(0))
    return found


def handwritten() -> list[tuple[str, str]]:
    """(where, text) of every markdown cell and of the README's hand-written part."""
    out = []
    for path in sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        out += [(f"{path.name} cell {i}", c.source) for i, c in enumerate(nb.cells)
                if c.cell_type == "markdown"]
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    out.append(("README.md", readme.split(start)[0] + readme.split(end)[-1]))
    return out


def test_the_guard_catches_a_measured_number():
    declared = declared_numbers()
    assert 0.01 in declared and 4.51 in declared and 1195 in declared  # delta, paper, queries
    text = "CLP moved nDCG@10 by 0.0137 on 1,986 queries (`ndcg_cut_10`, 2024, v2.13.0)."
    assert prose_numbers(text) == ["0.0137", "1,986"]


@pytest.mark.parametrize("where, text", handwritten(), ids=[w for w, _ in handwritten()])
def test_handwritten_prose_states_only_declared_numbers(where, text):
    declared = declared_numbers()
    stray = [n for n in prose_numbers(text) if value_of(n) not in declared]
    assert not stray, (f"{where} states {stray}: a number a run measures belongs in a code "
                       "cell that prints it; a constant belongs in clp_utils (declared), or the "
                       "paper's table (clp_utils.paper)")


def test_every_chapter_opens_with_its_card_and_ends_with_findings_and_exercises():
    for path in sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        first = nb.cells[0].source
        for part in ("**The question.**", "**After this chapter you can**", "**It assumes**",
                     "**Time:**"):
            assert part in first, f"{path.name}: its first cell lacks {part}"
        assert "begin(" in next(c.source for c in nb.cells if c.cell_type == "code"
                                and "parameters" not in c.metadata.get("tags", [])), path.name
        headings = [c.source for c in nb.cells if c.cell_type == "markdown"]
        assert any(h.startswith("## What we found") for h in headings), path.name
        assert any(h.startswith("## Try this") for h in headings), path.name
        solutions = [c for c in nb.cells if "exercises.folded_solution(" in c.source]
        assert len(solutions) >= 2, f"{path.name}: fewer than two exercises"


def test_no_chapter_cell_is_long_and_none_repeats_a_package_list():
    from clp_utils import claims, profiles

    lists = {repr(x) for x in (profiles.PAPER_ROWS, profiles.ECOSYSTEM_ROWS,
                               [c.name for c in claims.PAPER_CLAIMS])}
    for path in sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for i, c in enumerate(nb.cells):
            if c.cell_type != "code":
                continue
            lines = [x for x in c.source.splitlines()
                     if x.strip() and not x.strip().startswith("#")]
            assert len(lines) <= 30, f"{path.name} cell {i}: {len(lines)} lines of code"
            assert not any(lst in c.source for lst in lists), f"{path.name} cell {i}"
