"""Read the study as a book: the executed chapters as a static HTML site (``make book``).

``python -m clp_utils.machinery.book --profile cpu`` takes the executed copies that
``make study`` wrote to ``results/notebooks/<profile>/`` and builds
``results/book/index.html`` with MyST-NB and Sphinx (config in ``book/conf.py``).
Notebooks are never re-executed and nothing is fetched from the network. Before Sphinx sees
them, the chapters are cleaned for a reader:

* progress bars (tqdm's ``\\r``-redrawn lines, ``it/s``) and warnings are cut from the outputs,
  and so are bare object reprs such as ``<matplotlib.legend.Legend at 0x...>``;
* every code cell is folded (a ``<details>`` toggle), long text outputs scroll in a box;
* every figure gets a caption (chapter, section, and the ``figures/`` file it was saved as),
  and is also collected on an "Every figure" page;
* a chapter that has not been executed yet gets a page saying so, instead of a failed build.

The landing page is the README's story: its introduction and the generated results section.
``check_book`` then reads the built site as a browser would and lists what a reader would trip
on: a missing chapter page, an image or asset that is not on disk, a link that goes nowhere.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import html.parser
import io
import json
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import unquote, urlsplit
from warnings import catch_warnings, filterwarnings

import nbformat

from clp_utils.base.paths import FIGURES_ROOT, REPO_ROOT, RESULTS_DIR
from clp_utils.exercises import exercises_of, task

BOOK_CONFIG = REPO_ROOT / "book"
SOURCE_NOTEBOOKS = REPO_ROOT / "notebooks"
README = REPO_ROOT / "README.md"
MANIFEST = "book.json"
RESULTS_START, RESULTS_END = "<!-- results:start -->", "<!-- results:end -->"

# A tqdm bar ("45%|####  | 9/20 [00:01<00:02, 5.1it/s]") or any line with a rate in it.
PROGRESS = re.compile(r"\d+%\|.*\||\d\s*(it|s|B|ex|batch)/s\b|s/it\b|\[\d+:\d+<\d+:\d+")
# "path.py:12: UserWarning: ..." (warnings.showwarning), a bare "FutureWarning: ...", or a
# library's logger line ("[transformers] Token indices sequence length is longer than ...").
WARNING = re.compile(r"^(\S+:\d+: )?\w*Warning: "
                     r"|^\[(transformers|sentence_transformers|datasets)\] ")
# The repr of an object a cell returned by accident: "<matplotlib.legend.Legend at 0x7f...>",
# "[<matplotlib.lines.Line2D at 0x...>]", "Text(0.5, 1.0, 'title')".
OBJECT_REPR = re.compile(r"^\[?<[\w.]+( object)? at 0x[0-9a-f]+>|^Text\(.*\)$", re.S)
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
SCROLL_LINES = 30  # text outputs longer than this scroll in a box instead of filling pages


@dataclass(frozen=True)
class Chapter:
    """One chapter of the book: its notebook name, title and whether it has been executed."""

    name: str
    title: str
    executed: bool


# --- cleaning the executed notebooks -----------------------------------------------------


def clean_stream_text(text: str) -> str:
    """A stream's text without progress bars and warnings, as a reader should see it.

    A carriage return overwrites its line in a terminal (that is how tqdm redraws a bar), so
    only the last segment of each line counts; then progress lines and warnings (with the
    indented source line ``warnings.warn`` prints under them) are dropped.
    """
    kept: list[str] = []
    in_warning = False
    for raw in text.split("\n"):
        segments = [s for s in raw.split("\r") if s.strip()]
        line = segments[-1] if segments else ""
        if WARNING.match(line):
            in_warning = True
            continue
        if in_warning and line.startswith((" ", "\t")):
            continue
        in_warning = False
        if not PROGRESS.search(line):
            kept.append(line)
    return "\n".join(kept).strip("\n") + "\n" if any(s.strip() for s in kept) else ""


def clean_outputs(outputs: list) -> list:
    """The outputs of one code cell minus progress bars, warnings and accidental reprs.

    Figures, tables (HTML), markdown and errors are kept as they are.
    """
    cleaned = []
    for out in outputs:
        if out.output_type == "stream":
            text = clean_stream_text(out.text)
            if text:
                cleaned.append(nbformat.from_dict({**out, "text": text}))
        elif out.output_type in ("display_data", "execute_result"):
            data = {k: v for k, v in out.get("data", {}).items() if k != WIDGET_MIME}
            plain = str(data.get("text/plain", ""))
            if set(data) <= {"text/plain"} and (
                not plain.strip() or PROGRESS.search(plain) or OBJECT_REPR.match(plain.strip())
            ):
                continue
            cleaned.append(nbformat.from_dict({**out, "data": data}))
        else:
            cleaned.append(out)
    return cleaned


def _text_lines(outputs: list) -> int:
    """How many lines of plain text the outputs print (streams and text-only results)."""
    n = 0
    for out in outputs:
        if out.output_type == "stream":
            n += out.text.count("\n")
        elif out.output_type in ("display_data", "execute_result") and set(out.data) == {
            "text/plain"
        }:
            n += str(out.data["text/plain"]).count("\n") + 1
    return n


def _heading(source: str, level: int = 3) -> str | None:
    """The last markdown heading (down to ``level``) in a cell, without its markup."""
    found = re.findall(rf"^#{{1,{level}}}\s+(.+?)\s*#*\s*$", source, flags=re.M)
    return re.sub(r"[*_`]", "", found[-1]).strip() if found else None


def _chapter_number(name: str) -> str:
    """``"04_evaluation"`` -> ``"4"``: how captions number a chapter's figures."""
    return str(int(name[:2])) if name[:2].isdigit() else name


def _banner(nb: nbformat.NotebookNode) -> str:
    """One line under a chapter's introduction: how and when it was executed."""
    pm = nb.metadata.get("papermill", {})
    params = pm.get("parameters", {})
    parts = ["Executed"]
    if "profile" in params:
        parts.append(f"with the `{params['profile']}` profile")
    if pm.get("end_time"):
        parts.append(f"on {str(pm['end_time'])[:16].replace('T', ' ')} UTC")
    if pm.get("duration"):
        parts.append(f"in {float(pm['duration']) / 60:.1f} min")
    text = " ".join(parts) + " by `make study`; code cells are folded (**Show code**)."
    if pm.get("exception"):
        text += " **This run stopped with an error**: the failing cell is shown in red below."
    return "{.book-banner}\n" + text


def _is_figure(output: nbformat.NotebookNode) -> bool:
    return output.output_type in ("display_data", "execute_result") and "image/png" in output.data


def split_at_figures(cell: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    """The cell, then one output-only cell for each figure and each run of other outputs.

    MyST-NB captions every display of a cell alike, so a cell that shows a table and then a
    figure is split: the table stays with the code, the figure moves to a cell of its own
    (``remove-input``: no second code toggle) that can carry the figure's caption.
    """
    groups: list[list] = []
    for out in cell.outputs:
        if not groups or _is_figure(out) or _is_figure(groups[-1][-1]):
            groups.append([out])
        else:
            groups[-1].append(out)
    cell.outputs = groups[0] if groups else []
    # (MyST-NB skips a cell without source, so the new cells say where they come from)
    rest = [nbformat.v4.new_code_cell("# outputs of the cell above", outputs=g,
                                      metadata={"tags": ["remove-input"]}) for g in groups[1:]]
    return [cell, *rest]


FIGURE_CAPTION = re.compile(r"^\*\*Figure\b")
GLOSSARY_LINK = re.compile(r"\]\(\.\./book/glossary\.md")


def figure_captions(cells: list) -> dict[int, int]:
    """Code cell index -> index of the markdown cell right after it that starts with
    ``**Figure``: the chapter's own caption of the figure that cell draws (what is plotted,
    how to read it, what to look for), which the book sets under the figure."""
    out = {}
    for i, cell in enumerate(cells[:-1]):
        after = cells[i + 1]
        if (cell.cell_type == "code" and after.cell_type == "markdown"
                and FIGURE_CAPTION.match(after.source.strip())
                and any(_is_figure(o) for o in cell.get("outputs", []))):
            out[i] = i + 1
    return out


def glossary_links(source: str) -> str:
    """A chapter's links to ``../book/glossary.md#term`` (right in JupyterLab, where the
    notebooks sit in ``notebooks/``) as the book's ``glossary.md#term``."""
    return GLOSSARY_LINK.sub("](glossary.md", source)


def prepare_chapter(nb: nbformat.NotebookNode, name: str) -> tuple[nbformat.NotebookNode, list]:
    """A copy of an executed chapter ready for the book, and its figures.

    Returns ``(notebook, figures)`` where ``figures`` is a list of ``(png_bytes, caption)`` in
    the order they appear. Code cells are folded, long text outputs scroll, and every figure
    sits in a cell of its own with a caption (MyST-NB's ``figure`` option) naming the chapter's
    figure number, the section and the ``figures/`` file the cell saved it as.
    """
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))  # a deep copy
    nb.metadata.pop("widgets", None)
    nb.metadata.setdefault("language_info", {"name": "python"})
    nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3",
                                          "language": "python"})
    if not (nb.cells and nb.cells[0].cell_type == "markdown" and _heading(nb.cells[0].source, 1)):
        nb.cells.insert(0, nbformat.v4.new_markdown_cell(f"# {name}"))
    nb.cells.insert(1, nbformat.v4.new_markdown_cell(_banner(nb)))
    injected = any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
    figures: list[tuple[bytes, str]] = []
    cells, section = [], None
    captions = figure_captions(nb.cells)
    for index, cell in enumerate(nb.cells):
        if index in captions.values():
            continue  # a figure's caption cell: its text goes under the figure instead
        cells.append(cell)
        if cell.cell_type == "markdown":
            cell.source = glossary_links(cell.source)
            section = _heading(cell.source) or section
        if cell.cell_type != "code":
            continue
        cell.outputs = clean_outputs(cell.get("outputs", []))
        tags = cell.metadata.setdefault("tags", [])
        tags.append("hide-input")
        if "parameters" in tags or "injected-parameters" in tags:
            # papermill's injected cell holds the values this run used; the defaults above it
            # would only make the reader wonder which ones counted
            if injected and "parameters" in tags:
                tags.append("remove-cell")
            cell.metadata["mystnb"] = {"code_prompt_show": "Show the parameters of this run",
                                       "code_prompt_hide": "Hide the parameters"}
            continue
        saved = re.findall(r"save_figure\(\s*\w+\s*,\s*f?[\"']([^\"']+)[\"']", cell.source)
        if sum(map(_is_figure, cell.outputs)) != len(saved):
            saved = []  # which name goes with which figure is not clear: name none
        cells.pop()
        told = glossary_links(nb.cells[captions[index]].source) if index in captions else None
        for part in split_at_figures(cell):
            cells.append(part)
            if part.outputs and _is_figure(part.outputs[0]):
                caption = f"Figure {_chapter_number(name)}.{len(figures) + 1}"
                caption += f" · {section}" if section else ""
                caption += f" · saved as `figures/{saved.pop(0)}.png`" if saved else ""
                if told:
                    caption += ". " + " ".join(told.split())
                alt = re.sub(r"[`*]", "", caption)  # what a screen reader says instead of a hash
                part.metadata["mystnb"] = {"figure": {"caption": caption}, "image": {"alt": alt}}
                figures.append((base64.b64decode(part.outputs[0].data["image/png"]), caption))
            elif _text_lines(part.outputs) > SCROLL_LINES:
                part.metadata["tags"].append("scroll-output")
    nb.cells = cells
    return nb, figures


# --- the pages ---------------------------------------------------------------------------


def chapter_title(path: Path, fallback: str) -> str:
    """The first ``#`` heading of a notebook, or ``fallback`` when it has none (or is absent)."""
    if path.exists():
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "markdown" and (title := _heading(cell.source, 1)):
                return title
    return fallback


def default_chapters(executed_dir: Path) -> list[str]:
    """The chapters, in order: every ``NN_*`` notebook of ``notebooks/`` or ``executed_dir``."""
    names = {p.stem for p in SOURCE_NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")}
    names |= {p.stem for p in executed_dir.glob("[0-9][0-9]_*.ipynb")}
    return sorted(names)


def not_executed_page(name: str, title: str, executed_dir: Path) -> str:
    """The page shown for a chapter whose executed copy does not exist yet."""
    return (f"# {title}\n\n"
            ":::{note}\nThis chapter has not been executed yet.\n:::\n\n"
            f"There is no `{name}.ipynb` in `{_shown(executed_dir)}`. Run `make study` (or "
            "`make study PROFILE=...`; `.venv/bin/python -m clp_utils.machinery.pipeline --only "
            f"{name[:2]}` runs this chapter alone), then `make book` again.\n")


def _shown(path: Path) -> str:
    """A path relative to the repository when it lies inside it (how the pages name files)."""
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def readme_story(readme: Path) -> tuple[str, str, str]:
    """``(title, introduction, results)`` from the README.

    The introduction is the text between the title and the first ``##`` heading; the results
    are the generated section between the results markers. Relative links (to files of the
    repository, which the book does not carry) become plain text.
    """
    text = readme.read_text() if readme.exists() else ""
    title_match = re.search(r"^# (.+)$", text, flags=re.M)
    title = title_match.group(1).strip() if title_match else "CLP study"
    body = text[title_match.end():] if title_match else text
    intro = re.split(r"^## ", body, maxsplit=1, flags=re.M)[0].strip()
    results = ""
    if RESULTS_START in text and RESULTS_END in text:
        results = text.split(RESULTS_START, 1)[1].split(RESULTS_END, 1)[0].strip()
    results = re.sub(r"^_Generated by .*_\s*$", "", results, flags=re.M).strip()  # README-only
    unlink = re.compile(r"\[([^\]]+)\]\((?!https?:|mailto:)[^)]*\)")
    return title, unlink.sub(r"\1", intro), unlink.sub(r"\1", results)


def landing_page(readme: Path, chapters: Sequence[Chapter], profiles: set[str],
                 reproduction: str = "") -> str:
    """``index.md``: the README's introduction, the chapters, and its results section."""
    title, intro, results = readme_story(readme)
    done = sum(c.executed for c in chapters)
    status = f"{done} of {len(chapters)} chapters executed"
    if profiles:
        status += " with the " + ", ".join(f"`{p}`" for p in sorted(profiles)) + " profile"
    toc = "\n".join(c.name for c in chapters)
    parts = [f"# {title}", intro, "## Chapters",
             f"{status}. Each chapter is its executed notebook: narrative, tables and figures, "
             "with the code folded (**Show code** opens it). [Every figure](figures.md) of the "
             "study is also collected on one page.",
             f"```{{toctree}}\n:maxdepth: 1\n\n{toc}\nfigures\nglossary\nteacher\n```",
             "The [glossary](glossary.md) defines every term the chapters use; the "
             "[teacher's page](teacher.md) says what to run before class, what students run "
             "live, and the exercises and questions of each chapter."]
    if reproduction:
        parts += ["## Reproduction report",
                  "How the numbers of the last `make study` compare with the committed ones "
                  "(`results/reproduction/`).", reproduction]
    if results:
        parts += ["## Results",
                  "From the README, where `make study` (profiles `cpu` and `full`) writes them.",
                  results]
    return "\n\n".join(parts) + "\n"


def figures_page(figures: dict[str, list[tuple[str, str]]], chapters: Sequence[Chapter]) -> str:
    """``figures.md``: every figure of the executed chapters, grouped by chapter."""
    parts = ["# Every figure",
             "The figures of every executed chapter, in order; each caption names its section "
             "and the file in `figures/` it was saved as."]
    for chapter in chapters:
        if not figures.get(chapter.name):
            continue
        parts.append(f"## {chapter.title}")
        parts += [f":::{{figure}} {path}\n:class: book-figure\n"
                  f":alt: {re.sub(r'[`*]', '', caption)}\n\n{caption} "
                  f"({{doc}}`in the chapter <{chapter.name}>`)\n:::"
                  for path, caption in figures[chapter.name]]
    if len(parts) == 2:
        parts.append("No chapter with figures has been executed yet.")
    return "\n\n".join(parts) + "\n"


#: The questions a teacher can put to the class after each chapter (no numbers: the
#: chapters print those).
DISCUSSION = {
    "00": ["Why would a model trained on millions of pairs lose to a word-count formula here?",
           "Which split would you fine-tune on, and what would a gain there prove?"],
    "01": ["When is a mined negative a bad negative, and how would you know without answer "
           "strings?", "What does a filter buy, and what does it cost?"],
    "02": ["Why does the penalty's weight mean nothing without the temperature?",
           "What does the toy leave out that a real encoder has?"],
    "03": ["What decides a fair training budget on a small machine?",
           "Which settings were chosen by a measurement, and which were fixed beforehand?"],
    "04": ["What is the difference between 'no effect' and 'not shown'?",
           "Why do questions on one passage not count as independent evidence?",
           "Which claim changes with the learning rate, and what does that say about the "
           "paper's ablation?"],
    "05": ["What would you have concluded from the own queries' gain alone, without a control?",
           "How would you test a mechanism the paper only draws?"],
    "06": ["Why can fine-tuning make a good model worse, and what would have warned you?",
           "What does a multilingual model's vocabulary do that an English one's cannot?"],
}


def _minutes_table(cpu: dict[str, float], again: dict[str, float],
                   smoke: dict[str, float]) -> str:
    """The chapters' times as one markdown table (rows joined by single newlines: a blank
    line between rows would end the table); a time not measured says so, and a missing run
    names the command that measures it."""
    def cell(times: dict[str, float], name: str, command: str | None) -> str:
        if name in times:
            return f"{times[name]:.1f}"
        return f"not measured yet (`{command}`)" if command else "not measured"

    rows = ["| chapter | in `make study`, training included (min) | "
            "opened again with the stored runs (min) | live on smoke (min) |",
            "|---|---|---|---|"]
    rows += [f"| {name} | {cell(cpu, name, 'make study')} | {cell(again, name, None)} | "
             f"{cell(smoke, name, 'make study PROFILE=smoke')} |"
             for name in sorted({*cpu, *again, *smoke})]
    return "\n".join(rows)


def teacher_page(executed_dir: Path) -> str:
    """``teacher.md``: what to run before class and how long it takes here, what students run
    live, each chapter's exercises and questions to discuss (times from the last runs)."""
    def read(path: Path) -> dict:
        return json.loads(path.read_text()) if path.exists() else {}

    def minutes(timings: dict[str, float]) -> dict[str, float]:
        return {name[:2]: sec / 60 for name, sec in timings.items()}

    run = read(FIGURES_ROOT / "run.json")  # the whole run's times, and the reopened chapters'
    cpu = minutes(run.get("timings", {}))
    again = minutes(run.get("reopened", {}).get("timings", {}))
    smoke = minutes(read(executed_dir.parent / "smoke" / "timings.json"))
    parts = ["# For teachers",
             "**Before class** run `make study` once on the machine the class will use (it "
             "trains every run and regenerates every figure; "
             + (f"the committed run took {sum(cpu.values()):.0f} min in all"
                if cpu else "its time is printed at the end") + "), then `make book` for this "
             "book. Runs are stored: a chapter opened afterwards reads them back instead of "
             "training.",
             "**In class** students open `make lab`. A chapter whose runs are stored reads "
             "them back instead of training (the third column, where it was measured: chapters "
             "that train nothing take about their `make study` time); any chapter runs live on "
             "the `smoke` profile (set `profile = \"smoke\"` in its parameters cell) in seconds "
             "to a few minutes, with its figures in `figures/smoke/`, never over the committed "
             "ones.",
             _minutes_table(cpu, again, smoke)]
    parts.append("## Exercises and questions, chapter by chapter")
    for number, questions in DISCUSSION.items():
        parts.append(f"### Chapter {number}")
        parts += [f"- {task(e.key)}" for e in exercises_of(number)]
        parts += [f"- *Discuss:* {q}" for q in questions]
    parts.append("Each exercise's solution is folded under it in its chapter: what the project "
                 "measured, and what to conclude.")
    return "\n\n".join(parts) + "\n"


# --- building and checking ---------------------------------------------------------------


def _stage_sources(src: Path, executed_dir: Path, readme: Path,
                   chapters: Sequence[str]) -> list[Chapter]:
    """Write the book's sources (config, cleaned chapters, landing and figure pages) to ``src``."""
    shutil.copytree(BOOK_CONFIG, src, ignore=shutil.ignore_patterns("_build", "__pycache__"))
    mathjax = Path(str(resources.files("jupyter_server_mathjax") / "static"))
    shutil.copytree(mathjax, src / "_static" / "mathjax",
                    ignore=lambda d, names: [n for n in names if Path(d).name == "localization"
                                             and n != "en"])
    (src / "_figures").mkdir()
    result, figures, profiles = [], {}, set()
    for name in chapters:
        path = executed_dir / f"{name}.ipynb"
        title = chapter_title(path if path.exists() else SOURCE_NOTEBOOKS / f"{name}.ipynb", name)
        if not path.exists():
            title += " (not executed yet)"
            (src / f"{name}.md").write_text(not_executed_page(name, title, executed_dir))
            result.append(Chapter(name, title, executed=False))
            continue
        nb = nbformat.read(path, as_version=4)
        profile = nb.metadata.get("papermill", {}).get("parameters", {}).get("profile")
        profiles |= {profile} if profile else set()
        ready, pngs = prepare_chapter(nb, name)
        nbformat.write(ready, src / f"{name}.ipynb")
        figures[name] = []
        for k, (png, caption) in enumerate(pngs, start=1):
            (src / "_figures" / f"{name}-{k}.png").write_bytes(png)
            figures[name].append((f"_figures/{name}-{k}.png", caption))
        result.append(Chapter(name, title, executed=True))
    report = RESULTS_DIR / "reproduction" / next(iter(sorted(profiles)), "cpu") / "reproduction.md"
    text = report.read_text().split("\n", 1)[1].strip() if report.exists() else ""
    (src / "index.md").write_text(landing_page(readme, result, profiles, text))
    (src / "teacher.md").write_text(teacher_page(executed_dir))
    (src / "figures.md").write_text(figures_page(figures, result))
    return result


def build_book(executed_dir: Path, out_dir: Path, readme: Path = README,
               chapters: Sequence[str] | None = None) -> Path:
    """Build the book from the executed chapters in ``executed_dir``; returns its index.html.

    ``chapters`` (notebook names without ``.ipynb``) defaults to every numbered notebook of
    ``notebooks/`` and ``executed_dir``. The site is built in a temporary folder and then
    replaces ``out_dir``, which must be absent, empty, or a book built here before (it is
    recognised by its ``book.json``): a wrong ``--out`` never deletes anything else.
    """
    from sphinx.application import Sphinx
    from sphinx.util.docutils import docutils_namespace, patch_docutils

    executed_dir, out_dir = Path(executed_dir), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).exists():
        raise ValueError(f"{out_dir} is not empty and holds no {MANIFEST}: not replacing it")
    names = list(chapters) if chapters is not None else default_chapters(executed_dir)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="clp-book-") as tmp:
        src, build = Path(tmp) / "src", Path(tmp) / "build"
        staged = _stage_sources(src, executed_dir, Path(readme), names)
        warnings = io.StringIO()
        with patch_docutils(src), docutils_namespace(), catch_warnings():
            # the theme and MyST still call APIs that Sphinx 9 deprecates: not the reader's concern
            filterwarnings("ignore", message=".*Check CHANGES for Sphinx API modifications")
            app = Sphinx(str(src), str(src), str(build / "html"), str(build / "doctrees"),
                         "html", status=None, warning=warnings, freshenv=True, parallel=1)
            app.build()
        if warnings.getvalue().strip():
            print(warnings.getvalue().rstrip(), file=sys.stderr)
        manifest = {"executed_dir": str(executed_dir),
                    "built_s": round(time.perf_counter() - t0, 1),
                    "chapters": [{"name": c.name, "title": c.title, "executed": c.executed,
                                  "page": f"{c.name}.html"} for c in staged]}
        (build / "html" / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(build / "html", out_dir, ignore=shutil.ignore_patterns("_sources"))
    return out_dir / "index.html"


class _PageLinks(html.parser.HTMLParser):
    """Collects what a page points at (images, links, scripts, styles) and the ids it has."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str]] = []  # (kind, url)
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("name"):
            self.ids.add(a["name"])
        kind, url = {"img": ("image", a.get("src")), "a": ("link", a.get("href")),
                     "script": ("script", a.get("src")),
                     "link": ("asset", a.get("href"))}.get(tag, ("", None))
        if url:
            self.refs.append((kind, url))


def _parse(page: Path) -> _PageLinks:
    parser = _PageLinks()
    parser.feed(page.read_text(errors="replace"))
    return parser


def check_book(out_dir: Path) -> list[str]:
    """What a reader of the built book would trip on; ``[]`` when nothing.

    Each problem is one line: a chapter page that is missing, an image, script or stylesheet
    that a page references but is not on disk, or an internal link whose file or ``#anchor``
    does not exist. Links that leave the site (``https:``, ``mailto:``) are not followed.
    """
    out_dir = Path(out_dir)
    problems: list[str] = []
    if not (out_dir / "index.html").exists():
        problems.append(f"{out_dir}: no index.html")
    manifest = out_dir / MANIFEST
    if not manifest.exists():
        return problems + [f"{out_dir}: no {MANIFEST} (not built by clp_utils.machinery.book)"]
    for chapter in json.loads(manifest.read_text())["chapters"]:
        if not (out_dir / chapter["page"]).exists():
            problems.append(f"missing chapter page {chapter['page']} ({chapter['title']})")
    pages = [p for p in out_dir.rglob("*.html") if "_static" not in p.relative_to(out_dir).parts]
    parsed = {p.resolve(): _parse(p) for p in pages}
    for page, links in parsed.items():
        name = page.relative_to(out_dir.resolve())
        for kind, url in links.refs:
            parts = urlsplit(url)
            if parts.scheme or parts.netloc or url.startswith("//"):
                continue  # leaves the site (or a data: URI)
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if not target.exists():
                problems.append(f"{name}: {kind} {url} does not exist")
            elif kind == "link" and parts.fragment and target.suffix == ".html":
                ids = parsed[target].ids if target in parsed else _parse(target).ids
                if unquote(parts.fragment) not in ids:
                    problems.append(f"{name}: link {url} has no #{parts.fragment} target")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clp_utils.machinery.book",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="cpu", choices=["smoke", "cpu", "extras", "full"],
                        help="read results/notebooks/<profile>/ (default: cpu)")
    parser.add_argument("--executed", type=Path, help="executed chapters (overrides --profile)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "book")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    executed = args.executed or RESULTS_DIR / "notebooks" / args.profile
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # Sphinx extensions may print
        index = build_book(executed, args.out, readme=args.readme)
    problems = check_book(index.parent)
    for problem in problems:
        print(f"book: {problem}", file=sys.stderr)
    print(f"book: {index} ({time.perf_counter() - t0:.1f} s, {len(problems)} problems)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
