"""The book (``make book``) from synthetic executed chapters: pages, figures, links, no noise.

The chapters are made here with nbformat, shaped like papermill's output (a parameters cell,
papermill metadata), so the test runs offline in seconds without executing anything.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil

import matplotlib
import nbformat
import pandas as pd
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from clp_utils.machinery.book import build_book, check_book  # noqa: E402

CHAPTERS = ["00_intro", "01_figures", "02_training", "03_tables"]
MISSING = "02_training"
PROGRESS_BAR = ("\r  0%|          | 0/20 [00:00<?, ?it/s]\r 45%|####5     | 9/20 "
                "[00:01<00:02, 5.12it/s]\r100%|##########| 20/20 [00:03<00:00, 5.80it/s]\n")
WARNING = ("/x/site-packages/torch/nn/modules.py:12: UserWarning: this is deprecated\n"
           "  warnings.warn(\n")
LOGGER = ("[transformers] Token indices sequence length is longer than the specified maximum "
          "sequence length for this model (600 > 512).\n")


def tiny_png() -> str:
    """A small matplotlib figure as base64 PNG, as the inline backend stores it."""
    fig, ax = plt.subplots(figsize=(2, 1.5), dpi=50)
    ax.plot([0, 1, 2], [1, 0, 2])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def executed_chapter(name: str, png: str) -> nbformat.NotebookNode:
    """A chapter as papermill leaves it: narrative, parameters, text, figure, table, noise."""
    v4 = nbformat.v4
    wide = pd.DataFrame([[i * 0.123456 + j for j in range(24)] for i in range(3)],
                        columns=[f"a rather long column name {j}" for j in range(24)])
    params = v4.new_code_cell('profile = "cpu"', execution_count=1)
    params.metadata["tags"] = ["parameters"]
    injected = v4.new_code_cell('# Parameters\nprofile = "smoke"\n', execution_count=2)
    injected.metadata["tags"] = ["injected-parameters"]
    cells = [
        v4.new_markdown_cell(f"# {name[:2]} · Chapter {name}\n\nWhy this chapter: $a^2 + b^2$."),
        params, injected,
        v4.new_code_cell("print('hello')\nfor _ in tqdm(range(20)): pass", execution_count=3,
                         outputs=[v4.new_output("stream", name="stdout",
                                                text="mined 42 negatives\n"),
                                  v4.new_output("stream", name="stderr", text=PROGRESS_BAR),
                                  v4.new_output("stream", name="stderr", text=WARNING),
                                  v4.new_output("stream", name="stderr", text=LOGGER),
                                  v4.new_output("stream", name="stdout",
                                                text="epoch 1\rloss 0.5\n")]),
        v4.new_markdown_cell("## A figure"),
        v4.new_code_cell('fig, ax = plt.subplots()\nsave_figure(fig, "demo_plot")',
                         execution_count=4,
                         outputs=[v4.new_output("display_data",
                                                data={"image/png": png,
                                                      "text/plain": "<Figure size 200x150>"}),
                                  v4.new_output("execute_result", execution_count=4,
                                                data={"text/plain": "<matplotlib.legend.Legend "
                                                                    "at 0x7f3a2c1d0e50>"})]),
        v4.new_markdown_cell("## A wide table"),
        v4.new_code_cell('table\nsave_figure(fig, "second_plot")', execution_count=5,
                         outputs=[v4.new_output("execute_result", execution_count=5,
                                                data={"text/html": wide.to_html(),
                                                      "text/plain": wide.to_string()}),
                                  v4.new_output("display_data", data={"image/png": png})]),
    ]
    nb = v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["papermill"] = {"parameters": {"profile": "smoke"}, "duration": 93.0,
                                "end_time": "2025-01-02T03:04:05.000000", "exception": None}
    return nb


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    """One book built for every test here (Sphinx takes a few seconds)."""
    root = tmp_path_factory.mktemp("book")
    executed = root / "results" / "notebooks" / "smoke"
    executed.mkdir(parents=True)
    png = tiny_png()
    for name in CHAPTERS:
        if name != MISSING:
            nbformat.write(executed_chapter(name, png), executed / f"{name}.ipynb")
    readme = root / "README.md"
    readme.write_text("# A study title\n\nThe story so far, with a [link](data/README.md).\n\n"
                      "## Layout\nnot in the book\n\n## Results\n<!-- results:start -->\n\n"
                      "### Table 2\n\n| row | nDCG |\n|:--|--:|\n| CLP | 0.456 |\n\n"
                      "<!-- results:end -->\n")
    index = build_book(executed, root / "out", readme=readme, chapters=CHAPTERS)
    return index.parent


def page(book, name: str) -> str:
    return (book / f"{name}.html").read_text()


def test_the_book_has_no_problems(book):
    assert (book / "index.html").exists()
    assert check_book(book) == []


def test_every_chapter_has_a_page_and_a_missing_one_says_so(book):
    for name in CHAPTERS:
        assert (book / f"{name}.html").exists(), name
    assert "not been executed yet" in page(book, MISSING)
    assert "not been executed yet" not in page(book, "01_figures")
    chapters = json.loads((book / "book.json").read_text())["chapters"]
    assert [c["executed"] for c in chapters] == [c != MISSING for c in CHAPTERS]


def test_landing_page_tells_the_readme_story(book):
    index = page(book, "index")
    assert "A study title" in index and "The story so far" in index
    assert "not in the book" not in index  # only the intro and the results section
    assert "Table 2" in index and "0.456" in index
    for name in CHAPTERS:
        assert f'href="{name}.html"' in index, name
    assert "(not executed yet)" in index
    assert "figures.html" in index


def test_noise_is_gone_and_the_content_stays(book):
    text = page(book, "01_figures")
    assert "mined 42 negatives" in text
    assert "it/s" not in text and "%|" not in text
    assert "UserWarning" not in text and "warnings.warn" not in text
    assert "Token indices" not in text  # a library's logger line is noise too
    assert "loss 0.5" in text and "epoch 1" not in text  # a redrawn line shows its last redraw
    assert "matplotlib.legend.Legend" not in text
    assert "<details" in text and "Show code" in text  # code cells are folded
    assert "a rather long column name 23" in text  # the whole wide table
    assert "Figure 1.1 · A figure · saved as" in text  # figures are captioned,
    assert "Figure 1.2 · A wide table · saved as" in text  # also one shown after a table
    assert '"smoke"</span>' in text and '"cpu"' not in text  # the values this run used
    assert "Show the parameters of this run" in text


def test_figures_are_on_disk_and_collected(book):
    text = page(book, "01_figures")
    images = [s for s in text.split('src="')[1:] if s.split('"')[0].endswith(".png")]
    assert images
    for src in images:
        assert (book / src.split('"')[0]).exists()
    assert text.count("<img") == 2
    gallery = page(book, "figures")
    assert gallery.count("<img") == 2 * (len(CHAPTERS) - 1)  # two per executed chapter


def test_the_book_reads_offline(book):
    """No page loads a script, stylesheet, font or image from the network (links may leave)."""
    remote = re.compile(r"<(script|img)[^>]+src=\"(https?:)?//|<link[^>]+href=\"(https?:)?//")
    for path in book.glob("*.html"):
        assert not remote.search(path.read_text()), path.name
    assert "_static/MathJax.js" in page(book, "01_figures")  # math without a CDN
    assert (book / "_static" / "MathJax.js").exists()
    assert [p.name for p in (book / "_static" / "localization").iterdir()] == ["en"]


def test_check_book_reports_what_a_reader_would_trip_on(book, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(book, broken)
    image = next((broken / "_images").iterdir())
    image.unlink()
    (broken / "03_tables.html").unlink()
    problems = check_book(broken)
    assert any(image.name in p and "does not exist" in p for p in problems)
    assert any(p.startswith("missing chapter page 03_tables.html") for p in problems)
    assert any("link 03_tables.html" in p for p in problems)


def test_build_refuses_to_replace_a_folder_it_did_not_build(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not replacing"):
        build_book(tmp_path / "none", tmp_path, chapters=[])
    assert (tmp_path / "keep.txt").exists()


def test_the_teachers_page_shows_its_times_as_a_table(book):
    """The chapter times are one markdown table (a row per paragraph would print raw pipes),
    and a time nobody measured names the command that measures it instead of 'nan'."""
    from clp_utils.base.paths import FIGURES_ROOT

    text = page(book, "teacher")
    assert "<table" in text and "runs already trained are read back" in text
    assert "|---|" not in text and "nan" not in text
    measured = {p.stem.split("-")[0] for p in (FIGURES_ROOT / "timings").glob("*.json")}
    for kind, column in (("reopen", "reopened on the committed results"),
                         ("smoke", "live on smoke")):
        assert (column in text) == (kind in measured), kind
    if not measured:
        assert "not measured yet" in text
    # the session plan's minutes add up, and every discussion question has its model answer
    assert text.count("Model answer") == text.count("Discuss:") > 0
    assert "in all" in text
