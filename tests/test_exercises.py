"""The exercises: attempts say how long they take, write-code checkers accept the chapters'
stubs and reject wrong answers, and every questionnaire answer reads the committed tables."""

from __future__ import annotations

import pytest

from clp_utils import costs as K
from clp_utils import exercises as X
from clp_utils.base.paths import REPO_ROOT


def chapter_stub(key: str):
    """The function a chapter's stub cell defines, the one its check cell tests."""
    import nbformat

    path = next((REPO_ROOT / "notebooks").glob(f"{key[:2]}_*.ipynb"))
    cells = nbformat.read(path, as_version=4).cells
    at = next(i for i, c in enumerate(cells) if f'exercises.check("{key}"' in c.source)
    name = cells[at].source.split(", ")[1].split(")")[0]
    space: dict = {}
    exec(compile(cells[at - 1].source, str(path), "exec"), space)
    return space[name]


def test_a_training_attempt_starts_with_the_estimate_in_minutes(monkeypatch):
    monkeypatch.setattr(X, "is_finished", lambda config: False)
    seen = []
    monkeypatch.setattr(X, "estimate_cells", lambda configs: seen.append(configs)
                        or K.Estimate(1500.0, 320, "bf16 on CPU"))
    text = X.attempt("04a", "cpu", run=False)
    first = text.splitlines()[0]
    assert first.startswith("Takes about 25 min here") and "320 optimizer steps" in first
    assert seen == [[X.BY_KEY["04a"].config("cpu")]]  # the exercise's own run, estimated
    monkeypatch.setattr(X, "is_finished", lambda config: True)  # trained: read back
    assert X.attempt("04a", "cpu").startswith("Takes seconds here")


def test_an_attempt_that_trains_nothing_takes_seconds(monkeypatch):
    monkeypatch.setattr(X, "estimate_cells", lambda configs: pytest.fail("estimated"))
    for key in ("00a", "02a", "06b"):
        assert X.attempt(key, "cpu").startswith("Takes seconds here"), key


#: A wrong answer per write-code exercise: off by a little, a wrong sign, one item too many.
WRONG = {
    "00c": lambda f: lambda ranking, rel: f(ranking, rel) * 1.01,
    "01c": lambda f: lambda cands, answers: f(cands, answers) + cands[:1],
    "02c": lambda f: lambda negs, own: (f(negs, own)[0], -f(negs, own)[1]),
    "03c": lambda f: lambda ex, b: [c + 1 for c in f(ex, b)],
    "04c": lambda f: lambda a, b: (f(a, b)[0], f(a, b)[1] + 0.25),
    "05c": lambda f: lambda negs, own, valid: f(negs, own, valid) + 1e-3,
    "06c": lambda f: lambda tok, texts: f(tok, texts) + 0.1,
}


@pytest.mark.parametrize("key", sorted(X.CHECKS))
def test_each_checker_accepts_the_chapter_stub_and_rejects_a_wrong_answer(key):
    stub = chapter_stub(key)
    assert X.check(key, stub).startswith(f"correct: {stub.__name__}")
    with pytest.raises(AssertionError, match=f"Exercise {key} .*input '.+': you return"):
        X.check(key, WRONG[key](stub))


def test_the_ndcg_checker_agrees_with_a_hand_computed_value():
    # one relevant passage at rank 2 of 4: DCG 1/log2(3), ideal 1
    import math

    reference = X.CHECKS["00c"].reference
    assert reference(["d3", "d1", "d7", "d2"], {"d1": 1}) == pytest.approx(1 / math.log2(3))


def test_every_chapter_has_one_write_code_exercise_and_a_questionnaire():
    import nbformat

    for path in sorted((REPO_ROOT / "notebooks").glob("0[0-6]_*.ipynb")):
        ch, cells = path.name[:2], nbformat.read(path, as_version=4).cells
        assert f"{ch}c" in X.CHECKS and 3 <= len(X.questions_of(ch)) <= 5, path.name
        sheet = next(c.source for c in cells if c.source.startswith("## Questionnaire"))
        for q in X.questions_of(ch):
            assert q.text in sheet, (path.name, q.key)
            assert any(f'exercises.folded_answer("{q.key}")' in c.source for c in cells)


@pytest.mark.parametrize("key", sorted(X.QUESTIONS_BY_KEY))
def test_every_answer_is_read_from_the_committed_tables(key):
    folded = X.folded_answer(key)
    assert folded.text.startswith(f"Answer {key}: ")
    assert "nan" not in folded.text.lower().replace("nanmean", "")
    assert "not measured yet" not in folded.text.lower() and "does not hold" not in folded.text
    assert "<details>" in folded._repr_html_()


def test_an_answer_whose_table_is_absent_names_the_command(monkeypatch, tmp_path):
    monkeypatch.setattr(X, "FIGURES_ROOT", tmp_path / "figures")
    (tmp_path / "figures").mkdir()
    q = X._q("99q1", "?", "04_claims", X._verdicts)
    assert "is absent (`make study`)" in X._answered("Answer 99q1", q.answer)
