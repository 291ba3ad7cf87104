"""What ``make study`` commits beside its figures, so that a clone shows the study before
anything runs and reopens its chapters without training.

- ``export_results()``: the small part of every run the cpu and extras profiles read (config,
  step log, metrics and per-query metrics on the test, validation and out-of-domain queries,
  with the qrels), the zero-shot baselines, the hybrid tables and chapter 04's corpus spreads,
  copied from ``results/`` into ``figures/results/`` (``evaluation.committed_dir``): a few MB,
  no model and no run file. A chapter opened with ``train = False`` reads them.
- ``publish_chapters(executed)``: the executed chapters copied back into ``notebooks/`` with
  their outputs, minus what only the machine that ran them knows: papermill's injected
  parameters cell (a reopened chapter runs on its own defaults, which train nothing) and
  metadata, stderr, widget state, and the repository's absolute path in any output.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from clp_utils.base.io import atomic_write
from clp_utils.base.paths import REPO_ROOT, figures_dir, results_dir
from clp_utils.evaluation import committed_dir
from clp_utils.machinery.chapter import card
from clp_utils.profiles import cells, get_profile
from clp_utils.runstore import RUNS_DIR_NAME, locate

#: The files of a run (and of its ``val/`` and ``ood/`` sides) that are committed.
RUN_FILES = ("config.json", "log.csv", "metrics.json", "per_query.csv", "qrels.test.tsv")
SIDES = ("", "val", "ood")
NOTEBOOKS = REPO_ROOT / "notebooks"
WIDGETS = "application/vnd.jupyter.widget-view+json"


def committed_runs() -> list[Path]:
    """The run folders (here) of every trained cell of the cpu profile, its Hindi track and
    the extras: what the committed chapters and figures read."""
    studies = (get_profile("cpu").study, get_profile("cpu").track.study,
               get_profile("extras").study)
    found = {locate(c.config) for s in studies for c in cells(s) if c.config is not None}
    return sorted(found)


def _copy_small(src: Path, dst: Path) -> None:
    for side in SIDES:
        for name in RUN_FILES:
            if (src / side / name).exists():
                (dst / side).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src / side / name, dst / side / name)


def export_results(target: Path | None = None) -> Path:
    """Copy the small results (see the module docstring) into ``target`` (default
    ``figures/results``), replacing what was there; returns ``target``. A run that has not
    finished here is skipped (the committed copy of it, if any, is kept)."""
    target = Path(target or committed_dir())
    source = results_dir()
    keep = set()
    for run_dir in committed_runs():
        dst = target / RUNS_DIR_NAME / run_dir.name
        keep.add(dst.name)
        if (run_dir / "metrics.json").exists():
            shutil.rmtree(dst, ignore_errors=True)
            _copy_small(run_dir, dst)
    for stale in (target / RUNS_DIR_NAME).glob("*"):
        if stale.name not in keep:  # a run no profile reads any more
            shutil.rmtree(stale)
    for spread in sorted((source / "spreads").glob("*.json")):  # geometry.corpus_spread
        (target / "spreads").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(spread, target / "spreads" / spread.name)
    # BM25 is left out: it is recomputed in seconds, and exactly
    for folder in sorted((source / "baselines").glob("*")):
        if not folder.name.startswith("bm25") and (folder / "metrics.json").exists():
            shutil.rmtree(target / "baselines" / folder.name, ignore_errors=True)
            _copy_small(folder, target / "baselines" / folder.name)
    # hybrids.hybrid_table's tables, each folder written whole (a "." one is a killed write's)
    for folder in sorted((source / "hybrids").glob("[!.]*")):
        shutil.rmtree(target / "hybrids" / folder.name, ignore_errors=True)
        shutil.copytree(folder, target / "hybrids" / folder.name)
    return target


def _strip_paths(text: str | list[str]) -> str:
    text = text if isinstance(text, str) else "".join(text)
    return text.replace(f"{REPO_ROOT}/", "").replace(str(REPO_ROOT), ".").replace(
        str(Path.home()), "~")


def _clean_output(output: dict) -> dict | None:
    if output["output_type"] == "error":
        raise ValueError(f"an executed chapter holds an error ({output.get('ename')}): "
                         "not published")
    data = output.get("data", {})
    if output.get("name") == "stderr" or WIDGETS in data:
        return None
    if "text" in output:
        output["text"] = _strip_paths(output["text"])
    for kind in ("text/plain", "text/html", "text/markdown"):
        if kind in data:
            data[kind] = _strip_paths(data[kind])
    return output


def clean_notebook(nb: dict) -> dict:
    """``nb`` without the injected parameters cell, papermill's metadata, stderr, widget
    state and absolute paths (see the module docstring)."""
    nb["cells"] = [c for c in nb["cells"]
                   if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    for key in ("papermill", "widgets"):
        nb["metadata"].pop(key, None)
    for cell in nb["cells"]:
        cell.get("metadata", {}).pop("papermill", None)
    for count, cell in enumerate((c for c in nb["cells"] if c["cell_type"] == "code"), 1):
        cell["metadata"].pop("execution", None)
        cell["outputs"] = [o for o in map(_clean_output, cell["outputs"]) if o is not None]
        cell["execution_count"] = count
        for o in cell["outputs"]:
            if "execution_count" in o:
                o["execution_count"] = count
    return nb


def refresh_card(nb: dict, number: str, profile: str = "cpu") -> dict:
    """``nb`` with its card (``chapter.card``) made again now: a chapter could only time
    itself by the run before its own, and once this run's record is committed a published
    card must state that record's timing. A chapter without its card is refused."""
    now = card(number, profile, figures_dir(profile))
    lead = now.split("; ")[0]  # the same chapter, profile and folder
    for out in (o for c in nb["cells"] for o in c.get("outputs", [])):
        lines = str(out.get("text", "")).split("\n")
        for i, line in enumerate(lines):
            if line.split("; ")[0] == lead:
                out["text"] = "\n".join([*lines[:i], now, *lines[i + 1:]])
                return nb
    raise ValueError(f"chapter {number}: no card ({lead!r}) to time again")


def publish_chapters(executed: Path, only: list[str] | None = None,
                     target: Path = NOTEBOOKS) -> list[Path]:
    """Copy the executed chapters in ``executed`` (optionally only the numbers in ``only``)
    over ``target``'s, cleaned (``clean_notebook``), their cards timed by the record just
    written (``refresh_card``); returns the paths written."""
    written = []
    for path in sorted(Path(executed).glob("[0-9][0-9]_*.ipynb")):
        if only and path.name[:2] not in only:
            continue
        nb = refresh_card(clean_notebook(json.loads(path.read_text(encoding="utf-8"))),
                          path.name[:2])
        with atomic_write(target / path.name) as fh:
            json.dump(nb, fh, indent=1, ensure_ascii=False)
            fh.write("\n")
        written.append(target / path.name)
    return written
