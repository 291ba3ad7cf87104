"""The chapters are committed executed (``machinery.publish``): a reader sees the study on
the repository's page and in JupyterLab before anything runs, and what they show is the
committed figures' tables."""

from __future__ import annotations

import json
import re

import nbformat
import pandas as pd
import pytest
from test_display import table_problems

from clp_utils.base.paths import FIGURES_ROOT, REPO_ROOT
from clp_utils.machinery import publish
from clp_utils.plots import format_frame

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
#: ``save_table(frame, "stem", ...)`` in a cell whose last line shows ``frame``
SAVED = re.compile(r"save_table\((\w+)(?:\.\w+\([^()]*\))?,\s*\"(\w+)\"")
NUMBER = re.compile(r"^[-+]?\d+\.\d{3,4}$")


def _texts(cell) -> list[str]:
    out = []
    for o in cell.outputs:
        if o.output_type == "stream":
            out.append(o.text)
        for kind in ("text/plain", "text/html", "text/markdown"):
            if kind in o.get("data", {}):
                out.append(o["data"][kind])
    return out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_a_committed_chapter_shows_its_outputs_and_nothing_of_the_machine(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code), f"{path.name}: not executed"
    assert sum(bool(c.outputs) for c in code) >= len(code) // 2, f"{path.name}: few outputs"
    for cell in code:
        assert "injected-parameters" not in cell.metadata.get("tags", []), path.name
        for o in cell.outputs:
            assert o.output_type != "error", f"{path.name}: error output"
            assert not (o.output_type == "stream" and o.name == "stderr"), path.name
        for text in _texts(cell):
            assert str(REPO_ROOT) not in text and "/root/" not in text, path.name
    params = next(c for c in code if "parameters" in c.metadata.get("tags", []))
    assert 'profile = "cpu"' in params.source  # what a reopened chapter runs
    if "train =" in params.source:
        assert "train = False" in params.source  # reopening never trains by surprise


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_a_committed_chapters_tables_read_cleanly_and_equal_the_committed_figures(path):
    nb = nbformat.read(path, as_version=4)
    compared = 0
    for cell in (c for c in nb.cells if c.cell_type == "code"):
        for o in cell.outputs:
            html = o.get("data", {}).get("text/html", "")
            if "<table" in html:
                assert not table_problems(re.sub(r"<[^>]+>", " ", html)), (
                    path.name, table_problems(re.sub(r"<[^>]+>", " ", html))[:3])
        found = SAVED.search(cell.source)
        lines = [x.strip() for x in cell.source.strip().splitlines()]
        if not found or lines[-1] != found.group(1):
            continue
        csv = FIGURES_ROOT / f"{found.group(2)}.csv"
        html = "".join(o.get("data", {}).get("text/html", "") for o in cell.outputs)
        if not csv.exists() or "<table" not in html:
            continue
        shown = set(re.findall(r"[-+]?\d+\.\d+(?:e-\d+)?", html))
        figure = format_frame(pd.read_csv(csv, index_col=0)).to_numpy().ravel()
        numbers = [v for v in figure if NUMBER.match(str(v))]
        missing = [v for v in numbers if v not in shown]
        assert not missing, f"{path.name} {csv.name}: {missing[:5]} not shown"
        compared += 1
    if path.name[:2] in ("03", "04"):
        assert compared, f"{path.name}: no table compared with figures/"


def test_publishing_drops_what_only_the_machine_knows():
    nb = nbformat.v4.new_notebook(metadata={"papermill": {"start_time": "x"}, "widgets": {}})
    injected = nbformat.v4.new_code_cell("profile = 'cpu'\\nfigures_dir = '/abs'")
    injected.metadata["tags"] = ["injected-parameters"]
    shown = nbformat.v4.new_code_cell("x", outputs=[
        nbformat.v4.new_output("stream", name="stdout", text=f"wrote {REPO_ROOT}/figures/a.png"),
        nbformat.v4.new_output("stream", name="stderr", text="100%|####| 3/3"),
        nbformat.v4.new_output("display_data", data={publish.WIDGETS: {}, "text/plain": "w"})])
    shown.metadata["papermill"] = {"duration": 1.0}
    nb.cells = [injected, shown]
    clean = publish.clean_notebook(nbformat.from_dict(nb))
    assert len(clean["cells"]) == 1 and "papermill" not in clean["metadata"]
    (cell,) = clean["cells"]
    assert [o["text"] for o in cell["outputs"]] == ["wrote figures/a.png"]
    assert cell["execution_count"] == 1 and "papermill" not in cell["metadata"]
    broken = nbformat.v4.new_code_cell("1/0", outputs=[nbformat.v4.new_output(
        "error", ename="ZeroDivisionError", evalue="", traceback=[])])
    nb.cells = [broken]
    with pytest.raises(ValueError, match="error"):
        publish.clean_notebook(nbformat.from_dict(nb))


def test_a_published_card_states_the_record_this_run_wrote(tmp_path, monkeypatch):
    """A chapter's card can only read the run before its own; publishing times it by the
    record the run just wrote (also where a line came before the card in the same output),
    leaves every other line alone, and refuses a chapter without a card."""
    from clp_utils.machinery import chapter

    monkeypatch.setattr(chapter, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(chapter.paths, "FIGURES_ROOT", tmp_path / "figures")
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "run.json").write_text(json.dumps({
        "timings": {"04_evaluation.ipynb": 90.0}, "machine": {"describe": "float32 on AVX2"}}))
    old = ("data built\nchapter 04, profile 'cpu': figures and tables go to figures/; the "
           "committed run took 2.4 min (bf16); training runs already finished here are read "
           "back, not retrained.\nsecond line\n")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("begin('04')", outputs=[
        nbformat.v4.new_output("stream", name="stdout", text=old)])]
    (out,) = publish.refresh_card(publish.clean_notebook(nbformat.from_dict(nb)),
                                  "04")["cells"][0]["outputs"]
    assert out["text"] == ("data built\nchapter 04, profile 'cpu': figures and tables go to "
                           "figures/; the committed run took 1.5 min (float32 on AVX2); training "
                           "runs already finished here are read back, not retrained.\nsecond "
                           "line\n")
    with pytest.raises(ValueError, match="chapter 03: no card"):
        publish.refresh_card(publish.clean_notebook(nbformat.from_dict(nb)), "03")
