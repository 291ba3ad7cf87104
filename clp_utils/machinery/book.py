"""Read the study as a book: the executed chapters as a static HTML site (``make book``).

``python -m clp_utils.machinery.book --profile cpu`` builds ``results/book/index.html`` with
MyST-NB and Sphinx from the chapters ``make study`` executed into
``results/notebooks/<profile>/``. ``book/`` holds the configuration (``book/conf.py``: never
re-execute, drop stderr, scroll long outputs, offline MathJax) and the other pages as markdown,
whose generated parts are MyST substitutions filled in here. Each chapter is prepared for a
reader first: accidental object reprs and progress bars are cut from the outputs, every code
cell is folded (the defaults papermill overrode removed), every figure is captioned (chapter,
section, its ``figures/`` file, the chapter's own ``**Figure`` paragraph) and collected on the
"Every figure" page; a chapter not executed yet gets a page saying so. ``check_book`` then
lists what a reader would trip on: a missing page, image or asset, a link that goes nowhere.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import html.parser
import json
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit
from warnings import catch_warnings, filterwarnings

import nbformat

from clp_utils.base.paths import FIGURES_ROOT, REPO_ROOT, configure, from_environment, results_dir
from clp_utils.claims import framing_sentence
from clp_utils.exercises import exercises_of, task
from clp_utils.machinery.publish import WIDGETS
from clp_utils.machinery.report import training_sentence
from clp_utils.profiles import NAMES

BOOK_CONFIG = REPO_ROOT / "book"
SOURCE_NOTEBOOKS = REPO_ROOT / "notebooks"
README = REPO_ROOT / "README.md"
MANIFEST = "book.json"
RESULTS_START, RESULTS_END = "<!-- results:start -->", "<!-- results:end -->"

# A tqdm bar shown as a cell's result ("45%|####  | 9/20 [00:01<00:02, 5.1it/s]").
PROGRESS = re.compile(r"\d+%\|.*\||\d\s*(it|s|B|ex|batch)/s\b|s/it\b|\[\d+:\d+<\d+:\d+")
# The repr of an object a cell returned by accident: "<matplotlib.legend.Legend at 0x7f...>",
# "[<matplotlib.lines.Line2D at 0x...>]", "Text(0.5, 1.0, 'title')".
OBJECT_REPR = re.compile(r"^\[?<[\w.]+( object)? at 0x[0-9a-f]+>|^Text\(.*\)$", re.S)
FIGURE_CAPTION = re.compile(r"^\*\*Figure\b")
GLOSSARY_LINK = re.compile(r"\]\(\.\./book/glossary\.md")


@dataclass(frozen=True)
class Chapter:
    """One chapter of the book: its notebook name, title and whether it has been executed."""

    name: str
    title: str
    executed: bool


# --- preparing the executed notebooks ----------------------------------------------------


def clean_outputs(outputs: list) -> list:
    """The outputs of one code cell minus progress widgets and bars and accidental reprs."""
    cleaned = []
    for out in outputs:
        if out.output_type in ("display_data", "execute_result"):
            data = {k: v for k, v in out.get("data", {}).items() if k != WIDGETS}
            plain = str(data.get("text/plain", "")).strip()
            if set(data) <= {"text/plain"} and (
                    not plain or PROGRESS.search(plain) or OBJECT_REPR.match(plain)):
                continue
            out = nbformat.from_dict({**out, "data": data})
        cleaned.append(out)
    return cleaned


def _heading(source: str, level: int = 3) -> str | None:
    """The last markdown heading (down to ``level``) in a cell, without its markup."""
    found = re.findall(rf"^#{{1,{level}}}\s+(.+?)\s*#*\s*$", source, flags=re.M)
    return re.sub(r"[*_`]", "", found[-1]).strip() if found else None


def _banner(nb: nbformat.NotebookNode) -> str:
    """One line under a chapter's introduction: how and when it was executed."""
    pm = nb.metadata.get("papermill", {})
    parts = ["Executed"]
    if "profile" in pm.get("parameters", {}):
        parts.append(f"with the `{pm['parameters']['profile']}` profile")
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


def _split_at_figures(cell: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    """The cell, then one output-only cell (``remove-input``) for each figure and each run of
    other outputs: MyST-NB captions every display of a cell alike, so a figure needs a cell
    of its own to carry its caption."""
    groups: list[list] = []
    for out in cell.outputs:
        if not groups or _is_figure(out) or _is_figure(groups[-1][-1]):
            groups.append([out])
        else:
            groups[-1].append(out)
    cell.outputs = groups[0] if groups else []
    # (MyST-NB skips a cell without source, so the new cells say where they come from)
    return [cell, *(nbformat.v4.new_code_cell("# outputs of the cell above", outputs=g,
                                              metadata={"tags": ["remove-input"]})
                    for g in groups[1:])]


def prepare_chapter(nb: nbformat.NotebookNode, name: str) -> tuple[nbformat.NotebookNode, list]:
    """A copy of an executed chapter ready for the book (see the module docstring), and its
    figures as ``(png_bytes, caption)`` in order. A caption (MyST-NB's ``figure`` option)
    names the figure's number, section and ``figures/`` file, then the chapter's own caption
    (the markdown cell after the figure that starts with ``**Figure``), which it replaces."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))  # a deep copy
    nb.metadata.pop("widgets", None)
    nb.metadata.setdefault("language_info", {"name": "python"})
    nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3"})
    if not (nb.cells and nb.cells[0].cell_type == "markdown" and _heading(nb.cells[0].source, 1)):
        nb.cells.insert(0, nbformat.v4.new_markdown_cell(f"# {name}"))
    nb.cells.insert(1, nbformat.v4.new_markdown_cell(_banner(nb)))
    for cell in nb.cells:  # links right in JupyterLab, where the chapters sit in notebooks/
        if cell.cell_type == "markdown":
            cell.source = GLOSSARY_LINK.sub("](glossary.md", cell.source)
    injected = any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
    number = int(name[:2]) if name[:2].isdigit() else name
    figures: list[tuple[bytes, str]] = []
    cells, section, own = [], None, None
    for cell, after in zip(nb.cells, [*nb.cells[1:], None], strict=True):
        if own is not None:
            own = None
            continue  # a figure's caption cell: its text goes under the figure instead
        if cell.cell_type == "markdown":
            section = _heading(cell.source) or section
        if cell.cell_type != "code":
            cells.append(cell)
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
            cells.append(cell)
            continue
        if (after is not None and after.cell_type == "markdown"
                and FIGURE_CAPTION.match(after.source.strip())
                and any(map(_is_figure, cell.outputs))):
            own = " ".join(after.source.split())
        saved = re.findall(r"save_figure\(\s*\w+\s*,\s*f?[\"']([^\"']+)[\"']", cell.source)
        if sum(map(_is_figure, cell.outputs)) != len(saved):
            saved = []  # which name goes with which figure is not clear: name none
        for part in _split_at_figures(cell):
            cells.append(part)
            if part.outputs and _is_figure(part.outputs[0]):
                caption = (f"Figure {number}.{len(figures) + 1}"
                           + (f" · {section}" if section else "")
                           + (f" · saved as `figures/{saved.pop(0)}.png`" if saved else "")
                           + (f". {own}" if own else ""))
                alt = re.sub(r"[`*]", "", caption)  # what a screen reader says instead of a hash
                part.metadata["mystnb"] = {"figure": {"caption": caption}, "image": {"alt": alt}}
                figures.append((base64.b64decode(part.outputs[0].data["image/png"]), caption))
    nb.cells = cells
    return nb, figures


# --- the generated parts of the pages (MyST substitutions in book/*.md) ------------------


def chapter_title(path: Path, fallback: str) -> str:
    """The first ``#`` heading of a notebook, or ``fallback`` when it has none (or is absent)."""
    cells = nbformat.read(path, as_version=4).cells if path.exists() else []
    return next((t for c in cells if c.cell_type == "markdown" and (t := _heading(c.source, 1))),
                fallback)


def default_chapters(executed_dir: Path) -> list[str]:
    """The chapters, in order: every ``NN_*`` notebook of ``notebooks/`` or ``executed_dir``."""
    return sorted({p.stem for folder in (SOURCE_NOTEBOOKS, executed_dir)
                   for p in folder.glob("[0-9][0-9]_*.ipynb")})


def not_executed_page(name: str, title: str, executed_dir: Path) -> str:
    """The page shown for a chapter whose executed copy does not exist yet."""
    with contextlib.suppress(ValueError):  # named from the repository when it lies inside it
        executed_dir = executed_dir.resolve().relative_to(REPO_ROOT)
    return (f"# {title}\n\n:::{{note}}\nThis chapter has not been executed yet.\n:::\n\n"
            f"There is no `{name}.ipynb` in `{executed_dir}`. Run `make study` (or "
            "`make study PROFILE=...`; `.venv/bin/python -m clp_utils.machinery.pipeline --only "
            f"{name[:2]}` runs this chapter alone), then `make book` again.\n")


def readme_story(readme: Path) -> tuple[str, str, str]:
    """``(title, introduction, results)`` from the README: the text before the first ``##``
    and the section between the results markers, relative links as plain text."""
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
                 reproduction: str = "") -> dict[str, str]:
    """The substitutions of ``book/index.md``: the README's story, what the study tests, how
    many chapters were executed, and the reproduction report."""
    title, intro, results = readme_story(readme)
    status = f"{sum(c.executed for c in chapters)} of {len(chapters)} chapters executed"
    if profiles:
        status += " with the " + ", ".join(f"`{p}`" for p in sorted(profiles)) + " profile"
    if reproduction:
        reproduction = ("## Reproduction report\n\nHow the numbers of the last `make study` "
                        f"compare with the committed ones (`results/reproduction/`).\n\n"
                        f"{reproduction}")
    if results:
        results = ("## Results\n\nFrom the README, where `make study` (profiles `cpu` and "
                   f"`full`) writes them.\n\n{results}")
    return {"title": title, "intro": intro, "framing": f"**What this study tests.** "
            f"{framing_sentence()}", "status": status, "reproduction": reproduction,
            "results": results}


def figures_page(figures: dict[str, list[tuple[str, str]]],
                 chapters: Sequence[Chapter]) -> dict[str, str]:
    """The substitution of ``book/figures.md``: every figure of the executed chapters."""
    parts = [f"## {c.title}\n\n" + "\n\n".join(
        f":::{{figure}} {path}\n:class: book-figure\n:alt: {re.sub(r'[`*]', '', caption)}\n\n"
        f"{caption} ({{doc}}`in the chapter <{c.name}>`)\n:::" for path, caption in figures[c.name])
        for c in chapters if figures.get(c.name)]
    return {"figures": "\n\n".join(parts) or "No chapter with figures has been executed yet."}


#: A session of about three hours: (chapter, activity, minutes). A plan, not a measurement:
#: the page sets beside it the measured time of reopening each chapter (Run All).
SESSION_PLAN = (
    ("00", "the question and the baselines: read the outputs, discuss BM25's lead", 20),
    ("01", "data selection: mining windows, false negatives; write-it-yourself 01c", 20),
    ("02", "the loss: derive CLP's gradient, move the sliders in `make lab`; write 02c", 30),
    ("03", "training: the recipe, its budget and the learning curves", 15),
    ("—", "break", 10),
    ("04", "evaluation: the claims, power, the 2x2; the questionnaire", 35),
    ("05", "geometry: the mechanism against its control and placebo", 20),
    ("06", "multilingual: tokenizers and the Hindi track; closing discussion", 20),
)


def session_plan(reopened: dict[str, float]) -> str:
    """``SESSION_PLAN`` as a table, with each chapter's measured reopening time (minutes)."""
    rows = ["| minutes | chapter | activity | Run All, reopened (min, measured) |",
            "|---|---|---|---|"]
    rows += [f"| {m} | {ch} | {what} | "
             + (f"{reopened[ch]:.1f}" if ch in reopened else "—") + " |"
             for ch, what, m in SESSION_PLAN]
    total = sum(m for _, _, m in SESSION_PLAN)
    return "\n".join(rows + [f"| {total} | | in all | |"])


def teacher_page(executed_dir: Path) -> dict[str, str]:
    """The substitutions of ``book/teacher.md``: how long ``make study`` took, each chapter's
    times as one table (the whole run, then a column per ``make teacher-times`` record,
    naming its machine), the session plan and each chapter's exercises."""
    def minutes(timings: dict) -> dict[str, float]:
        return {name[:2]: sec / 60 for name, sec in timings.items()}

    record = FIGURES_ROOT / "run.json"
    run = json.loads(record.read_text()) if record.exists() else {}
    cpu = minutes(run.get("timings", {}))
    columns = {f"`make study` ({run.get('machine', {}).get('describe', '')}; runs already "
               "trained are read back) (min)": (cpu, {})}
    what = {"reopen": "reopened on the committed results, nothing trains",
            "smoke": "live on smoke"}
    reopened: dict[str, float] = {}
    for path in sorted((FIGURES_ROOT / "timings").glob("*.json")):
        record = json.loads(path.read_text())
        kind, times = path.stem.split("-")[0], minutes(record["timings"])
        columns[f"{what.get(kind, kind)} ({record['machine']}) (min)"] = (
            times, record.get("stopped", {}))
        if kind == "reopen" and not reopened:
            reopened = times
    rows = ["| chapter | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name in sorted(set().union(*(times for times, _ in columns.values()))):
        cells = []
        for times, stopped in columns.values():
            stop = next((why for nb, why in stopped.items() if nb[:2] == name), None)
            cells.append("—" if name not in times else f"{times[name]:.1f}" + (
                f" (stops: {stop})" if stop else ""))
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    if training := training_sentence(run.get("machine", {}).get("training", {})):
        rows += ["", training]
    if len(columns) == 1:
        rows += ["", "Reopen and smoke times are not measured yet (`make teacher-times`)."]
    return {"study_time": (f"the committed run took {sum(cpu.values()):.0f} min in all" if cpu
                           else "its time is printed at the end"),
            "minutes_table": "\n".join(rows), "session_plan": session_plan(reopened),
            **{f"exercises_{n:02d}": "\n".join(f"- {task(e.key)}" for e in exercises_of(f"{n:02d}"))
               for n in range(7)}}


# --- building and checking ---------------------------------------------------------------


def _stage_sources(src: Path, executed_dir: Path, readme: Path,
                   chapters: Sequence[str]) -> tuple[list[Chapter], dict[str, str]]:
    """Copy ``book/`` to ``src`` with the prepared chapters and their figures; returns the
    chapters and the substitutions of the pages."""
    shutil.copytree(BOOK_CONFIG, src, ignore=shutil.ignore_patterns("_build", "__pycache__"))
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
        profiles.add(nb.metadata.get("papermill", {}).get("parameters", {}).get("profile"))
        ready, pngs = prepare_chapter(nb, name)
        nbformat.write(ready, src / f"{name}.ipynb")
        figures[name] = []
        for k, (png, caption) in enumerate(pngs, start=1):
            file = f"_figures/{name}-{k}.png"
            (src / file).write_bytes(png)
            figures[name].append((file, caption))
        result.append(Chapter(name, title, executed=True))
    profiles = {p for p in profiles if p}
    profile = min(profiles, default="cpu")
    report = results_dir() / "reproduction" / profile / "reproduction.md"
    text = report.read_text().split("\n", 1)[1].strip() if report.exists() else ""
    return result, {**landing_page(readme, result, profiles, text),
                    **teacher_page(executed_dir), **figures_page(figures, result)}


def build_book(executed_dir: Path, out_dir: Path, readme: Path = README,
               chapters: Sequence[str] | None = None) -> Path:
    """Build the book of ``chapters`` (default: ``default_chapters``) from their executed
    copies in ``executed_dir`` into ``out_dir``; returns its index.html. Only an absent or
    empty ``out_dir`` or a book built here before (it has a ``book.json``) is replaced."""
    from sphinx.cmd.build import build_main

    executed_dir, out_dir = Path(executed_dir), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).exists():
        raise ValueError(f"{out_dir} is not empty and holds no {MANIFEST}: not replacing it")
    names = list(chapters) if chapters is not None else default_chapters(executed_dir)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="clp-book-") as tmp:
        src, build = Path(tmp) / "src", Path(tmp) / "build"
        staged, substitutions = _stage_sources(src, executed_dir, Path(readme), names)
        with catch_warnings():
            # the theme and MyST still call APIs that Sphinx 9 deprecates: not the reader's concern
            filterwarnings("ignore", message=".*Check CHANGES for Sphinx API modifications")
            # sphinx-build, quiet but for its warnings (on stderr), a fresh environment
            if build_main(["-b", "html", "-q", "-E", "-N", "-d", str(build / "doctrees"),
                           *(f"-Dmyst_substitutions.{k}={v}" for k, v in substitutions.items()),
                           str(src), str(build / "html")]):
                raise RuntimeError("Sphinx could not build the book (its messages are above)")
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
    """A page's ``refs`` (kind and url of its images, links, scripts, styles) and ``ids``."""

    KINDS = {"img": ("image", "src"), "a": ("link", "href"), "script": ("script", "src"),
             "link": ("asset", "href")}

    def __init__(self, page: Path) -> None:
        super().__init__()
        self.refs: list[tuple[str, str]] = []
        self.ids: set[str] = set()
        self.feed(page.read_text(errors="replace"))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.ids |= {v for v in (a.get("id"), a.get("name") if tag == "a" else None) if v}
        kind, attr = self.KINDS.get(tag, (None, ""))
        if kind and a.get(attr):
            self.refs.append((kind, a[attr]))


def check_book(out_dir: Path) -> list[str]:
    """What a reader of the built book would trip on, one line each (``[]``: nothing): a
    missing chapter page, an image, script or stylesheet not on disk, an internal link whose
    file or ``#anchor`` does not exist. Links that leave the site are not followed."""
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
    parsed = {p.resolve(): _PageLinks(p) for p in pages}
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
                ids = parsed[target].ids if target in parsed else _PageLinks(target).ids
                if unquote(parts.fragment) not in ids:
                    problems.append(f"{name}: link {url} has no #{parts.fragment} target")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clp_utils.machinery.book",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="cpu", choices=list(NAMES),
                        help="read results/notebooks/<profile>/ (default: cpu)")
    parser.add_argument("--executed", type=Path, help="executed chapters (overrides --profile)")
    parser.add_argument("--out", type=Path, default=None, help="default: results/book")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    configure(**from_environment())  # the command line's edge: $CLP_RESULTS_DIR
    executed = args.executed or results_dir() / "notebooks" / args.profile
    args.out = args.out or results_dir() / "book"
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
